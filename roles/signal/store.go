package signal

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"meshd/internal/cluster"
	"meshd/store/pgcluster"
)

var (
	storeFlag = &cli.StringFlag{Name: "store", EnvVars: []string{"MESHD_STORE"},
		Usage: "PostgreSQL `URL` of the network's control replicas (postgres://user:pass@host:5432/db): signal instances sharing it forward to each other's peers (default: this instance alone)"}
	publicURLFlag = &cli.StringFlag{Name: "public-url", Usage: "`URL` agents reach this signal at, listed in `meshd admin server status` (with --store)"}
)

// openCluster joins the signal instances sharing a PostgreSQL store, or
// returns this instance alone.
func openCluster(ctx context.Context, target string, log *zap.Logger) (cluster.Cluster, error) {
	if target == "" {
		return cluster.Local(), nil
	}
	if !strings.HasPrefix(target, "postgres://") && !strings.HasPrefix(target, "postgresql://") {
		return nil, fmt.Errorf("--store: want the PostgreSQL URL control uses (postgres://user:pass@host:5432/db); signal alone needs no store")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := pgcluster.Open(ctx, target, log.Named("cluster"))
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return c, nil
}
