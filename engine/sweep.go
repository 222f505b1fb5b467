package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// sweepBatch bounds the entities one Sweep looks at, so a backlog is worked
// off in steps rather than in one long call.
const sweepBatch = 100

// Sweep finishes outbox entries older than SweepAfter that nobody is
// driving (steps 5 to 7), because an HTTP caller may give up and a signal may
// never be redelivered, launches the starts older than SweepAfter that
// nobody launched (StartTx), and deletes unused root tokens whose expiry
// passed more than RootExpiryGrace ago (unless the token store refuses
// this system that deletion, store.ErrForbidden: the token service leaves it
// to a system with expire_roots). It reports how many entries and starts it
// finished.
func (e *Engine) Sweep(ctx context.Context) (int, error) {
	now := e.cfg.Now()
	cutoff := now.Add(-e.cfg.SweepAfter)
	keys, err := e.stale(ctx, cutoff)
	if err != nil {
		return 0, fmt.Errorf("engine: sweep: %w", err)
	}
	// An entry that cannot be finished (its receiver rejects it, say) must
	// not keep the sweeper from the other entities: go on and report every
	// failure at the end.
	finished := 0
	var errs []error
	for _, key := range keys {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		n, err := e.sweepEntity(ctx, key, cutoff)
		finished += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	launched, err := e.sweepStarts(ctx, cutoff)
	finished += launched
	if err != nil {
		errs = append(errs, err)
	}
	expired, err := e.expireRoots(ctx, now.Add(-e.cfg.RootExpiryGrace))
	e.stats.add(ctx, statRootsExpired, int64(expired))
	switch {
	case errors.Is(err, store.ErrForbidden):
		// The token service leaves expired roots to a system trusted
		// with them (expire_roots): not this one's failure.
		e.expiryForbidden.Do(func() {
			e.log.Info("the token store leaves expired roots to another system; this sweeper does not delete them", "err", err)
		})
	case err != nil:
		errs = append(errs, fmt.Errorf("engine: expire roots: %w", err))
	}
	return finished, errors.Join(errs...)
}

// sweepEntity finishes the entity's entries created before cutoff, one at a
// time, reloading after each because finishing one changes the entity. An
// entry that fails is skipped for this sweep, so it does not block the
// entity's other entries.
func (e *Engine) sweepEntity(ctx context.Context, key string, cutoff time.Time) (int, error) {
	finished := 0
	failed := map[baton.TokenID]bool{}
	var errs []error
	for {
		ent, err := e.load(ctx, key)
		if err != nil {
			errs = append(errs, fmt.Errorf("engine: sweep: load %q: %w", key, err))
			return finished, errors.Join(errs...)
		}
		i := slices.IndexFunc(ent.Outbox, func(entry store.OutboxEntry) bool {
			return entry.CreatedAt.Before(cutoff) && !failed[entry.Token]
		})
		if i < 0 {
			return finished, errors.Join(errs...)
		}
		entry := ent.Outbox[i]
		// Inline removal: the loop reloads and must not find the entry again.
		if _, err := e.finish(ctx, ent, entry, false, false); err != nil {
			failed[entry.Token] = true
			errs = append(errs, fmt.Errorf("engine: sweep %q: %w", key, err))
			if ctx.Err() != nil {
				return finished, errors.Join(errs...)
			}
			continue
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
