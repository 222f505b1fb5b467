package mysql

import (
	"fmt"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// BenchmarkCommitBatch commits batches of entities at their versions (as
// the engine's batched outbox removals do), one statement per entity
// ("each") and in four statements whatever the size ("batched"), side by
// side on one server:
//
//	BATON_TEST_MYSQL=... go test -run '^$' -bench CommitBatch -count 6 ./backend/mysql | benchstat -col /impl -
func BenchmarkCommitBatch(b *testing.B) {
	for _, size := range []int{4, 16, 64} {
		for _, impl := range []string{"each", "batched"} {
			b.Run(fmt.Sprintf("size=%d/impl=%s", size, impl), func(b *testing.B) {
				ctx := b.Context()
				s := newStore(b)
				batch := make([]store.Entity, size)
				for i := range batch {
					batch[i] = store.Entity{Key: fmt.Sprintf("account-%03d", i), State: []byte("0")}
				}
				for b.Loop() {
					for i := range batch {
						batch[i].Outbox = []store.OutboxEntry{{Token: baton.NewTokenID(), CreatedAt: time.Now()}}
					}
					results, err := s.commitBatch(ctx, batch, impl == "batched")
					if err != nil {
						b.Fatal(err)
					}
					for i, err := range results {
						if err != nil {
							b.Fatal(err)
						}
						batch[i].Version++
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*size), "µs/entity")
			})
		}
	}
}

// BenchmarkCommitTransitions commits batches of transitions, each an
// entity at its version and one token consumed with one child created, as
// an engine with Config.Batch does.
func BenchmarkCommitTransitions(b *testing.B) {
	for _, size := range []int{4, 16, 64} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			ctx := b.Context()
			s := newStore(b)
			entities := make([]store.Entity, size)
			tokens := make([]baton.Token, size)
			for i := range entities {
				entities[i] = store.Entity{Key: fmt.Sprintf("account-%03d", i), State: []byte("0")}
				tok, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
				if err != nil {
					b.Fatal(err)
				}
				tokens[i] = tok
			}
			for b.Loop() {
				batch := make([]store.Transition, size)
				for i := range batch {
					child := baton.Token{ID: baton.NewTokenID(), Conversation: tokens[i].Conversation, Causation: tokens[i].ID,
						Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}
					entities[i].Outbox = []store.OutboxEntry{{Token: tokens[i].ID, CreatedAt: time.Now()}}
					batch[i] = store.Transition{Entity: entities[i], Token: tokens[i].ID, Create: []baton.Token{child}}
					tokens[i] = child
				}
				results, err := s.CommitTransitions(ctx, batch)
				if err != nil {
					b.Fatal(err)
				}
				for i, err := range results {
					if err != nil {
						b.Fatal(err)
					}
					entities[i].Version++
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*size), "µs/transition")
		})
	}
}

// BenchmarkTokenBatches reads 16 tokens and runs 16 transitions, one
// after another against the store's batch calls
// (storetest.BenchmarkTokenBatches):
//
//	BATON_TEST_MYSQL=... go test -run '^$' -bench TokenBatches -benchtime 100x -count 3 ./backend/mysql
func BenchmarkTokenBatches(b *testing.B) {
	storetest.BenchmarkTokenBatches(b, newStore(b))
}
