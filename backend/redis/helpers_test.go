package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/testenv"
)

// testPrefix returns a key prefix that no other test uses.
func testPrefix() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "batontest-" + hex.EncodeToString(b)
}

// openTest opens a store on url with a fresh prefix and registers its
// cleanup: close it, then SCAN and DEL every key under the prefix.
func openTest(t testing.TB, url string, allowUnsafe bool) *TokenStore {
	t.Helper()
	s, err := Open(t.Context(), Config{URL: url, Prefix: testPrefix(), AllowUnsafeDurability: allowUnsafe})
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	t.Cleanup(func() {
		s.Close()
		deleteKeys(t, url, s.keys)
	})
	return s
}

// sharedStore opens a store on the machine's Redis (BATON_TEST_REDIS),
// which keeps nothing on disk, so durability is waived.
func sharedStore(t testing.TB) *TokenStore {
	t.Helper()
	return openTest(t, testenv.Addr(t, testenv.Redis), true)
}

// deleteKeys removes every key of a store's prefix. A server that is gone
// (a killed test server) has nothing left to clean.
func deleteKeys(t testing.TB, url string, keys keyLayout) {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	client := goredis.NewClient(opts)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iter := client.Scan(ctx, 0, keys.pattern(), 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			client.Del(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		client.Del(ctx, batch...)
	}
	if err := iter.Err(); err != nil && !isDialFailure(err) {
		t.Errorf("cleanup of %s: %v", keys.pattern(), err)
	}
}

func isDialFailure(err error) bool {
	var d *net.OpError
	return errors.As(err, &d) && d.Op == "dial"
}

// keysOf lists the keys of a store's prefix.
func keysOf(t *testing.T, s *TokenStore) []string {
	t.Helper()
	var keys []string
	iter := s.client.Scan(t.Context(), 0, s.keys.pattern(), 1000).Iterator()
	for iter.Next(t.Context()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("SCAN %s: %v", s.keys.pattern(), err)
	}
	return keys
}

// mustConsume consumes a live token that emits nothing.
func mustConsume(ctx context.Context, t *testing.T, s *TokenStore, id baton.TokenID) {
	t.Helper()
	if consumed, err := s.Transition(ctx, id, nil); err != nil || !consumed {
		t.Fatalf("Transition(%s) = %v, %v", id, consumed, err)
	}
}

// issueRootAndExpired issues a root, and a second one whose expiry has
// passed (for ExpireRoots to delete), for the "no keys left" checks.
func issueRootAndExpired(ctx context.Context, t *testing.T, s *TokenStore) (root, expired baton.Token) {
	t.Helper()
	root = testRoot("orders")
	expired = testRoot("orders")
	expired.ExpiresAt = time.Now().Add(-time.Minute)
	return issued(ctx, t, s, root), issued(ctx, t, s, expired)
}

// issued issues tok as a root, which must succeed, and returns it as the
// store keeps it: under the id the store chose.
func issued(ctx context.Context, t testing.TB, s *TokenStore, tok baton.Token) baton.Token {
	t.Helper()
	tok.ID, tok.Causation = baton.TokenID{}, baton.TokenID{}
	got, err := s.Issue(ctx, tok)
	if err != nil {
		t.Fatalf("Issue = %v", err)
	}
	return got
}

// requireNoKeys fails t if the listed keys are not empty.
func requireNoKeys(t *testing.T, keys []string) {
	t.Helper()
	if len(keys) != 0 {
		t.Errorf("keys left with no live token: %q", keys)
	}
}
