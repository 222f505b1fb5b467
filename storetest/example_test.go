package storetest_test

import (
	"testing"

	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// A backend runs the suite from a test function in its own package. This
// is how backend/memory does it; a durable backend also sets Reopen.
func ExampleRunTokenStore() {
	testTokenStore := func(t *testing.T) {
		storetest.RunTokenStore(t, storetest.TokenHarness{
			New: func(t *testing.T) store.TokenStore {
				s := memory.NewTokenStore()
				t.Cleanup(func() { s.Close() })
				return s
			},
		})
	}
	_ = testTokenStore // in a _test.go file: func TestTokenStore(t *testing.T) { ... }
}
