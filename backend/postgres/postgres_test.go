package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// sharedPool is one pool for every test in this binary; each test's store
// lives in a schema of its own within it.
var (
	sharedMu   sync.Mutex
	sharedPool *pgxpool.Pool
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedPool != nil {
		sharedPool.Close()
	}
	os.Exit(code)
}

// dsn returns the test database's DSN, or skips the test (see testenv).
func dsn(t testing.TB) string { return testenv.Addr(t, testenv.Postgres) }

func newPool(t testing.TB, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = maxConns
	// Configured as Open configures its pool; testPool's connections keep
	// the server's default, so the tests run under both.
	cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = GenericPlans
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

func testPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	addr := dsn(t) // skips before anything is created
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedPool == nil {
		cfg, err := pgxpool.ParseConfig(addr)
		if err != nil {
			t.Fatal(err)
		}
		cfg.MaxConns = 16
		if sharedPool, err = pgxpool.NewWithConfig(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	return sharedPool
}

// uniqueSchema returns a fresh schema name and drops the schema when t ends.
func uniqueSchema(t testing.TB) string {
	t.Helper()
	pool := testPool(t)
	schema := "baton_test_" + hex.EncodeToString(randomBytes(8))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+Config{Schema: schema}.quotedSchema()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// newStore returns a store in a schema of its own over the shared pool.
func newStore(t testing.TB) *Store {
	t.Helper()
	s, err := New(t.Context(), testPool(t), Config{Schema: uniqueSchema(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// reopen closes s and opens its schema again over a new pool: what one
// store committed, another process sees.
func reopen(t testing.TB, s *Store) *Store {
	t.Helper()
	s.Close()
	pool := newPool(t, 4)
	t.Cleanup(pool.Close)
	again, err := New(t.Context(), pool, Config{Schema: s.Schema(), SkipMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { again.Close() })
	return again
}

func TestTokenStore(t *testing.T) {
	t.Parallel()
	storetest.RunTokenStore(t, storetest.TokenHarness{
		New:    func(t *testing.T) store.TokenStore { return newStore(t) },
		Reopen: func(t *testing.T, s store.TokenStore) store.TokenStore { return reopen(t, s.(*Store)) },
	})
}

func TestEntityStore(t *testing.T) {
	t.Parallel()
	storetest.RunEntityStore(t, storetest.EntityHarness{
		New:    func(t *testing.T) store.EntityStore { return newStore(t) },
		Reopen: func(t *testing.T, s store.EntityStore) store.EntityStore { return reopen(t, s.(*Store)) },
	})
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func newToken(conversation, causation baton.TokenID, destination string) baton.Token {
	if conversation.IsZero() {
		conversation = baton.NewTokenID()
	}
	return baton.Token{
		ID: baton.NewTokenID(), Conversation: conversation, Causation: causation,
		Destination: destination, Type: "test", Digest: baton.DigestOf(randomBytes(8)),
		CreatedAt: time.Now().UTC(),
	}
}

// rootTemplate returns tok as Issue takes it: without an id.
func rootTemplate(tok baton.Token) baton.Token {
	tok.ID, tok.Causation = baton.TokenID{}, baton.TokenID{}
	return tok
}

// issue issues tok as a root, which must succeed, and returns it as the
// store keeps it (under the id the store chose).
func issue(ctx context.Context, t testing.TB, s *Store, tok baton.Token) baton.Token {
	t.Helper()
	got, err := s.Issue(ctx, rootTemplate(tok))
	if err != nil {
		t.Fatalf("Issue = %v", err)
	}
	return got
}

func children(parent baton.Token, n int) []baton.Token {
	out := make([]baton.Token, n)
	for i := range out {
		out[i] = newToken(parent.Conversation, parent.ID, "next")
	}
	return out
}

func requireTokens(ctx context.Context, t *testing.T, s *Store, live bool, tokens ...baton.Token) {
	t.Helper()
	for _, tok := range tokens {
		_, err := s.Get(ctx, tok.ID)
		switch {
		case live && err != nil:
			t.Errorf("Get(%s) = %v, want the live token", tok.ID, err)
		case !live && !errors.Is(err, store.ErrNotFound):
			t.Errorf("Get(%s) = %v, want store.ErrNotFound", tok.ID, err)
		}
	}
}

func requireVersion(ctx context.Context, t *testing.T, s *Store, key string, version uint64, state string) {
	t.Helper()
	e, err := s.Load(ctx, key)
	if err != nil {
		t.Fatalf("Load(%q) = %v", key, err)
	}
	if e.Version != version || string(e.State) != state {
		t.Errorf("Load(%q) = version %d state %q, want version %d state %q", key, e.Version, e.State, version, state)
	}
}

// entryFor is the outbox entry that step 4 of the protocol records for
// token, emitting create.
func entryFor(token baton.TokenID, create []baton.Token) store.OutboxEntry {
	entry := store.OutboxEntry{Token: token, CreatedAt: time.Now().UTC()}
	for _, c := range create {
		entry.Signals = append(entry.Signals, baton.Signal{ID: c.ID, Conversation: c.Conversation, Causation: c.Causation, Destination: c.Destination, Type: c.Type})
	}
	return entry
}

func TestCommitTransition(t *testing.T) {
	t.Parallel()
	t.Run("CommitsConsumesAndCreates", func(t *testing.T) {
		t.Parallel()
		ctx, s := t.Context(), newStore(t)
		root := issue(ctx, t, s, newToken(baton.TokenID{}, baton.TokenID{}, "orders"))
		kids := children(root, 3)
		e := store.Entity{Key: "order-1", State: []byte("placed"), Outbox: []store.OutboxEntry{entryFor(root.ID, kids)}}
		version, consumed, err := s.CommitTransition(ctx, e, root.ID, kids)
		if err != nil || !consumed || version != 1 {
			t.Fatalf("CommitTransition of a new entity = %d, %v, %v; want 1, true, nil", version, consumed, err)
		}
		requireTokens(ctx, t, s, false, root)
		requireTokens(ctx, t, s, true, kids...)
		got, err := s.Load(ctx, e.Key)
		if err != nil || got.Version != 1 || string(got.State) != "placed" || len(got.Outbox) != 1 || len(got.Outbox[0].Signals) != 3 {
			t.Fatalf("Load after CommitTransition = %+v, %v", got, err)
		}

		// An existing entity, and a transition without children.
		next := kids[0]
		e = store.Entity{Key: e.Key, Version: 1, State: []byte("paid")}
		version, consumed, err = s.CommitTransition(ctx, e, next.ID, nil)
		if err != nil || !consumed || version != 2 {
			t.Fatalf("CommitTransition of version 1 = %d, %v, %v; want 2, true, nil", version, consumed, err)
		}
		requireTokens(ctx, t, s, false, next)
		requireVersion(ctx, t, s, e.Key, 2, "paid")
		if stale, err := s.Stale(ctx, time.Now().Add(time.Hour), 10); err != nil || len(stale) != 0 {
			t.Errorf("Stale after the outbox was cleared = %q, %v; want none", stale, err)
		}
	})

	t.Run("TokenNotLive", func(t *testing.T) {
		t.Parallel()
		ctx, s := t.Context(), newStore(t)
		absent := newToken(baton.TokenID{}, baton.TokenID{}, "orders")
		kids := children(absent, 2)
		for _, version := range []uint64{0, 1, 7} {
			e := store.Entity{Key: "order", Version: version, State: []byte("changed")}
			got, consumed, err := s.CommitTransition(ctx, e, absent.ID, kids)
			if err != nil || consumed || got != 0 {
				t.Errorf("CommitTransition at version %d of an absent token = %d, %v, %v; want 0, false, nil", version, got, consumed, err)
			}
		}
		requireTokens(ctx, t, s, false, kids...)
		requireVersion(ctx, t, s, "order", 0, "")

		// Also when the entity exists: nothing is committed.
		if _, err := s.Commit(ctx, store.Entity{Key: "order", State: []byte("one")}); err != nil {
			t.Fatal(err)
		}
		_, consumed, err := s.CommitTransition(ctx, store.Entity{Key: "order", Version: 1, State: []byte("two")}, absent.ID, kids)
		if err != nil || consumed {
			t.Errorf("CommitTransition of an absent token = %v, %v; want false, nil", consumed, err)
		}
		requireVersion(ctx, t, s, "order", 1, "one")
	})

	t.Run("VersionConflict", func(t *testing.T) {
		t.Parallel()
		ctx, s := t.Context(), newStore(t)
		if _, err := s.Commit(ctx, store.Entity{Key: "order", State: []byte("one")}); err != nil {
			t.Fatal(err)
		}
		root := issue(ctx, t, s, newToken(baton.TokenID{}, baton.TokenID{}, "orders"))
		kids := children(root, 2)
		cases := []store.Entity{
			{Key: "order", Version: 0, State: []byte("create again")},
			{Key: "order", Version: 2, State: []byte("ahead")},
			{Key: "never-committed", Version: 3, State: []byte("absent")},
		}
		for _, e := range cases {
			_, consumed, err := s.CommitTransition(ctx, e, root.ID, kids)
			if !errors.Is(err, store.ErrConflict) || consumed {
				t.Errorf("CommitTransition(%q at version %d) = %v, %v; want false, store.ErrConflict", e.Key, e.Version, consumed, err)
			}
		}
		requireTokens(ctx, t, s, true, root)
		requireTokens(ctx, t, s, false, kids...)
		requireVersion(ctx, t, s, "order", 1, "one")
		requireVersion(ctx, t, s, "never-committed", 0, "")
	})

	t.Run("ChildExists", func(t *testing.T) {
		t.Parallel()
		ctx, s := t.Context(), newStore(t)
		root := issue(ctx, t, s, newToken(baton.TokenID{}, baton.TokenID{}, "orders"))
		existing := issue(ctx, t, s, newToken(root.Conversation, baton.TokenID{}, "orders"))
		kids := append(children(root, 1), existing)
		for _, version := range []uint64{0, 1} {
			if version == 1 {
				if _, err := s.Commit(ctx, store.Entity{Key: "order", State: []byte("one")}); err != nil {
					t.Fatal(err)
				}
			}
			_, consumed, err := s.CommitTransition(ctx, store.Entity{Key: "order", Version: version, State: []byte("changed")}, root.ID, kids)
			if !errors.Is(err, store.ErrExists) || consumed {
				t.Errorf("CommitTransition at version %d with an existing child = %v, %v; want false, store.ErrExists", version, consumed, err)
			}
		}
		requireTokens(ctx, t, s, true, root, existing)
		requireTokens(ctx, t, s, false, kids[0])
		requireVersion(ctx, t, s, "order", 1, "one")
	})

	t.Run("Invalid", func(t *testing.T) {
		t.Parallel()
		ctx, s := t.Context(), newStore(t)
		root := issue(ctx, t, s, newToken(baton.TokenID{}, baton.TokenID{}, "orders"))
		bad := children(root, 1)
		bad[0].Destination = "bad\xff"
		for name, call := range map[string]func() error{
			"empty key": func() error { _, _, err := s.CommitTransition(ctx, store.Entity{}, root.ID, nil); return err },
			"zero token": func() error {
				_, _, err := s.CommitTransition(ctx, store.Entity{Key: "k"}, baton.TokenID{}, nil)
				return err
			},
			"child not UTF-8": func() error { _, _, err := s.CommitTransition(ctx, store.Entity{Key: "k"}, root.ID, bad); return err },
			"key with NUL": func() error {
				_, _, err := s.CommitTransition(ctx, store.Entity{Key: "k\x00"}, root.ID, nil)
				return err
			},
			"Commit key not UTF-8": func() error { _, err := s.Commit(ctx, store.Entity{Key: "k\xff"}); return err },
			"Issue type with NUL": func() error {
				tok := newToken(baton.TokenID{}, baton.TokenID{}, "orders")
				tok.Type = "a\x00"
				_, err := s.Issue(ctx, rootTemplate(tok))
				return err
			},
		} {
			if err := call(); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("%s: %v, want store.ErrInvalid", name, err)
			}
		}
		requireTokens(ctx, t, s, true, root)
		if e, err := s.Load(ctx, "k\xff"); err != nil || e.Version != 0 {
			t.Errorf("Load of a key PostgreSQL cannot hold = %+v, %v; want version 0", e, err)
		}
	})

	// Copies of one signal racing through the fast path: exactly one
	// consumes the token and commits; only its children exist.
	t.Run("ConcurrentCopies", func(t *testing.T) {
		t.Parallel()
		ctx, s := t.Context(), newStore(t)
		if _, err := s.Commit(ctx, store.Entity{Key: "order", State: []byte("start")}); err != nil {
			t.Fatal(err)
		}
		root := issue(ctx, t, s, newToken(baton.TokenID{}, baton.TokenID{}, "orders"))
		const copies = 16
		var (
			wg        sync.WaitGroup
			consumed  atomic.Int32
			conflicts atomic.Int32
			kids      = make([][]baton.Token, copies)
			won       = make([]bool, copies)
		)
		for i := range copies {
			kids[i] = children(root, 2)
			wg.Go(func() {
				e := store.Entity{Key: "order", Version: 1, State: fmt.Appendf(nil, "copy %d", i)}
				version, ok, err := s.CommitTransition(ctx, e, root.ID, kids[i])
				switch {
				case errors.Is(err, store.ErrConflict):
					conflicts.Add(1)
				case err != nil:
					t.Errorf("copy %d: %v", i, err)
				case ok:
					consumed.Add(1)
					won[i] = true
					if version != 2 {
						t.Errorf("copy %d: version %d, want 2", i, version)
					}
				}
			})
		}
		wg.Wait()
		if consumed.Load() != 1 {
			t.Fatalf("%d copies consumed the token (%d conflicts), want exactly 1", consumed.Load(), conflicts.Load())
		}
		for i := range copies {
			requireTokens(ctx, t, s, won[i], kids[i]...)
			if won[i] {
				requireVersion(ctx, t, s, "order", 2, fmt.Sprintf("copy %d", i))
			}
		}
		requireTokens(ctx, t, s, false, root)
	})

	// Distinct signals for one entity version racing through the fast
	// path: one commits; the others fail with store.ErrConflict and leave
	// their tokens live and their children uncreated.
	for _, start := range []uint64{0, 1} {
		t.Run(fmt.Sprintf("ConcurrentSignalsAtVersion%d", start), func(t *testing.T) {
			t.Parallel()
			ctx, s := t.Context(), newStore(t)
			if start == 1 {
				if _, err := s.Commit(ctx, store.Entity{Key: "order", State: []byte("start")}); err != nil {
					t.Fatal(err)
				}
			}
			const signals = 12
			roots := make([]baton.Token, signals)
			kids := make([][]baton.Token, signals)
			won := make([]bool, signals)
			for i := range roots {
				roots[i] = issue(ctx, t, s, newToken(baton.TokenID{}, baton.TokenID{}, "orders"))
				kids[i] = children(roots[i], 2)
			}
			var wg sync.WaitGroup
			var winners atomic.Int32
			for i := range roots {
				wg.Go(func() {
					e := store.Entity{Key: "order", Version: start, State: fmt.Appendf(nil, "signal %d", i)}
					_, ok, err := s.CommitTransition(ctx, e, roots[i].ID, kids[i])
					switch {
					case errors.Is(err, store.ErrConflict):
					case err != nil || !ok:
						t.Errorf("signal %d: %v, %v; want consumed or store.ErrConflict", i, ok, err)
					default:
						winners.Add(1)
						won[i] = true
					}
				})
			}
			wg.Wait()
			if winners.Load() != 1 {
				t.Fatalf("%d signals committed version %d, want exactly 1", winners.Load(), start+1)
			}
			for i := range roots {
				requireTokens(ctx, t, s, !won[i], roots[i])
				requireTokens(ctx, t, s, won[i], kids[i]...)
				if won[i] {
					requireVersion(ctx, t, s, "order", start+1, fmt.Sprintf("signal %d", i))
				}
			}
		})
	}

	t.Run("Closed", func(t *testing.T) {
		t.Parallel()
		ctx, s := t.Context(), newStore(t)
		s.Close()
		root := newToken(baton.TokenID{}, baton.TokenID{}, "orders")
		if _, _, err := s.CommitTransition(ctx, store.Entity{Key: "k"}, root.ID, nil); !errors.Is(err, store.ErrClosed) {
			t.Errorf("CommitTransition after Close = %v, want store.ErrClosed", err)
		}
		if _, err := s.Issue(ctx, rootTemplate(root)); !errors.Is(err, store.ErrClosed) {
			t.Errorf("Issue after Close = %v, want store.ErrClosed", err)
		}
	})
}

func TestTransitionAtomicUnderConflict(t *testing.T) {
	t.Parallel()
	ctx, s := t.Context(), newStore(t)
	root := issue(ctx, t, s, newToken(baton.TokenID{}, baton.TokenID{}, "orders"))
	existing := issue(ctx, t, s, newToken(root.Conversation, baton.TokenID{}, "orders"))
	// The conflicting child comes last, after other rows were inserted by
	// the same statement: they must be rolled back with the deletion.
	kids := append(children(root, 5), existing)
	consumed, err := s.Transition(ctx, root.ID, kids)
	if !errors.Is(err, store.ErrExists) || consumed {
		t.Fatalf("Transition with an existing child = %v, %v; want false, store.ErrExists", consumed, err)
	}
	requireTokens(ctx, t, s, true, root, existing)
	requireTokens(ctx, t, s, false, kids[:5]...)
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	ctx, pool := t.Context(), testPool(t)
	cfg := Config{Schema: uniqueSchema(t)}
	if v, err := SchemaVersion(ctx, pool, cfg); err != nil || v != 0 {
		t.Fatalf("SchemaVersion of a missing schema = %d, %v; want 0, nil", v, err)
	}
	if _, err := New(ctx, pool, Config{Schema: cfg.Schema, SkipMigrate: true}); !errors.Is(err, ErrSchemaVersion) {
		t.Errorf("New with SkipMigrate over a missing schema = %v, want ErrSchemaVersion", err)
	}

	// Processes starting at once: every Migrate succeeds, the work is
	// done once. Looking the schema up first on every pooled connection
	// leaves PostgreSQL's catalog caches believing it is missing, which is
	// what a migration that waited for another must not trust.
	for _, schema := range []string{cfg.Schema, uniqueSchema(t), uniqueSchema(t)} {
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				if _, err := SchemaVersion(ctx, pool, Config{Schema: schema}); err != nil {
					t.Errorf("SchemaVersion = %v", err)
				}
			})
		}
		wg.Wait()
		for range 6 {
			wg.Go(func() {
				if err := Migrate(ctx, pool, Config{Schema: schema}); err != nil {
					t.Errorf("concurrent Migrate = %v", err)
				}
			})
		}
		wg.Wait()
	}
	if err := Migrate(ctx, pool, cfg); err != nil {
		t.Fatalf("Migrate again = %v", err)
	}
	if v, err := SchemaVersion(ctx, pool, cfg); err != nil || v != LatestSchemaVersion || LatestSchemaVersion < 1 {
		t.Fatalf("SchemaVersion = %d, %v; want %d", v, err, LatestSchemaVersion)
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+cfg.table("schema_migrations")).Scan(&rows); err != nil || rows != LatestSchemaVersion {
		t.Errorf("schema_migrations has %d rows (%v), want %d", rows, err, LatestSchemaVersion)
	}

	// A schema that newer code migrated is refused, not written to.
	if _, err := pool.Exec(ctx, "INSERT INTO "+cfg.table("schema_migrations")+" (version, name) VALUES ($1, 'from the future')", LatestSchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, pool, cfg); !errors.Is(err, ErrSchemaVersion) {
		t.Errorf("Migrate of a newer schema = %v, want ErrSchemaVersion", err)
	}
	if _, err := New(ctx, pool, cfg); !errors.Is(err, ErrSchemaVersion) {
		t.Errorf("New over a newer schema = %v, want ErrSchemaVersion", err)
	}
}

func TestConfigRejectsUnsafeSchemaNames(t *testing.T) {
	t.Parallel()
	for _, schema := range []string{
		`x"; DROP TABLE tokens; --`, "a b", "1abc", "pg_catalog", "sch-ema", "ünï", strings.Repeat("s", 64), "a.b",
	} {
		if _, err := New(t.Context(), nil, Config{Schema: schema}); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New with schema %q = %v, want ErrInvalidConfig", schema, err)
		}
		if err := Migrate(t.Context(), nil, Config{Schema: schema}); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Migrate with schema %q = %v, want ErrInvalidConfig", schema, err)
		}
	}
	for _, schema := range []string{"", "baton", "Baton_2", "_x", strings.Repeat("s", 63)} {
		if _, err := (Config{Schema: schema}).withDefaults(); err != nil {
			t.Errorf("schema %q refused: %v", schema, err)
		}
	}
}

func TestRefusesUnsafeServer(t *testing.T) {
	t.Parallel()
	cfg, err := pgxpool.ParseConfig(dsn(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	schema := uniqueSchema(t)
	if _, err := New(t.Context(), pool, Config{Schema: schema}); !errors.Is(err, ErrUnsafeServer) {
		t.Errorf("New with synchronous_commit off = %v, want ErrUnsafeServer", err)
	}
	s, err := New(t.Context(), pool, Config{Schema: schema, AllowUnsafe: true})
	if err != nil {
		t.Fatalf("New with AllowUnsafe = %v", err)
	}
	s.Close()
}

func TestOpenNeverLogsThePassword(t *testing.T) {
	t.Parallel()
	base := dsn(t)
	const password = "sw0rdfish-secret"
	withPassword := strings.Replace(base, "postgres@", "postgres:"+password+"@", 1)
	if withPassword == base {
		t.Skip("the test DSN has no user@ to add a password to")
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// The server trusts local connections, so the password is not checked.
	s, err := Open(t.Context(), withPassword, Config{Schema: uniqueSchema(t), Logger: logger})
	if err != nil {
		if strings.Contains(err.Error(), password) {
			t.Errorf("Open's error shows the password: %v", err)
		}
		t.Fatalf("Open = %v", err)
	}
	s.Close()
	if _, err := Open(t.Context(), withPassword+"&pool_max_conns=nonsense", Config{Logger: logger}); err == nil || strings.Contains(err.Error(), password) {
		t.Errorf("Open with a bad DSN = %v; want an error that does not show the password", err)
	}
	if logs.Len() == 0 || strings.Contains(logs.String(), password) {
		t.Errorf("logs are empty or show the password:\n%s", logs.String())
	}
}

// A server that cannot be reached: nothing was sent, so not applied.
func TestUnreachableServerIsNotApplied(t *testing.T) {
	t.Parallel()
	cfg, err := pgxpool.ParseConfig("postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg) // connects lazily
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := &Store{pool: pool, schema: "baton", sql: newStatements(Config{Schema: "baton"}), durability: newDurability(Config{Schema: "baton"})}
	root := newToken(baton.TokenID{}, baton.TokenID{}, "orders")
	if _, err := s.Transition(t.Context(), root.ID, nil); !errors.Is(err, store.ErrNotApplied) {
		t.Errorf("Transition against an unreachable server = %v, want store.ErrNotApplied", err)
	}
	if _, err := s.Commit(t.Context(), store.Entity{Key: "k"}); !errors.Is(err, store.ErrNotApplied) {
		t.Errorf("Commit against an unreachable server = %v, want store.ErrNotApplied", err)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	unknown := errors.New("connection reset after the request was sent")
	cases := []struct {
		err        error
		want       error // nil: outcome unknown
		notApplied bool
	}{
		{&pgconn.PgError{Code: "23505"}, store.ErrExists, true},
		{&pgconn.PgError{Code: "40001"}, store.ErrNotApplied, true},
		{&pgconn.PgError{Code: "40P01"}, store.ErrNotApplied, true},
		// A read-only server (a standby after a failover, or
		// default_transaction_read_only) refuses the first write of a
		// transaction, which then commits nothing.
		{&pgconn.PgError{Code: "25006", Severity: "ERROR"}, store.ErrNotApplied, true},
		{&pgconn.PgError{Code: "57P01", Severity: "FATAL"}, nil, false},
		{unknown, nil, false},
		{fmt.Errorf("%w: closed", store.ErrClosed), store.ErrClosed, true},
	}
	for _, c := range cases {
		got := classify(c.err)
		if store.NotApplied(got) != c.notApplied || (c.want != nil && !errors.Is(got, c.want)) {
			t.Errorf("classify(%v) = %v; want not-applied %v matching %v", c.err, got, c.notApplied, c.want)
		}
		if !errors.Is(got, c.err) {
			t.Errorf("classify(%v) = %v, which does not wrap the original error", c.err, got)
		}
	}
}

func TestTimesRoundTripExactly(t *testing.T) {
	t.Parallel()
	ctx, s := t.Context(), newStore(t)
	// Nanoseconds, a zone other than UTC, and times before 1970.
	zone := time.FixedZone("east", 5*3600+30*60)
	for _, at := range []time.Time{
		time.Date(2031, 5, 6, 7, 8, 9, 123456789, zone),
		time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(1901, 1, 1, 0, 0, 0, 1, time.UTC),
	} {
		tok := newToken(baton.TokenID{}, baton.TokenID{}, "orders")
		tok.CreatedAt, tok.ExpiresAt = at, at.Add(time.Nanosecond)
		tok = issue(ctx, t, s, tok)
		got, err := s.Get(ctx, tok.ID)
		if err != nil || !got.CreatedAt.Equal(at) || !got.ExpiresAt.Equal(tok.ExpiresAt) {
			t.Errorf("Get = %v / %v, %v; want %v / %v", got.CreatedAt, got.ExpiresAt, err, at, tok.ExpiresAt)
		}
		// The cutoffs are exact to the nanosecond too.
		if n, err := s.ExpireRoots(ctx, tok.ExpiresAt, 10); err != nil || n != 0 {
			t.Errorf("ExpireRoots at the expiry = %d, %v; want 0", n, err)
		}
		if n, err := s.ExpireRoots(ctx, tok.ExpiresAt.Add(time.Nanosecond), 10); err != nil || n != 1 {
			t.Errorf("ExpireRoots 1ns after the expiry = %d, %v; want 1", n, err)
		}

		key := "entity " + at.String()
		if _, err := s.Commit(ctx, store.Entity{Key: key, Outbox: []store.OutboxEntry{{Token: tok.ID, CreatedAt: at}}}); err != nil {
			t.Fatal(err)
		}
		if keys, err := s.Stale(ctx, at, 10); err != nil || len(keys) != 0 {
			t.Errorf("Stale at the entry's time = %q, %v; want none", keys, err)
		}
		if keys, err := s.Stale(ctx, at.Add(time.Nanosecond), 10); err != nil || len(keys) != 1 {
			t.Errorf("Stale 1ns after the entry's time = %q, %v; want one", keys, err)
		}
		e, err := s.Load(ctx, key)
		if err != nil || len(e.Outbox) != 1 || !e.Outbox[0].CreatedAt.Equal(at) {
			t.Errorf("Load = %+v, %v; want the entry at %v", e, err, at)
		}
		if _, err := s.Commit(ctx, store.Entity{Key: key, Version: 1}); err != nil {
			t.Fatal(err)
		}
	}
}

// A server that refuses writes as read-only (a standby promoted late, a
// database set default_transaction_read_only) applies nothing: its
// refusal is "not applied", so that callers wait for it instead of
// counting an unknown outcome (an engine then pauses instead of parking).
func TestReadOnlyServerIsNotApplied(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	cfg, err := pgxpool.ParseConfig(dsn(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	ro, err := New(t.Context(), pool, Config{Schema: s.Schema(), SkipMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ro.Close() })
	if _, err := ro.Issue(t.Context(), rootTemplate(newToken(baton.TokenID{}, baton.TokenID{}, "orders"))); !errors.Is(err, store.ErrNotApplied) {
		t.Fatalf("Issue on a read-only server = %v, want store.ErrNotApplied", err)
	}
}
