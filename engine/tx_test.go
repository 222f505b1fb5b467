package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/internal/testclock"
	"github.com/batonhq/baton/store"
)

// TestTxActivityWritesWithItsCommit: a transactional activity's own writes
// are committed with the activity, once however often the signal comes,
// and rolled back with a failing or conflicting run.
func TestTxActivityWritesWithItsCommit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tokens, entities := memory.NewTokenStore(), memory.NewEntityStore()
	e, err := engine.New(engine.Config{Destination: "billing", Tokens: tokens, Entities: entities, Dispatch: publisher{}})
	must(t, err)
	fail := errors.New("card declined")
	must(t, engine.RegisterTx(e, engine.TxActivity[counter, *memory.Tx]{Type: "charge", Entity: byConversation,
		Handle: func(_ context.Context, tx *memory.Tx, sig baton.Signal, s *counter) (engine.Effects, error) {
			tx.Put("ledger", sig.ID.String(), sig.Payload)
			if string(sig.Payload) == "declined" {
				return engine.Effects{}, engine.Permanent(fail)
			}
			s.record(sig)
			return engine.Effects{Reply: []byte("charged")}, nil
		}}))

	charge, err := e.IssueRoot(ctx, baton.Emit{Destination: "billing", Type: "charge", Payload: []byte("12")}, 0)
	must(t, err)
	for range 3 {
		if _, err := e.Process(ctx, charge); err != nil {
			t.Fatalf("Process = %v", err)
		}
	}
	if row, ok := entities.Get("ledger", charge.ID.String()); !ok || string(row) != "12" {
		t.Errorf("ledger row of the charge = %q, %v; want it written once", row, ok)
	}
	if n := len(entities.Table("ledger")); n != 1 {
		t.Errorf("%d ledger rows, want 1", n)
	}

	declined, err := e.IssueRoot(ctx, baton.Emit{Destination: "billing", Type: "charge", Payload: []byte("declined")}, 0)
	must(t, err)
	if _, err := e.Process(ctx, declined); !errors.Is(err, fail) || !engine.IsPermanent(err) {
		t.Errorf("a failing activity: %v", err)
	}
	if _, ok := entities.Get("ledger", declined.ID.String()); ok {
		t.Error("the failing activity's write was committed")
	}
	if _, err := tokens.Get(ctx, declined.ID); err != nil {
		t.Errorf("the failing activity's token: %v; want it live", err)
	}

	if err := engine.RegisterTx(e, engine.TxActivity[counter, string]{Type: "refund", Entity: byConversation,
		Handle: func(context.Context, string, baton.Signal, *counter) (engine.Effects, error) {
			return engine.Effects{}, nil
		}}); !errors.Is(err, engine.ErrInvalidActivity) {
		t.Errorf("RegisterTx with a transaction type the store does not offer: %v", err)
	}
}

// TestStartTxStartsOnceOrNothing: a conversation started in the caller's
// transaction is launched once its transaction commits (by the caller, or
// by the sweeper when the caller dies), however often it is launched, and
// a rolled-back transaction starts nothing and leaves no token.
func TestStartTxStartsOnceOrNothing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := testclock.At(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	tokens, entities := memory.NewTokenStore(), memory.NewEntityStore()
	engines := map[string]*engine.Engine{}
	e, err := engine.New(engine.Config{Destination: "shop", Tokens: tokens, Entities: entities,
		Dispatch: publisher{engines}, Now: clk.Now, SweepAfter: time.Second})
	must(t, err)
	engines["shop"] = e
	must(t, engine.Register(e, engine.Activity[counter]{Type: "place", Entity: byConversation,
		Handle: func(_ context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
			s.record(sig)
			return engine.Effects{}, nil
		}}))
	begin := func(row string) *memory.Tx {
		tx := entities.Begin()
		tx.Put("orders", row, []byte("new"))
		return tx
	}

	// Committed and launched by the caller, twice.
	tx := begin("order-1")
	launched, err := engine.StartTx(ctx, e, tx, baton.Emit{Destination: "shop", Type: "place"})
	must(t, err)
	must(t, tx.Commit())
	for range 2 {
		if _, err := e.Launch(ctx, launched); err != nil {
			t.Fatalf("Launch = %v", err)
		}
	}
	// Committed, and the caller died before launching: the sweeper does.
	tx = begin("order-2")
	orphan, err := engine.StartTx(ctx, e, tx, baton.Emit{Destination: "shop", Type: "place"})
	must(t, err)
	must(t, tx.Commit())
	// Rolled back: nothing.
	tx = begin("order-3")
	lost, err := engine.StartTx(ctx, e, tx, baton.Emit{Destination: "shop", Type: "place"})
	must(t, err)
	tx.Rollback()

	clk.Advance(time.Minute)
	if _, err := e.Sweep(ctx); err != nil {
		t.Fatalf("Sweep = %v", err)
	}
	for _, c := range []struct {
		start store.Start
		want  int
	}{{launched, 1}, {orphan, 1}, {lost, 0}} {
		if got := appliedIn(t, entities, c.start.ID); got != c.want {
			t.Errorf("conversation %s applied %d times, want %d", c.start.ID, got, c.want)
		}
		if _, err := entities.LoadStart(ctx, c.start.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("start %s still recorded: %v", c.start.ID, err)
		}
	}
	if _, ok := entities.Get("orders", "order-3"); ok {
		t.Error("the rolled-back transaction's own row was committed")
	}
	if n := tokens.Len(); n != 0 {
		t.Errorf("%d tokens left, want none", n)
	}
	if st := e.Stats(); st.StartsLaunched < 2 {
		t.Errorf("%d starts launched, want at least 2", st.StartsLaunched)
	}
}
