package postgres

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// TestRootsIssuedTogetherShareAWrite: roots issued while a write is in
// progress go together in the next write, each with its own fresh id, and
// a caller that gives up before its root was taken gets "not applied" and
// leaves no token.
func TestRootsIssuedTogetherShareAWrite(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	const callers = 40
	var (
		mu     sync.Mutex
		writes []int
	)
	firstHeld := make(chan struct{})
	release := make(chan struct{})
	s.issues.beforeWrite = func(roots int) {
		mu.Lock()
		writes = append(writes, roots)
		first := len(writes) == 1
		mu.Unlock()
		if first {
			close(firstHeld)
			<-release // hold the first write until the others queued
		}
	}
	root := baton.Token{Destination: "shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}

	var wg sync.WaitGroup
	ids := make([]baton.TokenID, callers)
	errs := make([]error, callers)
	wg.Go(func() {
		tok, err := s.Issue(ctx, root)
		ids[0], errs[0] = tok.ID, err
	})
	<-firstHeld
	for i := 1; i < callers; i++ {
		wg.Go(func() {
			tok, err := s.Issue(ctx, root)
			ids[i], errs[i] = tok.ID, err
		})
	}
	// One caller that gives up while its root waits.
	gaveUp := make(chan error, 1)
	cancelled, cancel := context.WithCancel(ctx)
	go func() {
		_, err := s.Issue(cancelled, root)
		gaveUp <- err
	}()
	waitPending(t, s, callers)
	cancel()
	if err := <-gaveUp; !errors.Is(err, store.ErrNotApplied) {
		t.Errorf("a caller that gave up while queued: %v, want ErrNotApplied", err)
	}
	close(release)
	wg.Wait()

	seen := map[baton.TokenID]bool{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
		if seen[ids[i]] {
			t.Fatalf("id %s issued twice", ids[i])
		}
		seen[ids[i]] = true
		if _, err := s.Get(ctx, ids[i]); err != nil {
			t.Errorf("root %s: %v", ids[i], err)
		}
	}
	if n, err := store.CountByDestination(ctx, s, "shop", 0); err != nil || n != callers {
		t.Errorf("live roots: %d, %v; want %d (none for the caller that gave up)", n, err, callers)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(writes) != 2 || writes[0] != 1 || writes[1] != callers-1 {
		t.Errorf("writes took %v roots, want [1 %d]: the first alone, the rest together", writes, callers-1)
	}
}

// waitPending waits until n roots wait for a write.
func waitPending(t *testing.T, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.issues.mu.Lock()
		got := len(s.issues.pending)
		s.issues.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d roots pending after 10s, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}
