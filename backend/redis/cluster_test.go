package redis

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// TestCluster runs the token store suite and the linearizability check
// against a real Redis Cluster of three durable masters that it starts.
// Every check uses a prefix of its own on one shared cluster, except the
// durability check: its store gets a cluster of its own, whose masters
// Reopen kills with SIGKILL and restarts over their data.
func TestCluster(t *testing.T) {
	t.Parallel()
	shared := startRedisCluster(t)
	var mu sync.Mutex
	own := make(map[store.TokenStore]*redisCluster)
	harness := storetest.TokenHarness{
		New: func(t *testing.T) store.TokenStore {
			if !strings.HasSuffix(t.Name(), "/Durability") {
				return openCluster(t, shared)
			}
			c := startRedisCluster(t)
			s := openCluster(t, c)
			mu.Lock()
			own[s] = c
			mu.Unlock()
			return s
		},
		Reopen: func(t *testing.T, s store.TokenStore) store.TokenStore {
			mu.Lock()
			c := own[s]
			mu.Unlock()
			old := s.(*TokenStore)
			old.Close()
			c.Crash()
			reopened, err := Open(t.Context(), Config{URL: c.URL(), Prefix: old.keys.prefix})
			if err != nil {
				t.Fatalf("Open after the crash of every master: %v", err)
			}
			t.Cleanup(func() { reopened.Close() })
			return reopened
		},
	}
	t.Run("Conformance", func(t *testing.T) {
		t.Parallel()
		storetest.RunTokenStore(t, harness)
	})
	t.Run("Linearizability", func(t *testing.T) {
		t.Parallel()
		storetest.RunLinearizabilityWithFaults(t, storetest.TokenHarness{
			New: func(t *testing.T) store.TokenStore { return openCluster(t, shared) },
		})
	})
	for _, c := range []struct {
		name string
		run  func(*testing.T, *redisCluster)
	}{
		{"NoKeysLeftWhenQuiet", testClusterNoKeysLeft},
		{"NoKeysLeftAfterRepeatedTransition", testClusterRepeatedTransition},
		{"NoKeysLeftAfterRepeatedIssue", testClusterRepeatedIssue},
		{"IssueOverlappingConsumption", testClusterIssueOverlappingConsumption},
		{"ChildrenOfAnotherConversation", testClusterForeignChildren},
		{"CrashGarbage", testClusterCrashGarbage},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, shared)
		})
	}
	t.Run("DurabilityOfEveryMaster", func(t *testing.T) {
		t.Parallel()
		testClusterUnsafeMaster(t)
	})
}

// Once every token is consumed or expired, no key is left on any master.
func testClusterNoKeysLeft(t *testing.T, c *redisCluster) {
	ctx, s := t.Context(), openCluster(t, c)
	root, _ := issueRootAndExpired(ctx, t, s)
	children := []baton.Token{testChild(root, "billing"), testChild(root, "shipping")}
	if _, err := s.Transition(ctx, root.ID, children); err != nil {
		t.Fatal(err)
	}
	keys := clusterKeys(t, c, s.keys)
	tag := "{" + root.Conversation.String() + "}"
	tagged := 0
	for _, k := range keys {
		if strings.Contains(k, tag) {
			tagged++
		}
	}
	if tagged != 3 { // two token hashes and the conversation's set
		t.Errorf("keys tagged %s = %d, want 3: %q", tag, tagged, keys)
	}
	for _, ch := range children {
		mustConsume(ctx, t, s, ch.ID)
	}
	if n, err := s.ExpireRoots(ctx, time.Now(), 10); err != nil || n != 1 {
		t.Fatalf("ExpireRoots = %d, %v; want 1", n, err)
	}
	requireNoKeys(t, clusterKeys(t, c, s.keys))
}

// A second run of step 5 (a redelivered copy, the sweeper, a retry after
// an unknown outcome) claims the children's lookups again and creates
// nothing; once the children are consumed no key is left on any master.
func testClusterRepeatedTransition(t *testing.T, c *redisCluster) {
	ctx, s := t.Context(), openCluster(t, c)
	root := testRoot("orders")
	root = issued(ctx, t, s, root)
	children := []baton.Token{testChild(root, "billing"), testChild(root, "shipping")}
	for i, want := range []bool{true, false, false} {
		if consumed, err := s.Transition(ctx, root.ID, children); err != nil || consumed != want {
			t.Fatalf("Transition(root) run %d = %v, %v; want %v, nil", i+1, consumed, err, want)
		}
	}
	for _, ch := range children {
		if _, err := s.Get(ctx, ch.ID); err != nil {
			t.Fatalf("Get(child %s) after repeated transitions: %v", ch.ID, err)
		}
		mustConsume(ctx, t, s, ch.ID)
	}
	requireNoKeys(t, clusterKeys(t, c, s.keys))
}

// Issue retried for a root that exists (ErrExists) leaves nothing behind
// once the root is consumed, or once it expires.
func testClusterRepeatedIssue(t *testing.T, c *redisCluster) {
	ctx, s := t.Context(), openCluster(t, c)
	root, expired := issueRootAndExpired(ctx, t, s)
	for _, r := range []baton.Token{root, expired} {
		for range 2 {
			if _, err := s.Issue(ctx, r); !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("Issue naming the id %s = %v, want store.ErrInvalid", r.ID, err)
			}
		}
	}
	if consumed, err := s.Transition(ctx, root.ID, nil); err != nil || !consumed {
		t.Fatalf("Transition(root) = %v, %v", consumed, err)
	}
	if n, err := s.ExpireRoots(ctx, time.Now(), 10); err != nil || n != 1 {
		t.Fatalf("ExpireRoots = %d, %v; want 1", n, err)
	}
	requireNoKeys(t, clusterKeys(t, c, s.keys))
}

// An Issue of an id whose claim precedes the consumption of a live token
// with that id, and whose script follows it, creates the token again (it
// linearizes after the consumption): the removal of the consumed token's
// entries must leave the lookup that this creation relies on, so that
// Get and Transition find it. Deleting a lookup by conversation on
// removal would lose it.
func testClusterIssueOverlappingConsumption(t *testing.T, c *redisCluster) {
	ctx, s := t.Context(), openCluster(t, c)
	root := testRoot("orders")
	root = issued(ctx, t, s, root)
	again := s.newAttempt(root.Conversation, []baton.Token{root})
	if _, conflicts, err := s.claim(ctx, again, baton.TokenID{}); err != nil || len(conflicts) != 0 {
		t.Fatalf("claim = %v, %v", conflicts, err)
	}
	if consumed, err := s.Transition(ctx, root.ID, nil); err != nil || !consumed {
		t.Fatalf("Transition(root) = %v, %v", consumed, err)
	}
	if _, err := s.create(ctx, again, baton.TokenID{}); err != nil {
		t.Fatalf("the overlapping Issue's script: %v", err)
	}
	if _, err := s.Get(ctx, root.ID); err != nil {
		t.Fatalf("Get of the token created again = %v, want it found", err)
	}
	if consumed, err := s.Transition(ctx, root.ID, nil); err != nil || !consumed {
		t.Fatalf("Transition(root created again) = %v, %v", consumed, err)
	}
	requireNoKeys(t, clusterKeys(t, c, s.keys))
}

// A transition's script runs in one slot: children of another
// conversation are refused, before anything changes.
func testClusterForeignChildren(t *testing.T, c *redisCluster) {
	ctx, s := t.Context(), openCluster(t, c)
	root := testRoot("orders")
	root = issued(ctx, t, s, root)
	foreign := testRoot("billing") // a conversation of its own
	foreign.Causation = root.ID
	for _, create := range [][]baton.Token{{foreign}, {testChild(root, "billing"), foreign}} {
		consumed, err := s.Transition(ctx, root.ID, create)
		if !errors.Is(err, store.ErrInvalid) || consumed {
			t.Errorf("Transition creating a child of another conversation = %v, %v; want store.ErrInvalid", consumed, err)
		}
	}
	if _, err := s.Get(ctx, root.ID); err != nil {
		t.Errorf("the parent after refused transitions: %v", err)
	}
	if _, err := s.Get(ctx, foreign.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(foreign child) = %v, want ErrNotFound", err)
	}
	if keys := clusterKeys(t, c, s.keys); len(keys) != 4 {
		t.Errorf("keys after refused transitions: %q, want the root's hash, set, lookup and destination index only", keys)
	}
}

// A client that crashes after writing its lookups and index entries but
// before its script leaves entries without a token. Readers skip them,
// nobody deletes them while the creation could still apply, and they are
// pruned once older than pruneAge.
func testClusterCrashGarbage(t *testing.T, c *redisCluster) {
	ctx, s := t.Context(), openCluster(t, c)
	lost := testRoot("orders")
	lost.ExpiresAt = time.Now().Add(-time.Hour)
	// The attempt started a little more than claimTTL ago.
	s.now = func() time.Time { return time.Now().Add(-claimTTL - time.Second) }
	a := s.newAttempt(lost.Conversation, []baton.Token{lost})
	s.now = time.Now
	if _, _, err := s.claim(ctx, a, baton.TokenID{}); err != nil {
		t.Fatal(err)
	}
	// The crash: the creation script never runs.
	if len(clusterKeys(t, c, s.keys)) != 3 {
		t.Fatalf("claim wrote %q, want the lookup and both indexes", clusterKeys(t, c, s.keys))
	}
	check := func(when string) {
		if _, err := s.Get(ctx, lost.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: Get = %v, want ErrNotFound", when, err)
		}
		if got, err := s.ListByDestination(ctx, "orders", store.Page{}); err != nil || len(got) != 0 {
			t.Errorf("%s: ListByDestination = %v, %v; want none", when, got, err)
		}
		if n, err := s.ExpireRoots(ctx, time.Now(), 10); err != nil || n != 0 {
			t.Errorf("%s: ExpireRoots = %d, %v; want 0", when, n, err)
		}
	}
	check("fresh garbage")
	if keys := clusterKeys(t, c, s.keys); len(keys) != 3 {
		t.Errorf("entries of a creation that may still apply were pruned: %q left", keys)
	}
	// A creation this late is refused by its script...
	if _, err := s.create(ctx, a, baton.TokenID{}); !errors.Is(classify("create", err), store.ErrNotApplied) {
		t.Errorf("creation after claimTTL = %v, want a not-applied refusal", err)
	}
	// ...so entries older than pruneAge go.
	s.now = func() time.Time { return time.Now().Add(pruneAge + time.Minute) }
	check("old garbage")
	if keys := clusterKeys(t, c, s.keys); len(keys) != 0 {
		t.Errorf("old garbage not pruned: %q left", keys)
	}
	s.now = time.Now
	// Its conversation is usable again.
	lost.ExpiresAt = time.Time{}
	issued(ctx, t, s, lost)
}

// Open checks the durability settings of every master.
func testClusterUnsafeMaster(t *testing.T) {
	c := startRedisCluster(t)
	weak := c.servers[2]
	node := goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", weak.Port), MaxRetries: -1})
	defer node.Close()
	if err := node.ConfigSet(t.Context(), "appendfsync", "everysec").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := Open(t.Context(), Config{URL: c.URL()})
	addr := fmt.Sprintf("127.0.0.1:%d", weak.Port)
	if !errors.Is(err, ErrUnsafeDurability) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Open of a cluster with master %s on appendfsync everysec = %v, want ErrUnsafeDurability naming that master", addr, err)
	}
	s, err := Open(t.Context(), Config{URL: c.URL(), AllowUnsafeDurability: true})
	if err != nil {
		t.Fatalf("Open with AllowUnsafeDurability: %v", err)
	}
	s.Close()

	// appendfsync always is not enough: a master that skips the fsync
	// during rewrites is refused too.
	if err := node.ConfigSet(t.Context(), "appendfsync", "always").Err(); err != nil {
		t.Fatal(err)
	}
	if err := node.ConfigSet(t.Context(), "no-appendfsync-on-rewrite", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(t.Context(), Config{URL: c.URL()})
	if !errors.Is(err, ErrUnsafeDurability) || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "no-appendfsync-on-rewrite") {
		t.Fatalf("Open of a cluster with master %s on no-appendfsync-on-rewrite yes = %v, want ErrUnsafeDurability naming that master and setting", addr, err)
	}
}
