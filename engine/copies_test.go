package engine_test

import (
	"context"
	"errors"
	"testing"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
)

// TestOnlyTheSameSignalFindsItsOutboxEntry: while an activity's outbox
// entry is held (here: its removal deferred), a copy that reuses the
// token id with another payload, type, conversation or causation is
// refused and gets no reply, and the entry stays for the genuine copy,
// which still gets the reply. Before entries recorded their signal, step 2
// handed the reply to any signal with the id.
func TestOnlyTheSameSignalFindsItsOutboxEntry(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tokens, entities := memory.NewTokenStore(), memory.NewEntityStore()
	for _, fast := range []bool{false, true} {
		e, err := engine.New(engine.Config{Destination: "shop", Tokens: tokens, Entities: entities,
			Dispatch: publisher{}, DeferRemovals: true, NoFastPath: !fast})
		must(t, err)
		for _, typ := range []string{"order", "refund"} {
			// One entity for every copy, so that each finds the entry.
			must(t, engine.Register(e, engine.Activity[counter]{Type: typ, Entity: func(baton.Signal) (string, error) { return "the-shop", nil },
				Handle: func(_ context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
					s.record(sig)
					return engine.Effects{Reply: []byte("receipt for " + sig.ID.String())}, nil
				}}))
		}
		order, err := e.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order", Payload: []byte(`{"cart":7}`)}, 0)
		must(t, err)
		res, err := e.Process(ctx, order)
		if err != nil || res.Outcome != engine.Applied {
			t.Fatalf("fast %v: first copy = %v, %v", fast, res.Outcome, err)
		}

		payload, typ, conversation, causation := order, order, order, order
		payload.Payload = []byte(`{"cart":8}`)
		typ.Type = "refund"
		conversation.Conversation = baton.NewTokenID()
		causation.Causation = baton.NewTokenID()
		for name, c := range map[string]struct {
			sig  baton.Signal
			want error
		}{
			"another payload":      {payload, engine.ErrDigestMismatch},
			"another type":         {typ, engine.ErrTokenMismatch},
			"another conversation": {conversation, engine.ErrTokenMismatch},
			"another causation":    {causation, engine.ErrTokenMismatch},
		} {
			res, err := e.Process(ctx, c.sig)
			if !errors.Is(err, c.want) || !engine.IsPermanent(err) {
				t.Errorf("fast %v: a copy with %s = %v, %v; want a permanent %v", fast, name, res.Outcome, err, c.want)
			}
			if res.Reply != nil {
				t.Errorf("fast %v: a copy with %s got the reply %q", fast, name, res.Reply)
			}
		}

		res, err = e.Process(ctx, order)
		if err != nil || res.Outcome != engine.Completed || string(res.Reply) != "receipt for "+order.ID.String() {
			t.Errorf("fast %v: the genuine copy after the tampered ones = %v %q, %v; want completed with its reply", fast, res.Outcome, res.Reply, err)
		}
		if n, err := e.RemovePending(ctx); err != nil || n != 1 {
			t.Errorf("fast %v: RemovePending = %d, %v; want the one entry", fast, n, err)
		}
	}
}
