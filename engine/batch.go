package engine

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/transport"
)

// ProcessBatch processes several signals and returns, for each, what
// Process would have returned for it. With Config.Batch above 1 and a
// store.TransitionBatcher on the fast path, the signals for distinct
// entities share one read of their entities and tokens (steps 1 and 3) and
// one commit (steps 4 and 5, each signal's applied or refused on its own,
// group commit, protocol.md 3.2). A signal that needs more than that (its
// activity was committed before, its entity is taken by another signal of
// the batch, its commit was refused or failed) goes through Process, as
// does every signal otherwise.
func (e *Engine) ProcessBatch(ctx context.Context, sigs []baton.Signal) ([]Result, []error) {
	results, errs := make([]Result, len(sigs)), make([]error, len(sigs))
	var alone []int
	for pending := allIndexes(len(sigs)); len(pending) > 0; {
		var a []int
		a, pending = e.processTogether(ctx, sigs, pending, results, errs)
		alone = append(alone, a...)
	}
	for _, i := range alone {
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
	next store.Entity
	out  store.OutboxEntry
}

// processTogether does what ProcessBatch promises for the signals of sigs
// at the indexes pending that it can take together, and records their
// outcomes. It returns the indexes of those left for Process, and of those
// for the next round: signals for an entity that another signal of this
// round took, which the next round reads as this one left it (so that
// signals for one entity share batches one after the other instead of
// each going alone).
func (e *Engine) processTogether(ctx context.Context, sigs []baton.Signal, pending []int, results []Result, errs []error) (alone, later []int) {
	if e.batcher == nil || len(pending) < 2 || e.ordering != orderingCorrect {
		return pending, nil
	}
	items, alone, later := e.pickBatch(sigs, pending)
	if len(items) < 2 {
		return pending, nil
	}
	done := func(it *batchItem, res Result, err error) {
		results[it.i], errs[it.i] = res, err
		it.span.SetAttributes(attribute.String("baton.outcome", res.Outcome.String()))
		endSpan(it.span, err)
	}
	giveUp := func(it *batchItem) {
		it.span.End()
		alone = append(alone, it.i)
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
		return alone, later
	}

	// Step 2, 3 and 4 up to the commit, for each.
	var ready []*batchItem
	for j := range items {
		it, l := &items[j], loaded[j]
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
		if it.next, it.out, err = e.runActivity(it.ctx, it.h, nil, it.sig, l.Entity, true); err != nil {
			done(it, Result{}, err)
			continue
		}
		ready = append(ready, it)
	}
	if len(ready) == 0 {
		return alone, later
	}

	// Steps 4 and 5 for all, in one commit.
	transitions := make([]store.Transition, len(ready))
	for i, it := range ready {
		transitions[i] = store.Transition{Entity: it.next, Token: it.sig.ID, Create: childTokens(it.out)}
	}
	refused, err := e.commitTransitions(ctx, transitions)
	if err != nil {
		// Nothing applied, or outcome unknown: Process finds the outbox
		// entry of a signal whose commit happened (step 2), and runs the
		// activity of one whose commit did not.
		e.log.Info("batch commit failed; processing the signals one by one", "signals", len(ready), "err", err)
		for _, it := range ready {
			giveUp(it)
		}
		return alone, later
	}
	var committed []*batchItem
	for i, it := range ready {
		switch {
		case refused[i] == nil:
			it.next.Version++
			e.transitioned(it.ctx, it.out)
			e.applied(it.ctx, it.sig, it.next, it.out)
			committed = append(committed, it)
		case errors.Is(refused[i], store.ErrNotFound):
			// The token was consumed after the read: nothing committed.
			done(it, e.duplicate(it.ctx, it.sig), nil)
		default:
			if errors.Is(refused[i], store.ErrConflict) {
				e.stats.add(ctx, statConflicts, 1)
			}
			giveUp(it) // Process runs the activity again on fresh state
		}
	}

	if len(committed) > 0 {
		e.stats.add(ctx, statBatches, 1)
		e.stats.add(ctx, statBatched, int64(len(committed)))
	}

	// Step 6 for all, pipelined where Dispatch can, then step 7 for each
	// whose signals all went.
	var emitted []baton.Signal
	for _, it := range committed {
		emitted = append(emitted, it.out.Signals...)
	}
	failed := e.dispatchAll(ctx, emitted)
	for _, it := range committed {
		res := Result{Outcome: Applied, Reply: it.out.Reply, Emitted: it.out.Signals}
		var err error
		for _, sig := range it.out.Signals {
			if err = failed[sig.ID]; err != nil {
				break
			}
		}
		if err == nil {
			err = e.removeFinished(it.ctx, it.next, it.out, e.cfg.DeferRemovals)
		}
		done(it, res, err)
	}
	return alone, later
}

// pickBatch routes the signals at the indexes pending and returns those
// that can share a batch (valid, routed, each to an entity and with a token
// no other of the batch has), the indexes of those that must go alone, and
// of those whose entity another signal of the batch took (for a later
// round).
func (e *Engine) pickBatch(sigs []baton.Signal, pending []int) (items []batchItem, alone, later []int) {
	keys := make(map[string]bool, len(pending))
	tokens := make(map[baton.TokenID]bool, len(pending))
	for _, i := range pending {
		sig := sigs[i]
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
		if keys[key] {
			later = append(later, i)
			continue
		}
		keys[key], tokens[sig.ID] = true, true
		items = append(items, batchItem{i: i, sig: sig, h: h, key: key})
	}
	return items, alone, later
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
