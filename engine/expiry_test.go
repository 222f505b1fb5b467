package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/internal/testclock"
	"github.com/batonhq/baton/store"
)

// downTokens is a token store whose transitions fail, as an unreachable
// store's would, while down is set.
type downTokens struct {
	store.TokenStore
	mu   sync.Mutex
	down bool
}

func (d *downTokens) setDown(down bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = down
}

func (d *downTokens) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	d.mu.Lock()
	down := d.down
	d.mu.Unlock()
	if down {
		return false, errors.New("token store unreachable")
	}
	return d.TokenStore.Transition(ctx, consume, create)
}

// publisher hands every dispatched signal to the receiving engine at once.
type publisher struct{ to map[string]*engine.Engine }

func (p publisher) Publish(ctx context.Context, sig baton.Signal) error {
	_, err := p.to[sig.Destination].Process(ctx, sig)
	return err
}

// TestRootExpiryNeverLosesACommittedActivity is the plain path (tokens and
// entities in different stores) with a destination that commits the
// activity of an expiring root and then cannot reach the token store for
// longer than the root's expiry and the grace after it, while another
// destination's sweeper deletes expired roots. Expiry only ever rejects: the
// root was admitted, so its transition must still find it when the store
// is back, and the child's activity must run. Before roots were claimed,
// the sweeper deleted the root, the transition found nothing to consume
// and the child was dropped as a duplicate: a clean-looking quiet state
// with a lost step.
func TestRootExpiryNeverLosesACommittedActivity(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := testclock.At(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	shared := memory.NewTokenStore()
	shopTokens := &downTokens{TokenStore: shared}
	engines := map[string]*engine.Engine{}
	newEngine := func(dest string, tokens store.TokenStore, entities store.EntityStore) *engine.Engine {
		e, err := engine.New(engine.Config{Destination: dest, Tokens: tokens, Entities: entities,
			Dispatch: publisher{engines}, Now: clk.Now, RootExpiryGrace: time.Minute, SweepAfter: time.Second})
		must(t, err)
		engines[dest] = e
		return e
	}
	shopEntities, billingEntities := memory.NewEntityStore(), memory.NewEntityStore()
	shop := newEngine("shop", shopTokens, shopEntities)
	billing := newEngine("billing", shared, billingEntities)
	must(t, engine.Register(shop, engine.Activity[counter]{Type: "order", Entity: byConversation,
		Handle: func(_ context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
			s.record(sig)
			return engine.Effects{Emit: []baton.Emit{{Destination: "billing", Type: "charge"}}}, nil
		}}))
	must(t, engine.Register(billing, engine.Activity[counter]{Type: "charge", Entity: byConversation,
		Handle: func(_ context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
			s.record(sig)
			return engine.Effects{}, nil
		}}))

	order, err := shop.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order"}, time.Minute)
	must(t, err)
	shopTokens.setDown(true)
	if _, err := shop.Process(ctx, order); err == nil {
		t.Fatal("Process succeeded although the token store was down for the transition")
	}
	if got := appliedIn(t, shopEntities, order.Conversation); got != 1 {
		t.Fatalf("the order's activity was committed %d times before the outage, want 1", got)
	}

	// Down for hours: long past the root's expiry and the grace after it.
	clk.Advance(3 * time.Hour)
	if _, err := billing.Sweep(ctx); err != nil {
		t.Fatalf("billing's sweep: %v", err)
	}
	shopTokens.setDown(false)
	if _, err := shop.Process(ctx, order); err != nil {
		t.Fatalf("the redelivered order after the outage: %v", err)
	}

	if got := appliedIn(t, billingEntities, order.Conversation); got != 1 {
		t.Errorf("billing applied the order's charge %d times, want 1: the root expired after its activity committed, and the child was lost", got)
	}
	if live, err := shared.ListByConversation(ctx, order.Conversation, store.Page{}); err != nil || len(live) != 0 {
		t.Errorf("live tokens of the conversation at the end: %d, %v; want none", len(live), err)
	}
}

// TestExpiredRootIsRejectedNotApplied: a root whose expiry passed before its
// signal was admitted is refused on both paths, and its token is not
// consumed.
func TestExpiredRootIsRejectedNotApplied(t *testing.T) {
	t.Parallel()
	for _, fast := range []bool{false, true} {
		clk := testclock.At(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		tokens := memory.NewTokenStore()
		e, err := engine.New(engine.Config{Destination: "shop", Tokens: tokens, Entities: memory.NewEntityStore(),
			Dispatch: publisher{}, Now: clk.Now, NoFastPath: !fast})
		must(t, err)
		must(t, engine.Register(e, engine.Activity[counter]{Type: "order", Entity: byConversation,
			Handle: func(_ context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
				s.record(sig)
				return engine.Effects{}, nil
			}}))
		order, err := e.IssueRoot(t.Context(), baton.Emit{Destination: "shop", Type: "order"}, time.Minute)
		must(t, err)
		clk.Advance(time.Minute)
		if _, err := e.Process(t.Context(), order); !errors.Is(err, engine.ErrExpired) || !engine.IsPermanent(err) {
			t.Errorf("fast path %v: an expired root's signal: %v, want a permanent ErrExpired", fast, err)
		}
		if _, err := tokens.Get(t.Context(), order.ID); err != nil {
			t.Errorf("fast path %v: the expired root's token after the refusal: %v, want it live until expiry deletes it", fast, err)
		}
	}
}

// appliedIn counts the activities committed in the conversation's entity.
func appliedIn(t *testing.T, entities store.EntityStore, conversation baton.TokenID) int {
	t.Helper()
	ent, err := entities.Load(t.Context(), "c-"+conversation.String())
	must(t, err)
	if ent.Version == 0 {
		return 0
	}
	var s counter
	if err := json.Unmarshal(ent.State, &s); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range s.Applied {
		n += k
	}
	return n
}
