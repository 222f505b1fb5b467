package mysql_test

import (
	"context"
	"database/sql"
	"log"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/mysql"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/transport/nats"
)

// The service's own tables in the step's transaction, on MySQL or MariaDB
// (docs/adopting.md): the handler and the caller's request get *sql.Tx
// on the store's pool. It compiles what the document shows.
func Example_ownTables() {
	ctx := context.Background()
	my, err := mysql.Open(ctx, "app:secret@tcp(db:3306)/shop", mysql.Config{Prefix: "baton_"})
	if err != nil {
		log.Fatal(err)
	}
	broker, err := nats.New(ctx, nats.Config{URL: "nats://nats.internal:4222", MonitorURL: "http://nats.internal:8222"})
	if err != nil {
		log.Fatal(err)
	}
	billing, err := engine.New(engine.Config{Destination: "billing", Tokens: my, Entities: my, Dispatch: broker, Source: broker})
	if err != nil {
		log.Fatal(err)
	}
	err = engine.RegisterTx(billing, engine.TxActivity[struct{}, *sql.Tx]{
		Type:   "charge",
		Entity: func(sig baton.Signal) (string, error) { return "account-" + sig.Conversation.String(), nil },
		Handle: func(ctx context.Context, tx *sql.Tx, sig baton.Signal, _ *struct{}) (engine.Effects, error) {
			_, err := tx.ExecContext(ctx, "INSERT INTO ledger (token, amount_cents) VALUES (?, ?)", sig.ID[:], 1200)
			return engine.Effects{}, err
		},
	})
	if err != nil {
		log.Fatal(err)
	}

	// my.DB() is the store's pool: begin the request's transactions on it.
	tx, err := my.DB().BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	start, err := engine.StartTx(ctx, billing, tx, baton.Emit{Destination: "billing", Type: "charge"})
	if err != nil {
		log.Fatal(err)
	}
	// database/sql takes start.ID[:] (BINARY(16)) or start.ID.String(), not start.ID.
	if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id, conversation) VALUES (?, ?)", "o-1", start.ID[:]); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
	if _, err := billing.Launch(ctx, start); err != nil {
		log.Print(err) // the sweeper launches it
	}
	go func() { _ = billing.Run(ctx) }()
}
