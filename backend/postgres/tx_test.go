package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// txHarness runs the transactional conformance checks with the service's
// own table "rows" (key, value) in the store's schema: on the fast path
// (the store keeps the tokens too) and on the plain path (tokens
// elsewhere).
func txHarness(fused bool) storetest.TxHarness[pgx.Tx] {
	rowsOf := func(s store.EntityStore) string { return Config{Schema: s.(*Store).Schema()}.table("rows") }
	return storetest.TxHarness[pgx.Tx]{
		Fused: fused,
		New: func(t *testing.T) store.EntityStore {
			s := newStore(t)
			if _, err := s.Pool().Exec(t.Context(), "CREATE TABLE "+rowsOf(s)+" (key text PRIMARY KEY, value bytea NOT NULL)"); err != nil {
				t.Fatal(err)
			}
			return s
		},
		Begin: func(t *testing.T, s store.EntityStore) (pgx.Tx, func() error, func()) {
			tx, err := s.(*Store).Pool().Begin(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return tx, func() error { return tx.Commit(context.Background()) }, func() { _ = tx.Rollback(context.Background()) }
		},
		Put: func(ctx context.Context, s store.EntityStore, tx pgx.Tx, key string, value []byte) error {
			_, err := tx.Exec(ctx, "INSERT INTO "+rowsOf(s)+" (key, value) VALUES ($1, $2)", key, value)
			return err
		},
		Get: func(ctx context.Context, s store.EntityStore, key string) ([]byte, bool, error) {
			var v []byte
			err := s.(*Store).Pool().QueryRow(ctx, "SELECT value FROM "+rowsOf(s)+" WHERE key = $1", key).Scan(&v)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil, false, nil
			}
			return v, err == nil, err
		},
	}
}

func TestTxStore(t *testing.T) {
	t.Parallel()
	t.Run("fused", func(t *testing.T) {
		t.Parallel()
		storetest.RunTxStore(t, txHarness(true))
	})
	t.Run("plain", func(t *testing.T) {
		t.Parallel()
		storetest.RunTxStore(t, txHarness(false))
	})
}

// countingPublisher counts the signals an engine sends.
type countingPublisher struct {
	mu   sync.Mutex
	sent []baton.Signal
}

func (p *countingPublisher) Publish(_ context.Context, sig baton.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent = append(p.sent, sig)
	return nil
}

func (p *countingPublisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sent)
}

// TestLaunchSendsACommittedStartOnce: on the fast path StartTx hands the
// caller a start that is already claimed; Launch must still read it, so
// that a start whose transaction rolled back sends nothing (a signal
// without a token, counted as launched, drawn as a conversation that never
// began), and a second launch after the first finished sends nothing more.
func TestLaunchSendsACommittedStartOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newStore(t)
	pub := &countingPublisher{}
	roots := 0
	e, err := engine.New(engine.Config{Destination: "shop", Tokens: s, Entities: s, Dispatch: pub,
		OnEvent: func(ev engine.Event) {
			if ev.Kind == engine.EventRootIssued {
				roots++
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	start := func(commit bool) store.Start {
		tx, err := s.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st, err := engine.StartTx(ctx, e, tx, baton.Emit{Destination: "billing", Type: "charge"})
		if err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	sig, err := e.Launch(ctx, start(false))
	if err != nil || !sig.ID.IsZero() {
		t.Errorf("Launch of a rolled-back start = %v, %v; want the zero signal", sig.ID, err)
	}
	if n := pub.count(); n != 0 {
		t.Errorf("Launch of a rolled-back start sent %d signals, want none", n)
	}

	committed := start(true)
	first, err := e.Launch(ctx, committed)
	if err != nil || first.ID.IsZero() || first.Conversation != committed.ID {
		t.Fatalf("first Launch = %v (conversation %v), %v; want the root signal of %v", first.ID, first.Conversation, err, committed.ID)
	}
	again, err := e.Launch(ctx, committed)
	if err != nil || !again.ID.IsZero() {
		t.Errorf("second Launch = %v, %v; want the zero signal", again.ID, err)
	}
	if n := pub.count(); n != 1 {
		t.Errorf("%d signals sent, want 1", n)
	}
	if st := e.Stats(); st.StartsLaunched != 1 || roots != 1 {
		t.Errorf("%d starts launched, %d root_issued events; want 1 and 1", st.StartsLaunched, roots)
	}
	if _, err := s.Get(ctx, first.ID); err != nil {
		t.Errorf("the launched root's token: %v; want it live", err)
	}
}

// TestCommitTxRefusesAnUndurableCommit: an activity that turns
// synchronous_commit off in the step's transaction would have the step
// (its writes, the entity, the token consumed, the children created)
// acknowledged before it is on disk; a crash then would bring the token
// back after its signal was acked, and the step would be lost. CommitTx
// refuses the step instead, and its rollback undoes the SET, so the
// pooled connection stays durable.
func TestCommitTxRefusesAnUndurableCommit(t *testing.T) {
	t.Parallel()
	for _, set := range []string{"SET synchronous_commit = off", "SET LOCAL synchronous_commit = off"} {
		for _, fused := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/fused=%v", set, fused), func(t *testing.T) {
				t.Parallel()
				ctx := t.Context()
				pool := newPool(t, 1) // one connection: the next call gets the same session
				t.Cleanup(pool.Close)
				s, err := New(ctx, pool, Config{Schema: uniqueSchema(t)})
				if err != nil {
					t.Fatal(err)
				}
				h := txHarness(fused)
				if _, err := pool.Exec(ctx, "CREATE TABLE "+Config{Schema: s.Schema()}.table("rows")+" (key text PRIMARY KEY, value bytea NOT NULL)"); err != nil {
					t.Fatal(err)
				}
				root := issue(ctx, t, s, newToken(baton.TokenID{}, baton.TokenID{}, "billing"))
				step := store.TxStep{Key: "account", Token: root.ID, Fused: fused}
				_, _, err = s.CommitTx(ctx, step, func(ctx context.Context, tx pgx.Tx) (store.Entity, []baton.Token, error) {
					if err := h.Put(ctx, s, tx, "charge", []byte("12")); err != nil {
						return store.Entity{}, nil, err
					}
					if _, err := tx.Exec(ctx, set); err != nil {
						return store.Entity{}, nil, err
					}
					return store.Entity{Key: step.Key, State: []byte("charged")}, nil, nil
				})
				if !errors.Is(err, ErrUnsafeServer) || !errors.Is(err, store.ErrNotApplied) {
					t.Fatalf("CommitTx of an activity that set synchronous_commit off = %v, want ErrUnsafeServer and ErrNotApplied", err)
				}
				if _, wrote, err := h.Get(ctx, s, "charge"); err != nil || wrote {
					t.Errorf("the activity's row after the refusal: written %v, %v; want rolled back", wrote, err)
				}
				requireVersion(ctx, t, s, step.Key, 0, "")
				requireTokens(ctx, t, s, true, root)
				var setting string
				if err := pool.QueryRow(ctx, "SHOW synchronous_commit").Scan(&setting); err != nil || setting == "off" {
					t.Errorf("synchronous_commit on the pooled connection after the refusal = %q, %v; want the server's durable setting back", setting, err)
				}
			})
		}
	}
}

// TestCommitTxAllowUnsafe: Config.AllowUnsafe accepts a server or role
// whose synchronous_commit is off, so CommitTx on such a connection
// applies the step as every other call does, instead of refusing it as if
// the activity had turned the setting off.
func TestCommitTxAllowUnsafe(t *testing.T) {
	t.Parallel()
	for _, fused := range []bool{true, false} {
		t.Run(fmt.Sprintf("fused=%v", fused), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			cfg, err := pgxpool.ParseConfig(dsn(t))
			if err != nil {
				t.Fatal(err)
			}
			cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
			cfg.MaxConns = 1
			pool, err := pgxpool.NewWithConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			s, err := New(ctx, pool, Config{Schema: uniqueSchema(t), AllowUnsafe: true})
			if err != nil {
				t.Fatal(err)
			}
			root := issue(ctx, t, s, newToken(baton.TokenID{}, baton.TokenID{}, "billing"))
			step := store.TxStep{Key: "account", Token: root.ID, Fused: fused}
			_, _, err = s.CommitTx(ctx, step, func(ctx context.Context, tx pgx.Tx) (store.Entity, []baton.Token, error) {
				return store.Entity{Key: step.Key, State: []byte("charged")}, nil, nil
			})
			if err != nil {
				t.Fatalf("CommitTx with AllowUnsafe on a connection with synchronous_commit off = %v, want applied", err)
			}
			requireVersion(ctx, t, s, step.Key, 1, "charged")
		})
	}
}

// TestCommitTxClosesAnUndurableConnection: synchronous_commit set off on
// a pooled connection by its other users, after the store checked it, is
// seen by the next step on it, which is refused; the connection is closed,
// so that the step's retry gets a new one instead of the same refusal.
func TestCommitTxClosesAnUndurableConnection(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := newPool(t, 1)
	t.Cleanup(pool.Close)
	s, err := New(ctx, pool, Config{Schema: uniqueSchema(t)})
	if err != nil {
		t.Fatal(err)
	}
	root := issue(ctx, t, s, newToken(baton.TokenID{}, baton.TokenID{}, "billing"))
	if _, err := pool.Exec(ctx, "SET synchronous_commit = off"); err != nil {
		t.Fatal(err)
	}
	step := store.TxStep{Key: "account", Token: root.ID, Fused: true}
	write := func(ctx context.Context, tx pgx.Tx) (store.Entity, []baton.Token, error) {
		return store.Entity{Key: step.Key, State: []byte("charged")}, nil, nil
	}
	if _, _, err := s.CommitTx(ctx, step, write); !errors.Is(err, ErrUnsafeServer) {
		t.Fatalf("CommitTx on a connection set to synchronous_commit off = %v, want ErrUnsafeServer", err)
	}
	if _, consumed, err := s.CommitTx(ctx, step, write); err != nil || !consumed {
		t.Fatalf("CommitTx again = %v, consumed %v; want applied on a new connection", err, consumed)
	}
}
