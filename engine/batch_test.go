package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/embedded"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/store"
	memtransport "github.com/batonhq/baton/transport/memory"
)

// TestBatchesApplyEachActivityOnce runs a chain in batches (Config.Batch)
// over the embedded store, with every root sent twice, duplicated and
// reordered deliveries, and charges contending for five accounts (so that
// batches meet signals for one entity, conflicts and consumed tokens).
func TestBatchesApplyEachActivityOnce(t *testing.T) {
	t.Parallel()
	st, err := embedded.Open(filepath.Join(t.TempDir(), "baton.db"), embedded.Config{})
	must(t, err)
	t.Cleanup(func() { _ = st.Close() })
	tr := memtransport.New(memtransport.Config{DuplicateRate: 0.5, Reorder: true, Seed: 11})
	newBatchEngine := func(dest string) *engine.Engine {
		e, err := engine.New(engine.Config{Destination: dest, Tokens: st, Entities: st, Dispatch: tr, Source: tr,
			Batch: 8, Workers: 2, DeferRemovals: dest == "billing", SweepInterval: 50 * time.Millisecond, SweepAfter: 200 * time.Millisecond})
		must(t, err)
		return e
	}
	shop, billing := newBatchEngine("shop"), newBatchEngine("billing")
	must(t, engine.Register(shop, engine.Activity[counter]{Type: "order", Entity: byConversation,
		Handle: func(_ context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
			s.record(sig)
			return engine.Effects{Emit: []baton.Emit{{Destination: "billing", Type: "charge", Payload: sig.Payload}}}, nil
		}}))
	byAccount := func(sig baton.Signal) (string, error) {
		var n int
		if err := json.Unmarshal(sig.Payload, &n); err != nil {
			return "", err
		}
		return fmt.Sprintf("account-%d", n%5), nil
	}
	must(t, engine.Register(billing, engine.Activity[counter]{Type: "charge", Entity: byAccount,
		Handle: func(_ context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
			s.record(sig)
			return engine.Effects{}, nil
		}}))

	ctx, cancel := context.WithCancel(t.Context())
	const orders = 200
	conversations := submitOrders(ctx, t, shop, tr, orders)
	// Every signal is queued before the engines start, so that workers
	// find batches to take.
	var wg sync.WaitGroup
	for _, e := range []*engine.Engine{shop, billing} {
		wg.Go(func() { _ = e.Run(ctx) })
	}
	deadline := time.Now().Add(30 * time.Second)
	for liveTokens(t, st) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if n := liveTokens(t, st); n != 0 {
		t.Errorf("%d tokens still live", n)
	}

	for _, c := range conversations {
		s := loadCounter(t, st, "c-"+c.String())
		if len(s.Applied) != 1 {
			t.Errorf("shop: conversation %s applied %d distinct signals, want 1", c, len(s.Applied))
		}
		for id, n := range s.Applied {
			if n != 1 {
				t.Errorf("shop: signal %s applied %d times", id, n)
			}
		}
	}
	charges := 0
	for a := range 5 {
		s := loadCounter(t, st, fmt.Sprintf("account-%d", a))
		for id, n := range s.Applied {
			if n != 1 {
				t.Errorf("billing: charge %s applied %d times", id, n)
			}
		}
		charges += len(s.Applied)
	}
	if charges != orders {
		t.Errorf("billing applied %d charges, want %d", charges, orders)
	}
	if tr.Stats().Duplicated == 0 {
		t.Error("the transport injected no duplicates")
	}
	for _, e := range []*engine.Engine{shop, billing} {
		s := e.Stats()
		if s.Batched == 0 || s.Batches == 0 {
			t.Errorf("%s: no activity was committed in a batch: %+v", e.Destination(), s)
		}
		if s.Applied != orders {
			t.Errorf("%s: %d activities applied, want %d", e.Destination(), s.Applied, orders)
		}
		t.Logf("%s: %d of %d activities in %d batch commits, %d duplicates dropped, %d conflicts", e.Destination(),
			s.Batched, s.Applied, s.Batches, s.Duplicates, s.Conflicts)
	}
}

func liveTokens(t *testing.T, st store.TokenStore) int {
	t.Helper()
	n := 0
	for _, d := range []string{"shop", "billing"} {
		toks, err := st.ListByDestination(t.Context(), d, store.Page{Limit: store.MaxPageLimit})
		must(t, err)
		n += len(toks)
	}
	return n
}

func loadCounter(t *testing.T, st store.EntityStore, key string) counter {
	t.Helper()
	ent, err := st.Load(t.Context(), key)
	must(t, err)
	if len(ent.Outbox) != 0 {
		t.Errorf("entity %s keeps %d outbox entries", key, len(ent.Outbox))
	}
	var s counter
	if err := json.Unmarshal(ent.State, &s); err != nil {
		t.Fatalf("state of %s: %v", key, err)
	}
	return s
}

// TestSignalsForOneEntityShareBatchesInRounds: signals of one batch for
// the same entity are not sent one by one: each round takes one signal per
// entity, the next reads the state the last left, and every activity is
// applied once, in order of arrival per entity.
func TestSignalsForOneEntityShareBatchesInRounds(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, err := embedded.Open(filepath.Join(t.TempDir(), "baton.db"), embedded.Config{})
	must(t, err)
	t.Cleanup(func() { _ = st.Close() })
	e, err := engine.New(engine.Config{Destination: "billing", Tokens: st, Entities: st, Dispatch: publisher{}, Batch: 16})
	must(t, err)
	must(t, engine.Register(e, engine.Activity[counter]{Type: "charge",
		Entity: func(sig baton.Signal) (string, error) { return "account-" + string(sig.Payload[:1]), nil },
		Handle: func(_ context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
			s.record(sig)
			return engine.Effects{}, nil
		}}))
	// Three charges for each of two accounts, interleaved.
	var sigs []baton.Signal
	for i := range 6 {
		account := "ab"[i%2 : i%2+1]
		sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "billing", Type: "charge", Payload: []byte(fmt.Sprintf("%s%d", account, i))}, 0)
		must(t, err)
		sigs = append(sigs, sig)
	}
	results, errs := e.ProcessBatch(ctx, sigs)
	for i := range sigs {
		if errs[i] != nil || results[i].Outcome != engine.Applied {
			t.Errorf("signal %d: %v, %v", i, results[i].Outcome, errs[i])
		}
	}
	for _, account := range []string{"account-a", "account-b"} {
		s := loadCounter(t, st, account)
		if len(s.Applied) != 3 {
			t.Errorf("%s: %d activities applied, want 3", account, len(s.Applied))
		}
	}
	if stats := e.Stats(); stats.Batches != 3 || stats.Batched != 6 {
		t.Errorf("%d batch commits committed %d activities; want 3 rounds of 2", stats.Batches, stats.Batched)
	}
}
