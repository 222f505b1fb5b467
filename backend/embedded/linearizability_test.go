package embedded

import (
	"testing"

	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// TestLinearizability checks concurrent histories with porcupine over a
// store with group commit on (the default, where concurrent transitions
// share one write transaction), once as is and once with injected faults
// that leave outcomes unknown.
func TestLinearizability(t *testing.T) {
	t.Parallel()
	harness := storetest.TokenHarness{
		New: func(t *testing.T) store.TokenStore { return openTemp(t, Config{}) },
	}
	storetest.RunLinearizabilityWithFaults(t, harness)
}
