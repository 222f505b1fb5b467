package demo

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// countingTokens keeps a running count of live tokens from every write the
// token service makes, so the report's peak sees tokens that live for a
// few milliseconds, far shorter than the sampler's period (which alone
// reported a peak of 0 on short runs). Concurrent writes may be counted in
// another order than the store applied them, so the peak can overstate by
// the writes in flight at that moment: the cautious side for a comparison
// with a processed-message table. Writes that fail are not counted.
type countingTokens struct {
	store.TokenStore
	live *atomic.Int64
	peak *atomic.Int64
}

func (c *countingTokens) add(n int64) {
	raisePeak(c.peak, c.live.Add(n))
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
	}
	return tok, err
}

func (c *countingTokens) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	consumed, err := c.TokenStore.Transition(ctx, consume, create)
	if err == nil && consumed {
		c.add(int64(len(create)) - 1)
	}
	return consumed, err
}

func (c *countingTokens) ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	n, err := c.TokenStore.ExpireRoots(ctx, before, limit)
	if n > 0 {
		c.add(-int64(n))
	}
	return n, err
}
