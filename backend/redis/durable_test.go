package redis

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/testenv/redisserver"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// TestDurableConformance runs the suite against redis-server processes in
// the required durable mode. Reopen kills the server with SIGKILL and
// starts it again over the same data, so the suite's durability check
// proves that acknowledged writes survive a crash of the server process.
func TestDurableConformance(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	servers := make(map[store.TokenStore]*redisserver.Server)
	register := func(s store.TokenStore, srv *redisserver.Server) {
		mu.Lock()
		defer mu.Unlock()
		servers[s] = srv
	}
	storetest.RunTokenStore(t, storetest.TokenHarness{
		New: func(t *testing.T) store.TokenStore {
			srv := redisserver.Start(t, redisserver.DurableArgs...)
			s := openTest(t, srv.URL(), false)
			register(s, srv)
			return s
		},
		Reopen: func(t *testing.T, s store.TokenStore) store.TokenStore {
			mu.Lock()
			srv := servers[s]
			mu.Unlock()
			old := s.(*TokenStore)
			old.Close()
			srv.Crash()
			reopened, err := Open(t.Context(), Config{URL: srv.URL(), Prefix: old.keys.prefix})
			if err != nil {
				t.Fatalf("Open after the crash: %v", err)
			}
			t.Cleanup(func() { reopened.Close() })
			register(reopened, srv)
			return reopened
		},
	})
}

// appendfsync everysec can lose the last second of acknowledged writes.
func TestRefusesEverysec(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t, "--appendonly", "yes", "--appendfsync", "everysec")
	_, err := Open(t.Context(), Config{URL: srv.URL()})
	if !errors.Is(err, ErrUnsafeDurability) || !strings.Contains(err.Error(), `appendfsync "everysec"`) {
		t.Fatalf("Open of a server with appendfsync everysec = %v, want ErrUnsafeDurability naming appendfsync", err)
	}
	s, err := Open(t.Context(), Config{URL: srv.URL(), AllowUnsafeDurability: true})
	if err != nil {
		t.Fatalf("Open with AllowUnsafeDurability: %v", err)
	}
	s.Close()
}

// no-appendfsync-on-rewrite yes skips the fsync of every write that is
// acknowledged while an AOF rewrite or RDB save runs in the background, so
// appendfsync always alone does not make a server durable.
func TestRefusesNoAppendfsyncOnRewrite(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t, append(redisserver.DurableArgs, "--no-appendfsync-on-rewrite", "yes")...)
	_, err := Open(t.Context(), Config{URL: srv.URL()})
	if !errors.Is(err, ErrUnsafeDurability) || !strings.Contains(err.Error(), `no-appendfsync-on-rewrite "yes"`) {
		t.Fatalf("Open of a server with no-appendfsync-on-rewrite yes = %v, want ErrUnsafeDurability naming no-appendfsync-on-rewrite", err)
	}
	var logged strings.Builder
	s, err := Open(t.Context(), Config{URL: srv.URL(), AllowUnsafeDurability: true, Logger: newTextLogger(&logged)})
	if err != nil {
		t.Fatalf("Open with AllowUnsafeDurability: %v", err)
	}
	s.Close()
	if !strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), "no-appendfsync-on-rewrite") {
		t.Errorf("Open with AllowUnsafeDurability did not warn about no-appendfsync-on-rewrite:\n%s", logged.String())
	}
}

// TestCrashMidStream kills the server while transitions stream in. After a
// restart, every acknowledged transition is there, the one in flight is
// either wholly applied or not at all, and its error did not claim "not
// applied" if it was applied.
func TestCrashMidStream(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t, redisserver.DurableArgs...)
	s := openTest(t, srv.URL(), false)
	ctx := t.Context()

	chain := []baton.Token{testRoot("orders")}
	chain[0] = issued(ctx, t, s, chain[0])
	const killAfter = 200
	var acked atomic.Int64
	reachedKill := make(chan struct{})
	var failure error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			next := testChild(chain[i], "orders")
			chain = append(chain, next)
			consumed, err := s.Transition(ctx, chain[i].ID, []baton.Token{next})
			if err != nil {
				failure = err
				return
			}
			if !consumed {
				failure = errors.New("transition of the live chain token reported not consumed")
				return
			}
			if acked.Add(1) == killAfter {
				close(reachedKill)
			}
		}
	}()
	<-reachedKill
	srv.Kill()
	<-done
	if failure == nil || strings.Contains(failure.Error(), "not consumed") {
		t.Fatalf("transitions did not fail when the server died: %v", failure)
	}
	n := int(acked.Load())
	srv.Restart()

	reopened, err := Open(ctx, Config{URL: srv.URL(), Prefix: s.keys.prefix})
	if err != nil {
		t.Fatalf("Open after the crash: %v", err)
	}
	defer reopened.Close()
	live, err := reopened.ListByConversation(ctx, chain[0].Conversation, store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 1 {
		t.Fatalf("after the crash the chain has %d live tokens, want exactly 1", len(live))
	}
	switch live[0].ID {
	case chain[n].ID:
		// The transition in flight did not apply.
	case chain[n+1].ID:
		if store.NotApplied(failure) {
			t.Errorf("the transition in flight applied, but its error claimed it did not: %v", failure)
		}
	default:
		t.Fatalf("after %d acknowledged transitions the live token is not token %d or %d of the chain", n, n, n+1)
	}
	t.Logf("%d transitions acknowledged before SIGKILL; in-flight error: %v", n, failure)
}
