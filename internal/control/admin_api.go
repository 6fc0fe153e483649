package control

// The admin service's handlers: each authenticates (adminAuth), calls the
// account's method of the same name and maps errors to Connect codes. The
// logic lives in admin_*.go, per resource.

import (
	"context"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/api/admin/v1/adminv1connect"
)

// adminAPI is the admin Connect service.
type adminAPI struct{ s *Service }

var _ adminv1connect.AdminServiceHandler = (*adminAPI)(nil)

// handle runs an admin call for the caller's account.
func handle[Req, Res any](ctx context.Context, req *connect.Request[Req],
	fn func(a *account, actor string, m *Req) (*Res, error)) (*connect.Response[Res], error) {
	c := callerOf(ctx)
	res, err := fn(c.a, c.actor, req.Msg)
	if err != nil {
		return nil, adminError(err)
	}
	return connect.NewResponse(res), nil
}

func (x *adminAPI) GetAccount(ctx context.Context, req *connect.Request[adminv1.GetAccountRequest]) (*connect.Response[adminv1.Account], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.GetAccountRequest) (*adminv1.Account, error) {
		return a.getAccount(ctx, actor, m)
	})
}

func (x *adminAPI) UpdateAccount(ctx context.Context, req *connect.Request[adminv1.UpdateAccountRequest]) (*connect.Response[adminv1.Account], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.UpdateAccountRequest) (*adminv1.Account, error) {
		return a.updateAccount(ctx, actor, m)
	})
}

func (x *adminAPI) ListPeers(ctx context.Context, req *connect.Request[adminv1.ListPeersRequest]) (*connect.Response[adminv1.ListPeersResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.ListPeersRequest) (*adminv1.ListPeersResponse, error) {
		return a.listPeers(ctx, actor, m)
	})
}

func (x *adminAPI) GetPeer(ctx context.Context, req *connect.Request[adminv1.GetPeerRequest]) (*connect.Response[adminv1.Peer], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.GetPeerRequest) (*adminv1.Peer, error) {
		return a.getPeer(ctx, actor, m)
	})
}

func (x *adminAPI) UpdatePeer(ctx context.Context, req *connect.Request[adminv1.UpdatePeerRequest]) (*connect.Response[adminv1.Peer], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.UpdatePeerRequest) (*adminv1.Peer, error) {
		return a.updatePeer(ctx, actor, m)
	})
}

func (x *adminAPI) DeletePeer(ctx context.Context, req *connect.Request[adminv1.DeletePeerRequest]) (*connect.Response[adminv1.DeletePeerResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.DeletePeerRequest) (*adminv1.DeletePeerResponse, error) {
		return a.deletePeer(ctx, actor, m)
	})
}

func (x *adminAPI) ListGroups(ctx context.Context, req *connect.Request[adminv1.ListGroupsRequest]) (*connect.Response[adminv1.ListGroupsResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.ListGroupsRequest) (*adminv1.ListGroupsResponse, error) {
		return a.listGroups(ctx, actor, m)
	})
}

func (x *adminAPI) GetGroup(ctx context.Context, req *connect.Request[adminv1.GetGroupRequest]) (*connect.Response[adminv1.Group], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.GetGroupRequest) (*adminv1.Group, error) {
		return a.getGroup(ctx, actor, m)
	})
}

func (x *adminAPI) CreateGroup(ctx context.Context, req *connect.Request[adminv1.CreateGroupRequest]) (*connect.Response[adminv1.Group], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.CreateGroupRequest) (*adminv1.Group, error) {
		return a.createGroup(ctx, actor, m)
	})
}

func (x *adminAPI) UpdateGroup(ctx context.Context, req *connect.Request[adminv1.UpdateGroupRequest]) (*connect.Response[adminv1.Group], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.UpdateGroupRequest) (*adminv1.Group, error) {
		return a.updateGroup(ctx, actor, m)
	})
}

func (x *adminAPI) DeleteGroup(ctx context.Context, req *connect.Request[adminv1.DeleteGroupRequest]) (*connect.Response[adminv1.DeleteGroupResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.DeleteGroupRequest) (*adminv1.DeleteGroupResponse, error) {
		return a.deleteGroup(ctx, actor, m)
	})
}

func (x *adminAPI) ListSetupKeys(ctx context.Context, req *connect.Request[adminv1.ListSetupKeysRequest]) (*connect.Response[adminv1.ListSetupKeysResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.ListSetupKeysRequest) (*adminv1.ListSetupKeysResponse, error) {
		return a.listSetupKeys(ctx, actor, m)
	})
}

func (x *adminAPI) GetSetupKey(ctx context.Context, req *connect.Request[adminv1.GetSetupKeyRequest]) (*connect.Response[adminv1.SetupKey], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.GetSetupKeyRequest) (*adminv1.SetupKey, error) {
		return a.getSetupKey(ctx, actor, m)
	})
}

func (x *adminAPI) CreateSetupKey(ctx context.Context, req *connect.Request[adminv1.CreateSetupKeyRequest]) (*connect.Response[adminv1.SetupKey], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.CreateSetupKeyRequest) (*adminv1.SetupKey, error) {
		return a.createSetupKey(ctx, actor, m)
	})
}

func (x *adminAPI) UpdateSetupKey(ctx context.Context, req *connect.Request[adminv1.UpdateSetupKeyRequest]) (*connect.Response[adminv1.SetupKey], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.UpdateSetupKeyRequest) (*adminv1.SetupKey, error) {
		return a.updateSetupKey(ctx, actor, m)
	})
}

func (x *adminAPI) DeleteSetupKey(ctx context.Context, req *connect.Request[adminv1.DeleteSetupKeyRequest]) (*connect.Response[adminv1.DeleteSetupKeyResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.DeleteSetupKeyRequest) (*adminv1.DeleteSetupKeyResponse, error) {
		return a.deleteSetupKey(ctx, actor, m)
	})
}

func (x *adminAPI) ListPolicies(ctx context.Context, req *connect.Request[adminv1.ListPoliciesRequest]) (*connect.Response[adminv1.ListPoliciesResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.ListPoliciesRequest) (*adminv1.ListPoliciesResponse, error) {
		return a.listPolicies(ctx, actor, m)
	})
}

func (x *adminAPI) GetPolicy(ctx context.Context, req *connect.Request[adminv1.GetPolicyRequest]) (*connect.Response[adminv1.Policy], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.GetPolicyRequest) (*adminv1.Policy, error) {
		return a.getPolicy(ctx, actor, m)
	})
}

func (x *adminAPI) CreatePolicy(ctx context.Context, req *connect.Request[adminv1.CreatePolicyRequest]) (*connect.Response[adminv1.Policy], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.CreatePolicyRequest) (*adminv1.Policy, error) {
		return a.createPolicy(ctx, actor, m)
	})
}

func (x *adminAPI) UpdatePolicy(ctx context.Context, req *connect.Request[adminv1.UpdatePolicyRequest]) (*connect.Response[adminv1.Policy], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.UpdatePolicyRequest) (*adminv1.Policy, error) {
		return a.updatePolicy(ctx, actor, m)
	})
}

func (x *adminAPI) DeletePolicy(ctx context.Context, req *connect.Request[adminv1.DeletePolicyRequest]) (*connect.Response[adminv1.DeletePolicyResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.DeletePolicyRequest) (*adminv1.DeletePolicyResponse, error) {
		return a.deletePolicy(ctx, actor, m)
	})
}

func (x *adminAPI) ListRoutes(ctx context.Context, req *connect.Request[adminv1.ListRoutesRequest]) (*connect.Response[adminv1.ListRoutesResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.ListRoutesRequest) (*adminv1.ListRoutesResponse, error) {
		return a.listRoutes(ctx, actor, m)
	})
}

func (x *adminAPI) GetRoute(ctx context.Context, req *connect.Request[adminv1.GetRouteRequest]) (*connect.Response[adminv1.Route], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.GetRouteRequest) (*adminv1.Route, error) {
		return a.getRoute(ctx, actor, m)
	})
}

func (x *adminAPI) CreateRoute(ctx context.Context, req *connect.Request[adminv1.CreateRouteRequest]) (*connect.Response[adminv1.Route], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.CreateRouteRequest) (*adminv1.Route, error) {
		return a.createRoute(ctx, actor, m)
	})
}

func (x *adminAPI) UpdateRoute(ctx context.Context, req *connect.Request[adminv1.UpdateRouteRequest]) (*connect.Response[adminv1.Route], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.UpdateRouteRequest) (*adminv1.Route, error) {
		return a.updateRoute(ctx, actor, m)
	})
}

func (x *adminAPI) DeleteRoute(ctx context.Context, req *connect.Request[adminv1.DeleteRouteRequest]) (*connect.Response[adminv1.DeleteRouteResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.DeleteRouteRequest) (*adminv1.DeleteRouteResponse, error) {
		return a.deleteRoute(ctx, actor, m)
	})
}

func (x *adminAPI) GetDNSSettings(ctx context.Context, req *connect.Request[adminv1.GetDNSSettingsRequest]) (*connect.Response[adminv1.DNSSettings], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.GetDNSSettingsRequest) (*adminv1.DNSSettings, error) {
		return a.getDNSSettings(ctx, actor, m)
	})
}

func (x *adminAPI) UpdateDNSSettings(ctx context.Context, req *connect.Request[adminv1.UpdateDNSSettingsRequest]) (*connect.Response[adminv1.DNSSettings], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.UpdateDNSSettingsRequest) (*adminv1.DNSSettings, error) {
		return a.updateDNSSettings(ctx, actor, m)
	})
}

func (x *adminAPI) ListNameserverGroups(ctx context.Context, req *connect.Request[adminv1.ListNameserverGroupsRequest]) (*connect.Response[adminv1.ListNameserverGroupsResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.ListNameserverGroupsRequest) (*adminv1.ListNameserverGroupsResponse, error) {
		return a.listNameserverGroups(ctx, actor, m)
	})
}

func (x *adminAPI) GetNameserverGroup(ctx context.Context, req *connect.Request[adminv1.GetNameserverGroupRequest]) (*connect.Response[adminv1.NameserverGroup], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.GetNameserverGroupRequest) (*adminv1.NameserverGroup, error) {
		return a.getNameserverGroup(ctx, actor, m)
	})
}

func (x *adminAPI) CreateNameserverGroup(ctx context.Context, req *connect.Request[adminv1.CreateNameserverGroupRequest]) (*connect.Response[adminv1.NameserverGroup], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.CreateNameserverGroupRequest) (*adminv1.NameserverGroup, error) {
		return a.createNameserverGroup(ctx, actor, m)
	})
}

func (x *adminAPI) UpdateNameserverGroup(ctx context.Context, req *connect.Request[adminv1.UpdateNameserverGroupRequest]) (*connect.Response[adminv1.NameserverGroup], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.UpdateNameserverGroupRequest) (*adminv1.NameserverGroup, error) {
		return a.updateNameserverGroup(ctx, actor, m)
	})
}

func (x *adminAPI) DeleteNameserverGroup(ctx context.Context, req *connect.Request[adminv1.DeleteNameserverGroupRequest]) (*connect.Response[adminv1.DeleteNameserverGroupResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.DeleteNameserverGroupRequest) (*adminv1.DeleteNameserverGroupResponse, error) {
		return a.deleteNameserverGroup(ctx, actor, m)
	})
}

func (x *adminAPI) ListDNSRecords(ctx context.Context, req *connect.Request[adminv1.ListDNSRecordsRequest]) (*connect.Response[adminv1.ListDNSRecordsResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.ListDNSRecordsRequest) (*adminv1.ListDNSRecordsResponse, error) {
		return a.listDNSRecords(ctx, actor, m)
	})
}

func (x *adminAPI) GetDNSRecord(ctx context.Context, req *connect.Request[adminv1.GetDNSRecordRequest]) (*connect.Response[adminv1.DNSRecord], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.GetDNSRecordRequest) (*adminv1.DNSRecord, error) {
		return a.getDNSRecord(ctx, actor, m)
	})
}

func (x *adminAPI) CreateDNSRecord(ctx context.Context, req *connect.Request[adminv1.CreateDNSRecordRequest]) (*connect.Response[adminv1.DNSRecord], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.CreateDNSRecordRequest) (*adminv1.DNSRecord, error) {
		return a.createDNSRecord(ctx, actor, m)
	})
}

func (x *adminAPI) UpdateDNSRecord(ctx context.Context, req *connect.Request[adminv1.UpdateDNSRecordRequest]) (*connect.Response[adminv1.DNSRecord], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.UpdateDNSRecordRequest) (*adminv1.DNSRecord, error) {
		return a.updateDNSRecord(ctx, actor, m)
	})
}

func (x *adminAPI) DeleteDNSRecord(ctx context.Context, req *connect.Request[adminv1.DeleteDNSRecordRequest]) (*connect.Response[adminv1.DeleteDNSRecordResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.DeleteDNSRecordRequest) (*adminv1.DeleteDNSRecordResponse, error) {
		return a.deleteDNSRecord(ctx, actor, m)
	})
}

func (x *adminAPI) ListEvents(ctx context.Context, req *connect.Request[adminv1.ListEventsRequest]) (*connect.Response[adminv1.ListEventsResponse], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.ListEventsRequest) (*adminv1.ListEventsResponse, error) {
		return a.listEvents(ctx, actor, m)
	})
}
