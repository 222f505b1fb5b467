package mysql

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// withParams adds go-sql-driver parameters to the test DSN: a parameter
// that names a system variable sets it on every new connection, as a
// server configured so would.
func withParams(dsn, params string) string {
	if strings.Contains(dsn, "?") {
		return dsn + "&" + params
	}
	return dsn + "?" + params
}

// TestRefusesReadUncommitted: under READ UNCOMMITTED a plain read sees
// another transaction's uncommitted writes. An outbox entry of a commit
// that then rolls back would be driven (its children created, its
// signals sent) although its activity never happened: ghost messages.
// The store refuses such sessions instead of reading dirty rows.
func TestRefusesReadUncommitted(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	base := newStore(t)
	dirty := withParams(dsn(t), "tx_isolation=%27READ-UNCOMMITTED%27")
	s, err := Open(ctx, dirty, Config{Prefix: base.Prefix(), SkipMigrate: true})
	if err == nil {
		defer s.Close()
		// Not refused: show what it reads.
		tx, err := base.DB().BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		e := store.Entity{Key: "account", Outbox: []store.OutboxEntry{{Token: baton.NewTokenID(), CreatedAt: time.Now()}}}
		row, err := newEntityRow(e)
		if err != nil {
			t.Fatal(err)
		}
		if err := base.writeEntity(ctx, tx, e, row); err != nil {
			t.Fatal(err)
		}
		got, err := s.Load(ctx, "account")
		t.Fatalf("Open under READ UNCOMMITTED was not refused; Load read version %d with %d outbox entries of a transaction that did not commit (err %v)",
			got.Version, len(got.Outbox), err)
	}
	if !errors.Is(err, ErrUnsafeIsolation) || !strings.Contains(err.Error(), "READ-UNCOMMITTED") {
		t.Fatalf("Open under READ UNCOMMITTED = %v, want ErrUnsafeIsolation naming the level", err)
	}
}

// TestRefusesTruncation: a server (or session) without a strict sql_mode
// truncates a value longer than its column with a warning and stores the
// rest: data lost without an error. The store makes its sessions strict,
// so a value that does not fit fails its call.
func TestRefusesTruncation(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	base := newStore(t)
	lax := withParams(dsn(t), "sql_mode=%27%27")
	s, err := Open(ctx, lax, Config{Prefix: base.Prefix(), SkipMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var mode string
	if err := s.DB().QueryRowContext(ctx, "SELECT @@SESSION.sql_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	start := store.Start{ID: baton.NewTokenID(), Destination: "billing", Type: "charge", CreatedAt: time.Now(),
		Trace: baton.TraceContext{Parent: "00-" + strings.Repeat("a", 100), State: strings.Repeat("s", 600)}}
	tx, err := s.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := s.RecordStart(ctx, tx, start, nil); err == nil {
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		got, err := s.LoadStart(ctx, start.ID)
		if err == nil && (got.Trace != start.Trace) {
			t.Fatalf("sql_mode %q: RecordStart stored a traceparent of %d bytes as %d and a tracestate of %d as %d without an error",
				mode, len(start.Trace.Parent), len(got.Trace.Parent), len(start.Trace.State), len(got.Trace.State))
		}
	}
	if !strings.Contains(mode, "STRICT_ALL_TABLES") {
		t.Errorf("the store's session runs with sql_mode %q, want STRICT_ALL_TABLES", mode)
	}
}

// TestCommitsUnderAutocommitOff: a server (or DSN) with autocommit off
// leaves every statement outside an explicit transaction in an implicit
// one that nothing commits: Issue would return a root that no other
// connection sees and that is lost with the connection, and plain reads
// would keep one snapshot forever. The store's sessions commit each
// statement.
func TestCommitsUnderAutocommitOff(t *testing.T) {
	t.Parallel()
	for _, params := range []string{"autocommit=0", "completion_type=1"} {
		t.Run(params, func(t *testing.T) {
			t.Parallel()
			testCommitsUnder(t, params)
		})
	}
}

// testCommitsUnder checks that a statement of the store outside its
// transactions commits when it returns, over sessions set by params.
// completion_type=1 (CHAIN) begins a transaction at every COMMIT, in
// which the statements that follow on that connection would stay.
func testCommitsUnder(t *testing.T, params string) {
	ctx := t.Context()
	base := newStore(t)
	s, err := Open(ctx, withParams(dsn(t), params), Config{Prefix: base.Prefix(), SkipMigrate: true, MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A transaction of the store first, on the one connection.
	if _, err := s.Commit(ctx, store.Entity{Key: "other", State: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	root, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := base.Get(ctx, root.ID); err != nil {
		t.Fatalf("a root that Issue returned, read on another connection: %v", err)
	}
	// A commit on another connection is seen by the next read.
	if _, err := s.Load(ctx, "account"); err != nil {
		t.Fatal(err)
	}
	if _, err := base.Commit(ctx, store.Entity{Key: "account", State: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if e, err := s.Load(ctx, "account"); err != nil || e.Version != 1 {
		t.Fatalf("Load after another connection committed version 1 = version %d, %v", e.Version, err)
	}
}
