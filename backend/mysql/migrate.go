package mysql

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// ErrSchemaVersion: the database holds a schema newer than this code
// knows, written by a newer baton. Open refuses it, so that old code never
// writes to a newer schema.
// With Config.SkipMigrate, Open also refuses tables at an older version,
// or none.
var ErrSchemaVersion = errors.New("mysql: schema version does not match this code")

type migration struct {
	version    int
	statements []string
}

// loadMigrations reads the embedded migrations in version order, with the
// prefix filled in.
func loadMigrations(prefix string) ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	var out []migration
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("mysql: migration %s: no version number", base)
		}
		data, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var lines []string
		for line := range strings.Lines(string(data)) {
			if !strings.HasPrefix(strings.TrimSpace(line), "--") {
				lines = append(lines, line)
			}
		}
		m := migration{version: version}
		// The files hold no semicolon but those that end statements.
		for stmt := range strings.SplitSeq(strings.ReplaceAll(strings.Join(lines, ""), "{prefix}", prefix), ";") {
			if stmt = strings.TrimSpace(stmt); stmt != "" {
				m.statements = append(m.statements, stmt)
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// LatestSchemaVersion is the schema version this code needs.
func LatestSchemaVersion() int {
	ms, err := loadMigrations(DefaultPrefix)
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// Migrate creates the store's tables and applies the migrations it lacks
// (tables already up to date: it only reads their version), under a named
// lock (GET_LOCK) so that processes that start together wait
// for each other. MySQL commits each DDL statement on its own, so every
// statement is written to be run again (IF NOT EXISTS) and a version is
// recorded once all of its statements ran.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := loadMigrations(s.cfg.Prefix)
	if err != nil {
		return err
	}
	// The common case, tables already up to date, needs neither the lock
	// nor the CREATE privilege (which CREATE TABLE IF NOT EXISTS checks
	// even where the table exists).
	if v, err := s.SchemaVersion(ctx); err == nil && v == ms[len(ms)-1].version {
		return nil
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("mysql: migrate: %w", err)
	}
	defer conn.Close()
	lock := "baton-migrate/" + s.cfg.Prefix
	var got int
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 60)", lock).Scan(&got); err != nil {
		return fmt.Errorf("mysql: migrate: take the migration lock %q: %w", lock, err)
	}
	if got != 1 {
		// 0: another session held it for the whole minute (a migration
		// that hangs, or a session that took the lock and stalled).
		return fmt.Errorf("mysql: migrate: the migration lock %q is held by another session and was not released within 60s: find it with SELECT IS_USED_LOCK('%s')", lock, lock)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK(?)", lock)
	versions := table(s.cfg.Prefix, "schema_migrations")
	if _, err := conn.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+versions+" (version INT NOT NULL PRIMARY KEY) ENGINE = InnoDB"); err != nil {
		return fmt.Errorf("mysql: migrate: %w", err)
	}
	applied := map[int]bool{}
	rows, err := conn.QueryContext(ctx, "SELECT version FROM "+versions)
	if err != nil {
		return fmt.Errorf("mysql: migrate: %w", err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return fmt.Errorf("mysql: migrate: %w", err)
		}
		applied[v] = true
	}
	rows.Close()
	latest := ms[len(ms)-1].version
	for v := range applied {
		if v > latest {
			return fmt.Errorf("%w: the database has version %d, this code knows up to %d", ErrSchemaVersion, v, latest)
		}
	}
	for _, m := range ms {
		if applied[m.version] {
			continue
		}
		for _, stmt := range m.statements {
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("mysql: migrate to version %d: %w", m.version, err)
			}
		}
		if _, err := conn.ExecContext(ctx, "INSERT INTO "+versions+" (version) VALUES (?)", m.version); err != nil {
			return fmt.Errorf("mysql: migrate to version %d: %w", m.version, err)
		}
	}
	return nil
}

// SchemaVersion is the newest schema version recorded in the store's
// tables: 0 if they do not exist.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	err := s.db.QueryRowContext(ctx, "SELECT MAX(version) FROM "+table(s.cfg.Prefix, "schema_migrations")).Scan(&v)
	if mysqlErrorNumber(err) == errNoSuchTable {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("mysql: schema version: %w", err)
	}
	return int(v.Int64), nil
}

// checkSchema refuses tables at another version than this code's, for a
// store that does not migrate them (Config.SkipMigrate).
func (s *Store) checkSchema(ctx context.Context) error {
	v, err := s.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	if latest := LatestSchemaVersion(); v != latest {
		return fmt.Errorf("%w: the tables of prefix %q are at version %d, this code needs %d (Config.SkipMigrate is set: run Migrate first)", ErrSchemaVersion, s.cfg.Prefix, v, latest)
	}
	return nil
}

// dropTables removes the store's tables (tests).
func (s *Store) dropTables(ctx context.Context) error {
	var errs []error
	for _, name := range []string{"tokens", "entities", "starts", "schema_migrations"} {
		if _, err := s.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+table(s.cfg.Prefix, name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
