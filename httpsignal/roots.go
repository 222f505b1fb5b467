package httpsignal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/internal/strictjson"
	"github.com/batonhq/baton/store"
)

// Names of the hidden form fields that carry a root token.
const (
	FieldToken        = "baton-token"
	FieldConversation = "baton-conversation"
	FieldPayload      = "baton-payload" // base64url without padding
)

// FormFields is the root token that a server-rendered form carries in
// hidden fields. Payload is the fixed payload that the token's digest
// covers (a form id, a cart id: what the server knows when it renders the
// page); what the person types travels beside it (see FormValues).
type FormFields struct {
	Token        baton.TokenID
	Conversation baton.TokenID
	Payload      []byte
}

// FormToken issues a root token for one submission of a form and returns
// the fields to embed in it. emit.Destination defaults to e's destination;
// emit.Payload is the fixed payload. A ttl above zero lets the token expire
// unused: a form posted after that is refused (410), never admitted.
func FormToken(ctx context.Context, e *engine.Engine, emit baton.Emit, ttl time.Duration) (FormFields, error) {
	if emit.Destination == "" && emit.Topic == "" {
		emit.Destination = e.Destination()
	}
	sig, err := e.IssueRoot(ctx, emit, ttl)
	if err != nil {
		return FormFields{}, err
	}
	return FormFields{Token: sig.ID, Conversation: sig.Conversation, Payload: sig.Payload}, nil
}

// Values returns the hidden fields as form values.
func (f FormFields) Values() url.Values {
	v := url.Values{FieldToken: {f.Token.String()}, FieldConversation: {f.Conversation.String()}}
	if len(f.Payload) > 0 {
		v.Set(FieldPayload, base64.RawURLEncoding.EncodeToString(f.Payload))
	}
	return v
}

// HTML returns the hidden input elements, escaped, for a template.
func (f FormFields) HTML() template.HTML {
	var b strings.Builder
	for _, name := range []string{FieldToken, FieldConversation, FieldPayload} {
		v := f.Values().Get(name)
		if v == "" {
			continue
		}
		fmt.Fprintf(&b, `<input type="hidden" name="%s" value="%s">`, name, template.HTMLEscapeString(v))
	}
	return template.HTML(b.String()) // #nosec: every value is escaped above
}

type formValuesKey struct{}

// FormValues returns the fields a person submitted with a form (without
// the hidden token fields), for the activity that processes the form's
// root signal; nil outside a form submission. These values are not covered
// by the token's digest: the token authorises one submission of the form,
// not particular content. Route the entity from the signal (its
// conversation or fixed payload), never from these values (protocol R0).
func FormValues(ctx context.Context) url.Values {
	v, _ := ctx.Value(formValuesKey{}).(url.Values)
	return v
}

// FormAnswer is what a form submission came to, for FormOptions.Render.
type FormAnswer struct {
	Status  int
	Outcome string // OutcomeApplied, OutcomeReplayed, OutcomeDuplicate or ""
	Reply   []byte
	Problem *Problem // nil on success
	Signal  baton.Signal
}

// FormOptions configure a form handler.
type FormOptions struct {
	// Type is the type of the signal a submission makes. Required. It is
	// fixed here rather than sent in the form, so a person cannot turn a
	// form's token into another activity.
	Type string
	// MaxFormBytes bounds the posted form. Zero: 1 MiB.
	MaxFormBytes int64
	// TrustedOrigins are the origins ("https://shop.example.com", scheme,
	// host and port only) of pages elsewhere whose forms may post here.
	// A browser's post from any other origin is refused (403 forbidden),
	// before its token is read: see Form.
	TrustedOrigins []string
	// Render writes the page a person sees. Nil: a plain page that shows
	// the reply as text, "already submitted" for a duplicate, and the
	// problem's title and detail otherwise.
	Render func(w http.ResponseWriter, r *http.Request, a FormAnswer)
}

// Form returns a handler for the POST of a form that embeds FormToken's
// fields. It rebuilds the root signal from the hidden fields (its digest is
// the fixed payload's, so a tampered payload is refused), hands the other
// fields to the activity through the context (FormValues), and renders the
// outcome. A double submit or browser retry finds the token consumed: while
// the first submission is still processing here it gets that submission's
// result, afterwards an "already submitted" page (409).
//
// A post that a browser sends from a page of another origin is refused
// with 403 forbidden before its token is read (http.CrossOriginProtection:
// Sec-Fetch-Site, else Origin against Host), unless the origin is one of
// opts.TrustedOrigins. The form's token is no defence against such
// cross-site request forgery: anybody can fetch a page with a fresh one,
// and it is bound to the form, not to the person whose browser posts it.
// Requests without those headers (not from a browser) are not refused.
func (s *Server) Form(opts FormOptions) (http.Handler, error) {
	if err := (baton.Emit{Destination: s.e.Destination(), Type: opts.Type}).Validate(); err != nil {
		return nil, fmt.Errorf("httpsignal: form options: %w", err)
	}
	if opts.MaxFormBytes < 0 {
		return nil, errors.New("httpsignal: form options: MaxFormBytes must not be negative")
	}
	sameOrigin := http.NewCrossOriginProtection()
	for _, origin := range opts.TrustedOrigins {
		if err := sameOrigin.AddTrustedOrigin(origin); err != nil {
			return nil, fmt.Errorf("httpsignal: form options: TrustedOrigins: %w", err)
		}
	}
	if opts.MaxFormBytes == 0 {
		opts.MaxFormBytes = 1 << 20
	}
	if opts.Render == nil {
		opts.Render = renderForm
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sig, values, a, ok := s.decodeForm(w, r, opts, sameOrigin)
		if ok {
			ctx := context.WithValue(r.Context(), formValuesKey{}, values)
			a = s.run(ctx, sig)
		}
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		if a.outcome != "" {
			h.Set(HeaderOutcome, a.outcome)
		}
		if a.retryAfter > 0 {
			h.Set("Retry-After", retryAfterSeconds(a.retryAfter))
		}
		opts.Render(w, r, FormAnswer{Status: a.status, Outcome: a.outcome, Reply: a.reply, Problem: a.problem, Signal: sig})
	}), nil
}

func (s *Server) decodeForm(w http.ResponseWriter, r *http.Request, opts FormOptions, sameOrigin *http.CrossOriginProtection) (baton.Signal, url.Values, answer, bool) {
	var sig baton.Signal
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return sig, nil, problemAnswer(http.StatusMethodNotAllowed, ProblemMethod, "Method Not Allowed", "a form is submitted with POST", ""), false
	}
	if err := sameOrigin.Check(r); err != nil {
		s.log.Info("cross-origin form post refused", "origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))
		return sig, nil, problemAnswer(http.StatusForbidden, ProblemForbidden, "Forbidden",
			"this form was posted from a page of another site; submit it from this site's own page", ""), false
	}
	r.Body = http.MaxBytesReader(w, r.Body, opts.MaxFormBytes)
	var err error
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "multipart/form-data" {
		err = r.ParseMultipartForm(opts.MaxFormBytes)
	} else {
		err = r.ParseForm()
	}
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return sig, nil, problemAnswer(http.StatusRequestEntityTooLarge, ProblemTooLarge, "Form Too Large", err.Error(), ""), false
		}
		return sig, nil, problemAnswer(http.StatusBadRequest, ProblemMalformed, "Malformed Form", err.Error(), ""), false
	}
	// Only the body counts: a token in the URL would leak into logs.
	form := r.PostForm
	malformed := func(detail string) (baton.Signal, url.Values, answer, bool) {
		return sig, nil, problemAnswer(http.StatusBadRequest, ProblemMalformed, "Malformed Form", detail, ""), false
	}
	if len(form[FieldToken]) != 1 || len(form[FieldConversation]) != 1 || len(form[FieldPayload]) > 1 {
		return malformed("the form must carry its hidden token fields once each")
	}
	if sig.ID, err = parseID(FieldToken, form.Get(FieldToken)); err != nil {
		return malformed(err.Error())
	}
	if sig.Conversation, err = parseID(FieldConversation, form.Get(FieldConversation)); err != nil {
		return malformed(err.Error())
	}
	if sig.Payload, err = base64.RawURLEncoding.DecodeString(form.Get(FieldPayload)); err != nil {
		return malformed(fmt.Sprintf("%s: %v", FieldPayload, err))
	}
	if len(sig.Payload) == 0 {
		sig.Payload = nil
	}
	sig.Destination, sig.Type = s.e.Destination(), opts.Type
	if err := sig.Validate(); err != nil {
		return malformed(err.Error())
	}
	values := make(url.Values, len(form))
	for k, v := range form {
		if k != FieldToken && k != FieldConversation && k != FieldPayload {
			values[k] = v
		}
	}
	return sig, values, answer{}, true
}

var formPage = template.Must(template.New("form").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title></head>
<body><h1>{{.Title}}</h1><p>{{.Text}}</p></body></html>
`))

func renderForm(w http.ResponseWriter, _ *http.Request, a FormAnswer) {
	page := struct{ Title, Text string }{"Done", string(a.Reply)}
	switch {
	case a.Outcome == OutcomeDuplicate:
		page = struct{ Title, Text string }{"Already submitted",
			"This form was already submitted and is processed once. Submitting it again changes nothing."}
	case a.Problem != nil && a.Problem.Type == ProblemExpired:
		page = struct{ Title, Text string }{"Form expired", "This form has expired. Reload the page to get a fresh one."}
	case a.Problem != nil:
		page = struct{ Title, Text string }{a.Problem.Title, a.Problem.Detail}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(a.Status)
	_ = formPage.Execute(w, page)
}

// RootRequest is the JSON body of a request for a root token.
type RootRequest struct {
	Destination string `json:"destination"`
	Type        string `json:"type"`
	// TTLSeconds is how long the token may stay unused; 0 means the
	// configured default. Root tokens from the API always expire, so the
	// tokens of clients that never send are cleaned up.
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`
	// PayloadDigest is the SHA-256 of the payload the client will send, as
	// 64 hex digits; empty means the empty payload.
	PayloadDigest string `json:"payload_digest,omitempty"`
}

// RootResponse is the JSON answer with a root token: the client sends its
// signal with Baton-Token = Token and Baton-Conversation = Conversation.
type RootResponse struct {
	Token         baton.TokenID `json:"token"`
	Conversation  baton.TokenID `json:"conversation"`
	Destination   string        `json:"destination"`
	Type          string        `json:"type"`
	PayloadDigest baton.Digest  `json:"payload_digest"`
	ExpiresAt     time.Time     `json:"expires_at"`
}

// Limiter decides whether a client may have another root token now, and
// if not, when to ask again.
type Limiter interface {
	Allow(client string) (ok bool, retryAfter time.Duration)
}

// RootsConfig configures the root token endpoint.
type RootsConfig struct {
	// Tokens is the shared token store. Required.
	Tokens store.TokenStore
	// Destinations are the destinations whose conversations clients may
	// start here, each with the signal types allowed (none listed: any
	// type). Required: the token store is shared and a root token admits
	// its signal at its destination, so an endpoint that issued roots for
	// any destination would let its clients start any system's work.
	// Others are answered 403.
	Destinations map[string][]string
	// Identify names the client of a request, for the rate limit and
	// Authorize. An error answers 401. Nil: RemoteHost.
	Identify func(r *http.Request) (string, error)
	// Authorize says whether a client may start a conversation with this
	// destination and type, one of Destinations; an error answers 403.
	// Nil allows every client what Destinations allows.
	Authorize func(client string, req RootRequest) error
	// Limiter rate-limits clients. Nil: NewRateLimiter(10, 20).
	Limiter Limiter
	// DefaultTTL applies when a request names none. Zero: 15m.
	DefaultTTL time.Duration
	// MaxTTL is the longest expiry a client may ask for. Zero: 24h.
	MaxTTL time.Duration
	// RetryAfter is the delay a 503 answer asks for. Zero: 1s.
	RetryAfter time.Duration
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
	// Logger receives structured logs. Nil discards them.
	Logger *slog.Logger
}

// Roots is the endpoint at which API clients obtain a root token before
// they send a signal (POST, JSON RootRequest in, 201 RootResponse out).
type Roots struct {
	cfg RootsConfig
	log *slog.Logger
}

var _ http.Handler = (*Roots)(nil)

// maxRootRequestBytes bounds a RootRequest body; a real one is ~300 bytes.
const maxRootRequestBytes = 4 << 10

// NewRoots validates cfg and returns the endpoint.
func NewRoots(cfg RootsConfig) (*Roots, error) {
	switch {
	case cfg.Tokens == nil:
		return nil, errors.New("httpsignal: roots config: Tokens is required")
	case len(cfg.Destinations) == 0:
		return nil, errors.New("httpsignal: roots config: Destinations is required: the destinations (and their types) whose conversations clients may start here")
	case cfg.DefaultTTL < 0 || cfg.MaxTTL < 0 || cfg.RetryAfter < 0:
		return nil, errors.New("httpsignal: roots config: durations must not be negative")
	}
	if cfg.Identify == nil {
		cfg.Identify = RemoteHost
	}
	if cfg.Limiter == nil {
		cfg.Limiter = NewRateLimiter(10, 20)
	}
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = 15 * time.Minute
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = 24 * time.Hour
	}
	if cfg.DefaultTTL > cfg.MaxTTL {
		return nil, errors.New("httpsignal: roots config: DefaultTTL exceeds MaxTTL")
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Roots{cfg: cfg, log: cfg.Logger}, nil
}

// RemoteHost identifies a client by the host part of its address. Behind a
// proxy every client shares the proxy's address: identify by a verified
// API key (APIKeys) instead.
func RemoteHost(r *http.Request) (string, error) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr, nil
	}
	return host, nil
}

// ErrUnknownClient is returned by an Identify function for a request whose
// credentials name no known client.
var ErrUnknownClient = errors.New("httpsignal: unknown client")

// compareKeyHashes compares two key hashes; tests count its calls.
var compareKeyHashes = subtle.ConstantTimeCompare

// APIKeys identifies a client by an API key in the named header, looked up
// in keys (API key -> client name), which it copies. A missing, empty or
// unknown key is ErrUnknownClient. The key itself is never logged or
// returned. It keeps only the keys' SHA-256 hashes and compares a
// request's key, hashed, with every one of them in constant time and
// without an early exit, so the time taken says nothing about the keys.
func APIKeys(header string, keys map[string]string) func(*http.Request) (string, error) {
	type client struct {
		hash [sha256.Size]byte
		name string
	}
	clients := make([]client, 0, len(keys))
	for key, name := range keys {
		if key != "" {
			clients = append(clients, client{sha256.Sum256([]byte(key)), name})
		}
	}
	return func(r *http.Request) (string, error) {
		key := r.Header.Get(header)
		if key == "" {
			return "", ErrUnknownClient
		}
		sum := sha256.Sum256([]byte(key))
		found, name := false, ""
		for _, c := range clients {
			if compareKeyHashes(sum[:], c.hash[:]) == 1 {
				found, name = true, c.name
			}
		}
		if !found {
			return "", ErrUnknownClient
		}
		return name, nil
	}
}

// ServeHTTP implements http.Handler.
func (rt *Roots) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeProblem(w, &Problem{Type: ProblemMethod, Title: "Method Not Allowed", Status: http.StatusMethodNotAllowed,
			Detail: "ask for a root token with POST"}, 0)
		return
	}
	client, err := rt.cfg.Identify(r)
	if err != nil {
		writeProblem(w, &Problem{Type: ProblemUnauthorized, Title: "Unauthorized", Status: http.StatusUnauthorized,
			Detail: "the request does not identify a known client"}, 0)
		return
	}
	// The limit comes before any work, so a flood costs one map lookup.
	if ok, wait := rt.cfg.Limiter.Allow(client); !ok {
		writeProblem(w, &Problem{Type: ProblemRateLimited, Title: "Too Many Requests", Status: http.StatusTooManyRequests,
			Detail: "too many root tokens requested; retry after the delay"}, max(wait, time.Second))
		return
	}
	req, digest, ttl, err := rt.decode(w, r)
	if err != nil {
		writeProblem(w, &Problem{Type: ProblemMalformed, Title: "Malformed Request", Status: http.StatusBadRequest, Detail: err.Error()}, 0)
		return
	}
	if err := rt.served(req); err != nil {
		writeProblem(w, &Problem{Type: ProblemForbidden, Title: "Forbidden", Status: http.StatusForbidden, Detail: err.Error()}, 0)
		return
	}
	if rt.cfg.Authorize != nil {
		if err := rt.cfg.Authorize(client, req); err != nil {
			writeProblem(w, &Problem{Type: ProblemForbidden, Title: "Forbidden", Status: http.StatusForbidden, Detail: err.Error()}, 0)
			return
		}
	}
	now := rt.cfg.Now()
	tok, err := rt.cfg.Tokens.Issue(r.Context(), baton.Token{Destination: req.Destination, Type: req.Type, Digest: digest,
		CreatedAt: now, ExpiresAt: now.Add(ttl)})
	id := tok.ID
	if err != nil {
		// Outcome unknown at worst: an orphan root expires unused.
		rt.log.Warn("issue root token failed", "client", client, "err", err)
		writeProblem(w, &Problem{Type: ProblemUnavailable, Title: "Service Unavailable", Status: http.StatusServiceUnavailable,
			Detail: "the token store is unavailable; retry after the delay"}, rt.cfg.RetryAfter)
		return
	}
	rt.log.Debug("root token issued", "client", client, "token", id, "destination", tok.Destination, "type", tok.Type)
	body, _ := json.Marshal(RootResponse{Token: id, Conversation: id, Destination: tok.Destination, Type: tok.Type,
		PayloadDigest: digest, ExpiresAt: tok.ExpiresAt})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(append(body, '\n'))
}

// served says whether req names a destination and type of Destinations.
func (rt *Roots) served(req RootRequest) error {
	types, ok := rt.cfg.Destinations[req.Destination]
	switch {
	case !ok:
		return fmt.Errorf("conversations with %q are not started here", req.Destination)
	case len(types) > 0 && !slices.Contains(types, req.Type):
		return fmt.Errorf("%q signals of %q are not started here", req.Type, req.Destination)
	}
	return nil
}

func (rt *Roots) decode(w http.ResponseWriter, r *http.Request) (RootRequest, baton.Digest, time.Duration, error) {
	var req RootRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRootRequestBytes))
	if err != nil {
		return req, baton.Digest{}, 0, fmt.Errorf("body: %w", err)
	}
	// Keys exactly as named and once each: a proxy that reads the first
	// "destination", or only the lowercase one, must see what is issued.
	if err := strictjson.Check(body); err != nil {
		return req, baton.Digest{}, 0, fmt.Errorf("body: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, baton.Digest{}, 0, fmt.Errorf("body: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, baton.Digest{}, 0, errors.New("body: data after the JSON object")
	}
	if err := (baton.Emit{Destination: req.Destination, Type: req.Type}).Validate(); err != nil {
		return req, baton.Digest{}, 0, err
	}
	digest := baton.DigestOf(nil)
	if req.PayloadDigest != "" {
		if err := digest.UnmarshalText([]byte(req.PayloadDigest)); err != nil || !lowerHex(req.PayloadDigest) {
			return req, baton.Digest{}, 0, errors.New("payload_digest must be 64 lowercase hex digits")
		}
	}
	ttl := rt.cfg.DefaultTTL
	switch {
	case req.TTLSeconds < 0:
		return req, baton.Digest{}, 0, errors.New("ttl_seconds must not be negative")
	case req.TTLSeconds > int64(rt.cfg.MaxTTL/time.Second):
		return req, baton.Digest{}, 0, fmt.Errorf("ttl_seconds exceeds the maximum of %d", int64(rt.cfg.MaxTTL/time.Second))
	case req.TTLSeconds > 0:
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	return req, digest, ttl, nil
}

// RateLimiter is a Limiter with a token bucket per client
// (golang.org/x/time/rate). It keeps at most maxClients buckets: a full
// bucket is dropped when room is needed, which loses nothing, since a new
// bucket starts full.
type RateLimiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	mu      sync.Mutex
	clients map[string]*rate.Limiter
}

// maxClients bounds the buckets a RateLimiter keeps.
const maxClients = 10000

var _ Limiter = (*RateLimiter)(nil)

// NewRateLimiter allows each client perSecond requests on average and
// burst at once.
func NewRateLimiter(perSecond float64, burst int) *RateLimiter {
	return &RateLimiter{limit: rate.Limit(perSecond), burst: burst, now: time.Now, clients: make(map[string]*rate.Limiter)}
}

// Allow implements Limiter.
func (l *RateLimiter) Allow(client string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	lim, ok := l.clients[client]
	if !ok {
		if len(l.clients) >= maxClients {
			for c, b := range l.clients {
				if b.TokensAt(now) >= float64(l.burst) {
					delete(l.clients, c)
				}
			}
		}
		if len(l.clients) >= maxClients {
			return false, time.Second // every bucket is busy: shed load
		}
		lim = rate.NewLimiter(l.limit, l.burst)
		l.clients[client] = lim
	}
	res := lim.ReserveN(now, 1)
	if !res.OK() {
		return false, time.Second
	}
	if wait := res.DelayFrom(now); wait > 0 {
		res.CancelAt(now)
		return false, wait
	}
	return true, 0
}
