package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/proccpu"
	"github.com/batonhq/baton/store"
)

// BenchmarkConversations measures a token store under the protocol's load:
// many clients at once (b.SetParallelism(16)), each running conversations
// of two steps: a root issued, consumed by a transition that creates a
// child, and the child consumed by a transition that creates nothing.
// Every call names its conversation (store.WithConversation), as the
// engine does. It reports transitions/s and, for the server processes
// whose ids servers lists, the servers' CPU per transition and the share
// of it on the busiest one.
func BenchmarkConversations(b *testing.B, s store.TokenStore, servers []int) {
	b.Helper()
	b.SetParallelism(16)
	cpuBefore, _ := proccpu.Of(servers)
	started := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if err := twoSteps(ctx, s); err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(started)
	b.ReportMetric(float64(2*b.N)/elapsed.Seconds(), "transitions/s")
	cpuAfter, ok := proccpu.Of(servers)
	if len(servers) == 0 || !ok {
		return
	}
	var total, busiest time.Duration
	for _, pid := range servers {
		used := cpuAfter[pid] - cpuBefore[pid]
		total, busiest = total+used, max(busiest, used)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(2*b.N), "server-µs/transition")
	if total > 0 {
		b.ReportMetric(float64(busiest)/float64(total), "busiest-share")
	}
}

func twoSteps(ctx context.Context, s store.TokenStore) error {
	root, err := s.Issue(ctx, baton.Token{Destination: "bench-shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		return fmt.Errorf("issue: %w", err)
	}
	ctx = store.WithConversation(ctx, root.Conversation)
	child := baton.Token{ID: baton.NewTokenID(), Conversation: root.Conversation, Causation: root.ID, Destination: "bench-billing",
		Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}
	if ok, err := s.Transition(ctx, root.ID, []baton.Token{child}); !ok || err != nil {
		return fmt.Errorf("transition: %v, %w", ok, err)
	}
	if ok, err := s.Transition(ctx, child.ID, nil); !ok || err != nil {
		return fmt.Errorf("leaf transition: %v, %w", ok, err)
	}
	return nil
}
