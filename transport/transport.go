package transport

import (
	"context"
	"errors"
	"time"

	"github.com/batonhq/baton"
)

// ErrClosed is returned by a subscription or transport after Close.
var ErrClosed = errors.New("transport: closed")

// Transport carries signals to their destinations.
type Transport interface {
	// Publish returns nil once the medium has durably accepted sig. Any
	// error means the outcome is unknown; publishing again is safe because
	// receivers drop duplicates.
	Publish(ctx context.Context, sig baton.Signal) error

	// Subscribe starts receiving the signals addressed to destination.
	// Subscribers of one destination share its signals (competing
	// consumers).
	Subscribe(ctx context.Context, destination string) (Subscription, error)
}

// BatchPublisher is implemented by a transport that publishes many signals
// in one pipelined exchange. errs[i] is what Publish(sigs[i]) would have
// returned; the engine publishes a batch's signals this way (engine.Config
// Batch).
type BatchPublisher interface {
	PublishBatch(ctx context.Context, sigs []baton.Signal) (errs []error)
}

// Subscription yields deliveries until it is closed.
type Subscription interface {
	// Next blocks until a delivery is available, ctx ends, or the
	// subscription is closed (ErrClosed).
	Next(ctx context.Context) (Delivery, error)
	Close() error
}

// Delivery is one delivery of a signal. Exactly one of Ack, Nack and Park
// should be called; a delivery that gets none is redelivered eventually.
type Delivery interface {
	Signal() baton.Signal
	// Attempt is 1 for the first delivery and counts redeliveries.
	Attempt() int
	// Ack removes the signal: it was processed (or was a duplicate).
	Ack(ctx context.Context) error
	// Nack asks for redelivery after at least delay.
	Nack(ctx context.Context, delay time.Duration) error
	// Park moves the signal aside (a dead-letter place) with a reason; it is
	// not redelivered. Its token stays live, so the signal stays visible.
	Park(ctx context.Context, reason string) error
}
