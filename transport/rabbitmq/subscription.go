package rabbitmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/transport"
	amqp "github.com/rabbitmq/amqp091-go"
)

// subscription consumes one destination's queue on a channel of its own,
// with up to Config.Prefetch unacknowledged deliveries. A goroutine (run)
// moves deliveries from the consumer into ready, where Next takes them,
// and starts a new consumer whenever the channel or connection closes.
type subscription struct {
	t           *Transport
	destination string
	queue       string

	ready     chan *delivery
	done      chan struct{} // closed by Close
	stopped   chan struct{} // closed when run has handed back what it held
	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
}

var _ transport.Subscription = (*subscription)(nil)

func newSubscription(t *Transport, destination string) *subscription {
	ctx, cancel := context.WithCancel(context.Background())
	return &subscription{
		t: t, destination: destination, queue: t.signalQueue(destination),
		ready:   make(chan *delivery, t.cfg.Prefetch),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
		ctx:     ctx, cancel: cancel,
	}
}

// session is one consumer on one channel. Delivery tags belong to their
// channel, so every delivery acknowledges on its own session's channel; a
// delivery of a closed channel was already handed back by the broker.
type session struct {
	ch   *amqp.Channel
	tag  string
	msgs <-chan amqp.Delivery

	mu        sync.Mutex
	unsettled int
	draining  bool
}

func (ss *session) add() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.unsettled++
}

// release counts one delivery settled; a draining session closes its
// channel once none is left.
func (ss *session) release() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.unsettled--
	if ss.draining && ss.unsettled == 0 {
		go ss.ch.Close()
	}
}

// drain closes the channel now if no delivery is unsettled, or else when
// the last one settles (each does within AckWait).
func (ss *session) drain() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.draining {
		return
	}
	ss.draining = true
	if ss.unsettled == 0 {
		go ss.ch.Close()
	}
}

// start opens a channel and a consumer on the destination's queue.
func (s *subscription) start(ctx context.Context) (*session, error) {
	conn, err := s.t.connection(ctx, false)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq transport: open a channel for %q: %w", s.destination, err)
	}
	if err := ch.Qos(s.t.cfg.Prefetch, 0, false); err != nil {
		ch.Close()
		return nil, fmt.Errorf("rabbitmq transport: set prefetch for %q: %w", s.destination, err)
	}
	tag := consumerTag()
	msgs, err := ch.Consume(s.queue, tag, false, false, false, false, nil)
	if err != nil {
		ch.Close()
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			s.t.forget("dest:" + s.destination) // deleted behind our back
		}
		return nil, fmt.Errorf("rabbitmq transport: consume %s: %w", s.queue, err)
	}
	return &session{ch: ch, tag: tag, msgs: msgs}, nil
}

func consumerTag() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "baton-" + hex.EncodeToString(b)
}

// run feeds ready from sess and from each consumer after it, until Close.
func (s *subscription) run(sess *session) {
	defer close(s.stopped)
	backoff := backoff{max: 2 * time.Second}
	for {
		s.pump(sess)
		if s.isClosed() {
			s.handBack(sess)
			return
		}
		// The channel or connection closed, or the broker cancelled the
		// consumer (its queue was deleted). What the old channel still
		// holds unsettled settles or times out; then it closes.
		sess.drain()
		s.t.log.Warn("consumer stopped; starting a new one", "destination", s.destination)
		for {
			timer := time.NewTimer(backoff.next())
			select {
			case <-timer.C:
			case <-s.done:
				timer.Stop()
				return
			}
			ctx, cancel := context.WithTimeout(s.ctx, s.t.cfg.PublishTimeout)
			err := s.t.declareDestination(ctx, s.destination)
			var next *session
			if err == nil {
				next, err = s.start(ctx)
			}
			cancel()
			if err == nil {
				sess = next
				backoff.reset()
				break
			}
			if s.isClosed() {
				return
			}
			s.t.log.Warn("cannot consume; retrying", "destination", s.destination, "err", err)
		}
	}
}

// pump moves sess's deliveries into ready until the consumer ends or the
// subscription closes.
func (s *subscription) pump(sess *session) {
	for {
		select {
		case msg, ok := <-sess.msgs:
			if !ok {
				return
			}
			d := s.track(sess, msg)
			if !s.accept(d) {
				continue
			}
			select {
			case s.ready <- d:
			case <-s.done:
				d.requeue()
				return
			}
		case <-s.done:
			return
		}
	}
}

// handBack runs once the subscription is closed: it cancels the consumer,
// so the broker sends nothing more, and returns to the queue at once what
// arrived but was never handed out. Deliveries handed out and not yet
// settled keep their channel open until they settle or their AckWait ends.
func (s *subscription) handBack(sess *session) {
	// Cancel waits for the broker's reply, after which the library closes
	// msgs, having passed on every delivery sent before the reply.
	if err := sess.ch.Cancel(sess.tag, false); err == nil {
		for msg := range sess.msgs {
			s.track(sess, msg).requeue()
		}
	}
	for {
		select {
		case d := <-s.ready:
			d.requeue()
		default:
			sess.drain()
			return
		}
	}
}

// track registers a delivery with its session and starts its AckWait.
func (s *subscription) track(sess *session, msg amqp.Delivery) *delivery {
	d := &delivery{s: s, sess: sess, msg: msg}
	sess.add()
	d.timer = time.AfterFunc(s.t.cfg.AckWait, d.expire)
	return d
}

// accept decodes d's signal and reports whether it may be handed out. A
// message that is not a well-formed signal is parked here and never
// reaches the engine; if parking fails it stays unacknowledged and comes
// back after AckWait.
func (s *subscription) accept(d *delivery) bool {
	sig, previous, err := decodeSignal(d.msg.Headers, s.destination, d.msg.Body)
	d.attempt = min(previous, maxAttempts) + 1
	if err == nil {
		d.sig = sig
		return true
	}
	log := s.t.log.With("destination", s.destination, "message_id", d.msg.MessageId)
	log.Error("malformed message parked; it is never handed to the engine", "err", err)
	if err := d.park(s.ctx, "malformed message: "+err.Error()); err != nil {
		log.Error("parking a malformed message failed; it comes back after AckWait", "err", err)
	}
	return false
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
// signals, a ctx error, or transport.ErrClosed. It waits through
// reconnects: the run goroutine starts a new consumer on the new
// connection. Deliveries that the broker took back meanwhile (their
// channel closed, or their AckWait ended before anyone took them) are
// skipped; they come again as new deliveries.
func (s *subscription) Next(ctx context.Context) (transport.Delivery, error) {
	for {
		if s.isClosed() {
			return nil, transport.ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		select {
		case d := <-s.ready:
			if s.isClosed() {
				d.requeue()
				return nil, transport.ErrClosed
			}
			if d.handOut() {
				return d, nil
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.done:
			return nil, transport.ErrClosed
		}
	}
}

// Close implements transport.Subscription. Next returns
// transport.ErrClosed. The consumer is cancelled and the deliveries that
// arrived but were not handed out go back to the queue at once; those
// handed out can still be settled, and return to the queue after AckWait
// if they are not.
func (s *subscription) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.cancel()
		s.t.forgetSubscription(s)
		select {
		case <-s.stopped:
		case <-time.After(5 * time.Second):
			s.t.log.Warn("closing a subscription took longer than 5s", "destination", s.destination)
		}
	})
	return nil
}

// errSettled is returned by a delivery's Ack, Nack or Park after the
// delivery was already settled, or handed back to the queue when its
// AckWait ran out.
var errSettled = errors.New("rabbitmq transport: delivery already settled or handed back after AckWait")

// delivery is one AMQP delivery of a signal.
type delivery struct {
	s       *subscription
	sess    *session
	msg     amqp.Delivery
	sig     baton.Signal
	attempt int

	mu      sync.Mutex
	settled bool // acked, rejected, handed back, or being parked or delayed
	timer   *time.Timer
}

var _ transport.Delivery = (*delivery)(nil)

func (d *delivery) Signal() baton.Signal { return d.sig }

// Attempt counts the quorum queue's earlier deliveries of the message
// (x-delivery-count, or x-acquired-count where the broker sends it: returns
// by Nack(0), by AckWait ending, by a consumer's channel closing) plus the
// deliveries recorded in Baton-Attempts by a delayed Nack's copy, plus one.
func (d *delivery) Attempt() int { return d.attempt }

// claim marks d settled so that its AckWait no longer hands it back.
func (d *delivery) claim() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.settled {
		return errSettled
	}
	d.settled = true
	d.timer.Stop()
	return nil
}

// unclaim undoes claim after a failed Park or delayed Nack: the delivery
// gets a new AckWait.
func (d *delivery) unclaim() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.settled = false
	d.timer.Reset(d.s.t.cfg.AckWait)
}

// handOut restarts d's AckWait as Next hands it out, or reports false if
// the broker has it back already.
func (d *delivery) handOut() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.settled {
		return false
	}
	if d.sess.ch.IsClosed() {
		d.settled = true
		d.timer.Stop()
		d.sess.release()
		return false
	}
	d.timer.Reset(d.s.t.cfg.AckWait)
	return true
}

// expire hands d back to the queue when its AckWait ends: the consumer
// side of RabbitMQ's missing acknowledgement timeout.
func (d *delivery) expire() {
	if d.claim() != nil {
		return
	}
	defer d.sess.release()
	if err := d.msg.Nack(false, true); err != nil {
		d.s.t.log.Debug("handing back an expired delivery failed; the broker takes it back with its channel", "destination", d.s.destination, "err", err)
	}
}

// requeue hands d back to the queue at once.
func (d *delivery) requeue() {
	if d.claim() != nil {
		return
	}
	defer d.sess.release()
	_ = d.msg.Nack(false, true)
}

// Ack acknowledges the delivery. AMQP acknowledgements are not confirmed:
// nil means the ack was written to the connection. If it is lost, the
// signal comes back and the receiver drops it as a duplicate. An error
// means the channel had closed, and the broker redelivers the signal.
func (d *delivery) Ack(ctx context.Context) error {
	if err := d.claim(); err != nil {
		return fmt.Errorf("rabbitmq transport: ack %s: %w", d.sig.ID, err)
	}
	defer d.sess.release()
	if err := d.msg.Ack(false); err != nil {
		return fmt.Errorf("rabbitmq transport: ack %s: %w", d.sig.ID, err)
	}
	return nil
}

// Nack asks for redelivery after delay. Without a delay the message is
// rejected back into its queue (basic.nack with requeue). With one, a copy
// goes into the delay bucket for delay (rounded up to a power of two of a
// millisecond) and, once the broker confirmed the copy, the original is
// acknowledged; the broker moves the copy back into the destination's
// queue when the bucket's TTL ends. If publishing the copy fails, the
// delivery is left unsettled and comes back after AckWait.
func (d *delivery) Nack(ctx context.Context, delay time.Duration) error {
	if delay <= 0 {
		if err := d.claim(); err != nil {
			return fmt.Errorf("rabbitmq transport: nack %s: %w", d.sig.ID, err)
		}
		defer d.sess.release()
		if err := d.msg.Nack(false, true); err != nil {
			return fmt.Errorf("rabbitmq transport: nack %s: %w", d.sig.ID, err)
		}
		return nil
	}
	if _, err := delayBucket(delay); err != nil {
		return fmt.Errorf("rabbitmq transport: nack %s: %w", d.sig.ID, err)
	}
	if err := d.claim(); err != nil {
		return fmt.Errorf("rabbitmq transport: nack %s: %w", d.sig.ID, err)
	}
	if err := d.s.t.publishDelayed(ctx, d.sig, d.attempt, delay); err != nil {
		d.unclaim()
		return fmt.Errorf("rabbitmq transport: nack %s with delay %v: %w", d.sig.ID, delay, err)
	}
	defer d.sess.release()
	if err := d.msg.Ack(false); err != nil {
		// The delayed copy is stored; the original comes back too, and
		// one of them is dropped as a duplicate.
		return fmt.Errorf("rabbitmq transport: nack %s: acknowledge the original: %w", d.sig.ID, err)
	}
	return nil
}

// Park publishes a copy with reason to <Prefix>.parked.<destination> and,
// once the broker confirmed it, acknowledges the original. A crash in
// between leaves both; the parked copy is then a harmless duplicate. If
// publishing the copy fails, the delivery is left unsettled and comes back
// after AckWait.
func (d *delivery) Park(ctx context.Context, reason string) error {
	return d.park(ctx, reason)
}

func (d *delivery) park(ctx context.Context, reason string) error {
	if err := d.claim(); err != nil {
		return fmt.Errorf("rabbitmq transport: park: %w", err)
	}
	if err := d.s.t.parkCopy(ctx, &d.msg, d.s.destination, reason, d.attempt); err != nil {
		d.unclaim()
		return err
	}
	defer d.sess.release()
	if err := d.msg.Ack(false); err != nil {
		return fmt.Errorf("rabbitmq transport: park: acknowledge the original: %w", err)
	}
	return nil
}
