package httpsignal_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/httpsignal"
)

// The decoders of what arrives from outside at the edge: API clients'
// root requests, people's form posts, and the answers a sender reads. Each
// must answer bad input with a defined status or error, never a panic, and
// must never admit what it should refuse. Seeds: testdata/fuzz/<name>.

// FuzzRootRequest posts arbitrary bodies to the root-token endpoint. Only
// 201 (with a token that is then live) and 4xx are acceptable answers.
func FuzzRootRequest(f *testing.F) {
	f.Add([]byte(`{"destination":"billing","type":"charge"}`), "application/json")
	f.Add([]byte(`{"destination":"billing","type":"charge","payload_digest":"`+strings.Repeat("ab", 32)+`","ttl_seconds":60}`), "application/json")
	f.Add([]byte(`{"destination":"billing","type":"charge"} {}`), "application/json")
	f.Add([]byte(`{"destination":"","type":"x","extra":1}`), "text/plain")
	f.Add([]byte(`{"destination":"payments","type":"charge","Destination":"billing"}`), "application/json")
	f.Add([]byte(`{"DESTINATION":"billing","type":"charge","type":"refund"}`), "application/json")
	f.Add([]byte("{\"destination\":\"billing\",\"type\":\"ch\xffarge\"}"), "application/json")
	f.Add([]byte(`{"destination":"billing","type":"\ud800"}`), "application/json")
	tokens := memory.NewTokenStore()
	roots, err := httpsignal.NewRoots(httpsignal.RootsConfig{
		Tokens:       tokens,
		Destinations: map[string][]string{"billing": nil},
		Identify:     httpsignal.APIKeys("X-Api-Key", map[string]string{"key": "client"}),
		MaxTTL:       time.Hour,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		req := httptest.NewRequest(http.MethodPost, "/roots", bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("X-Api-Key", "key")
		rec := httptest.NewRecorder()
		roots.ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusCreated:
			var resp httpsignal.RootResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("201 with a body that is no RootResponse: %v", err)
			}
			if _, err := tokens.Get(context.Background(), resp.Token); err != nil {
				t.Fatalf("201 for token %s, which is not live: %v", resp.Token, err)
			}
			// A reader that matches keys exactly, as a proxy may, reads the
			// destination and type that were issued.
			var exact map[string]any
			if !utf8.Valid(body) || json.Unmarshal(body, &exact) != nil ||
				exact["destination"] != resp.Destination || exact["type"] != resp.Type {
				t.Fatalf("201 for %q, %q to %q, which a reader of exact keys reads otherwise", resp.Destination, resp.Type, body)
			}
			if strings.ContainsRune(resp.Destination+resp.Type, utf8.RuneError) {
				t.Fatalf("201 for %q, %q: a name with U+FFFD", resp.Destination, resp.Type)
			}
		case rec.Code >= 400 && rec.Code < 500:
		default:
			t.Fatalf("answer %d to %q", rec.Code, body)
		}
	})
}

// FuzzFormPost posts arbitrary form bodies to a form handler. A post whose
// hidden fields do not name a live root token must never run the activity.
func FuzzFormPost(f *testing.F) {
	f.Add([]byte("baton_token=00&baton_conversation=00&customer=ann"), "application/x-www-form-urlencoded")
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"customer\"\r\n\r\nann\r\n--b--\r\n"), "multipart/form-data; boundary=b")
	f.Add([]byte("%zz"), "application/x-www-form-urlencoded")
	e, err := engine.New(engine.Config{Destination: "shop", Tokens: memory.NewTokenStore(),
		Entities: memory.NewEntityStore(), Dispatch: engine.Routes{}})
	if err != nil {
		f.Fatal(err)
	}
	ran := false
	if err := engine.Register(e, engine.Activity[struct{}]{Type: "order",
		Entity: func(sig baton.Signal) (string, error) { return "order-" + sig.Conversation.String(), nil },
		Handle: func(context.Context, baton.Signal, *struct{}) (engine.Effects, error) {
			ran = true
			return engine.Effects{}, nil
		}}); err != nil {
		f.Fatal(err)
	}
	server, err := httpsignal.NewServer(e, httpsignal.Options{})
	if err != nil {
		f.Fatal(err)
	}
	form, err := server.Form(httpsignal.FormOptions{Type: "order", MaxFormBytes: 4 << 10})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		ran = false
		req := httptest.NewRequest(http.MethodPost, "/order", bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		form.ServeHTTP(rec, req)
		if ran {
			t.Fatalf("a post without a live root token ran the activity (answer %d)", rec.Code)
		}
		if rec.Code < 400 || rec.Code >= 500 {
			t.Fatalf("answer %d to a post without a live root token", rec.Code)
		}
	})
}

// FuzzSenderReadsAnswers gives the retrying client arbitrary answers: any
// status, Content-Type, Retry-After and body. It must end with a response
// or an error within its bounded attempts, never panic, and never wait
// longer than MaxRetryAfter.
func FuzzSenderReadsAnswers(f *testing.F) {
	f.Add(409, "application/problem+json", "", []byte(`{"type":"`+httpsignal.ProblemInProgress+`"}`))
	f.Add(503, "text/html", "120", []byte("<html>busy</html>"))
	f.Add(429, "application/problem+json; charset=utf-8", "Wed, 21 Oct 2015 07:28:00 GMT", []byte(`{"type":1}`))
	f.Add(422, "application/problem+json", "-1", []byte(`{`))
	f.Fuzz(func(t *testing.T, status int, contentType, retryAfter string, body []byte) {
		if status < 100 || status > 999 {
			status = 200 + (status%800+800)%800
		}
		base := roundTripFunc(func(*http.Request) (*http.Response, error) {
			h := http.Header{}
			h.Set("Content-Type", contentType)
			h.Set("Retry-After", retryAfter)
			return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(bytes.NewReader(body))}, nil
		})
		tr, err := httpsignal.NewTransport(httpsignal.TransportConfig{Base: base, MaxAttempts: 2,
			BaseDelay: time.Microsecond, MaxDelay: time.Microsecond, MaxRetryAfter: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://billing.invalid/charge", strings.NewReader("{}"))
		id := baton.NewTokenID()
		if err := httpsignal.EncodeRequest(req, baton.Signal{ID: id, Conversation: id, Destination: "billing", Type: "charge", Payload: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
		started := time.Now()
		resp, err := tr.RoundTrip(req)
		if resp != nil {
			_ = resp.Body.Close()
		}
		if resp == nil && err == nil {
			t.Fatal("no response and no error")
		}
		if time.Since(started) > time.Second {
			t.Fatalf("took %v for two attempts", time.Since(started))
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
