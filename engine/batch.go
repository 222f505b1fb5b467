package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/transport"
)

// ProcessBatch processes several signals and returns, for each, what
// Process would have returned for it. With Config.Batch above 1 and stores
// that work in batches, the signals share their reads and their commits,
// in which each entity's commit is applied or refused on its own (group
// commit, protocol.md 3.2): on the fast path (store.TransitionBatcher) one
// read of their entities and tokens (steps 1 and 3) and one commit (steps
// 4 and 5); on the plain path (store.BatchLoader and store.BatchCommitter
// for the entities, store.TokenBatcher for the tokens) one read of the
// entities, then one of the tokens, one commit of the entities and one
// call for the transitions. Signals for one entity make a chain: their
// activities run one after another, each on the state the one before
// left, and the entity is committed once with all their outbox entries, or
// not at all. A signal that needs more than that (its activity was
// committed before, its entity's commit was refused or failed, its root
// expires) goes through Process, as does every signal otherwise.
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

// batchRun records the outcomes of one batch's signals: those it finished
// in results and errs, those it leaves for Process in alone.
type batchRun struct {
	e       *Engine
	results []Result
	errs    []error
	alone   []int
}

func (b *batchRun) done(it *batchItem, res Result, err error) {
	b.results[it.i], b.errs[it.i] = res, err
	it.span.SetAttributes(attribute.String("baton.outcome", res.Outcome.String()))
	endSpan(it.span, err)
}

func (b *batchRun) giveUp(its ...*batchItem) {
	for _, it := range its {
		it.span.End()
		b.alone = append(b.alone, it.i)
	}
}

// processTogether does what ProcessBatch promises for the signals of sigs
// that it can take together, and records their outcomes. It returns the
// indexes of those left for Process.
func (e *Engine) processTogether(ctx context.Context, sigs []baton.Signal, results []Result, errs []error) (alone []int) {
	if (e.batcher == nil && e.plain == nil) || len(sigs) < 2 || !e.ordering.batches() {
		return allIndexes(len(sigs))
	}
	items, alone := e.pickBatch(sigs)
	if len(items) < 2 {
		return allIndexes(len(sigs))
	}
	b := &batchRun{e: e, results: results, errs: errs, alone: alone}
	for i := range items {
		items[i].ctx, items[i].span = e.startSpan(ctx, "process", items[i].sig)
	}
	if e.batcher != nil {
		b.fast(ctx, items)
	} else {
		b.plainPath(ctx, items)
	}
	return b.alone
}

// fast runs the items on the fast path: steps 1 and 3 in one read, 4 and
// 5 in one commit.
func (b *batchRun) fast(ctx context.Context, items []batchItem) {
	e := b.e
	reads := make([]store.TokenRead, len(items))
	for i, it := range items {
		reads[i] = store.TokenRead{Key: it.key, Token: it.sig.ID}
	}
	loaded, err := e.loadWithTokens(ctx, reads)
	if err != nil {
		e.log.Info("batch load failed; processing the signals one by one", "signals", len(items), "err", err)
		b.giveUpAll(items)
		return
	}
	chains := b.runChains(items, loaded, true)
	if len(chains) == 0 {
		return
	}

	// Steps 4 and 5 for all, in one commit.
	transitions := make([]store.Transition, len(chains))
	for i, c := range chains {
		transitions[i] = c.transition()
	}
	refused, err := e.commitTransitions(ctx, transitions)
	if err != nil {
		b.commitFailed(chains, len(items), err)
		return
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
			b.done(c.members[0], e.duplicate(c.members[0].ctx, c.members[0].sig), nil)
		default:
			// A conflict, or a token of the chain consumed after the read
			// (which one, Process finds out): Process runs each activity
			// again on fresh state.
			b.refused(ctx, c, refused[i])
		}
	}
	b.countBatch(ctx, committed)
	b.dispatchAndRemove(ctx, committed)
}

// plainPath runs the items on the plain path, where the tokens are in
// another store than the entities: every entity is read before any token
// (step 1 before step 3, as Process does for one signal), and every
// entity is committed before any of the transitions (step 4 before 5).
func (b *batchRun) plainPath(ctx context.Context, items []batchItem) {
	e := b.e
	read, loaded := b.plainReads(ctx, items)
	chains := b.runChains(read, loaded, false)
	if len(chains) == 0 {
		return
	}
	if e.ordering == orderingBatchTransitionBeforeCommit {
		_, _, _ = e.transitionBatch(ctx, tokenTransitions(chains))
	}

	// Step 4 for all, in one commit.
	next := make([]store.Entity, len(chains))
	for i, c := range chains {
		next[i] = c.entity
	}
	refused, err := e.commitEntities(ctx, next)
	if err != nil {
		b.commitFailed(chains, len(read), err)
		return
	}
	var committed []*chain
	for i, c := range chains {
		if refused[i] != nil {
			b.refused(ctx, c, refused[i])
			continue
		}
		c.entity.Version++
		for _, it := range c.members {
			e.applied(it.ctx, it.sig, c.entity, it.out)
		}
		committed = append(committed, c)
	}
	if len(committed) == 0 {
		return
	}
	b.countBatch(ctx, committed)

	// Step 5 for all, in one call. A member whose transition failed keeps
	// its entry: a redelivery (or the sweeper) finishes it.
	consumed, transitionErrs, err := e.transitionBatch(ctx, tokenTransitions(committed))
	n := 0
	for _, c := range committed {
		members := c.members[:0]
		for _, it := range c.members {
			k := n
			n++
			terr := err
			if terr == nil {
				terr = transitionErrs[k]
			}
			switch {
			case terr != nil:
				b.done(it, it.applied(), fmt.Errorf("engine: transition: %w", terr))
				continue
			case consumed[k]:
				e.transitioned(it.ctx, it.out)
			default:
				e.stats.add(ctx, statTransitionsDone, 1) // another worker finished the entry
			}
			members = append(members, it)
		}
		c.members = members
	}
	b.dispatchAndRemove(ctx, committed)
}

// plainReads is steps 1 to 3 of the plain path for the items: the
// entities in one read, then the tokens of those whose activity was not
// committed before in another. It returns the items read, with what was
// read for each, and leaves the others to Process.
func (b *batchRun) plainReads(ctx context.Context, items []batchItem) ([]batchItem, []store.Loaded) {
	e := b.e
	var early map[baton.TokenID]tokenRead
	if e.ordering == orderingBatchTokenBeforeEntity {
		reads, err := b.readTokens(ctx, items)
		if err != nil {
			b.giveUpAll(items)
			return nil, nil
		}
		early = make(map[baton.TokenID]tokenRead)
		for i, it := range items {
			early[it.sig.ID] = reads[i]
		}
	}
	keys := make([]string, len(items))
	for i, it := range items {
		keys[i] = it.key
	}
	entities, err := e.loadBatch(ctx, keys)
	if err != nil {
		e.log.Info("batch load failed; processing the signals one by one", "signals", len(items), "err", err)
		b.giveUpAll(items)
		return nil, nil
	}
	// Step 2 is Process's: a signal whose activity was committed before
	// is finished there. The others' tokens are read, after every entity.
	var fresh []batchItem
	for j := range items {
		if _, ok := entities[j].Entry(items[j].sig.ID); ok {
			b.giveUp(&items[j])
			continue
		}
		fresh = append(fresh, items[j])
		entities[len(fresh)-1] = entities[j]
	}
	if len(fresh) == 0 {
		return nil, nil
	}
	var tokens []tokenRead
	if early != nil {
		for _, it := range fresh {
			tokens = append(tokens, early[it.sig.ID])
		}
	} else if tokens, err = b.readTokens(ctx, fresh); err != nil {
		e.log.Info("batch token read failed; processing the signals one by one", "signals", len(fresh), "err", err)
		b.giveUpAll(fresh)
		return nil, nil
	}
	var read []batchItem
	var loaded []store.Loaded
	for j, t := range tokens {
		switch {
		case t.err == nil && !t.token.ExpiresAt.IsZero():
			b.giveUp(&fresh[j]) // an expiring root: Process claims it before the commit
		case t.err == nil || errors.Is(t.err, store.ErrNotFound):
			read = append(read, fresh[j])
			loaded = append(loaded, store.Loaded{Entity: entities[j], Token: t.token, Live: t.err == nil})
		default:
			b.giveUp(&fresh[j]) // Process reads it again and says what is wrong
		}
	}
	return read, loaded
}

// tokenRead is the answer to one token of a batch read.
type tokenRead struct {
	token baton.Token
	err   error // ErrNotFound: not live
}

// readTokens reads the items' tokens in one call.
func (b *batchRun) readTokens(ctx context.Context, items []batchItem) ([]tokenRead, error) {
	lookups := make([]store.TokenLookup, len(items))
	for i, it := range items {
		lookups[i] = store.TokenLookup{ID: it.sig.ID, Conversation: it.sig.Conversation}
	}
	tokens, errs, err := b.e.getTokens(ctx, lookups)
	if err != nil {
		return nil, err
	}
	out := make([]tokenRead, len(items))
	for i := range out {
		out[i] = tokenRead{tokens[i], errs[i]}
	}
	return out, nil
}

// tokenTransitions is step 5 of the chains' members on the plain path.
func tokenTransitions(chains []*chain) []store.TokenTransition {
	var out []store.TokenTransition
	for _, c := range chains {
		for _, it := range c.members {
			out = append(out, store.TokenTransition{Consume: it.sig.ID, Conversation: it.sig.Conversation, Create: childTokens(it.out)})
		}
	}
	return out
}

func (b *batchRun) giveUpAll(items []batchItem) {
	for i := range items {
		b.giveUp(&items[i])
	}
}

// runChains is step 2, 3 and 4 up to the commit, for each item, in its
// entity's chain, with what was read for it (loaded[j] for items[j]); fused
// says the commit consumes the tokens too (the fast path). It returns the
// chains that have members.
func (b *batchRun) runChains(items []batchItem, loaded []store.Loaded, fused bool) []*chain {
	e := b.e
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
		// Committed before: Process finishes it. The chain's state counts
		// too: it comes from the first item's read, and the reads of one
		// key need not be of one instant (store.BatchLoader), so it may
		// hold an entry this item's own read predates.
		_, inOwnRead := l.Entity.Entry(it.sig.ID)
		_, inChain := c.entity.Entry(it.sig.ID)
		if inOwnRead || inChain {
			b.giveUp(it)
			continue
		}
		if !l.Live {
			b.done(it, e.duplicate(it.ctx, it.sig), nil)
			continue
		}
		if err := e.admit(l.Token, it.sig); err != nil {
			b.done(it, Result{}, err)
			continue
		}
		next, out, err := e.runActivity(it.ctx, it.h, nil, it.sig, c.entity, fused)
		if err != nil {
			b.done(it, Result{}, err)
			continue
		}
		children := childTokens(out)
		if fused && len(c.create)+len(children) > store.MaxTokensPerTransition {
			b.giveUp(it) // too many children for one transition: alone after the chain
			continue
		}
		it.out = out
		c.entity, c.members, c.create = next, append(c.members, it), append(c.create, children...)
	}
	return slices.DeleteFunc(chains, func(c *chain) bool { return len(c.members) == 0 })
}

// commitFailed leaves the chains of a batch commit that failed to Process:
// nothing was applied, or the outcome is unknown, and Process finds the
// outbox entry of a signal whose commit happened (step 2) and runs the
// activity of one whose commit did not.
func (b *batchRun) commitFailed(chains []*chain, signals int, err error) {
	b.e.log.Info("batch commit failed; processing the signals one by one", "signals", signals, "err", err)
	for _, c := range chains {
		b.giveUp(c.members...)
	}
}

// refused leaves a chain whose commit was refused to Process, which runs
// each activity again on fresh state.
func (b *batchRun) refused(ctx context.Context, c *chain, why error) {
	if errors.Is(why, store.ErrConflict) {
		b.e.stats.add(ctx, statConflicts, 1)
	}
	b.giveUp(c.members...)
}

func (b *batchRun) countBatch(ctx context.Context, committed []*chain) {
	applied := 0
	for _, c := range committed {
		applied += len(c.members)
	}
	if applied > 0 {
		b.e.stats.add(ctx, statBatches, 1)
		b.e.stats.add(ctx, statBatched, int64(applied))
	}
}

// dispatchAndRemove is step 6 for the members of the committed chains,
// pipelined where Dispatch can, then step 7 for each whose signals all
// went, in one removal per entity.
func (b *batchRun) dispatchAndRemove(ctx context.Context, committed []*chain) {
	e := b.e
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
				b.done(it, it.applied(), err)
				continue
			}
			finished, entries = append(finished, it), append(entries, it.out)
		}
		err := e.removeFinished(ctx, c.entity, e.cfg.DeferRemovals, entries...)
		for _, it := range finished {
			b.done(it, it.applied(), err)
		}
	}
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
// returns the error of each signal that could not be dispatched. Once one
// signal failed its retries the others that are not out are not tried:
// their deliveries are not acked and their entries stay, so they go again
// on redelivery or with the sweeper, rather than hold this worker for
// every signal's retries while the broker is down.
func (e *Engine) dispatchAll(ctx context.Context, sigs []baton.Signal) map[baton.TokenID]error {
	failed := make(map[baton.TokenID]error)
	sent := e.publishBatch(ctx, sigs)
	var down error
	for i, sig := range sigs {
		switch {
		case sent[i]:
			continue
		case down != nil:
			failed[sig.ID] = down
			continue
		}
		if err := e.dispatch(ctx, sig); err != nil {
			failed[sig.ID], down = err, err
		}
	}
	return failed
}

// publishBatch publishes sigs in one pipelined exchange where Dispatch is a
// transport.BatchPublisher and there are several, and says which went;
// those that did not are counted as retries. Otherwise none went.
func (e *Engine) publishBatch(ctx context.Context, sigs []baton.Signal) (sent []bool) {
	sent = make([]bool, len(sigs))
	bp, ok := e.cfg.Dispatch.(transport.BatchPublisher)
	if !ok || len(sigs) < 2 {
		return sent
	}
	bctx, cancel := e.bounded(ctx)
	errs := bp.PublishBatch(bctx, sigs)
	cancel()
	if len(errs) != len(sigs) {
		// A short answer (a wrapper's, say) tells nothing: all are retried.
		e.log.Warn("a batch publish answered for fewer signals than it was given; publishing them one by one", "answered", len(errs), "signals", len(sigs))
		errs = nil
	}
	for i := range sigs {
		if errs != nil && errs[i] == nil {
			sent[i] = true
			e.stats.add(ctx, statDispatched, 1)
		} else {
			e.stats.add(ctx, statDispatchRetries, 1)
		}
	}
	return sent
}
