package etcd_test

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// BenchmarkCluster measures the store on a three-member cluster of
// processes (storetest.BenchmarkConversations):
//
//	go test -run XXX -bench Cluster -benchtime 10s ./backend/etcd
func BenchmarkCluster(b *testing.B) {
	storetest.BenchmarkConversations(b, openShared(b), shared.PIDs())
}

// BenchmarkBatches measures a batch of 16 reads and of 16 transitions
// (each creating one child), as the engine's plain path makes them with
// Config.Batch, on the three-member cluster: one after another (what the
// engine did before the store was a store.TokenBatcher) against the
// store's batch calls. Compare the two in one run:
//
//	go test -run XXX -bench Batches -benchtime 200x -count 3 ./backend/etcd
func BenchmarkBatches(b *testing.B) {
	const batch = 16
	s := openShared(b)
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
				var wg sync.WaitGroup
				for i := range batch {
					wg.Go(func() {
						root, err := s.Issue(ctx, baton.Token{Destination: "bench-shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
						if err != nil {
							b.Error(err)
							return
						}
						child := baton.Token{ID: baton.NewTokenID(), Conversation: root.Conversation, Causation: root.ID,
							Destination: "bench-billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}
						ids[i], transitions[i] = root.ID, store.TokenTransition{Consume: root.ID, Create: []baton.Token{child}}
					})
				}
				wg.Wait()
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
