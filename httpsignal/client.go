package httpsignal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/engine"
)

// TransportConfig configures a Transport. The zero value is ready to use.
type TransportConfig struct {
	// Base sends each attempt. Nil: http.DefaultTransport.
	Base http.RoundTripper
	// MaxAttempts bounds the attempts per request, the first included.
	// Zero: 5.
	MaxAttempts int
	// BaseDelay is the first backoff limit; it doubles per attempt, and the
	// delay is drawn uniformly below it (full jitter). Zero: 100ms.
	BaseDelay time.Duration
	// MaxDelay caps the backoff limit. Zero: 5s.
	MaxDelay time.Duration
	// MaxRetryAfter is the longest Retry-After the Transport waits for; an
	// answer that asks for longer is returned to the caller. Zero: 1m.
	MaxRetryAfter time.Duration
	// Sleep waits for d or until ctx ends. Nil: a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Logger receives structured logs. Nil discards them.
	Logger *slog.Logger
}

// Transport is an http.RoundTripper for signal requests (those with a
// Baton-Token header, as EncodeRequest makes them). It sends a clone of the
// request, with an Idempotency-Key if the request has none, and retries it
// with exponential backoff and full jitter after network errors, 5xx, 408,
// 429 and in-progress answers, honouring Retry-After and the request's
// context, up to MaxAttempts. Retrying is safe because the token makes the
// request idempotent. It returns the last answer as it is; Publisher
// interprets answers. Requests without a Baton-Token header are sent once,
// unchanged: the Transport cannot know whether they may be repeated.
type Transport struct {
	cfg TransportConfig
	log *slog.Logger

	mu  sync.Mutex
	rng *rand.Rand
}

var _ http.RoundTripper = (*Transport)(nil)

// NewTransport validates cfg and returns a Transport.
func NewTransport(cfg TransportConfig) (*Transport, error) {
	if cfg.MaxAttempts < 0 || cfg.BaseDelay < 0 || cfg.MaxDelay < 0 || cfg.MaxRetryAfter < 0 {
		return nil, errors.New("httpsignal: transport config: counts and delays must not be negative")
	}
	if cfg.Base == nil {
		cfg.Base = http.DefaultTransport
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.BaseDelay == 0 {
		cfg.BaseDelay = 100 * time.Millisecond
	}
	if cfg.MaxDelay == 0 {
		cfg.MaxDelay = 5 * time.Second
	}
	if cfg.MaxRetryAfter == 0 {
		cfg.MaxRetryAfter = time.Minute
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Transport{cfg: cfg, log: cfg.Logger, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}, nil
}

// RoundTrip implements http.RoundTripper. It never changes req.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if len(req.Header.Values(HeaderToken)) == 0 {
		return t.cfg.Base.RoundTrip(req)
	}
	ctx := req.Context()
	body, err := replayable(req)
	if err != nil {
		return nil, err
	}
	key := ""
	if len(req.Header.Values(HeaderIdempotencyKey)) == 0 {
		key = `"` + req.Header.Get(HeaderToken) + `"`
	}
	for attempt := 1; ; attempt++ {
		clone := req.Clone(ctx)
		if key != "" {
			clone.Header.Set(HeaderIdempotencyKey, key)
		}
		if clone.Body, err = body(); err != nil {
			return nil, err
		}
		resp, err := t.cfg.Base.RoundTrip(clone)
		wait, retry := t.retry(ctx, resp, err, attempt)
		if !retry || attempt >= t.cfg.MaxAttempts {
			return resp, err
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxProblemBytes))
			_ = resp.Body.Close()
		}
		t.log.Debug("retrying signal request", "token", req.Header.Get(HeaderToken), "attempt", attempt, "wait", wait,
			"status", statusOf(resp), "err", err)
		if err := t.cfg.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// inProgress recognises the 409 answer to a copy that arrives while
// another copy is processed: by its Baton-Outcome header or, behind a proxy
// that strips unknown headers, by its problem type. For the latter it reads
// the problem document and puts it back, so the caller still reads it.
func inProgress(resp *http.Response) bool {
	if resp.StatusCode != http.StatusConflict {
		return false
	}
	if outcome := resp.Header.Get(HeaderOutcome); outcome != "" {
		return outcome == OutcomeInProgress
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != ProblemContentType || resp.Body == nil {
		return false
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxProblemBytes))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
	var p Problem
	return json.Unmarshal(body, &p) == nil && p.Type == ProblemInProgress
}

func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// retry decides whether an attempt's result is worth another attempt, and
// after how long.
func (t *Transport) retry(ctx context.Context, resp *http.Response, err error, attempt int) (time.Duration, bool) {
	if err != nil {
		return t.backoff(attempt), ctx.Err() == nil
	}
	switch {
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests,
		inProgress(resp):
	default:
		return 0, false
	}
	if d, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		return d, d <= t.cfg.MaxRetryAfter
	}
	return t.backoff(attempt), true
}

// backoff draws a delay below BaseDelay*2^(attempt-1), capped at MaxDelay.
func (t *Transport) backoff(attempt int) time.Duration {
	limit := min(t.cfg.BaseDelay<<min(attempt-1, 30), t.cfg.MaxDelay)
	if limit <= 0 {
		limit = t.cfg.MaxDelay
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return time.Duration(t.rng.Int64N(int64(limit) + 1))
}

// retryAfter parses a Retry-After value: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s >= 0 {
		return time.Duration(min(s, 1<<31)) * time.Second, true
	}
	if at, err := http.ParseTime(v); err == nil {
		return max(at.Sub(now), 0), true
	}
	return 0, false
}

// replayable returns a function that yields a fresh copy of req's body for
// each attempt. It closes req.Body, as a RoundTripper must.
func replayable(req *http.Request) (func() (io.ReadCloser, error), error) {
	if req.Body == nil || req.Body == http.NoBody {
		return func() (io.ReadCloser, error) { return req.Body, nil }, nil
	}
	if req.GetBody != nil {
		_ = req.Body.Close()
		return req.GetBody, nil
	}
	payload, err := io.ReadAll(io.LimitReader(req.Body, baton.MaxPayloadBytes+1))
	_ = req.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("httpsignal: read request body: %w", err)
	}
	if len(payload) > baton.MaxPayloadBytes {
		return nil, fmt.Errorf("httpsignal: request body exceeds %d bytes", baton.MaxPayloadBytes)
	}
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(payload)), nil }, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Endpoints maps a destination to the absolute http or https URL at
	// which its Server is mounted. Required.
	Endpoints map[string]string
	// Transport sends the requests. Nil: a Transport with the zero
	// TransportConfig.
	Transport http.RoundTripper
	// MaxReplyBytes bounds the reply Call reads. Zero:
	// baton.MaxPayloadBytes.
	MaxReplyBytes int64
	// Logger receives structured logs. Nil discards them.
	Logger *slog.Logger
}

// Publisher sends signals over HTTP. It is an engine.Publisher: Publish
// returns nil once the destination applied the signal or answered that its
// token is already consumed, an error wrapping engine.ErrRejected when the
// destination refused the signal for good (any other 4xx, a redirect, no
// endpoint), and any other error when it is worth trying again later.
type Publisher struct {
	endpoints map[string]*url.URL
	rt        http.RoundTripper
	maxReply  int64
	log       *slog.Logger
}

var _ engine.Publisher = (*Publisher)(nil)

// NewPublisher validates cfg and returns a Publisher.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("httpsignal: publisher config: Endpoints is required")
	}
	if cfg.MaxReplyBytes < 0 {
		return nil, errors.New("httpsignal: publisher config: MaxReplyBytes must not be negative")
	}
	p := &Publisher{endpoints: make(map[string]*url.URL, len(cfg.Endpoints)), rt: cfg.Transport, maxReply: cfg.MaxReplyBytes, log: cfg.Logger}
	for dest, raw := range cfg.Endpoints {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("httpsignal: publisher config: endpoint of %q must be an absolute http(s) URL, got %q", dest, raw)
		}
		p.endpoints[dest] = u
	}
	if p.rt == nil {
		t, err := NewTransport(TransportConfig{Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		p.rt = t
	}
	if p.maxReply == 0 {
		p.maxReply = baton.MaxPayloadBytes
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	return p, nil
}

// Publish implements engine.Publisher.
func (p *Publisher) Publish(ctx context.Context, sig baton.Signal) error {
	_, _, err := p.Call(ctx, sig)
	return err
}

// Call sends sig and waits for the answer. On success it returns the reply
// and the Baton-Outcome: OutcomeApplied or OutcomeReplayed with the
// activity's reply, or OutcomeDuplicate with no reply when the token was
// already consumed (the signal counts as delivered). A destination that
// does not speak baton answers without the header: the outcome is then "".
// Errors are those of Publish; a *StatusError carries the problem document.
func (p *Publisher) Call(ctx context.Context, sig baton.Signal) ([]byte, string, error) {
	endpoint, ok := p.endpoints[sig.Destination]
	if !ok {
		return nil, "", fmt.Errorf("%w: httpsignal: no endpoint for destination %q", engine.ErrRejected, sig.Destination)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint.String(), nil)
	if err != nil {
		return nil, "", fmt.Errorf("%w: httpsignal: %w", engine.ErrRejected, err)
	}
	if err := EncodeRequest(req, sig); err != nil {
		return nil, "", fmt.Errorf("%w: httpsignal: %w", engine.ErrRejected, err)
	}
	resp, err := p.rt.RoundTrip(req)
	if err != nil {
		return nil, "", fmt.Errorf("httpsignal: send %s to %q: %w", sig.ID, sig.Destination, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxProblemBytes))
		_ = resp.Body.Close()
	}()
	outcome := resp.Header.Get(HeaderOutcome)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		reply, err := io.ReadAll(io.LimitReader(resp.Body, p.maxReply+1))
		switch {
		case err != nil:
			// The signal was processed; only the reply was lost.
			return nil, outcome, fmt.Errorf("httpsignal: read reply of %s: %w", sig.ID, err)
		case int64(len(reply)) > p.maxReply:
			return nil, outcome, fmt.Errorf("httpsignal: reply of %s exceeds %d bytes", sig.ID, p.maxReply)
		}
		return reply, outcome, nil
	}
	problem := readProblem(resp)
	if alreadyProcessed(resp, problem) {
		p.log.Debug("signal already processed", "token", sig.ID, "destination", sig.Destination)
		return nil, OutcomeDuplicate, nil
	}
	return nil, outcome, &StatusError{Destination: sig.Destination, Token: sig.ID, Problem: problem, permanent: permanentStatus(resp, problem)}
}

// alreadyProcessed recognises the answer to a signal whose token is gone.
// The header alone suffices; the problem type covers a proxy that strips
// unknown headers.
func alreadyProcessed(resp *http.Response, p *Problem) bool {
	return resp.StatusCode == http.StatusConflict &&
		(resp.Header.Get(HeaderOutcome) == OutcomeDuplicate || p.Type == ProblemAlreadyProcessed)
}

// permanentStatus reports whether an answer means the signal can never be
// delivered as it is: a 4xx other than those that ask to retry, or a
// redirect, which signals do not follow (the endpoint is misconfigured).
func permanentStatus(resp *http.Response, p *Problem) bool {
	switch code := resp.StatusCode; {
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests,
		code == http.StatusConflict && (resp.Header.Get(HeaderOutcome) == OutcomeInProgress || p.Type == ProblemInProgress):
		return false
	case code >= 300 && code < 500:
		return true
	}
	return false
}

// StatusError is a destination's answer that was not a delivery. It wraps
// engine.ErrRejected when retrying cannot help.
type StatusError struct {
	Destination string
	Token       baton.TokenID
	Problem     *Problem
	permanent   bool
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("httpsignal: %q answered signal %s with %v", e.Destination, e.Token, e.Problem)
}

// Unwrap returns engine.ErrRejected for a permanent refusal.
func (e *StatusError) Unwrap() error {
	if e.permanent {
		return engine.ErrRejected
	}
	return nil
}
