package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one embedded SQL file, numbered by its name's prefix.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations lists the embedded files in version order. It panics on a
// misnamed file: that is a build defect, caught by every test.
var migrations = func() []migration {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		panic(err)
	}
	var out []migration
	for _, entry := range entries {
		name := entry.Name()
		prefix, _, ok := strings.Cut(name, "_")
		version, err := strconv.Atoi(prefix)
		if !ok || err != nil || version <= 0 {
			panic(fmt.Sprintf("postgres: migration %q is not named NNNN_description.sql", name))
		}
		sql, err := migrationFiles.ReadFile(path.Join("migrations", name))
		if err != nil {
			panic(err)
		}
		out = append(out, migration{version: version, name: name, sql: string(sql)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i, m := range out {
		if m.version != i+1 {
			panic(fmt.Sprintf("postgres: migration %q: versions must be 1, 2, 3, ... without gaps", m.name))
		}
	}
	return out
}()

// LatestSchemaVersion is the schema version that this package's code needs
// and that Migrate brings a schema to.
var LatestSchemaVersion = len(migrations)

// ErrSchemaVersion is returned when a schema is not at LatestSchemaVersion
// and the store may not migrate it: it is newer than this code knows, or
// Config.SkipMigrate is set and it is older.
var ErrSchemaVersion = errors.New("postgres: schema version does not match this code")

// Migrate creates Config.Schema and its tables if they are missing and
// applies every embedded migration the schema has not yet seen, recording
// each in the schema's schema_migrations table. It is idempotent; on a
// schema that is up to date it only reads the version, so it needs no
// privilege to create anything.
//
// All of it runs in one transaction, under an advisory lock derived from
// the schema name that is taken before the transaction begins and released
// after it ends, so processes that start at once wait for each other
// instead of racing; the later ones find the work done. A schema at a
// version newer than this code fails with ErrSchemaVersion, so old code
// never writes to a schema it does not know.
func Migrate(ctx context.Context, pool *pgxpool.Pool, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	if pool == nil {
		return fmt.Errorf("%w: nil pool", ErrInvalidConfig)
	}
	// The common case, a schema already up to date, needs neither the lock
	// nor DDL privileges.
	if current, err := readVersion(ctx, pool, cfg); err == nil && current == LatestSchemaVersion {
		return nil
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate %s: %w", cfg.Schema, err)
	}
	defer conn.Release()
	// A session lock taken before the transaction begins, not a
	// transaction-scoped one: PostgreSQL refreshes a session's catalog
	// caches when a transaction starts, not when it gets an advisory lock,
	// so a transaction that waited inside for the lock could still believe
	// a schema that the previous holder created is missing.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLockKey(cfg.Schema)); err != nil {
		// The lock may have been granted after all: drop the session.
		_ = conn.Conn().Close(context.WithoutCancel(ctx))
		return fmt.Errorf("postgres: migrate %s: lock: %w", cfg.Schema, err)
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLockKey(cfg.Schema)); err != nil {
			// Closing the session releases the lock; the pool then
			// discards the connection.
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
		}
	}()
	// READ COMMITTED explicitly: each statement must see what a process
	// that held the lock before us committed.
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return fmt.Errorf("postgres: migrate %s: begin: %w", cfg.Schema, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // a no-op after Commit

	setup := "CREATE SCHEMA IF NOT EXISTS " + cfg.quotedSchema() + ";\n" +
		"CREATE TABLE IF NOT EXISTS " + cfg.table("schema_migrations") + ` (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		);
		SET LOCAL search_path TO ` + cfg.quotedSchema()
	if _, err := tx.Exec(ctx, setup); err != nil {
		return fmt.Errorf("postgres: migrate %s: create schema: %w", cfg.Schema, err)
	}
	current, err := readVersion(ctx, tx, cfg)
	if err != nil {
		return fmt.Errorf("postgres: migrate %s: %w", cfg.Schema, err)
	}
	if current > LatestSchemaVersion {
		return fmt.Errorf("%w: schema %s is at version %d, this code knows up to %d", ErrSchemaVersion, cfg.Schema, current, LatestSchemaVersion)
	}
	for _, m := range migrations[current:] {
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("postgres: migrate %s: apply %s: %w", cfg.Schema, m.name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+cfg.table("schema_migrations")+" (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			return fmt.Errorf("postgres: migrate %s: record %s: %w", cfg.Schema, m.name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: migrate %s: commit: %w", cfg.Schema, err)
	}
	if current < LatestSchemaVersion {
		cfg.Logger.Info("postgres: migrated schema", "schema", cfg.Schema, "from", current, "to", LatestSchemaVersion)
	}
	return nil
}

// SchemaVersion returns the version of the latest migration applied to
// Config.Schema, or 0 if the schema or its schema_migrations table does
// not exist.
func SchemaVersion(ctx context.Context, pool *pgxpool.Pool, cfg Config) (int, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return 0, err
	}
	if pool == nil {
		return 0, fmt.Errorf("%w: nil pool", ErrInvalidConfig)
	}
	version, err := readVersion(ctx, pool, cfg)
	if err != nil {
		return 0, fmt.Errorf("postgres: schema version of %s: %w", cfg.Schema, err)
	}
	return version, nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func readVersion(ctx context.Context, q querier, cfg Config) (int, error) {
	var version int
	err := q.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+cfg.table("schema_migrations")).Scan(&version)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") {
		return 0, nil // undefined_table or invalid_schema_name: never migrated
	}
	return version, err
}

// migrationLockKey derives the advisory lock of one schema's migrations,
// so that migrating one schema does not wait for another.
func migrationLockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("baton/backend/postgres migrate " + schema))
	return int64(h.Sum64())
}
