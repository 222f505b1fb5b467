package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/batonhq/baton/transport"
)

var _ transport.ParkedStore = (*Transport)(nil)

// ErrUnsafeBrowse is returned by the parked-signal operations on RabbitMQ
// 4.0 to 4.2. Reading a quorum queue means taking its messages and
// returning them, and those versions count every return towards the
// queue's delivery limit (20 by default), after which the broker drops the
// message: an operator who listed the parked signals twenty times would
// lose them.
var ErrUnsafeBrowse = errors.New("rabbitmq transport: on RabbitMQ 4.0 to 4.2 reading a parked queue counts towards its delivery limit, after which the broker drops parked signals; use the management UI")

// ListParked implements transport.ParkedStore for one destination's park
// queue: RabbitMQ cannot list every destination's at once. It takes up to
// limit messages without acknowledging them and returns them all to the
// queue, which keeps them (a quorum queue may change their order).
func (t *Transport) ListParked(ctx context.Context, destination string, limit int) ([]transport.ParkedSignal, error) {
	if destination == "" {
		return nil, fmt.Errorf("rabbitmq transport: %w", transport.ErrDestinationRequired)
	}
	var out []transport.ParkedSignal
	err := t.browseParked(ctx, destination, func(_ *amqp.Channel, d *amqp.Delivery) (bool, bool, error) {
		out = append(out, parkedOf(destination, d))
		return false, len(out) >= limit, nil
	})
	return out, err
}

// GetParked implements transport.ParkedStore. An id is
// "<destination>/<message id>", the message id being the signal's token.
func (t *Transport) GetParked(ctx context.Context, id string) (transport.ParkedSignal, error) {
	var found *transport.ParkedSignal
	err := t.findParked(ctx, id, func(_ *amqp.Channel, p transport.ParkedSignal, _ *amqp.Delivery) (bool, error) {
		found = &p
		return false, nil
	})
	if err != nil {
		return transport.ParkedSignal{}, err
	}
	return *found, nil
}

// Replay implements transport.ParkedStore: it publishes the signal to its
// destination's queue (a first delivery), then acknowledges the parked
// copy, which removes it.
func (t *Transport) Replay(ctx context.Context, id string) error {
	return t.findParked(ctx, id, func(ch *amqp.Channel, p transport.ParkedSignal, d *amqp.Delivery) (bool, error) {
		if p.Signal.ID.IsZero() {
			return false, fmt.Errorf("rabbitmq transport: parked %s is not a readable signal", id)
		}
		if err := t.Publish(ctx, p.Signal); err != nil {
			return false, err
		}
		return true, ch.Ack(d.DeliveryTag, false)
	})
}

// RemoveParked implements transport.ParkedStore.
func (t *Transport) RemoveParked(ctx context.Context, id string) error {
	return t.findParked(ctx, id, func(ch *amqp.Channel, _ transport.ParkedSignal, d *amqp.Delivery) (bool, error) {
		return true, ch.Ack(d.DeliveryTag, false)
	})
}

// findParked browses the park queue that id names until it finds the
// message, and lets act settle it (true) or leave it (false).
func (t *Transport) findParked(ctx context.Context, id string, act func(*amqp.Channel, transport.ParkedSignal, *amqp.Delivery) (bool, error)) error {
	cut := strings.LastIndex(id, "/")
	if cut <= 0 || cut == len(id)-1 {
		return fmt.Errorf("%w: %q is not <destination>/<message id>", transport.ErrNotParked, id)
	}
	destination, messageID := id[:cut], id[cut+1:]
	found := false
	err := t.browseParked(ctx, destination, func(ch *amqp.Channel, d *amqp.Delivery) (bool, bool, error) {
		if d.MessageId != messageID {
			return false, false, nil
		}
		found = true
		settled, err := act(ch, parkedOf(destination, d), d)
		return settled, true, err
	})
	if err == nil && !found {
		err = fmt.Errorf("%w: %s", transport.ErrNotParked, id)
	}
	return err
}

// browseParked takes the messages of destination's park queue one by one
// without acknowledging them, hands each to visit, which may settle it
// and may stop the browse, and returns every message it did not settle to
// the queue. A destination without a park queue has nothing parked.
func (t *Transport) browseParked(ctx context.Context, destination string, visit func(*amqp.Channel, *amqp.Delivery) (settled, stop bool, err error)) error {
	if major, minor, ok := parseVersion(t.version); ok && major == 4 && minor < 3 {
		return fmt.Errorf("%w (the broker runs %s)", ErrUnsafeBrowse, t.version)
	}
	if err := validDestination(destination); err != nil {
		return fmt.Errorf("rabbitmq transport: parked signals: %w", err)
	}
	return t.withChannel(ctx, func(ch *amqp.Channel) error {
		// Passive: reading declares nothing, so a misspelt destination
		// leaves no queues behind. A park queue that does not exist holds
		// nothing.
		if _, err := ch.QueueDeclarePassive(t.parkedQueue(destination), true, false, false, false, nil); err != nil {
			var ae *amqp.Error
			if errors.As(err, &ae) && ae.Code == amqp.NotFound {
				return nil
			}
			return fmt.Errorf("rabbitmq transport: read parked signals of %q: %w", destination, err)
		}
		var taken []uint64
		defer func() {
			for _, tag := range taken {
				_ = ch.Nack(tag, false, true)
			}
		}()
		for ctx.Err() == nil {
			d, ok, err := ch.Get(t.parkedQueue(destination), false)
			if err != nil {
				return fmt.Errorf("rabbitmq transport: read parked signals of %q: %w", destination, err)
			}
			if !ok {
				return nil
			}
			settled, stop, err := visit(ch, &d)
			if !settled {
				taken = append(taken, d.DeliveryTag)
			}
			if err != nil || stop {
				return err
			}
		}
		return ctx.Err()
	})
}

// parkedOf decodes a parked copy.
func parkedOf(destination string, d *amqp.Delivery) transport.ParkedSignal {
	p := transport.ParkedSignal{ID: destination + "/" + d.MessageId, ParkedAt: d.Timestamp}
	p.Reason, _ = stringHeader(d.Headers, HeaderParkReason)
	if n, err := countHeader(d.Headers, HeaderParkAttempt); err == nil {
		p.Attempts = n
	}
	sig, _, err := decodeSignal(d.Headers, destination, d.Body)
	if err != nil {
		p.Reason = strings.TrimSpace(p.Reason + " (not a readable signal: " + err.Error() + ")")
		return p
	}
	p.Signal = sig
	return p
}
