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
func RecordTokens(inner store.TokenStore, r *Recorder, now func() time.Time) store.TokenStore {
	if now == nil {
		now = time.Now
	}
	return &recordingTokens{TokenStore: inner, rec: r, now: now}
}

type recordingTokens struct {
	store.TokenStore
	rec *Recorder
	now func() time.Time
}

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
		children := make([]baton.Signal, len(create))
		for i, tok := range create {
			children[i] = signalOf(tok)
		}
		t.rec.Observe(engine.Event{Kind: engine.EventTransitioned, Time: t.now(), Signal: baton.Signal{ID: consume}, Children: children})
	}
	return consumed, err
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
