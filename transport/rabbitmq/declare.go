package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// declaration is one declaring of a group of queues, shared by every
// publish and subscribe that needs it while it runs.
type declaration struct {
	done chan struct{}
	err  error
}

// declareDestination declares destination's two quorum queues: the parked
// queue, and the signal queue, which dead-letters (at least once) into the
// parked queue. The broker dead-letters only messages over a delivery
// limit (an operator's policy, or RabbitMQ 4's default of 20 returns), so
// such a limit parks a signal instead of dropping it. reject-publish makes
// a queue over an operator's length limit refuse publishes (a nack, so
// Publish fails) instead of dropping its oldest signals; at-least-once
// dead-lettering requires it.
func (t *Transport) declareDestination(ctx context.Context, destination string) error {
	parked, queue := t.parkedQueue(destination), t.signalQueue(destination)
	return t.declareOnce(ctx, "dest:"+destination, func(ch *amqp.Channel) error {
		if err := t.declareQueue(ch, parked, amqp.Table{"x-queue-type": "quorum"}); err != nil {
			return err
		}
		return t.declareQueue(ch, queue, amqp.Table{
			"x-queue-type":              "quorum",
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": parked,
			"x-dead-letter-strategy":    "at-least-once",
			"x-overflow":                "reject-publish",
		})
	})
}

// declareDelay declares one delay bucket: a fanout exchange and a quorum
// queue of the same name whose messages all live bucket long (a queue-wide
// TTL, so they expire in the order they came) and are then dead-lettered,
// at least once, through the default exchange with the routing key they
// were published with: their destination's signal queue.
func (t *Transport) declareDelay(ctx context.Context, bucket time.Duration) error {
	name := t.delayName(bucket)
	return t.declareOnce(ctx, "delay:"+name, func(ch *amqp.Channel) error {
		if err := ch.ExchangeDeclare(name, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %s: %w", name, err)
		}
		t.noteCreated(name, "exchange")
		err := t.declareQueue(ch, name, amqp.Table{
			"x-queue-type":           "quorum",
			"x-message-ttl":          bucket.Milliseconds(),
			"x-dead-letter-exchange": "",
			"x-dead-letter-strategy": "at-least-once",
			"x-overflow":             "reject-publish",
		})
		if err != nil {
			return err
		}
		if err := ch.QueueBind(name, "", name, false, nil); err != nil {
			return fmt.Errorf("bind queue %s: %w", name, err)
		}
		return nil
	})
}

func (t *Transport) declareQueue(ch *amqp.Channel, name string, args amqp.Table) error {
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
			return fmt.Errorf("queue %s exists with other settings (not a quorum queue, or other dead-letter arguments); delete it or use another Prefix: %w", name, err)
		}
		return fmt.Errorf("declare queue %s: %w", name, err)
	}
	t.noteCreated(name, "queue")
	return nil
}

// declareOnce runs declare on a channel of its own, unless group was
// already declared by this transport; concurrent callers share one run.
// Declarations are durable, so they survive reconnects; forget makes the
// next call declare again.
func (t *Transport) declareOnce(ctx context.Context, group string, declare func(*amqp.Channel) error) error {
	for {
		t.mu.Lock()
		d := t.declared[group]
		if d == nil {
			d = &declaration{done: make(chan struct{})}
			t.declared[group] = d
			t.mu.Unlock()
			d.err = t.withChannel(ctx, declare)
			if d.err != nil {
				t.mu.Lock()
				if t.declared[group] == d {
					delete(t.declared, group)
				}
				t.mu.Unlock()
			}
			close(d.done)
			return d.err
		}
		t.mu.Unlock()
		select {
		case <-d.done:
			if d.err == nil {
				return nil
			}
			// That run failed, perhaps only for its caller's context: run
			// it again for this caller.
		case <-ctx.Done():
			return fmt.Errorf("waiting for queue declarations: %w", ctx.Err())
		}
	}
}

// forget drops a finished declaration of group, after the broker showed
// that its queues or exchanges are gone.
func (t *Transport) forget(group string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if d := t.declared[group]; d != nil {
		select {
		case <-d.done:
			delete(t.declared, group)
		default:
		}
	}
}

// topologyName names a queue or an exchange (a delay bucket has both).
type topologyName struct{ kind, name string }

func (t *Transport) noteCreated(name, kind string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.created[topologyName{kind, name}] = true
}

// withChannel runs fn on a fresh channel of the current connection. A
// failed declaration closes its channel, so declarations never share one
// with publishes or consumers.
func (t *Transport) withChannel(ctx context.Context, fn func(*amqp.Channel) error) error {
	conn, err := t.connection(ctx, false)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open a channel: %w", err)
	}
	defer ch.Close()
	return fn(ch)
}
