package split_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/redis"
	"github.com/batonhq/baton/backend/split"
	"github.com/batonhq/baton/internal/proccpu"
	"github.com/batonhq/baton/internal/testenv/redisserver"
	"github.com/batonhq/baton/store"
)

// BenchmarkParts measures a split store over 1, 2 and 3 durable Redis
// servers (appendfsync always), one server per part, each a process of
// its own. One operation is a conversation of two steps: a root issued,
// consumed by a transition that creates a child, and the child consumed;
// every call names the conversation, as the engine does. Compare the
// transitions/s of the three in one run, and how the servers' CPU is
// shared (server-µs/transition in all, busiest-share of it on one server):
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
			b.SetParallelism(16)
			cpuBefore, _ := proccpu.Of(pids)
			started := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if err := conversationOfTwoSteps(ctx, s); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(2*b.N)/time.Since(started).Seconds(), "transitions/s")
			cpuAfter, ok := proccpu.Of(pids)
			if !ok {
				return
			}
			var total, busiest time.Duration
			for _, pid := range pids {
				used := cpuAfter[pid] - cpuBefore[pid]
				total, busiest = total+used, max(busiest, used)
			}
			b.ReportMetric(float64(total.Microseconds())/float64(2*b.N), "server-µs/transition")
			if total > 0 {
				b.ReportMetric(float64(busiest)/float64(total), "busiest-share")
			}
		})
	}
}

func conversationOfTwoSteps(ctx context.Context, s *split.Store) error {
	root, err := s.Issue(ctx, baton.Token{Destination: "shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		return err
	}
	ctx = store.WithConversation(ctx, root.Conversation)
	child := baton.Token{ID: baton.NewTokenID(), Conversation: root.Conversation, Causation: root.ID, Destination: "billing",
		Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}
	if ok, err := s.Transition(ctx, root.ID, []baton.Token{child}); !ok || err != nil {
		return fmt.Errorf("transition: %v, %v", ok, err)
	}
	if ok, err := s.Transition(ctx, child.ID, nil); !ok || err != nil {
		return fmt.Errorf("leaf transition: %v, %v", ok, err)
	}
	return nil
}
