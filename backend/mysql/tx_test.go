package mysql

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// TestCommitTxNoticesALostTransaction: MySQL rolls back the whole
// transaction on a deadlock and leaves the session in autocommit, unlike
// PostgreSQL, whose aborted transaction refuses every later statement. An
// activity that logs and ignores the error of one of its statements (a
// best-effort audit insert, say) then returns as if all went well: the
// store's writes that follow would each commit on their own, the token
// consumed and the entity committed while the activity's earlier writes
// are gone, and CommitTx would report the step applied. It must fail
// instead, and leave the token live.
func TestCommitTxNoticesALostTransaction(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, fused := range []bool{true, false} {
		h := txHarness(fused)
		s := h.New(t).(*Store)
		tok, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		child := baton.Token{ID: baton.NewTokenID(), Conversation: tok.Conversation, Causation: tok.ID,
			Destination: "shipping", Type: "ship", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}
		step := store.TxStep{Key: "account", Token: tok.ID, Fused: fused}
		_, consumed, err := s.CommitTx(ctx, step, func(ctx context.Context, tx *sql.Tx) (store.Entity, []baton.Token, error) {
			if err := h.Put(ctx, s, tx, "charge", []byte("12")); err != nil {
				return store.Entity{}, nil, err
			}
			// What a deadlock leaves: the transaction rolled back, the
			// session in autocommit; the activity ignores the error.
			if _, err := tx.ExecContext(ctx, "ROLLBACK"); err != nil {
				return store.Entity{}, nil, err
			}
			e := store.Entity{Key: step.Key, Outbox: []store.OutboxEntry{{Token: tok.ID, CreatedAt: time.Now(), Signals: []baton.Signal{{ID: child.ID,
				Conversation: child.Conversation, Causation: child.Causation, Destination: child.Destination, Type: child.Type}}}}}
			return e, []baton.Token{child}, nil
		})
		_, wrote, gerr := h.Get(ctx, s, "charge")
		if gerr != nil {
			t.Fatal(gerr)
		}
		e, lerr := s.Load(ctx, "account")
		if lerr != nil {
			t.Fatal(lerr)
		}
		_, terr := s.Get(ctx, tok.ID)
		if err == nil {
			t.Errorf("fused %v: CommitTx over a transaction the server rolled back = applied (consumed %v); the activity's row written: %v, entity at version %d, token live: %v",
				fused, consumed, wrote, e.Version, terr == nil)
			continue
		}
		if wrote || e.Version != 0 || errors.Is(terr, store.ErrNotFound) {
			t.Errorf("fused %v: CommitTx = %v, but the activity's row written: %v, entity at version %d, token live: %v", fused, err, wrote, e.Version, terr == nil)
		}
	}
}

// TestCommitTxRetriesAChangedRow: under MariaDB's snapshot isolation an
// activity that read a row of the service's own tables and then writes it
// after another transaction changed it fails with ER_CHECKREAD (1020),
// and the server rolls the whole transaction back. The store runs the
// step again, as after a deadlock, and the second run applies it.
func TestCommitTxRetriesAChangedRow(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	base := newStore(t)
	var variable string
	err := base.DB().QueryRowContext(ctx, "SHOW VARIABLES LIKE 'innodb_snapshot_isolation'").Scan(&variable, new(string))
	if errors.Is(err, sql.ErrNoRows) {
		t.Skip("the server has no innodb_snapshot_isolation (MySQL, or MariaDB before 10.6.18)")
	}
	if err != nil {
		t.Fatal(err)
	}
	// The driver sets the DSN's unknown parameters on each connection.
	sep := "?"
	if strings.Contains(dsn(t), "?") {
		sep = "&"
	}
	s := openPrefix(t, dsn(t)+sep+"innodb_snapshot_isolation=ON", base.Prefix())
	stock := table(s.Prefix(), "stock")
	if _, err := s.DB().ExecContext(ctx, "CREATE TABLE "+stock+" (k INT PRIMARY KEY, n INT NOT NULL) ENGINE = InnoDB"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DB().ExecContext(ctx, "INSERT INTO "+stock+" VALUES (1, 10)"); err != nil {
		t.Fatal(err)
	}
	tok, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	step := store.TxStep{Key: "account", Token: tok.ID, Fused: true}
	_, consumed, err := s.CommitTx(ctx, step, func(ctx context.Context, tx *sql.Tx) (store.Entity, []baton.Token, error) {
		runs++
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT n FROM "+stock+" WHERE k = 1").Scan(&n); err != nil {
			return store.Entity{}, nil, err
		}
		if runs == 1 {
			// Another transaction takes one from stock meanwhile.
			if _, err := s.DB().ExecContext(ctx, "UPDATE "+stock+" SET n = n - 1 WHERE k = 1"); err != nil {
				return store.Entity{}, nil, err
			}
		}
		if _, err := tx.ExecContext(ctx, "UPDATE "+stock+" SET n = ? WHERE k = 1", n-2); err != nil {
			return store.Entity{}, nil, err
		}
		return store.Entity{Key: step.Key, State: []byte("charged")}, nil, nil
	})
	if err != nil || !consumed {
		t.Fatalf("CommitTx after a changed row = %v, consumed %v; want applied on the second run", err, consumed)
	}
	if runs != 2 {
		t.Errorf("the activity ran %d times, want 2 (once rolled back by ER_CHECKREAD, once applied)", runs)
	}
	var n int
	if err := s.DB().QueryRowContext(ctx, "SELECT n FROM "+stock+" WHERE k = 1").Scan(&n); err != nil || n != 7 {
		t.Errorf("stock = %d, %v; want 7 (10, one taken by the other transaction, two by the activity's second run)", n, err)
	}
}

// TestCommitTxKeepsTheSessionSafe: a SET SESSION in an activity outlives
// its transaction and would follow the pooled connection into the store's
// later statements. A sql_mode without strictness (values truncated
// instead of refused) or chaining commits is set back, and the step
// applied; autocommit off (every later autocommit statement on that
// connection left uncommitted) refuses the step and closes the
// connection.
func TestCommitTxKeepsTheSessionSafe(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		set     string
		applied bool
	}{
		{"SET SESSION sql_mode = ''", true},
		{"SET SESSION completion_type = 'CHAIN'", true},
		{"SET SESSION TRANSACTION READ ONLY", true},
		{"SET SESSION autocommit = 0", false},
		{"SET autocommit = 0", false},
		{"SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED", false},
	} {
		t.Run(c.set, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			h, s, tok := oneSessionStore(t)
			step := store.TxStep{Key: "account", Token: tok.ID, Fused: true}
			_, consumed, err := s.CommitTx(ctx, step, func(ctx context.Context, tx *sql.Tx) (store.Entity, []baton.Token, error) {
				if err := h.Put(ctx, s, tx, "charge", []byte("12")); err != nil {
					return store.Entity{}, nil, err
				}
				if _, err := tx.ExecContext(ctx, c.set); err != nil {
					return store.Entity{}, nil, err
				}
				return store.Entity{Key: step.Key, State: []byte("charged")}, nil, nil
			})
			_, wrote, gerr := h.Get(ctx, s, "charge")
			if gerr != nil {
				t.Fatal(gerr)
			}
			if c.applied {
				if err != nil || !consumed || !wrote {
					t.Fatalf("CommitTx = %v, consumed %v, activity's row written %v; want applied", err, consumed, wrote)
				}
			} else {
				if !errors.Is(err, store.ErrNotApplied) || wrote {
					t.Fatalf("CommitTx = %v, activity's row written %v; want refused (ErrNotApplied), nothing written", err, wrote)
				}
				if _, err := s.Get(ctx, tok.ID); err != nil {
					t.Errorf("the token after the refusal: %v, want live", err)
				}
			}
			requireSafeSession(t, s, "the activity")
		})
	}
}

// TestCommitTxKeepsTheSessionSafeWhenTheActivityFails: an activity's SET
// SESSION outlives its transaction also when the activity then fails (or
// deadlocks): the session must not go back to the pool with autocommit
// off, or a root the store issues on it later is never committed.
func TestCommitTxKeepsTheSessionSafeWhenTheActivityFails(t *testing.T) {
	t.Parallel()
	for _, set := range []string{"SET SESSION sql_mode = ''", "SET SESSION completion_type = 'CHAIN'", "SET autocommit = 0", "SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED", "SET SESSION TRANSACTION READ ONLY"} {
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			_, s, tok := oneSessionStore(t)
			declined := errors.New("card declined")
			step := store.TxStep{Key: "account", Token: tok.ID, Fused: true}
			_, _, err := s.CommitTx(ctx, step, func(ctx context.Context, tx *sql.Tx) (store.Entity, []baton.Token, error) {
				if _, err := tx.ExecContext(ctx, set); err != nil {
					return store.Entity{}, nil, err
				}
				return store.Entity{}, nil, declined
			})
			if !errors.Is(err, declined) {
				t.Fatalf("CommitTx = %v, want the activity's error", err)
			}
			requireSafeSession(t, s, "the failed activity")
		})
	}
}

// oneSessionStore returns a store of the transactional harness with one
// connection, so that each call gets the same session while it is open,
// and a root issued for the step.
func oneSessionStore(t *testing.T) (storetest.TxHarness[*sql.Tx], *Store, baton.Token) {
	t.Helper()
	h := txHarness(true)
	s := h.New(t).(*Store)
	s.DB().SetMaxOpenConns(1)
	tok, err := s.Issue(t.Context(), baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return h, s, tok
}

// requireSafeSession checks the session of s's one pooled connection
// after what: as prepareSession left it, and what the store writes on its
// own still commits.
func requireSafeSession(t *testing.T, s *Store, after string) {
	t.Helper()
	ctx := t.Context()
	var autocommit, readOnly int
	var completion, mode, isolation string
	if err := s.DB().QueryRowContext(ctx, s.session.read).Scan(&autocommit, &completion, &mode, &isolation, &readOnly); err != nil {
		t.Fatal(err)
	}
	if autocommit != 1 || !strings.EqualFold(completion, "NO_CHAIN") || !strings.Contains(mode, "STRICT_ALL_TABLES") ||
		strings.EqualFold(isolation, "READ-UNCOMMITTED") || readOnly != 0 {
		t.Errorf("the pool's session after %s: autocommit %d, completion_type %s, sql_mode %q, isolation %s, read-only %d; want 1, NO_CHAIN, strict, not READ-UNCOMMITTED, read-write",
			after, autocommit, completion, mode, isolation, readOnly)
	}
	again, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	other := openPrefix(t, dsn(t), s.Prefix())
	if _, err := other.Get(ctx, again.ID); err != nil {
		t.Errorf("a root issued after %s, read from another connection: %v", after, err)
	}
}

// TestCommitTxOnADeadPooledConnection: a pooled connection that the
// server closed meanwhile (a restart, wait_timeout, KILL) is replaced
// before the step's transaction begins (DB.Conn checks a pooled
// connection and takes another on driver.ErrBadConn, as DB.BeginTx
// does), and the step goes on.
func TestCommitTxOnADeadPooledConnection(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	h := txHarness(true)
	s := h.New(t).(*Store)
	s.DB().SetMaxOpenConns(1)
	tok, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	killer, err := sql.Open("mysql", dsn(t))
	if err != nil {
		t.Fatal(err)
	}
	defer killer.Close()
	if _, err := killer.ExecContext(ctx, "KILL ?", mustConnectionID(t, s)); err != nil {
		t.Fatal(err)
	}
	step := store.TxStep{Key: "account", Token: tok.ID, Fused: true}
	_, consumed, err := s.CommitTx(ctx, step, func(ctx context.Context, tx *sql.Tx) (store.Entity, []baton.Token, error) {
		return store.Entity{Key: step.Key, State: []byte("charged")}, nil, nil
	})
	if err != nil || !consumed {
		t.Fatalf("CommitTx after the pooled connection was killed = %v, consumed %v; want applied on another connection", err, consumed)
	}
}

func mustConnectionID(t *testing.T, s *Store) int64 {
	t.Helper()
	var id int64
	if err := s.DB().QueryRowContext(t.Context(), "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}
