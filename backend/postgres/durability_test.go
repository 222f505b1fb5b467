package postgres

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton/store"
)

// A role whose synchronous_commit is turned off after the store started
// reaches only the connections opened from then on. The store checks each
// new connection before it writes on it, so it refuses those (not applied)
// rather than acknowledging commits that a crash could take back.
func TestRefusesNewConnectionsThatAreNotDurable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	role := createLoginRole(t)
	schema := uniqueSchema(t)

	var logged strings.Builder
	safe := openAsRole(t, role, Config{Schema: schema, Logger: newTextLogger(&logged)})
	if _, err := safe.Commit(ctx, store.Entity{Key: "before"}); err != nil {
		t.Fatalf("Commit while the role is durable: %v", err)
	}

	alterRole(t, role, "SET synchronous_commit = off")
	safe.Pool().Reset() // the pool's one connection is closed; the next call opens another

	_, err := safe.Commit(ctx, store.Entity{Key: "after"})
	if !errors.Is(err, ErrUnsafeServer) || !errors.Is(err, store.ErrNotApplied) {
		t.Fatalf("Commit on a new connection with synchronous_commit off = %v, want ErrUnsafeServer and store.ErrNotApplied", err)
	}
	if !strings.Contains(err.Error(), "synchronous_commit is off") || !strings.Contains(err.Error(), role) {
		t.Errorf("the refusal does not say what is wrong for whom: %v", err)
	}
	if !strings.Contains(logged.String(), "level=ERROR") || !strings.Contains(logged.String(), "synchronous_commit is off") {
		t.Errorf("the refusal was not logged as an error:\n%s", logged.String())
	}
	if e := loadAsSuperuser(t, schema, "after"); e.Version != 0 {
		t.Fatalf("the refused Commit was written: %+v", e)
	}

	// A new store over the role is refused at once; AllowUnsafe accepts it
	// with one warning, and then writes.
	if _, err := New(ctx, rolePool(t, role), Config{Schema: schema, SkipMigrate: true}); !errors.Is(err, ErrUnsafeServer) {
		t.Fatalf("New as a role with synchronous_commit off = %v, want ErrUnsafeServer", err)
	}
	var warned strings.Builder
	unsafe := openAsRole(t, role, Config{Schema: schema, SkipMigrate: true, AllowUnsafe: true, Logger: newTextLogger(&warned)})
	for _, key := range []string{"unsafe-1", "unsafe-2"} {
		if _, err := unsafe.Commit(ctx, store.Entity{Key: key}); err != nil {
			t.Fatalf("Commit with AllowUnsafe: %v", err)
		}
		unsafe.Pool().Reset()
	}
	if got := strings.Count(warned.String(), "level=WARN"); got != 1 {
		t.Errorf("AllowUnsafe logged %d warnings, want 1:\n%s", got, warned.String())
	}

	// Turned back on, new connections are accepted again.
	alterRole(t, role, "RESET synchronous_commit")
	safe.Pool().Reset()
	if _, err := safe.Commit(ctx, store.Entity{Key: "again"}); err != nil {
		t.Fatalf("Commit after synchronous_commit was reset: %v", err)
	}
}

// createLoginRole creates a role that may log in and create schemas in the
// test database, and drops it (with what it owns) when t ends.
func createLoginRole(t *testing.T) string {
	t.Helper()
	ctx := t.Context()
	admin := testPool(t)
	role := "baton_test_role_" + hex.EncodeToString(randomBytes(6))
	var database string
	if err := admin.QueryRow(ctx, "SELECT current_database()").Scan(&database); err != nil {
		t.Fatal(err)
	}
	quoted := pgx.Identifier{role}.Sanitize()
	if _, err := admin.Exec(ctx, "CREATE ROLE "+quoted+" LOGIN"); err != nil {
		t.Fatalf("create role: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// DROP OWNED removes the role's schema and its grant on the database.
		if _, err := admin.Exec(ctx, "DROP OWNED BY "+quoted+" CASCADE"); err != nil {
			t.Errorf("drop what role %s owns: %v", role, err)
		}
		if _, err := admin.Exec(ctx, "DROP ROLE "+quoted); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	if _, err := admin.Exec(ctx, "GRANT CREATE ON DATABASE "+pgx.Identifier{database}.Sanitize()+" TO "+quoted); err != nil {
		t.Fatalf("grant create: %v", err)
	}
	return role
}

func alterRole(t *testing.T, role, setting string) {
	t.Helper()
	if _, err := testPool(t).Exec(t.Context(), "ALTER ROLE "+pgx.Identifier{role}.Sanitize()+" "+setting); err != nil {
		t.Fatalf("alter role: %v", err)
	}
}

// rolePool returns a pool of one connection that logs in as role.
func rolePool(t *testing.T, role string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.User = role
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// openAsRole returns a store over a pool of one connection as role.
func openAsRole(t *testing.T, role string, cfg Config) *Store {
	t.Helper()
	s, err := New(t.Context(), rolePool(t, role), cfg)
	if err != nil {
		t.Fatalf("New as role %s: %v", role, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// loadAsSuperuser reads an entity over the shared pool, whose role is
// durable, to see what was written.
func loadAsSuperuser(t *testing.T, schema, key string) store.Entity {
	t.Helper()
	s, err := New(t.Context(), testPool(t), Config{Schema: schema, SkipMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.Load(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func newTextLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// TestStandbyRisk checks the verdict on a server's standbys. This machine's
// server has none (and its pg_hba.conf takes no replication connections),
// so the warning itself is checked only on the verdict; New on it must stay
// silent.
func TestStandbyRisk(t *testing.T) {
	for _, c := range []struct {
		async, standbys int
		syncCommit      string
		want            string
	}{
		{0, 0, "on", ""},
		{0, 0, "local", ""},
		{0, 2, "on", ""},
		{0, 2, "remote_apply", ""},
		{1, 2, "on", "1 of the server's 2 standbys replicate asynchronously"},
		{1, 1, "remote_apply", "1 of the server's 1 standbys replicate asynchronously"},
		{0, 1, "local", "synchronous_commit is local: commits do not wait for the server's 1 synchronous standbys"},
	} {
		if got := standbyRisk(c.async, c.standbys, c.syncCommit); got != c.want {
			t.Errorf("standbyRisk(%d, %d, %q) = %q, want %q", c.async, c.standbys, c.syncCommit, got, c.want)
		}
	}

	var logged strings.Builder
	pool := newPool(t, 1)
	t.Cleanup(pool.Close)
	if _, err := New(t.Context(), pool, Config{Schema: uniqueSchema(t), Logger: newTextLogger(&logged)}); err != nil {
		t.Fatal(err)
	}
	var standbys int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM pg_stat_replication").Scan(&standbys); err != nil {
		t.Fatal(err)
	}
	if standbys == 0 && strings.Contains(logged.String(), "failover") {
		t.Errorf("New warned about standbys on a server without any:\n%s", logged.String())
	}
}
