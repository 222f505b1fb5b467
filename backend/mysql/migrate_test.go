package mysql

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// TestPrefixesThatLookLikeNumbers: every prefix that Config accepts
// creates its tables; "1e5_" reads as the number 1e5 where a name is
// not quoted.
func TestPrefixesThatLookLikeNumbers(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"1e5_", "0x1f"} {
		prefix := prefix + uniquePrefix()[1:5]
		s, err := Open(t.Context(), dsn(t), Config{Prefix: prefix})
		if err != nil {
			t.Errorf("Open with prefix %q = %v", prefix, err)
			continue
		}
		if _, err := s.Issue(t.Context(), baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}); err != nil {
			t.Errorf("Issue with prefix %q = %v", prefix, err)
		}
		_ = s.dropTables(t.Context())
		s.Close()
	}
}

// TestSkipMigrateChecksTheSchema: with SkipMigrate, Open still refuses
// tables that are missing or at another version, as postgres does,
// instead of failing later in every call (or writing to a newer schema).
func TestSkipMigrateChecksTheSchema(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	prefix := uniquePrefix()
	s, err := Open(ctx, dsn(t), Config{Prefix: prefix, SkipMigrate: true})
	if err == nil {
		s.Close()
		t.Fatalf("Open with SkipMigrate over no tables succeeded")
	}
	if !errors.Is(err, ErrSchemaVersion) {
		t.Fatalf("Open with SkipMigrate over no tables = %v, want ErrSchemaVersion", err)
	}
	migrated := openPrefix(t, dsn(t), prefix)
	if _, err := migrated.DB().ExecContext(ctx, "INSERT INTO "+table(prefix, "schema_migrations")+" (version) VALUES (?)", LatestSchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(ctx, dsn(t), Config{Prefix: prefix, SkipMigrate: true}); !errors.Is(err, ErrSchemaVersion) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open with SkipMigrate over a newer schema = %v, want ErrSchemaVersion", err)
	}
}

// TestStartsKeepLongTraceContext: a start records the trace context of
// the caller's span as OpenTelemetry propagates it: a tracestate of up to
// 32 members of 256-byte values, longer than W3C's 512 bytes that every
// vendor must at least pass on. RecordStart stores it whole.
func TestStartsKeepLongTraceContext(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newStore(t)
	start := store.Start{ID: baton.NewTokenID(), Destination: "billing", Type: "charge", CreatedAt: time.Now(),
		Trace: baton.TraceContext{Parent: "01-" + strings.Repeat("a", 120), State: strings.Repeat("vendor=value,", 600)}}
	tx, err := s.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := s.RecordStart(ctx, tx, start, nil); err != nil {
		t.Fatalf("RecordStart with a traceparent of %d bytes and a tracestate of %d: %v", len(start.Trace.Parent), len(start.Trace.State), err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadStart(ctx, start.ID)
	if err != nil || got.Trace != start.Trace {
		t.Fatalf("LoadStart = trace of %d and %d bytes, %v; want %d and %d", len(got.Trace.Parent), len(got.Trace.State), err, len(start.Trace.Parent), len(start.Trace.State))
	}
}

// TestMigratesFromEveryVersion: tables at each older version, with a row
// in them, are brought to the latest by Open, the rows kept; processes
// that open a fresh prefix at once all succeed.
func TestMigratesFromEveryVersion(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	ms, err := loadMigrations("")
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range ms[:len(ms)-1] {
		prefix := uniquePrefix()
		ms, _ := loadMigrations(prefix)
		s := openPrefix(t, dsn(t), prefix) // at the latest version
		if err := s.dropTables(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DB().ExecContext(ctx, "CREATE TABLE "+table(prefix, "schema_migrations")+" (version INT NOT NULL PRIMARY KEY) ENGINE = InnoDB"); err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.version > from.version {
				break
			}
			for _, stmt := range m.statements {
				if _, err := s.DB().ExecContext(ctx, stmt); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.DB().ExecContext(ctx, "INSERT INTO "+table(prefix, "schema_migrations")+" (version) VALUES (?)", m.version); err != nil {
				t.Fatal(err)
			}
		}
		tok, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		again, err := Open(ctx, dsn(t), Config{Prefix: prefix})
		if err != nil {
			t.Fatalf("Open over version %d: %v", from.version, err)
		}
		if v, err := again.SchemaVersion(ctx); err != nil || v != LatestSchemaVersion() {
			t.Errorf("after Open over version %d: version %d, %v", from.version, v, err)
		}
		if _, err := again.Get(ctx, tok.ID); err != nil {
			t.Errorf("after Open over version %d: %v", from.version, err)
		}
		again.Close()
	}

	prefix := uniquePrefix()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			s, err := Open(ctx, dsn(t), Config{Prefix: prefix})
			if err != nil {
				errs <- err
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Open of a fresh prefix, four at once: %v", err)
	}
	openPrefix(t, dsn(t), prefix) // drops the tables at the end
}

// TestOpensAnUpToDateSchemaWithoutDDLPrivileges: a service whose database
// user may only read and write rows opens tables that a deployment step
// migrated, without SkipMigrate: Migrate reads the version first and,
// finding it current, creates nothing (CREATE TABLE IF NOT EXISTS needs
// the CREATE privilege even where the table exists).
func TestOpensAnUpToDateSchemaWithoutDDLPrivileges(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rootDSN := startMariaDB(t)
	admin, err := Open(ctx, rootDSN, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, stmt := range []string{
		"CREATE USER 'service'@'%' IDENTIFIED BY 'secret'",
		"GRANT SELECT, INSERT, UPDATE, DELETE ON baton.* TO 'service'@'%'",
	} {
		if _, err := admin.DB().ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Open(ctx, strings.Replace(rootDSN, "root@", "service:secret@", 1), Config{})
	if err != nil {
		t.Fatalf("Open as a user without DDL privileges over an up-to-date schema: %v", err)
	}
	defer s.Close()
	if _, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}
