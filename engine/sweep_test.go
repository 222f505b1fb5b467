package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
)

type publishFunc func(ctx context.Context, sig baton.Signal) error

func (f publishFunc) Publish(ctx context.Context, sig baton.Signal) error { return f(ctx, sig) }

// An outbox entry whose receiver rejects it must not keep the sweeper from
// finishing the entries of other entities.
func TestSweepGoesOnPastAnEntryThatFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	brokerDown := true
	dispatch := publishFunc(func(_ context.Context, sig baton.Signal) error {
		switch {
		case sig.Destination == "rejecting":
			return engine.ErrRejected
		case brokerDown:
			return errors.New("broker down")
		}
		return nil
	})
	entities := memory.NewEntityStore()
	e, err := engine.New(engine.Config{Destination: "shop", Tokens: memory.NewTokenStore(), Entities: entities,
		Dispatch: dispatch, DispatchAttempts: 1,
		Now:   func() time.Time { return now },
		Sleep: func(context.Context, time.Duration) error { return nil }})
	must(t, err)
	// The payload names the entity (first byte) and where its activity
	// emits to (the rest).
	must(t, engine.Register(e, engine.Activity[counter]{Type: "order",
		Entity: func(sig baton.Signal) (string, error) { return string(sig.Payload[:1]), nil },
		Handle: func(_ context.Context, sig baton.Signal, _ *counter) (engine.Effects, error) {
			return engine.Effects{Emit: []baton.Emit{{Destination: string(sig.Payload[1:]), Type: "next"}}}, nil
		}}))
	for _, payload := range []string{"arejecting", "bhealthy"} {
		sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order", Payload: []byte(payload)}, 0)
		must(t, err)
		if _, err := e.Process(ctx, sig); err == nil {
			t.Fatalf("processing %s dispatched with the broker down", payload)
		}
	}

	brokerDown = false
	now = now.Add(time.Hour)
	finished, err := e.Sweep(ctx)
	if !errors.Is(err, engine.ErrRejected) {
		t.Errorf("Sweep error = %v, want the rejected entry reported", err)
	}
	if finished != 1 {
		t.Errorf("Sweep finished %d entries, want 1", finished)
	}
	healthy, err := entities.Load(ctx, "b")
	must(t, err)
	if len(healthy.Outbox) != 0 {
		t.Errorf("entity b still holds %d outbox entries: the stuck entry of entity a blocked the sweeper", len(healthy.Outbox))
	}
	stuck, err := entities.Load(ctx, "a")
	must(t, err)
	if len(stuck.Outbox) != 1 {
		t.Errorf("entity a holds %d outbox entries, want its rejected entry kept", len(stuck.Outbox))
	}
}

// TestRunCountsSweepFailures: a sweep of Run that cannot finish an entry
// (its receiver refuses the signal for good) counts as a sweeper failure.
func TestRunCountsSweepFailures(t *testing.T) {
	t.Parallel()
	dispatch := publishFunc(func(context.Context, baton.Signal) error { return engine.ErrRejected })
	e, err := engine.New(engine.Config{Destination: "shop", Tokens: memory.NewTokenStore(), Entities: memory.NewEntityStore(),
		Dispatch: dispatch, DispatchAttempts: 1, SweepAfter: time.Millisecond, SweepInterval: 10 * time.Millisecond})
	must(t, err)
	must(t, engine.Register(e, engine.Activity[counter]{Type: "order",
		Entity: func(baton.Signal) (string, error) { return "o", nil },
		Handle: func(context.Context, baton.Signal, *counter) (engine.Effects, error) {
			return engine.Effects{Emit: []baton.Emit{{Destination: "rejecting", Type: "next"}}}, nil
		}}))
	ctx := t.Context()
	sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order"}, 0)
	must(t, err)
	_, _ = e.Process(ctx, sig) // committed; its dispatch is refused, the entry stays
	_, stop := running(t, e)
	defer stop()
	for deadline := time.Now().Add(10 * time.Second); e.Stats().SweepFailures == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no sweeper failure counted")
		}
	}
	if got := e.Stats().Counters()["sweeper.failures"]; got == 0 {
		t.Errorf("counter sweeper.failures = %d", got)
	}
}
