package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// Deferred outbox removal (Config.DeferRemovals). Removing an entry is a
// commit of its entity: on the critical path it costs every signal one
// more round trip and one more commit. Deferred, the removals of many
// signals share one operation. Only the timing moves: the entry is still
// removed after its transition and dispatch (steps 5 and 6), so a copy that
// arrives meanwhile finds the entry and finishes it again, harmlessly.

const (
	// maxPendingRemovals bounds the queue; when it is full, Process removes
	// inline, so a remover that falls behind slows signals down instead of
	// holding unbounded memory.
	maxPendingRemovals = 4096
	// removalBatch is how many queued removals one RemovePending call
	// takes.
	removalBatch = 256
	// removalGather is how long Run's remover lets removals queue up
	// before it runs them: a batch of one saves nothing. The entries live
	// that much longer; nothing waits on them.
	removalGather = 10 * time.Millisecond
)

type removal struct {
	ent   store.Entity // as committed with the entry
	token baton.TokenID
}

type removalQueue struct {
	mu      sync.Mutex
	pending []removal
	wake    chan struct{} // signalled when the queue becomes non-empty
}

func newRemovalQueue() *removalQueue { return &removalQueue{wake: make(chan struct{}, 1)} }

// add queues r, or reports false when the queue is full.
func (q *removalQueue) add(r removal) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) >= maxPendingRemovals {
		return false
	}
	q.pending = append(q.pending, r)
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

func (q *removalQueue) take(n int) []removal {
	q.mu.Lock()
	defer q.mu.Unlock()
	n = min(n, len(q.pending))
	out := slices.Clone(q.pending[:n])
	q.pending = slices.Delete(q.pending, 0, n)
	return out
}

func (q *removalQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// RemovePending removes up to one batch of the outbox entries whose removal
// Process deferred (Config.DeferRemovals) and returns how many it removed.
// Run calls it continuously; call it yourself only if you process signals
// without Run. Entries it cannot remove stay in their entities for the
// sweeper, and the first error is returned.
func (e *Engine) RemovePending(ctx context.Context) (int, error) {
	batch := e.removals.take(removalBatch)
	if len(batch) == 0 {
		return 0, nil
	}
	// One commit per entity: its newest snapshot without all its queued
	// entries. A newer snapshot holds every entry an older one held unless
	// it was removed already.
	merged := map[string]store.Entity{}
	tokens := map[string][]baton.TokenID{}
	var keys []string
	for _, r := range batch {
		cur, seen := merged[r.ent.Key]
		if !seen {
			keys = append(keys, r.ent.Key)
		}
		if !seen || r.ent.Version > cur.Version {
			merged[r.ent.Key] = r.ent
		}
		if !slices.Contains(tokens[r.ent.Key], r.token) { // a copy may queue it again
			tokens[r.ent.Key] = append(tokens[r.ent.Key], r.token)
		}
	}
	entities := make([]store.Entity, len(keys))
	for i, key := range keys {
		ent := merged[key]
		for _, t := range tokens[key] {
			ent = ent.WithoutEntry(t)
		}
		entities[i] = ent
	}

	results := make([]error, len(entities))
	if bc, ok := e.cfg.Entities.(store.BatchCommitter); ok {
		var err error
		if results, err = e.commitBatch(ctx, bc, entities); err != nil {
			// Each commit's outcome is unknown or nothing applied: remove
			// one by one, which copes with either.
			results = slices.Repeat([]error{store.ErrConflict}, len(entities))
		}
	} else {
		for i, ent := range entities {
			_, results[i] = e.commitEntity(ctx, ent)
		}
	}

	removed := 0
	var errs []error
	for i, key := range keys {
		if results[i] == nil {
			removed += e.removed(ctx, merged[key], tokens[key])
			continue
		}
		// Conflicts (and failed batches): reload and remove the entries.
		ent, err := e.load(ctx, key)
		if err == nil {
			var n int
			n, err = e.removeEntries(ctx, ent, tokens[key]...)
			removed += n
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("engine: deferred removal from %q: %w", key, err))
		}
	}
	return removed, errors.Join(errs...)
}

// removed counts and observes the entries of tokens that a batch commit
// removed from the snapshot ent.
func (e *Engine) removed(ctx context.Context, ent store.Entity, tokens []baton.TokenID) int {
	n := 0
	for _, t := range tokens {
		if entry, ok := ent.Entry(t); ok {
			n++
			e.entryRemoved(ctx, entry)
		}
	}
	return n
}

// removeLoop drains the queue while Run runs, then once more after the
// workers stopped, so a clean shutdown leaves no entry behind.
func (e *Engine) removeLoop(work context.Context, workersDone <-chan struct{}) {
	drain := func() {
		for e.removals.len() > 0 && work.Err() == nil {
			if n, err := e.RemovePending(work); err != nil {
				e.log.Warn("deferred outbox removal failed; the sweeper finishes those entries", "err", err, "removed", n)
			}
		}
	}
	for {
		select {
		case <-e.removals.wake:
			select { // gather a batch, unless shutting down
			case <-time.After(removalGather):
			case <-workersDone:
			}
			drain()
		case <-workersDone:
			drain()
			return
		}
	}
}
