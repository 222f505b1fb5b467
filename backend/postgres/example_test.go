package postgres_test

import (
	"context"
	"log"
	"log/slog"

	"github.com/batonhq/baton/backend/postgres"
	"github.com/batonhq/baton/store"
)

// Open a store over a DSN. Every process of a deployment does the same
// with the same schema; the first to start creates the tables.
func ExampleOpen() {
	ctx := context.Background()
	s, err := postgres.Open(ctx, "postgres://baton@db.internal:5432/app?sslmode=verify-full&pool_max_conns=16", postgres.Config{
		Schema: "baton",
		Logger: slog.Default(),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	// One Store is both stores, and runs steps 4 and 5 of the protocol in
	// one statement when the engine finds store.CommitTransitioner.
	var (
		tokens   store.TokenStore         = s
		entities store.EntityStore        = s
		fastPath store.CommitTransitioner = s
	)
	_, _, _ = tokens, entities, fastPath
}
