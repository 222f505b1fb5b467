package postgres_test

import (
	"context"
	"encoding/json"
	"log"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/postgres"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/transport/nats"
)

// The service's own tables in the step's transaction (docs/adopting.md):
// baton's tables beside the service's, a transactional activity that writes
// the ledger, and an order row written with the start of its conversation.
// It compiles what the document shows; examples/orders runs it.
func Example_ownTables() {
	ctx := context.Background()
	type Order struct {
		ID          string `json:"id"`
		Customer    string `json:"customer"`
		AmountCents int64  `json:"amount_cents"`
	}
	orderOf := func(sig baton.Signal) (Order, error) {
		var o Order
		if err := json.Unmarshal(sig.Payload, &o); err != nil {
			return o, engine.Permanent(err)
		}
		return o, nil
	}

	// 1. baton's tables in the service's database, in a schema of their own.
	cfg, err := pgxpool.ParseConfig("postgres://app@db.internal:5432/shop")
	if err != nil {
		log.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = postgres.GenericPlans
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	pg, err := postgres.New(ctx, pool, postgres.Config{Schema: "baton"})
	if err != nil {
		log.Fatal(err)
	}
	broker, err := nats.New(ctx, nats.Config{URL: "nats://nats.internal:4222", MonitorURL: "http://nats.internal:8222"})
	if err != nil {
		log.Fatal(err)
	}
	// The same store as tokens and entities: every step is one transaction.
	billing, err := engine.New(engine.Config{Destination: "billing", Tokens: pg, Entities: pg, Dispatch: broker, Source: broker})
	if err != nil {
		log.Fatal(err)
	}
	shop, err := engine.New(engine.Config{Destination: "shop", Tokens: pg, Entities: pg, Dispatch: broker})
	if err != nil {
		log.Fatal(err)
	}

	// 2. An activity that writes the service's tables through tx.
	err = engine.RegisterTx(billing, engine.TxActivity[struct{}, pgx.Tx]{
		Type: "charge",
		Entity: func(sig baton.Signal) (string, error) {
			o, err := orderOf(sig)
			return "account-" + o.Customer, err
		},
		Handle: func(ctx context.Context, tx pgx.Tx, sig baton.Signal, _ *struct{}) (engine.Effects, error) {
			o, err := orderOf(sig)
			if err != nil {
				return engine.Effects{}, err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO ledger (order_id, customer, amount_cents) VALUES ($1, $2, $3)`,
				o.ID, o.Customer, o.AmountCents); err != nil {
				return engine.Effects{}, err
			}
			return engine.Effects{Emit: []baton.Emit{{Destination: "stock", Type: "reserve", Payload: sig.Payload}}}, nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}

	// 3. A conversation started in the request's transaction.
	o := Order{ID: "o-1", Customer: "ada", AmountCents: 1200}
	payload, _ := json.Marshal(o)
	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	start, err := engine.StartTx(ctx, shop, tx, baton.Emit{Destination: "billing", Type: "charge", Payload: payload})
	if err != nil {
		log.Fatal(err)
	}
	// start.ID[:] for a bytea column, start.ID.String() for a text one.
	if _, err := tx.Exec(ctx, `INSERT INTO orders (id, customer, conversation) VALUES ($1, $2, $3)`, o.ID, o.Customer, start.ID[:]); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}
	if _, err := shop.Launch(ctx, start); err != nil {
		log.Print(err) // the sweeper launches it
	}
	go func() { _ = billing.Run(ctx) }()
}
