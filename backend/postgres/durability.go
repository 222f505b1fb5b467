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
// server or role that is not durable.
func (d *durability) checkPool(ctx context.Context, pool *pgxpool.Pool) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: read durability settings: %w", err)
	}
	if err := d.checkAcquired(ctx, conn); err != nil {
		return err
	}
	conn.Release()
	return nil
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
