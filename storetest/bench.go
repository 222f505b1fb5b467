package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// BenchmarkTokenBatches reads 16 tokens and runs 16 transitions (each
// creating one child), as the engine's plain path does with Config.Batch:
// one call after another ("one-by-one", what the engine does over a store
// without store.TokenBatcher) against the store's batch calls
// ("batched"), side by side. It reports signals/s; the tokens are issued
// outside the measured time.
func BenchmarkTokenBatches(b *testing.B, s interface {
	store.TokenStore
	store.TokenBatcher
}) {
	const batch = 16
	for _, c := range []struct {
		name    string
		batcher store.TokenBatcher
	}{
		{"one-by-one", store.BatcherOf(struct{ store.TokenStore }{s})},
		{"batched", s},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := b.Context()
			for b.Loop() {
				b.StopTimer()
				ids := make([]baton.TokenID, batch)
				transitions := make([]store.TokenTransition, batch)
				for i := range batch {
					root, err := s.Issue(ctx, baton.Token{Destination: "bench-shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
					if err != nil {
						b.Fatal(err)
					}
					child := baton.Token{ID: baton.NewTokenID(), Conversation: root.Conversation, Causation: root.ID,
						Destination: "bench-billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}
					ids[i], transitions[i] = root.ID, store.TokenTransition{Consume: root.ID, Create: []baton.Token{child}}
				}
				b.StartTimer()
				if _, errs, err := c.batcher.GetTokens(ctx, ids); err != nil || errors.Join(errs...) != nil {
					b.Fatal(err, errors.Join(errs...))
				}
				consumed, errs, err := c.batcher.TransitionTokens(ctx, transitions)
				if err != nil || errors.Join(errs...) != nil || slices.Contains(consumed, false) {
					b.Fatal(err, errors.Join(errs...), consumed)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "signals/s")
		})
	}
}
