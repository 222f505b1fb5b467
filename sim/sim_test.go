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
