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

// An order placed twice (a double submit) is applied once.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tokens := memory.NewTokenStore()
	broker := memtransport.New(memtransport.Config{})

	shop, err := engine.New(engine.Config{
		Destination: "shop",
		Tokens:      tokens,
		Entities:    memory.NewEntityStore(),
		Dispatch:    broker,
		Source:      broker,
	})
	if err != nil {
		panic(err)
	}
	type Order struct{ Placements int }
	placed := make(chan int, 2)
	err = engine.Register(shop, engine.Activity[Order]{
		Type: "order.place",
		// R0: the entity is a pure function of the signal.
		Entity: func(sig baton.Signal) (string, error) { return "order-" + sig.Conversation.String(), nil },
		Handle: func(ctx context.Context, sig baton.Signal, o *Order) (engine.Effects, error) {
			o.Placements++
			placed <- o.Placements
			return engine.Effects{}, nil
		},
	})
	if err != nil {
		panic(err)
	}

	// At the edge: issue a root token first, then send the signal, twice.
	sig, err := shop.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order.place"}, time.Hour)
	if err != nil {
		panic(err)
	}
	_ = broker.Publish(ctx, sig)
	_ = broker.Publish(ctx, sig)
	go shop.Run(ctx)

	fmt.Println("placements:", <-placed)
	for tokens.Len() > 0 || broker.Pending("shop") > 0 {
		time.Sleep(time.Millisecond)
	}
	fmt.Println("duplicates dropped:", shop.Stats().Duplicates)
	// Output:
	// placements: 1
	// duplicates dropped: 1
}
