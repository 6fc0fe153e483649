// Package pgcluster is the PostgreSQL implementation of cluster.Cluster:
// the replicas of one network share heartbeats, leases, presence and
// one-time tokens in tables of the store's migrations (0007_cluster.sql),
// and their message bus is LISTEN/NOTIFY on the same database, so that an
// HA deployment needs PostgreSQL and nothing else. Time always comes from
// the database's clock (now()), never from a replica's, so replicas with
// skewed clocks still agree on who is alive and who holds a lease. Only
// roles/ and internal/control/controltest (replicas on PostgreSQL in tests)
// import it.
//
// It uses github.com/jackc/pgx/v5 because its connection can wait for
// notifications (database/sql cannot) and its pool is what the store uses.
package pgcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"meshd/internal/cluster"
)

// SchemaVersion is the store schema that holds this package's tables.
const SchemaVersion = 7

// nowUS is the database's clock in unix microseconds, the unit of every
// time column of the cluster tables.
const nowUS = `(extract(epoch from now()) * 1000000)::bigint`

// Cluster is one replica's view of the shared state. Build it with Open.
type Cluster struct {
	id   string
	log  *zap.Logger
	pool *pgxpool.Pool
	pub  *pgxpool.Pool   // NOTIFYs only: commits that need not wait for the disk
	cfg  *pgx.ConnConfig // for the listen connection

	ttlUS atomic.Int64 // last Heartbeat's ttl: Present's idea of "live"

	// presence writes hold pmu for reading; a Heartbeat that rewrites this
	// replica's presence holds it for writing, so that no write of a key
	// lands between its snapshot and its rewrite.
	pmu     sync.RWMutex
	mu      sync.Mutex
	present map[string]bool // keys this replica holds, to restore if forgotten
	dirty   uint64          // failed presence writes so far
	cleanAt uint64          // dirty when the table last matched present

	bus    *bus
	cancel context.CancelFunc
	done   sync.WaitGroup
	closed atomic.Bool
}

var _ cluster.Cluster = (*Cluster)(nil)

// Open connects to the database at dsn and joins the cluster there. The
// schema must be at SchemaVersion or newer (the store's migrations, which
// `meshd control` applies at start).
func Open(ctx context.Context, dsn string, log *zap.Logger) (*Cluster, error) {
	if log == nil {
		log = zap.NewNop()
	}
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: parse --store URL: %w", err)
	}
	where := fmt.Sprintf("%s:%d/%s", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, pcfg.ConnConfig.Database)
	if pcfg.ConnConfig.ConnectTimeout == 0 || pcfg.ConnConfig.ConnectTimeout > 10*time.Second {
		pcfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	// A database that vanishes without closing the socket (a partition, a
	// powered-off host) is noticed in about 20 s rather than Linux's
	// default of over two hours.
	dialer := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 5 * time.Second, Count: 3}}
	pcfg.ConnConfig.DialFunc = dialer.DialContext
	// Idle connections a restarted database closed are found and dropped
	// within seconds (pgxpool's default: a minute), so fewer calls after a
	// restart fail once on a dead connection.
	pcfg.HealthCheckPeriod = 2 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: connect to %s: %w", where, err)
	}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var version int
	err = pool.QueryRow(octx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&version)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		err, version = nil, 0
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgcluster: connect to %s: %w: %w", where, cluster.ErrUnavailable, err)
	}
	if version < SchemaVersion {
		pool.Close()
		return nil, fmt.Errorf("pgcluster: %s has schema version %d, older than %d: run meshd control (or all) with this --store first, which migrates it", where, version, SchemaVersion)
	}
	// A message is worth nothing after a crash of the database (its
	// subscribers resync then), so its commit need not wait for the WAL
	// to reach the disk: batches go out as fast as the CPU allows.
	qcfg := pcfg.Copy()
	qcfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	qcfg.MaxConns = senders + 1
	pub, err := pgxpool.NewWithConfig(ctx, qcfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgcluster: connect to %s: %w", where, err)
	}
	c := &Cluster{id: randID(), log: log.Named("pgcluster"), pool: pool, pub: pub, cfg: pcfg.ConnConfig.Copy(), present: map[string]bool{}}
	rctx, rcancel := context.WithCancel(context.Background())
	c.cancel = rcancel
	c.bus = newBus(c)
	if err := c.bus.start(octx, rctx); err != nil {
		rcancel()
		pool.Close()
		pub.Close()
		return nil, fmt.Errorf("pgcluster: listen on %s: %w: %w", where, cluster.ErrUnavailable, err)
	}
	return c, nil
}

func randID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// unavailable wraps a database error so that callers can test for
// cluster.ErrUnavailable.
func unavailable(what string, err error) error {
	if errors.Is(err, cluster.ErrUnavailable) || errors.Is(err, context.Canceled) { // canceled: the caller gave up
		return fmt.Errorf("pgcluster: %s: %w", what, err)
	}
	return fmt.Errorf("pgcluster: %s: %w: %w", what, cluster.ErrUnavailable, err)
}

// Self is this replica's ID.
func (c *Cluster) Self() string { return c.id }

// Publish sends payload to the subscribers of channel on every replica,
// this one included, through NOTIFY.
func (c *Cluster) Publish(ctx context.Context, channel string, payload []byte) error {
	return c.bus.publish(ctx, channel, payload)
}

// Subscribe delivers what is published on channel until ctx ends or the
// cluster is closed; nil means messages may have been lost.
func (c *Cluster) Subscribe(ctx context.Context, channel string) (<-chan []byte, error) {
	return c.bus.subscribe(ctx, channel)
}

// Heartbeat records r as alive at the database's now, forgets replicas
// not seen for ttl (with their presence and leases) and lists the rest.
// When this replica was forgotten itself (the database was away longer
// than ttl, and another replica's heartbeat came first), it records its
// presence again.
func (c *Cluster) Heartbeat(ctx context.Context, r cluster.Replica, ttl time.Duration) ([]cluster.Replica, error) {
	ttlUS := ttl.Microseconds()
	c.ttlUS.Store(ttlUS)
	c.pmu.Lock()
	defer c.pmu.Unlock()
	c.mu.Lock()
	dirty := c.dirty
	resync := dirty != c.cleanAt
	keys := make([]string, 0, len(c.present))
	for k := range c.present {
		keys = append(keys, k)
	}
	c.mu.Unlock()

	var out []cluster.Replica
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		var inserted bool
		err := tx.QueryRow(ctx, `INSERT INTO cluster_replicas (id, public_url, signal_url, relay_urls, version, started, seen)
			VALUES ($1, $2, $3, $4, $5, $6, `+nowUS+`)
			ON CONFLICT (id) DO UPDATE SET public_url = EXCLUDED.public_url, signal_url = EXCLUDED.signal_url,
				relay_urls = EXCLUDED.relay_urls, version = EXCLUDED.version, started = EXCLUDED.started, seen = EXCLUDED.seen
			RETURNING (xmax = 0)`,
			c.id, r.PublicURL, r.SignalURL, strings.Join(r.RelayURLs, "\n"), r.Version, r.Started.UnixMicro()).Scan(&inserted)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `WITH dead AS (DELETE FROM cluster_replicas WHERE seen < `+nowUS+` - $1 RETURNING id),
			p AS (DELETE FROM cluster_presence WHERE replica IN (SELECT id FROM dead)),
			l AS (DELETE FROM cluster_leases WHERE holder IN (SELECT id FROM dead))
			SELECT count(*) FROM dead`, ttlUS); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM cluster_once WHERE expires < `+nowUS); err != nil {
			return err
		}
		if inserted || resync {
			if _, err := tx.Exec(ctx, `DELETE FROM cluster_presence WHERE replica = $1`, c.id); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO cluster_presence (key, replica) SELECT unnest($1::text[]), $2
				ON CONFLICT DO NOTHING`, keys, c.id); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, `SELECT id, public_url, signal_url, relay_urls, version, started, seen FROM cluster_replicas`)
		if err != nil {
			return err
		}
		out = out[:0]
		for rows.Next() {
			var x cluster.Replica
			var relays string
			var started, seen int64
			if err := rows.Scan(&x.ID, &x.PublicURL, &x.SignalURL, &relays, &x.Version, &started, &seen); err != nil {
				return err
			}
			if relays != "" {
				x.RelayURLs = strings.Split(relays, "\n")
			}
			x.Started, x.Seen = time.UnixMicro(started), time.UnixMicro(seen)
			out = append(out, x)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, unavailable("heartbeat", err)
	}
	c.mu.Lock()
	c.cleanAt = dirty
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Started.Equal(out[j].Started) {
			return out[i].Started.Before(out[j].Started)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Lead takes or renews the lease name until the database's now + ttl. One
// statement decides, so two replicas racing for a free lease cannot both
// win.
func (c *Cluster) Lead(ctx context.Context, name string, ttl time.Duration) (bool, error) {
	rows, err := c.pool.Query(ctx, `INSERT INTO cluster_leases (name, holder, expires) VALUES ($1, $2, `+nowUS+` + $3)
		ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires
		WHERE cluster_leases.holder = EXCLUDED.holder OR cluster_leases.expires < `+nowUS+`
		RETURNING holder`, name, c.id, ttl.Microseconds())
	if err != nil {
		return false, unavailable("lead "+name, err)
	}
	n := 0
	for rows.Next() {
		n++
	}
	if err := rows.Err(); err != nil {
		return false, unavailable("lead "+name, err)
	}
	return n == 1, nil
}

// SetPresent records or clears key for this replica; other replicas see
// it once this one has sent a Heartbeat (a replica that died before its
// first one was never live). This replica keeps its own list too, so that
// a Heartbeat can restore what the table lost.
func (c *Cluster) SetPresent(ctx context.Context, key string, present bool) error {
	c.pmu.RLock()
	defer c.pmu.RUnlock()
	c.mu.Lock()
	if present {
		c.present[key] = true
	} else {
		delete(c.present, key)
	}
	c.mu.Unlock()
	var err error
	if present {
		_, err = c.pool.Exec(ctx, `INSERT INTO cluster_presence (key, replica) VALUES ($1, $2) ON CONFLICT DO NOTHING`, key, c.id)
	} else {
		_, err = c.pool.Exec(ctx, `DELETE FROM cluster_presence WHERE key = $1 AND replica = $2`, key, c.id)
	}
	if err != nil {
		c.mu.Lock()
		c.dirty++ // the next successful Heartbeat writes the whole list
		c.mu.Unlock()
		return unavailable("set presence", err)
	}
	return nil
}

// liveFilter restricts presence rows (alias p) to this replica and those
// seen within the last Heartbeat's ttl (any ttl before the first one).
const liveFilter = `(p.replica = $2 OR EXISTS (SELECT 1 FROM cluster_replicas r
	WHERE r.id = p.replica AND ($3 = 0 OR r.seen >= ` + nowUS + ` - $3)))`

// Present lists the live replicas where key is present.
func (c *Cluster) Present(ctx context.Context, key string) ([]string, error) {
	return c.strings(ctx, "presence", `SELECT p.replica FROM cluster_presence p WHERE p.key = $1 AND `+liveFilter,
		key, c.id, c.ttlUS.Load())
}

// PresentWithPrefix lists the keys with prefix present on a live replica.
func (c *Cluster) PresentWithPrefix(ctx context.Context, prefix string) ([]string, error) {
	return c.strings(ctx, "presence", `SELECT DISTINCT p.key FROM cluster_presence p WHERE starts_with(p.key, $1) AND `+liveFilter,
		prefix, c.id, c.ttlUS.Load())
}

func (c *Cluster) strings(ctx context.Context, what, query string, args ...any) ([]string, error) {
	rows, err := c.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, unavailable(what, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, unavailable(what, err)
	}
	sort.Strings(out)
	return out, nil
}

// PutOnce stores token until exp. exp comes from this replica's clock;
// what is stored is the database's now plus the time left, so that
// replicas with skewed clocks agree on when it expires.
func (c *Cluster) PutOnce(ctx context.Context, token string, exp time.Time) error {
	_, err := c.pool.Exec(ctx, `INSERT INTO cluster_once (token, expires) VALUES ($1, `+nowUS+` + $2)
		ON CONFLICT (token) DO UPDATE SET expires = EXCLUDED.expires`, token, time.Until(exp).Microseconds())
	if err != nil {
		return unavailable("put one-time token", err)
	}
	return nil
}

// TakeOnce deletes token and reports whether it existed and had not
// expired at now (this replica's clock, taken as an offset from its
// present: the database's clock decides). DELETE ... RETURNING hands a
// row to one transaction only, so exactly one replica wins.
func (c *Cluster) TakeOnce(ctx context.Context, token string, now time.Time) (bool, error) {
	rows, err := c.pool.Query(ctx, `DELETE FROM cluster_once WHERE token = $1 RETURNING expires > `+nowUS+` + $2`,
		token, now.Sub(time.Now()).Microseconds())
	if err != nil {
		return false, unavailable("take one-time token", err)
	}
	valid, err := pgx.CollectRows(rows, pgx.RowTo[bool])
	if err != nil {
		return false, unavailable("take one-time token", err)
	}
	return len(valid) == 1 && valid[0], nil
}

// Close releases this replica's presence, leases and listeners and leaves
// the cluster, so that other replicas need not wait for its ttl.
func (c *Cluster) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		for _, q := range []string{`DELETE FROM cluster_presence WHERE replica = $1`,
			`DELETE FROM cluster_leases WHERE holder = $1`, `DELETE FROM cluster_replicas WHERE id = $1`} {
			if _, err := tx.Exec(ctx, q, c.id); err != nil {
				return err
			}
		}
		return nil
	})
	c.cancel()
	c.bus.close()
	c.done.Wait()
	c.pool.Close()
	c.pub.Close()
	if err != nil {
		return unavailable("leave", err)
	}
	return nil
}
