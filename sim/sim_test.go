package sim_test

import (
	"testing"

	"github.com/batonhq/baton/sim"
)

func TestSeedsHoldInvariants(t *testing.T) {
	t.Parallel()
	for seed := uint64(1); seed <= 40; seed++ {
		r := sim.Run(sim.Options{Seed: seed})
		if !r.OK() {
			for _, line := range r.Trace {
				t.Log(line)
			}
			t.Fatalf("%s", r.Summary())
		}
	}
}

func TestSeedReplaysExactly(t *testing.T) {
	t.Parallel()
	a, b := sim.Run(sim.Options{Seed: 99}), sim.Run(sim.Options{Seed: 99})
	if a.Summary() != b.Summary() || len(a.Counters) != len(b.Counters) {
		t.Fatalf("same seed, different runs:\n%s\n%s", a.Summary(), b.Summary())
	}
	for k, v := range a.Counters {
		if b.Counters[k] != v {
			t.Fatalf("counter %q: %d then %d", k, v, b.Counters[k])
		}
	}
}

// TestFaultsAndRecoveriesHappen guards against a simulation that passes
// because it injects nothing: over a few hundred seeds every fault kind and
// every recovery path must have occurred.
func TestFaultsAndRecoveriesHappen(t *testing.T) {
	t.Parallel()
	totals := map[string]int{}
	fast := 0
	for seed := uint64(1); seed <= 300; seed++ {
		r := sim.Run(sim.Options{Seed: seed})
		if !r.OK() {
			t.Fatal(r.Summary())
		}
		if r.FastPath {
			fast++
		}
		for k, v := range r.Counters {
			totals[k] += v
		}
	}
	for _, want := range sim.RequiredCounters {
		if totals[want] == 0 {
			t.Errorf("counter %q stayed 0 over 300 seeds", want)
		}
	}
	if fast == 0 || fast == 300 {
		t.Errorf("%d of 300 seeds ran the fast path; want both paths covered", fast)
	}
}
