package controlclient

import (
	"context"

	"connectrpc.com/connect"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/seal"
)

// ReportPaths tells control how this peer reaches the others (shown to
// admins). Control refuses reports that come sooner than
// control.MinPathReport after the previous one.
func (c *Client) ReportPaths(ctx context.Context, paths []*controlv1.PathReport) error {
	proof, err := c.prove(ctx, seal.PurposePaths)
	if err != nil {
		return err
	}
	if _, err := c.rpc.ReportPaths(ctx, connect.NewRequest(&controlv1.ReportPathsRequest{Proof: proof, Paths: paths})); err != nil {
		return refusedOr(err, "report paths")
	}
	return nil
}
