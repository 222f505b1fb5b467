package rabbitmq

import (
	"context"
	"fmt"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/transport"
	amqp "github.com/rabbitmq/amqp091-go"
)

var _ transport.BatchPublisher = (*Transport)(nil)

// PublishBatch implements transport.BatchPublisher. The signals go out on
// one confirm-mode channel without waiting between them (in windows of
// returnWindow), and their confirms are then awaited together: the broker
// stores messages that arrive together with one fsync, where Publish one
// after another waits for one each. errs[i] is what Publish would have returned for sigs[i]; a
// returned (unroutable) message is matched to its signal by message id. If
// PublishTimeout runs out first, every signal sent in the batch is
// reported ErrNoConfirm, confirmed or not: a return may still be on its way
// for any of them.
func (t *Transport) PublishBatch(ctx context.Context, sigs []baton.Signal) []error {
	errs := make([]error, len(sigs))
	fail := func(i int, err error) {
		errs[i] = fmt.Errorf("rabbitmq transport: publish %s to %q: %w", sigs[i].ID, sigs[i].Destination, err)
	}
	if t.isClosed() {
		for i := range errs {
			errs[i] = transport.ErrClosed
		}
		return errs
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.PublishTimeout)
	defer cancel()

	msgs := make([]amqp.Publishing, len(sigs))
	declared := make(map[string]error)
	var ready []int
	for i, sig := range sigs {
		msg, err := signalMessage(sig)
		if err != nil {
			errs[i] = err
			continue
		}
		err, done := declared[sig.Destination]
		if !done {
			err = t.declareDestination(ctx, sig.Destination)
			declared[sig.Destination] = err
		}
		if err != nil {
			fail(i, err)
			continue
		}
		msgs[i] = msg
		ready = append(ready, i)
	}
	if len(ready) == 0 {
		return errs
	}
	p, err := t.publisher(ctx)
	if err != nil {
		for _, i := range ready {
			fail(i, err)
		}
		return errs
	}

	type sent struct {
		i  int
		dc *amqp.DeferredConfirmation
	}
	var inFlight []sent
	returned := make(map[string]bool) // message ids
	broken := false
	// The batch goes out in windows of at most cap(p.returns) messages,
	// each window's confirms awaited before the next is sent. The broker
	// sends a message's return before its confirm, so once a window is
	// confirmed all its returns are in the channel's buffer, which holds a
	// whole window: the library never waits on a full buffer (and never
	// drops a return after its five seconds of waiting).
	window := cap(p.returns)
	for first := 0; first < len(ready); first += window {
		var sending []sent
		for _, i := range ready[first:min(first+window, len(ready))] {
			switch {
			case broken:
				fail(i, fmt.Errorf("%w: not sent, the channel failed", ErrNoConfirm))
				continue
			case ctx.Err() != nil:
				fail(i, fmt.Errorf("%w: not sent: %w", ErrNoConfirm, ctx.Err()))
				continue
			}
			dc, err := p.ch.PublishWithDeferredConfirm("", t.signalQueue(sigs[i].Destination), true, false, msgs[i])
			if err != nil {
				broken = true
				fail(i, fmt.Errorf("%w: send: %v", ErrNoConfirm, err))
				continue
			}
			sending = append(sending, sent{i, dc})
		}
		inFlight = append(inFlight, sending...)
		for _, s := range sending {
			select {
			case <-s.dc.Done():
			case <-ctx.Done():
				// Not reused: the channel is closed, and what the broker
				// still sends for it goes to its buffer or nowhere.
				for _, s := range inFlight {
					fail(s.i, fmt.Errorf("%w: %w", ErrNoConfirm, ctx.Err()))
				}
				t.release(p, false)
				return errs
			}
		}
		for drained := false; !drained; {
			select {
			case r, ok := <-p.returns:
				if ok {
					returned[r.MessageId] = true
				} else {
					drained = true
				}
			default:
				drained = true
			}
		}
	}
	closed := p.ch.IsClosed()
	for _, s := range inFlight {
		sig := sigs[s.i]
		switch {
		case !s.dc.Acked() && closed:
			broken = true
			fail(s.i, fmt.Errorf("%w: the channel closed before the broker confirmed", ErrNoConfirm))
		case !s.dc.Acked():
			fail(s.i, ErrNacked)
		case returned[msgs[s.i].MessageId]:
			t.forget("dest:" + sig.Destination)
			fail(s.i, fmt.Errorf("%w: routing key %q", ErrUnroutable, t.signalQueue(sig.Destination)))
		}
	}
	if broken {
		for destination := range declared {
			t.forget("dest:" + destination)
		}
	}
	t.release(p, !broken)
	return errs
}
