package engine_test

import (
	"flag"
	"strings"
	"testing"

	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/sim"
)

var replaySeed = flag.Uint64("sim.seed", 0, "replay one seed of the broken-ordering simulations")

// TestSimulationCatchesBrokenOrderings runs the simulation over engines
// switched to each broken ordering of protocol.md 3.3 and requires a violation
// within a bounded number of seeds, then replays the failing seed and
// requires the identical failure.
func TestSimulationCatchesBrokenOrderings(t *testing.T) {
	t.Parallel()
	for _, v := range engine.BrokenOrderings {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			opts := func(seed uint64) sim.Options {
				return sim.Options{Seed: seed, Configure: func(e *engine.Engine) { engine.SetOrdering(e, v.Ordering) }}
			}
			first, last := uint64(1), uint64(2000)
			if *replaySeed != 0 {
				first, last = *replaySeed, *replaySeed
			}
			for seed := first; seed <= last; seed++ {
				r := sim.Run(opts(seed))
				if r.OK() {
					continue
				}
				again := sim.Run(opts(seed))
				if again.Summary() != r.Summary() || strings.Join(again.Trace, "\n") != strings.Join(r.Trace, "\n") {
					t.Fatalf("seed %d did not replay exactly:\n%s\n%s", seed, r.Summary(), again.Summary())
				}
				t.Logf("caught after %d seeds: %s", seed-first+1, r.Summary())
				t.Logf("replay: go test ./engine -run 'TestSimulationCatchesBrokenOrderings/%s' -v -args -sim.seed=%d", v.Name, seed)
				for _, line := range r.Trace[max(0, len(r.Trace)-25):] {
					t.Log("  " + line)
				}
				return
			}
			t.Fatalf("the simulation did not catch the %s ordering in seeds %d to %d", v.Name, first, last)
		})
	}
}
