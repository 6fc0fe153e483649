package control

import (
	"context"
	"fmt"
	"strings"

	"go.uber.org/zap"

	"meshd/internal/cluster"
	"meshd/store/pgcluster"
)

// openCluster joins the network's other replicas: on a PostgreSQL store
// through the same database (LISTEN/NOTIFY and its cluster tables, which
// store.Open has just migrated), on SQLite this process alone.
func openCluster(ctx context.Context, target string, log *zap.Logger) (cluster.Cluster, error) {
	if !IsShared(target) {
		return cluster.Local(), nil
	}
	c, err := pgcluster.Open(ctx, target, log.Named("cluster"))
	if err != nil {
		return nil, fmt.Errorf("control: replicas: %w", err)
	}
	return c, nil
}

// IsShared reports whether a --store value names a database that several
// replicas may share (PostgreSQL), rather than SQLite.
func IsShared(target string) bool {
	return strings.HasPrefix(target, "postgres://") || strings.HasPrefix(target, "postgresql://")
}
