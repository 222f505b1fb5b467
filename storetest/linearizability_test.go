package storetest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/store"
)

// Hand-written histories pin down the model: what it must accept and what
// it must reject.
func TestLinearizabilityModel(t *testing.T) {
	t.Parallel()
	const open = math.MaxInt64 // no response: outcome unknown
	issue := func(tag int32) linInput { return linInput{kind: linIssue, tag: tag} }
	issued := func(slot int8) linOutput { return linOutput{outcome: linIssued, slot: slot} }
	transition := func(id int8, children ...linChild) linInput {
		in := linInput{kind: linTransition, id: id, n: int8(len(children))}
		copy(in.children[:], children)
		return in
	}
	get := func(id int8) linInput { return linInput{kind: linGet, id: id} }
	out := func(o linOutcome) linOutput { return linOutput{outcome: o} }
	found := func(tag int32) linOutput { return linOutput{outcome: linFound, tag: tag} }
	op := func(client int, call, ret int64, in linInput, o linOutput) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Call: call, Return: ret, Input: in, Output: o}
	}
	cases := []struct {
		name string
		ok   bool
		ops  []porcupine.Operation
	}{
		{"a transition consumes its parent and creates its children", true, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(0, 2, 3, transition(0, linChild{1, 2}, linChild{2, 3}), out(linConsumed)),
			op(0, 4, 5, get(1), found(2)),
			op(0, 6, 7, get(2), found(3)),
			op(0, 8, 9, get(0), out(linNotFound)),
		}},
		{"a token consumed twice", false, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(0, 2, 3, transition(0), out(linConsumed)),
			op(0, 4, 5, transition(0), out(linConsumed)),
		}},
		{"two concurrent transitions both consume", false, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(1, 2, 10, transition(0, linChild{1, 2}), out(linConsumed)),
			op(2, 3, 9, transition(0, linChild{2, 3}), out(linConsumed)),
		}},
		{"two concurrent transitions, one consumes", true, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(1, 2, 10, transition(0, linChild{1, 2}), out(linNotConsumed)),
			op(2, 3, 9, transition(0, linChild{2, 3}), out(linConsumed)),
			op(1, 11, 12, get(2), found(3)),
			op(1, 13, 14, get(1), out(linNotFound)),
		}},
		{"a transition refused with ErrExists consumed its parent", false, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(0, 2, 3, issue(2), issued(1)),
			op(0, 4, 5, transition(0, linChild{1, 3}), out(linExists)),
			op(0, 6, 7, get(0), out(linNotFound)),
		}},
		{"a transition refused with ErrExists created a child", false, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(0, 2, 3, issue(2), issued(1)),
			op(0, 4, 5, transition(0, linChild{1, 3}, linChild{2, 4}), out(linExists)),
			op(0, 6, 7, get(2), found(4)),
		}},
		{"an absent parent with a live child is not consumed, not ErrExists", false, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(1)),
			op(0, 2, 3, transition(0, linChild{1, 2}), out(linExists)),
		}},
		{"a child is visible before its parent is consumed", false, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(1, 2, 20, transition(0, linChild{1, 2}), out(linConsumed)),
			op(0, 3, 4, get(1), found(2)),
			op(0, 5, 6, get(0), found(1)),
		}},
		{"a consumed child comes back", false, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(0, 2, 3, transition(0, linChild{1, 2}), out(linConsumed)),
			op(0, 4, 5, transition(1), out(linConsumed)),
			op(0, 6, 7, get(1), found(2)),
		}},
		{"a stale read", false, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(1, 2, 3, get(0), out(linNotFound)),
		}},
		{"a read of a token that is yet to be issued", false, []porcupine.Operation{
			op(1, 0, 1, get(0), found(1)),
			op(0, 2, 3, issue(1), issued(0)),
		}},
		{"a concurrent read may see an issue or not", true, []porcupine.Operation{
			op(0, 0, 10, issue(1), issued(0)),
			op(1, 2, 3, get(0), found(1)),
			op(2, 4, 5, get(0), found(1)),
		}},
		{"Issue returns the id of a consumed root", false, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(0, 2, 3, transition(0), out(linConsumed)),
			op(0, 4, 5, issue(3), issued(0)),
		}},
		{"Issue returns the id of a consumed child", false, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(0, 2, 3, transition(0, linChild{1, 2}), out(linConsumed)),
			op(0, 4, 5, transition(1), out(linConsumed)),
			op(0, 6, 7, issue(3), issued(1)),
		}},
		{"a consumed child's id may be created again by a transition", true, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(0, 2, 3, issue(2), issued(2)),
			op(0, 4, 5, transition(0, linChild{1, 3}), out(linConsumed)),
			op(0, 6, 7, transition(1), out(linConsumed)),
			op(0, 8, 9, transition(2, linChild{1, 4}), out(linConsumed)),
			op(0, 10, 11, get(1), found(4)),
		}},
		{"or refused, as a store keeping tombstones would", true, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(0, 2, 3, issue(2), issued(2)),
			op(0, 4, 5, transition(0, linChild{1, 3}), out(linConsumed)),
			op(0, 6, 7, transition(1), out(linConsumed)),
			op(0, 8, 9, transition(2, linChild{1, 4}), out(linExists)),
			op(0, 10, 11, get(2), found(2)),
		}},
		{"a live id is never issued again", false, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(0, 2, 3, issue(2), issued(0)),
		}},
		{"an unknown transition may have taken effect", true, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(1, 2, open, transition(0, linChild{1, 2}), out(linUnknown)),
			op(0, 5, 6, get(1), found(2)),
			op(0, 7, 8, get(0), out(linNotFound)),
		}},
		{"or not", true, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(1, 2, open, transition(0, linChild{1, 2}), out(linUnknown)),
			op(0, 5, 6, get(0), found(1)),
			op(0, 7, 8, get(1), out(linNotFound)),
		}},
		{"but not half of it", false, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(1, 2, open, transition(0, linChild{1, 2}), out(linUnknown)),
			op(0, 5, 6, get(0), out(linNotFound)),
			op(0, 7, 8, get(1), out(linNotFound)),
		}},
		{"and not before its call", false, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(0, 2, 3, get(1), found(2)),
			op(1, 4, open, transition(0, linChild{1, 2}), out(linUnknown)),
		}},
		{"and not undone", false, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(1, 2, open, transition(0, linChild{1, 2}), out(linUnknown)),
			op(0, 5, 6, get(1), found(2)),
			op(0, 7, 8, get(1), out(linNotFound)),
		}},
		{"an unknown transition that took effect late", true, []porcupine.Operation{
			op(0, 0, 1, issue(1), issued(0)),
			op(1, 2, open, transition(0, linChild{1, 2}), out(linUnknown)),
			op(0, 5, 6, get(1), out(linNotFound)),
			op(0, 7, 8, get(1), found(2)),
			op(0, 9, 10, transition(1), out(linConsumed)),
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			result, _ := checkHistory(linHistory{ops: c.ops}, 10*time.Second)
			want := porcupine.Illegal
			if c.ok {
				want = porcupine.Ok
			}
			if result != want {
				t.Errorf("check = %s, want %s; history:\n%s", result, want, describeHistory(c.ops))
			}
		})
	}
}

// The memory store, with and without injected faults, is linearizable,
// and the workload produces every kind of outcome, unknown ones included.
func TestLinearizabilityOfMemory(t *testing.T) {
	t.Parallel()
	for _, rate := range []float64{0, 0.2} {
		t.Run(fmt.Sprintf("faults=%v", rate), func(t *testing.T) {
			t.Parallel()
			opts, err := LinearizabilityOptions{}.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			var s store.TokenStore = memory.NewTokenStore()
			if rate > 0 {
				s = Faulty(s, opts.Seed, rate)
			}
			run := recordLinearizability(testContext(t), s, opts)
			for _, p := range run.problems {
				t.Error(p)
			}
			for _, h := range run.histories {
				if result, _ := checkHistory(h, opts.CheckTimeout); result != porcupine.Ok {
					t.Errorf("history %d of the memory store: %s (seed %d)\n%s", h.index, result, opts.Seed, describeHistory(h.ops))
				}
			}
			st := run.stats
			t.Logf("seed %d: %s", opts.Seed, st)
			if st.issued == 0 || st.exists == 0 || st.consumed == 0 || st.notConsumd == 0 || st.found == 0 || st.notFound == 0 {
				t.Errorf("the workload misses an outcome: %s", st)
			}
			if rate > 0 && (st.unknown == 0 || st.dropped == 0) {
				t.Errorf("with faults injected, no operation had an unknown outcome or was left out: %s", st)
			}
			if rate == 0 && (st.unknown != 0 || st.dropped != 0 || st.failedReads != 0) {
				t.Errorf("without faults, operations failed: %s", st)
			}
		})
	}
}

// caught runs the linearizability check over s and reports whether some
// history has no linearization.
func caught(t *testing.T, s store.TokenStore, opts LinearizabilityOptions) bool {
	t.Helper()
	opts, err := opts.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	run := recordLinearizability(testContext(t), s, opts)
	for _, h := range run.histories {
		result, _ := checkHistory(h, opts.CheckTimeout)
		if result == porcupine.Unknown {
			t.Fatalf("history %d: the check timed out", h.index)
		}
		if result == porcupine.Illegal {
			return true
		}
	}
	return false
}

// A store that answers "consumed" again for a token it consumed before,
// as a cache of first answers might, is caught; with one client and a
// fixed seed the history, and so the verdict, is the same on every run.
func TestLinearizabilityCatchesRepeatedConsumption(t *testing.T) {
	t.Parallel()
	for _, seed := range []uint64{1, 2, 3} {
		if !caught(t, &replayStore{TokenStore: memory.NewTokenStore()}, LinearizabilityOptions{Clients: 1, OpsPerClient: 60, Seed: seed}) {
			t.Errorf("seed %d: a store that reports consuming a token twice passed the check", seed)
		}
	}
	if !caught(t, &replayStore{TokenStore: memory.NewTokenStore()}, LinearizabilityOptions{}) {
		t.Error("with concurrent clients, a store that reports consuming a token twice passed the check")
	}
}

// A store whose Transition checks the parent and acts in two steps is
// caught: two concurrent transitions both consume the parent. The race
// needs an interleaving, so the check gets a few runs; a run rarely
// misses it.
func TestLinearizabilityCatchesCheckThenAct(t *testing.T) {
	t.Parallel()
	const runs = 10
	for i := 1; i <= runs; i++ {
		if caught(t, newRacyStore(), LinearizabilityOptions{}) {
			t.Logf("caught in run %d", i)
			return
		}
	}
	t.Errorf("a store with check-then-act transitions passed %d runs of the check", runs)
}

// replayStore reports consumed=true for a token it consumed before.
type replayStore struct {
	store.TokenStore
	mu       sync.Mutex
	consumed map[baton.TokenID]bool
}

func (s *replayStore) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	consumed, err := s.TokenStore.Transition(ctx, consume, create)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		return consumed, err
	}
	if consumed {
		if s.consumed == nil {
			s.consumed = make(map[baton.TokenID]bool)
		}
		s.consumed[consume] = true
	}
	return consumed || s.consumed[consume], nil
}

// racyStore checks a transition under its lock, then lets go of the lock
// before it applies it: the bug that R2's (protocol.md 3.1) atomic transition rules
// out.
type racyStore struct {
	*memory.TokenStore // for the listings and expiry, which the check does not use
	mu                 sync.Mutex
	tokens             map[baton.TokenID]baton.Token
}

func newRacyStore() *racyStore {
	return &racyStore{TokenStore: memory.NewTokenStore(), tokens: make(map[baton.TokenID]baton.Token)}
}

func (s *racyStore) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	s.mu.Lock()
	_, live := s.tokens[consume]
	for _, c := range create {
		if _, exists := s.tokens[c.ID]; exists && live {
			s.mu.Unlock()
			return false, fmt.Errorf("%w: token %s", store.ErrExists, c.ID)
		}
	}
	s.mu.Unlock()
	if !live {
		return false, nil
	}
	time.Sleep(time.Millisecond) // the window between check and act
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, consume)
	for _, c := range create {
		s.tokens[c.ID] = c
	}
	return true, nil
}

func (s *racyStore) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	tok, err := store.NewRoot(root, rand.Reader)
	if err != nil {
		return baton.Token{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[tok.ID] = tok
	return tok, nil
}

func (s *racyStore) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[id]
	if !ok {
		return baton.Token{}, fmt.Errorf("%w: token %s", store.ErrNotFound, id)
	}
	return t, nil
}

// countingStore counts the calls that reach it.
type countingStore struct {
	store.TokenStore
	mu    sync.Mutex
	calls int
}

func (s *countingStore) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	return s.TokenStore.Issue(ctx, root)
}

// Faulty fails before the call with an error matching store.ErrNotApplied,
// and after the call (which then took effect) with one that does not.
func TestFaulty(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	inner := &countingStore{TokenStore: memory.NewTokenStore()}
	s := Faulty(inner, 7, 0.5)
	const calls = 400
	var ok, before, after int
	for i := range calls {
		reached := inner.calls
		live, _ := inner.ListByDestination(ctx, "orders", store.Page{Limit: store.MaxPageLimit})
		_, err := s.Issue(ctx, newRoot(baton.TokenID{}, "orders"))
		now, _ := inner.ListByDestination(ctx, "orders", store.Page{Limit: store.MaxPageLimit})
		applied := len(now) > len(live)
		switch {
		case err == nil:
			ok++
			if !applied {
				t.Fatalf("call %d succeeded but the token is not there", i)
			}
		case errors.Is(err, store.ErrNotApplied):
			before++
			if !errors.Is(err, ErrInjected) || applied || inner.calls != reached {
				t.Fatalf("call %d: %v, but the call reached the store (applied %v)", i, err, applied)
			}
		default:
			after++
			if !errors.Is(err, ErrInjected) || store.NotApplied(err) || !applied {
				t.Fatalf("call %d: %v (not applied: %v), applied %v; want an unknown outcome after the call took effect", i, err, store.NotApplied(err), applied)
			}
		}
	}
	t.Logf("%d calls: %d passed, %d failed before, %d failed after", calls, ok, before, after)
	for _, n := range []int{ok, before, after} {
		if n < calls/8 {
			t.Errorf("at rate 0.5, %d calls: %d passed, %d failed before, %d failed after; want about %d, %d, %d", calls, ok, before, after, calls/2, calls/4, calls/4)
			break
		}
	}

	// The same seed fails the same calls.
	a, b := Faulty(memory.NewTokenStore(), 3, 0.3), Faulty(memory.NewTokenStore(), 3, 0.3)
	for i := range 50 {
		id := baton.NewTokenID()
		_, errA := a.Get(ctx, id)
		_, errB := b.Get(ctx, id)
		if errors.Is(errA, ErrInjected) != errors.Is(errB, ErrInjected) || store.NotApplied(errA) != store.NotApplied(errB) {
			t.Fatalf("call %d: stores with one seed failed differently: %v, %v", i, errA, errB)
		}
	}
}
