package httpsignal_test

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/httpsignal"
	"github.com/batonhq/baton/internal/strictjson"
	"github.com/batonhq/baton/internal/testclock"
	"github.com/batonhq/baton/store"
)

// order is the state of a shop's order entity, keyed by conversation.
type order struct {
	ledger
	Customer string `json:"customer"`
}

// shopSite serves a form page (GET /form) and its POST (/order).
type shopSite struct {
	*system
	server  *httpsignal.Server
	tokens  *memory.TokenStore
	clock   *testclock.Clock
	url     string
	entered chan struct{} // closed when the first order activity starts
	release chan struct{} // the first order activity waits for it
}

var page = template.Must(template.New("page").Parse(
	`<form method="post" action="/order">{{.}}<input name="customer"></form>`))

func newShopSite(t *testing.T, block bool, edit ...func(*httpsignal.FormOptions)) *shopSite {
	t.Helper()
	s := &shopSite{tokens: memory.NewTokenStore(), clock: newClock(), entered: make(chan struct{}), release: make(chan struct{})}
	if !block {
		close(s.release)
	}
	s.system = newSystem(t, "shop", s.tokens, nil, s.clock.Now)
	var once sync.Once
	must(t, engine.Register(s.e, engine.Activity[order]{Type: "order", Entity: byConversation,
		Handle: func(ctx context.Context, sig baton.Signal, o *order) (engine.Effects, error) {
			once.Do(func() { close(s.entered); <-s.release })
			o.record(sig)
			o.Customer = httpsignal.FormValues(ctx).Get("customer")
			return engine.Effects{Reply: []byte("Thank you, " + o.Customer + ", for cart " + string(sig.Payload))}, nil
		}}))
	var err error
	s.server, err = httpsignal.NewServer(s.e, httpsignal.Options{})
	must(t, err)
	opts := httpsignal.FormOptions{Type: "order"}
	for _, e := range edit {
		e(&opts)
	}
	form, err := s.server.Form(opts)
	must(t, err)
	mux := http.NewServeMux()
	mux.Handle("POST /order", form)
	mux.HandleFunc("GET /form", func(w http.ResponseWriter, r *http.Request) {
		fields, err := httpsignal.FormToken(r.Context(), s.e, baton.Emit{Type: "order", Payload: []byte("cart-7")}, time.Hour)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_ = page.Execute(w, fields.HTML())
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]+)">`)

// render fetches the form page and returns its hidden fields, as a browser
// would submit them.
func (s *shopSite) render(t *testing.T) url.Values {
	t.Helper()
	resp, err := http.Get(s.url + "/form")
	must(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	v := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(string(body), -1) {
		v.Set(m[1], m[2])
	}
	if len(v) != 3 {
		t.Fatalf("form page %s lacks the hidden token fields", body)
	}
	return v
}

func (s *shopSite) submit(ctx context.Context, hidden url.Values, customer string) (*http.Response, string, error) {
	return s.submitFrom(ctx, hidden, customer, nil)
}

// submitFrom is submit with the headers a browser adds (Origin,
// Sec-Fetch-Site) set by edit.
func (s *shopSite) submitFrom(ctx context.Context, hidden url.Values, customer string, edit func(*http.Request)) (*http.Response, string, error) {
	v := url.Values{"customer": {customer}}
	for k, vs := range hidden {
		v[k] = vs
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/order", strings.NewReader(v.Encode()))
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if edit != nil {
		edit(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

func (s *shopSite) orders(t *testing.T) []order {
	t.Helper()
	var out []order
	for _, key := range s.entities.Keys() {
		ent, err := s.entities.Load(t.Context(), key)
		must(t, err)
		var o order
		must(t, json.Unmarshal(ent.State, &o))
		out = append(out, o)
	}
	return out
}

func TestFormDoubleSubmitIsAppliedOnce(t *testing.T) {
	t.Parallel()
	s := newShopSite(t, false)
	hidden := s.render(t)

	resp, body, err := s.submit(t.Context(), hidden, "Alice")
	must(t, err)
	if resp.StatusCode != 200 || !strings.Contains(body, "Thank you, Alice, for cart cart-7") {
		t.Fatalf("first submit: %d %s", resp.StatusCode, body)
	}
	resp, body, err = s.submit(t.Context(), hidden, "Mallory")
	must(t, err)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "Already submitted") ||
		resp.Header.Get(httpsignal.HeaderOutcome) != httpsignal.OutcomeDuplicate {
		t.Fatalf("second submit: %d %s", resp.StatusCode, body)
	}
	orders := s.orders(t)
	if len(orders) != 1 || orders[0].Customer != "Alice" || orders[0].Applied[hidden.Get(httpsignal.FieldToken)] != 1 {
		t.Errorf("orders %+v, want one for Alice", orders)
	}
}

// A double click sends the second POST while the first is processed: the
// person sees the first submission's result.
func TestFormDoubleClickShowsFirstResult(t *testing.T) {
	t.Parallel()
	s := newShopSite(t, true)
	hidden := s.render(t)
	type result struct {
		resp *http.Response
		body string
		err  error
	}
	first, second := make(chan result, 1), make(chan result, 1)
	go func() { r, b, err := s.submit(t.Context(), hidden, "Alice"); first <- result{r, b, err} }()
	<-s.entered
	go func() { r, b, err := s.submit(t.Context(), hidden, "Bob"); second <- result{r, b, err} }()
	waitFor(t, "the second click to wait", func() bool { return s.server.Waiting() == 1 })
	close(s.release)
	for _, ch := range []chan result{first, second} {
		r := <-ch
		must(t, r.err)
		if r.resp.StatusCode != 200 || !strings.Contains(r.body, "Thank you, Alice") {
			t.Errorf("got %d %s, want Alice's result", r.resp.StatusCode, r.body)
		}
	}
	if n := len(s.orders(t)); n != 1 {
		t.Errorf("%d orders, want 1", n)
	}
}

func TestFormRefusesTamperedAndExpiredTokens(t *testing.T) {
	t.Parallel()
	s := newShopSite(t, false)

	tampered := s.render(t)
	tampered.Set(httpsignal.FieldPayload, "Y2FydC04") // "cart-8"
	resp, body, err := s.submit(t.Context(), tampered, "Eve")
	must(t, err)
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("tampered payload: %d %s", resp.StatusCode, body)
	}

	missing := s.render(t)
	missing.Del(httpsignal.FieldToken)
	resp, body, err = s.submit(t.Context(), missing, "Eve")
	must(t, err)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("missing token: %d %s", resp.StatusCode, body)
	}

	expired := s.render(t)
	s.clock.Advance(2 * time.Hour)
	resp, body, err = s.submit(t.Context(), expired, "Late")
	must(t, err)
	if resp.StatusCode != http.StatusGone || !strings.Contains(body, "Form expired") {
		t.Errorf("expired form: %d %s", resp.StatusCode, body)
	}
	if n := len(s.orders(t)); n != 0 {
		t.Errorf("%d orders from refused forms", n)
	}
}

// A page on another site cannot post a form here with a person's browser
// (cross-site request forgery): the form's token is no defence, since the
// other site fetches a fresh one as anybody can. The post is refused with
// 403 before the token is read, so the token stays live; the site's own
// pages, clients that are not browsers, and origins the handler trusts
// still post.
func TestFormRefusesCrossOriginPosts(t *testing.T) {
	t.Parallel()
	s := newShopSite(t, false, func(o *httpsignal.FormOptions) {
		o.TrustedOrigins = []string{"https://checkout.example"}
	})
	for name, edit := range map[string]func(*http.Request){
		"cross-site": func(r *http.Request) {
			r.Header.Set("Sec-Fetch-Site", "cross-site")
			r.Header.Set("Origin", "https://evil.example")
		},
		"same-site": func(r *http.Request) {
			r.Header.Set("Sec-Fetch-Site", "same-site")
			r.Header.Set("Origin", "https://a.shop.example")
		},
		"origin, no fetch metadata": func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") },
		"null origin":               func(r *http.Request) { r.Header.Set("Origin", "null") },
	} {
		hidden := s.render(t)
		resp, body, err := s.submitFrom(t.Context(), hidden, "Mallory", edit)
		must(t, err)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "another site") {
			t.Errorf("%s: %d %s, want 403", name, resp.StatusCode, body)
		}
		token, err := baton.ParseTokenID(hidden.Get(httpsignal.FieldToken))
		must(t, err)
		if _, err := s.tokens.Get(t.Context(), token); err != nil {
			t.Errorf("%s: the refused form's token: %v, want it live", name, err)
		}
	}
	for name, edit := range map[string]func(*http.Request){
		"same-origin":    func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "same-origin"); r.Header.Set("Origin", s.url) },
		"origin is host": func(r *http.Request) { r.Header.Set("Origin", s.url) },
		"not a browser":  nil,
		"trusted origin": func(r *http.Request) {
			r.Header.Set("Sec-Fetch-Site", "cross-site")
			r.Header.Set("Origin", "https://checkout.example")
		},
	} {
		resp, body, err := s.submitFrom(t.Context(), s.render(t), "Alice", edit)
		must(t, err)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d %s, want 200", name, resp.StatusCode, body)
		}
	}
	if n := len(s.orders(t)); n != 4 {
		t.Errorf("%d orders, want the 4 allowed ones", n)
	}
	if _, err := s.server.Form(httpsignal.FormOptions{Type: "order", TrustedOrigins: []string{"checkout.example/path"}}); err == nil {
		t.Error("Form accepted a trusted origin that is no origin")
	}
}

// APIKeys compares a request's key with every client's, as SHA-256 hashes
// in constant time, without an early exit: a map lookup by the key itself
// took a time that depended on the secret keys (Go's map compares long
// string keys by their first and last bytes before hashing them).
func TestAPIKeysCompareHashesInConstantTime(t *testing.T) {
	keys := map[string]string{"key-a": "client-a", "key-b": "client-b", strings.Repeat("k", 100): "client-c"}
	identify := httpsignal.APIKeys("X-Api-Key", keys)
	keys["key-d"] = "client-d" // the caller's map is copied: a later change changes nothing
	for key, want := range map[string]string{"key-a": "client-a", strings.Repeat("k", 100): "client-c", "key-x": "", "key-d": "", "": ""} {
		r := httptest.NewRequest(http.MethodPost, "/roots", nil)
		if key != "" {
			r.Header.Set("X-Api-Key", key)
		}
		var client string
		var err error
		lengths := httpsignal.CountKeyComparisons(func() { client, err = identify(r) })
		if client != want || (want == "") != errors.Is(err, httpsignal.ErrUnknownClient) {
			t.Errorf("key %q: client %q, %v; want %q", key, client, err, want)
		}
		if key == "" {
			continue
		}
		if len(lengths) != 2*3 {
			t.Errorf("key %q: %d comparisons, want one with each of the 3 clients' keys", key, len(lengths)/2)
		}
		for _, n := range lengths {
			if n != 32 {
				t.Errorf("key %q: compared %d bytes, want SHA-256 hashes of 32", key, n)
			}
		}
	}
}

func TestFormFieldsEscape(t *testing.T) {
	t.Parallel()
	f := httpsignal.FormFields{Token: baton.NewTokenID(), Conversation: baton.NewTokenID(), Payload: []byte(`"><script>`)}
	html := string(f.HTML())
	if strings.Contains(html, "<script>") || strings.Count(html, "<input") != 3 {
		t.Errorf("HTML() = %s", html)
	}
}

// rootsSite serves POST /roots and the billing signal endpoint.
type rootsSite struct {
	*billing
	roots *httptest.Server
}

func newRootsSite(t *testing.T, limiter httpsignal.Limiter) *rootsSite {
	t.Helper()
	b := newBilling(t, httpsignal.Options{})
	roots, err := httpsignal.NewRoots(httpsignal.RootsConfig{
		Tokens:       b.tokens,
		Destinations: map[string][]string{"billing": {"charge"}},
		Identify:     httpsignal.APIKeys("X-Api-Key", map[string]string{"key-a": "client-a", "key-b": "client-b"}),
		Limiter:      limiter,
		Now:          b.clock.Now,
		MaxTTL:       time.Hour,
	})
	must(t, err)
	srv := httptest.NewServer(roots)
	t.Cleanup(srv.Close)
	return &rootsSite{billing: b, roots: srv}
}

func (s *rootsSite) ask(t *testing.T, key, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.roots.URL, strings.NewReader(body))
	must(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Api-Key", key)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp, out
}

func TestRootTokenForAPIClients(t *testing.T) {
	t.Parallel()
	s := newRootsSite(t, nil)
	payload := []byte(`{"amount":12}`)
	digest := baton.DigestOf(payload)
	resp, body := s.ask(t, "key-a", `{"destination":"billing","type":"charge","ttl_seconds":60,"payload_digest":"`+digest.String()+`"}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var root httpsignal.RootResponse
	must(t, json.Unmarshal(body, &root))
	if root.Token != root.Conversation || root.PayloadDigest != digest || !root.ExpiresAt.Equal(s.clock.Now().Add(time.Minute)) {
		t.Errorf("root %+v", root)
	}
	sig := baton.Signal{ID: root.Token, Conversation: root.Conversation, Destination: "billing", Type: "charge", Payload: payload}
	r, b := send(t, s.url, sig, nil)
	wantReply(t, r, b, httpsignal.OutcomeApplied, `charged {"amount":12}`)

	// An unused root expires: the signal is refused, never admitted.
	resp, body = s.ask(t, "key-a", `{"destination":"billing","type":"charge","ttl_seconds":60}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	must(t, json.Unmarshal(body, &root))
	s.clock.Advance(61 * time.Second)
	sig = baton.Signal{ID: root.Token, Conversation: root.Conversation, Destination: "billing", Type: "charge"}
	r, b = send(t, s.url, sig, nil)
	wantProblem(t, r, b, http.StatusGone, httpsignal.ProblemExpired)

	for _, bad := range []string{
		`{"destination":"billing"}`,
		`{"destination":"billing","type":"charge","ttl_seconds":7200}`,
		`{"destination":"billing","type":"charge","ttl_seconds":-1}`,
		`{"destination":"billing","type":"charge","payload_digest":"ABC"}`,
		`{"destination":"billing","type":"charge","extra":1}`,
		`{"destination":"billing","type":"charge"} {}`,
		`not json`,
	} {
		resp, body := s.ask(t, "key-b", bad)
		wantProblem(t, resp, body, http.StatusBadRequest, httpsignal.ProblemMalformed)
	}
	resp, body = s.ask(t, "stolen", `{"destination":"billing","type":"charge"}`)
	wantProblem(t, resp, body, http.StatusUnauthorized, httpsignal.ProblemUnauthorized)
}

// A root request whose keys encoding/json alone would match loosely is
// refused: a key in another case (or with a long s, which folds to s), or
// a key twice, of which encoding/json keeps the last value. A proxy or
// firewall that reads the first "destination", or only the lowercase one,
// would otherwise approve one destination while a root for another is
// issued.
func TestRootRequestKeysAreExactAndOnce(t *testing.T) {
	t.Parallel()
	s := newRootsSite(t, nil)
	for _, c := range []struct{ body, says string }{
		{`{"destination":"payments","type":"charge","Destination":"billing"}`, `key "Destination" at line 1, column 43 is not a field name`},
		{`{"DESTINATION":"billing","type":"charge"}`, `key "DESTINATION"`},
		{`{"destination":"billing","type":"refund","type":"charge"}`, `key "type" at line 1, column 42 appears twice`},
		{"{\"destination\":\"billing\",\"type\":\"charge\",\"ttl_\u017feconds\":60}", `key "ttl_\u017feconds"`},
		{"{\"destination\":\"bill\xffing\",\"type\":\"charge\"}", `not UTF-8 at line 1, column 21`},
	} {
		resp, body := s.ask(t, "key-a", c.body)
		p := wantProblem(t, resp, body, http.StatusBadRequest, httpsignal.ProblemMalformed)
		if !strings.Contains(p.Detail, c.says) {
			t.Errorf("%q: the refusal says %q, want it to say %q", c.body, p.Detail, c.says)
		}
	}
	if live, err := s.tokens.ListByDestination(t.Context(), "billing", store.Page{}); err != nil || len(live) != 0 {
		t.Errorf("refused requests issued roots: %v %v", live, err)
	}
	if err := strictjson.Fits(reflect.TypeFor[httpsignal.RootRequest]()); err != nil {
		t.Errorf("RootRequest has a key that Check would refuse: %v", err)
	}
}

// A name in a root request that decodes to U+FFFD is refused: an escaped
// lone surrogate ("\ud800") reads as U+FFFD, and a root for a name its
// client never wrote would be issued.
func TestRootRequestNamesWithReplacementCharacterAreRefused(t *testing.T) {
	t.Parallel()
	tokens := memory.NewTokenStore()
	roots, err := httpsignal.NewRoots(httpsignal.RootsConfig{Tokens: tokens, Destinations: map[string][]string{"billing": nil}})
	must(t, err)
	for _, body := range []string{
		`{"destination":"billing","type":"\ud800"}`,
		`{"destination":"billing","type":"ch\udc00arge"}`,
		`{"destination":"billing","type":"ch\ufffdarge"}`,
		"{\"destination\":\"billing\",\"type\":\"ch\ufffdarge\"}",
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/roots", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		roots.ServeHTTP(rec, req)
		p := wantProblem(t, rec.Result(), rec.Body.Bytes(), http.StatusBadRequest, httpsignal.ProblemMalformed)
		if !strings.Contains(p.Detail, "U+FFFD") {
			t.Errorf("%s: the refusal says %q, want it to name U+FFFD", body, p.Detail)
		}
	}
	if live, err := tokens.ListByDestination(t.Context(), "billing", store.Page{}); err != nil || len(live) != 0 {
		t.Errorf("refused requests issued roots: %v %v", live, err)
	}
}

// The endpoint issues roots only for the destinations and types it is
// configured for: the token store is shared, and a root admits its signal
// at its destination, so an endpoint open to every destination would let
// its clients start any system's work.
func TestRootTokensOnlyForTheDestinationsServed(t *testing.T) {
	t.Parallel()
	s := newRootsSite(t, nil)
	for _, other := range []string{
		`{"destination":"payments","type":"refund"}`,
		`{"destination":"billing","type":"refund"}`,
	} {
		resp, body := s.ask(t, "key-a", other)
		wantProblem(t, resp, body, http.StatusForbidden, httpsignal.ProblemForbidden)
	}
	if live, err := s.tokens.ListByDestination(t.Context(), "payments", store.Page{}); err != nil || len(live) != 0 {
		t.Errorf("a refused request left tokens: %v %v", live, err)
	}
	_, err := httpsignal.NewRoots(httpsignal.RootsConfig{Tokens: s.tokens})
	if err == nil || !strings.Contains(err.Error(), "Destinations is required") {
		t.Errorf("NewRoots without Destinations: %v, want an error that asks for them", err)
	}
}

func TestRootTokensAreRateLimitedPerClient(t *testing.T) {
	t.Parallel()
	limiter := httpsignal.NewRateLimiter(1, 2) // 1 per second, bursts of 2
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	limiter.SetClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	s := newRootsSite(t, limiter)
	ask := `{"destination":"billing","type":"charge"}`
	for i := range 2 {
		if resp, body := s.ask(t, "key-a", ask); resp.StatusCode != http.StatusCreated {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	resp, body := s.ask(t, "key-a", ask)
	wantProblem(t, resp, body, http.StatusTooManyRequests, httpsignal.ProblemRateLimited)
	if resp.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q, want 1", resp.Header.Get("Retry-After"))
	}
	if resp, body := s.ask(t, "key-b", ask); resp.StatusCode != http.StatusCreated {
		t.Errorf("another client was limited: %d %s", resp.StatusCode, body)
	}
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	if resp, body := s.ask(t, "key-a", ask); resp.StatusCode != http.StatusCreated {
		t.Errorf("after a second: %d %s", resp.StatusCode, body)
	}
}
