package transporttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/transport"
)

// Harness tells Run how to open the transport under test.
type Harness struct {
	// New returns a transport that shares no signals with any other call
	// of New (for example through unique queue or stream names), because
	// subtests run in parallel. It registers cleanup with t.Cleanup.
	New func(t *testing.T) transport.Transport
	// AckWait is how long a delivery that is neither acknowledged nor
	// rejected stays with its consumer before the transport, as New
	// configures it, redelivers it. Keep it short (well under a second):
	// several checks wait for it.
	AckWait time.Duration
	// MaxPayload is the largest payload the transport, as New configures
	// it, carries; 0 means baton.MaxPayloadBytes. A transport whose medium
	// allows less (a NATS server with the default max_payload) must refuse
	// a larger payload on Publish, never truncate it.
	MaxPayload int
}

// Run checks that the transports h opens implement transport.Transport as
// documented. Each check is a parallel subtest with its own transport.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("transporttest: Harness.New is nil")
	}
	if h.AckWait <= 0 {
		t.Fatal("transporttest: Harness.AckWait must be positive")
	}
	checks := []struct {
		name string
		run  func(*testing.T, Harness)
	}{
		{"PublishThenSubscribe", testPublishThenSubscribe},
		{"PayloadSizes", testPayloadSizes},
		{"NackRedelivers", testNackRedelivers},
		{"UnacknowledgedRedelivered", testUnacknowledgedRedelivered},
		{"AckStopsRedelivery", testAckStopsRedelivery},
		{"ParkStopsRedelivery", testParkStopsRedelivery},
		{"CompetingSubscribers", testCompetingSubscribers},
		{"DestinationsAreSeparate", testDestinationsAreSeparate},
		{"ManyConcurrentPublishes", testManyConcurrentPublishes},
		{"NextHonoursContext", testNextHonoursContext},
		{"CloseSubscription", testCloseSubscription},
		{"PublishBatch", testPublishBatch},
		{"AckBatch", testAckBatch},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, h)
		})
	}
}

// patience bounds a wait for something the transport must do "about
// AckWait" from now: a few AckWaits, and never less than two seconds so
// that a loaded machine does not fail a correct transport.
func (h Harness) patience() time.Duration { return max(4*h.AckWait, 2*time.Second) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// uniqueDestination returns a destination name no other test uses, so the
// suite also works against a shared external broker.
func uniqueDestination(prefix string) string {
	return fmt.Sprintf("transporttest-%s-%x", prefix, randomBytes(6))
}

func newSignal(destination string) baton.Signal {
	return baton.Signal{
		ID:           baton.NewTokenID(),
		Conversation: baton.NewTokenID(),
		Causation:    baton.NewTokenID(),
		Destination:  destination,
		Type:         "transporttest.type",
		Payload:      append([]byte{0, 0xff, '"', '\n'}, randomBytes(60)...),
		Trace: baton.TraceContext{
			Parent: fmt.Sprintf("00-%x-%x-01", randomBytes(16), randomBytes(8)),
			State:  "vendor=value,other=1",
		},
	}
}

func signalDiff(got, want baton.Signal) string {
	var diffs []string
	if got.ID != want.ID || got.Conversation != want.Conversation || got.Causation != want.Causation {
		diffs = append(diffs, fmt.Sprintf("ids %s/%s/%s, want %s/%s/%s", got.ID, got.Conversation, got.Causation, want.ID, want.Conversation, want.Causation))
	}
	if got.Destination != want.Destination {
		diffs = append(diffs, fmt.Sprintf("destination %q, want %q", got.Destination, want.Destination))
	}
	if got.Type != want.Type {
		diffs = append(diffs, fmt.Sprintf("type %q, want %q", got.Type, want.Type))
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		diffs = append(diffs, fmt.Sprintf("payload of %d bytes differs from the %d bytes published", len(got.Payload), len(want.Payload)))
	}
	if got.Trace != want.Trace {
		diffs = append(diffs, fmt.Sprintf("trace %+v, want %+v", got.Trace, want.Trace))
	}
	return strings.Join(diffs, "; ")
}

func publish(ctx context.Context, t *testing.T, tr transport.Transport, sigs ...baton.Signal) {
	t.Helper()
	for _, sig := range sigs {
		if err := tr.Publish(ctx, sig); err != nil {
			t.Fatalf("Publish(%s to %q) = %v", sig.ID, sig.Destination, err)
		}
	}
}

func subscribe(ctx context.Context, t *testing.T, tr transport.Transport, destination string) transport.Subscription {
	t.Helper()
	sub, err := tr.Subscribe(ctx, destination)
	if err != nil {
		t.Fatalf("Subscribe(%q) = %v", destination, err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

// errIgnoredContext reports a Next that did not return after its context
// ended, so that such a transport fails the suite instead of hanging it.
var errIgnoredContext = errors.New("transporttest: Next did not return within a second after its context ended")

// next waits up to timeout for a delivery.
func next(ctx context.Context, sub transport.Subscription, timeout time.Duration) (transport.Delivery, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		d   transport.Delivery
		err error
	}
	done := make(chan result, 1)
	go func() {
		d, err := sub.Next(ctx)
		done <- result{d, err}
	}()
	select {
	case r := <-done:
		return r.d, r.err
	case <-ctx.Done():
	}
	select {
	case r := <-done:
		return r.d, r.err
	case <-time.After(time.Second):
		return nil, errIgnoredContext
	}
}

// receive waits up to timeout for a delivery of want, with want's fields
// and the given attempt number (any if attempt is 0).
func receive(ctx context.Context, t *testing.T, sub transport.Subscription, timeout time.Duration, want baton.Signal, attempt int) transport.Delivery {
	t.Helper()
	d, err := next(ctx, sub, timeout)
	if err != nil {
		t.Fatalf("Next waiting %s for attempt %d of %s = %v", timeout, attempt, want.ID, err)
	}
	if d := signalDiff(d.Signal(), want); d != "" {
		t.Fatalf("delivered signal differs from the published one: %s", d)
	}
	if attempt > 0 && d.Attempt() != attempt {
		t.Errorf("delivery of %s has Attempt() = %d, want %d", want.ID, d.Attempt(), attempt)
	}
	return d
}

// requireNothing fails t if sub delivers anything within wait.
func requireNothing(ctx context.Context, t *testing.T, sub transport.Subscription, wait time.Duration, why string) {
	t.Helper()
	d, err := next(ctx, sub, wait)
	if err == nil {
		t.Fatalf("%s, but %s was delivered (attempt %d)", why, d.Signal().ID, d.Attempt())
	}
	if !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		t.Fatalf("Next while waiting for nothing = %v, want the context's deadline error", err)
	}
}

func testPublishThenSubscribe(t *testing.T, h Harness) {
	ctx, tr := testContext(t), h.New(t)
	destination := uniqueDestination("basic")
	// Publishing before anyone subscribes must not lose the signal: Publish
	// returns only once the medium holds it.
	sig := newSignal(destination)
	rootless := newSignal(destination)
	rootless.Causation = baton.TokenID{}
	rootless.Trace = baton.TraceContext{}
	publish(ctx, t, tr, sig, rootless)

	sub := subscribe(ctx, t, tr, destination)
	d := receive(ctx, t, sub, h.patience(), sig, 1)
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack = %v", err)
	}
	d = receive(ctx, t, sub, h.patience(), rootless, 1)
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack = %v", err)
	}
}

func testPayloadSizes(t *testing.T, h Harness) {
	ctx, tr := testContext(t), h.New(t)
	destination := uniqueDestination("sizes")
	empty := newSignal(destination)
	empty.Payload = nil
	allBytes := newSignal(destination)
	allBytes.Payload = make([]byte, 256)
	for i := range allBytes.Payload {
		allBytes.Payload[i] = byte(i)
	}
	limit := h.MaxPayload
	if limit <= 0 || limit > baton.MaxPayloadBytes {
		limit = baton.MaxPayloadBytes
	}
	largest := newSignal(destination)
	largest.Payload = randomBytes(limit)
	sub := subscribe(ctx, t, tr, destination)
	publish(ctx, t, tr, empty, allBytes, largest)
	if limit < baton.MaxPayloadBytes {
		tooLarge := newSignal(destination)
		tooLarge.Payload = randomBytes(limit + 1)
		if err := tr.Publish(ctx, tooLarge); err == nil {
			t.Errorf("Publish of a %d-byte payload, over the transport's limit of %d, returned nil", limit+1, limit)
		}
	}

	want := map[baton.TokenID]baton.Signal{empty.ID: empty, allBytes.ID: allBytes, largest.ID: largest}
	for len(want) > 0 {
		d, err := next(ctx, sub, h.patience())
		if err != nil {
			t.Fatalf("Next = %v with %d signals not delivered", err, len(want))
		}
		sig := d.Signal()
		w, ok := want[sig.ID]
		if !ok {
			t.Fatalf("delivered %s, which is not one of the signals still expected", sig.ID)
		}
		if diff := signalDiff(sig, w); diff != "" {
			t.Errorf("signal with a %d-byte payload: %s", len(w.Payload), diff)
		}
		delete(want, sig.ID)
		if err := d.Ack(ctx); err != nil {
			t.Fatalf("Ack = %v", err)
		}
	}
}

func testNackRedelivers(t *testing.T, h Harness) {
	ctx, tr := testContext(t), h.New(t)
	destination := uniqueDestination("nack")
	sub := subscribe(ctx, t, tr, destination)
	sig := newSignal(destination)
	publish(ctx, t, tr, sig)

	d := receive(ctx, t, sub, h.patience(), sig, 1)
	const delay = 100 * time.Millisecond
	nacked := time.Now()
	if err := d.Nack(ctx, delay); err != nil {
		t.Fatalf("Nack = %v", err)
	}
	d = receive(ctx, t, sub, delay+h.patience(), sig, 2)
	if waited := time.Since(nacked); waited < delay {
		t.Errorf("redelivered %s after Nack, sooner than the %s delay asked for", waited, delay)
	}
	if err := d.Nack(ctx, 0); err != nil {
		t.Fatalf("Nack = %v", err)
	}
	d = receive(ctx, t, sub, h.patience(), sig, 3)
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack = %v", err)
	}
}

func testUnacknowledgedRedelivered(t *testing.T, h Harness) {
	ctx, tr := testContext(t), h.New(t)
	destination := uniqueDestination("ackwait")
	sub := subscribe(ctx, t, tr, destination)
	sig := newSignal(destination)
	publish(ctx, t, tr, sig)

	receive(ctx, t, sub, h.patience(), sig, 1) // neither acked nor nacked: the consumer "died"
	delivered := time.Now()
	d := receive(ctx, t, sub, h.AckWait+h.patience(), sig, 2)
	if waited := time.Since(delivered); waited < h.AckWait/2 {
		t.Errorf("an unacknowledged delivery came back after %s, well before AckWait %s", waited, h.AckWait)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack = %v", err)
	}
}

func testAckStopsRedelivery(t *testing.T, h Harness) {
	ctx, tr := testContext(t), h.New(t)
	destination := uniqueDestination("ack")
	sub := subscribe(ctx, t, tr, destination)
	sig := newSignal(destination)
	publish(ctx, t, tr, sig)
	d := receive(ctx, t, sub, h.patience(), sig, 1)
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack = %v", err)
	}
	requireNothing(ctx, t, sub, 2*h.AckWait, "an acknowledged signal must not be redelivered")
}

func testParkStopsRedelivery(t *testing.T, h Harness) {
	ctx, tr := testContext(t), h.New(t)
	destination := uniqueDestination("park")
	sub := subscribe(ctx, t, tr, destination)
	sig := newSignal(destination)
	publish(ctx, t, tr, sig)
	d := receive(ctx, t, sub, h.patience(), sig, 1)
	if err := d.Park(ctx, "transporttest: parked on purpose"); err != nil {
		t.Fatalf("Park = %v", err)
	}
	requireNothing(ctx, t, sub, 2*h.AckWait, "a parked signal must not be redelivered")

	// Parking one signal leaves the destination working.
	after := newSignal(destination)
	publish(ctx, t, tr, after)
	d = receive(ctx, t, sub, h.patience(), after, 1)
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack = %v", err)
	}
}

func testCompetingSubscribers(t *testing.T, h Harness) {
	ctx, tr := testContext(t), h.New(t)
	destination := uniqueDestination("compete")
	subs := []transport.Subscription{subscribe(ctx, t, tr, destination), subscribe(ctx, t, tr, destination)}
	const signals = 20
	want := map[baton.TokenID]bool{}
	var sigs []baton.Signal
	for range signals {
		sig := newSignal(destination)
		want[sig.ID] = true
		sigs = append(sigs, sig)
	}
	publish(ctx, t, tr, sigs...)

	var mu sync.Mutex
	holder := map[baton.TokenID]int{} // signal -> subscriber holding it unacknowledged
	delivered := map[baton.TokenID]int{}
	perSubscriber := make([]int, len(subs))
	done, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i, sub := range subs {
		wg.Go(func() {
			for {
				d, err := next(done, sub, time.Hour)
				if err != nil {
					if done.Err() == nil || errors.Is(err, errIgnoredContext) {
						t.Errorf("subscriber %d: Next = %v", i, err)
					}
					return
				}
				id := d.Signal().ID
				mu.Lock()
				if !want[id] {
					t.Errorf("subscriber %d received %s, which was not published to %q", i, id, destination)
				}
				if other, held := holder[id]; held {
					t.Errorf("subscribers %d and %d both hold %s at once: subscribers of a destination must compete, not each get every signal", other, i, id)
				}
				holder[id] = i
				delivered[id]++
				perSubscriber[i]++
				finished := len(delivered) == signals
				mu.Unlock()

				// Hold the signal a little, as a worker does, so that a
				// transport that hands it to both subscribers is caught.
				time.Sleep(10 * time.Millisecond)
				if err := d.Ack(ctx); err != nil {
					t.Errorf("subscriber %d: Ack = %v", i, err)
				}
				mu.Lock()
				delete(holder, id)
				mu.Unlock()
				if finished {
					cancel()
				}
			}
		})
	}
	select {
	case <-done.Done():
	case <-time.After(h.patience() + signals*time.Second/4):
		cancel()
	}
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(delivered) != signals {
		t.Errorf("%d of %d signals were delivered to the two subscribers", len(delivered), signals)
	}
	for i, n := range perSubscriber {
		if n == 0 {
			t.Errorf("subscriber %d received none of %d signals while the other was busy: subscribers do not share the work", i, signals)
		}
	}
	t.Logf("deliveries per subscriber: %v", perSubscriber)
}

func testDestinationsAreSeparate(t *testing.T, h Harness) {
	ctx, tr := testContext(t), h.New(t)
	base := uniqueDestination("separate")
	// Names that a transport mapping destinations onto subjects, routing
	// keys or queue names by prefix, wildcard or case would confuse.
	destinations := []string{
		base, base + ".child", base + ".*", base + ".>", base + "*", base + ">", base + "#",
		base + "/slash", base + ":colon", strings.ToUpper(base), base[:len(base)-1], base + "-ключ",
		base + strings.Repeat("x", baton.MaxNameBytes-len(base)),
	}
	subs := make([]transport.Subscription, len(destinations))
	sigs := make([]baton.Signal, len(destinations))
	for i, destination := range destinations {
		subs[i] = subscribe(ctx, t, tr, destination)
		sigs[i] = newSignal(destination)
	}
	publish(ctx, t, tr, sigs...)

	var wg sync.WaitGroup
	for i, sub := range subs {
		wg.Go(func() {
			d, err := next(ctx, sub, h.patience())
			if err != nil {
				t.Errorf("subscriber of %q: Next = %v", destinations[i], err)
				return
			}
			if got := d.Signal(); got.ID != sigs[i].ID {
				t.Errorf("subscriber of %q received the signal for %q", destinations[i], got.Destination)
			} else if diff := signalDiff(got, sigs[i]); diff != "" {
				t.Errorf("subscriber of %q: %s", destinations[i], diff)
			}
			if err := d.Ack(ctx); err != nil {
				t.Errorf("Ack = %v", err)
			}
			if d, err := next(ctx, sub, 2*h.AckWait); err == nil {
				t.Errorf("subscriber of %q also received the signal for %q", destinations[i], d.Signal().Destination)
			}
		})
	}
	wg.Wait()
}

func testManyConcurrentPublishes(t *testing.T, h Harness) {
	ctx, tr := testContext(t), h.New(t)
	destination := uniqueDestination("many")
	const signals, publishers = 200, 20
	sigs := make([]baton.Signal, signals)
	pending := map[baton.TokenID]bool{}
	for i := range sigs {
		sigs[i] = newSignal(destination)
		pending[sigs[i].ID] = true
	}
	sub := subscribe(ctx, t, tr, destination)

	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := p; i < signals; i += publishers {
				if err := tr.Publish(ctx, sigs[i]); err != nil {
					t.Errorf("concurrent Publish = %v", err)
				}
			}
		})
	}
	duplicates := 0
	deadline := time.Now().Add(h.patience() + 10*time.Second)
	for len(pending) > 0 && time.Now().Before(deadline) {
		d, err := next(ctx, sub, time.Until(deadline))
		if err != nil {
			break
		}
		if !pending[d.Signal().ID] {
			duplicates++
		}
		delete(pending, d.Signal().ID)
		if err := d.Ack(ctx); err != nil {
			t.Fatalf("Ack = %v", err)
		}
	}
	wg.Wait()
	if len(pending) > 0 {
		t.Errorf("%d of %d concurrently published signals were never delivered", len(pending), signals)
	}
	t.Logf("%d signals delivered, %d duplicate deliveries", signals-len(pending), duplicates)
}

func testNextHonoursContext(t *testing.T, h Harness) {
	ctx, tr := testContext(t), h.New(t)
	destination := uniqueDestination("context")
	sub := subscribe(ctx, t, tr, destination)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	start := time.Now()
	if d, err := next(cancelled, sub, time.Hour); err == nil {
		t.Fatalf("Next with a cancelled context delivered %s on an empty destination", d.Signal().ID)
	} else if errors.Is(err, errIgnoredContext) {
		t.Fatalf("Next with a cancelled context: %v", err)
	}
	waiting, cancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	if d, err := next(waiting, sub, time.Hour); err == nil {
		t.Fatalf("Next delivered %s on an empty destination", d.Signal().ID)
	} else if errors.Is(err, errIgnoredContext) {
		t.Fatalf("Next cancelled while waiting: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Next took %s to return after its context was cancelled", took)
	}

	// A Next that gives up must not lose a signal that was ready: it either
	// delivers it or leaves it for a later Next (at the latest after
	// AckWait, if the transport had already handed it to the consumer).
	ready := newSignal(destination)
	publish(ctx, t, tr, ready)
	cancelled, cancel = context.WithCancel(ctx)
	cancel()
	d, err := next(cancelled, sub, time.Hour)
	if errors.Is(err, errIgnoredContext) {
		t.Fatalf("Next with a cancelled context: %v", err)
	}
	if err != nil {
		d = receive(ctx, t, sub, h.AckWait+h.patience(), ready, 0)
	} else if diff := signalDiff(d.Signal(), ready); diff != "" {
		t.Fatalf("Next with a cancelled context delivered another signal: %s", diff)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack = %v", err)
	}

	// The subscription still works after Next gave up.
	sig := newSignal(destination)
	publish(ctx, t, tr, sig)
	d = receive(ctx, t, sub, h.patience(), sig, 1)
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack = %v", err)
	}
}

func testCloseSubscription(t *testing.T, h Harness) {
	ctx, tr := testContext(t), h.New(t)
	destination := uniqueDestination("close")
	sub := subscribe(ctx, t, tr, destination)

	result := make(chan error, 1)
	go func() {
		_, err := sub.Next(ctx)
		result <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := sub.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	select {
	case err := <-result:
		if !errors.Is(err, transport.ErrClosed) {
			t.Errorf("Next blocked during Close = %v, want an error matching transport.ErrClosed", err)
		}
	case <-time.After(h.patience()):
		t.Fatalf("Next still blocked %s after Close", h.patience())
	}
	if _, err := next(ctx, sub, h.patience()); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Next after Close = %v, want an error matching transport.ErrClosed", err)
	}

	// Signals published after one subscriber left reach the next one.
	sig := newSignal(destination)
	publish(ctx, t, tr, sig)
	other := subscribe(ctx, t, tr, destination)
	d := receive(ctx, t, other, h.AckWait+h.patience(), sig, 1)
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack = %v", err)
	}
}

// testPublishBatch checks transport.BatchPublisher, for transports that
// offer it: every valid signal of a batch is delivered, as published, and
// an invalid one is refused alone.
func testPublishBatch(t *testing.T, h Harness) {
	ctx, tr := testContext(t), h.New(t)
	bp, ok := tr.(transport.BatchPublisher)
	if !ok {
		t.Skip("the transport does not implement transport.BatchPublisher")
	}
	destination := uniqueDestination("batch")
	sub := subscribe(ctx, t, tr, destination)
	sigs := make([]baton.Signal, 50)
	want := map[baton.TokenID]baton.Signal{}
	for i := range sigs {
		sigs[i] = newSignal(destination)
		want[sigs[i].ID] = sigs[i]
	}
	invalid := newSignal(destination)
	invalid.Type = "" // Validate refuses it
	delete(want, sigs[7].ID)
	sigs[7] = invalid
	errs := bp.PublishBatch(ctx, sigs)
	if len(errs) != len(sigs) {
		t.Fatalf("PublishBatch returned %d errors for %d signals", len(errs), len(sigs))
	}
	for i, err := range errs {
		if (err != nil) != (i == 7) {
			t.Errorf("PublishBatch error %d = %v; want an error only for the invalid signal (7)", i, err)
		}
	}
	deadline := time.Now().Add(h.patience() + 10*time.Second)
	for len(want) > 0 && time.Now().Before(deadline) {
		d, err := next(ctx, sub, time.Until(deadline))
		if err != nil {
			break
		}
		got := d.Signal()
		if w, ok := want[got.ID]; ok {
			if diff := signalDiff(got, w); diff != "" {
				t.Errorf("signal %s delivered differently: %s", got.ID, diff)
			}
			delete(want, got.ID)
		} else if got.ID == invalid.ID {
			t.Errorf("the invalid signal %s was delivered", got.ID)
		}
		if err := d.Ack(ctx); err != nil {
			t.Fatalf("Ack = %v", err)
		}
	}
	if len(want) > 0 {
		t.Errorf("%d of %d signals published in a batch were never delivered", len(want), len(sigs)-1)
	}
}

// testAckBatch checks transport.BatchAcker, for transports that offer it:
// every delivery of a batch is acknowledged, none comes back, and one
// unacknowledged delivery outside the batch still does.
func testAckBatch(t *testing.T, h Harness) {
	ctx, tr := testContext(t), h.New(t)
	ba, ok := tr.(transport.BatchAcker)
	if !ok {
		t.Skip("the transport does not implement transport.BatchAcker")
	}
	destination := uniqueDestination("ackbatch")
	sub := subscribe(ctx, t, tr, destination)
	sigs := make([]baton.Signal, 20)
	for i := range sigs {
		sigs[i] = newSignal(destination)
	}
	left := newSignal(destination)
	publish(ctx, t, tr, append(sigs, left)...)
	var batch []transport.Delivery
	var unacked transport.Delivery
	for len(batch) < len(sigs) || unacked == nil {
		d, err := next(ctx, sub, h.patience())
		if err != nil {
			t.Fatalf("received %d of %d signals: %v", len(batch), len(sigs)+1, err)
		}
		if d.Signal().ID == left.ID {
			unacked = d
		} else {
			batch = append(batch, d)
		}
	}
	errs := ba.AckBatch(ctx, batch)
	if len(errs) != len(batch) {
		t.Fatalf("AckBatch returned %d errors for %d deliveries", len(errs), len(batch))
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("AckBatch error %d = %v", i, err)
		}
	}
	d := receive(ctx, t, sub, h.AckWait+h.patience(), left, 2)
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack = %v", err)
	}
	requireNothing(ctx, t, sub, 2*h.AckWait, "a signal acknowledged in a batch must not be redelivered")
}
