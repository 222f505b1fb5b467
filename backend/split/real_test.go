package split_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	goredis "github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/backend/postgres"
	"github.com/batonhq/baton/backend/redis"
	"github.com/batonhq/baton/backend/split"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// The suites over three real stores: PostgreSQL schemas and Redis key
// prefixes, one part each.
func TestOverRealParts(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(*testing.T) store.TokenStore{
		"postgres": postgresPart,
		"redis":    redisPart,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			harness := storetest.TokenHarness{New: func(t *testing.T) store.TokenStore {
				s, err := split.Open(t.Context(), open(t), open(t), open(t))
				if err != nil {
					t.Fatal(err)
				}
				return s
			}}
			t.Run("Conformance", func(t *testing.T) {
				t.Parallel()
				storetest.RunTokenStore(t, harness)
			})
			t.Run("Linearizability", func(t *testing.T) {
				t.Parallel()
				storetest.RunLinearizabilityWithFaults(t, harness)
			})
		})
	}
}

var (
	poolOnce sync.Once
	pool     *pgxpool.Pool
	poolErr  error
)

// postgresPart opens a store in a fresh schema of the test database.
func postgresPart(t *testing.T) store.TokenStore {
	t.Helper()
	dsn := testenv.Addr(t, testenv.Postgres)
	poolOnce.Do(func() {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			poolErr = err
			return
		}
		cfg.MaxConns = 24
		pool, poolErr = pgxpool.NewWithConfig(context.Background(), cfg)
	})
	if poolErr != nil {
		t.Fatal(poolErr)
	}
	schema := "baton_split_" + randomHex(6)
	s, err := postgres.New(t.Context(), pool, postgres.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return s
}

// redisPart opens a store under a fresh key prefix of the test server,
// which keeps nothing on disk (AllowUnsafeDurability: the suites check
// the split, not the server's durability).
func redisPart(t *testing.T) store.TokenStore {
	t.Helper()
	url, prefix := testenv.Addr(t, testenv.Redis), "baton-split-"+randomHex(6)
	s, err := redis.Open(t.Context(), redis.Config{URL: url, Prefix: prefix, AllowUnsafeDurability: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		opts, err := goredis.ParseURL(url)
		if err != nil {
			return
		}
		c := goredis.NewClient(opts)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator(); iter.Next(ctx); {
			c.Del(ctx, iter.Val())
		}
	})
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
