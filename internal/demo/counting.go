package demo

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// tokenCounts are counted where every system's token operations meet: at
// the token service, in the demo's own process, which chaos never kills.
// So, unlike the systems' own counters, they lose nothing to a SIGKILL,
// and they are the dashboard's and the report's numbers for what they
// count.
type tokenCounts struct {
	live        atomic.Int64 // live tokens, from every write
	peak        atomic.Int64 // the larger of the sampled and the counted peak
	roots       atomic.Int64 // roots issued
	transitions atomic.Int64 // transitions that consumed their token: one per applied activity
	alreadyDone atomic.Int64 // transitions that found their token consumed
	duplicates  atomic.Int64 // reads of a token that was consumed: a copy dropped as a duplicate
	expired     atomic.Int64 // unused roots deleted after expiry
}

// countingTokens counts every operation of the token service in
// tokenCounts. Live tokens are counted from every write, so the report's
// peak sees tokens that live for a few milliseconds, far shorter than the
// sampler's period (which alone reported a peak of 0 on short runs).
// Concurrent writes may be counted in another order than the store
// applied them, so the peak can overstate by the writes in flight at that
// moment: the cautious side for a comparison with a processed-message
// table. Failed operations are not counted.
type countingTokens struct {
	store.TokenStore
	counts *tokenCounts
}

func (c *countingTokens) add(n int64) {
	raisePeak(&c.counts.peak, c.counts.live.Add(n))
}

// raisePeak sets peak to v if v is larger.
func raisePeak(peak *atomic.Int64, v int64) {
	for {
		old := peak.Load()
		if v <= old || peak.CompareAndSwap(old, v) {
			return
		}
	}
}

func (c *countingTokens) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	tok, err := c.TokenStore.Issue(ctx, root)
	if err == nil {
		c.add(1)
		c.counts.roots.Add(1)
	}
	return tok, err
}

func (c *countingTokens) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	consumed, err := c.TokenStore.Transition(ctx, consume, create)
	switch {
	case err != nil:
	case consumed:
		c.add(int64(len(create)) - 1)
		c.counts.transitions.Add(1)
	default:
		c.counts.alreadyDone.Add(1)
	}
	return consumed, err
}

// Get is step 3 of a system's processing: a token that is not live means
// the signal is a duplicate, which the system drops.
func (c *countingTokens) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	tok, err := c.TokenStore.Get(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		c.counts.duplicates.Add(1)
	}
	return tok, err
}

// ClaimRoot that finds the root gone drops the signal as a duplicate too.
func (c *countingTokens) ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	tok, err := c.TokenStore.ClaimRoot(ctx, id, now)
	if errors.Is(err, store.ErrNotFound) {
		c.counts.duplicates.Add(1)
	}
	return tok, err
}

func (c *countingTokens) ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	n, err := c.TokenStore.ExpireRoots(ctx, before, limit)
	if n > 0 {
		c.add(-int64(n))
		c.counts.expired.Add(int64(n))
	}
	return n, err
}
