package httpsignal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/engine"
)

// Concurrency says what a copy of a signal gets when it arrives while the
// same Server is still processing another copy of that signal.
type Concurrency int

const (
	// WaitForFirst makes the copy wait for the first copy and answers it
	// with the same outcome: the first copy's reply, marked "replayed", or
	// the same error answer. A double click on a form then shows the
	// person the result of the submission that counted.
	WaitForFirst Concurrency = iota
	// RejectInProgress answers the copy at once with 409 and problem type
	// in-progress and a Retry-After, as the IETF Idempotency-Key draft does
	// for concurrent requests.
	RejectInProgress
)

// Options configure a Server. The zero value is ready to use.
type Options struct {
	// PassUnsigned forwards requests without a Baton-Token header to the
	// handler that Wrap wraps (health checks, ordinary endpoints). Zero:
	// such requests are answered 400, so a client that forgot the headers
	// never reaches business code without deduplication.
	PassUnsigned bool
	// MaxBody bounds the payload. Zero: baton.MaxPayloadBytes, which is
	// also the upper bound.
	MaxBody int64
	// ProcessTimeout bounds one Process call. Processing runs detached from
	// the request's context, so a client that hangs up (a lost response)
	// does not cut the protocol short half way. Zero: 30s.
	ProcessTimeout time.Duration
	// RetryAfter is the delay that 503 and in-progress answers ask for.
	// Zero: 1s.
	RetryAfter time.Duration
	// Concurrency chooses the answer to a copy that arrives while another
	// copy is processed by this Server. Zero: WaitForFirst.
	Concurrency Concurrency
	// ReplyContentType is the Content-Type of replies. Zero:
	// application/octet-stream.
	ReplyContentType string
	// Logger receives structured logs. Nil discards them.
	Logger *slog.Logger
}

func (o *Options) validate() error {
	switch {
	case o.MaxBody < 0 || o.ProcessTimeout < 0 || o.RetryAfter < 0:
		return errors.New("httpsignal: options: MaxBody, ProcessTimeout and RetryAfter must not be negative")
	case o.Concurrency != WaitForFirst && o.Concurrency != RejectInProgress:
		return fmt.Errorf("httpsignal: options: unknown Concurrency %d", o.Concurrency)
	}
	return nil
}

func (o *Options) setDefaults() {
	if o.MaxBody == 0 || o.MaxBody > baton.MaxPayloadBytes {
		o.MaxBody = baton.MaxPayloadBytes
	}
	if o.ProcessTimeout == 0 {
		o.ProcessTimeout = 30 * time.Second
	}
	if o.RetryAfter == 0 {
		o.RetryAfter = time.Second
	}
	if o.ReplyContentType == "" {
		o.ReplyContentType = "application/octet-stream"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Server answers signals sent over HTTP by running them through an engine.
// It is an http.Handler for signal requests only; Wrap makes it middleware
// in front of other handlers; Form serves HTML form posts.
type Server struct {
	e    *engine.Engine
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	inflight map[copyKey]*call
	waiting  atomic.Int64 // copies waiting for a first copy; tests watch it
}

// copyKey identifies a signal by everything its token binds: two requests
// are copies of one signal only if all of it matches. Keyed by the token id
// alone, a copy with another payload, type or conversation would get the
// genuine copy's reply, or hand the genuine copy its own refusal.
type copyKey struct {
	id, conversation, causation baton.TokenID
	destination, typ            string
	digest                      baton.Digest
}

func copyKeyOf(sig baton.Signal) copyKey {
	return copyKey{id: sig.ID, conversation: sig.Conversation, causation: sig.Causation,
		destination: sig.Destination, typ: sig.Type, digest: sig.Digest()}
}

// call is one Process call that later copies of the same signal can wait
// for.
type call struct {
	done chan struct{}
	res  engine.Result
	err  error
}

var _ http.Handler = (*Server)(nil)

// errAbandoned is what waiters see if the first copy's Process panicked.
var errAbandoned = errors.New("httpsignal: processing of the first copy was abandoned")

// NewServer returns a Server for engine e.
func NewServer(e *engine.Engine, opts Options) (*Server, error) {
	if e == nil {
		return nil, errors.New("httpsignal: nil engine")
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	return &Server{
		e:        e,
		opts:     opts,
		log:      opts.Logger.With("destination", e.Destination()),
		inflight: make(map[copyKey]*call),
	}, nil
}

// Middleware returns NewServer(e, opts).Wrap. It panics if opts are
// invalid, as http.ServeMux.Handle does for a bad pattern: that is a
// programming error found at start-up.
func Middleware(e *engine.Engine, opts Options) func(http.Handler) http.Handler {
	s, err := NewServer(e, opts)
	if err != nil {
		panic(err)
	}
	return s.Wrap
}

// Wrap returns a handler that processes signal requests and, if
// Options.PassUnsigned is set, forwards requests without a Baton-Token
// header to next.
func (s *Server) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.opts.PassUnsigned && next != nil && len(r.Header.Values(HeaderToken)) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		s.ServeHTTP(w, r)
	})
}

// ServeHTTP processes the signal that r carries and writes the answer; see
// the package documentation for every answer.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeProblem(w, &Problem{Type: ProblemMethod, Title: "Method Not Allowed", Status: http.StatusMethodNotAllowed,
			Detail: "a signal is sent with POST"}, 0)
		return
	}
	// The writer-aware limit makes the server close the connection instead
	// of draining an oversized body.
	r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBody)
	sig, err := DecodeRequest(r, s.opts.MaxBody)
	if err != nil {
		s.write(w, decodeAnswer(err, r.Header.Get(HeaderToken)))
		return
	}
	s.write(w, s.run(r.Context(), sig))
}

// answer is what the Server tells the sender of a signal.
type answer struct {
	status     int
	outcome    string // HeaderOutcome, if any
	reply      []byte
	problem    *Problem // nil on success
	retryAfter time.Duration
	token      string
}

func decodeAnswer(err error, token string) answer {
	if len(token) != 32 || !lowerHex(token) {
		token = "" // never echo unvalidated input into a header
	}
	if errors.Is(err, ErrTooLarge) {
		return problemAnswer(http.StatusRequestEntityTooLarge, ProblemTooLarge, "Payload Too Large", err.Error(), token)
	}
	return problemAnswer(http.StatusBadRequest, ProblemMalformed, "Malformed Signal", err.Error(), token)
}

func problemAnswer(status int, typ, title, detail, token string) answer {
	return answer{status: status, token: token, problem: &Problem{Type: typ, Title: title, Status: status, Detail: detail, Token: token}}
}

func (s *Server) write(w http.ResponseWriter, a answer) {
	h := w.Header()
	if a.token != "" {
		h.Set(HeaderToken, a.token)
	}
	if a.outcome != "" {
		h.Set(HeaderOutcome, a.outcome)
	}
	if a.problem != nil {
		writeProblem(w, a.problem, a.retryAfter)
		return
	}
	h.Set("Content-Type", s.opts.ReplyContentType)
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(a.reply)))
	w.WriteHeader(a.status)
	_, _ = w.Write(a.reply)
}

// run processes sig, or waits for the copy of it that this Server is
// already processing, and returns the answer. A request that reuses the
// token id with anything else changed is not a copy: it is processed on
// its own, and the engine refuses it.
func (s *Server) run(ctx context.Context, sig baton.Signal) answer {
	key := copyKeyOf(sig)
	s.mu.Lock()
	if c, busy := s.inflight[key]; busy {
		s.mu.Unlock()
		if s.opts.Concurrency == RejectInProgress {
			a := problemAnswer(http.StatusConflict, ProblemInProgress, "In Progress",
				"another copy of this signal is being processed; retry after the delay", sig.ID.String())
			a.outcome, a.retryAfter = OutcomeInProgress, s.opts.RetryAfter
			return a
		}
		s.waiting.Add(1)
		defer s.waiting.Add(-1)
		select {
		case <-c.done:
			return s.answer(sig, c.res, c.err, true)
		case <-ctx.Done():
			return s.answer(sig, engine.Result{}, ctx.Err(), true)
		}
	}
	c := &call{done: make(chan struct{}), err: errAbandoned}
	s.inflight[key] = c
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.inflight, key)
		s.mu.Unlock()
		close(c.done)
	}()
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ProcessTimeout)
	defer cancel()
	c.res, c.err = s.e.Process(pctx, sig)
	return s.answer(sig, c.res, c.err, false)
}

// answer maps what Process returned to an HTTP answer. shared says the
// result came from another copy's Process call.
func (s *Server) answer(sig baton.Signal, res engine.Result, err error, shared bool) answer {
	token := sig.ID.String()
	log := s.log.With("token", token, "conversation", sig.Conversation.String(), "type", sig.Type)
	committed := res.Outcome == engine.Applied || res.Outcome == engine.Completed
	switch {
	case committed && err != nil && !engine.IsPermanent(err):
		// The activity is committed but steps 5 to 7 are not done. A retry
		// finishes them (or the sweeper does) and gets the reply.
		log.Warn("activity applied, finishing failed; the client should retry", "err", err)
		a := problemAnswer(http.StatusServiceUnavailable, ProblemUnavailable, "Service Unavailable",
			"the activity was applied but its pending steps are not finished; retry to receive its reply", token)
		a.retryAfter = s.opts.RetryAfter
		return a
	case committed:
		if err != nil {
			// Retrying cannot fix it and the signal itself was processed:
			// the failure belongs to an emitted signal, which stays in the
			// outbox for the sweeper and an operator.
			log.Error("activity applied, but finishing failed permanently", "err", err)
		}
		outcome := OutcomeApplied
		if shared || res.Outcome == engine.Completed {
			outcome = OutcomeReplayed
		}
		return answer{status: http.StatusOK, outcome: outcome, reply: res.Reply, token: token}
	case err == nil && res.Outcome == engine.Duplicate:
		log.Debug("duplicate")
		a := problemAnswer(http.StatusConflict, ProblemAlreadyProcessed, "Already Processed",
			"this signal's token is not live: the signal was processed before (or never issued); it counts as delivered", token)
		a.outcome = OutcomeDuplicate
		return a
	case err == nil:
		err = fmt.Errorf("httpsignal: unexpected outcome %v", res.Outcome)
	}
	if !engine.IsPermanent(err) {
		log.Warn("signal not processed; the client should retry", "err", err)
		a := problemAnswer(http.StatusServiceUnavailable, ProblemUnavailable, "Service Unavailable",
			"the signal could not be processed now; retry after the delay", token)
		a.retryAfter = s.opts.RetryAfter
		return a
	}
	// The full error goes to the log only: it may name the engine's entity
	// keys, the live token's type and conversation, or whatever the
	// activity's error says, none of it the sender's to know.
	log.Info("signal refused", "err", err)
	for _, r := range refusals {
		if errors.Is(err, r.err) {
			return problemAnswer(r.status, r.typ, r.title, r.detail, token)
		}
	}
	if refusal, ok := errors.AsType[*Refusal](err); ok {
		return problemAnswer(http.StatusUnprocessableEntity, ProblemRejected, "Rejected", refusal.Reason, token)
	}
	return problemAnswer(http.StatusUnprocessableEntity, ProblemRejected, "Rejected",
		"the signal was refused for good: it does not match its token, or its activity refused it", token)
}

// refusals answer the permanent errors of Process that have a problem type
// of their own, each with a fixed detail; any other is rejected.
// Refusal is an activity's refusal whose reason is meant for the sender
// (a form's "quantity must be 1 to 10"): the 422 answer's detail is
// Reason. Every other error of an activity stays in the receiver's log,
// as it may name what the sender must not see. Refuse makes one.
type Refusal struct{ Reason string }

func (r *Refusal) Error() string { return r.Reason }

// Refuse returns a permanent error (engine.Permanent) whose reason, as
// fmt.Sprintf formats it, the sender reads in the 422 answer. Put nothing
// in it that the sender may not know.
func Refuse(format string, args ...any) error {
	return engine.Permanent(&Refusal{Reason: fmt.Sprintf(format, args...)})
}

var refusals = []struct {
	err                error
	status             int
	typ, title, detail string
}{
	{engine.ErrMisaddressed, http.StatusForbidden, ProblemMisaddressed, "Misaddressed",
		"the signal or its token is addressed to another destination"},
	{engine.ErrExpired, http.StatusGone, ProblemExpired, "Expired", "the root token expired unused"},
	{engine.ErrDigestMismatch, http.StatusUnprocessableEntity, ProblemDigestMismatch, "Digest Mismatch",
		"the payload does not match the token's digest"},
	{engine.ErrUnknownType, http.StatusNotFound, ProblemUnknownType, "Unknown Type",
		"this destination has no activity for the signal's type"},
	{engine.ErrUnroutable, http.StatusUnprocessableEntity, ProblemUnroutable, "Unroutable", "the signal maps to no entity"},
}
