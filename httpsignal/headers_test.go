package httpsignal_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/httpsignal"
)

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestEncodeDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	sig := baton.Signal{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Causation: baton.NewTokenID(),
		Destination: "billing", Type: "charge", Payload: []byte("payload"),
		Trace: baton.TraceContext{Parent: traceparent, State: "congo=t61rcWkgMzE"}}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	must(t, httpsignal.EncodeRequest(req, sig))
	if req.Method != http.MethodPost || req.Header.Get(httpsignal.HeaderIdempotencyKey) != `"`+sig.ID.String()+`"` {
		t.Errorf("request %s with Idempotency-Key %q", req.Method, req.Header.Get(httpsignal.HeaderIdempotencyKey))
	}
	got, err := httpsignal.DecodeRequest(req, 0)
	must(t, err)
	if !sameSignal(got, sig) {
		t.Errorf("decoded %+v, want %+v", got, sig)
	}
}

func TestDecodeRefusesOrDrops(t *testing.T) {
	t.Parallel()
	base := baton.Signal{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: "billing", Type: "charge", Payload: []byte("12345")}
	request := func(edit func(r *http.Request)) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		must(t, httpsignal.EncodeRequest(r, base))
		edit(r)
		return r
	}
	for name, c := range map[string]struct {
		edit func(*http.Request)
		want error
	}{
		"no token":            {func(r *http.Request) { r.Header.Del(httpsignal.HeaderToken) }, httpsignal.ErrNoSignal},
		"zero causation":      {func(r *http.Request) { r.Header.Set(httpsignal.HeaderCausation, strings.Repeat("0", 32)) }, httpsignal.ErrMalformed},
		"bare key differs":    {func(r *http.Request) { r.Header.Set(httpsignal.HeaderIdempotencyKey, "abc") }, httpsignal.ErrMalformed},
		"space in type":       {func(r *http.Request) { r.Header.Set(httpsignal.HeaderType, "a b") }, httpsignal.ErrMalformed},
		"U+FFFD in type":      {func(r *http.Request) { r.Header.Set(httpsignal.HeaderType, "ch\ufffdarge") }, httpsignal.ErrMalformed},
		"PUT":                 {func(r *http.Request) { r.Method = http.MethodPut }, httpsignal.ErrMalformed},
		"too long, announced": {func(r *http.Request) { r.ContentLength = 6 }, httpsignal.ErrTooLarge},
		"too long, chunked": {func(r *http.Request) {
			r.ContentLength = -1
			r.Body = io.NopCloser(strings.NewReader("123456"))
		}, httpsignal.ErrTooLarge},
	} {
		_, err := httpsignal.DecodeRequest(request(c.edit), 5)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	// A bare Idempotency-Key equal to the token is fine, as many services
	// send it unquoted.
	if _, err := httpsignal.DecodeRequest(request(func(r *http.Request) {
		r.Header.Set(httpsignal.HeaderIdempotencyKey, base.ID.String())
	}), 0); err != nil {
		t.Errorf("bare key: %v", err)
	}
	// An invalid trace context is dropped, not refused (W3C Trace Context).
	sig, err := httpsignal.DecodeRequest(request(func(r *http.Request) {
		r.Header.Set(httpsignal.HeaderTraceparent, "00-00000000000000000000000000000000-00f067aa0ba902b7-01")
		r.Header.Set(httpsignal.HeaderTracestate, "a=b")
	}), 0)
	if err != nil || sig.Trace != (baton.TraceContext{}) {
		t.Errorf("invalid traceparent: %v, trace %+v", err, sig.Trace)
	}
}

func sameSignal(a, b baton.Signal) bool {
	return a.ID == b.ID && a.Conversation == b.Conversation && a.Causation == b.Causation &&
		a.Destination == b.Destination && a.Type == b.Type && bytes.Equal(a.Payload, b.Payload) && a.Trace == b.Trace
}

// FuzzDecodeRequest feeds arbitrary headers and bodies to DecodeRequest. It
// must never panic, every error must be one of its sentinels, and a signal
// it accepts must be valid and survive EncodeRequest and DecodeRequest
// unchanged. Seeds are in testdata/fuzz/FuzzDecodeRequest.
func FuzzDecodeRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, method, token, conversation, causation, typ, destination, key, parent, state string, body []byte) {
		r := &http.Request{Method: method, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body))}
		set := func(name, value string) {
			// An empty fuzz string means "header absent"; "\x00" asks for
			// a second copy of the previous header.
			if value != "" {
				r.Header[name] = strings.Split(value, "\x00")
			}
		}
		set(httpsignal.HeaderToken, token)
		set(httpsignal.HeaderConversation, conversation)
		set(httpsignal.HeaderCausation, causation)
		set(httpsignal.HeaderType, typ)
		set(httpsignal.HeaderDestination, destination)
		set(httpsignal.HeaderIdempotencyKey, key)
		set(httpsignal.HeaderTraceparent, parent)
		set(httpsignal.HeaderTracestate, state)
		sig, err := httpsignal.DecodeRequest(r, 64<<10)
		if err != nil {
			if !errors.Is(err, httpsignal.ErrMalformed) && !errors.Is(err, httpsignal.ErrTooLarge) {
				t.Fatalf("error %v matches no sentinel", err)
			}
			return
		}
		if err := sig.Validate(); err != nil {
			t.Fatalf("accepted an invalid signal: %v", err)
		}
		again := &http.Request{Header: http.Header{}}
		if err := httpsignal.EncodeRequest(again, sig); err != nil {
			t.Fatalf("cannot encode an accepted signal: %v", err)
		}
		back, err := httpsignal.DecodeRequest(again, 64<<10)
		if err != nil || !sameSignal(back, sig) {
			t.Fatalf("round trip: %+v, %v; want %+v", back, err, sig)
		}
	})
}
