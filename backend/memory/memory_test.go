package memory_test

import (
	"testing"

	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// The in-memory stores keep nothing across a restart, so the harnesses have
// no Reopen and the durability checks are skipped.

func TestTokenStore(t *testing.T) {
	t.Parallel()
	storetest.RunTokenStore(t, storetest.TokenHarness{
		New: func(t *testing.T) store.TokenStore {
			s := memory.NewTokenStore()
			t.Cleanup(func() { s.Close() })
			return s
		},
	})
}

func TestEntityStore(t *testing.T) {
	t.Parallel()
	storetest.RunEntityStore(t, storetest.EntityHarness{
		New: func(t *testing.T) store.EntityStore {
			s := memory.NewEntityStore()
			t.Cleanup(func() { s.Close() })
			return s
		},
	})
}
