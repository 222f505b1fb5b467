package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// Engine processes the signals of one destination.
type Engine struct {
	cfg      Config
	log      *slog.Logger
	mu       sync.RWMutex
	handlers map[string]handler
	stats    counters
	tel      telemetry
	randMu   sync.Mutex
	// fast is set when one database keeps both entities and tokens: steps 4
	// and 5 then run in one atomic operation (protocol.md 3.2).
	fast store.CommitTransitioner
	// snapshot is set on the fast path when the store reads an entity and
	// a token in one call (steps 1 and 3 together).
	snapshot store.TokenLoader
	// batcher is set on the fast path when Config.Batch is above 1 and the
	// store reads and commits many signals at once.
	batcher store.TransitionBatcher
	// plain is set on the plain path when Config.Batch is above 1 and the
	// stores read and commit many signals at once.
	plain *plainBatcher
	// removals holds the outbox removals that Process deferred
	// (Config.DeferRemovals).
	removals *removalQueue
	// expiryForbidden logs once that the token store refuses this system
	// the deletion of expired roots (store.ErrForbidden).
	expiryForbidden sync.Once
	// ordering is always correct outside tests; the tests of the model
	// checker and the simulation switch it to prove they catch the broken
	// orderings of protocol.md 3.3.
	ordering ordering
	// pause stops Run from receiving while the stores do not answer.
	pause pause
}

type ordering int

const (
	orderingCorrect ordering = iota
	orderingTokenBeforeEntity
	orderingSplitTransition
	orderingRemoveBeforeConsume
	// orderingNoClaim commits an expiring root's activity on the plain
	// path without claiming the root first, as baton did before ClaimRoot.
	orderingNoClaim
	// orderingAckFirst acknowledges a delivery before processing it.
	orderingAckFirst
	// orderingAckOnRetry acknowledges a delivery whose processing failed
	// for now, instead of asking for it again.
	orderingAckOnRetry
	// orderingFinishOthersFirst finishes another signal's pending outbox
	// entry on the entity before it admits this one, as a serialised
	// outbox would: an entry that cannot be finished blocks the entity.
	orderingFinishOthersFirst
	// orderingBatchTokenBeforeEntity reads a plain batch's tokens before
	// its entities.
	orderingBatchTokenBeforeEntity
	// orderingBatchTransitionBeforeCommit runs a plain batch's
	// transitions before the commit of its entities.
	orderingBatchTransitionBeforeCommit
)

// batches reports whether signals are processed in batches under o: the
// orderings broken for single signals are proved on Process alone.
func (o ordering) batches() bool {
	return o == orderingCorrect || o == orderingBatchTokenBeforeEntity || o == orderingBatchTransitionBeforeCommit
}

// New validates cfg and returns an engine with no activities registered.
func New(cfg Config) (*Engine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	e := &Engine{
		cfg:      cfg,
		log:      cfg.Logger.With("destination", cfg.Destination),
		handlers: make(map[string]handler),
		removals: newRemovalQueue(),
	}
	e.initTelemetry()
	ct, noFastPath := fastPathOf(cfg)
	if ct != nil {
		e.fast = ct
		e.snapshot, _ = cfg.Entities.(store.TokenLoader)
		if cfg.Batch > 1 {
			e.batcher, _ = cfg.Entities.(store.TransitionBatcher)
		}
	}
	if cfg.Batch > 1 && ct == nil {
		e.plain = plainBatcherOf(cfg)
	}
	if cfg.Batch > 1 && e.batcher == nil && e.plain == nil {
		// An operator who set Batch expects shared commits: say why there
		// are none.
		why := fmt.Sprintf("the store (%T) does not commit in batches (store.TransitionBatcher)", cfg.Entities)
		if ct == nil {
			why = fmt.Sprintf("%s, and on the plain path the entity store (%T) needs store.BatchLoader and store.BatchCommitter, the token store (%T) store.TokenBatcher",
				noFastPath, cfg.Entities, cfg.Tokens)
		}
		e.log.Info("engine: Batch is set, but each signal is processed on its own", "batch", cfg.Batch, "reason", why)
	}
	return e, nil
}

// plainBatcher is what the plain path needs to process signals in batches.
type plainBatcher struct {
	loader    store.BatchLoader
	committer store.BatchCommitter
	tokens    store.TokenBatcher
}

// plainBatcherOf returns the batch capabilities of cfg's stores for the
// plain path, or nil if one is missing.
func plainBatcherOf(cfg Config) *plainBatcher {
	loader, ok1 := cfg.Entities.(store.BatchLoader)
	committer, ok2 := cfg.Entities.(store.BatchCommitter)
	tokens, ok3 := cfg.Tokens.(store.TokenBatcher)
	if !ok1 || !ok2 || !ok3 {
		return nil
	}
	return &plainBatcher{loader: loader, committer: committer, tokens: tokens}
}

// fastPathOf returns cfg's fast path, or nil and why there is none. The
// fast path is only sound when the transition happens in the token store
// every other engine uses, so it needs the very same store value.
func fastPathOf(cfg Config) (store.CommitTransitioner, string) {
	ct, ok := cfg.Entities.(store.CommitTransitioner)
	switch {
	case cfg.NoFastPath:
		return nil, "Config.NoFastPath is set"
	case !sameValue(cfg.Entities, cfg.Tokens):
		return nil, "tokens and entities are in different stores (batches need the fast path: one store for both)"
	case !ok:
		return nil, fmt.Sprintf("the store (%T) has no fast path (store.CommitTransitioner)", cfg.Entities)
	}
	return ct, ""
}

// Destination returns the destination this engine serves.
func (e *Engine) Destination() string { return e.cfg.Destination }

// Outcome says what Process did with a signal.
type Outcome int

const (
	// Applied: the activity ran and was committed by this call.
	Applied Outcome = iota + 1
	// Completed: the activity had been committed before (by an earlier
	// copy or a crashed attempt); this call finished its pending steps.
	Completed
	// Duplicate: the signal's token is not live; nothing was done.
	Duplicate
)

func (o Outcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case Completed:
		return "completed"
	case Duplicate:
		return "duplicate"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Result is what Process returns for a signal that it did not refuse.
type Result struct {
	Outcome Outcome
	// Reply is the activity's reply, while its outbox entry is still held;
	// it is nil for Duplicate.
	Reply []byte
	// Emitted are the signals the activity emitted.
	Emitted []baton.Signal
}

// Process runs the protocol for one signal (protocol.md 3.2, steps 1 to 7). The
// caller acknowledges the signal only after Process returns a nil error.
// Errors for which IsPermanent is true mean the signal can never be
// processed as it is (park it); any other error means "try again later":
// every step is safe to repeat.
func (e *Engine) Process(ctx context.Context, sig baton.Signal) (res Result, err error) {
	ctx, span := e.startSpan(ctx, "process", sig)
	defer func() {
		span.SetAttributes(attribute.String("baton.outcome", res.Outcome.String()))
		endSpan(span, err)
	}()
	return e.process(ctx, sig)
}

func (e *Engine) process(ctx context.Context, sig baton.Signal) (Result, error) {
	if err := sig.Validate(); err != nil {
		return Result{}, Permanent(err)
	}
	if sig.Destination != e.cfg.Destination {
		return Result{}, permanentf(ErrMisaddressed, "signal for %q arrived at %q", sig.Destination, e.cfg.Destination)
	}
	h, key, err := e.route(sig)
	if err != nil {
		return Result{}, err
	}
	for attempt := 0; ; attempt++ {
		var tok baton.Token
		var tokErr error
		if e.ordering == orderingTokenBeforeEntity {
			tok, tokErr = e.getToken(ctx, sig.Conversation, sig.ID)
		}
		// Step 1: load the entity. It must be loaded before the token is
		// read: a copy that read the token first could miss an outbox
		// entry that was removed in between and apply the activity twice.
		// A store that reads both at one instant does steps 1 and 3 at once.
		var ent store.Entity
		var err error
		tokenRead := false
		if e.snapshot != nil && e.ordering != orderingTokenBeforeEntity {
			ent, tok, tokErr = e.loadWithToken(ctx, key, sig.ID)
			if tokErr != nil && !errors.Is(tokErr, store.ErrNotFound) {
				return Result{}, fmt.Errorf("engine: load %q with token: %w", key, tokErr)
			}
			tokenRead = true
		} else if ent, err = e.load(ctx, key); err != nil {
			return Result{}, fmt.Errorf("engine: load %q: %w", key, err)
		}
		// Step 2: the activity already happened; finish its pending steps.
		// Only the very signal that the entry records may drive it and get
		// its reply: a copy altered in anything is refused, and the entry
		// stays as it was.
		if entry, ok := ent.Entry(sig.ID); ok {
			if err := e.sameSignal(entryToken(entry, e.cfg.Destination), sig); err != nil {
				return Result{}, err
			}
			e.stats.add(ctx, statCompleted, 1)
			res, err := e.finish(ctx, ent, entry, false, e.cfg.DeferRemovals)
			res.Outcome = Completed
			return res, err
		}
		if e.ordering == orderingFinishOthersFirst && len(ent.Outbox) > 0 {
			if _, err := e.finish(ctx, ent, ent.Outbox[0], false, false); err != nil {
				return Result{}, err
			}
			continue
		}
		// Step 3: read the token.
		if e.ordering != orderingTokenBeforeEntity && !tokenRead {
			tok, tokErr = e.getToken(ctx, sig.Conversation, sig.ID)
		}
		if errors.Is(tokErr, store.ErrNotFound) {
			return e.duplicate(ctx, sig), nil
		}
		if errors.Is(tokErr, store.ErrNotYours) {
			// The token service shows the token only to its destination.
			return Result{}, permanentf(ErrMisaddressed, "token %s is for another destination than %q", sig.ID, e.cfg.Destination)
		}
		if tokErr != nil {
			return Result{}, fmt.Errorf("engine: read token: %w", tokErr)
		}
		if err := e.admit(tok, sig); err != nil {
			return Result{}, err
		}
		// On the plain path the commit and the transition are two
		// operations: an expiring root is claimed first, so that expiry
		// cannot delete it between them, however long that takes.
		if e.fast == nil && !tok.ExpiresAt.IsZero() && e.ordering != orderingNoClaim {
			if dup, err := e.claim(ctx, sig); dup || err != nil {
				return e.duplicateOr(ctx, sig, dup, err)
			}
		}
		// Step 4: run the activity and commit its state with the outbox
		// entry, conditional on the version loaded in step 1.
		next, entry, version, consumed, err := e.runAndCommit(ctx, h, sig, ent)
		if err == nil && !consumed {
			// Fast path only: the token was consumed after step 3 and
			// nothing was committed.
			return e.duplicate(ctx, sig), nil
		}
		if errors.Is(err, store.ErrConflict) {
			e.stats.add(ctx, statConflicts, 1)
			if attempt >= e.cfg.MaxConflictRetries {
				return Result{}, fmt.Errorf("%w: %d on %q", ErrConflictRetries, attempt+1, key)
			}
			if err := e.cfg.Sleep(ctx, e.backoff(attempt)); err != nil {
				return Result{}, err
			}
			continue // nothing was emitted yet: run the activity again on fresh state
		}
		if err != nil {
			// Outcome unknown: a retry finds the entry (step 2) or not.
			return Result{}, fmt.Errorf("engine: commit %q: %w", key, err)
		}
		next.Version = version
		e.applied(ctx, sig, next, entry)
		res, err := e.finish(ctx, next, entry, e.fast != nil, e.cfg.DeferRemovals)
		res.Outcome = Applied
		return res, err
	}
}

// runAndCommit is step 4: it runs the activity on ent's state and commits
// the new state with the outbox entry (on the fast path with step 5), in
// the entity store's transaction for a TxActivity. Errors are the
// handler's or the commit's; consumed is false only on the fast path, for
// a token found no longer live (nothing was committed).
func (e *Engine) runAndCommit(ctx context.Context, h handler, sig baton.Signal, ent store.Entity) (next store.Entity, entry store.OutboxEntry, version uint64, consumed bool, err error) {
	if h.commitTx == nil {
		if next, entry, err = e.runActivity(ctx, h, nil, sig, ent, e.fast != nil); err != nil {
			return next, entry, 0, false, err
		}
		version, consumed, err = e.commit(ctx, next, entry)
		return next, entry, version, consumed, err
	}
	step := store.TxStep{Key: ent.Key, Version: ent.Version, Token: sig.ID, Fused: e.fast != nil}
	version, consumed, err = e.commitInTx(ctx, h, step, func(ctx context.Context, tx any) (store.Entity, []baton.Token, error) {
		var err error
		next, entry, err = e.runActivity(ctx, h, tx, sig, ent, step.Fused)
		return next, childTokens(entry), err
	})
	if err == nil && consumed && step.Fused {
		e.transitioned(ctx, entry)
	}
	return next, entry, version, consumed, err
}

// runActivity is step 4 up to the commit: it runs the activity on ent's
// state (with tx, the transaction of a TxActivity) and returns the entity
// to commit, with the new outbox entry. fused says the commit consumes the
// token too (the fast path): an entry that emits nothing and replies
// nothing is then left out of the entity, as there is nothing for it to
// finish and a later copy finds the token gone (protocol.md 3.2).
func (e *Engine) runActivity(ctx context.Context, h handler, tx any, sig baton.Signal, ent store.Entity, fused bool) (store.Entity, store.OutboxEntry, error) {
	started := e.cfg.Now()
	state, effects, err := h.run(ctx, tx, sig, ent.State)
	e.observeHandler(ctx, started)
	if err != nil {
		e.stats.add(ctx, statHandlerErrors, 1)
		return store.Entity{}, store.OutboxEntry{}, activityError{fmt.Errorf("engine: activity %q: %w", sig.Type, err)}
	}
	children, err := e.children(sig, effects.Emit, e.traceContext(ctx))
	if err != nil {
		return store.Entity{}, store.OutboxEntry{}, err
	}
	entry := store.EntryFor(sig, children, effects.Reply, e.cfg.Now())
	next := ent
	next.State = state
	if !fused || !entry.Empty() {
		next.Outbox = append(slices.Clone(ent.Outbox), entry)
	}
	return next, entry, nil
}

// duplicate counts and reports a signal whose token is not live.
func (e *Engine) duplicate(ctx context.Context, sig baton.Signal) Result {
	e.stats.add(ctx, statDuplicates, 1)
	e.emitEvent(Event{Kind: EventDuplicate, Signal: sig})
	e.log.Debug("duplicate dropped", "conversation", sig.Conversation, "token", sig.ID, "type", sig.Type)
	return Result{Outcome: Duplicate}
}

// applied counts and reports an activity committed in next.
func (e *Engine) applied(ctx context.Context, sig baton.Signal, next store.Entity, entry store.OutboxEntry) {
	e.stats.add(ctx, statApplied, 1)
	e.emitEvent(Event{Kind: EventApplied, Signal: sig, Children: entry.Signals})
	e.log.Debug("activity applied", "conversation", sig.Conversation, "token", sig.ID, "type", sig.Type,
		"entity", next.Key, "emitted", len(entry.Signals))
}

// admit refuses a live token that does not authorise this signal. Refused
// tokens are never consumed: they stay live and visible.
func (e *Engine) admit(tok baton.Token, sig baton.Signal) error {
	if err := e.sameSignal(tok, sig); err != nil {
		return err
	}
	if tok.Expired(e.cfg.Now()) {
		return permanentf(ErrExpired, "token %s expired at %s", tok.ID, tok.ExpiresAt.Format(time.RFC3339))
	}
	return nil
}

// sameSignal refuses sig unless it is the signal that tok authorises (or
// that an outbox entry recorded): same destination, type, conversation,
// causation and payload digest, checked in this order.
func (e *Engine) sameSignal(tok baton.Token, sig baton.Signal) error {
	switch {
	case tok.Destination != e.cfg.Destination:
		return permanentf(ErrMisaddressed, "token %s is for %q, not %q", tok.ID, tok.Destination, e.cfg.Destination)
	case tok.Type != sig.Type || tok.Conversation != sig.Conversation || tok.Causation != sig.Causation:
		// A signal from outside must not borrow a live token to run another
		// activity or reach another conversation's entities.
		return permanentf(ErrTokenMismatch, "token %s was issued for %q in conversation %s", tok.ID, tok.Type, tok.Conversation)
	case tok.Digest != sig.Digest():
		return permanentf(ErrDigestMismatch, "token %s", tok.ID)
	}
	return nil
}

// entryToken is the token that the signal of entry was admitted with, as
// far as the entry records it; an entry that records nothing of it (written
// before baton did) stands for any signal with its token id.
func entryToken(entry store.OutboxEntry, destination string) baton.Token {
	if !entry.Recorded() {
		return baton.Token{}
	}
	return baton.Token{ID: entry.Token, Conversation: entry.Conversation, Causation: entry.Causation,
		Destination: destination, Type: entry.Type, Digest: entry.Digest}
}

// claim claims sig's expiring root token before its activity is
// committed on the plain path (store.TokenStore.ClaimRoot). dup reports a
// root that is no longer live: consumed by another copy, or expired and
// deleted; either way this copy is dropped.
func (e *Engine) claim(ctx context.Context, sig baton.Signal) (dup bool, err error) {
	_, err = e.claimRoot(ctx, sig.Conversation, sig.ID)
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, store.ErrNotFound):
		return true, nil
	case errors.Is(err, store.ErrExpired):
		return false, permanentf(ErrExpired, "root token %s expired before it was claimed", sig.ID)
	case errors.Is(err, store.ErrNotYours):
		return false, permanentf(ErrMisaddressed, "root token %s is for another destination than %q", sig.ID, e.cfg.Destination)
	}
	return false, fmt.Errorf("engine: claim root token: %w", err)
}

// duplicateOr reports sig as a duplicate when dup, and err otherwise.
func (e *Engine) duplicateOr(ctx context.Context, sig baton.Signal, dup bool, err error) (Result, error) {
	if dup {
		return e.duplicate(ctx, sig), nil
	}
	return Result{}, err
}

// children turns an activity's emits into signals with fresh token ids,
// one per destination for a topic (protocol.md 3.6).
func (e *Engine) children(parent baton.Signal, emits []baton.Emit, trace baton.TraceContext) ([]baton.Signal, error) {
	var out []baton.Signal
	for _, emit := range emits {
		if err := emit.Validate(); err != nil {
			return nil, Permanent(fmt.Errorf("engine: activity %q: %w", parent.Type, err))
		}
		destinations := []string{emit.Destination}
		if emit.Topic != "" {
			destinations = e.cfg.Subscriptions[emit.Topic]
		}
		for _, d := range destinations {
			id, err := e.newTokenID()
			if err != nil {
				return nil, err
			}
			out = append(out, baton.Signal{
				ID:           id,
				Conversation: parent.Conversation,
				Causation:    parent.ID,
				Destination:  d,
				Type:         emit.Type,
				Payload:      emit.Payload,
				Trace:        trace,
			})
		}
	}
	if len(out) > store.MaxTokensPerTransition {
		return nil, Permanent(fmt.Errorf("engine: activity %q emits %d signals, more than %d", parent.Type, len(out), store.MaxTokensPerTransition))
	}
	return out, nil
}

// finish runs steps 5 to 7 for an outbox entry that is committed in ent.
// Any worker or the sweeper may run it for any entry, any number of times.
// transitioned says step 5 already happened with the commit (fast path);
// deferRemoval queues step 7 instead of running it (Config.DeferRemovals).
func (e *Engine) finish(ctx context.Context, ent store.Entity, entry store.OutboxEntry, transitioned, deferRemoval bool) (Result, error) {
	res := Result{Reply: entry.Reply, Emitted: entry.Signals}
	if e.ordering == orderingRemoveBeforeConsume {
		if _, err := e.removeEntries(ctx, ent, entry.Token); err != nil {
			return res, err
		}
	}
	// Step 5: consume the incoming token and create the emitted ones in one
	// atomic transition. If the token is already absent, another worker did
	// this for the same entry: carry on.
	if !transitioned {
		if err := e.transition(ctx, entry); err != nil {
			return res, err
		}
	}
	// Step 6: dispatch.
	for _, sig := range entry.Signals {
		if err := e.dispatch(ctx, sig); err != nil {
			return res, err
		}
	}
	if e.ordering == orderingRemoveBeforeConsume {
		return res, nil
	}
	return res, e.removeFinished(ctx, ent, deferRemoval, entry)
}

// removeFinished is step 7 for entries whose signals were dispatched: only
// now may an entry go; before the transition a copy would see a live token
// and no entry, and apply the activity again. deferRemoval queues them
// (Config.DeferRemovals) where the queue has room; the others go in one
// commit of ent.
func (e *Engine) removeFinished(ctx context.Context, ent store.Entity, deferRemoval bool, entries ...store.OutboxEntry) error {
	var inline []baton.TokenID
	for _, entry := range entries {
		if _, kept := ent.Entry(entry.Token); !kept {
			continue // committed without an entry (runActivity)
		}
		if deferRemoval && e.removals.add(removal{ent: ent, token: entry.Token}) {
			continue
		}
		inline = append(inline, entry.Token)
	}
	if len(inline) == 0 {
		return nil
	}
	_, err := e.removeEntries(ctx, ent, inline...)
	return err
}

// commit is step 4: commit the entity with its new outbox entry. On the
// fast path it is also step 5, in the same atomic operation; consumed is
// then false if the token was no longer live (nothing was committed).
func (e *Engine) commit(ctx context.Context, next store.Entity, entry store.OutboxEntry) (version uint64, consumed bool, err error) {
	if e.fast == nil {
		version, err = e.commitEntity(ctx, next)
		return version, true, err
	}
	version, consumed, err = e.commitTransition(ctx, next, entry.Token, childTokens(entry))
	if err == nil && consumed {
		e.transitioned(ctx, entry)
	}
	return version, consumed, err
}

// transitioned counts and reports the transition of an entry's token.
func (e *Engine) transitioned(ctx context.Context, entry store.OutboxEntry) {
	e.stats.add(ctx, statTransitions, 1)
	e.emitEvent(Event{Kind: EventTransitioned, Signal: baton.Signal{ID: entry.Token}, Children: entry.Signals})
}

// childTokens returns the tokens of an entry's signals. Their creation time
// is the entry's, so every retry of a transition creates identical tokens.
func childTokens(entry store.OutboxEntry) []baton.Token {
	tokens := make([]baton.Token, len(entry.Signals))
	for i, sig := range entry.Signals {
		tokens[i] = sig.Token()
		tokens[i].CreatedAt = entry.CreatedAt
	}
	return tokens
}

func (e *Engine) transition(ctx context.Context, entry store.OutboxEntry) error {
	tokens := childTokens(entry)
	if e.ordering == orderingSplitTransition {
		for _, tok := range tokens {
			if err := e.createApart(ctx, tok); err != nil {
				return fmt.Errorf("engine: transition: %w", err)
			}
		}
		tokens = nil
	}
	consumed, err := e.transitionTokens(ctx, entry.Conversation, entry.Token, tokens)
	if err != nil {
		return fmt.Errorf("engine: transition: %w", err)
	}
	if consumed {
		e.transitioned(ctx, entry)
	} else {
		e.stats.add(ctx, statTransitionsDone, 1)
	}
	return nil
}

// createApart creates tok in an operation of its own, apart from the
// consumption of its parent: the broken ordering of the tests. A token
// store creates tokens only in transitions, so it consumes a scratch root.
func (e *Engine) createApart(ctx context.Context, tok baton.Token) error {
	scratch, err := e.issue(ctx, baton.Token{Conversation: tok.Conversation, Destination: tok.Destination, Type: "scratch", Digest: baton.DigestOf(nil)})
	if err != nil {
		return err
	}
	_, err = e.transitionTokens(ctx, scratch.Conversation, scratch.ID, []baton.Token{tok})
	if errors.Is(err, store.ErrExists) {
		_, err = e.transitionTokens(ctx, scratch.Conversation, scratch.ID, nil)
	}
	return err
}

func (e *Engine) dispatch(ctx context.Context, sig baton.Signal) error {
	var err error
	for attempt := 0; attempt < e.cfg.DispatchAttempts; attempt++ {
		if attempt > 0 {
			e.stats.add(ctx, statDispatchRetries, 1)
			if err := e.cfg.Sleep(ctx, e.backoff(attempt)); err != nil {
				return err
			}
		}
		err = e.publish(ctx, sig)
		if err == nil {
			e.stats.add(ctx, statDispatched, 1)
			return nil
		}
		if errors.Is(err, ErrRejected) {
			return Permanent(fmt.Errorf("engine: dispatch %s to %q: %w", sig.ID, sig.Destination, err))
		}
	}
	return fmt.Errorf("engine: dispatch %s to %q: %w", sig.ID, sig.Destination, err)
}

// removeEntries drops the outbox entries of tokens from the entity in one
// commit, reloading and retrying on version conflicts, and reports how
// many this call removed. An entry already gone is fine.
func (e *Engine) removeEntries(ctx context.Context, ent store.Entity, tokens ...baton.TokenID) (int, error) {
	for attempt := 0; ; attempt++ {
		next, removed := ent, []store.OutboxEntry(nil)
		for _, token := range tokens {
			if entry, ok := next.Entry(token); ok {
				next, removed = next.WithoutEntry(token), append(removed, entry)
			}
		}
		if len(removed) == 0 {
			return 0, nil
		}
		_, err := e.commitEntity(ctx, next)
		if err == nil {
			for _, entry := range removed {
				e.entryRemoved(ctx, entry)
			}
			return len(removed), nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return 0, fmt.Errorf("engine: remove outbox entries from %q: %w", ent.Key, err)
		}
		e.stats.add(ctx, statConflicts, 1)
		if attempt >= e.cfg.MaxConflictRetries {
			return 0, fmt.Errorf("%w: removing outbox entries from %q", ErrConflictRetries, ent.Key)
		}
		if err := e.cfg.Sleep(ctx, e.backoff(attempt)); err != nil {
			return 0, err
		}
		if ent, err = e.load(ctx, ent.Key); err != nil {
			return 0, fmt.Errorf("engine: reload %q: %w", ent.Key, err)
		}
	}
}

// entryRemoved counts a removed outbox entry and observes its age.
func (e *Engine) entryRemoved(ctx context.Context, entry store.OutboxEntry) {
	e.stats.add(ctx, statEntriesRemoved, 1)
	e.observeOutboxAge(ctx, entry.CreatedAt)
}

func (e *Engine) newTokenID() (baton.TokenID, error) {
	e.randMu.Lock()
	defer e.randMu.Unlock()
	return baton.ReadTokenID(e.cfg.Random)
}

// backoff returns an exponential delay with full jitter for a retry.
func (e *Engine) backoff(attempt int) time.Duration {
	limit := e.cfg.RetryDelay << min(attempt, 8)
	return e.jitter(min(limit, 200*e.cfg.RetryDelay))
}

// jitter returns a random duration in [0, limit].
func (e *Engine) jitter(limit time.Duration) time.Duration {
	if limit <= 0 {
		return 0
	}
	var b [8]byte
	e.randMu.Lock()
	_, err := io.ReadFull(e.cfg.Random, b[:])
	e.randMu.Unlock()
	if err != nil {
		return limit
	}
	return time.Duration(binary.LittleEndian.Uint64(b[:]) % uint64(limit+1))
}

// sameValue reports whether a and b are the same comparable value, without
// the panic that == raises for incomparable dynamic types.
func sameValue(a, b any) bool {
	ta := reflect.TypeOf(a)
	return ta != nil && ta == reflect.TypeOf(b) && ta.Comparable() && a == b
}
