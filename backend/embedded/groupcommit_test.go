package embedded

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// lastTxID returns the id of the last committed write transaction.
func lastTxID(t *testing.T, s *Store) int {
	t.Helper()
	var id int
	if err := s.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		t.Fatal(err)
	}
	return id
}

// holdCommitter occupies the committer with a write that waits until
// release is called, so that later writes queue up and form one group.
func holdCommitter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	entered, proceed := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.group.update(func(*bolt.Tx) error {
			select {
			case <-entered:
			default:
				close(entered)
			}
			<-proceed
			return nil
		})
	}()
	<-entered
	return func() {
		close(proceed)
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// waitQueued waits until n writes wait in the committer's queue.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.group.calls) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued, want %d", len(s.group.calls), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGroupSharesOneTransaction queues commits that win and commits that
// conflict behind a held commit, and checks that they all commit in one
// transaction, the winners applied and the losers refused with
// ErrConflict, none of them failing the others.
func TestGroupSharesOneTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTemp(t, Config{})
	for i := range 10 {
		if _, err := s.Commit(ctx, store.Entity{Key: fmt.Sprint("k", i)}); err != nil {
			t.Fatal(err)
		}
	}
	before := lastTxID(t, s)
	release := holdCommitter(t, s)

	const n = 20 // k0..k9 at version 1 (win), then at version 0 (conflict)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			e := store.Entity{Key: fmt.Sprint("k", i%10), Version: 1, State: []byte("new")}
			if i >= 10 {
				e.Version = 0
			}
			_, errs[i] = s.Commit(ctx, e)
		})
	}
	waitQueued(t, s, n)
	release()
	wg.Wait()

	for i, err := range errs {
		if wantConflict := i >= 10; wantConflict != errors.Is(err, store.ErrConflict) || (!wantConflict && err != nil) {
			t.Errorf("commit %d: %v (conflict expected: %v)", i, err, wantConflict)
		}
	}
	if after := lastTxID(t, s); after != before+2 {
		t.Errorf("%d write transactions for the held write and one group, want 2", after-before)
	}
	for i := range 10 {
		if e, _ := s.Load(ctx, fmt.Sprint("k", i)); e.Version != 2 || string(e.State) != "new" {
			t.Errorf("k%d = %+v, want version 2", i, e)
		}
	}
}

// TestGroupSurvivesFailingCall checks that a write that fails inside a
// group rolls back only itself: the others commit, and the failing write
// runs alone and reports its own error as not applied.
func TestGroupSurvivesFailingCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTemp(t, Config{})
	conv := baton.NewTokenID()
	release := holdCommitter(t, s)

	roots := make([]baton.Token, 6)
	errs := make([]error, len(roots))
	var wg sync.WaitGroup
	for i := range roots {
		wg.Go(func() { roots[i], errs[i] = s.Issue(ctx, rootTemplate(token(t, conv, baton.TokenID{}, "shop"))) })
	}
	failure := errors.New("disk on fire")
	var failErr error
	var runs int
	wg.Go(func() {
		failErr = s.write(ctx, "failing", func(tx *bolt.Tx) error {
			runs++
			// Write first, then fail: the write must not survive.
			if err := bucketsOf(tx).putToken(token(t, conv, baton.TokenID{}, "ghost")); err != nil {
				return err
			}
			return failure
		})
	})
	waitQueued(t, s, len(roots)+1)
	release()
	wg.Wait()

	for i, err := range errs {
		if err != nil {
			t.Errorf("Issue %d in a group with a failing write: %v", i, err)
		}
	}
	if !errors.Is(failErr, failure) || !errors.Is(failErr, store.ErrNotApplied) {
		t.Errorf("failing write returned %v, want its own error marked not applied", failErr)
	}
	if runs != 2 {
		t.Errorf("failing write ran %d times, want 2 (in the group, then alone)", runs)
	}
	if ghosts, _ := s.ListByDestination(ctx, "ghost", store.Page{}); len(ghosts) != 0 {
		t.Errorf("the failing write's token survived: %v", ghosts)
	}
	if live, _ := s.ListByConversation(ctx, conv, store.Page{}); len(live) != len(roots) {
		t.Errorf("%d tokens live, want the %d issued", len(live), len(roots))
	}
}

// TestGroupPanicReachesCaller checks that a write that panics does not
// take down the committer: the panic surfaces in its caller and the store
// keeps working.
func TestGroupPanicReachesCaller(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTemp(t, Config{})
	func() {
		defer func() {
			if recover() == nil {
				t.Error("panicking write did not panic in its caller")
			}
		}()
		s.write(ctx, "panicking", func(*bolt.Tx) error { panic("boom") })
	}()
	if _, err := s.Issue(ctx, rootTemplate(token(t, baton.NewTokenID(), baton.TokenID{}, "shop"))); err != nil {
		t.Fatalf("Issue after a panicking write: %v", err)
	}
}
