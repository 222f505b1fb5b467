package client_test

import (
	"testing"

	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// TestLinearizability checks concurrent histories with porcupine through
// the client, over HTTP, against the service over a memory store, once as
// is and once with injected faults that leave outcomes unknown.
func TestLinearizability(t *testing.T) {
	t.Parallel()
	harness := storetest.TokenHarness{
		New: func(t *testing.T) store.TokenStore {
			url, key, _ := service(t)
			return newClient(t, url, key)
		},
	}
	storetest.RunLinearizabilityWithFaults(t, harness)
}
