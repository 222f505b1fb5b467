package engine

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/batonhq/baton/store"
)

// sweepBatch bounds the entities one Sweep looks at, so a backlog is worked
// off in steps rather than in one long call.
const sweepBatch = 100

// Sweep finishes outbox entries older than SweepAfter that nobody is
// driving (steps 5 to 7), because an HTTP caller may give up and a signal may
// never be redelivered, and deletes unused root tokens whose expiry passed
// more than RootExpiryGrace ago. It reports how many entries it finished.
func (e *Engine) Sweep(ctx context.Context) (int, error) {
	now := e.cfg.Now()
	cutoff := now.Add(-e.cfg.SweepAfter)
	keys, err := e.stale(ctx, cutoff)
	if err != nil {
		return 0, fmt.Errorf("engine: sweep: %w", err)
	}
	finished := 0
	for _, key := range keys {
		n, err := e.sweepEntity(ctx, key, cutoff)
		finished += n
		if err != nil {
			return finished, err
		}
	}
	expired, err := e.expireRoots(ctx, now.Add(-e.cfg.RootExpiryGrace))
	e.stats.add(ctx, statRootsExpired, int64(expired))
	if err != nil {
		return finished, fmt.Errorf("engine: expire roots: %w", err)
	}
	return finished, nil
}

// sweepEntity finishes the entity's entries created before cutoff, one at a
// time, reloading after each because finishing one changes the entity.
func (e *Engine) sweepEntity(ctx context.Context, key string, cutoff time.Time) (int, error) {
	finished := 0
	for {
		ent, err := e.load(ctx, key)
		if err != nil {
			return finished, fmt.Errorf("engine: sweep: load %q: %w", key, err)
		}
		i := slices.IndexFunc(ent.Outbox, func(entry store.OutboxEntry) bool { return entry.CreatedAt.Before(cutoff) })
		if i < 0 {
			return finished, nil
		}
		entry := ent.Outbox[i]
		if _, err := e.finish(ctx, ent, entry, false); err != nil {
			return finished, fmt.Errorf("engine: sweep %q: %w", key, err)
		}
		finished++
		e.stats.add(ctx, statSwept, 1)
		e.log.Info("sweeper finished an outbox entry", "entity", key, "token", entry.Token, "conversation", conversationOf(entry))
	}
}

func conversationOf(entry store.OutboxEntry) any {
	if len(entry.Signals) == 0 {
		return nil
	}
	return entry.Signals[0].Conversation
}
