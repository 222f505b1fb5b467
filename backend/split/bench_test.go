package split_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/proccpu"

	"github.com/batonhq/baton/backend/redis"
	"github.com/batonhq/baton/backend/split"
	"github.com/batonhq/baton/internal/testenv/redisserver"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// BenchmarkParts measures a split store over 1, 2 and 3 durable Redis
// servers (appendfsync always), one server per part, each a process of
// its own (storetest.BenchmarkConversations). Compare the three in one run:
//
//	go test -run XXX -bench Parts -benchtime 10s ./backend/split
func BenchmarkParts(b *testing.B) {
	for _, n := range []int{1, 2, 3} {
		b.Run(fmt.Sprintf("parts=%d", n), func(b *testing.B) {
			s, pids := overRedisServers(b, n)
			storetest.BenchmarkConversations(b, s, pids)
		})
	}
}

// overRedisServers returns a store split over n durable Redis servers
// (appendfsync always), each a process of its own, and their process ids.
func overRedisServers(b *testing.B, n int) (*split.Store, []int) {
	var parts []store.TokenStore
	var pids []int
	for range n {
		srv := redisserver.Start(b, redisserver.DurableArgs...)
		pids = append(pids, srv.PID())
		s, err := redis.Open(b.Context(), redis.Config{URL: srv.URL()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		parts = append(parts, s)
	}
	s, err := split.Open(b.Context(), parts...)
	if err != nil {
		b.Fatal(err)
	}
	return s, pids
}

// BenchmarkBatchReads reads batches of 16 live tokens, each of its own
// conversation as an engine's batch of signals is, from a store split over
// 3 durable Redis servers: by id alone (GetTokens: every part reads every id) and
// with the conversations (GetTokensIn: each part reads its own). It
// reports the servers' CPU per token read.
//
//	go test -run XXX -bench BatchReads -benchtime 5s -count 3 ./backend/split
func BenchmarkBatchReads(b *testing.B) {
	const batch = 16
	s, pids := overRedisServers(b, 3)
	lookups := make([]store.TokenLookup, batch)
	ids := make([]baton.TokenID, batch)
	for i := range lookups {
		root, err := s.Issue(b.Context(), baton.Token{Destination: "bench-shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
		if err != nil {
			b.Fatal(err)
		}
		lookups[i], ids[i] = store.TokenLookup{ID: root.ID, Conversation: root.Conversation}, root.ID
	}
	for _, c := range []struct {
		name string
		read func() ([]baton.Token, []error, error)
	}{
		{"by-id", func() ([]baton.Token, []error, error) { return s.GetTokens(b.Context(), ids) }},
		{"hinted", func() ([]baton.Token, []error, error) { return s.GetTokensIn(b.Context(), lookups) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			before, _ := proccpu.Of(pids)
			for b.Loop() {
				if _, errs, err := c.read(); err != nil || errs[0] != nil {
					b.Fatal(err, errs[0])
				}
			}
			after, ok := proccpu.Of(pids)
			if !ok {
				return
			}
			var total time.Duration
			for _, pid := range pids {
				total += after[pid] - before[pid]
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N*batch), "server-ns/token")
		})
	}
}
