package engine

import (
	"context"
	"errors"
	"slices"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/transport"
)

// ProcessBatch processes several signals and returns, for each, what
// Process would have returned for it. With Config.Batch above 1 and a
// store.TransitionBatcher on the fast path, the signals share one read of
// their entities and tokens (steps 1 and 3) and one commit (steps 4 and 5,
// group commit, protocol.md 3.2) in which each entity's commit is applied
// or refused on its own. Signals for one entity make a chain: their
// activities run one after another, each on the state the one before left,
// and the entity is committed once with all their tokens consumed, or not
// at all. A signal that needs more than that (its activity was committed
// before, its entity's commit was refused or failed) goes through Process,
// as does every signal otherwise.
func (e *Engine) ProcessBatch(ctx context.Context, sigs []baton.Signal) ([]Result, []error) {
	results, errs := make([]Result, len(sigs)), make([]error, len(sigs))
	for _, i := range e.processTogether(ctx, sigs, results, errs) {
		results[i], errs[i] = e.Process(ctx, sigs[i])
	}
	return results, errs
}

// batchItem is one signal of a batch on its way through steps 1 to 7.
type batchItem struct {
	i    int // index in the batch
	sig  baton.Signal
	h    handler
	key  string
	ctx  context.Context // carries the signal's span
	span trace.Span
	out  store.OutboxEntry
}

// applied is the result of the item's activity, committed.
func (it *batchItem) applied() Result {
	return Result{Outcome: Applied, Reply: it.out.Reply, Emitted: it.out.Signals}
}

// chain is the signals of a batch for one entity whose activities ran, in
// order, each on the state the one before left.
type chain struct {
	entity  store.Entity // the state after the last of members
	members []*batchItem
	create  []baton.Token // the children of all members
}

// transition is the chain's steps 4 and 5 (store.Transition.Then).
func (c *chain) transition() store.Transition {
	then := make([]baton.TokenID, len(c.members)-1)
	for i, it := range c.members[1:] {
		then[i] = it.sig.ID
	}
	return store.Transition{Entity: c.entity, Token: c.members[0].sig.ID, Then: then, Create: c.create}
}

// processTogether does what ProcessBatch promises for the signals of sigs
// that it can take together, and records their outcomes. It returns the
// indexes of those left for Process.
func (e *Engine) processTogether(ctx context.Context, sigs []baton.Signal, results []Result, errs []error) (alone []int) {
	if e.batcher == nil || len(sigs) < 2 || e.ordering != orderingCorrect {
		return allIndexes(len(sigs))
	}
	items, alone := e.pickBatch(sigs)
	if len(items) < 2 {
		return allIndexes(len(sigs))
	}
	done := func(it *batchItem, res Result, err error) {
		results[it.i], errs[it.i] = res, err
		it.span.SetAttributes(attribute.String("baton.outcome", res.Outcome.String()))
		endSpan(it.span, err)
	}
	giveUp := func(its ...*batchItem) {
		for _, it := range its {
			it.span.End()
			alone = append(alone, it.i)
		}
	}
	for i := range items {
		items[i].ctx, items[i].span = e.startSpan(ctx, "process", items[i].sig)
	}

	// Steps 1 and 3 for all, at one instant.
	reads := make([]store.TokenRead, len(items))
	for i, it := range items {
		reads[i] = store.TokenRead{Key: it.key, Token: it.sig.ID}
	}
	loaded, err := e.loadWithTokens(ctx, reads)
	if err != nil {
		e.log.Info("batch load failed; processing the signals one by one", "signals", len(items), "err", err)
		for i := range items {
			giveUp(&items[i])
		}
		return alone
	}

	// Step 2, 3 and 4 up to the commit, for each, in its entity's chain.
	byKey := make(map[string]*chain)
	var chains []*chain
	for j := range items {
		it, l := &items[j], loaded[j]
		c := byKey[it.key]
		if c == nil {
			c = &chain{entity: l.Entity}
			byKey[it.key] = c
			chains = append(chains, c)
		}
		if _, ok := l.Entity.Entry(it.sig.ID); ok {
			giveUp(it) // committed before: Process finishes it
			continue
		}
		if !l.Live {
			done(it, e.duplicate(it.ctx, it.sig), nil)
			continue
		}
		if err := e.admit(l.Token, it.sig); err != nil {
			done(it, Result{}, err)
			continue
		}
		next, out, err := e.runActivity(it.ctx, it.h, nil, it.sig, c.entity, true)
		if err != nil {
			done(it, Result{}, err)
			continue
		}
		children := childTokens(out)
		if len(c.create)+len(children) > store.MaxTokensPerTransition {
			giveUp(it) // too many children for one transition: alone after the chain
			continue
		}
		it.out = out
		c.entity, c.members, c.create = next, append(c.members, it), append(c.create, children...)
	}
	chains = slices.DeleteFunc(chains, func(c *chain) bool { return len(c.members) == 0 })
	if len(chains) == 0 {
		return alone
	}

	// Steps 4 and 5 for all, in one commit.
	transitions := make([]store.Transition, len(chains))
	for i, c := range chains {
		transitions[i] = c.transition()
	}
	refused, err := e.commitTransitions(ctx, transitions)
	if err != nil {
		// Nothing applied, or outcome unknown: Process finds the outbox
		// entry of a signal whose commit happened (step 2), and runs the
		// activity of one whose commit did not.
		e.log.Info("batch commit failed; processing the signals one by one", "signals", len(items), "err", err)
		for _, c := range chains {
			giveUp(c.members...)
		}
		return alone
	}
	var committed []*chain
	for i, c := range chains {
		switch {
		case refused[i] == nil:
			c.entity.Version++
			for _, it := range c.members {
				e.transitioned(it.ctx, it.out)
				e.applied(it.ctx, it.sig, c.entity, it.out)
			}
			committed = append(committed, c)
		case errors.Is(refused[i], store.ErrNotFound) && len(c.members) == 1:
			// The token was consumed after the read: nothing committed.
			done(c.members[0], e.duplicate(c.members[0].ctx, c.members[0].sig), nil)
		default:
			// A conflict, or a token of the chain consumed after the read
			// (which one, Process finds out): Process runs each activity
			// again on fresh state.
			if errors.Is(refused[i], store.ErrConflict) {
				e.stats.add(ctx, statConflicts, 1)
			}
			giveUp(c.members...)
		}
	}

	applied := 0
	for _, c := range committed {
		applied += len(c.members)
	}
	if applied > 0 {
		e.stats.add(ctx, statBatches, 1)
		e.stats.add(ctx, statBatched, int64(applied))
	}

	// Step 6 for all, pipelined where Dispatch can, then step 7 for each
	// whose signals all went, in one removal per entity.
	var emitted []baton.Signal
	for _, c := range committed {
		for _, it := range c.members {
			emitted = append(emitted, it.out.Signals...)
		}
	}
	failed := e.dispatchAll(ctx, emitted)
	for _, c := range committed {
		var finished []*batchItem
		var entries []store.OutboxEntry
		for _, it := range c.members {
			if err := dispatchFailure(failed, it.out); err != nil {
				done(it, it.applied(), err)
				continue
			}
			finished, entries = append(finished, it), append(entries, it.out)
		}
		err := e.removeFinished(ctx, c.entity, e.cfg.DeferRemovals, entries...)
		for _, it := range finished {
			done(it, it.applied(), err)
		}
	}
	return alone
}

// dispatchFailure returns the error of the first of entry's signals that
// dispatchAll could not dispatch, or nil.
func dispatchFailure(failed map[baton.TokenID]error, entry store.OutboxEntry) error {
	for _, sig := range entry.Signals {
		if err := failed[sig.ID]; err != nil {
			return err
		}
	}
	return nil
}

// pickBatch routes the signals and returns those that can share a batch
// (valid, routed, each to an entity and with a token no other of the batch
// has), in order, and the indexes of those that must go alone. Signals for
// one entity are all picked: they make a chain.
func (e *Engine) pickBatch(sigs []baton.Signal) (items []batchItem, alone []int) {
	tokens := make(map[baton.TokenID]bool, len(sigs))
	for i, sig := range sigs {
		if sig.Validate() != nil || sig.Destination != e.cfg.Destination || tokens[sig.ID] {
			alone = append(alone, i) // Process refuses or drops it
			continue
		}
		h, key, err := e.route(sig)
		// A TxActivity commits in a transaction of its own (TxActivity).
		if err != nil || h.commitTx != nil {
			alone = append(alone, i)
			continue
		}
		tokens[sig.ID] = true
		items = append(items, batchItem{i: i, sig: sig, h: h, key: key})
	}
	return items, alone
}

func allIndexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// dispatchAll is step 6 for the signals of a batch: with a Dispatch that
// is a transport.BatchPublisher, one pipelined publish of all, then the
// usual retries of those that failed; else one dispatch after another. It
// returns the error of each signal that could not be dispatched.
func (e *Engine) dispatchAll(ctx context.Context, sigs []baton.Signal) map[baton.TokenID]error {
	failed := make(map[baton.TokenID]error)
	bp, ok := e.cfg.Dispatch.(transport.BatchPublisher)
	if !ok || len(sigs) < 2 {
		for _, sig := range sigs {
			if err := e.dispatch(ctx, sig); err != nil {
				failed[sig.ID] = err
			}
		}
		return failed
	}
	bctx, cancel := e.bounded(ctx)
	errs := bp.PublishBatch(bctx, sigs)
	cancel()
	for i, sig := range sigs {
		if errs[i] == nil {
			e.stats.add(ctx, statDispatched, 1)
			continue
		}
		e.stats.add(ctx, statDispatchRetries, 1)
		if err := e.dispatch(ctx, sig); err != nil {
			failed[sig.ID] = err
		}
	}
	return failed
}
