package control

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/netmap"
	"meshd/store"
)

func (a *account) policyMsg(p *store.Policy) *adminv1.Policy {
	return &adminv1.Policy{Id: p.ID, Name: p.Name, Description: p.Description, Enabled: p.Enabled,
		Sources: a.groupNames(p.Sources), Destinations: a.groupNames(p.Destinations), Protocol: p.Protocol,
		Ports: p.Ports, Bidirectional: p.Bidirectional, Action: p.Action, Created: ts(p.Created)}
}

func (a *account) policyRef(ref string) (*store.Policy, error) {
	return find(a.policies, ref, "policy", "policies", func(p *store.Policy) []string { return []string{p.Name} })
}

func (a *account) listPolicies(ctx context.Context, actor string, m *adminv1.ListPoliciesRequest) (*adminv1.ListPoliciesResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := &adminv1.ListPoliciesResponse{}
	for _, p := range sorted(a.policies, func(p *store.Policy) (time.Time, string) { return p.Created, p.ID }) {
		out.Policies = append(out.Policies, a.policyMsg(p))
	}
	return out, nil
}

func (a *account) getPolicy(ctx context.Context, actor string, m *adminv1.GetPolicyRequest) (*adminv1.Policy, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.policyRef(m.Id)
	if err != nil {
		return nil, err
	}
	return a.policyMsg(p), nil
}

// checkPolicy validates a policy's fields and normalises them.
func (a *account) checkPolicy(p *store.Policy) error {
	var err error
	if p.Name, err = checkName("policy", p.Name); err != nil {
		return err
	}
	if p.Description, err = checkText("policy description", p.Description, maxDescriptionLen); err != nil {
		return err
	}
	if len(p.Sources) == 0 || len(p.Destinations) == 0 {
		return invalidf("policy %s needs at least one source and one destination group", p.Name)
	}
	proto, err := netmap.ParseProtocol(p.Protocol)
	if err != nil {
		return invalidf("policy %s: %v", p.Name, err)
	}
	p.Protocol = netmap.ProtocolName(proto)
	if _, err := netmap.ParsePorts(proto, p.Ports); err != nil {
		return invalidf("policy %s: %v", p.Name, err)
	}
	p.Ports = slices.Clone(p.Ports)
	for i := range p.Ports {
		p.Ports[i] = strings.TrimSpace(p.Ports[i])
	}
	p.Action = "accept"
	return nil
}

func (a *account) policyChange(ps ...*store.Policy) netmap.Change {
	var c netmap.Change
	for _, p := range ps {
		c.Groups = append(c.Groups, p.Sources...)
		c.Groups = append(c.Groups, p.Destinations...)
	}
	return c
}

func (a *account) createPolicy(ctx context.Context, actor string, m *adminv1.CreatePolicyRequest) (*adminv1.Policy, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := &store.Policy{ID: newID(), AccountID: a.id, Name: m.Name, Description: m.Description, Enabled: true,
		Protocol: m.Protocol, Ports: slices.Clone(m.Ports), Bidirectional: m.Bidirectional, Created: a.stamp()}
	if m.Enabled != nil {
		p.Enabled = *m.Enabled
	}
	var err error
	if p.Sources, err = a.groupIDs(m.Sources, false); err != nil {
		return nil, err
	}
	if p.Destinations, err = a.groupIDs(m.Destinations, false); err != nil {
		return nil, err
	}
	if err := a.checkPolicy(p); err != nil {
		return nil, err
	}
	err = a.commit(ctx, audit{actor: actor, action: "policy.created", targetType: "policy", targetID: p.ID, targetName: p.Name,
		detail: a.policySummary(p)},
		func(tx *store.Tx) error { return tx.PutPolicy(*p) },
		func() { a.policies[p.ID] = p },
		a.policyChange(p))
	if err != nil {
		return nil, err
	}
	return a.policyMsg(p), nil
}

func (a *account) policySummary(p *store.Policy) string {
	arrow := "->"
	if p.Bidirectional {
		arrow = "<->"
	}
	s := fmt.Sprintf("%s %s %s %s", strings.Join(a.groupNames(p.Sources), ","), arrow,
		strings.Join(a.groupNames(p.Destinations), ","), p.Protocol)
	if len(p.Ports) > 0 {
		s += " " + strings.Join(p.Ports, ",")
	}
	if !p.Enabled {
		s += " (disabled)"
	}
	return s
}

func (a *account) updatePolicy(ctx context.Context, actor string, m *adminv1.UpdatePolicyRequest) (*adminv1.Policy, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old, err := a.policyRef(m.Id)
	if err != nil {
		return nil, err
	}
	p := *old
	if m.Name != nil {
		p.Name = *m.Name
	}
	if m.Description != nil {
		p.Description = *m.Description
	}
	if m.Sources != nil {
		if p.Sources, err = a.groupIDs(m.Sources.Values, false); err != nil {
			return nil, err
		}
	}
	if m.Destinations != nil {
		if p.Destinations, err = a.groupIDs(m.Destinations.Values, false); err != nil {
			return nil, err
		}
	}
	if m.Protocol != nil {
		p.Protocol = *m.Protocol
		if m.Ports == nil && *m.Protocol != "tcp" && *m.Protocol != "udp" {
			p.Ports = nil // the old ports cannot apply
		}
	}
	if m.Ports != nil {
		p.Ports = slices.Clone(m.Ports.Values)
	}
	if m.Bidirectional != nil {
		p.Bidirectional = *m.Bidirectional
	}
	if m.Enabled != nil {
		p.Enabled = *m.Enabled
	}
	if err := a.checkPolicy(&p); err != nil {
		return nil, err
	}
	err = a.commit(ctx, audit{actor: actor, action: "policy.updated", targetType: "policy", targetID: p.ID, targetName: p.Name,
		detail: a.policySummary(&p)},
		func(tx *store.Tx) error { return tx.PutPolicy(p) },
		func() { a.policies[p.ID] = &p },
		a.policyChange(old, &p))
	if err != nil {
		return nil, err
	}
	return a.policyMsg(&p), nil
}

func (a *account) deletePolicy(ctx context.Context, actor string, m *adminv1.DeletePolicyRequest) (*adminv1.DeletePolicyResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.policyRef(m.Id)
	if err != nil {
		return nil, err
	}
	err = a.commit(ctx, audit{actor: actor, action: "policy.deleted", targetType: "policy", targetID: p.ID, targetName: p.Name,
		detail: a.policySummary(p)},
		func(tx *store.Tx) error { return tx.DeletePolicy(p.ID) },
		func() { delete(a.policies, p.ID) },
		a.policyChange(p))
	if err != nil {
		return nil, err
	}
	return &adminv1.DeletePolicyResponse{}, nil
}

func (a *account) routeMsg(r *store.Route) *adminv1.Route {
	return &adminv1.Route{Id: r.ID, Network: r.Network, Peers: a.peerNames(r.Peers), Metric: int32(r.Metric),
		Masquerade: r.Masquerade, Description: r.Description, Enabled: r.Enabled, Groups: a.groupNames(r.Groups),
		Created: ts(r.Created)}
}

func (a *account) routeRef(ref string) (*store.Route, error) {
	return find(a.routes, ref, "route", "routes", func(r *store.Route) []string { return []string{r.Network, r.Description} })
}

func (a *account) listRoutes(ctx context.Context, actor string, m *adminv1.ListRoutesRequest) (*adminv1.ListRoutesResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := &adminv1.ListRoutesResponse{}
	for _, r := range sorted(a.routes, func(r *store.Route) (time.Time, string) { return r.Created, r.ID }) {
		out.Routes = append(out.Routes, a.routeMsg(r))
	}
	return out, nil
}

func (a *account) getRoute(ctx context.Context, actor string, m *adminv1.GetRouteRequest) (*adminv1.Route, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, err := a.routeRef(m.Id)
	if err != nil {
		return nil, err
	}
	return a.routeMsg(r), nil
}

// checkRoute validates a route and normalises its network.
func (a *account) checkRoute(r *store.Route) error {
	p, err := checkCIDR("route network", r.Network)
	if err != nil {
		return err
	}
	if p.Overlaps(a.network) {
		return invalidf("route network %s overlaps the overlay network %s", p, a.network)
	}
	r.Network = p.String()
	if r.Description, err = checkText("route description", r.Description, maxDescriptionLen); err != nil {
		return err
	}
	if len(r.Peers) == 0 {
		return invalidf("route %s needs at least one routing peer", p)
	}
	if r.Metric == 0 {
		r.Metric = 9999
	}
	if r.Metric < 1 || r.Metric > 9999 {
		return invalidf("route metric %d: want 1 to 9999 (lower wins)", r.Metric)
	}
	return nil
}

// routeChange: the peers receiving a route (its groups, every peer without
// groups) and its routing peers.
func routeChange(rs ...*store.Route) netmap.Change {
	var c netmap.Change
	for _, r := range rs {
		if len(r.Groups) == 0 {
			c.All = true
		}
		c.Groups = append(c.Groups, r.Groups...)
		c.Only = append(c.Only, r.Peers...)
	}
	return c
}

func (a *account) createRoute(ctx context.Context, actor string, m *adminv1.CreateRouteRequest) (*adminv1.Route, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := &store.Route{ID: newID(), AccountID: a.id, Network: m.Network, Metric: int(m.Metric), Masquerade: m.Masquerade,
		Description: m.Description, Enabled: true, Created: a.stamp()}
	if m.Enabled != nil {
		r.Enabled = *m.Enabled
	}
	var err error
	if r.Peers, err = a.peerIDs(m.Peers); err != nil {
		return nil, err
	}
	if r.Groups, err = a.groupIDs(m.Groups, false); err != nil {
		return nil, err
	}
	if err := a.checkRoute(r); err != nil {
		return nil, err
	}
	err = a.commit(ctx, audit{actor: actor, action: "route.created", targetType: "route", targetID: r.ID, targetName: r.Network,
		detail: "via " + strings.Join(a.peerNames(r.Peers), ",")},
		func(tx *store.Tx) error { return tx.PutRoute(*r) },
		func() { a.routes[r.ID] = r },
		routeChange(r))
	if err != nil {
		return nil, err
	}
	return a.routeMsg(r), nil
}

func (a *account) updateRoute(ctx context.Context, actor string, m *adminv1.UpdateRouteRequest) (*adminv1.Route, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old, err := a.routeRef(m.Id)
	if err != nil {
		return nil, err
	}
	r := *old
	if m.Network != nil {
		r.Network = *m.Network
	}
	if m.Peers != nil {
		if r.Peers, err = a.peerIDs(m.Peers.Values); err != nil {
			return nil, err
		}
	}
	if m.Metric != nil {
		r.Metric = int(*m.Metric)
	}
	if m.Masquerade != nil {
		r.Masquerade = *m.Masquerade
	}
	if m.Description != nil {
		r.Description = *m.Description
	}
	if m.Groups != nil {
		if r.Groups, err = a.groupIDs(m.Groups.Values, false); err != nil {
			return nil, err
		}
	}
	if m.Enabled != nil {
		r.Enabled = *m.Enabled
	}
	if err := a.checkRoute(&r); err != nil {
		return nil, err
	}
	err = a.commit(ctx, audit{actor: actor, action: "route.updated", targetType: "route", targetID: r.ID, targetName: r.Network,
		detail: "via " + strings.Join(a.peerNames(r.Peers), ",")},
		func(tx *store.Tx) error { return tx.PutRoute(r) },
		func() { a.routes[r.ID] = &r },
		routeChange(old, &r))
	if err != nil {
		return nil, err
	}
	return a.routeMsg(&r), nil
}

func (a *account) deleteRoute(ctx context.Context, actor string, m *adminv1.DeleteRouteRequest) (*adminv1.DeleteRouteResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, err := a.routeRef(m.Id)
	if err != nil {
		return nil, err
	}
	err = a.commit(ctx, audit{actor: actor, action: "route.deleted", targetType: "route", targetID: r.ID, targetName: r.Network},
		func(tx *store.Tx) error { return tx.DeleteRoute(r.ID) },
		func() { delete(a.routes, r.ID) },
		routeChange(r))
	if err != nil {
		return nil, err
	}
	return &adminv1.DeleteRouteResponse{}, nil
}
