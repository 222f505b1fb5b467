package rabbitmq_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/transport/rabbitmq"
)

// A transport needs the broker's URL; everything else has defaults. This
// example is compiled but not run, since it needs a RabbitMQ broker.
func ExampleNew() {
	ctx := context.Background()
	tr, err := rabbitmq.New(ctx, rabbitmq.Config{
		URL:     "amqp://guest:guest@127.0.0.1:5672/",
		Prefix:  "shop",          // queues shop.sig.<destination>, shop.parked.<destination>
		AckWait: 2 * time.Minute, // longer than the slowest handler
		Logger:  slog.Default(),  // the password never appears in logs
	})
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()

	// Publish returns once the broker confirmed the signal.
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
}
