package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton/store"
)

// ErrUnsafeServer is returned by New and Open when the server acknowledges
// commits before they are durable (synchronous_commit or fsync off) and
// Config.AllowUnsafe is not set. A call whose connection turns out to be
// such a connection (one opened after the settings changed) fails with an
// error matching both ErrUnsafeServer and store.ErrNotApplied.
var ErrUnsafeServer = errors.New("postgres: server does not make commits durable")

// Store is a token store and an entity store in one PostgreSQL schema. It
// implements store.TokenStore, store.EntityStore and
// store.CommitTransitioner; use it as either store alone if the other
// lives elsewhere. It is safe for concurrent use, and any number of Stores
// in any number of processes may share one schema.
type Store struct {
	pool       *pgxpool.Pool
	ownsPool   bool
	closed     atomic.Bool
	schema     string
	sql        statements
	tx         txStatements
	durability *durability // checks each connection before its first use
	issues     issueGroup  // roots issued at the same time, written together
}

var (
	_ store.TokenStore         = (*Store)(nil)
	_ store.EntityStore        = (*Store)(nil)
	_ store.CommitTransitioner = (*Store)(nil)
	_ store.TokenLoader        = (*Store)(nil)
	_ store.BatchCommitter     = (*Store)(nil)
	_ store.BatchLoader        = (*Store)(nil)
)

// Open connects to the database that dsn names (a PostgreSQL URL or
// key=value string as pgxpool.ParseConfig takes, including pool settings
// such as pool_max_conns) and returns a Store over it as New does. Close
// closes the pool. Its connections plan prepared statements once
// (plan_cache_mode force_generic_plan, see "Prepared statements" in the
// package doc) unless the DSN sets plan_cache_mode.
func Open(ctx context.Context, dsn string, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	poolCfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgconn's parse errors redact the password; do not add the DSN.
		return nil, fmt.Errorf("%w: dsn: %w", ErrInvalidConfig, err)
	}
	if _, set := poolCfg.ConnConfig.RuntimeParams[planCacheMode]; !set {
		poolCfg.ConnConfig.RuntimeParams[planCacheMode] = GenericPlans
	}
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	s, err := New(ctx, pool, cfg)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.ownsPool = true
	return s, nil
}

// planCacheMode is the session setting that chooses between a prepared
// statement's plan for its parameters and its one generic plan.
const planCacheMode = "plan_cache_mode"

// GenericPlans is the plan_cache_mode that Open sets and that a pool given
// to New should set too, in its connections' RuntimeParams or as
// plan_cache_mode=force_generic_plan in the DSN: see "Prepared
// statements" in the package doc.
const GenericPlans = "force_generic_plan"

// New returns a Store over Config.Schema in pool's database. Unless
// Config.SkipMigrate is set it runs Migrate first. It refuses a server
// that does not make commits durable (ErrUnsafeServer, unless
// Config.AllowUnsafe) and a schema at another version than
// LatestSchemaVersion (ErrSchemaVersion). Close leaves pool open: it
// belongs to the caller.
//
// The durability settings are checked on one connection at startup and
// then on every other connection before the store first uses it (see
// "Required server settings" in the package doc), so a pool whose new
// connections come with synchronous_commit off (a role or database
// setting changed later, a hook of the caller's pool) is refused from then
// on.
func New(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if pool == nil {
		return nil, fmt.Errorf("%w: nil pool", ErrInvalidConfig)
	}
	durability := newDurability(cfg)
	if err := durability.checkPool(ctx, pool); err != nil {
		return nil, err
	}
	if !cfg.SkipMigrate {
		if err := Migrate(ctx, pool, cfg); err != nil {
			return nil, err
		}
	}
	version, err := SchemaVersion(ctx, pool, cfg)
	if err != nil {
		return nil, err
	}
	if version != LatestSchemaVersion {
		return nil, fmt.Errorf("%w: schema %s is at version %d, this code needs %d (run Migrate)", ErrSchemaVersion, cfg.Schema, version, LatestSchemaVersion)
	}
	connCfg := pool.Config().ConnConfig
	cfg.Logger.Info("postgres: store ready", "host", connCfg.Host, "port", connCfg.Port,
		"database", connCfg.Database, "user", connCfg.User, "schema", cfg.Schema, "schema_version", version)
	return &Store{pool: pool, schema: cfg.Schema, sql: newStatements(cfg), tx: newTxStatements(cfg), durability: durability}, nil
}

// Schema returns the schema that holds the store's tables.
func (s *Store) Schema() string { return s.schema }

// Pool returns the connection pool the store uses.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close makes every later call fail with store.ErrClosed and closes the
// pool if Open created it. Calls in progress finish first.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.ownsPool {
		s.pool.Close()
	}
	return nil
}

// withConn runs fn on a pooled connection and maps its error. A failure to
// get a connection, or a connection that fails the durability check, is
// "not applied": nothing of fn was sent.
func (s *Store) withConn(ctx context.Context, fn func(*pgxpool.Conn) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", store.ErrNotApplied, err)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		if s.closed.Load() {
			return store.ErrClosed
		}
		return fmt.Errorf("%w: acquire connection: %w", store.ErrNotApplied, err)
	}
	if err := s.durability.checkAcquired(ctx, conn); err != nil {
		return fmt.Errorf("%w: %w", store.ErrNotApplied, err)
	}
	defer conn.Release()
	return classify(fn(conn))
}

// classify maps an error from pgx to the store's failure semantics.
//
//   - pgconn.SafeToRetry: pgx knows the request was never sent: not applied.
//   - unique_violation (23505): a token id that exists: store.ErrExists.
//   - serialization_failure (40001), deadlock_detected (40P01): the server
//     rolled the transaction back: not applied.
//   - read_only_sql_transaction (25006): a read-only server (a standby, or
//     default_transaction_read_only) refused a write, which a statement
//     raises before it runs, never a commit: not applied.
//   - anything else, including a lost connection or a cancelled context
//     after the request was sent: outcome unknown.
//
// Errors that already carry a store sentinel pass through.
func classify(err error) error {
	if err == nil || store.NotApplied(err) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505":
			return fmt.Errorf("%w: %w", store.ErrExists, err)
		case "40001", "40P01", "25006":
			return fmt.Errorf("%w: %w", store.ErrNotApplied, err)
		}
	}
	if pgconn.SafeToRetry(err) {
		return fmt.Errorf("%w: %w", store.ErrNotApplied, err)
	}
	return fmt.Errorf("postgres: outcome unknown: %w", err)
}
