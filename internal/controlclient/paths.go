package controlclient

import (
	"context"

	"connectrpc.com/connect"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/seal"
)

// ReportPaths tells control how this peer reaches the others (shown to
// admins), through the replica in use. Control refuses reports that come sooner than
// control.MinPathReport after the previous one.
func (c *Client) ReportPaths(ctx context.Context, paths []*controlv1.PathReport) error {
	rpc, err := c.rpcFor(c.URL())
	if err != nil {
		return err
	}
	proof, err := c.prove(ctx, rpc, seal.PurposePaths)
	if err != nil {
		return err
	}
	if _, err := rpc.ReportPaths(ctx, connect.NewRequest(&controlv1.ReportPathsRequest{Proof: proof, Paths: paths})); err != nil {
		return refusedOr(err, "report paths")
	}
	return nil
}
