package control

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/version"
)

func (x *adminAPI) GetServerStatus(ctx context.Context, req *connect.Request[adminv1.GetServerStatusRequest]) (*connect.Response[adminv1.ServerStatus], error) {
	return handle(ctx, req, func(a *account, actor string, m *adminv1.GetServerStatusRequest) (*adminv1.ServerStatus, error) {
		st := a.serverStatus()
		x.s.replicaStatus(st)
		if hook := x.s.opts.Status; hook != nil {
			hook(st)
		}
		return st, nil
	})
}

// serverStatus is control's part of the server status: its version, when it
// started, and the account's peers.
func (a *account) serverStatus() *adminv1.ServerStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	return &adminv1.ServerStatus{
		Version:     version.String(),
		Started:     timestamppb.New(a.s.started),
		Peers:       int32(len(a.peers)),
		PeersOnline: int32(a.onlineCount()),
	}
}
