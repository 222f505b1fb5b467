package nats

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/transport"
	"github.com/batonhq/baton/transporttest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const testAckWait = 300 * time.Millisecond

func uniqueName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// testConfig returns a config with a stream and prefix no other test uses.
func testConfig(t *testing.T) Config {
	return Config{
		Stream:  uniqueName("TEST_"),
		Prefix:  uniqueName("t"),
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

func startEmbedded(t *testing.T, cfg EmbeddedConfig) *Embedded {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	e, err := StartEmbedded(cfg)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

func newEmbeddedTransport(t *testing.T, e *Embedded, cfg Config) *Transport {
	t.Helper()
	tr, err := e.NewTransport(t.Context(), cfg)
	if err != nil {
		t.Fatalf("NewTransport: %v", err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func TestConformanceEmbedded(t *testing.T) {
	t.Parallel()
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			return newEmbeddedTransport(t, startEmbedded(t, EmbeddedConfig{}), testConfig(t))
		},
		AckWait: testAckWait,
	})
}

// TestConformancePrefetch runs the suite with subscriptions that pull
// several messages ahead (Config.Prefetch), as batching engines use them.
func TestConformancePrefetch(t *testing.T) {
	t.Parallel()
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			cfg := testConfig(t)
			cfg.Prefetch = 8
			return newEmbeddedTransport(t, startEmbedded(t, EmbeddedConfig{}), cfg)
		},
		AckWait: testAckWait,
	})
}

func TestConformanceExternal(t *testing.T) {
	t.Parallel()
	url := testenv.Addr(t, testenv.NATS)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect to %s: %v", redactURL(url), err)
	}
	maxPayload := int(min(int64(baton.MaxPayloadBytes), nc.MaxPayload()-headerAllowance))
	nc.Close()
	if maxPayload < baton.MaxPayloadBytes {
		t.Logf("the NATS server at %s has max_payload below what baton's largest payload needs; checking that the transport refuses payloads over %d bytes instead", redactURL(url), maxPayload)
	}
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			return newExternalTransport(t, url, testConfig(t))
		},
		MaxPayload: maxPayload,
		AckWait:    testAckWait,
	})
}

// newExternalTransport connects to the machine's NATS, which does not
// sync every write and shows no monitoring port, so durability is waived:
// the conformance suite checks delivery, not server crashes, and
// TestRefusesExternalServerThatCannotShowSyncAlways shows that this very
// server is refused without the waiver.
func newExternalTransport(t *testing.T, url string, cfg Config) *Transport {
	t.Helper()
	cfg.URL = url
	cfg.AllowUnsafeDurability = true
	tr, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", url, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tr.js.DeleteStream(ctx, cfg.Stream); err != nil {
			t.Errorf("delete stream %s: %v", cfg.Stream, err)
		}
		tr.Close()
	})
	return tr
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

// parkedMessages reads (without removing) what was parked for destination.
func parkedMessages(t *testing.T, tr *Transport, destination string, want int) []jetstream.Msg {
	t.Helper()
	ctx := t.Context()
	c, err := tr.js.CreateOrUpdateConsumer(ctx, tr.cfg.Stream, jetstream.ConsumerConfig{
		Durable: "inspect-parked", FilterSubject: tr.parkedSubject(destination), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("parked consumer: %v", err)
	}
	var msgs []jetstream.Msg
	batch, err := c.Fetch(want+1, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatalf("fetch parked: %v", err)
	}
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != want {
		t.Fatalf("%d parked messages for %q, want %d", len(msgs), destination, want)
	}
	return msgs
}

func TestEmbeddedSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := testConfig(t)
	ctx := t.Context()

	first, err := StartEmbedded(EmbeddedConfig{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := first.NewTransport(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stored, held := newSignal("durable"), newSignal("durable")
	for _, sig := range []baton.Signal{stored, held} {
		if err := tr.Publish(ctx, sig); err != nil {
			t.Fatal(err)
		}
	}
	// A delivery taken but not acknowledged before the crash comes back too.
	sub, err := tr.Subscribe(ctx, "durable")
	if err != nil {
		t.Fatal(err)
	}
	d, err := nextWithin(t, sub, 5*time.Second)
	if err != nil || d.Signal().ID != stored.ID {
		t.Fatalf("first delivery = %v, %v; want %s", d, err, stored.ID)
	}
	tr.Close()
	first.Shutdown()

	second := startEmbedded(t, EmbeddedConfig{DataDir: dir})
	tr2 := newEmbeddedTransport(t, second, cfg)
	sub2 := mustSubscribe(t, tr2, "durable")
	want := map[baton.TokenID]bool{stored.ID: true, held.ID: true}
	for len(want) > 0 {
		d, err := nextWithin(t, sub2, 5*time.Second)
		if err != nil {
			t.Fatalf("after restart, %d signals missing: %v", len(want), err)
		}
		got := d.Signal()
		if !want[got.ID] {
			t.Fatalf("unexpected delivery %s", got.ID)
		}
		if got.Trace != stored.Trace || string(got.Payload) != "payload" {
			t.Errorf("signal changed across restart: %+v", got)
		}
		delete(want, got.ID)
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMalformedMessagesAreParkedNotDelivered(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t, EmbeddedConfig{})
	tr := newEmbeddedTransport(t, e, testConfig(t))
	const dest = "orders"
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)

	good := newSignal(dest)
	goodHeaders, _ := encodeHeaders(good)
	raw := []*nats.Msg{
		{Data: []byte("no headers")},
		{Header: nats.Header{HeaderToken: {"not-hex"}, HeaderConversation: {idB}, HeaderType: {"t"}}},
		{Header: nats.Header{HeaderToken: {idA, idC}, HeaderConversation: {idB}, HeaderType: {"t"}}},
		{Header: nats.Header{HeaderToken: {idA}, HeaderConversation: {idB}}},
		{Header: goodHeaders, Data: make([]byte, baton.MaxPayloadBytes+1)},
	}
	for i, m := range raw {
		m.Subject = tr.signalSubject(dest)
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatalf("raw publish %d: %v", i, err)
		}
	}
	if err := tr.Publish(t.Context(), good); err != nil {
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
	if err := d.Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d, err := nextWithin(t, sub, 3*testAckWait); err == nil {
		t.Fatalf("a malformed message was delivered: %+v", d.Signal())
	}
	for _, m := range parkedMessages(t, tr, dest, len(raw)) {
		if r := m.Headers().Get(HeaderParkReason); !strings.HasPrefix(r, "malformed message: ") {
			t.Errorf("parked with reason %q", r)
		}
	}
}

func TestParkKeepsSignalAndReason(t *testing.T) {
	t.Parallel()
	tr := newEmbeddedTransport(t, startEmbedded(t, EmbeddedConfig{}), testConfig(t))
	const dest = "a.b*"
	sig := newSignal(dest)
	if err := tr.Publish(t.Context(), sig); err != nil {
		t.Fatal(err)
	}
	sub := mustSubscribe(t, tr, dest)
	d, err := nextWithin(t, sub, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Park(t.Context(), "handler failed:\nboom"); err != nil {
		t.Fatal(err)
	}
	m := parkedMessages(t, tr, dest, 1)[0]
	if r := m.Headers().Get(HeaderParkReason); r != "handler failed: boom" {
		t.Errorf("reason header %q", r)
	}
	if a := m.Headers().Get(HeaderParkAttempt); a != "1" {
		t.Errorf("attempt header %q", a)
	}
	got, err := decodeSignal(m.Headers(), dest, m.Data())
	if err != nil || got.ID != sig.ID || got.Trace != sig.Trace || string(got.Payload) != string(sig.Payload) {
		t.Errorf("parked copy decodes as %+v, %v; want %+v", got, err, sig)
	}
	if _, err := nextWithin(t, sub, 3*testAckWait); err == nil {
		t.Error("a parked signal was redelivered")
	}
}

func TestMaxDeliverParks(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.MaxDeliver = 2
	tr := newEmbeddedTransport(t, startEmbedded(t, EmbeddedConfig{}), cfg)
	sig := newSignal("flaky")
	if err := tr.Publish(t.Context(), sig); err != nil {
		t.Fatal(err)
	}
	sub := mustSubscribe(t, tr, "flaky")
	for attempt := 1; attempt <= 2; attempt++ {
		d, err := nextWithin(t, sub, 5*time.Second)
		if err != nil {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
		if d.Attempt() != attempt {
			t.Errorf("Attempt() = %d, want %d", d.Attempt(), attempt)
		}
		if err := d.Nack(t.Context(), 0); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := nextWithin(t, sub, 3*testAckWait); err == nil {
		t.Fatalf("delivery %d handed out beyond MaxDeliver 2", d.Attempt())
	}
	m := parkedMessages(t, tr, "flaky", 1)[0]
	if r := m.Headers().Get(HeaderParkReason); !strings.Contains(r, "MaxDeliver") {
		t.Errorf("reason %q does not mention MaxDeliver", r)
	}
}

func TestPublishRefusesInvalidSignals(t *testing.T) {
	t.Parallel()
	tr := newEmbeddedTransport(t, startEmbedded(t, EmbeddedConfig{}), testConfig(t))
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
}

func TestDuplicatePublishStoredOnce(t *testing.T) {
	t.Parallel()
	tr := newEmbeddedTransport(t, startEmbedded(t, EmbeddedConfig{}), testConfig(t))
	sig := newSignal("d")
	for range 3 {
		if err := tr.Publish(t.Context(), sig); err != nil {
			t.Fatal(err)
		}
	}
	info, err := tr.js.Stream(t.Context(), tr.cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("stream holds %d messages after publishing one token three times, want 1", n)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{
		{},
		{URL: "nats://x:1", Stream: "a.b"},
		{URL: "nats://x:1", Prefix: "a.*"},
		{URL: "nats://x:1", Prefix: "a..b"},
		{URL: "nats://x:1", Replicas: 7},
		{URL: "nats://x:1", MaxDeliver: -1},
		{URL: "nats://x:1", Prefetch: -1},
		{URL: "nats://x:1", Prefetch: 1001},
		{URL: "nats://x:1", AckWait: time.Microsecond},
	} {
		if _, err := New(t.Context(), cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
	if _, err := StartEmbedded(EmbeddedConfig{}); !errors.Is(err, ErrConfig) {
		t.Errorf("StartEmbedded without DataDir = %v", err)
	}
}

func TestEmbeddedDefaultsAndListen(t *testing.T) {
	t.Parallel()
	quiet := startEmbedded(t, EmbeddedConfig{})
	if u := quiet.ClientURL(); u != "" {
		t.Errorf("embedded server listens at %q by default", u)
	}
	if jsc := quiet.Server().JetStreamConfig(); jsc == nil || !jsc.SyncAlways {
		t.Errorf("embedded JetStream config %+v, want SyncAlways", jsc)
	}

	if u := quiet.MonitorURL(); u != "" {
		t.Errorf("embedded server serves monitoring at %q by default", u)
	}

	loud := startEmbedded(t, EmbeddedConfig{Listen: true})
	url := loud.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":4222") {
		t.Fatalf("ClientURL = %q, want a free port on 127.0.0.1", url)
	}
	if u := loud.MonitorURL(); !strings.HasPrefix(u, "http://127.0.0.1:") || strings.HasSuffix(u, ":8222") {
		t.Fatalf("MonitorURL = %q, want a free port on 127.0.0.1", u)
	}
	// A transport in another process checks the sync setting through the
	// monitoring port, without waiving durability.
	cfg := testConfig(t)
	cfg.URL, cfg.MonitorURL = url, loud.MonitorURL()
	tr, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	sig := newSignal("net")
	if err := tr.Publish(t.Context(), sig); err != nil {
		t.Fatal(err)
	}
	sub := mustSubscribe(t, tr, "net")
	d, err := nextWithin(t, sub, 5*time.Second)
	if err != nil || d.Signal().ID != sig.ID {
		t.Fatalf("over the network: %v, %v", d, err)
	}
}

func TestServerSyncCheckReadsVarz(t *testing.T) {
	t.Parallel()
	for _, always := range []bool{true, false} {
		srv := startServer(t, always)
		got, err := serverSyncsAlways(t.Context(), "http://"+srv.MonitorAddr().String())
		if err != nil || got != always {
			t.Errorf("serverSyncsAlways with SyncAlways=%v = %v, %v", always, got, err)
		}
	}
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "not json")
	}))
	defer broken.Close()
	if _, err := serverSyncsAlways(t.Context(), broken.URL); err == nil {
		t.Error("serverSyncsAlways accepted a body that is not JSON")
	}
}

// BenchmarkRoundTrip measures publish plus delivery plus ack through the
// embedded server, one signal at a time, with sync on every write.
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

// BenchmarkPublish measures a publish that JetStream confirms, with sync
// on every write.
func BenchmarkPublish(b *testing.B) {
	tr, _ := benchTransport(b)
	ctx := b.Context()
	for b.Loop() {
		if err := tr.Publish(ctx, newSignal("bench")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTripParallel runs publish, delivery and ack from several
// goroutines at once (set -cpu or GOMAXPROCS for more).
func BenchmarkRoundTripParallel(b *testing.B) {
	tr, sub := benchTransport(b)
	ctx := b.Context()
	b.SetParallelism(8)
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
	e, err := StartEmbedded(EmbeddedConfig{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Shutdown)
	tr, err := e.NewTransport(b.Context(), Config{Stream: "BENCH", Prefix: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tr.Close() })
	sub, err := tr.Subscribe(b.Context(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	return tr, sub
}
