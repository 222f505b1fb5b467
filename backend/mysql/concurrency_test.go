package mysql

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// TestRetriesDeadlocks: a transaction that the server rolled back for a
// deadlock (ER_LOCK_DEADLOCK) runs again; one that keeps deadlocking ends
// as not applied.
func TestRetriesDeadlocks(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	runs := 0
	err := s.inTx(t.Context(), "test", func(*sql.Tx) error {
		runs++
		if runs < 3 {
			return &mysql.MySQLError{Number: errDeadlock, Message: "Deadlock found when trying to get lock"}
		}
		return nil
	})
	if err != nil || runs != 3 {
		t.Fatalf("inTx = %v after %d runs, want nil after 3", err, runs)
	}
	err = s.inTx(t.Context(), "test", func(*sql.Tx) error {
		return &mysql.MySQLError{Number: errDeadlock, Message: "Deadlock found when trying to get lock"}
	})
	if !errors.Is(err, store.ErrNotApplied) {
		t.Fatalf("inTx that always deadlocks = %v, want ErrNotApplied", err)
	}
}

// TestConcurrentTransitionsUnderRepeatableRead races transitions under
// the server's default isolation, REPEATABLE READ: pairs of workers
// consume the same token (exactly one may win), and transitions of tokens
// that do not exist take gap locks that the inserts of children run into.
// Deadlocks among them are retried: no call fails, and every token is
// consumed once.
func TestConcurrentTransitionsUnderRepeatableRead(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newStore(t)
	var isolation string
	if err := s.DB().QueryRowContext(ctx, "SELECT @@SESSION.tx_isolation").Scan(&isolation); err != nil {
		if err := s.DB().QueryRowContext(ctx, "SELECT @@SESSION.transaction_isolation").Scan(&isolation); err != nil {
			t.Fatal(err)
		}
	}
	const tokens, racers = 200, 2
	roots := make([]baton.Token, tokens)
	for i := range roots {
		tok, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		roots[i] = tok
	}
	var wins atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, tokens*racers*2)
	for _, root := range roots {
		for range racers {
			wg.Go(func() {
				child := baton.Token{ID: baton.NewTokenID(), Conversation: root.Conversation, Causation: root.ID,
					Destination: "shipping", Type: "ship", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}
				won, err := s.Transition(ctx, root.ID, []baton.Token{child})
				if err != nil {
					errs <- err
				}
				if won {
					wins.Add(1)
				}
				// A transition of a token that was never issued.
				if _, err := s.Transition(context.Background(), baton.NewTokenID(), nil); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a transition failed: %v", err)
	}
	if wins.Load() != tokens {
		t.Errorf("%d transitions consumed a token, want %d (one per token)", wins.Load(), tokens)
	}
	t.Logf("isolation %s: %d transitions of %d tokens, %d transactions retried after a deadlock or lock wait timeout",
		isolation, tokens*racers*2, tokens, s.retried.Load())
}
