package postgres

import (
	"testing"

	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// TestLinearizability checks concurrent histories with porcupine over a
// store in a schema of its own, once as is and once with injected faults
// that leave outcomes unknown.
func TestLinearizability(t *testing.T) {
	t.Parallel()
	harness := storetest.TokenHarness{
		New: func(t *testing.T) store.TokenStore { return newStore(t) },
	}
	storetest.RunLinearizabilityWithFaults(t, harness)
}
