package split_test

import (
	"fmt"
	"testing"

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
			storetest.BenchmarkConversations(b, s, pids)
		})
	}
}
