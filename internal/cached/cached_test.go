package cached_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/cached"
)

func TestReadingIsReusedUntilMaxAge(t *testing.T) {
	t.Parallel()
	var reads atomic.Int64
	var now atomic.Int64
	v := &cached.Value[int64]{
		Read:   func(context.Context) (int64, error) { return reads.Add(1), nil },
		MaxAge: time.Second,
		Now:    func() time.Time { return time.Unix(0, now.Load()) },
	}
	for range 100 {
		if got, _ := v.Get(t.Context()); got != 1 {
			t.Fatalf("got reading %d, want the first one reused", got)
		}
	}
	now.Add(int64(time.Second))
	if got, _ := v.Get(t.Context()); got != 2 {
		t.Fatalf("after MaxAge got reading %d, want a new one", got)
	}
}

// While one reader takes a slow reading, the others get the last one at
// once, and only one reading runs.
func TestOneReadingAtATimeOthersDoNotWait(t *testing.T) {
	t.Parallel()
	var now atomic.Int64
	var reads, running, most atomic.Int64
	release := make(chan struct{})
	v := &cached.Value[int64]{
		MaxAge: time.Second,
		Now:    func() time.Time { return time.Unix(0, now.Load()) },
		Read: func(context.Context) (int64, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			r := reads.Add(1)
			if r > 1 {
				<-release
			}
			return r, nil
		},
	}
	if got, _ := v.Get(t.Context()); got != 1 {
		t.Fatalf("first reading %d", got)
	}
	now.Add(int64(2 * time.Second))
	slow := make(chan int64)
	go func() { got, _ := v.Get(context.Background()); slow <- got }()
	for reads.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if got, _ := v.Get(t.Context()); got != 1 {
				t.Errorf("during a refresh got %d, want the last reading 1", got)
			}
		})
	}
	wg.Wait()
	close(release)
	if got := <-slow; got != 2 {
		t.Errorf("the refreshing reader got %d, want 2", got)
	}
	if got, _ := v.Get(t.Context()); got != 2 || reads.Load() != 2 || most.Load() != 1 {
		t.Errorf("got %d after %d readings, %d at once; want 2 after 2, one at a time", got, reads.Load(), most.Load())
	}
}

func TestFirstReadersWaitAndErrorsAreCached(t *testing.T) {
	t.Parallel()
	errDown := errors.New("down")
	var reads atomic.Int64
	started := make(chan struct{})
	release := make(chan struct{})
	v := &cached.Value[int]{
		MaxAge: time.Hour,
		Read: func(context.Context) (int, error) {
			reads.Add(1)
			close(started)
			<-release
			return 0, errDown
		},
	}
	errs := make(chan error, 2)
	go func() { _, err := v.Get(context.Background()); errs <- err }()
	<-started
	go func() { _, err := v.Get(context.Background()); errs <- err }()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := v.Get(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("a waiting reader whose context ends got %v, want context.Canceled", err)
	}
	close(release)
	for range 2 {
		if err := <-errs; !errors.Is(err, errDown) {
			t.Errorf("got %v, want the reading's error", err)
		}
	}
	if _, err := v.Get(t.Context()); !errors.Is(err, errDown) || reads.Load() != 1 {
		t.Errorf("got %v after %d readings; want the cached error after one", err, reads.Load())
	}
}

// Expire makes the next Get read afresh, also when the reading in
// progress began before Expire.
func TestExpireForcesAFreshReading(t *testing.T) {
	t.Parallel()
	var reads atomic.Int64
	inRead, release := make(chan struct{}), make(chan struct{})
	slow := atomic.Bool{}
	v := &cached.Value[int64]{
		Read: func(context.Context) (int64, error) {
			if slow.Load() {
				inRead <- struct{}{}
				<-release
			}
			return reads.Add(1), nil
		},
		MaxAge: time.Hour,
	}
	if got, _ := v.Get(t.Context()); got != 1 {
		t.Fatalf("first reading %d", got)
	}
	v.Expire()
	if got, _ := v.Get(t.Context()); got != 2 {
		t.Fatalf("after Expire got reading %d, want a new one", got)
	}
	slow.Store(true)
	v.Expire()
	done := make(chan int64)
	go func() {
		got, _ := v.Get(t.Context())
		done <- got
	}()
	<-inRead
	v.Expire() // the change happens while the reading is in progress
	slow.Store(false)
	close(release)
	if got := <-done; got != 3 {
		t.Fatalf("reading in progress returned %d, want 3", got)
	}
	if got, _ := v.Get(t.Context()); got != 4 {
		t.Fatalf("a reading begun before Expire was reused: got %d, want a fresh 4", got)
	}
}
