package control

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/netmap"
	"meshd/store"
)

func (a *account) getDNSSettings(ctx context.Context, actor string, m *adminv1.GetDNSSettingsRequest) (*adminv1.DNSSettings, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return &adminv1.DNSSettings{Domain: a.a.DNSDomain}, nil
}

func (a *account) updateDNSSettings(ctx context.Context, actor string, m *adminv1.UpdateDNSSettingsRequest) (*adminv1.DNSSettings, error) {
	if _, err := a.updateAccount(ctx, actor, &adminv1.UpdateAccountRequest{DnsDomain: m.Domain}); err != nil {
		return nil, err
	}
	return a.getDNSSettings(ctx, actor, nil)
}

func (a *account) nsMsg(n *store.NameserverGroup) *adminv1.NameserverGroup {
	return &adminv1.NameserverGroup{Id: n.ID, Name: n.Name, Nameservers: n.Nameservers, MatchDomains: n.MatchDomains,
		Groups: a.groupNames(n.Groups), Enabled: n.Enabled}
}

func (a *account) nsRef(ref string) (*store.NameserverGroup, error) {
	return find(a.ns, ref, "nameserver group", "dns nameservers", func(n *store.NameserverGroup) []string { return []string{n.Name} })
}

func (a *account) listNameserverGroups(ctx context.Context, actor string, m *adminv1.ListNameserverGroupsRequest) (*adminv1.ListNameserverGroupsResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := &adminv1.ListNameserverGroupsResponse{}
	for _, n := range sorted(a.ns, func(n *store.NameserverGroup) (time.Time, string) { return n.Created, n.ID }) {
		out.NameserverGroups = append(out.NameserverGroups, a.nsMsg(n))
	}
	return out, nil
}

func (a *account) getNameserverGroup(ctx context.Context, actor string, m *adminv1.GetNameserverGroupRequest) (*adminv1.NameserverGroup, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n, err := a.nsRef(m.Id)
	if err != nil {
		return nil, err
	}
	return a.nsMsg(n), nil
}

// checkNS validates a nameserver group and normalises it.
func (a *account) checkNS(n *store.NameserverGroup) error {
	var err error
	if n.Name, err = checkName("nameserver group", n.Name); err != nil {
		return err
	}
	for _, o := range a.ns {
		if o.ID != n.ID && strings.EqualFold(o.Name, n.Name) {
			return conflictf("a nameserver group named %q exists already", o.Name)
		}
	}
	if len(n.Nameservers) == 0 {
		return invalidf("nameserver group %s needs at least one nameserver", n.Name)
	}
	ns := make([]string, 0, len(n.Nameservers))
	for _, s := range n.Nameservers {
		s = strings.TrimSpace(s)
		if ap, err := netip.ParseAddrPort(s); err == nil && ap.Port() != 0 {
			ns = append(ns, ap.String())
		} else if ip, err := netip.ParseAddr(s); err == nil {
			ns = append(ns, ip.String())
		} else {
			return invalidf("nameserver %q: want an IP address or IP:port", s)
		}
	}
	n.Nameservers = ns
	md := make([]string, 0, len(n.MatchDomains))
	for _, d := range n.MatchDomains {
		d, err := checkDomain("match domain", d)
		if err != nil {
			return err
		}
		md = append(md, d)
	}
	n.MatchDomains = md
	return nil
}

func nsChange(ns ...*store.NameserverGroup) netmap.Change {
	var c netmap.Change
	for _, n := range ns {
		if len(n.Groups) == 0 {
			c.All = true
		}
		c.Groups = append(c.Groups, n.Groups...)
	}
	return c
}

func (a *account) createNameserverGroup(ctx context.Context, actor string, m *adminv1.CreateNameserverGroupRequest) (*adminv1.NameserverGroup, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := &store.NameserverGroup{ID: newID(), AccountID: a.id, Name: m.Name, Nameservers: m.Nameservers,
		MatchDomains: m.MatchDomains, Enabled: true, Created: a.stamp()}
	if m.Enabled != nil {
		n.Enabled = *m.Enabled
	}
	var err error
	if n.Groups, err = a.groupIDs(m.Groups, false); err != nil {
		return nil, err
	}
	if err := a.checkNS(n); err != nil {
		return nil, err
	}
	err = a.commit(ctx, audit{actor: actor, action: "nameserver_group.created", targetType: "nameserver_group",
		targetID: n.ID, targetName: n.Name, detail: strings.Join(n.Nameservers, ",")},
		func(tx *store.Tx) error { return tx.PutNameserverGroup(*n) },
		func() { a.ns[n.ID] = n },
		nsChange(n))
	if err != nil {
		return nil, err
	}
	return a.nsMsg(n), nil
}

func (a *account) updateNameserverGroup(ctx context.Context, actor string, m *adminv1.UpdateNameserverGroupRequest) (*adminv1.NameserverGroup, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old, err := a.nsRef(m.Id)
	if err != nil {
		return nil, err
	}
	n := *old
	if m.Name != nil {
		n.Name = *m.Name
	}
	if m.Nameservers != nil {
		n.Nameservers = m.Nameservers.Values
	}
	if m.MatchDomains != nil {
		n.MatchDomains = m.MatchDomains.Values
	}
	if m.Groups != nil {
		if n.Groups, err = a.groupIDs(m.Groups.Values, false); err != nil {
			return nil, err
		}
	}
	if m.Enabled != nil {
		n.Enabled = *m.Enabled
	}
	if err := a.checkNS(&n); err != nil {
		return nil, err
	}
	err = a.commit(ctx, audit{actor: actor, action: "nameserver_group.updated", targetType: "nameserver_group",
		targetID: n.ID, targetName: n.Name, detail: strings.Join(n.Nameservers, ",")},
		func(tx *store.Tx) error { return tx.PutNameserverGroup(n) },
		func() { a.ns[n.ID] = &n },
		nsChange(old, &n))
	if err != nil {
		return nil, err
	}
	return a.nsMsg(&n), nil
}

func (a *account) deleteNameserverGroup(ctx context.Context, actor string, m *adminv1.DeleteNameserverGroupRequest) (*adminv1.DeleteNameserverGroupResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n, err := a.nsRef(m.Id)
	if err != nil {
		return nil, err
	}
	err = a.commit(ctx, audit{actor: actor, action: "nameserver_group.deleted", targetType: "nameserver_group",
		targetID: n.ID, targetName: n.Name},
		func(tx *store.Tx) error { return tx.DeleteNameserverGroup(n.ID) },
		func() { delete(a.ns, n.ID) },
		nsChange(n))
	if err != nil {
		return nil, err
	}
	return &adminv1.DeleteNameserverGroupResponse{}, nil
}

func recordMsg(r *store.DNSRecord) *adminv1.DNSRecord {
	return &adminv1.DNSRecord{Id: r.ID, Name: r.Name, Type: r.Type, Value: r.Value, Ttl: r.TTL}
}

func (a *account) recordRef(ref string) (*store.DNSRecord, error) {
	return find(a.records, ref, "dns record", "dns records", func(r *store.DNSRecord) []string { return []string{r.Name} })
}

func (a *account) listDNSRecords(ctx context.Context, actor string, m *adminv1.ListDNSRecordsRequest) (*adminv1.ListDNSRecordsResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := &adminv1.ListDNSRecordsResponse{}
	for _, r := range sorted(a.records, func(r *store.DNSRecord) (time.Time, string) { return r.Created, r.ID }) {
		out.Records = append(out.Records, recordMsg(r))
	}
	return out, nil
}

func (a *account) getDNSRecord(ctx context.Context, actor string, m *adminv1.GetDNSRecordRequest) (*adminv1.DNSRecord, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, err := a.recordRef(m.Id)
	if err != nil {
		return nil, err
	}
	return recordMsg(r), nil
}

// checkRecord validates a custom record: its name, its type and a value
// that fits the type. A single-label CNAME target is a name of the mesh
// (see cnameTarget).
func checkRecord(r *store.DNSRecord, domain string) error {
	var err error
	if r.Name, err = checkDomain("record name", r.Name); err != nil {
		return err
	}
	r.Type = strings.ToUpper(strings.TrimSpace(r.Type))
	r.Value = strings.TrimSpace(r.Value)
	switch r.Type {
	case "A", "AAAA":
		ip, err := netip.ParseAddr(r.Value)
		if err != nil || ip.Is4() != (r.Type == "A") {
			return invalidf("%s record value %q: want an IPv%s address", r.Type, r.Value, map[bool]string{true: "4", false: "6"}[r.Type == "A"])
		}
	case "CNAME":
		if r.Value, err = checkDomain("CNAME target", r.Value); err != nil {
			return err
		}
		if strings.Contains(r.Value, "*") {
			return invalidf("CNAME target %q: a wildcard is not a name", r.Value)
		}
		if qualify(r.Value, domain) == qualify(r.Name, domain) {
			return invalidf("CNAME %s points at itself", r.Name)
		}
	case "TXT":
		if r.Value, err = checkText("TXT record value", r.Value, maxTXTLen); err != nil {
			return err
		}
		if r.Value == "" {
			return invalidf("TXT record value is empty: want 1 to %d bytes", maxTXTLen)
		}
	default:
		return invalidf("record type %q: want A, AAAA, CNAME or TXT", r.Type)
	}
	if r.TTL == 0 {
		r.TTL = defaultRecordTTL
	}
	if err := checkCount("record TTL", int64(r.TTL), 1, maxRecordTTL, fmt.Sprintf(" seconds (0: the default %d)", defaultRecordTTL)); err != nil {
		return err
	}
	return nil
}

func (a *account) createDNSRecord(ctx context.Context, actor string, m *adminv1.CreateDNSRecordRequest) (*adminv1.DNSRecord, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := &store.DNSRecord{ID: newID(), AccountID: a.id, Name: m.Name, Type: m.Type, Value: m.Value, TTL: m.Ttl, Created: a.stamp()}
	if err := checkRecord(r, a.a.DNSDomain); err != nil {
		return nil, err
	}
	if err := a.checkRecordName(r, a.a.DNSDomain); err != nil {
		return nil, err
	}
	err := a.commit(ctx, audit{actor: actor, action: "dns_record.created", targetType: "dns_record", targetID: r.ID,
		targetName: r.Name, detail: r.Type + " " + r.Value},
		func(tx *store.Tx) error { return tx.PutDNSRecord(*r) },
		func() { a.records[r.ID] = r },
		netmap.Change{All: true})
	if err != nil {
		return nil, err
	}
	return recordMsg(r), nil
}

func (a *account) updateDNSRecord(ctx context.Context, actor string, m *adminv1.UpdateDNSRecordRequest) (*adminv1.DNSRecord, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old, err := a.recordRef(m.Id)
	if err != nil {
		return nil, err
	}
	r := *old
	if m.Name != nil {
		r.Name = *m.Name
	}
	if m.Type != nil {
		r.Type = *m.Type
	}
	if m.Value != nil {
		r.Value = *m.Value
	}
	if m.Ttl != nil {
		r.TTL = *m.Ttl
	}
	if err := checkRecord(&r, a.a.DNSDomain); err != nil {
		return nil, err
	}
	if err := a.checkRecordName(&r, a.a.DNSDomain); err != nil {
		return nil, err
	}
	err = a.commit(ctx, audit{actor: actor, action: "dns_record.updated", targetType: "dns_record", targetID: r.ID,
		targetName: r.Name, detail: r.Type + " " + r.Value},
		func(tx *store.Tx) error { return tx.PutDNSRecord(r) },
		func() { a.records[r.ID] = &r },
		netmap.Change{All: true})
	if err != nil {
		return nil, err
	}
	return recordMsg(&r), nil
}

func (a *account) deleteDNSRecord(ctx context.Context, actor string, m *adminv1.DeleteDNSRecordRequest) (*adminv1.DeleteDNSRecordResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, err := a.recordRef(m.Id)
	if err != nil {
		return nil, err
	}
	err = a.commit(ctx, audit{actor: actor, action: "dns_record.deleted", targetType: "dns_record", targetID: r.ID,
		targetName: r.Name},
		func(tx *store.Tx) error { return tx.DeleteDNSRecord(r.ID) },
		func() { delete(a.records, r.ID) },
		netmap.Change{All: true})
	if err != nil {
		return nil, err
	}
	return &adminv1.DeleteDNSRecordResponse{}, nil
}

func (a *account) listEvents(ctx context.Context, actor string, m *adminv1.ListEventsRequest) (*adminv1.ListEventsResponse, error) {
	limit := int(m.Limit)
	if limit == 0 {
		limit = defaultEventsListed
	}
	if err := checkCount("events limit", int64(limit), 1, maxEventsListed, ""); err != nil {
		return nil, err
	}
	evs, err := a.s.st.Events(ctx, a.id, limit)
	if err != nil {
		return nil, err
	}
	out := &adminv1.ListEventsResponse{}
	for _, e := range evs {
		out.Events = append(out.Events, &adminv1.Event{Id: strconv.FormatInt(e.ID, 10), Time: ts(e.Time), Actor: e.Actor,
			Action: e.Action, TargetType: e.TargetType, TargetId: e.TargetID, TargetName: e.TargetName, Detail: e.Detail})
	}
	slices.Reverse(out.Events) // oldest first, like a log
	return out, nil
}

// recordLabel is the label under the mesh domain at which a record named
// name is answered, when that is a single label ("nas" and
// "nas.<domain>" both are "nas"): where it would shadow a peer's name.
func recordLabel(name, domain string) string {
	if domain != "" {
		name = strings.TrimSuffix(name, "."+domain)
	}
	if strings.Contains(name, ".") || name == domain {
		return ""
	}
	return name
}

// recordAt returns a record answered at peer label l, nil if none. Peers
// that join take the next free label ("nas-2") instead. Callers hold mu.
func (a *account) recordAt(l string) *store.DNSRecord {
	for _, r := range a.records {
		if recordLabel(r.Name, a.a.DNSDomain) == l {
			return r
		}
	}
	return nil
}

// checkRecordName refuses a record that would answer for a peer's name:
// resolvers would get both answers. Callers hold mu.
func (a *account) checkRecordName(r *store.DNSRecord, domain string) error {
	if p := a.byLabel[recordLabel(r.Name, domain)]; p != nil {
		return conflictf("dns record %s would answer for peer %s (%s): pick another name, or rename the peer with `meshd admin peers update %s --name NEW`",
			r.Name, p.Name, fqdn(p.DNSLabel, domain), p.Name)
	}
	return nil
}

// cnameTarget is the value of record r as maps carry it: a single-label
// CNAME target ("db") names a peer or record of the mesh and is qualified
// with the mesh domain ("db.<domain>"), as a single-label record name is;
// resolvers would otherwise look for "db." at the root.
func cnameTarget(r *store.DNSRecord, domain string) string {
	if r.Type != "CNAME" {
		return r.Value
	}
	return qualify(r.Value, domain)
}

// qualify puts a single-label name under the mesh domain.
func qualify(name, domain string) string {
	if domain == "" || strings.Contains(name, ".") {
		return name
	}
	return name + "." + domain
}
