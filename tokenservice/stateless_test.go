package tokenservice_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/backend/postgres"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/tokenservice/client"
)

// raceThroughTwoInstances runs two service instances, one over each store
// (which share their data), and has 32 goroutines race to consume one
// token through them alternately: exactly one may consume it, and only
// its children may exist.
func raceThroughTwoInstances(t *testing.T, a, b store.TokenStore) {
	t.Helper()
	ctx := t.Context()
	key, hash := tokenservice.NewAPIKey()
	systems := []tokenservice.System{{Name: "orders", KeySHA256: hash, IssueRoots: true, Observe: true}}
	var clients []*client.Client
	for _, s := range []store.TokenStore{a, b} {
		h, err := tokenservice.New(tokenservice.Config{Tokens: s, Systems: systems})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		c, err := client.New(srv.URL, key, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	for round := range 3 {
		root, err := clients[round%2].Issue(ctx, rootToken("orders"))
		if err != nil {
			t.Fatal(err)
		}
		const racers = 32
		children := make([][]baton.Token, racers)
		for i := range children {
			children[i] = []baton.Token{childOf(root, "billing"), childOf(root, "shipping")}
		}
		var consumed atomic.Int32
		winner := -1
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range racers {
			wg.Go(func() {
				<-start
				ok, err := clients[i%2].Transition(ctx, root.ID, children[i])
				if err != nil {
					t.Errorf("racer %d: %v", i, err)
					return
				}
				if ok {
					consumed.Add(1)
					mu.Lock()
					winner = i
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
		if n := consumed.Load(); n != 1 {
			t.Fatalf("round %d: %d of %d racers consumed the token, want exactly 1", round, n, racers)
		}
		// Both instances see the same conversation: the winner's children.
		for _, c := range clients {
			live, err := c.ListByConversation(ctx, root.Conversation, store.Page{})
			if err != nil {
				t.Fatal(err)
			}
			if len(live) != 2 || (live[0].ID != children[winner][0].ID && live[0].ID != children[winner][1].ID) {
				t.Fatalf("round %d: conversation holds %d tokens, want the winner's 2", round, len(live))
			}
		}
		t.Logf("round %d: racer %d of %d consumed the token, through instance %d", round, winner, racers, winner%2)
	}
}

// Two instances over one PostgreSQL schema (two separate Store values, as
// two processes would have).
func TestTwoInstancesOverPostgres(t *testing.T) {
	t.Parallel()
	dsn := testenv.Addr(t, testenv.Postgres)
	var suffix [6]byte
	rand.Read(suffix[:])
	schema := "tokenservice_" + hex.EncodeToString(suffix[:])
	ctx := context.Background()
	cfg := postgres.Config{Schema: schema}
	a, err := postgres.Open(ctx, dsn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := postgres.Open(ctx, dsn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close()
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			conn.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			conn.Close(ctx)
		}
	})
	raceThroughTwoInstances(t, a, b)
}

// The same over one shared memory store, which needs no service.
func TestTwoInstancesOverMemory(t *testing.T) {
	t.Parallel()
	shared := memory.NewTokenStore()
	raceThroughTwoInstances(t, shared, shared)
}
