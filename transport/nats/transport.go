package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/transport"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// maxMsgSize is the stream's limit on one message, headers included.
const maxMsgSize = baton.MaxPayloadBytes + headerAllowance

// Transport is a transport.Transport over NATS JetStream.
type Transport struct {
	cfg      Config
	log      *slog.Logger
	nc       *nats.Conn
	ownsConn bool
	js       jetstream.JetStream

	mu     sync.Mutex
	closed bool
	subs   map[*subscription]struct{}
}

var (
	_ transport.Transport      = (*Transport)(nil)
	_ transport.BatchPublisher = (*Transport)(nil)
)

// New connects (or uses cfg.Conn), creates or updates the stream, and
// returns the transport. The stream keeps signals in files, holds each
// until it is acknowledged (work-queue retention), never discards one to
// make room (publishes fail instead), and has no age limit.
func New(ctx context.Context, cfg Config) (*Transport, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &Transport{cfg: cfg, log: cfg.Logger, nc: cfg.Conn, subs: make(map[*subscription]struct{})}
	// Refuse before connecting or creating anything: a server that may
	// lose acknowledged signals gets no stream from us.
	if err := t.checkDurability(ctx); err != nil {
		return nil, err
	}
	if t.nc == nil {
		// The client reconnects by itself and in silence: say once that
		// the connection is lost, and once that it is back, so that an
		// outage of the broker is in the log.
		var lost time.Time
		var lostMu sync.Mutex
		opts := append([]nats.Option{
			nats.Name("baton"),
			nats.MaxReconnects(-1), // a transport outlives server restarts
			nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
				if nc.IsClosed() {
					return // Close, not an outage
				}
				lostMu.Lock()
				lost = time.Now()
				lostMu.Unlock()
				t.log.Warn("nats transport: lost the connection to the server; reconnecting: signals are neither received nor published until then, and wait in the stream or their senders' outboxes",
					"server", redactURL(cfg.URL), "err", err)
			}),
			nats.ReconnectHandler(func(nc *nats.Conn) {
				lostMu.Lock()
				down := time.Since(lost)
				lostMu.Unlock()
				t.log.Info("nats transport: connected again", "server", nc.ConnectedUrlRedacted(), "after", down.Round(time.Millisecond).String())
			}),
		}, cfg.ConnectOptions...)
		nc, err := nats.Connect(cfg.URL, opts...)
		if err != nil {
			// The URL may hold credentials: name only its host.
			return nil, fmt.Errorf("nats transport: connect to %s: %w", redactURL(cfg.URL), err)
		}
		t.nc, t.ownsConn = nc, true
	}
	// An asynchronous publish (PublishBatch) whose ack never comes is
	// given up after publishAckTimeout, so it leaves the client's pending
	// list instead of counting against its limit for ever.
	js, err := jetstream.New(t.nc, jetstream.WithPublishAsyncTimeout(publishAckTimeout))
	if err != nil {
		t.closeConn()
		return nil, fmt.Errorf("nats transport: jetstream: %w", err)
	}
	t.js = js
	if err := t.ensureStream(ctx); err != nil {
		t.closeConn()
		return nil, err
	}
	t.checkMaxPayload()
	return t, nil
}

func (t *Transport) ensureStream(ctx context.Context) error {
	_, err := t.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        t.cfg.Stream,
		Description: "baton signals",
		Subjects:    []string{t.cfg.Prefix + ".sig.>", t.cfg.Prefix + ".parked.>"},
		// A signal stays until a consumer acknowledges it; parked signals
		// have no consumer and stay until an operator takes them.
		Retention: jetstream.WorkQueuePolicy,
		// Never drop a stored signal to make room: refuse new ones.
		Discard:    jetstream.DiscardNew,
		Storage:    jetstream.FileStorage,
		Replicas:   t.cfg.Replicas,
		MaxMsgSize: maxMsgSize,
		MaxMsgs:    -1,
		MaxBytes:   -1,
		Duplicates: t.cfg.DuplicateWindow,
	})
	if err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fmt.Errorf("nats transport: the server has no JetStream (start it with -js or a jetstream block): %w", err)
		}
		return fmt.Errorf("nats transport: create or update stream %q: %w", t.cfg.Stream, err)
	}
	return nil
}

// checkMaxPayload warns when the server's max_payload is too small for
// baton's largest signals. It never fails New: such signals are refused on
// publish, the others pass.
func (t *Transport) checkMaxPayload() {
	if mp := t.nc.MaxPayload(); mp < maxMsgSize {
		t.log.Warn("the NATS server's max_payload is below baton's message limit; signals with large payloads will be refused on publish (set max_payload to at least 2MB)",
			"max_payload", mp, "needed", maxMsgSize)
	}
}

func (t *Transport) signalSubject(destination string) string {
	return t.cfg.Prefix + ".sig." + subjectToken(destination)
}

func (t *Transport) parkedSubject(destination string) string {
	return t.cfg.Prefix + ".parked." + subjectToken(destination)
}

// Publish implements transport.Transport. It returns nil once JetStream
// has stored the signal: on disk, since New refuses a server it cannot
// show syncs every write (unless Config.AllowUnsafeDurability). The token
// id is the message id, so JetStream drops a republish within
// DuplicateWindow.
func (t *Transport) Publish(ctx context.Context, sig baton.Signal) error {
	if t.isClosed() {
		return transport.ErrClosed
	}
	msg, err := t.message(sig)
	if err != nil {
		return err
	}
	_, err = t.js.PublishMsg(ctx, msg, jetstream.WithMsgID(sig.ID.String()), jetstream.WithExpectStream(t.cfg.Stream))
	if err != nil {
		return fmt.Errorf("nats transport: publish %s to %q: %w", sig.ID, sig.Destination, err)
	}
	return nil
}

// message checks sig and encodes it as a NATS message.
func (t *Transport) message(sig baton.Signal) (*nats.Msg, error) {
	if err := sig.Validate(); err != nil {
		return nil, err
	}
	if limit := t.MaxPayload(); len(sig.Payload) > limit {
		return nil, fmt.Errorf("nats transport: publish %s: payload of %d bytes exceeds the %d this server carries (raise its max_payload to at least 2MB)", sig.ID, len(sig.Payload), limit)
	}
	h, err := encodeHeaders(sig)
	if err != nil {
		return nil, err
	}
	return &nats.Msg{Subject: t.signalSubject(sig.Destination), Header: h, Data: sig.Payload}, nil
}

// publishAckTimeout bounds the wait for JetStream's ack of an
// asynchronous publish.
const publishAckTimeout = 10 * time.Second

// PublishBatch implements transport.BatchPublisher: every signal is sent
// before the first acknowledgement is awaited, so JetStream stores them
// together (one fsync for many with sync always), and each error is what
// Publish would have returned for that signal.
func (t *Transport) PublishBatch(ctx context.Context, sigs []baton.Signal) []error {
	errs := make([]error, len(sigs))
	futures := make([]jetstream.PubAckFuture, len(sigs))
	for i, sig := range sigs {
		if t.isClosed() {
			errs[i] = transport.ErrClosed
			continue
		}
		if err := ctx.Err(); err != nil {
			errs[i] = fmt.Errorf("nats transport: publish %s to %q: %w", sig.ID, sig.Destination, err)
			continue
		}
		msg, err := t.message(sig)
		if err != nil {
			errs[i] = err
			continue
		}
		futures[i], err = t.js.PublishMsgAsync(msg, jetstream.WithMsgID(sig.ID.String()), jetstream.WithExpectStream(t.cfg.Stream))
		if err != nil {
			errs[i] = fmt.Errorf("nats transport: publish %s to %q: %w", sig.ID, sig.Destination, err)
		}
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs[i] = fmt.Errorf("nats transport: publish %s to %q: %w", sigs[i].ID, sigs[i].Destination, err)
		case <-ctx.Done():
			errs[i] = fmt.Errorf("nats transport: publish %s to %q: %w", sigs[i].ID, sigs[i].Destination, ctx.Err())
		}
	}
	return errs
}

// MaxPayload returns the largest payload this transport carries: baton's
// limit, or less when the server's max_payload leaves less room.
func (t *Transport) MaxPayload() int {
	return int(min(int64(baton.MaxPayloadBytes), t.nc.MaxPayload()-headerAllowance))
}

// Subscribe implements transport.Transport. Every subscriber of a
// destination, in this process or another, shares the destination's
// durable pull consumer, so they compete for its signals.
func (t *Transport) Subscribe(ctx context.Context, destination string) (transport.Subscription, error) {
	if err := validDestination(destination); err != nil {
		return nil, fmt.Errorf("nats transport: subscribe: %w", err)
	}
	s := &subscription{t: t, destination: destination, turn: make(chan struct{}, 1), done: make(chan struct{})}
	if _, err := s.consumer(ctx); err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, transport.ErrClosed
	}
	t.subs[s] = struct{}{}
	return s, nil
}

func (t *Transport) consumerConfig(destination string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       consumerName(destination),
		Description:   truncate("baton destination "+destination, 1024),
		FilterSubject: t.signalSubject(destination),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.cfg.AckWait,
		// Unlimited: the transport parks a message delivered more than
		// Config.MaxDeliver times itself. JetStream's own limit would leave
		// it in the stream, delivered to nobody and seen by nobody.
		MaxDeliver: -1,
	}
}

func (t *Transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

func (t *Transport) forget(s *subscription) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.subs, s)
}

// Close closes every subscription and, if New opened the connection, the
// connection. Unacknowledged deliveries are redelivered by JetStream.
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
	t.mu.Unlock()
	for _, s := range subs {
		s.Close()
	}
	t.closeConn()
	return nil
}

func (t *Transport) closeConn() {
	if t.ownsConn {
		// Drain would wait for subscriptions we already closed; flush
		// outstanding acks and close.
		_ = t.nc.FlushTimeout(time.Second)
		t.nc.Close()
	}
}

// redactURL keeps the scheme and hosts of a server URL list and drops any
// user information, so logs and errors never show a password.
func redactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if scheme, rest, ok := strings.Cut(p, "://"); ok {
			if at := strings.LastIndex(rest, "@"); at >= 0 {
				rest = "REDACTED@" + rest[at+1:]
			}
			p = scheme + "://" + rest
		} else if at := strings.LastIndex(p, "@"); at >= 0 {
			p = "REDACTED@" + p[at+1:]
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
