package embedded

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/batonhq/baton"
)

// benchWorkers is the number of concurrent callers in the benchmarks.
const benchWorkers = 32

// BenchmarkTransitionGroupCommit runs b.N transitions from benchWorkers
// goroutines, each consuming a token issued beforehand and creating two
// children, once with group commit on and once with it off, on the same
// machine in the same run. It reports transitions per second for each mode
// and their ratio (speedup-x); ns/op is the measured time of both modes
// together divided by b.N. Setup (issuing the parents) is not measured.
func BenchmarkTransitionGroupCommit(b *testing.B) {
	b.StopTimer()
	on, onTime := measureTransitions(b, Config{}, b.N, benchWorkers)
	off, offTime := measureTransitions(b, Config{NoGroupCommit: true}, b.N, benchWorkers)
	b.ReportMetric(float64((onTime+offTime).Nanoseconds())/float64(b.N), "ns/op")
	b.ReportMetric(on, "transitions/s-group")
	b.ReportMetric(off, "transitions/s-nogroup")
	b.ReportMetric(on/off, "speedup-x")
}

// measureTransitions runs n transitions from workers goroutines on a fresh
// store opened with cfg and returns the rate and the time they took.
func measureTransitions(tb testing.TB, cfg Config, n, workers int) (perSecond float64, elapsed time.Duration) {
	ctx := context.Background()
	s, err := Open(filepath.Join(tb.TempDir(), "bench.db"), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()

	// Issue the parents in one transaction.
	conversation := baton.NewTokenID()
	parents := make([]baton.Token, n)
	err = s.db.Update(func(tx *bolt.Tx) error {
		bk := bucketsOf(tx)
		for i := range parents {
			parents[i] = benchToken(conversation, baton.TokenID{}, "shop")
			if err := bk.putToken(parents[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}

	var next, consumed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				p := parents[i]
				children := []baton.Token{benchToken(conversation, p.ID, "billing"), benchToken(conversation, p.ID, "warehouse")}
				ok, err := s.Transition(ctx, p.ID, children)
				if err != nil {
					tb.Error(err)
					return
				}
				if ok {
					consumed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed = time.Since(start)
	if got := consumed.Load(); got != int64(n) {
		tb.Fatalf("%d of %d transitions consumed their token", got, n)
	}
	return float64(n) / elapsed.Seconds(), elapsed
}

func benchToken(conversation, causation baton.TokenID, destination string) baton.Token {
	return baton.Token{
		ID:           baton.NewTokenID(),
		Conversation: conversation,
		Causation:    causation,
		Destination:  destination,
		Type:         "bench",
		Digest:       baton.DigestOf([]byte(destination)),
		CreatedAt:    time.Now(),
	}
}

// BenchmarkTransition compares, in one run, the store's Transition (consume
// a live token, create one child, with the checks and index entries) with
// the same writes in a raw bbolt file without the protocol: put the child's
// record and delete the parent's key, no check, no indexes. Each worker
// walks its own chain parent -> child -> ...; the approaches alternate in
// rounds so that load from elsewhere on the machine hits them alike. Both
// files fsync every commit (bbolt's default; NoSync stays false).
//
// Raw runs two ways, because batching decides the result:
//
//   - raw-update: one db.Update, so one fsync, per operation;
//   - raw-batch: db.Batch, bbolt's own grouping of concurrent writes into
//     one transaction and fsync.
//
// protocol/raw-batch is the like-for-like comparison for the store's group
// commit: both share one transaction and fsync among concurrent writers,
// whereas against raw-update the store's grouping would count as the
// protocol's gain. db.Batch differs in one way: it waits its timer
// (MaxBatchDelay, 10ms by default) before each group, which the store's
// committer does not (see groupcommit.go), so a ratio above 1 there is that
// timer, not a protocol that costs less than no protocol. At workers=1
// nothing can be grouped and the store commits each write at once, like
// db.Update, so there protocol/raw-update is the fair one.
//
// Reported: protocol-ops/s, raw-update-ops/s, raw-batch-ops/s,
// protocol/raw-update and protocol/raw-batch (throughput ratios); ns/op is
// the time of all three approaches together divided by b.N.
func BenchmarkTransition(b *testing.B) {
	for _, workers := range []int{1, benchWorkers} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			ctx := b.Context()
			s, err := Open(filepath.Join(b.TempDir(), "store.db"), Config{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			raw, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer raw.Close()
			bucket := []byte("raw")
			if err := raw.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucket); return err }); err != nil {
				b.Fatal(err)
			}
			rawStart := func(_ context.Context, root baton.Token) (baton.Token, error) {
				root.ID = baton.NewTokenID()
				return root, raw.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(root.ID[:], encodeToken(root)) })
			}
			rawStep := func(commit func(func(*bolt.Tx) error) error) func(context.Context, baton.Token, baton.Token) error {
				return func(_ context.Context, parent, child baton.Token) error {
					key, value := append([]byte{}, child.ID[:]...), encodeToken(child)
					return commit(func(tx *bolt.Tx) error {
						if err := tx.Bucket(bucket).Put(key, value); err != nil {
							return err
						}
						return tx.Bucket(bucket).Delete(parent.ID[:])
					})
				}
			}

			protocol := newChains(b, workers, s.Issue, func(ctx context.Context, parent, child baton.Token) error {
				consumed, err := s.Transition(ctx, parent.ID, []baton.Token{child})
				if err == nil && !consumed {
					err = fmt.Errorf("token %s was not live", parent.ID)
				}
				return err
			})
			rawUpdate := newChains(b, workers, rawStart, rawStep(raw.Update))
			rawBatch := newChains(b, workers, rawStart, rawStep(raw.Batch))
			b.ResetTimer()
			const rounds = 10
			for r := range rounds {
				n := b.N/rounds + boolInt(r < b.N%rounds)
				protocol.run(ctx, b, n)
				rawUpdate.run(ctx, b, n)
				rawBatch.run(ctx, b, n)
			}
			b.StopTimer()
			b.ReportMetric(protocol.rate(), "protocol-ops/s")
			b.ReportMetric(rawUpdate.rate(), "raw-update-ops/s")
			b.ReportMetric(rawBatch.rate(), "raw-batch-ops/s")
			b.ReportMetric(protocol.rate()/rawUpdate.rate(), "protocol/raw-update")
			b.ReportMetric(protocol.rate()/rawBatch.rate(), "protocol/raw-batch")
		})
	}
}

// chains are one chain parent -> child -> ... per worker, advanced by step.
type chains struct {
	step    func(ctx context.Context, parent, child baton.Token) error
	heads   []baton.Token
	steps   int
	elapsed time.Duration
}

// newChains starts one chain per worker with a root that start stores.
func newChains(b *testing.B, workers int, start func(ctx context.Context, root baton.Token) (baton.Token, error), step func(ctx context.Context, parent, child baton.Token) error) *chains {
	c := &chains{step: step, heads: make([]baton.Token, workers)}
	for w := range c.heads {
		var err error
		root := benchToken(baton.NewTokenID(), baton.TokenID{}, "bench")
		root.ID = baton.TokenID{}
		if c.heads[w], err = start(b.Context(), root); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

// run advances the chains by n steps in all, split over the workers, and
// adds the time they took.
func (c *chains) run(ctx context.Context, b *testing.B, n int) {
	var wg sync.WaitGroup
	began := time.Now()
	for w := range c.heads {
		share := n/len(c.heads) + boolInt(w < n%len(c.heads))
		wg.Go(func() {
			for range share {
				child := benchToken(c.heads[w].Conversation, c.heads[w].ID, "bench")
				if err := c.step(ctx, c.heads[w], child); err != nil {
					b.Error(err)
					return
				}
				c.heads[w] = child
			}
		})
	}
	wg.Wait()
	c.elapsed += time.Since(began)
	c.steps += n
}

// rate returns steps per second.
func (c *chains) rate() float64 { return float64(c.steps) / c.elapsed.Seconds() }

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}
