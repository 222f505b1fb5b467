package engine_test

import (
	"context"
	"fmt"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	memtransport "github.com/batonhq/baton/transport/memory"
)

// A transactional activity writes the service's own ledger in the
// transaction that commits its step, and a request starts the charge in
// its own transaction, with its order row (docs/adopting.md). The memory
// entity store stands in for the service's database: its *memory.Tx is
// what pgx.Tx or *sql.Tx is for PostgreSQL or MySQL.
func ExampleStartTx() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	entities := memory.NewEntityStore()
	broker := memtransport.New(memtransport.Config{})
	billing, err := engine.New(engine.Config{Destination: "billing", Tokens: memory.NewTokenStore(), Entities: entities,
		Dispatch: broker, Source: broker})
	if err != nil {
		panic(err)
	}
	err = engine.RegisterTx(billing, engine.TxActivity[struct{}, *memory.Tx]{
		Type:   "charge",
		Entity: func(sig baton.Signal) (string, error) { return "account-ada", nil },
		Handle: func(ctx context.Context, tx *memory.Tx, sig baton.Signal, _ *struct{}) (engine.Effects, error) {
			tx.Put("ledger", sig.Conversation.String(), sig.Payload) // committed with the step, or not at all
			return engine.Effects{}, nil
		},
	})
	if err != nil {
		panic(err)
	}

	// POST /orders: the order row and the start of its process, both or neither.
	tx := entities.Begin()
	start, err := engine.StartTx(ctx, billing, tx, baton.Emit{Destination: "billing", Type: "charge", Payload: []byte("1200")})
	if err != nil {
		panic(err)
	}
	tx.Put("orders", "o-1", start.ID[:]) // the conversation's id, known before the commit
	if err := tx.Commit(); err != nil {
		panic(err)
	}
	first, _ := billing.Launch(ctx, start)
	again, _ := billing.Launch(ctx, start) // launched already: sends nothing
	fmt.Println("launched:", first.Conversation == start.ID, "launched again:", !again.ID.IsZero())

	// A request whose transaction rolls back starts nothing.
	tx = entities.Begin()
	lost, err := engine.StartTx(ctx, billing, tx, baton.Emit{Destination: "billing", Type: "charge", Payload: []byte("900")})
	if err != nil {
		panic(err)
	}
	tx.Rollback()
	none, _ := billing.Launch(ctx, lost)
	fmt.Println("rolled back, launched:", !none.ID.IsZero())

	broker.Publish(ctx, first) // a duplicate delivery
	go func() { _ = billing.Run(ctx) }()
	for billing.Stats().Applied+billing.Stats().Duplicates < 2 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	fmt.Println("ledger rows:", len(entities.Table("ledger")))
	// Output:
	// launched: true launched again: false
	// rolled back, launched: false
	// ledger rows: 1
}
