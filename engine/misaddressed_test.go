package engine_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/store"
)

// guardedTokens shows a token only to its destination, as the token
// service does: any other caller gets store.ErrNotYours.
type guardedTokens struct {
	store.TokenStore // the interface: no batch calls that would skip Get
	caller           string
}

func (g guardedTokens) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	tok, err := g.TokenStore.Get(ctx, id)
	if err == nil && tok.Destination != g.caller {
		return baton.Token{}, fmt.Errorf("token service: 403 not-your-token: %w", store.ErrNotYours)
	}
	return tok, err
}

func (g guardedTokens) ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	if _, err := g.Get(ctx, id); err != nil {
		return baton.Token{}, err
	}
	return g.TokenStore.ClaimRoot(ctx, id, now)
}

// TestTokenOfAnotherDestinationIsMisaddressed: a signal that claims to be
// for this destination but whose token the token store will not show this
// destination (it is addressed elsewhere) is refused as misaddressed, for
// good, and its token stays live: it is not a store outage to retry.
func TestTokenOfAnotherDestinationIsMisaddressed(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tokens := memory.NewTokenStore()
	e, err := engine.New(engine.Config{Destination: "billing", Tokens: guardedTokens{tokens, "billing"},
		Entities: memory.NewEntityStore(), Dispatch: engine.Routes{}})
	must(t, err)
	must(t, engine.Register(e, engine.Activity[counter]{Type: "charge", Entity: byConversation,
		Handle: func(_ context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
			s.record(sig)
			return engine.Effects{}, nil
		}}))
	for _, expiring := range []bool{false, true} {
		var ttl time.Duration
		if expiring {
			ttl = time.Hour
		}
		root, err := tokens.Issue(ctx, baton.Token{Destination: "shipping", Type: "charge", Digest: baton.DigestOf(nil),
			CreatedAt: time.Now(), ExpiresAt: expiresAt(ttl)})
		must(t, err)
		sig := baton.Signal{ID: root.ID, Conversation: root.Conversation, Destination: "billing", Type: "charge"}
		_, err = e.Process(ctx, sig)
		if !errors.Is(err, engine.ErrMisaddressed) || !engine.IsPermanent(err) {
			t.Errorf("expiring %v: Process: %v, want a permanent engine.ErrMisaddressed", expiring, err)
		}
		if _, err := tokens.Get(ctx, root.ID); err != nil {
			t.Errorf("expiring %v: the refused signal's token: %v, want it live", expiring, err)
		}
	}
}

func expiresAt(ttl time.Duration) time.Time {
	if ttl == 0 {
		return time.Time{}
	}
	return time.Now().Add(ttl)
}
