package embedded

import (
	"context"
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
