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
// Batch). A type that wraps a transport (for metrics, say) must implement
// it, and BatchAcker, by passing them on: the engine finds them by type
// assertion, and without them falls back to one exchange per signal.
type BatchPublisher interface {
	PublishBatch(ctx context.Context, sigs []baton.Signal) (errs []error)
}

// BatchAcker is implemented by a transport that acknowledges many of its
// deliveries in one pipelined exchange rather than one round trip after
// another. errs[i] is what ds[i].Ack would have returned. Use AckAll,
// which falls back to Ack one by one.
type BatchAcker interface {
	AckBatch(ctx context.Context, ds []Delivery) (errs []error)
}

// AckAll acknowledges ds through tr's BatchAcker when it has one, else one
// after another; errs[i] is ds[i]'s outcome. tr may be nil.
func AckAll(ctx context.Context, tr Transport, ds []Delivery) (errs []error) {
	if ba, ok := tr.(BatchAcker); ok && len(ds) > 1 {
		return ba.AckBatch(ctx, ds)
	}
	errs = make([]error, len(ds))
	for i, d := range ds {
		errs[i] = d.Ack(ctx)
	}
	return errs
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

// ErrNotParked is returned for a parked-signal id that names no parked
// signal (never parked, or replayed or discarded since).
var ErrNotParked = errors.New("transport: no parked signal with this id")

// ErrDestinationRequired is returned by ListParked for "" by a transport
// that keeps parked signals per destination (RabbitMQ): list each
// destination instead.
var ErrDestinationRequired = errors.New("transport: parked signals are kept per destination: name one")

// ParkedSignal is a signal a consumer parked, as its park place holds it.
type ParkedSignal struct {
	// ID names it in the park place (a stream sequence, a message id).
	ID       string
	Signal   baton.Signal
	Reason   string
	Attempts int // deliveries before it was parked
	ParkedAt time.Time
}

// ParkedStore is implemented by a transport whose parked signals an
// operator can see, send again and remove (baton parked).
type ParkedStore interface {
	// ListParked returns up to limit parked signals of destination, or of
	// every destination for "" (ErrDestinationRequired where the transport
	// cannot list them all at once), oldest first.
	ListParked(ctx context.Context, destination string, limit int) ([]ParkedSignal, error)
	// GetParked returns one parked signal, or ErrNotParked.
	GetParked(ctx context.Context, id string) (ParkedSignal, error)
	// Replay publishes the parked signal to its destination again, as a
	// first delivery, and then removes it from the park place (ErrNotParked
	// if it is not there). A receiver drops the copy if the signal's token
	// is gone, so replaying a signal that was processed meanwhile is
	// harmless. A failure between the two leaves it parked and published:
	// replaying again is safe for the same reason.
	Replay(ctx context.Context, id string) error
	// RemoveParked deletes the parked signal (ErrNotParked if it is not
	// there).
	RemoveParked(ctx context.Context, id string) error
}
