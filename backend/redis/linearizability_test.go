package redis

import (
	"testing"

	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// TestLinearizability checks concurrent histories with porcupine on the
// machine's Redis (durability waived: linearizability does not depend on
// fsync), once as is and once with injected faults that leave outcomes
// unknown.
func TestLinearizability(t *testing.T) {
	t.Parallel()
	harness := storetest.TokenHarness{
		New: func(t *testing.T) store.TokenStore { return sharedStore(t) },
	}
	storetest.RunLinearizabilityWithFaults(t, harness)
}
