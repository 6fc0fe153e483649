package dashboard

import (
	"errors"
	"net/http"

	adminv1 "meshd/api/admin/v1"
)

// The pages of peers, groups, policies and setup keys. Each GET lists
// through the admin API; each POST makes one admin call and either
// redirects back with a notice or shows the page again with the error next
// to its field.

var errUnknownAction = errors.New("unknown action: reload the page")

type peersData struct {
	Peers []*adminv1.Peer
}

func (d *Dashboard) peersPage(w http.ResponseWriter, r *http.Request, s *session) error {
	res, err := call(r.Context(), s.token, d.admin.ListPeers, &adminv1.ListPeersRequest{})
	if err != nil {
		return err
	}
	d.render(w, r, s, http.StatusOK, "peers", &page{Title: "Peers", Nav: "peers", Notice: done(r), Data: peersData{res.Peers}})
	return nil
}

type peerData struct {
	Peer   *adminv1.Peer
	Groups []*adminv1.Group
}

func (d *Dashboard) peerPage(w http.ResponseWriter, r *http.Request, s *session) error {
	return d.showPeer(w, r, s, http.StatusOK, &page{Notice: done(r)})
}

func (d *Dashboard) showPeer(w http.ResponseWriter, r *http.Request, s *session, status int, p *page) error {
	peer, err := call(r.Context(), s.token, d.admin.GetPeer, &adminv1.GetPeerRequest{Id: r.PathValue("id")})
	if err != nil {
		return err
	}
	groups, err := call(r.Context(), s.token, d.admin.ListGroups, &adminv1.ListGroupsRequest{})
	if err != nil {
		return err
	}
	p.Title, p.Nav, p.Data = "Peer "+peer.Name, "peers", peerData{peer, groups.Groups}
	d.render(w, r, s, status, "peer", p)
	return nil
}

func (d *Dashboard) peerPost(w http.ResponseWriter, r *http.Request, s *session) error {
	id, v := r.PathValue("id"), r.PostForm
	ctx := r.Context()
	var err error
	var fields []field
	switch v.Get("action") {
	case "rename":
		name := v.Get("name")
		_, err = call(ctx, s.token, d.admin.UpdatePeer, &adminv1.UpdatePeerRequest{Id: id, Name: &name})
		fields = []field{f("name", "name")}
	case "groups":
		_, err = call(ctx, s.token, d.admin.UpdatePeer, &adminv1.UpdatePeerRequest{Id: id,
			Groups: &adminv1.StringList{Values: multi(v, "groups")}})
		fields = []field{f("groups", "group")}
	case "expiry":
		e := on(v, "expiry")
		_, err = call(ctx, s.token, d.admin.UpdatePeer, &adminv1.UpdatePeerRequest{Id: id, LoginExpirationEnabled: &e})
	case "delete":
		if _, err = call(ctx, s.token, d.admin.DeletePeer, &adminv1.DeletePeerRequest{Id: id}); err == nil {
			return redirect(w, r, "/peers", "Peer deleted.")
		}
	default:
		err = errUnknownAction
	}
	if err != nil {
		if isAuth(err) {
			return err
		}
		p := &page{Form: r.PostForm, Errors: map[string]string{}}
		if fl := fieldFor(message(err), r.PostForm, fields); fl != "" {
			p.Errors[fl] = message(err)
		} else {
			p.Error = message(err)
		}
		return d.showPeer(w, r, s, http.StatusUnprocessableEntity, p)
	}
	return redirect(w, r, "/peers/"+id, "Saved.")
}

type groupsData struct {
	Groups []*adminv1.Group
	Peers  []*adminv1.Peer
}

func (d *Dashboard) groupsPage(w http.ResponseWriter, r *http.Request, s *session) error {
	return d.showGroups(w, r, s, &page{Notice: done(r)}, nil)
}

func (d *Dashboard) showGroups(w http.ResponseWriter, r *http.Request, s *session, p *page, cause error) error {
	groups, err := call(r.Context(), s.token, d.admin.ListGroups, &adminv1.ListGroupsRequest{})
	if err != nil {
		return err
	}
	peers, err := call(r.Context(), s.token, d.admin.ListPeers, &adminv1.ListPeersRequest{})
	if err != nil {
		return err
	}
	p.Title, p.Nav, p.Data = "Groups", "groups", groupsData{groups.Groups, peers.Peers}
	if cause != nil {
		return d.formError(w, r, s, "groups", p, cause, f("name", "name", "group"), f("peers", "peer"))
	}
	d.render(w, r, s, http.StatusOK, "groups", p)
	return nil
}

func (d *Dashboard) groupsPost(w http.ResponseWriter, r *http.Request, s *session) error {
	v, ctx := r.PostForm, r.Context()
	var err error
	switch v.Get("action") {
	case "create":
		_, err = call(ctx, s.token, d.admin.CreateGroup, &adminv1.CreateGroupRequest{Name: v.Get("name"), Peers: multi(v, "peers")})
	case "update":
		name := v.Get("name")
		_, err = call(ctx, s.token, d.admin.UpdateGroup, &adminv1.UpdateGroupRequest{Id: v.Get("id"), Name: &name,
			Peers: &adminv1.StringList{Values: multi(v, "peers")}})
	case "delete":
		_, err = call(ctx, s.token, d.admin.DeleteGroup, &adminv1.DeleteGroupRequest{Id: v.Get("id")})
	default:
		err = errUnknownAction
	}
	if err != nil {
		return d.showGroups(w, r, s, &page{}, err)
	}
	return redirect(w, r, "/groups", "Saved.")
}

type policiesData struct {
	Policies []*adminv1.Policy
	Groups   []*adminv1.Group
	Peers    []*adminv1.Peer
	Policy   *adminv1.Policy // the one edited
	Check    *adminv1.CheckAccessResponse
}

var policyFields = []field{f("name", "policy name", "name"), f("sources", "source", "group"),
	f("destinations", "destination"), f("protocol", "protocol"), f("ports", "port"), f("description", "description")}

func (d *Dashboard) policiesPage(w http.ResponseWriter, r *http.Request, s *session) error {
	return d.showPolicies(w, r, s, "policies", &page{Notice: done(r)}, nil, nil)
}

func (d *Dashboard) showPolicies(w http.ResponseWriter, r *http.Request, s *session, name string, p *page, edit *adminv1.Policy, cause error, fields ...field) error {
	ctx := r.Context()
	pol, err := call(ctx, s.token, d.admin.ListPolicies, &adminv1.ListPoliciesRequest{})
	if err != nil {
		return err
	}
	groups, err := call(ctx, s.token, d.admin.ListGroups, &adminv1.ListGroupsRequest{})
	if err != nil {
		return err
	}
	peers, err := call(ctx, s.token, d.admin.ListPeers, &adminv1.ListPeersRequest{})
	if err != nil {
		return err
	}
	data := policiesData{Policies: pol.Policies, Groups: groups.Groups, Peers: peers.Peers, Policy: edit}
	if c, ok := p.Data.(*adminv1.CheckAccessResponse); ok {
		data.Check = c
	}
	p.Title, p.Nav, p.Data = "Policies", "policies", data
	if edit != nil {
		p.Title = "Policy " + edit.Name
	}
	if cause != nil {
		if fields == nil {
			fields = policyFields
		}
		return d.formError(w, r, s, name, p, cause, fields...)
	}
	d.render(w, r, s, http.StatusOK, name, p)
	return nil
}

func (d *Dashboard) policiesPost(w http.ResponseWriter, r *http.Request, s *session) error {
	v, ctx := r.PostForm, r.Context()
	var err error
	switch v.Get("action") {
	case "create":
		enabled := on(v, "enabled")
		_, err = call(ctx, s.token, d.admin.CreatePolicy, &adminv1.CreatePolicyRequest{Name: v.Get("name"),
			Description: v.Get("description"), Sources: multi(v, "sources"), Destinations: multi(v, "destinations"),
			Protocol: v.Get("protocol"), Ports: list(v, "ports"), Bidirectional: on(v, "bidirectional"), Enabled: &enabled})
	case "enable", "disable":
		enabled := v.Get("action") == "enable"
		_, err = call(ctx, s.token, d.admin.UpdatePolicy, &adminv1.UpdatePolicyRequest{Id: v.Get("id"), Enabled: &enabled})
	case "delete":
		_, err = call(ctx, s.token, d.admin.DeletePolicy, &adminv1.DeletePolicyRequest{Id: v.Get("id")})
	case "check":
		port, perr := number(v, "port", "port")
		if perr != nil {
			return d.showPolicies(w, r, s, "policies", &page{}, nil, perr, f("port", "port"))
		}
		res, err := call(ctx, s.token, d.admin.CheckAccess, &adminv1.CheckAccessRequest{Source: v.Get("source"),
			Destination: v.Get("destination"), Protocol: v.Get("check_protocol"), Port: uint32(min(max(port, 0), 1<<20))})
		if err != nil {
			return d.showPolicies(w, r, s, "policies", &page{}, nil, err,
				f("source", "source", "peer"), f("destination", "destination"), f("check_protocol", "protocol", "icmp"), f("port", "port"))
		}
		return d.showPolicies(w, r, s, "policies", &page{Form: v, Data: res}, nil, nil)
	default:
		err = errUnknownAction
	}
	if err != nil {
		return d.showPolicies(w, r, s, "policies", &page{}, nil, err)
	}
	return redirect(w, r, "/policies", "Saved.")
}

func (d *Dashboard) policyPage(w http.ResponseWriter, r *http.Request, s *session) error {
	pol, err := call(r.Context(), s.token, d.admin.GetPolicy, &adminv1.GetPolicyRequest{Id: r.PathValue("id")})
	if err != nil {
		return err
	}
	return d.showPolicies(w, r, s, "policy", &page{Notice: done(r)}, pol, nil)
}

func (d *Dashboard) policyPost(w http.ResponseWriter, r *http.Request, s *session) error {
	v, ctx, id := r.PostForm, r.Context(), r.PathValue("id")
	name, desc, proto := v.Get("name"), v.Get("description"), v.Get("protocol")
	enabled, bidi := on(v, "enabled"), on(v, "bidirectional")
	_, err := call(ctx, s.token, d.admin.UpdatePolicy, &adminv1.UpdatePolicyRequest{Id: id, Name: &name, Description: &desc,
		Sources: &adminv1.StringList{Values: multi(v, "sources")}, Destinations: &adminv1.StringList{Values: multi(v, "destinations")},
		Protocol: &proto, Ports: &adminv1.StringList{Values: list(v, "ports")}, Bidirectional: &bidi, Enabled: &enabled})
	if err != nil {
		// The form again as it was typed, with the error.
		typed := &adminv1.Policy{Id: id, Name: name, Description: desc, Sources: multi(v, "sources"),
			Destinations: multi(v, "destinations"), Protocol: proto, Ports: list(v, "ports"), Bidirectional: bidi, Enabled: enabled}
		return d.showPolicies(w, r, s, "policy", &page{}, typed, err)
	}
	return redirect(w, r, "/policies", "Policy saved.")
}

type keysData struct {
	Keys    []*adminv1.SetupKey
	Groups  []*adminv1.Group
	Created *adminv1.SetupKey // shown once
}

var keyFields = []field{f("name", "name"), f("usage_limit", "usage limit", "one-off"), f("expires_days", "expir"),
	f("auto_groups", "group")}

func (d *Dashboard) keysPage(w http.ResponseWriter, r *http.Request, s *session) error {
	return d.showKeys(w, r, s, &page{Notice: done(r)}, nil, nil)
}

func (d *Dashboard) showKeys(w http.ResponseWriter, r *http.Request, s *session, p *page, created *adminv1.SetupKey, cause error) error {
	keys, err := call(r.Context(), s.token, d.admin.ListSetupKeys, &adminv1.ListSetupKeysRequest{})
	if err != nil {
		return err
	}
	groups, err := call(r.Context(), s.token, d.admin.ListGroups, &adminv1.ListGroupsRequest{})
	if err != nil {
		return err
	}
	p.Title, p.Nav, p.Data = "Setup keys", "setup-keys", keysData{keys.SetupKeys, groups.Groups, created}
	if cause != nil {
		return d.formError(w, r, s, "setup-keys", p, cause, keyFields...)
	}
	d.render(w, r, s, http.StatusOK, "setup-keys", p)
	return nil
}

func (d *Dashboard) keysPost(w http.ResponseWriter, r *http.Request, s *session) error {
	v, ctx := r.PostForm, r.Context()
	var err error
	switch v.Get("action") {
	case "create":
		days, derr := number(v, "expires_days", "expiry in days")
		limit, lerr := number(v, "usage_limit", "usage limit")
		if err = errors.Join(derr, lerr); err != nil {
			break
		}
		var k *adminv1.SetupKey
		k, err = call(ctx, s.token, d.admin.CreateSetupKey, &adminv1.CreateSetupKeyRequest{Name: v.Get("name"),
			OneOff: on(v, "one_off"), ExpiresInSeconds: days * 86400, UsageLimit: int32(min(max(limit, -1), 1<<30)),
			AutoGroups: multi(v, "auto_groups"), Ephemeral: on(v, "ephemeral")})
		if err == nil {
			// Not a redirect: the key and its join line are shown this once.
			return d.showKeys(w, r, s, &page{Notice: "Setup key created. Copy the join line now: it is not shown again."}, k, nil)
		}
	case "revoke":
		revoked := true
		_, err = call(ctx, s.token, d.admin.UpdateSetupKey, &adminv1.UpdateSetupKeyRequest{Id: v.Get("id"), Revoked: &revoked})
	case "delete":
		_, err = call(ctx, s.token, d.admin.DeleteSetupKey, &adminv1.DeleteSetupKeyRequest{Id: v.Get("id")})
	default:
		err = errUnknownAction
	}
	if err != nil {
		return d.showKeys(w, r, s, &page{}, nil, err)
	}
	return redirect(w, r, "/setup-keys", "Saved.")
}
