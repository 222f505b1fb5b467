package memory_test

import (
	"testing"

	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// TestLinearizability checks concurrent histories with porcupine, once as
// is and once with injected faults that leave outcomes unknown.
func TestLinearizability(t *testing.T) {
	t.Parallel()
	harness := storetest.TokenHarness{
		New: func(t *testing.T) store.TokenStore {
			s := memory.NewTokenStore()
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
	storetest.RunLinearizabilityWithFaults(t, harness)
}
