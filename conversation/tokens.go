package conversation

import (
	"context"
	"errors"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/store"
)

// RecordTokens returns a token store that passes every call to inner and
// reports issued roots, applied transitions and dropped duplicates (reads
// of a token that is no longer live) to r. A token service uses
// it to draw the conversations of every system that calls it, without the
// systems' engines reporting anything themselves.
//
// It makes the batch calls (store.TokenBatcher, store.HintedTokenReader)
// in the inner store's batches where it has them, and reports them as the
// single calls.
func RecordTokens(inner store.TokenStore, r *Recorder, now func() time.Time) store.TokenStore {
	if now == nil {
		now = time.Now
	}
	return &recordingTokens{TokenStore: inner, batch: store.BatcherOf(inner), rec: r, now: now}
}

type recordingTokens struct {
	store.TokenStore
	batch store.TokenBatcher // inner's own, or one call after another
	rec   *Recorder
	now   func() time.Time
}

var (
	_ store.TokenBatcher      = (*recordingTokens)(nil)
	_ store.HintedTokenReader = (*recordingTokens)(nil)
)

func (t *recordingTokens) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	tok, err := t.TokenStore.Issue(ctx, root)
	if err == nil {
		t.rec.Observe(engine.Event{Kind: engine.EventRootIssued, Time: t.now(), Destination: tok.Destination, Signal: signalOf(tok)})
	}
	return tok, err
}

func (t *recordingTokens) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	consumed, err := t.TokenStore.Transition(ctx, consume, create)
	if err == nil && consumed {
		t.transitioned(consume, create)
	}
	return consumed, err
}

func (t *recordingTokens) transitioned(consume baton.TokenID, create []baton.Token) {
	children := make([]baton.Signal, len(create))
	for i, tok := range create {
		children[i] = signalOf(tok)
	}
	t.rec.Observe(engine.Event{Kind: engine.EventTransitioned, Time: t.now(), Signal: baton.Signal{ID: consume}, Children: children})
}

// GetTokens reports reads of tokens no longer live as Get does.
func (t *recordingTokens) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	lookups := make([]store.TokenLookup, len(ids))
	for i, id := range ids {
		lookups[i].ID = id
	}
	return t.GetTokensIn(ctx, lookups)
}

// GetTokensIn passes the conversations on to the inner store.
func (t *recordingTokens) GetTokensIn(ctx context.Context, lookups []store.TokenLookup) ([]baton.Token, []error, error) {
	tokens, errs, err := store.GetTokensIn(ctx, t.batch, lookups)
	if err == nil && len(errs) == len(lookups) {
		for i, e := range errs {
			if errors.Is(e, store.ErrNotFound) {
				t.rec.Observe(engine.Event{Kind: engine.EventDuplicate, Time: t.now(), Signal: baton.Signal{ID: lookups[i].ID}})
			}
		}
	}
	return tokens, errs, err
}

// TransitionTokens reports each applied transition as Transition does.
func (t *recordingTokens) TransitionTokens(ctx context.Context, transitions []store.TokenTransition) ([]bool, []error, error) {
	consumed, errs, err := t.batch.TransitionTokens(ctx, transitions)
	if err == nil && len(consumed) == len(transitions) && len(errs) == len(transitions) {
		for i, tr := range transitions {
			if errs[i] == nil && consumed[i] {
				t.transitioned(tr.Consume, tr.Create)
			}
		}
	}
	return consumed, errs, err
}

// Get of a token that is no longer live is a copy of its signal arriving
// after it was processed: the participant drops it as a duplicate.
func (t *recordingTokens) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	tok, err := t.TokenStore.Get(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		t.rec.Observe(engine.Event{Kind: engine.EventDuplicate, Time: t.now(), Signal: baton.Signal{ID: id}})
	}
	return tok, err
}

// ClaimRoot that finds the root gone drops the signal as a duplicate too.
func (t *recordingTokens) ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	tok, err := t.TokenStore.ClaimRoot(ctx, id, now)
	if errors.Is(err, store.ErrNotFound) {
		t.rec.Observe(engine.Event{Kind: engine.EventDuplicate, Time: t.now(), Signal: baton.Signal{ID: id}})
	}
	return tok, err
}

func signalOf(t baton.Token) baton.Signal {
	return baton.Signal{ID: t.ID, Conversation: t.Conversation, Causation: t.Causation, Destination: t.Destination, Type: t.Type}
}
