package nats

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/transport"
	"github.com/nats-io/nats.go/jetstream"
)

// subscription reads one destination's durable consumer. It pulls
// Config.Prefetch messages ahead (by default one at a time, when Next asks
// for it, so that a subscriber holds no prefetched messages that would
// age against AckWait while other subscribers wait).
type subscription struct {
	t           *Transport
	destination string

	// turn lets one Next at a time read the iterator; the others wait on
	// it while still honouring their context and Close.
	turn      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	mu   sync.Mutex
	iter jetstream.MessagesContext
}

var _ transport.Subscription = (*subscription)(nil)

// pullExpiry is how long one pull request waits on the server.
const pullExpiry = 5 * time.Second

func (s *subscription) consumer(ctx context.Context) (jetstream.Consumer, error) {
	c, err := s.t.js.CreateOrUpdateConsumer(ctx, s.t.cfg.Stream, s.t.consumerConfig(s.destination))
	if err != nil {
		return nil, fmt.Errorf("nats transport: consumer for %q: %w", s.destination, err)
	}
	return c, nil
}

// iterator returns the current message iterator, creating the consumer
// and the iterator when there is none (first use, or after an error that
// ended the previous one, such as a deleted consumer).
func (s *subscription) iterator(ctx context.Context) (jetstream.MessagesContext, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Close marks the subscription closed before it takes mu to stop the
	// iterator, so an iterator created here is either seen by Close or
	// never created.
	if s.isClosed() {
		return nil, transport.ErrClosed
	}
	if s.iter != nil {
		return s.iter, nil
	}
	c, err := s.consumer(ctx)
	if err != nil {
		return nil, err
	}
	// A short expiry renews the pull request often: with one message per
	// pull, the iterator was seen to wait out a whole pull (30s by
	// default) with messages in the stream when its reader asked for the
	// next one right away.
	it, err := c.Messages(jetstream.PullMaxMessages(s.t.cfg.Prefetch), jetstream.PullExpiry(pullExpiry))
	if err != nil {
		return nil, fmt.Errorf("nats transport: pull from %q: %w", s.destination, err)
	}
	s.iter = it
	return it, nil
}

func (s *subscription) dropIterator(it jetstream.MessagesContext) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.iter == it {
		s.iter = nil
	}
	it.Stop()
}

func (s *subscription) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Next implements transport.Subscription. It returns only well-formed
// signals: a message that does not decode, or that was delivered more than
// MaxDeliver times, is parked here and never handed out. Broker errors are
// retried with backoff; Next returns only a delivery, ctx's error, or an
// error wrapping transport.ErrClosed (after Close, or when the NATS
// connection is closed for good).
func (s *subscription) Next(ctx context.Context) (transport.Delivery, error) {
	select {
	case s.turn <- struct{}{}:
	case <-s.done:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.turn }()

	backoff := newBackoff()
	for {
		if s.isClosed() {
			return nil, transport.ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if s.t.nc.IsClosed() {
			return nil, fmt.Errorf("%w: the NATS connection is closed", transport.ErrClosed)
		}
		it, err := s.iterator(ctx)
		if errors.Is(err, transport.ErrClosed) {
			return nil, err
		}
		if err != nil {
			s.t.log.Warn("cannot pull signals; retrying", "destination", s.destination, "err", err)
			s.sleep(ctx, backoff.next()) // the loop head reports a cancel or Close
			continue
		}
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil || s.isClosed() || s.t.nc.IsClosed() {
				continue
			}
			// A missed heartbeat means a disconnection that the iterator
			// recovers from; anything else ends it, so start a new one.
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				s.dropIterator(it)
			}
			s.t.log.Warn("pulling signals failed; retrying", "destination", s.destination, "err", err)
			s.sleep(ctx, backoff.next())
			continue
		}
		backoff.reset()
		if d := s.accept(ctx, msg); d != nil {
			return d, nil
		}
	}
}

// accept turns a message into a delivery, or parks it and returns nil.
func (s *subscription) accept(ctx context.Context, msg jetstream.Msg) *delivery {
	log := s.t.log.With("destination", s.destination)
	meta, err := msg.Metadata()
	if err != nil {
		// Only JetStream itself writes the reply subject that holds the
		// metadata; without it the message cannot be parked or counted.
		log.Error("message without JetStream metadata terminated", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return nil
	}
	log = log.With("stream_seq", meta.Sequence.Stream, "attempt", meta.NumDelivered)
	if s.isClosed() {
		// Closed while waiting: hand the message straight back.
		_ = msg.Nak()
		return nil
	}
	sig, err := s.decode(msg)
	if err != nil {
		log.Error("malformed message parked; it is never handed to the engine", "err", err)
		if perr := s.t.park(ctx, msg, meta, s.destination, "malformed message: "+err.Error()); perr != nil {
			log.Error("parking a malformed message failed; it comes back after AckWait", "err", perr)
		}
		return nil
	}
	if meta.NumDelivered > uint64(s.t.cfg.MaxDeliver) {
		log.Error("signal delivered more than MaxDeliver times parked; its token stays live",
			"token", sig.ID, "conversation", sig.Conversation, "max_deliver", s.t.cfg.MaxDeliver)
		reason := fmt.Sprintf("delivered %d times, more than MaxDeliver (%d)", meta.NumDelivered, s.t.cfg.MaxDeliver)
		if perr := s.t.park(ctx, msg, meta, s.destination, reason); perr != nil {
			log.Error("parking failed; the signal comes back after AckWait", "err", perr)
		}
		return nil
	}
	return &delivery{s: s, msg: msg, meta: meta, sig: sig}
}

func (s *subscription) decode(msg jetstream.Msg) (baton.Signal, error) {
	if want := s.t.signalSubject(s.destination); msg.Subject() != want {
		return baton.Signal{}, fmt.Errorf("%w: subject %q, want %q", baton.ErrInvalidSignal, msg.Subject(), want)
	}
	return decodeSignal(msg.Headers(), s.destination, msg.Data())
}

// sleep waits d unless ctx ends or the subscription closes.
func (s *subscription) sleep(ctx context.Context, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	case <-s.done:
	}
}

// Close implements transport.Subscription. Next returns
// transport.ErrClosed. Messages the client already received but did not
// hand out are returned to JetStream at once (negative acknowledgement)
// rather than after AckWait.
func (s *subscription) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.t.forget(s)
		s.mu.Lock()
		it := s.iter
		s.iter = nil
		s.mu.Unlock()
		if it == nil {
			return
		}
		it.Drain()
		// Wait for a Next in progress to give up its turn, then hand back
		// what the drained iterator still holds.
		select {
		case s.turn <- struct{}{}:
			defer func() { <-s.turn }()
		case <-time.After(2 * time.Second):
			it.Stop()
			return
		}
		for {
			msg, err := it.Next(jetstream.NextMaxWait(200 * time.Millisecond))
			if err != nil {
				it.Stop()
				return
			}
			_ = msg.Nak()
		}
	})
	return nil
}

// delivery is one JetStream delivery of a signal.
type delivery struct {
	s    *subscription
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
	sig  baton.Signal
}

var _ transport.Delivery = (*delivery)(nil)

func (d *delivery) Signal() baton.Signal { return d.sig }

// Attempt is JetStream's delivery count (negative acknowledgements count
// as deliveries too).
func (d *delivery) Attempt() int {
	if d.meta.NumDelivered > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(d.meta.NumDelivered)
}

// Ack acknowledges the delivery and waits for JetStream to confirm it. An
// error means the outcome is unknown: the signal may come back, and the
// receiver drops it as a duplicate.
func (d *delivery) Ack(ctx context.Context) error {
	if err := d.msg.DoubleAck(ctx); err != nil {
		return fmt.Errorf("nats transport: ack %s: %w", d.sig.ID, err)
	}
	return nil
}

var _ transport.BatchAcker = (*Transport)(nil)

// AckBatch implements transport.BatchAcker: the acknowledgements of this
// transport's deliveries are all sent before the first confirmation is
// awaited, so a batch costs about one round trip to JetStream, not one
// per delivery. Deliveries of another transport are acked one by one.
func (t *Transport) AckBatch(ctx context.Context, ds []transport.Delivery) []error {
	errs := make([]error, len(ds))
	var confirmations sync.WaitGroup
	for i, d := range ds {
		if _, ours := d.(*delivery); ours {
			confirmations.Go(func() { errs[i] = d.Ack(ctx) })
		} else {
			errs[i] = d.Ack(ctx)
		}
	}
	confirmations.Wait()
	return errs
}

// Nack asks JetStream to redeliver after delay.
func (d *delivery) Nack(ctx context.Context, delay time.Duration) error {
	var err error
	if delay > 0 {
		err = d.msg.NakWithDelay(delay)
	} else {
		err = d.msg.Nak()
	}
	if err != nil {
		return fmt.Errorf("nats transport: nack %s: %w", d.sig.ID, err)
	}
	return nil
}

// Park stores the signal with reason under <prefix>.parked.<destination>
// and then terminates the delivery. If storing fails, the delivery is left
// alone and comes back after AckWait.
func (d *delivery) Park(ctx context.Context, reason string) error {
	return d.s.t.park(ctx, d.msg, d.meta, d.s.destination, reason)
}

// backoff doubles from 50ms to 2s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{} }

func (b *backoff) next() time.Duration {
	switch {
	case b.d == 0:
		b.d = 50 * time.Millisecond
	case b.d < 2*time.Second:
		b.d = min(2*b.d, 2*time.Second)
	}
	return b.d
}

func (b *backoff) reset() { b.d = 0 }
