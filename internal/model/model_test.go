package model

import (
	"strings"
	"testing"
	"time"
)

// TestProtocolModel is the first layer of the proofs: the protocol of protocol.md 3.2 holds
// the invariants of protocol.md 3.5 in every reachable state, and each broken
// ordering of protocol.md 3.3 is caught with a counterexample. Nothing here is
// shortened under -short: the exhaustive run is the point.
func TestProtocolModel(t *testing.T) {
	t.Run("Correct", func(t *testing.T) {
		start := time.Now()
		res := Check(Correct, Options{})
		t.Logf("explored %d states in %v", res.States, time.Since(start).Round(time.Millisecond))
		if res.Violation != nil {
			t.Fatalf("correct protocol violates an invariant:\n%s", res.Violation)
		}
		if !res.Complete {
			t.Fatal("search did not finish")
		}
		if res.States < 1_000_000 {
			t.Fatalf("explored %d states, want at least 1,000,000", res.States)
		}
	})

	// Acking before the removal (engine.Config.DeferRemovals) is correct
	// too: a crash after the ack leaves the entry to the sweeper. So is
	// the fast path (one snapshot read, one atomic commit with the
	// transition), with either order of ack and removal, and with a
	// worker that takes both signals as a chain in one commit.
	for _, v := range []Variant{DeferredRemoval, FastPath, FastPathDeferredRemoval, FastPathChain} {
		t.Run(v.String(), func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			res := Check(v, Options{})
			t.Logf("explored %d states in %v", res.States, time.Since(start).Round(time.Millisecond))
			if res.Violation != nil {
				t.Fatalf("%v violates an invariant:\n%s", v, res.Violation)
			}
			if !res.Complete || res.States < 1_000_000 {
				t.Fatalf("explored %d states (complete %t), want a complete search of at least 1,000,000", res.States, res.Complete)
			}
		})
	}

	// Each broken variant must fail for the reason protocol.md 3.3 gives.
	broken := []struct {
		variant Variant
		want    string // part of the broken invariant
	}{
		{TokenBeforeEntity, "activity of S1 applied 2 times"},
		{SplitTransition, "resurrected after it was consumed"},
		{RemoveBeforeConsume, "activity of S1 applied 2 times"},
		{ExpiryWithoutClaim, "expired away after S1's activity was committed"},
	}
	for _, tc := range broken {
		t.Run(tc.variant.String(), func(t *testing.T) {
			// These stop at the first violation, within milliseconds.
			t.Parallel()
			res := Check(tc.variant, Options{})
			if res.Violation == nil {
				t.Fatalf("no violation found in %d states; the checker misses this broken ordering", res.States)
			}
			t.Logf("caught after %d states\n%s", res.States, res.Violation)
			if !strings.Contains(res.Violation.Invariant, tc.want) {
				t.Errorf("broken invariant %q, want one containing %q", res.Violation.Invariant, tc.want)
			}
			if len(res.Violation.Trace) == 0 {
				t.Error("violation has no trace")
			}
		})
	}
}

// TestMaxStates checks that the bound stops the search and says so.
func TestMaxStates(t *testing.T) {
	res := Check(Correct, Options{MaxStates: 1000})
	if res.Complete || res.States != 1000 || res.Violation != nil {
		t.Fatalf("got %+v, want an incomplete run of 1000 states", res)
	}
}

// TestCheckerCatchesMutants makes sure the checks that only fire late
// (quiescence, livelock) are live: protocols that drop a step must fail.
func TestCheckerCatchesMutants(t *testing.T) {
	t.Parallel()
	mutants := []struct {
		name    string
		variant Variant
		mutate  func(p *program)
		want    string
	}{
		{"NoDispatch", Correct, func(p *program) { p.next[stepTransition] = stepRemove }, "never dispatched"},
		// Workers ack without removing and the sweeper, finishing the same
		// block, never removes either: it picks the entry forever.
		{"NoRemoval", Correct, func(p *program) { p.next[stepDispatch] = stepAck }, "livelock"},
		// A worker that waits until the entity's outbox is empty before it
		// commits (as a serialised outbox would) is blocked by an entry
		// that only another actor can finish.
		{"WaitForEmptyOutbox", Correct, func(p *program) { p.waitForEmptyOutbox = true }, "blocked"},
		// The fast path's commit without its guard: a failed
		// compare-and-set still consumes the token, and the retry finds
		// it gone and drops its own signal.
		{"FastPathConsumeOnConflict", FastPath, func(p *program) { p.consumeOnConflict = true }, "consumed but no child token created"},
		// The fast path's commit not conditional on the token: a copy
		// whose token is gone (consumed, or expired away) commits anyway.
		{"FastPathCommitWithoutToken", FastPath, func(p *program) { p.commitWithoutToken = true }, "after S1's activity was committed"},
		// A chain is all or nothing: committed while one of its tokens
		// is gone (here t1, expired away), that signal's activity is
		// applied without its token, and its child never created.
		{"ChainWithATokenGone", FastPathChain, func(p *program) { p.chainWithATokenGone = true }, "expired away after S1's activity was committed"},
		// Each signal of a chain keeps its own outbox entry: without
		// S2's, a crash before its child is sent loses that child.
		{"ChainOneEntry", FastPathChain, func(p *program) { p.chainOneEntry = true }, "never dispatched"},
	}
	for _, m := range mutants {
		p := programFor(m.variant)
		m.mutate(&p)
		res := check(p, Options{})
		if res.Violation == nil {
			t.Errorf("%s: no violation in %d states", m.name, res.States)
			continue
		}
		if !strings.Contains(res.Violation.Invariant, m.want) {
			t.Errorf("%s: broken invariant %q, want one containing %q", m.name, res.Violation.Invariant, m.want)
		}
		t.Logf("%s: caught after %d states\n%s", m.name, res.States, res.Violation)
	}
}
