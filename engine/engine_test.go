package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	memtransport "github.com/batonhq/baton/transport/memory"
)

// counter is the state of a test entity: how often each signal was applied.
type counter struct {
	Applied map[string]int `json:"applied"`
}

// record counts one application of sig.
func (s *counter) record(sig baton.Signal) {
	if s.Applied == nil {
		s.Applied = map[string]int{}
	}
	s.Applied[sig.ID.String()]++
}

// submitOrders issues n roots of "order" signals to the shop and
// publishes each twice (a double submit); it returns their conversations.
func submitOrders(ctx context.Context, t *testing.T, shop *engine.Engine, tr *memtransport.Transport, n int) []baton.TokenID {
	t.Helper()
	var conversations []baton.TokenID
	for i := range n {
		sig, err := shop.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order", Payload: fmt.Appendf(nil, "%d", i)}, 0)
		must(t, err)
		conversations = append(conversations, sig.Conversation)
		must(t, tr.Publish(ctx, sig))
		must(t, tr.Publish(ctx, sig))
	}
	return conversations
}

func byConversation(sig baton.Signal) (string, error) { return "c-" + sig.Conversation.String(), nil }

func newEngine(t *testing.T, dest string, tokens *memory.TokenStore, tr *memtransport.Transport) *engine.Engine {
	t.Helper()
	return newEngineWith(t, dest, tokens, memory.NewEntityStore(), tr)
}

func newEngineWith(t *testing.T, dest string, tokens *memory.TokenStore, entities *memory.EntityStore, tr *memtransport.Transport) *engine.Engine {
	t.Helper()
	e, err := engine.New(engine.Config{
		Destination:   dest,
		Tokens:        tokens,
		Entities:      entities,
		Dispatch:      tr,
		Source:        tr,
		Subscriptions: map[string][]string{"placed": {"billing", "warehouse"}},
		SweepInterval: 20 * time.Millisecond,
		SweepAfter:    50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestChainWithDuplicatesAppliesEachActivityOnce(t *testing.T) {
	t.Parallel()
	tokens := memory.NewTokenStore()
	tr := memtransport.New(memtransport.Config{DuplicateRate: 0.5, Reorder: true, Seed: 7})
	shopEntities, billingEntities, warehouseEntities := memory.NewEntityStore(), memory.NewEntityStore(), memory.NewEntityStore()
	shop := newEngineWith(t, "shop", tokens, shopEntities, tr)
	billing := newEngineWith(t, "billing", tokens, billingEntities, tr)
	warehouse := newEngineWith(t, "warehouse", tokens, warehouseEntities, tr)
	must(t, engine.Register(shop, engine.Activity[counter]{Type: "order", Entity: byConversation,
		Handle: func(_ context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
			s.record(sig)
			return engine.Effects{Emit: []baton.Emit{{Topic: "placed", Type: "placed"}}}, nil
		}}))
	for _, e := range []*engine.Engine{billing, warehouse} {
		must(t, engine.Register(e, engine.Activity[counter]{Type: "placed", Entity: byConversation,
			Handle: func(_ context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
				s.record(sig)
				return engine.Effects{}, nil
			}}))
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for _, e := range []*engine.Engine{shop, billing, warehouse} {
		wg.Go(func() { _ = e.Run(ctx) })
	}
	conversations := submitOrders(ctx, t, shop, tr, 50)
	deadline := time.Now().Add(20 * time.Second)
	for tokens.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if n := tokens.Len(); n != 0 {
		t.Fatalf("%d tokens still live", n)
	}
	// What counts is what was committed: a handler may run twice when two
	// copies race (the loser's run is discarded on its version conflict).
	for _, system := range []struct {
		name     string
		entities *memory.EntityStore
	}{{"shop", shopEntities}, {"billing", billingEntities}, {"warehouse", warehouseEntities}} {
		for _, c := range conversations {
			ent, err := system.entities.Load(t.Context(), "c-"+c.String())
			must(t, err)
			var s counter
			if err := json.Unmarshal(ent.State, &s); err != nil {
				t.Fatalf("%s: state of conversation %s: %v", system.name, c, err)
			}
			if len(s.Applied) != 1 {
				t.Errorf("%s: conversation %s applied %d distinct signals, want 1", system.name, c, len(s.Applied))
			}
			for id, n := range s.Applied {
				if n != 1 {
					t.Errorf("%s: signal %s applied %d times", system.name, id, n)
				}
			}
		}
	}
	st := tr.Stats()
	if st.Duplicated == 0 {
		t.Fatal("the transport injected no duplicates")
	}
	t.Logf("transport: %+v; shop: %+v", st, shop.Stats())
}

func TestBadInputGetsClearErrors(t *testing.T) {
	t.Parallel()
	tokens := memory.NewTokenStore()
	tr := memtransport.New(memtransport.Config{})
	if _, err := engine.New(engine.Config{}); err == nil {
		t.Error("New accepted an empty config")
	}
	e := newEngine(t, "shop", tokens, tr)
	if err := engine.Register(e, engine.Activity[counter]{Type: "x"}); !errors.Is(err, engine.ErrInvalidActivity) {
		t.Errorf("nil handler: got %v", err)
	}
	if err := engine.Register[counter](nil, engine.Activity[counter]{}); !errors.Is(err, engine.ErrInvalidActivity) {
		t.Errorf("nil engine: got %v", err)
	}
	must(t, engine.Register(e, engine.Activity[counter]{Type: "order",
		Entity: func(baton.Signal) (string, error) { return "", errors.New("no order id") },
		Handle: func(context.Context, baton.Signal, *counter) (engine.Effects, error) { return engine.Effects{}, nil }}))
	sig, err := e.IssueRoot(t.Context(), baton.Emit{Destination: "shop", Type: "order"}, 0)
	must(t, err)
	if _, err := e.Process(t.Context(), sig); !errors.Is(err, engine.ErrUnroutable) || !engine.IsPermanent(err) {
		t.Errorf("unroutable: got %v", err)
	}
	big := sig
	big.Payload = make([]byte, baton.MaxPayloadBytes+1)
	if _, err := e.Process(t.Context(), big); !errors.Is(err, baton.ErrInvalidSignal) {
		t.Errorf("oversized payload: got %v", err)
	}
	if _, err := baton.ParseTokenID("not-a-token"); !errors.Is(err, baton.ErrMalformedTokenID) {
		t.Errorf("malformed id: got %v", err)
	}
	must(t, engine.Register(e, engine.Activity[counter]{Type: "pay", Entity: byConversation,
		Handle: func(context.Context, baton.Signal, *counter) (engine.Effects, error) { return engine.Effects{}, nil }}))
	pay, err := e.IssueRoot(t.Context(), baton.Emit{Destination: "shop", Type: "pay"}, 0)
	must(t, err)
	borrowed := pay
	borrowed.Conversation = baton.NewTokenID()
	if _, err := e.Process(t.Context(), borrowed); !errors.Is(err, engine.ErrTokenMismatch) || !engine.IsPermanent(err) {
		t.Errorf("signal borrowing a token of another conversation: got %v", err)
	}
	must(t, engine.Register(e, engine.Activity[counter]{Type: "crash", Entity: byConversation,
		Handle: func(context.Context, baton.Signal, *counter) (engine.Effects, error) { panic("nil map") }}))
	crash, err := e.IssueRoot(t.Context(), baton.Emit{Destination: "shop", Type: "crash"}, 0)
	must(t, err)
	if _, err := e.Process(t.Context(), crash); !errors.Is(err, engine.ErrActivityPanic) || !engine.IsPermanent(err) {
		t.Errorf("panicking activity: got %v", err)
	}
	if _, err := tokens.Get(t.Context(), crash.ID); err != nil {
		t.Errorf("the token of a signal whose activity panicked is gone: %v", err)
	}
	unknown := sig
	unknown.Type = "nope"
	if _, err := e.Process(t.Context(), unknown); !errors.Is(err, engine.ErrUnknownType) {
		t.Errorf("unknown type: got %v", err)
	}
}

// running runs e in a context of the test's until stop cancels it; stop
// waits until Run returned and may be called more than once.
func running(t *testing.T, e *engine.Engine) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = e.Run(ctx); close(done) }()
	return ctx, func() { cancel(); <-done }
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
