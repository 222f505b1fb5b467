package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// checkedMark is the key in a connection's pgconn.CustomData that records
// that its durability settings were checked and accepted. The mark lives
// and dies with the connection, so every new connection is checked once,
// whichever pool or hook made it.
const checkedMark = "baton/backend/postgres: durability checked"

// durability checks each connection's settings before the store writes
// on it. The settings are per session: a role or database setting
// (ALTER ROLE ... SET synchronous_commit = off) reaches only connections
// opened after it, and a caller's pool may set them per connection, so one
// check at startup does not cover the connections opened later.
type durability struct {
	allowUnsafe bool
	schema      string
	logger      *slog.Logger
	warned      atomic.Bool // the AllowUnsafe warning is logged once per store
}

func newDurability(cfg Config) *durability {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &durability{allowUnsafe: cfg.AllowUnsafe, schema: cfg.Schema, logger: logger}
}

// check accepts conn if its commits are durable, or if Config.AllowUnsafe
// is set (with a warning), and otherwise returns an error wrapping
// ErrUnsafeServer. A connection is read once; later calls on it cost a map
// lookup.
func (d *durability) check(ctx context.Context, conn *pgx.Conn) error {
	data := conn.PgConn().CustomData()
	if data[checkedMark] == true {
		return nil
	}
	problem, err := durabilityProblem(ctx, conn)
	if err != nil {
		return fmt.Errorf("postgres: read durability settings: %w", err)
	}
	if problem != "" {
		user := conn.Config().User
		if !d.allowUnsafe {
			d.logger.Error("postgres: refusing a connection whose commits are not durable; the store writes nothing on it, and the call fails as not applied",
				"reason", problem, "user", user, "schema", d.schema,
				"fix", "turn it on for this database or role (ALTER ROLE/DATABASE ... SET), or set postgres.Config.AllowUnsafe for throw-away data")
			return fmt.Errorf("%w: %s for user %s; turn it on for this database or role, or set Config.AllowUnsafe for throw-away data", ErrUnsafeServer, problem, user)
		}
		if !d.warned.Swap(true) {
			d.logger.Warn("postgres: commits are not durable and Config.AllowUnsafe accepts it: acknowledged tokens and entity commits may be lost in a server crash",
				"reason", problem, "user", user, "schema", d.schema)
		}
	}
	data[checkedMark] = true
	return nil
}

// checkPool checks one connection of pool, so that New fails at once on a
// server or role that is not durable, and warns if the server's standbys
// could lose acknowledged commits in a failover.
func (d *durability) checkPool(ctx context.Context, pool *pgxpool.Pool) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: read durability settings: %w", err)
	}
	if err := d.checkAcquired(ctx, conn); err != nil {
		return err
	}
	defer conn.Release()
	risk, err := replicationRisk(ctx, conn.Conn())
	switch {
	case err != nil:
		d.logger.Debug("postgres: cannot read the server's standbys", "error", err)
	case risk != "":
		d.logger.Warn("postgres: a failover to a standby could lose acknowledged commits: consumed tokens come back (work done twice) and issued ones vanish (signals dropped)",
			"reason", risk, "schema", d.schema,
			"fix", "replicate synchronously (synchronous_standby_names, synchronous_commit on or remote_apply) or never promote an asynchronous standby")
	}
	return nil
}

// replicationRisk returns why a standby of the server, promoted after a
// crash, could lack commits the store acknowledged, or "" if it sees no
// such standby. The standbys' modes are visible only to roles that may
// read all statistics (superuser, pg_read_all_stats); for other roles
// pg_stat_replication shows no modes and this says nothing.
func replicationRisk(ctx context.Context, conn *pgx.Conn) (string, error) {
	var async, standbys int
	var syncCommit string
	err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE sync_state = 'async'), count(sync_state), current_setting('synchronous_commit')
FROM pg_stat_replication`).Scan(&async, &standbys, &syncCommit)
	if err != nil {
		return "", err
	}
	return standbyRisk(async, standbys, syncCommit), nil
}

// standbyRisk is replicationRisk's verdict on async of standbys streaming
// asynchronously, and the session's synchronous_commit.
func standbyRisk(async, standbys int, syncCommit string) string {
	switch {
	case standbys == 0:
		return ""
	case async > 0:
		return fmt.Sprintf("%d of the server's %d standbys replicate asynchronously", async, standbys)
	case syncCommit == "local":
		return fmt.Sprintf("synchronous_commit is local: commits do not wait for the server's %d synchronous standbys", standbys)
	}
	return ""
}

// checkAcquired checks conn and releases it if it fails the check: closed,
// so that the pool opens a new connection (which reads the settings anew)
// instead of handing this one out again. The caller releases conn only if
// it passed.
func (d *durability) checkAcquired(ctx context.Context, conn *pgxpool.Conn) error {
	err := d.check(ctx, conn.Conn())
	if err != nil {
		_ = conn.Conn().Close(ctx)
		conn.Release()
	}
	return err
}

// durabilityProblem reads the session's settings and returns why its
// commits are not durable, or "" if they are. synchronous_commit off
// acknowledges a commit before its WAL is flushed; every other value
// (on, local, remote_write, remote_apply) flushes it locally first.
func durabilityProblem(ctx context.Context, conn *pgx.Conn) (string, error) {
	var syncCommit string
	var fsync *string // NULL where the server has no such setting
	err := conn.QueryRow(ctx, "SELECT current_setting('synchronous_commit'), current_setting('fsync', true)").Scan(&syncCommit, &fsync)
	if err != nil {
		return "", err
	}
	switch {
	case syncCommit == "off":
		return "synchronous_commit is off", nil
	case fsync != nil && *fsync == "off":
		return "fsync is off", nil
	}
	return "", nil
}
