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
// one confirm-mode channel without waiting between them, and their
// confirms are then awaited together: the broker stores messages that
// arrive together with one fsync, where Publish one after another waits
// for one each. errs[i] is what Publish would have returned for sigs[i]; a
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

	returns := watchReturns(p.returns)
	type sent struct {
		i  int
		dc *amqp.DeferredConfirmation
	}
	var inFlight []sent
	broken := false
	for _, i := range ready {
		if broken {
			fail(i, fmt.Errorf("%w: not sent, the channel failed", ErrNoConfirm))
			continue
		}
		dc, err := p.ch.PublishWithDeferredConfirm("", t.signalQueue(sigs[i].Destination), true, false, msgs[i])
		if err != nil {
			broken = true
			fail(i, fmt.Errorf("%w: send: %v", ErrNoConfirm, err))
			continue
		}
		inFlight = append(inFlight, sent{i, dc})
	}
	for _, s := range inFlight {
		select {
		case <-s.dc.Done():
		case <-ctx.Done():
			// Returns may still come for any message sent: the watcher
			// reads them until the channel, not reused, is closed.
			for _, s := range inFlight {
				fail(s.i, fmt.Errorf("%w: %w", ErrNoConfirm, ctx.Err()))
			}
			t.release(p, false)
			return errs
		}
	}
	// Every confirm arrived, and the broker sends a message's return before
	// its confirm: the watcher has seen every return of the batch.
	returned := returns.stop()
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

// returnWatch reads a publishing channel's returns while a batch is in
// flight, so that the library never waits on (or, after five seconds,
// drops) a return that a full channel cannot take.
type returnWatch struct {
	quit chan struct{}
	done chan struct{}
	ids  map[string]bool // message ids returned; read after done
}

func watchReturns(returns <-chan amqp.Return) *returnWatch {
	w := &returnWatch{quit: make(chan struct{}), done: make(chan struct{}), ids: make(map[string]bool)}
	note := func(r amqp.Return) { w.ids[r.MessageId] = true }
	go func() {
		defer close(w.done)
		for {
			select {
			case r, ok := <-returns:
				if !ok { // the channel closed
					return
				}
				note(r)
			case <-w.quit:
				// A return may sit in the channel's buffer, sent but not
				// yet read.
				for {
					select {
					case r, ok := <-returns:
						if !ok {
							return
						}
						note(r)
					default:
						return
					}
				}
			}
		}
	}()
	return w
}

// stop ends the watch and returns the ids of the messages returned. Call
// it once every return that matters was sent: after the confirms.
func (w *returnWatch) stop() map[string]bool {
	close(w.quit)
	<-w.done
	return w.ids
}
