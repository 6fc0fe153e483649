package dashboard

import (
	"net/http"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
)

// The pages of routes, DNS, admin tokens, the audit log and the server's
// status.

func isAuth(err error) bool { return connect.CodeOf(err) == connect.CodeUnauthenticated }

type routesData struct {
	Routes []*adminv1.Route
	Peers  []*adminv1.Peer
	Groups []*adminv1.Group
}

func (d *Dashboard) routesPage(w http.ResponseWriter, r *http.Request, s *session) error {
	return d.showRoutes(w, r, s, &page{Notice: done(r)}, nil)
}

func (d *Dashboard) showRoutes(w http.ResponseWriter, r *http.Request, s *session, p *page, cause error) error {
	ctx := r.Context()
	routes, err := call(ctx, s.token, d.admin.ListRoutes, &adminv1.ListRoutesRequest{})
	if err != nil {
		return err
	}
	peers, err := call(ctx, s.token, d.admin.ListPeers, &adminv1.ListPeersRequest{})
	if err != nil {
		return err
	}
	groups, err := call(ctx, s.token, d.admin.ListGroups, &adminv1.ListGroupsRequest{})
	if err != nil {
		return err
	}
	p.Title, p.Nav, p.Data = "Routes", "routes", routesData{routes.Routes, peers.Peers, groups.Groups}
	if cause != nil {
		return d.formError(w, r, s, "routes", p, cause, f("network", "network", "cidr"), f("peers", "routing peer", "peer"),
			f("metric", "metric"), f("groups", "group"), f("description", "description"))
	}
	d.render(w, r, s, http.StatusOK, "routes", p)
	return nil
}

func (d *Dashboard) routesPost(w http.ResponseWriter, r *http.Request, s *session) error {
	v, ctx := r.PostForm, r.Context()
	var err error
	switch v.Get("action") {
	case "create":
		metric, merr := number(v, "metric", "route metric")
		if err = merr; err != nil {
			break
		}
		enabled := true
		_, err = call(ctx, s.token, d.admin.CreateRoute, &adminv1.CreateRouteRequest{Network: v.Get("network"),
			Peers: multi(v, "peers"), Metric: int32(min(max(metric, -1), 1<<20)), Masquerade: on(v, "masquerade"),
			Description: v.Get("description"), Groups: multi(v, "groups"), Enabled: &enabled})
	case "enable", "disable":
		enabled := v.Get("action") == "enable"
		_, err = call(ctx, s.token, d.admin.UpdateRoute, &adminv1.UpdateRouteRequest{Id: v.Get("id"), Enabled: &enabled})
	case "delete":
		_, err = call(ctx, s.token, d.admin.DeleteRoute, &adminv1.DeleteRouteRequest{Id: v.Get("id")})
	default:
		err = errUnknownAction
	}
	if err != nil {
		return d.showRoutes(w, r, s, &page{}, err)
	}
	return redirect(w, r, "/routes", "Saved.")
}

type dnsData struct {
	Settings *adminv1.DNSSettings
	Records  []*adminv1.DNSRecord
	NS       []*adminv1.NameserverGroup
	Groups   []*adminv1.Group
}

func (d *Dashboard) dnsPage(w http.ResponseWriter, r *http.Request, s *session) error {
	return d.showDNS(w, r, s, &page{Notice: done(r)}, nil, nil)
}

func (d *Dashboard) showDNS(w http.ResponseWriter, r *http.Request, s *session, p *page, cause error, fields []field) error {
	ctx := r.Context()
	st, err := call(ctx, s.token, d.admin.GetDNSSettings, &adminv1.GetDNSSettingsRequest{})
	if err != nil {
		return err
	}
	recs, err := call(ctx, s.token, d.admin.ListDNSRecords, &adminv1.ListDNSRecordsRequest{})
	if err != nil {
		return err
	}
	ns, err := call(ctx, s.token, d.admin.ListNameserverGroups, &adminv1.ListNameserverGroupsRequest{})
	if err != nil {
		return err
	}
	groups, err := call(ctx, s.token, d.admin.ListGroups, &adminv1.ListGroupsRequest{})
	if err != nil {
		return err
	}
	p.Title, p.Nav, p.Data = "DNS", "dns", dnsData{st, recs.Records, ns.NameserverGroups, groups.Groups}
	if cause != nil {
		return d.formError(w, r, s, "dns", p, cause, fields...)
	}
	d.render(w, r, s, http.StatusOK, "dns", p)
	return nil
}

func (d *Dashboard) dnsPost(w http.ResponseWriter, r *http.Request, s *session) error {
	v, ctx := r.PostForm, r.Context()
	var err error
	var fields []field
	switch v.Get("action") {
	case "domain":
		dom := v.Get("domain")
		_, err = call(ctx, s.token, d.admin.UpdateDNSSettings, &adminv1.UpdateDNSSettingsRequest{Domain: &dom})
		fields = []field{f("domain", "domain")}
	case "record-create":
		ttl, terr := number(v, "rec_ttl", "ttl")
		if err = terr; err != nil {
			fields = []field{f("rec_ttl", "ttl")}
			break
		}
		_, err = call(ctx, s.token, d.admin.CreateDNSRecord, &adminv1.CreateDNSRecordRequest{Name: v.Get("rec_name"),
			Type: strings.ToUpper(v.Get("rec_type")), Value: v.Get("rec_value"), Ttl: uint32(min(max(ttl, 0), 1<<30))})
		fields = []field{f("rec_type", "record type"), f("rec_value", "value", "cname", "ipv", "txt"),
			f("rec_ttl", "ttl"), f("rec_name", "name", "record")}
	case "record-delete":
		_, err = call(ctx, s.token, d.admin.DeleteDNSRecord, &adminv1.DeleteDNSRecordRequest{Id: v.Get("id")})
	case "ns-create":
		enabled := true
		_, err = call(ctx, s.token, d.admin.CreateNameserverGroup, &adminv1.CreateNameserverGroupRequest{Name: v.Get("ns_name"),
			Nameservers: list(v, "ns_servers"), MatchDomains: list(v, "ns_domains"), Groups: multi(v, "ns_groups"), Enabled: &enabled})
		fields = []field{f("ns_servers", "nameserver "), f("ns_domains", "domain"), f("ns_groups", "group"), f("ns_name", "name")}
	case "ns-enable", "ns-disable":
		enabled := v.Get("action") == "ns-enable"
		_, err = call(ctx, s.token, d.admin.UpdateNameserverGroup, &adminv1.UpdateNameserverGroupRequest{Id: v.Get("id"), Enabled: &enabled})
	case "ns-delete":
		_, err = call(ctx, s.token, d.admin.DeleteNameserverGroup, &adminv1.DeleteNameserverGroupRequest{Id: v.Get("id")})
	default:
		err = errUnknownAction
	}
	if err != nil {
		return d.showDNS(w, r, s, &page{}, err, fields)
	}
	return redirect(w, r, "/dns", "Saved.")
}

type tokensData struct {
	Tokens  []*adminv1.AdminToken
	Created *adminv1.AdminToken
}

func (d *Dashboard) tokensPage(w http.ResponseWriter, r *http.Request, s *session) error {
	return d.showTokens(w, r, s, &page{Notice: done(r)}, nil, nil)
}

func (d *Dashboard) showTokens(w http.ResponseWriter, r *http.Request, s *session, p *page, created *adminv1.AdminToken, cause error) error {
	res, err := call(r.Context(), s.token, d.admin.ListAdminTokens, &adminv1.ListAdminTokensRequest{})
	if err != nil {
		return err
	}
	p.Title, p.Nav, p.Data = "Admin tokens", "tokens", tokensData{res.AdminTokens, created}
	if cause != nil {
		return d.formError(w, r, s, "tokens", p, cause, f("name", "name", "token"))
	}
	d.render(w, r, s, http.StatusOK, "tokens", p)
	return nil
}

func (d *Dashboard) tokensPost(w http.ResponseWriter, r *http.Request, s *session) error {
	v, ctx := r.PostForm, r.Context()
	var err error
	switch v.Get("action") {
	case "create":
		var t *adminv1.AdminToken
		if t, err = call(ctx, s.token, d.admin.CreateAdminToken, &adminv1.CreateAdminTokenRequest{Name: v.Get("name")}); err == nil {
			return d.showTokens(w, r, s, &page{Notice: "Token created. Copy it now: it is not shown again."}, t, nil)
		}
	case "delete":
		_, err = call(ctx, s.token, d.admin.DeleteAdminToken, &adminv1.DeleteAdminTokenRequest{Id: v.Get("id")})
	default:
		err = errUnknownAction
	}
	if err != nil {
		return d.showTokens(w, r, s, &page{}, nil, err)
	}
	return redirect(w, r, "/tokens", "Saved.")
}

type auditData struct {
	Events []*adminv1.Event
	Limit  int
}

// auditPage lists the audit log, filtered here by actor, action and target
// (substrings, any case) over the newest Limit events.
func (d *Dashboard) auditPage(w http.ResponseWriter, r *http.Request, s *session) error {
	q := r.URL.Query()
	limit, _ := strconv.Atoi(q.Get("limit"))
	if limit <= 0 || limit > 10_000 {
		limit = 500
	}
	res, err := call(r.Context(), s.token, d.admin.ListEvents, &adminv1.ListEventsRequest{Limit: int32(limit)})
	if err != nil {
		return err
	}
	match := func(have, want string) bool {
		return want == "" || strings.Contains(strings.ToLower(have), strings.ToLower(strings.TrimSpace(want)))
	}
	var out []*adminv1.Event
	for _, e := range res.Events {
		if match(e.Actor, q.Get("actor")) && match(e.Action, q.Get("action")) &&
			(match(e.TargetName, q.Get("target")) || match(e.TargetId, q.Get("target")) || match(e.TargetType, q.Get("target"))) {
			out = append(out, e)
		}
	}
	d.render(w, r, s, http.StatusOK, "audit", &page{Title: "Audit log", Nav: "audit", Form: q, Data: auditData{out, limit}})
	return nil
}

type statusData struct {
	Status  *adminv1.ServerStatus
	Account *adminv1.Account
}

func (d *Dashboard) statusPage(w http.ResponseWriter, r *http.Request, s *session) error {
	st, err := call(r.Context(), s.token, d.admin.GetServerStatus, &adminv1.GetServerStatusRequest{})
	if err != nil {
		return err
	}
	acct, err := call(r.Context(), s.token, d.admin.GetAccount, &adminv1.GetAccountRequest{})
	if err != nil {
		return err
	}
	d.render(w, r, s, http.StatusOK, "status", &page{Title: "Server status", Nav: "status", Data: statusData{st, acct}})
	return nil
}
