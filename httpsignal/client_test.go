package httpsignal_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/httpsignal"
)

// fault is what a faulty front does to one request.
type fault int

const (
	pass         fault = iota
	refuse             // answer 503 without processing
	dropBefore         // drop the connection without processing
	dropAfter          // process, then drop the connection: a lost response
	badGateway         // process, then answer 502: a lost response
	processTwice       // process a duplicate of the request first
)

// faulty puts a scripted sequence of faults in front of h; once the script
// ends every request passes. It counts the requests.
type faulty struct {
	h        http.Handler
	script   chan fault
	requests atomic.Int64
}

func newFaulty(h http.Handler, faults ...fault) *faulty {
	f := &faulty{h: h, script: make(chan fault, len(faults))}
	for _, x := range faults {
		f.script <- x
	}
	return f
}

func (f *faulty) next() fault {
	select {
	case x := <-f.script:
		return x
	default:
		return pass
	}
}

func (f *faulty) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	serveWithFault(w, r, f.h, f.next())
}

func serveWithFault(w http.ResponseWriter, r *http.Request, h http.Handler, x fault) {
	body, _ := io.ReadAll(r.Body)
	request := func() *http.Request {
		c := r.Clone(r.Context())
		c.Body = io.NopCloser(bytes.NewReader(body))
		return c
	}
	switch x {
	case refuse:
		w.Header().Set("Retry-After", "0")
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	case dropBefore, dropAfter:
		if x == dropAfter {
			h.ServeHTTP(httptest.NewRecorder(), request())
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return
	case badGateway:
		h.ServeHTTP(httptest.NewRecorder(), request())
		http.Error(w, "upstream went away", http.StatusBadGateway)
		return
	case processTwice:
		h.ServeHTTP(httptest.NewRecorder(), request())
	}
	h.ServeHTTP(w, request())
}

// newTestTransport retries without waiting and records the delays.
func newTestTransport(t *testing.T, attempts int) (*httpsignal.Transport, *noSleep) {
	t.Helper()
	ns := &noSleep{}
	tr, err := httpsignal.NewTransport(httpsignal.TransportConfig{MaxAttempts: attempts, BaseDelay: time.Millisecond, Sleep: ns.Sleep})
	must(t, err)
	return tr, ns
}

func newTestPublisher(t *testing.T, url string, attempts int) (*httpsignal.Publisher, *noSleep) {
	t.Helper()
	tr, ns := newTestTransport(t, attempts)
	p, err := httpsignal.NewPublisher(httpsignal.PublisherConfig{Endpoints: map[string]string{"billing": url}, Transport: tr})
	must(t, err)
	return p, ns
}

func TestPublisherRetriesLostResponsesAndCountsDuplicateAsDelivered(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{})
	front := newFaulty(b.server, refuse, dropBefore, dropAfter, badGateway)
	srv := httptest.NewServer(front)
	t.Cleanup(srv.Close)
	p, ns := newTestPublisher(t, srv.URL, 6)
	sig := b.root(t, "billing", "charge", "9", 0)

	reply, outcome, err := p.Call(t.Context(), sig)
	must(t, err)
	// The activity ran on the third request; the fifth found the token gone.
	if outcome != httpsignal.OutcomeDuplicate || reply != nil {
		t.Errorf("Call = %q, %q; want no reply and outcome duplicate", reply, outcome)
	}
	if n := front.requests.Load(); n != 5 {
		t.Errorf("%d requests, want 5", n)
	}
	// net/http itself resends a request with an Idempotency-Key once when
	// a reused connection breaks before any answer, so that retry may not
	// be the Transport's.
	if n := len(ns.delays); n != 3 && n != 4 {
		t.Errorf("%d waits, want 3 or 4", n)
	}
	if ns.delays[0] != 0 {
		t.Errorf("first wait %v, want the Retry-After of 0", ns.delays[0])
	}
	if n := b.applied(t)[sig.ID.String()]; n != 1 {
		t.Errorf("applied %d times, want 1", n)
	}
	if err := p.Publish(t.Context(), sig); err != nil {
		t.Errorf("Publish of a processed signal: %v, want nil (delivered)", err)
	}
}

func TestCallReturnsReplyAndOutcome(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{})
	p, _ := newTestPublisher(t, b.url, 3)
	sig := b.root(t, "billing", "charge", "abc", 0)
	reply, outcome, err := p.Call(t.Context(), sig)
	must(t, err)
	if string(reply) != "charged abc" || outcome != httpsignal.OutcomeApplied {
		t.Errorf("Call = %q, %q", reply, outcome)
	}
}

func TestPublisherHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{RetryAfter: 7 * time.Second})
	p, ns := newTestPublisher(t, b.url, 3)
	sig := b.root(t, "billing", "charge", "", 0)
	b.tokens.failGets.Store(1)
	must(t, p.Publish(t.Context(), sig))
	if len(ns.delays) != 1 || ns.delays[0] != 7*time.Second {
		t.Errorf("waits %v, want [7s]", ns.delays)
	}
}

func TestPublisherRejectsOtherClientErrors(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{})
	front := newFaulty(b.server)
	srv := httptest.NewServer(front)
	t.Cleanup(srv.Close)
	p, _ := newTestPublisher(t, srv.URL, 5)
	sig := b.root(t, "billing", "charge", "right", 0)
	sig.Payload = []byte("wrong")

	err := p.Publish(t.Context(), sig)
	if !errors.Is(err, engine.ErrRejected) {
		t.Fatalf("Publish = %v, want ErrRejected", err)
	}
	var se *httpsignal.StatusError
	if !errors.As(err, &se) || se.Problem.Type != httpsignal.ProblemDigestMismatch || se.Problem.Status != 422 {
		t.Errorf("error %v does not carry the digest-mismatch problem", err)
	}
	if n := front.requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1: a refusal is not retried", n)
	}
	unknown := baton.Signal{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: "nowhere", Type: "x"}
	if err := p.Publish(t.Context(), unknown); !errors.Is(err, engine.ErrRejected) {
		t.Errorf("Publish to a destination without endpoint = %v, want ErrRejected", err)
	}
}

func TestPublisherGivesUpAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	p, ns := newTestPublisher(t, srv.URL, 4)
	sig := baton.Signal{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: "billing", Type: "charge"}
	err := p.Publish(t.Context(), sig)
	if err == nil || errors.Is(err, engine.ErrRejected) {
		t.Fatalf("Publish = %v, want a retryable error", err)
	}
	if n := requests.Load(); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}
	// Full jitter below a doubling limit: 1ms, 2ms, 4ms.
	for i, d := range ns.delays {
		if d < 0 || d > time.Millisecond<<i {
			t.Errorf("wait %d = %v, beyond %v", i, d, time.Millisecond<<i)
		}
	}
}

func TestTransportStopsWhenContextEnds(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	tr, err := httpsignal.NewTransport(httpsignal.TransportConfig{MaxAttempts: 1000, BaseDelay: time.Hour})
	must(t, err)
	p, err := httpsignal.NewPublisher(httpsignal.PublisherConfig{Endpoints: map[string]string{"billing": srv.URL}, Transport: tr})
	must(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = p.Publish(ctx, baton.Signal{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: "billing", Type: "charge"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Publish = %v, want the context's error", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("Publish took %v after its context ended", time.Since(start))
	}
}

// The Transport sends a clone: the caller's request keeps its headers.
func TestTransportDoesNotChangeTheRequest(t *testing.T) {
	t.Parallel()
	var seenKey, seenBody atomic.Value
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seenKey.Store(r.Header.Get(httpsignal.HeaderIdempotencyKey))
		seenBody.Store(string(body))
		if requests.Add(1) == 1 {
			http.Error(w, "again", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	tr, _ := newTestTransport(t, 3)
	sig := baton.Signal{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: "billing", Type: "charge", Payload: []byte("body")}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, nil)
	must(t, err)
	must(t, httpsignal.EncodeRequest(req, sig))
	req.Header.Del(httpsignal.HeaderIdempotencyKey)
	req.GetBody = nil // the Transport must buffer the body itself
	before := req.Header.Clone()

	resp, err := tr.RoundTrip(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 200 || requests.Load() != 2 {
		t.Fatalf("status %d after %d requests", resp.StatusCode, requests.Load())
	}
	if want := `"` + sig.ID.String() + `"`; seenKey.Load() != want {
		t.Errorf("server saw Idempotency-Key %v, want %s", seenKey.Load(), want)
	}
	if seenBody.Load() != "body" {
		t.Errorf("retried body %q", seenBody.Load())
	}
	if len(req.Header) != len(before) || req.Header.Get(httpsignal.HeaderIdempotencyKey) != "" {
		t.Errorf("the caller's headers changed: %v", req.Header)
	}

	// A request that is not a signal is sent once, as it is.
	requests.Store(0)
	plain, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, strings.NewReader("x"))
	must(t, err)
	resp, err = tr.RoundTrip(plain)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || requests.Load() != 1 {
		t.Errorf("plain request: status %d after %d requests, want one 503", resp.StatusCode, requests.Load())
	}
}

// An engine whose activity emits to a destination that refuses the signal
// parks it with a clear error instead of retrying for ever.
func TestEngineParksOnRefusal(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{})
	p, _ := newTestPublisher(t, b.url, 3)
	shop := newSystem(t, "shop", b.tokens.TokenStore.(*memory.TokenStore), p, nil)
	must(t, engine.Register(shop.e, engine.Activity[ledger]{Type: "order", Entity: byConversation,
		Handle: func(ctx context.Context, sig baton.Signal, l *ledger) (engine.Effects, error) {
			l.record(sig)
			return engine.Effects{Emit: []baton.Emit{{Destination: "billing", Type: "refund"}}}, nil
		}}))
	root, err := shop.e.IssueRoot(t.Context(), baton.Emit{Destination: "shop", Type: "order"}, 0)
	must(t, err)
	_, err = shop.e.Process(t.Context(), root)
	if !engine.IsPermanent(err) || !errors.Is(err, engine.ErrRejected) || !strings.Contains(err.Error(), "Unknown Type") {
		t.Fatalf("Process = %v, want a permanent ErrRejected naming the problem", err)
	}
}

func TestPublisherConfigIsValidated(t *testing.T) {
	t.Parallel()
	for _, cfg := range []httpsignal.PublisherConfig{
		{},
		{Endpoints: map[string]string{"billing": "billing.local/signals"}},
		{Endpoints: map[string]string{"billing": "ftp://billing.local/"}},
		{Endpoints: map[string]string{"billing": "http://billing.local/"}, MaxReplyBytes: -1},
	} {
		if _, err := httpsignal.NewPublisher(cfg); err == nil {
			t.Errorf("NewPublisher accepted %+v", cfg)
		}
	}
	if _, err := httpsignal.NewTransport(httpsignal.TransportConfig{MaxAttempts: -1}); err == nil {
		t.Error("NewTransport accepted negative attempts")
	}
}
