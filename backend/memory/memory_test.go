package memory_test

import (
	"context"
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

// The memory entity store commits activities in its own transactions
// (memory.Tx); it keeps no tokens, so it never runs the fast path.
func TestTxStore(t *testing.T) {
	t.Parallel()
	storetest.RunTxStore(t, storetest.TxHarness[*memory.Tx]{
		New: func(t *testing.T) store.EntityStore {
			s := memory.NewEntityStore()
			t.Cleanup(func() { s.Close() })
			return s
		},
		Begin: func(t *testing.T, s store.EntityStore) (*memory.Tx, func() error, func()) {
			tx := s.(*memory.EntityStore).Begin()
			return tx, tx.Commit, tx.Rollback
		},
		Put: func(_ context.Context, _ store.EntityStore, tx *memory.Tx, key string, value []byte) error {
			tx.Put("rows", key, value)
			return nil
		},
		Get: func(_ context.Context, s store.EntityStore, key string) ([]byte, bool, error) {
			v, ok := s.(*memory.EntityStore).Get("rows", key)
			return v, ok, nil
		},
	})
}
