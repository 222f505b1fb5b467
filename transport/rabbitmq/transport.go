package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/transport"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Errors of Publish (and of the copies that Nack and Park publish). Each
// one means the signal may not be stored; publishing again is safe because
// receivers drop duplicates.
var (
	// ErrUnroutable: the broker returned the message because no queue took
	// it (a queue deleted behind the transport's back). Nothing was stored;
	// the next publish declares the queues again.
	ErrUnroutable = errors.New("rabbitmq transport: the broker returned the message as unroutable")
	// ErrNacked: the broker refused the message (a queue over a length
	// limit, or an internal error).
	ErrNacked = errors.New("rabbitmq transport: the broker did not confirm the message (nack)")
	// ErrNoConfirm: the channel or connection closed, or the wait ran out,
	// before the broker confirmed. The outcome is unknown.
	ErrNoConfirm = errors.New("rabbitmq transport: no confirm from the broker; the outcome is unknown")
)

// publishChannels is how many publishes (or batches, PublishBatch) may
// wait for their confirms at once. Each uses its own confirm-mode channel,
// so that a returned (unroutable) message is matched to its publish
// without ambiguity (in a batch, by its message id).
const publishChannels = 16

// Transport is a transport.Transport over RabbitMQ quorum queues.
type Transport struct {
	cfg   Config
	log   *slog.Logger
	done  chan struct{} // closed by Close
	wg    sync.WaitGroup
	slots chan struct{} // one per publish in progress

	mu        sync.Mutex
	closed    bool
	conn      *amqp.Connection // nil while reconnecting
	connReady chan struct{}    // closed while conn is set
	blocked   bool
	unblocked chan struct{} // closed unless the broker blocks publishing
	idle      []*publisher  // confirm-mode channels of conn not in use
	subs      map[*subscription]struct{}
	declared  map[string]*declaration // by group: "dest:<name>", "delay:<name>"
	created   map[topologyName]bool   // queues and exchanges declared, for tests to delete
	// version is the broker's, as it announced it ("" for another broker).
	version string
}

var _ transport.Transport = (*Transport)(nil)

// New connects to the broker, checks that it runs RabbitMQ 3.10 or newer,
// and returns the transport. It declares nothing yet: each destination's
// queues are declared on its first Publish or Subscribe. After New, the
// transport reconnects by itself whenever the connection drops.
func New(ctx context.Context, cfg Config) (*Transport, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &Transport{
		cfg: cfg, log: cfg.Logger,
		done:      make(chan struct{}),
		slots:     make(chan struct{}, publishChannels),
		connReady: make(chan struct{}),
		unblocked: make(chan struct{}),
		subs:      make(map[*subscription]struct{}),
		declared:  make(map[string]*declaration),
		created:   make(map[topologyName]bool),
	}
	close(t.unblocked)
	conn, err := t.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("rabbitmq transport: connect to %s: %w", redactURL(cfg.URL), err)
	}
	version, err := checkServer(conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	t.log.Debug("connected to the broker", "url", redactURL(cfg.URL), "server", version)
	t.version, _ = conn.Properties["version"].(string)
	if cfg.AckWait >= 30*time.Minute {
		t.log.Warn("AckWait is not below RabbitMQ's default consumer_timeout of 30 minutes; raise consumer_timeout on the broker or the broker closes channels holding a delivery that long", "ack_wait", cfg.AckWait)
	}
	t.setConn(conn)
	t.wg.Add(1)
	go t.keepConnected(conn)
	return t, nil
}

// Publish implements transport.Transport. It declares the destination's
// queues if this transport has not yet, publishes the signal persistently
// and mandatory through the default exchange to <Prefix>.sig.<destination>,
// and returns nil only once the broker confirmed it (publisher confirms).
// An unroutable message, a nack, a lost connection before the confirm, and
// an outage longer than PublishTimeout are all errors.
func (t *Transport) Publish(ctx context.Context, sig baton.Signal) error {
	if t.isClosed() {
		return transport.ErrClosed
	}
	msg, err := signalMessage(sig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.PublishTimeout)
	defer cancel()
	if err := t.declareDestination(ctx, sig.Destination); err != nil {
		return fmt.Errorf("rabbitmq transport: publish %s: %w", sig.ID, err)
	}
	if err := t.publish(ctx, "", t.signalQueue(sig.Destination), msg, "dest:"+sig.Destination); err != nil {
		return fmt.Errorf("rabbitmq transport: publish %s to %q: %w", sig.ID, sig.Destination, err)
	}
	return nil
}

// signalMessage is the persistent message that carries sig, its id as
// the message id.
func signalMessage(sig baton.Signal) (amqp.Publishing, error) {
	if err := sig.Validate(); err != nil {
		return amqp.Publishing{}, err
	}
	h, err := encodeHeaders(sig)
	if err != nil {
		return amqp.Publishing{}, err
	}
	return amqp.Publishing{
		Headers:      h,
		Body:         sig.Payload,
		DeliveryMode: amqp.Persistent,
		MessageId:    sig.ID.String(),
		AppId:        "baton",
	}, nil
}

// returnWindow is how many returns a publishing channel holds unread, and
// so how many messages of a batch (PublishBatch) wait for their confirms
// at once.
const returnWindow = 64

// publisher is a confirm-mode channel that carries one publish at a time.
type publisher struct {
	conn    *amqp.Connection
	ch      *amqp.Channel
	returns chan amqp.Return
}

// publish sends msg mandatory and waits for the broker's confirm. One
// publish at a time per channel makes matching a basic.return to its
// publish trivial: the broker sends the return before the confirm, and the
// library hands it to the buffered returns channel before it closes the
// confirmation's Done channel. On a return or a closed channel, the
// declarations of group are forgotten so the next publish declares again.
func (t *Transport) publish(ctx context.Context, exchange, key string, msg amqp.Publishing, group string) error {
	p, err := t.publisher(ctx)
	if err != nil {
		return err
	}
	dc, err := p.ch.PublishWithDeferredConfirm(exchange, key, true, false, msg)
	if err != nil {
		t.release(p, false)
		t.forget(group)
		return fmt.Errorf("%w: send: %v", ErrNoConfirm, err)
	}
	select {
	case <-dc.Done():
	case <-ctx.Done():
		// The channel may still get the confirm or a return; nobody will
		// read them, so it is not reused.
		t.release(p, false)
		return fmt.Errorf("%w: %w", ErrNoConfirm, ctx.Err())
	}
	if !dc.Acked() {
		if p.ch.IsClosed() {
			t.release(p, false)
			t.forget(group)
			return fmt.Errorf("%w: the channel closed before the broker confirmed", ErrNoConfirm)
		}
		t.release(p, true)
		return ErrNacked
	}
	select {
	case r, ok := <-p.returns:
		if ok {
			t.release(p, true)
			t.forget(group)
			return fmt.Errorf("%w: routing key %q: %d %s", ErrUnroutable, r.RoutingKey, r.ReplyCode, r.ReplyText)
		}
	default:
	}
	t.release(p, true)
	return nil
}

// publisher takes a publishing slot and an idle channel of the current
// connection, or opens one.
func (t *Transport) publisher(ctx context.Context) (*publisher, error) {
	select {
	case t.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("rabbitmq transport: waiting for a publishing channel: %w", ctx.Err())
	case <-t.done:
		return nil, transport.ErrClosed
	}
	p, err := t.openPublisher(ctx)
	if err != nil {
		<-t.slots
		return nil, err
	}
	return p, nil
}

func (t *Transport) openPublisher(ctx context.Context) (*publisher, error) {
	conn, err := t.connection(ctx, true)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	for len(t.idle) > 0 {
		p := t.idle[len(t.idle)-1]
		t.idle = t.idle[:len(t.idle)-1]
		if p.conn == conn && !p.ch.IsClosed() {
			t.mu.Unlock()
			return p, nil
		}
	}
	t.mu.Unlock()
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq transport: open a channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return nil, fmt.Errorf("rabbitmq transport: enable publisher confirms: %w", err)
	}
	return &publisher{conn: conn, ch: ch, returns: ch.NotifyReturn(make(chan amqp.Return, returnWindow))}, nil
}

// release gives back p's slot, and p itself to the idle list if it is fit
// for another publish.
func (t *Transport) release(p *publisher, reuse bool) {
	defer func() { <-t.slots }()
	if reuse {
		t.mu.Lock()
		if !t.closed && t.conn == p.conn && !p.ch.IsClosed() {
			t.idle = append(t.idle, p)
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
	}
	// Closing waits for the broker's reply, which a blocked or dead
	// connection may never send.
	go p.ch.Close()
}

// Subscribe implements transport.Transport. It declares the destination's
// queues and starts a consumer on <Prefix>.sig.<destination> before it
// returns. Every subscriber of a destination, in this process or another,
// consumes the same queue, so they compete for its signals.
func (t *Transport) Subscribe(ctx context.Context, destination string) (transport.Subscription, error) {
	if err := validDestination(destination); err != nil {
		return nil, fmt.Errorf("rabbitmq transport: subscribe: %w", err)
	}
	if t.isClosed() {
		return nil, transport.ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.PublishTimeout)
	defer cancel()
	if err := t.declareDestination(ctx, destination); err != nil {
		return nil, fmt.Errorf("rabbitmq transport: subscribe to %q: %w", destination, err)
	}
	s := newSubscription(t, destination)
	sess, err := s.start(ctx)
	if err != nil {
		s.cancel()
		return nil, err
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		s.cancel()
		sess.ch.Close()
		return nil, transport.ErrClosed
	}
	t.subs[s] = struct{}{}
	t.mu.Unlock()
	go s.run(sess)
	return s, nil
}

func (t *Transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

func (t *Transport) forgetSubscription(s *subscription) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.subs, s)
}

// Close closes every subscription (handing their undelivered messages back
// to the queue) and the connection. Deliveries handed out but not yet
// acknowledged return to their queues when the connection closes.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	subs := make([]*subscription, 0, len(t.subs))
	for s := range t.subs {
		subs = append(subs, s)
	}
	conn := t.conn
	t.mu.Unlock()
	close(t.done)
	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Go(func() { s.Close() })
	}
	wg.Wait()
	if conn != nil {
		_ = conn.CloseDeadline(time.Now().Add(2 * time.Second))
	}
	t.wg.Wait()
	return nil
}
