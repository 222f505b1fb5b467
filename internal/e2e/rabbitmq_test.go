package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/batonhq/baton/transport"
	"github.com/batonhq/baton/transport/rabbitmq"
)

// rabbitMQProxied says whether workers reach RabbitMQ through toxiproxy.
const rabbitMQProxied = true

// The queues and exchanges that transport/rabbitmq declares under a prefix:
// <prefix>.sig.<destination>, <prefix>.parked.<destination>, and a queue
// and an exchange <prefix>.delay.<n>ms per delay bucket (8ms times powers
// of two).
func rabbitQueues(prefix string) (signals, parked, delays []string) {
	for _, d := range Destinations {
		signals = append(signals, prefix+".sig."+d)
		parked = append(parked, prefix+".parked."+d)
	}
	for ms := int64(8); ms <= 1<<25; ms *= 2 {
		delays = append(delays, fmt.Sprintf("%s.delay.%dms", prefix, ms))
	}
	return signals, parked, delays
}

// connectRabbitMQ opens the test's publishing transport and returns it with
// a function that counts the signals waiting in the run's queues, and
// registers the deletion of the run's queues and exchanges.
func connectRabbitMQ(t *testing.T, ctx context.Context, url string, ns namespace) (transport.Transport, func(context.Context) (int, error)) {
	t.Helper()
	tr, err := rabbitmq.New(ctx, rabbitmq.Config{URL: url, Prefix: ns.amqpPrefix})
	if err != nil {
		t.Fatalf("rabbitmq: %v", err)
	}
	t.Cleanup(func() { tr.Close() })
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("rabbitmq: %v", err)
	}
	signals, parked, delays := rabbitQueues(ns.amqpPrefix)
	t.Cleanup(func() {
		defer conn.Close()
		for _, q := range append(append(append([]string{}, signals...), parked...), delays...) {
			if _, ok := queueDepth(conn, q); ok {
				if err := onChannel(conn, func(ch *amqp.Channel) error { _, err := ch.QueueDelete(q, false, false, false); return err }); err != nil {
					t.Errorf("delete queue %s: %v", q, err)
				}
			}
		}
		for _, x := range delays {
			onChannel(conn, func(ch *amqp.Channel) error { return ch.ExchangeDelete(x, false, false) })
		}
	})
	// Waiting = ready in a signal queue or waiting in a delay queue. (A
	// delivery held unacknowledged by a worker does not count; the caller
	// checks the ledger after the workers stopped, which covers those.)
	waiting := append(append([]string{}, signals...), delays...)
	drain := func(ctx context.Context) (int, error) {
		n, found := 0, 0
		for _, q := range waiting {
			depth, ok := queueDepth(conn, q)
			n += depth
			if ok {
				found++
			}
		}
		if found == 0 {
			// Fail loudly rather than report an empty broker if
			// transport/rabbitmq named its queues differently.
			return 0, fmt.Errorf("none of the queues %s.sig.<destination> exists", ns.amqpPrefix)
		}
		if n == 0 {
			// Zero twice in a row, a moment apart, so that a message
			// moving from a delay queue back to its signal queue is seen.
			time.Sleep(300 * time.Millisecond)
			for _, q := range waiting {
				depth, _ := queueDepth(conn, q)
				n += depth
			}
		}
		return n, nil
	}
	return tr, drain
}

// queueDepth returns the number of ready messages in queue, and false if
// the queue does not exist.
func queueDepth(conn *amqp.Connection, queue string) (int, bool) {
	depth, exists := 0, false
	onChannel(conn, func(ch *amqp.Channel) error {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			return err // the broker closes the channel: the queue does not exist
		}
		depth, exists = q.Messages, true
		return nil
	})
	return depth, exists
}

// onChannel runs fn on a fresh channel, since a failed passive declare
// closes its channel.
func onChannel(conn *amqp.Connection, fn func(*amqp.Channel) error) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	return fn(ch)
}
