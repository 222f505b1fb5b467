package engine_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	memtransport "github.com/batonhq/baton/transport/memory"
)

func TestPoisonSignalIsParkedWithItsTokenLive(t *testing.T) {
	t.Parallel()
	for _, permanent := range []bool{false, true} {
		tokens := memory.NewTokenStore()
		broker := memtransport.New(memtransport.Config{})
		e, err := engine.New(engine.Config{Destination: "shop", Tokens: tokens, Entities: memory.NewEntityStore(),
			Dispatch: broker, Source: broker, MaxAttempts: 3, RedeliveryDelay: time.Millisecond})
		must(t, err)
		var runs atomic.Int32
		must(t, engine.Register(e, engine.Activity[counter]{Type: "order", Entity: byConversation,
			Handle: func(context.Context, baton.Signal, *counter) (engine.Effects, error) {
				runs.Add(1)
				err := errors.New("card service down")
				if permanent {
					return engine.Effects{}, engine.Permanent(err)
				}
				return engine.Effects{}, err
			}}))
		ctx, stop := running(t, e)
		sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order"}, 0)
		must(t, err)
		must(t, broker.Publish(ctx, sig))
		deadline := time.Now().Add(10 * time.Second)
		for len(broker.Parked()) == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		stop()
		parked := broker.Parked()
		if len(parked) != 1 || parked[0].Signal.ID != sig.ID {
			t.Fatalf("permanent=%v: parked %v, want the signal", permanent, parked)
		}
		want := int32(3)
		if permanent {
			want = 1
		}
		if runs.Load() != want {
			t.Errorf("permanent=%v: handler ran %d times, want %d", permanent, runs.Load(), want)
		}
		if _, err := tokens.Get(t.Context(), sig.ID); err != nil {
			t.Errorf("permanent=%v: the parked signal's token is gone: %v", permanent, err)
		}
		if e.Stats().Parked != 1 {
			t.Errorf("parked counter = %d", e.Stats().Parked)
		}
	}
}

func TestRunFinishesWorkInProgressOnShutdown(t *testing.T) {
	t.Parallel()
	tokens := memory.NewTokenStore()
	broker := memtransport.New(memtransport.Config{})
	e, err := engine.New(engine.Config{Destination: "shop", Tokens: tokens, Entities: memory.NewEntityStore(),
		Dispatch: broker, Source: broker})
	must(t, err)
	started := make(chan struct{})
	var once sync.Once
	must(t, engine.Register(e, engine.Activity[counter]{Type: "order", Entity: byConversation,
		Handle: func(ctx context.Context, _ baton.Signal, _ *counter) (engine.Effects, error) {
			once.Do(func() { close(started) })
			time.Sleep(100 * time.Millisecond) // still running when shutdown begins
			return engine.Effects{}, ctx.Err()
		}}))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = e.Run(ctx); close(done) }()
	sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order"}, 0)
	must(t, err)
	must(t, broker.Publish(ctx, sig))
	<-started
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if e.Stats().Applied != 1 || tokens.Len() != 0 {
		t.Fatalf("the signal in progress was not finished: %+v, %d tokens live", e.Stats(), tokens.Len())
	}
}

// With DeferRemovals, Run acknowledges before step 7 and removes the
// entries in the background; once quiet and stopped, none is left.
func TestDeferredRemovalsLeaveNoEntry(t *testing.T) {
	t.Parallel()
	tokens := memory.NewTokenStore()
	entities := memory.NewEntityStore()
	broker := memtransport.New(memtransport.Config{DuplicateRate: 0.3, Seed: 3})
	e, err := engine.New(engine.Config{Destination: "shop", Tokens: tokens, Entities: entities,
		Dispatch: broker, Source: broker, DeferRemovals: true})
	must(t, err)
	must(t, engine.Register(e, engine.Activity[counter]{Type: "order", Entity: byConversation,
		Handle: func(_ context.Context, sig baton.Signal, c *counter) (engine.Effects, error) {
			if c.Applied == nil {
				c.Applied = map[string]int{}
			}
			c.Applied[sig.ID.String()]++
			return engine.Effects{}, nil
		}}))
	ctx, stop := running(t, e)
	const orders = 40
	for range orders {
		sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order"}, 0)
		must(t, err)
		must(t, broker.Publish(ctx, sig))
	}
	deadline := time.Now().Add(20 * time.Second)
	for (tokens.Len() > 0 || e.Stats().EntriesRemoved < orders) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	st := e.Stats()
	if tokens.Len() != 0 || st.Applied != orders || st.EntriesRemoved != orders {
		t.Fatalf("live tokens %d, applied %d, entries removed %d; want 0, %d, %d", tokens.Len(), st.Applied, st.EntriesRemoved, orders, orders)
	}
	for _, key := range entities.Keys() {
		ent, err := entities.Load(t.Context(), key)
		must(t, err)
		if len(ent.Outbox) != 0 {
			t.Errorf("%s still holds %d outbox entries", key, len(ent.Outbox))
		}
	}
}

// TestWorkersDoNotRaceForAnEntity: a worker of Run holds an entity while
// it processes it and the others leave its deliveries to it, so the
// workers of one process never conflict on an entity's version however
// many signals for it arrive at once.
func TestWorkersDoNotRaceForAnEntity(t *testing.T) {
	t.Parallel()
	tokens, entities := memory.NewTokenStore(), memory.NewEntityStore()
	broker := memtransport.New(memtransport.Config{})
	e, err := engine.New(engine.Config{Destination: "billing", Tokens: tokens, Entities: entities,
		Dispatch: broker, Source: broker, Workers: 4})
	must(t, err)
	must(t, engine.Register(e, engine.Activity[counter]{Type: "charge",
		Entity: func(sig baton.Signal) (string, error) { return "account-" + string(sig.Payload), nil },
		Handle: func(_ context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
			s.record(sig)
			time.Sleep(time.Millisecond) // a handler that takes a while widens any race
			return engine.Effects{}, nil
		}}))
	ctx := t.Context()
	const charges = 60
	for i := range charges {
		sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "billing", Type: "charge", Payload: []byte{byte('a' + i%2)}}, 0)
		must(t, err)
		must(t, broker.Publish(ctx, sig))
	}
	_, stop := running(t, e)
	deadline := time.Now().Add(20 * time.Second)
	for tokens.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	if n := tokens.Len(); n != 0 {
		t.Fatalf("%d tokens still live", n)
	}
	if c := e.Stats().Conflicts; c != 0 {
		t.Errorf("%d version conflicts between the workers of one process, want 0", c)
	}
}

// TestSlowEntityHoldsBackOnlyItself: while one entity's activity hangs,
// Run keeps processing the signals of every other entity, with all but the
// hung worker.
func TestSlowEntityHoldsBackOnlyItself(t *testing.T) {
	t.Parallel()
	tokens, entities := memory.NewTokenStore(), memory.NewEntityStore()
	broker := memtransport.New(memtransport.Config{})
	e, err := engine.New(engine.Config{Destination: "billing", Tokens: tokens, Entities: entities,
		Dispatch: broker, Source: broker, Workers: 2})
	must(t, err)
	release := make(chan struct{})
	var fast atomic.Int32
	must(t, engine.Register(e, engine.Activity[counter]{Type: "charge",
		Entity: func(sig baton.Signal) (string, error) { return "account-" + string(sig.Payload), nil },
		Handle: func(ctx context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
			if string(sig.Payload) == "slow" {
				select {
				case <-release:
				case <-ctx.Done():
					return engine.Effects{}, ctx.Err()
				}
			} else {
				fast.Add(1)
			}
			s.record(sig)
			return engine.Effects{}, nil
		}}))
	ctx, stop := running(t, e)
	defer stop()
	defer close(release)
	publish := func(account string) {
		sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "billing", Type: "charge", Payload: []byte(account)}, 0)
		must(t, err)
		must(t, broker.Publish(ctx, sig))
	}
	publish("slow")
	const others = 40
	for i := range others {
		publish(string(rune('a' + i%26)))
	}
	deadline := time.Now().Add(20 * time.Second)
	for fast.Load() < others {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d signals of other entities processed while one entity hangs", fast.Load(), others)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
