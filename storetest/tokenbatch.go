package storetest

// Checks of store.TokenBatcher, which RunTokenStore runs where a token
// store has it.

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// tokenBatcher is what the TokenBatcher checks need.
type tokenBatcher interface {
	store.TokenStore
	store.TokenBatcher
}

// testTokenBatch checks store.TokenBatcher, for token stores that offer
// it; others skip it. The parts share one store: their tokens are their
// own.
func testTokenBatch(t *testing.T, h TokenHarness) {
	s, ok := h.New(t).(tokenBatcher)
	if !ok {
		t.Skip("the store does not implement store.TokenBatcher")
	}
	parts := []struct {
		name string
		run  func(context.Context, *testing.T, tokenBatcher)
	}{
		{"GetTokens", testGetTokens},
		{"TransitionTokens", testTransitionTokens},
		{"Invalid", testTransitionTokensInvalid},
		{"Empty", testTokenBatchEmpty},
		{"CancelledContext", testTokenBatchCancelled},
	}
	for _, p := range parts {
		t.Run(p.name, func(t *testing.T) { p.run(testContext(t), t, s) })
	}
}

// testGetTokens: each id gets what Get returns for it, repeated ids
// included.
func testGetTokens(ctx context.Context, t *testing.T, s tokenBatcher) {
	dest := uniqueName("orders")
	expiring := newRoot(baton.TokenID{}, dest)
	expiring.ExpiresAt = timestamp(time.Hour)
	first := issue(ctx, t, s, expiring)
	second := issue(ctx, t, s, newRoot(baton.TokenID{}, dest))
	gone := issue(ctx, t, s, newRoot(first.Conversation, dest))
	transition(ctx, t, s, gone.ID, nil)
	never := unissued(first.Conversation, dest)
	requireLive(ctx, t, s, first, second)

	ids := []baton.TokenID{first.ID, gone.ID, never.ID, second.ID, first.ID}
	want := []baton.Token{first, {}, {}, second, first} // zero: not live
	tokens, errs, err := s.GetTokens(ctx, ids)
	if err != nil || len(tokens) != len(ids) || len(errs) != len(ids) {
		t.Fatalf("GetTokens of %d ids = %d tokens, %d errors, %v; want %d of each and a nil error", len(ids), len(tokens), len(errs), err, len(ids))
	}
	for i, id := range ids {
		switch {
		case want[i].ID.IsZero():
			if !errors.Is(errs[i], store.ErrNotFound) {
				t.Errorf("GetTokens: id %d (%s, not live): error %v, want one matching store.ErrNotFound", i, id, errs[i])
			}
		case errs[i] != nil:
			t.Errorf("GetTokens: id %d (%s, live): error %v, want the token", i, id, errs[i])
		default:
			if d := tokenDiff(tokens[i], want[i]); d != "" {
				t.Errorf("GetTokens: id %d returned another token than Get: %s", i, d)
			}
		}
	}
}

// testTransitionTokens: each transition of a batch is applied, or not,
// as Transition alone would, whatever the others do.
func testTransitionTokens(ctx context.Context, t *testing.T, s tokenBatcher) {
	dest := uniqueName("orders")
	a := issue(ctx, t, s, newRoot(baton.TokenID{}, dest))
	b := issue(ctx, t, s, newRoot(a.Conversation, dest))
	clashing := issue(ctx, t, s, newRoot(baton.TokenID{}, dest))
	existing := issue(ctx, t, s, newRoot(clashing.Conversation, dest))
	plain := issue(ctx, t, s, newRoot(baton.TokenID{}, dest))
	gone := issue(ctx, t, s, newRoot(baton.TokenID{}, dest))
	transition(ctx, t, s, gone.ID, nil)

	aKids, bKids, goneKids := newChildren(a, uniqueName("billing"), 2), newChildren(b, uniqueName("shipping"), 3), newChildren(gone, dest, 1)
	fresh, clash := newChild(clashing, dest), newChild(clashing, dest)
	clash.ID = existing.ID
	batch := []store.TokenTransition{
		{Consume: a.ID, Create: aKids},
		{Consume: gone.ID, Create: goneKids},
		{Consume: clashing.ID, Create: []baton.Token{fresh, clash}},
		{Consume: b.ID, Create: bKids},
		{Consume: plain.ID},
	}
	wantConsumed := []bool{true, false, false, true, true}
	consumed, errs, err := s.TransitionTokens(ctx, batch)
	if err != nil || len(consumed) != len(batch) || len(errs) != len(batch) {
		t.Fatalf("TransitionTokens of %d transitions = %v, %v, %v; want %d results and a nil error", len(batch), consumed, errs, err, len(batch))
	}
	for i := range batch {
		if consumed[i] != wantConsumed[i] {
			t.Errorf("TransitionTokens: transition %d consumed=%t, want %t", i, consumed[i], wantConsumed[i])
		}
	}
	if !errors.Is(errs[2], store.ErrExists) {
		t.Errorf("TransitionTokens: transition 2, creating an existing token: error %v, want one matching store.ErrExists", errs[2])
	}
	for _, i := range []int{0, 1, 3, 4} {
		if errs[i] != nil {
			t.Errorf("TransitionTokens: transition %d: error %v, want nil", i, errs[i])
		}
	}
	requireAbsent(ctx, t, s, a.ID, b.ID, plain.ID, fresh.ID, goneKids[0].ID)
	requireLive(ctx, t, s, clashing, existing)
	created := slices.Concat(aKids, bKids)
	requireLive(ctx, t, s, created...)
	requireConversation(ctx, t, s, a.Conversation, created...)
	requireConversation(ctx, t, s, clashing.Conversation, clashing, existing)
	requireConversation(ctx, t, s, plain.Conversation)
}

// testTransitionTokensInvalid: an invalid batch is refused whole, its
// valid transitions (first, so that a store cannot have applied them
// before it found the invalid one) included.
func testTransitionTokensInvalid(ctx context.Context, t *testing.T, s tokenBatcher) {
	dest := uniqueName("orders")
	p := issue(ctx, t, s, newRoot(baton.TokenID{}, dest))
	q := issue(ctx, t, s, newRoot(baton.TokenID{}, dest))
	pKids := newChildren(p, dest, 2)
	repeated := newChild(q, dest)
	repeated.ID = pKids[0].ID
	valid := store.TokenTransition{Consume: p.ID, Create: pKids}
	cases := []struct {
		name  string
		batch []store.TokenTransition
	}{
		{"the same token consumed twice", []store.TokenTransition{valid, {Consume: p.ID}}},
		{"a child repeated across two transitions", []store.TokenTransition{valid, {Consume: q.ID, Create: []baton.Token{repeated}}}},
		{"a child consumed in the same batch", []store.TokenTransition{valid, {Consume: pKids[0].ID}}},
		{"a zero token to consume", []store.TokenTransition{valid, {}}},
		{"a zero token to create", []store.TokenTransition{valid, {Consume: q.ID, Create: []baton.Token{{}}}}},
	}
	for _, c := range cases {
		consumed, errs, err := s.TransitionTokens(ctx, c.batch)
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("TransitionTokens with %s = %v, %v, %v; want an error matching store.ErrInvalid", c.name, consumed, errs, err)
		}
	}
	requireLive(ctx, t, s, p, q)
	requireAbsent(ctx, t, s, idsOf(pKids)...)
}

func testTokenBatchEmpty(ctx context.Context, t *testing.T, s tokenBatcher) {
	if tokens, errs, err := s.GetTokens(ctx, nil); err != nil || len(tokens) != 0 || len(errs) != 0 {
		t.Errorf("GetTokens of no ids = %v, %v, %v; want no results and a nil error", tokens, errs, err)
	}
	if consumed, errs, err := s.TransitionTokens(ctx, nil); err != nil || len(consumed) != 0 || len(errs) != 0 {
		t.Errorf("TransitionTokens of no transitions = %v, %v, %v; want no results and a nil error", consumed, errs, err)
	}
}

// testTokenBatchCancelled: a cancelled context fails the whole call, and
// not with store.ErrNotFound, which would make a signal a duplicate.
func testTokenBatchCancelled(ctx context.Context, t *testing.T, s tokenBatcher) {
	p := issue(ctx, t, s, newRoot(baton.TokenID{}, uniqueName("orders")))
	kids := newChildren(p, p.Destination, 1)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := s.GetTokens(cancelled, []baton.TokenID{p.ID}); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetTokens with a cancelled context = %v, want an error other than store.ErrNotFound", err)
	}
	if consumed, errs, err := s.TransitionTokens(cancelled, []store.TokenTransition{{Consume: p.ID, Create: kids}}); err == nil {
		t.Errorf("TransitionTokens with a cancelled context = %v, %v, nil; want an error", consumed, errs)
	}
	requireLive(ctx, t, s, p)
	requireAbsent(ctx, t, s, idsOf(kids)...)
}
