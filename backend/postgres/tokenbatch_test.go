package postgres

import (
	"errors"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// TestTransitionTokensRollBackWhole: the batch's statements run in one
// transaction, so a child that exists rolls back the transitions before it
// too, and running each alone then applies them: they report consumed, not
// "done already".
func TestTransitionTokensRollBackWhole(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	root, err := s.Issue(ctx, baton.Token{Destination: "shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	// Children whose ids put the one that fails last in the batch's order.
	child := func(first byte, parent baton.Token) baton.Token {
		id := baton.NewTokenID()
		id[0] = first
		return baton.Token{ID: id, Conversation: parent.Conversation, Causation: parent.ID, Destination: "billing",
			Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}
	}
	a, b, z := child(0x01, root), child(0x02, root), child(0xff, root)
	if ok, err := s.Transition(ctx, root.ID, []baton.Token{a, b, z}); !ok || err != nil {
		t.Fatalf("Transition = %v, %v", ok, err)
	}
	taken := child(0x80, a) // exists before the batch creates it again
	other, err := s.Issue(ctx, baton.Token{Destination: "shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Transition(ctx, other.ID, []baton.Token{taken}); !ok || err != nil {
		t.Fatalf("Transition = %v, %v", ok, err)
	}

	consumed, errs, err := s.TransitionTokens(ctx, []store.TokenTransition{
		{Consume: z.ID, Create: []baton.Token{taken}},
		{Consume: a.ID, Create: []baton.Token{child(0x10, a)}},
		{Consume: b.ID},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(errs[0], store.ErrExists) || consumed[0] {
		t.Errorf("the transition whose child exists = %v, %v; want ErrExists", consumed[0], errs[0])
	}
	if !consumed[1] || errs[1] != nil || !consumed[2] || errs[2] != nil {
		t.Errorf("the transitions before it = %v %v, %v %v; want both consumed by this call", consumed[1], errs[1], consumed[2], errs[2])
	}
	if _, err := s.Get(ctx, z.ID); err != nil {
		t.Errorf("the refused transition's token: %v; want it live", err)
	}
}
