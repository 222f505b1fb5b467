package engine_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/embedded"
	"github.com/batonhq/baton/engine"
)

// TestFastPathCommitsNothingToFinishWithoutAnEntry: on the fast path an
// activity that emits nothing and replies nothing commits no outbox entry
// (its token is consumed in the same commit, so the entry would have
// nothing to finish and would only cost a removal), and a copy that comes
// later is dropped as a duplicate. An activity with a reply keeps its
// entry, and on the plain path every activity does: there the entry is what
// finishes the transition after a crash.
func TestFastPathCommitsNothingToFinishWithoutAnEntry(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, c := range []struct {
		name      string
		fast      bool
		reply     []byte
		wantEntry bool
	}{
		{"fast path, nothing to finish", true, nil, false},
		{"fast path, a reply", true, []byte("receipt"), true},
		{"plain path, nothing to finish", false, nil, true},
	} {
		st, err := embedded.Open(filepath.Join(t.TempDir(), "baton.db"), embedded.Config{})
		must(t, err)
		t.Cleanup(func() { _ = st.Close() })
		e, err := engine.New(engine.Config{Destination: "billing", Tokens: st, Entities: st, Dispatch: publisher{},
			DeferRemovals: true, NoFastPath: !c.fast})
		must(t, err)
		must(t, engine.Register(e, engine.Activity[counter]{Type: "charge", Entity: func(baton.Signal) (string, error) { return "account-1", nil },
			Handle: func(_ context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
				s.record(sig)
				return engine.Effects{Reply: c.reply}, nil
			}}))
		charge, err := e.IssueRoot(ctx, baton.Emit{Destination: "billing", Type: "charge", Payload: []byte(`{"cents":100}`)}, 0)
		must(t, err)
		if res, err := e.Process(ctx, charge); err != nil || res.Outcome != engine.Applied {
			t.Fatalf("%s: first copy = %v, %v", c.name, res.Outcome, err)
		}
		// Removals are deferred and not yet flushed: an entry seen now is
		// one the commit wrote.
		ent, err := st.Load(ctx, "account-1")
		must(t, err)
		if _, ok := ent.Entry(charge.ID); ok != c.wantEntry {
			t.Errorf("%s: outbox entry after the commit: %v, want %v", c.name, ok, c.wantEntry)
		}
		res, err := e.Process(ctx, charge)
		switch {
		case err != nil:
			t.Errorf("%s: second copy: %v", c.name, err)
		case c.wantEntry && res.Outcome != engine.Completed:
			t.Errorf("%s: second copy = %v, want Completed from the entry", c.name, res.Outcome)
		case !c.wantEntry && res.Outcome != engine.Duplicate:
			t.Errorf("%s: second copy = %v, want Duplicate", c.name, res.Outcome)
		}
		ent, err = st.Load(ctx, "account-1")
		must(t, err)
		var s counter
		must(t, json.Unmarshal(ent.State, &s))
		if n := s.Applied[charge.ID.String()]; n != 1 {
			t.Errorf("%s: activity applied %d times, want 1", c.name, n)
		}
	}
}
