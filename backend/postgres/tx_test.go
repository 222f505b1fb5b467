package postgres

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// txHarness runs the transactional conformance checks with the service's
// own table "rows" (key, value) in the store's schema: on the fast path
// (the store keeps the tokens too) and on the plain path (tokens
// elsewhere).
func txHarness(fused bool) storetest.TxHarness[pgx.Tx] {
	rowsOf := func(s store.EntityStore) string { return Config{Schema: s.(*Store).Schema()}.table("rows") }
	return storetest.TxHarness[pgx.Tx]{
		Fused: fused,
		New: func(t *testing.T) store.EntityStore {
			s := newStore(t)
			if _, err := s.Pool().Exec(t.Context(), "CREATE TABLE "+rowsOf(s)+" (key text PRIMARY KEY, value bytea NOT NULL)"); err != nil {
				t.Fatal(err)
			}
			return s
		},
		Begin: func(t *testing.T, s store.EntityStore) (pgx.Tx, func() error, func()) {
			tx, err := s.(*Store).Pool().Begin(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return tx, func() error { return tx.Commit(context.Background()) }, func() { _ = tx.Rollback(context.Background()) }
		},
		Put: func(ctx context.Context, s store.EntityStore, tx pgx.Tx, key string, value []byte) error {
			_, err := tx.Exec(ctx, "INSERT INTO "+rowsOf(s)+" (key, value) VALUES ($1, $2)", key, value)
			return err
		},
		Get: func(ctx context.Context, s store.EntityStore, key string) ([]byte, bool, error) {
			var v []byte
			err := s.(*Store).Pool().QueryRow(ctx, "SELECT value FROM "+rowsOf(s)+" WHERE key = $1", key).Scan(&v)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil, false, nil
			}
			return v, err == nil, err
		},
	}
}

func TestTxStore(t *testing.T) {
	t.Parallel()
	t.Run("fused", func(t *testing.T) {
		t.Parallel()
		storetest.RunTxStore(t, txHarness(true))
	})
	t.Run("plain", func(t *testing.T) {
		t.Parallel()
		storetest.RunTxStore(t, txHarness(false))
	})
}
