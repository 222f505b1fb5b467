package rabbitmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/transport"
	"github.com/batonhq/baton/transporttest"
	amqp "github.com/rabbitmq/amqp091-go"
)

const testAckWait = 300 * time.Millisecond

func uniqueName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// testConfig returns a config with a queue name prefix no other test uses.
func testConfig(t *testing.T, url string) Config {
	return Config{
		URL:     url,
		Prefix:  uniqueName("batontest."),
		AckWait: testAckWait,
		Logger:  slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

// testWriter sends log lines to t.Log, so they show only for failing tests.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// newTestTransport opens a transport and, when the test ends, deletes the
// queues and exchanges it declared and closes it.
func newTestTransport(t *testing.T, cfg Config) *Transport {
	t.Helper()
	tr, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", redactURL(cfg.URL), err)
	}
	t.Cleanup(func() {
		if err := tr.deleteTopology(); err != nil {
			t.Errorf("delete the test's queues: %v", err)
		}
		tr.Close()
	})
	return tr
}

// deleteTopology deletes every queue and exchange the transport declared,
// over a connection of its own so that it works after Close too.
func (t *Transport) deleteTopology() error {
	t.mu.Lock()
	var created []topologyName
	for n := range t.created {
		created = append(created, n)
	}
	t.mu.Unlock()
	if len(created) == 0 {
		return nil
	}
	conn, err := amqp.Dial(t.cfg.URL)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	for _, n := range created {
		if n.kind == "queue" {
			_, err = ch.QueueDelete(n.name, false, false, false)
		} else {
			err = ch.ExchangeDelete(n.name, false, false)
		}
		if err != nil {
			return fmt.Errorf("delete %s %s: %w", n.kind, n.name, err)
		}
	}
	return nil
}

func TestConformance(t *testing.T) {
	t.Parallel()
	url := testenv.Addr(t, testenv.RabbitMQ)
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			return newTestTransport(t, testConfig(t, url))
		},
		AckWait: testAckWait,
	})
}

func newSignal(destination string) baton.Signal {
	return baton.Signal{
		ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Causation: baton.NewTokenID(),
		Destination: destination, Type: "test.type", Payload: []byte("payload"),
		Trace: baton.TraceContext{Parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
	}
}

func nextWithin(t *testing.T, sub transport.Subscription, d time.Duration) (transport.Delivery, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	return sub.Next(ctx)
}

func mustSubscribe(t *testing.T, tr *Transport, destination string) transport.Subscription {
	t.Helper()
	sub, err := tr.Subscribe(t.Context(), destination)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

// TestReconnect cuts the connection under a subscription holding an
// unacknowledged delivery: the broker takes the delivery back, the
// transport reconnects, the subscription consumes again and gets it, and
// publishing works again, all without the caller doing anything.
func TestReconnect(t *testing.T) {
	t.Parallel()
	url := testenv.Addr(t, testenv.RabbitMQ)
	p := startProxy(t, url)
	cfg := testConfig(t, p.url(url))
	cfg.AckWait = time.Minute // so that only the cut can bring the delivery back
	tr := newTestTransport(t, cfg)
	ctx := t.Context()
	sub := mustSubscribe(t, tr, "orders")

	held := newSignal("orders")
	if err := tr.Publish(ctx, held); err != nil {
		t.Fatal(err)
	}
	d, err := nextWithin(t, sub, 5*time.Second)
	if err != nil || d.Signal().ID != held.ID {
		t.Fatalf("first delivery = %v, %v; want %s", d, err, held.ID)
	}

	p.cut()
	cut := time.Now()
	again, err := nextWithin(t, sub, 15*time.Second)
	if err != nil {
		t.Fatalf("Next after the connection was cut = %v, want the unacknowledged signal again", err)
	}
	if again.Signal().ID != held.ID || again.Attempt() != 2 {
		t.Fatalf("after the cut: %s attempt %d, want %s attempt 2", again.Signal().ID, again.Attempt(), held.ID)
	}
	t.Logf("unacknowledged delivery back %v after the cut", time.Since(cut))
	if err := d.Ack(ctx); err == nil {
		t.Error("Ack of a delivery whose connection was cut returned nil")
	}
	if err := again.Ack(ctx); err != nil {
		t.Fatalf("Ack after reconnecting: %v", err)
	}

	after := newSignal("orders")
	if err := tr.Publish(ctx, after); err != nil {
		t.Fatalf("Publish after reconnecting: %v", err)
	}
	d, err = nextWithin(t, sub, 5*time.Second)
	if err != nil || d.Signal().ID != after.ID || d.Attempt() != 1 {
		t.Fatalf("after reconnecting: %v, %v; want %s attempt 1", d, err, after.ID)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestOutage keeps the broker unreachable: Publish fails within
// PublishTimeout, Next waits, and both work again once the broker is back.
func TestOutage(t *testing.T) {
	t.Parallel()
	url := testenv.Addr(t, testenv.RabbitMQ)
	p := startProxy(t, url)
	cfg := testConfig(t, p.url(url))
	cfg.PublishTimeout = 500 * time.Millisecond
	tr := newTestTransport(t, cfg)
	ctx := t.Context()
	sub := mustSubscribe(t, tr, "orders")

	p.setRefuse(true)
	p.cut()
	start := time.Now()
	lost := newSignal("orders")
	if err := tr.Publish(ctx, lost); err == nil {
		t.Fatal("Publish with the broker unreachable returned nil")
	} else {
		t.Logf("Publish during the outage: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Publish during an outage took %v with PublishTimeout %v", took, cfg.PublishTimeout)
	}
	if d, err := nextWithin(t, sub, 300*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next during the outage = %v, %v; want it to wait", d, err)
	}

	p.setRefuse(false)
	sig := newSignal("orders")
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := tr.Publish(ctx, sig)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Publish still fails after the broker came back: %v", err)
		}
	}
	t.Logf("publishing again %v after the broker came back", time.Since(start))
	d, err := nextWithin(t, sub, 10*time.Second)
	if err != nil {
		t.Fatalf("Next after the outage: %v", err)
	}
	if d.Signal().ID != sig.ID {
		t.Fatalf("after the outage got %s, want %s (the publish that failed must not have been stored)", d.Signal().ID, sig.ID)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestPublishWaitsForConfirm holds the broker's replies: Publish must not
// return before the confirm, and losing the connection while it waits is
// an error (the outcome is unknown), never nil.
func TestPublishWaitsForConfirm(t *testing.T) {
	t.Parallel()
	url := testenv.Addr(t, testenv.RabbitMQ)
	p := startProxy(t, url)
	tr := newTestTransport(t, testConfig(t, p.url(url)))
	ctx := t.Context()
	if err := tr.Publish(ctx, newSignal("orders")); err != nil {
		t.Fatal(err)
	}

	p.holdReplies(true)
	result := make(chan error, 1)
	go func() { result <- tr.Publish(ctx, newSignal("orders")) }()
	select {
	case err := <-result:
		t.Fatalf("Publish returned %v while the broker's confirm was held back", err)
	case <-time.After(500 * time.Millisecond):
	}
	p.cut()
	p.holdReplies(false)
	select {
	case err := <-result:
		if !errors.Is(err, ErrNoConfirm) {
			t.Fatalf("Publish whose connection was lost before the confirm = %v, want ErrNoConfirm", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Publish did not return after its connection was cut")
	}
}

// TestUnroutableAndNackedPublishes checks the two ways a broker refuses a
// message: a queue deleted behind the transport's back (the mandatory
// message is returned) and a queue over its length limit (a nack).
func TestUnroutableAndNackedPublishes(t *testing.T) {
	t.Parallel()
	tr := newTestTransport(t, testConfig(t, testenv.Addr(t, testenv.RabbitMQ)))
	ctx := t.Context()
	stored := newSignal("orders")
	if err := tr.Publish(ctx, stored); err != nil {
		t.Fatal(err)
	}
	err := tr.withChannel(ctx, func(ch *amqp.Channel) error {
		q, err := ch.QueueDeclarePassive(tr.signalQueue("orders"), true, false, false, false, nil)
		if err != nil {
			return err
		}
		if q.Messages != 1 {
			t.Errorf("the queue holds %d messages after one confirmed publish", q.Messages)
		}
		_, err = ch.QueueDelete(tr.signalQueue("orders"), false, false, false)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Publish(ctx, newSignal("orders")); !errors.Is(err, ErrUnroutable) {
		t.Fatalf("Publish to a deleted queue = %v, want ErrUnroutable", err)
	}
	again := newSignal("orders")
	if err := tr.Publish(ctx, again); err != nil {
		t.Fatalf("Publish after an unroutable one must declare the queue again: %v", err)
	}
	sub := mustSubscribe(t, tr, "orders")
	if d, err := nextWithin(t, sub, 5*time.Second); err != nil || d.Signal().ID != again.ID {
		t.Fatalf("Next = %v, %v; want %s", d, err, again.ID)
	}

	full := tr.cfg.Prefix + ".full"
	err = tr.withChannel(ctx, func(ch *amqp.Channel) error {
		return tr.declareQueue(ch, full, amqp.Table{"x-queue-type": "quorum", "x-max-length": int64(0), "x-overflow": "reject-publish"})
	})
	if err != nil {
		t.Fatal(err)
	}
	// A quorum queue notices that it is full after the fact, so the first
	// message may get in; the ones after it must be refused.
	for i := range 5 {
		err = tr.publish(ctx, "", full, amqp.Publishing{Body: []byte("x"), DeliveryMode: amqp.Persistent}, "")
		t.Logf("publish %d to a full queue: %v", i, err)
		if err != nil {
			break
		}
	}
	if !errors.Is(err, ErrNacked) {
		t.Fatalf("publish to a full queue = %v, want ErrNacked", err)
	}
}

// getAll reads n messages from queue with basic.get (and acknowledges them).
func getAll(t *testing.T, tr *Transport, queue string, n int) []amqp.Delivery {
	t.Helper()
	var msgs []amqp.Delivery
	err := tr.withChannel(t.Context(), func(ch *amqp.Channel) error {
		deadline := time.Now().Add(5 * time.Second)
		for len(msgs) < n+1 && time.Now().Before(deadline) {
			m, ok, err := ch.Get(queue, true)
			if err != nil {
				return err
			}
			if !ok {
				if len(msgs) == n {
					break
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			msgs = append(msgs, m)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("get from %s: %v", queue, err)
	}
	if len(msgs) != n {
		t.Fatalf("%d messages in %s, want %d", len(msgs), queue, n)
	}
	return msgs
}

func TestMalformedMessagesAreParkedNotDelivered(t *testing.T) {
	t.Parallel()
	tr := newTestTransport(t, testConfig(t, testenv.Addr(t, testenv.RabbitMQ)))
	ctx := t.Context()
	const dest = "orders"
	if err := tr.declareDestination(ctx, dest); err != nil {
		t.Fatal(err)
	}
	good := newSignal(dest)
	goodHeaders, _ := encodeHeaders(good)
	with := func(key string, value any) amqp.Table {
		h := amqp.Table{}
		for k, v := range goodHeaders {
			h[k] = v
		}
		if value == nil {
			delete(h, key)
		} else {
			h[key] = value
		}
		return h
	}
	raw := []amqp.Publishing{
		{Body: []byte("no headers")},
		{Headers: with(HeaderToken, "not-hex")},
		{Headers: with(HeaderToken, int64(7))},
		{Headers: with(HeaderType, nil)},
		{Headers: with(HeaderTraceState, "a\x01b")},
		{Headers: with(HeaderAttempts, "three")},
		{Headers: with(headerDeliveryCount, int64(-1))},
		{Headers: goodHeaders, Body: make([]byte, baton.MaxPayloadBytes+1)},
	}
	for i, m := range raw {
		if err := tr.publish(ctx, "", tr.signalQueue(dest), m, ""); err != nil {
			t.Fatalf("raw publish %d: %v", i, err)
		}
	}
	if err := tr.Publish(ctx, good); err != nil {
		t.Fatal(err)
	}

	sub := mustSubscribe(t, tr, dest)
	d, err := nextWithin(t, sub, 5*time.Second)
	if err != nil {
		t.Fatalf("Next = %v, want the one good signal", err)
	}
	if d.Signal().ID != good.ID {
		t.Fatalf("delivered %+v, want the good signal %s", d.Signal(), good.ID)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if d, err := nextWithin(t, sub, 3*testAckWait); err == nil {
		t.Fatalf("a malformed message was delivered: %+v", d.Signal())
	}
	for _, m := range getAll(t, tr, tr.parkedQueue(dest), len(raw)) {
		if r, _ := m.Headers[HeaderParkReason].(string); !strings.HasPrefix(r, "malformed message: ") {
			t.Errorf("parked with reason %q", r)
		}
	}
}

func TestParkKeepsSignalAndReason(t *testing.T) {
	t.Parallel()
	tr := newTestTransport(t, testConfig(t, testenv.Addr(t, testenv.RabbitMQ)))
	ctx := t.Context()
	const dest = "a.b*#"
	sig := newSignal(dest)
	if err := tr.declareDestination(ctx, dest); err != nil {
		t.Fatal(err)
	}
	// A CC header would send a copy elsewhere (sender-selected
	// distribution); the parked copy must not carry it.
	h, _ := encodeHeaders(sig)
	h["CC"] = []any{tr.cfg.Prefix + ".elsewhere"}
	if err := tr.publish(ctx, "", tr.signalQueue(dest), amqp.Publishing{Headers: h, Body: sig.Payload}, ""); err != nil {
		t.Fatal(err)
	}
	sub := mustSubscribe(t, tr, dest)
	d, err := nextWithin(t, sub, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Nack(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if d, err = nextWithin(t, sub, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.Park(ctx, "handler failed:\nboom"); err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(ctx); !errors.Is(err, errSettled) {
		t.Errorf("Ack after Park = %v, want errSettled", err)
	}
	m := getAll(t, tr, tr.parkedQueue(dest), 1)[0]
	if r := m.Headers[HeaderParkReason]; r != "handler failed: boom" {
		t.Errorf("reason header %q", r)
	}
	if a := m.Headers[HeaderParkAttempt]; a != int64(2) {
		t.Errorf("attempt header %v (%T), want 2", a, a)
	}
	if _, ok := m.Headers["CC"]; ok {
		t.Error("the parked copy kept the CC header")
	}
	got, _, err := decodeSignal(m.Headers, dest, m.Body)
	if err != nil || signalDiffers(got, sig) {
		t.Errorf("parked copy decodes as %+v, %v; want %+v", got, err, sig)
	}
	if _, err := nextWithin(t, sub, 3*testAckWait); err == nil {
		t.Error("a parked signal was redelivered")
	}
}

func signalDiffers(a, b baton.Signal) bool {
	return a.ID != b.ID || a.Conversation != b.Conversation || a.Causation != b.Causation || a.Destination != b.Destination ||
		a.Type != b.Type || a.Trace != b.Trace || string(a.Payload) != string(b.Payload)
}

// TestDelayedNacks checks that a short delay is not held up behind a
// longer one (each delay bucket has one TTL, so nothing waits behind a
// longer delay) and that attempts add up across delayed copies.
func TestDelayedNacks(t *testing.T) {
	t.Parallel()
	tr := newTestTransport(t, testConfig(t, testenv.Addr(t, testenv.RabbitMQ)))
	ctx := t.Context()
	sub := mustSubscribe(t, tr, "retry")
	slow, quick := newSignal("retry"), newSignal("retry")
	for _, sig := range []baton.Signal{slow, quick} {
		if err := tr.Publish(ctx, sig); err != nil {
			t.Fatal(err)
		}
	}
	// The quick copy's delay starts when it is nacked, which may be before
	// or after the slow one's.
	var nacked time.Time
	for range 2 {
		d, err := nextWithin(t, sub, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		delay := 50 * time.Millisecond
		if d.Signal().ID == slow.ID {
			delay = time.Minute
		} else {
			nacked = time.Now()
		}
		if err := d.Nack(ctx, delay); err != nil {
			t.Fatal(err)
		}
	}
	for attempt := 2; attempt <= 4; attempt++ {
		d, err := nextWithin(t, sub, 5*time.Second)
		if err != nil {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
		if d.Signal().ID != quick.ID || d.Attempt() != attempt {
			t.Fatalf("got %s attempt %d, want the quick signal's attempt %d", d.Signal().ID, d.Attempt(), attempt)
		}
		if attempt == 2 {
			// The broker's TTL timer may fire a few milliseconds early.
			if waited := time.Since(nacked); waited < 45*time.Millisecond || waited > 2*time.Second {
				t.Errorf("redelivered %v after Nack(50ms)", waited)
			}
		}
		if signalDiffers(d.Signal(), quick) {
			t.Fatalf("the delayed copy differs: %+v", d.Signal())
		}
		var err2 error
		switch attempt {
		case 2:
			err2 = d.Nack(ctx, 10*time.Millisecond)
		case 3:
			err2 = d.Nack(ctx, 0)
		default:
			if err := d.Nack(ctx, maxDelay+time.Millisecond); !errors.Is(err, ErrDelayTooLong) {
				t.Errorf("Nack beyond the longest delay = %v, want ErrDelayTooLong", err)
			}
			err2 = d.Ack(ctx) // the refused Nack left the delivery as it was
		}
		if err2 != nil {
			t.Fatal(err2)
		}
	}
	if d, err := nextWithin(t, sub, 3*testAckWait); err == nil {
		t.Errorf("%s delivered (attempt %d) before its one-minute delay", d.Signal().ID, d.Attempt())
	}
}

// TestAckWaitHandsBack checks the consumer-side acknowledgement deadline:
// a delivery held past AckWait goes back to the queue, and acknowledging
// the stale delivery afterwards is refused rather than acknowledging
// another message.
func TestAckWaitHandsBack(t *testing.T) {
	t.Parallel()
	tr := newTestTransport(t, testConfig(t, testenv.Addr(t, testenv.RabbitMQ)))
	ctx := t.Context()
	sub := mustSubscribe(t, tr, "slow")
	sig := newSignal("slow")
	if err := tr.Publish(ctx, sig); err != nil {
		t.Fatal(err)
	}
	stale, err := nextWithin(t, sub, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := nextWithin(t, sub, 5*time.Second)
	if err != nil || fresh.Signal().ID != sig.ID || fresh.Attempt() != 2 {
		t.Fatalf("after AckWait: %v, %v; want %s attempt 2", fresh, err, sig.ID)
	}
	if err := stale.Ack(ctx); !errors.Is(err, errSettled) {
		t.Errorf("Ack of a delivery handed back after AckWait = %v, want errSettled", err)
	}
	if err := stale.Nack(ctx, time.Second); !errors.Is(err, errSettled) {
		t.Errorf("Nack of a delivery handed back after AckWait = %v, want errSettled", err)
	}
	if err := fresh.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if d, err := nextWithin(t, sub, 2*testAckWait); err == nil {
		t.Fatalf("acknowledged signal came back: attempt %d", d.Attempt())
	}
}

// TestCloseKeepsHandedOutDeliveries closes a subscription that holds one
// delivery and has more prefetched: the prefetched ones go to another
// subscriber at once, and the held one can still be acknowledged.
func TestCloseKeepsHandedOutDeliveries(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, testenv.Addr(t, testenv.RabbitMQ))
	cfg.AckWait = time.Minute // only Close may hand anything back
	tr := newTestTransport(t, cfg)
	ctx := t.Context()
	first := mustSubscribe(t, tr, "work")
	want := map[baton.TokenID]bool{}
	for range 5 {
		sig := newSignal("work")
		want[sig.ID] = true
		if err := tr.Publish(ctx, sig); err != nil {
			t.Fatal(err)
		}
	}
	held, err := nextWithin(t, first, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	delete(want, held.Signal().ID)
	time.Sleep(100 * time.Millisecond) // let the rest arrive as prefetched deliveries
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second := mustSubscribe(t, tr, "work")
	for len(want) > 0 {
		d, err := nextWithin(t, second, 5*time.Second)
		if err != nil {
			t.Fatalf("%d prefetched signals did not reach the next subscriber: %v", len(want), err)
		}
		if !want[d.Signal().ID] {
			t.Fatalf("unexpected delivery of %s, attempt %d", d.Signal().ID, d.Attempt())
		}
		delete(want, d.Signal().ID)
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := held.Ack(ctx); err != nil {
		t.Fatalf("Ack of a delivery handed out before Close = %v", err)
	}
	if d, err := nextWithin(t, second, 500*time.Millisecond); err == nil {
		t.Fatalf("%s delivered again after its Ack", d.Signal().ID)
	}
}

func TestPublishRefusesInvalidSignals(t *testing.T) {
	t.Parallel()
	tr := newTestTransport(t, testConfig(t, testenv.Addr(t, testenv.RabbitMQ)))
	big := newSignal("d")
	big.Payload = make([]byte, baton.MaxPayloadBytes+1)
	badTrace := newSignal("d")
	badTrace.Trace.State = "x\r\nBaton-Token: " + idA
	for _, sig := range []baton.Signal{big, badTrace, {Destination: "d", Type: "t"}} {
		if err := tr.Publish(t.Context(), sig); !errors.Is(err, baton.ErrInvalidSignal) {
			t.Errorf("Publish(%d-byte payload, trace %q) = %v, want ErrInvalidSignal", len(sig.Payload), sig.Trace, err)
		}
	}
	if _, err := tr.Subscribe(t.Context(), "has space"); !errors.Is(err, baton.ErrInvalidSignal) {
		t.Errorf("Subscribe to an invalid name = %v", err)
	}
	tr.Close()
	if err := tr.Publish(t.Context(), newSignal("d")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Publish after Close = %v", err)
	}
	if _, err := tr.Subscribe(t.Context(), "d"); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Subscribe after Close = %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{
		{},
		{URL: "http://127.0.0.1:5672/"},
		{URL: "amqp://u:secret@h:notaport/"},
		{URL: "amqp://h/", Prefix: "amq.mine"},
		{URL: "amqp://h/", Prefix: "has space"},
		{URL: "amqp://h/", Prefix: strings.Repeat("p", maxPrefix+1)},
		{URL: "amqp://h/", Prefetch: -1},
		{URL: "amqp://h/", AckWait: time.Microsecond},
		{URL: "amqp://h/", PublishTimeout: -time.Second},
	} {
		_, err := New(t.Context(), cfg)
		if !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", cfg, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

func TestConnectErrorHidesPassword(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = New(t.Context(), Config{URL: "amqp://user:secret@" + addr + "/"})
	if err == nil {
		t.Fatal("New with nothing listening returned no error")
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("connect error shows the password: %v", err)
	}
}

func TestCheckServer(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		product, version string
		ok               bool
	}{
		{"RabbitMQ", "3.10.8", true},
		{"RabbitMQ", "3.13.0", true},
		{"RabbitMQ", "4.1.2", true},
		{"RabbitMQ", "3.9.29", false},
		{"RabbitMQ", "3.8.0", false},
		{"RabbitMQ", "garbage", true}, // cannot tell: the declarations decide
		{"LavinMQ", "1.2.3", true},
	} {
		conn := &amqp.Connection{Properties: amqp.Table{"product": c.product, "version": c.version}}
		_, err := checkServer(conn)
		if (err == nil) != c.ok {
			t.Errorf("checkServer(%s %s) = %v", c.product, c.version, err)
		}
		if err != nil && !errors.Is(err, ErrServerVersion) {
			t.Errorf("checkServer error %v does not wrap ErrServerVersion", err)
		}
	}
}

func TestNameTokenIsInjectiveAndBounded(t *testing.T) {
	t.Parallel()
	names := []string{"a", "a.b", "a~2Eb", "a*", "a#", "A", "a_b", "a-b", "a/b", "~", "~7E", "ключ", "a.>", strings.Repeat("é", 100), strings.Repeat("x", baton.MaxNameBytes)}
	seen := map[string]string{}
	for _, n := range names {
		tok := nameToken(n)
		if len(tok) > maxNameToken {
			t.Errorf("nameToken(%q) is %d bytes", n, len(tok))
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; c <= ' ' || c > '~' || c == '.' || c == '*' || c == '#' {
				t.Errorf("nameToken(%q) = %q holds %q", n, tok, c)
			}
		}
		if other, dup := seen[tok]; dup {
			t.Errorf("%q and %q share token %q", n, other, tok)
		}
		seen[tok] = n
	}
	if tok := nameToken(strings.Repeat("é", 100)); !strings.HasPrefix(tok, "~h") {
		t.Errorf("nameToken of a long name = %q, want a hashed name", tok)
	}
	tr := &Transport{cfg: Config{Prefix: strings.Repeat("p", maxPrefix)}}
	if q := tr.parkedQueue(strings.Repeat("é", 100)); len(q) > 255 {
		t.Errorf("parked queue name of %d bytes exceeds AMQP's 255", len(q))
	}
}

func TestDelayBucket(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ delay, bucket time.Duration }{
		{time.Nanosecond, 8 * time.Millisecond},
		{8 * time.Millisecond, 8 * time.Millisecond},
		{9 * time.Millisecond, 16 * time.Millisecond},
		{100 * time.Millisecond, 128 * time.Millisecond},
		{time.Second, 1024 * time.Millisecond},
		{maxDelay, maxDelay},
	} {
		if got, err := delayBucket(c.delay); err != nil || got != c.bucket {
			t.Errorf("delayBucket(%v) = %v, %v; want %v", c.delay, got, err, c.bucket)
		}
	}
	if _, err := delayBucket(maxDelay + 1); !errors.Is(err, ErrDelayTooLong) {
		t.Errorf("delayBucket beyond the longest = %v", err)
	}
}

func TestCleanReason(t *testing.T) {
	t.Parallel()
	if got := cleanReason("line one\r\nline two\x00"); got != "line one  line two " {
		t.Errorf("cleanReason = %q", got)
	}
	if got := cleanReason(strings.Repeat("é", maxReasonBytes)); len(got) > maxReasonBytes || !strings.HasSuffix(got, "é") {
		t.Errorf("long reason cut to %d bytes ending %q", len(got), got[len(got)-2:])
	}
	if got := cleanReason(""); got == "" {
		t.Error("empty reason stays empty")
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	got := redactURL("amqp://user:secret@host:5672/vhost")
	if strings.Contains(got, "secret") || !strings.Contains(got, "host:5672") {
		t.Errorf("redactURL = %q", got)
	}
	if got := redactURL("amqp://user:sec ret@host:bad"); strings.Contains(got, "sec") {
		t.Errorf("redactURL of an unparsable URL = %q", got)
	}
}

// BenchmarkRoundTrip measures publish (confirmed) plus delivery plus ack,
// one signal at a time.
func BenchmarkRoundTrip(b *testing.B) {
	tr, sub := benchTransport(b)
	ctx := b.Context()
	for b.Loop() {
		if err := tr.Publish(ctx, newSignal("bench")); err != nil {
			b.Fatal(err)
		}
		d, err := sub.Next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := d.Ack(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublishParallel measures confirmed publishes from 16
// goroutines, one per publishing channel.
func BenchmarkPublishParallel(b *testing.B) {
	tr, _ := benchTransport(b)
	ctx := b.Context()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := tr.Publish(ctx, newSignal("bench")); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRoundTripParallel runs publish, delivery and ack from 16
// goroutines at once over one subscription.
func BenchmarkRoundTripParallel(b *testing.B) {
	tr, sub := benchTransport(b)
	ctx := b.Context()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := tr.Publish(ctx, newSignal("bench")); err != nil {
				b.Error(err)
				return
			}
			d, err := sub.Next(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			if err := d.Ack(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func benchTransport(b *testing.B) (*Transport, transport.Subscription) {
	url := testenv.Addr(b, testenv.RabbitMQ)
	tr, err := New(b.Context(), Config{URL: url, Prefix: uniqueName("batonbench.")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := tr.deleteTopology(); err != nil {
			b.Error(err)
		}
		tr.Close()
	})
	sub, err := tr.Subscribe(b.Context(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sub.Close() })
	return tr, sub
}

// TestClassicQueueInTheWay checks that a queue of the same name with other
// arguments (here a classic queue) makes Subscribe and Publish fail with an
// error that says so, rather than consuming from the wrong kind of queue.
func TestClassicQueueInTheWay(t *testing.T) {
	t.Parallel()
	tr := newTestTransport(t, testConfig(t, testenv.Addr(t, testenv.RabbitMQ)))
	ctx := t.Context()
	err := tr.withChannel(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(tr.signalQueue("legacy"), true, false, false, false, nil)
		tr.noteCreated(tr.signalQueue("legacy"), "queue")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Subscribe(ctx, "legacy"); err == nil || !strings.Contains(err.Error(), "exists with other settings") {
		t.Errorf("Subscribe over a classic queue = %v", err)
	}
	if err := tr.Publish(ctx, newSignal("legacy")); err == nil || !strings.Contains(err.Error(), "exists with other settings") {
		t.Errorf("Publish over a classic queue = %v", err)
	}
}

// Reading the parked signals of a destination that never had any finds
// none and declares nothing: a misspelt destination leaves no queues
// behind.
func TestReadingParkedDeclaresNothing(t *testing.T) {
	t.Parallel()
	tr := newTestTransport(t, testConfig(t, testenv.Addr(t, testenv.RabbitMQ)))
	ctx := t.Context()
	list, err := tr.ListParked(ctx, "misspelt", 10)
	if err != nil || len(list) != 0 {
		t.Fatalf("ListParked of a destination without a park queue = %v, %v; want none", list, err)
	}
	if _, err := tr.GetParked(ctx, "misspelt/"+baton.NewTokenID().String()); !errors.Is(err, transport.ErrNotParked) {
		t.Fatalf("GetParked in a destination without a park queue = %v, want transport.ErrNotParked", err)
	}
	for _, queue := range []string{tr.parkedQueue("misspelt"), tr.signalQueue("misspelt")} {
		err := tr.withChannel(ctx, func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
			return err
		})
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.NotFound {
			t.Errorf("queue %s after reading parked signals: %v; want it not to exist", queue, err)
		}
	}
}
