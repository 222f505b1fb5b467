package nats_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/transport/nats"
)

// An embedded server needs no port and no setup: a data directory is all.
func ExampleStartEmbedded() {
	dir, err := os.MkdirTemp("", "baton-nats-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	server, err := nats.StartEmbedded(nats.EmbeddedConfig{DataDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer server.Shutdown()

	ctx := context.Background()
	tr, err := server.NewTransport(ctx, nats.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()

	err = tr.Publish(ctx, baton.Signal{
		ID: baton.NewTokenID(), Conversation: baton.NewTokenID(),
		Destination: "billing", Type: "invoice.requested", Payload: []byte(`{"order":42}`),
	})
	if err != nil {
		log.Fatal(err)
	}

	sub, err := tr.Subscribe(ctx, "billing")
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	d, err := sub.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	// ... process the signal, then acknowledge it.
	if err := d.Ack(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(d.Signal().Type, string(d.Signal().Payload), d.Attempt())
	// Output: invoice.requested {"order":42} 1
}
