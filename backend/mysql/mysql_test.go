package mysql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// dsn returns the test database's DSN, or skips the test (see testenv).
func dsn(t testing.TB) string { return testenv.Addr(t, testenv.MySQL) }

// uniquePrefix is a table prefix that no other test uses.
func uniquePrefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b) + "_"
}

// newStore opens a store with tables of its own, dropped when t ends.
func newStore(t testing.TB) *Store {
	t.Helper()
	return openPrefix(t, dsn(t), uniquePrefix())
}

func openPrefix(t testing.TB, dsn, prefix string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dsn, Config{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		dropPrefix(t, prefix)
	})
	return s
}

// dropPrefix drops the store tables of prefix over a connection of its
// own: a test's store may be closed by then (reopen) or cut off from the
// server (a proxy the test closed), and its tables were left behind.
func dropPrefix(t testing.TB, prefix string) {
	db, err := sql.Open("mysql", dsn(t))
	if err != nil {
		t.Errorf("drop the tables of %q: %v", prefix, err)
		return
	}
	defer db.Close()
	for _, name := range []string{"tokens", "entities", "starts", "schema_migrations"} {
		if _, err := db.Exec("DROP TABLE IF EXISTS " + table(prefix, name)); err != nil {
			t.Errorf("drop %s: %v", table(prefix, name), err)
		}
	}
}

// reopen closes s and opens its tables again.
func reopen(t *testing.T, s *Store) *Store {
	t.Helper()
	prefix := s.Prefix()
	s.Close()
	again, err := Open(t.Context(), dsn(t), Config{Prefix: prefix})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { again.Close() })
	return again
}

func TestTokenStore(t *testing.T) {
	t.Parallel()
	storetest.RunTokenStore(t, storetest.TokenHarness{
		New:    func(t *testing.T) store.TokenStore { return newStore(t) },
		Reopen: func(t *testing.T, s store.TokenStore) store.TokenStore { return reopen(t, s.(*Store)) },
	})
}

func TestEntityStore(t *testing.T) {
	t.Parallel()
	storetest.RunEntityStore(t, storetest.EntityHarness{
		New:    func(t *testing.T) store.EntityStore { return newStore(t) },
		Reopen: func(t *testing.T, s store.EntityStore) store.EntityStore { return reopen(t, s.(*Store)) },
	})
}

// TestLinearizability checks concurrent histories with porcupine, once as
// is and once with injected faults that leave outcomes unknown.
func TestLinearizability(t *testing.T) {
	t.Parallel()
	storetest.RunLinearizabilityWithFaults(t, storetest.TokenHarness{
		New: func(t *testing.T) store.TokenStore { return newStore(t) },
	})
}

// txHarness runs the transactional checks with the service's own table
// "rows" beside the store's: on the fast path and on the plain path.
func txHarness(fused bool) storetest.TxHarness[*sql.Tx] {
	rowsOf := func(s store.EntityStore) string { return table(s.(*Store).Prefix(), "rows") }
	return storetest.TxHarness[*sql.Tx]{
		Fused: fused,
		New: func(t *testing.T) store.EntityStore {
			s := newStore(t)
			if _, err := s.DB().ExecContext(t.Context(), "CREATE TABLE "+rowsOf(s)+" (k VARBINARY(512) PRIMARY KEY, v LONGBLOB NOT NULL) ENGINE = InnoDB"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _, _ = s.DB().ExecContext(context.Background(), "DROP TABLE IF EXISTS "+rowsOf(s)) })
			return s
		},
		Begin: func(t *testing.T, s store.EntityStore) (*sql.Tx, func() error, func()) {
			tx, err := s.(*Store).DB().BeginTx(t.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			return tx, tx.Commit, func() { _ = tx.Rollback() }
		},
		Put: func(ctx context.Context, s store.EntityStore, tx *sql.Tx, key string, value []byte) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO "+rowsOf(s)+" (k, v) VALUES (?, ?)", []byte(key), value)
			return err
		},
		Get: func(ctx context.Context, s store.EntityStore, key string) ([]byte, bool, error) {
			var v []byte
			err := s.(*Store).DB().QueryRowContext(ctx, "SELECT v FROM "+rowsOf(s)+" WHERE k = ?", []byte(key)).Scan(&v)
			if errors.Is(err, sql.ErrNoRows) {
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
