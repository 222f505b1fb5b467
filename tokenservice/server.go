package tokenservice

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// server is the handler that New returns. It holds no state of its own
// beyond its configuration: every decision is the token store's.
type server struct {
	cfg     Config
	tokens  store.TokenStore
	batch   store.TokenBatcher // tokens' own, or one operation after another
	log     *slog.Logger
	systems []*registered
	byName  map[string]*registered
	mux     *http.ServeMux
	health  *storeHealth
	probe   writeProbe
	// probeTokens is Config.ProbeTokens, watched as tokens is.
	probeTokens store.TokenStore
}

// ConversationHeader names the conversation of the token a request names
// (GET /v1/tokens/{id}, its claim, a transition's consumed token), where
// the caller knows it: the signal's. It is optional; a token store split
// by conversation then asks that part first (store.WithConversation), and
// the others only if it does not have the token.
const ConversationHeader = "Baton-Conversation"

// ConversationsHeader is ConversationHeader for a batch (POST
// /v1/tokens/read, POST /v1/transitions/batch): the conversations of its
// items' tokens, comma-separated in the items' order, an entry empty where
// not known. Hints too: they change no answer. A header, not a field of
// the body, so that a client may send it to a service that does not know
// it (which ignores it), where an unknown field would be refused.
const ConversationsHeader = "Baton-Conversations"

// route is one API route. Public routes need no credentials.
type route struct {
	method, path string
	public       bool
	handle       func(s *server, w http.ResponseWriter, r *http.Request, caller *registered)
}

// routes is every route the service serves; openapi.yaml documents
// exactly these (a test checks it).
var routes = []route{
	{"POST", "/v1/roots", false, (*server).issueRoot},
	{"POST", "/v1/transitions", false, (*server).transition},
	{"POST", "/v1/transitions/batch", false, (*server).transitionBatch},
	{"GET", "/v1/tokens/{id}", false, (*server).getToken},
	{"POST", "/v1/tokens/read", false, (*server).readTokens},
	{"POST", "/v1/tokens/{id}/claim", false, (*server).claimRoot},
	{"GET", "/v1/conversations/{id}/tokens", false, (*server).listByConversation},
	{"GET", "/v1/destinations/{name}/tokens", false, (*server).listByDestination},
	{"POST", "/v1/expirations", false, (*server).expireRoots},
	{"GET", "/v1/openapi.yaml", true, (*server).openAPI},
	{"GET", "/healthz", true, (*server).healthz},
}

// New validates cfg and returns the token service's HTTP handler.
func New(cfg Config) (http.Handler, error) {
	systems, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	health := newStoreHealth(cfg.Logger, cfg.MeterProvider)
	s := &server{cfg: cfg, tokens: watchedTokens{cfg.Tokens, health}, batch: watchedBatch{store.BatcherOf(cfg.Tokens), health},
		log: cfg.Logger, systems: systems, byName: make(map[string]*registered), mux: http.NewServeMux(), health: health,
		probeTokens: watchedTokens{cfg.ProbeTokens, health}}
	if cfg.ProbeTokens == nil {
		s.probeTokens = s.tokens
	}
	for _, sys := range systems {
		s.byName[sys.Name] = sys
	}
	for _, rt := range routes {
		s.mux.Handle(rt.method+" "+rt.path, s.wrap(rt))
	}
	return s, nil
}

// ServeHTTP answers requests that match no route with problem documents
// too (404 or 405 with Allow), rather than the mux's plain text.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if _, pattern := s.mux.Handler(r); pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, p := s.mux.Handler(probe); p != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) == 0 {
		writeProblem(w, problem(ProblemNoRoute, "no route for %s", r.URL.Path))
		return
	}
	for _, m := range allowed {
		w.Header().Add("Allow", m)
	}
	writeProblem(w, problem(ProblemMethod, "%s %s: allowed methods are %v", r.Method, r.URL.Path, allowed))
}

// wrap authenticates the caller of a non-public route and logs the request
// (never its credentials).
func (s *server) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		var caller *registered
		if !rt.public {
			var p *Problem
			if caller, p = s.authenticate(r); p != nil {
				s.log.Info("request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "reason", p.Detail)
				writeProblem(rec, p)
				return
			}
		}
		w.Header().Set("Cache-Control", "no-store")
		if v := r.Header.Values(ConversationHeader); len(v) > 0 {
			conversation, err := baton.ParseTokenID(v[0])
			if len(v) > 1 || err != nil {
				writeProblem(rec, problem(ProblemInvalid, "%s must be one conversation id of 32 lowercase hex digits", ConversationHeader))
				return
			}
			r = r.WithContext(store.WithConversation(r.Context(), conversation))
		}
		rt.handle(s, rec, r, caller)
		name := ""
		if caller != nil {
			name = caller.Name
		}
		s.log.Debug("request", "method", r.Method, "route", rt.path, "system", name, "status", rec.status,
			"duration", time.Since(started))
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *server) issueRoot(w http.ResponseWriter, r *http.Request, caller *registered) {
	if !caller.IssueRoots {
		writeProblem(w, problem(ProblemForbidden, "system %q may not issue root tokens", caller.Name))
		return
	}
	body, p := s.readBody(w, r)
	if p != nil {
		writeProblem(w, p)
		return
	}
	root, err := decodeRoot(body)
	if err != nil {
		writeProblem(w, problem(ProblemInvalid, "%v", err))
		return
	}
	if !caller.mayIssueRootFor(root.Destination) {
		writeProblem(w, problem(ProblemForbidden, "system %q may not issue roots for %q (root_destinations)", caller.Name, root.Destination))
		return
	}
	root.CreatedAt = s.now()
	if root.Destination == AnyDestination {
		writeProblem(w, problem(ProblemInvalid, "destination %q is the wildcard of systems' destinations, no system's own", AnyDestination))
		return
	}
	tok, err := s.tokens.Issue(r.Context(), root)
	if err != nil {
		s.writeStoreError(w, "issue", baton.TokenID{}, err)
		return
	}
	w.Header().Set("Location", "/v1/tokens/"+tok.ID.String())
	writeJSON(w, http.StatusCreated, EncodeToken(tok))
}

// claimRoot makes a live root that has not expired stop expiring, for the
// token's destination only (store.TokenStore.ClaimRoot): a participant
// claims an expiring root after it admitted the signal and before it
// commits the activity. The service's clock decides whether the root
// expired. Claiming a token that does not expire, or was claimed, changes
// nothing and answers it as it is.
func (s *server) claimRoot(w http.ResponseWriter, r *http.Request, caller *registered) {
	id, err := parseID("token id", r.PathValue("id"), true)
	if err != nil {
		writeProblem(w, problem(ProblemInvalid, "%v", err))
		return
	}
	if p := noQuery(r); p != nil {
		writeProblem(w, p)
		return
	}
	if r.ContentLength > 0 {
		writeProblem(w, problem(ProblemInvalid, "this route takes no body"))
		return
	}
	tok, err := s.tokens.Get(r.Context(), id)
	if err != nil {
		s.writeStoreError(w, "claim: read", id, err)
		return
	}
	if !caller.mayConsume(tok.Destination) {
		writeProblem(w, withToken(problem(ProblemNotYourToken, "token %s is addressed to %q; system %q may not claim it", id, tok.Destination, caller.Name), id))
		return
	}
	claimed, err := s.tokens.ClaimRoot(boundTo(r.Context(), tok), id, s.now())
	if err != nil {
		s.writeStoreError(w, "claim", id, err)
		return
	}
	writeJSON(w, http.StatusOK, EncodeToken(claimed))
}

// transition consumes a token and creates its children, for the token's
// destination only. The token is read first to check its destination and
// conversation; a token's destination and conversation never change, so
// the check holds for the transition that follows.
func (s *server) transition(w http.ResponseWriter, r *http.Request, caller *registered) {
	body, p := s.readBody(w, r)
	if p != nil {
		writeProblem(w, p)
		return
	}
	t, err := decodeTransition(body)
	if err != nil {
		writeProblem(w, problem(ProblemInvalid, "%v", err))
		return
	}
	tok, err := s.tokens.Get(r.Context(), t.Consume)
	res, decided := s.admitTransition(caller, t, tok, err)
	if !decided {
		stampCreation(t.Create, s.now())
		consumed, err := s.tokens.Transition(boundTo(r.Context(), tok), t.Consume, t.Create)
		res = s.transitionResult(t.Consume, consumed, err)
	}
	if res.Problem != nil {
		writeProblem(w, res.Problem)
		return
	}
	writeJSON(w, http.StatusOK, TransitionResponse{Consumed: *res.Consumed})
}

// boundTo is ctx for the write of tok, which the caller was authorized
// for: a store split by conversation writes it in its conversation's part
// only, where a copy of its id that a caller planted in another part
// (ids are unique within a part) cannot be reached instead.
func boundTo(ctx context.Context, tok baton.Token) context.Context {
	return store.BindConversations(store.WithConversation(ctx, tok.Conversation))
}

// admitTransition checks t before it runs, given the read of the token it
// consumes (tok, or the read's error). If t may run, it returns decided
// false. Otherwise it returns t's result without running it: not consumed
// for a token that is not live, or the problem that refuses it.
func (s *server) admitTransition(caller *registered, t store.TokenTransition, tok baton.Token, readErr error) (res TransitionResult, decided bool) {
	switch {
	case errors.Is(readErr, store.ErrNotFound):
		// Consumed already, never issued, or forged: a duplicate.
		consumed := false
		return TransitionResult{Consumed: &consumed}, true
	case readErr != nil:
		// The transition did not run, whatever the read's error was.
		return TransitionResult{Problem: s.storeProblem("transition: read", t.Consume, fmt.Errorf("%w: %w", store.ErrNotApplied, readErr))}, true
	case !caller.mayConsume(tok.Destination):
		return TransitionResult{Problem: withToken(problem(ProblemNotYourToken, "token %s is addressed to %q; system %q may not consume it", t.Consume, tok.Destination, caller.Name), t.Consume)}, true
	}
	for i, c := range t.Create {
		if c.Destination == AnyDestination {
			return TransitionResult{Problem: withToken(problem(ProblemInvalid, "create[%d] (token %s): destination %q is the wildcard of systems' destinations, no system's own", i, c.ID, AnyDestination), t.Consume)}, true
		}
		if c.Conversation != tok.Conversation || c.Causation != tok.ID {
			return TransitionResult{Problem: withToken(problem(ProblemNotAChild, "create[%d] (token %s) must have conversation %s and causation %s, the consumed token's", i, c.ID, tok.Conversation, tok.ID), t.Consume)}, true
		}
	}
	return TransitionResult{}, false
}

// transitionResult is the result of a transition that the store ran:
// consumed, or its error's problem.
func (s *server) transitionResult(consume baton.TokenID, consumed bool, err error) TransitionResult {
	if err != nil {
		return TransitionResult{Problem: s.storeProblem("transition", consume, err)}
	}
	return TransitionResult{Consumed: &consumed}
}

// stampCreation sets now, the service's time, as the creation time of the
// children that have none. A child's creation time is its participant's
// (when the activity emitting it committed), or the service's if it sent
// none. It is shown, never used for a decision: expiry, the only time that
// decides anything, applies to roots, whose times are the service's.
func stampCreation(children []baton.Token, now time.Time) {
	for i := range children {
		if children[i].CreatedAt.IsZero() {
			children[i].CreatedAt = now
		}
	}
}

// getToken answers the token's destination and observers; a token that is
// not live is 404 for every registered system.
func (s *server) getToken(w http.ResponseWriter, r *http.Request, caller *registered) {
	id, err := parseID("token id", r.PathValue("id"), true)
	if err != nil {
		writeProblem(w, problem(ProblemInvalid, "%v", err))
		return
	}
	if p := noQuery(r); p != nil {
		writeProblem(w, p)
		return
	}
	tok, err := s.tokens.Get(r.Context(), id)
	res := s.readResult(caller, id, tok, err)
	if res.Problem != nil {
		writeProblem(w, res.Problem)
		return
	}
	writeJSON(w, http.StatusOK, res.Token)
}

// readResult is the answer to reading token id, given the store's read of
// it (tok, or the read's error).
func (s *server) readResult(caller *registered, id baton.TokenID, tok baton.Token, err error) TokenReadResult {
	if err != nil {
		return TokenReadResult{Problem: s.storeProblem("get", id, err)}
	}
	if !caller.Observe && !caller.mayConsume(tok.Destination) {
		return TokenReadResult{Problem: withToken(problem(ProblemNotYourToken, "token %s is addressed to %q; system %q may not read it", id, tok.Destination, caller.Name), id)}
	}
	j := EncodeToken(tok)
	return TokenReadResult{Token: &j}
}

func (s *server) listByConversation(w http.ResponseWriter, r *http.Request, caller *registered) {
	if !caller.Observe {
		writeProblem(w, problem(ProblemForbidden, "system %q may not list conversations (it needs observe)", caller.Name))
		return
	}
	conversation, err := parseID("conversation id", r.PathValue("id"), true)
	if err != nil {
		writeProblem(w, problem(ProblemInvalid, "%v", err))
		return
	}
	page, p := parsePage(r.URL.Query())
	if p != nil {
		writeProblem(w, p)
		return
	}
	tokens, err := s.tokens.ListByConversation(r.Context(), conversation, page)
	if err != nil {
		s.writeStoreError(w, "list conversation", baton.TokenID{}, err)
		return
	}
	writeJSON(w, http.StatusOK, tokenList(tokens, page))
}

func (s *server) listByDestination(w http.ResponseWriter, r *http.Request, caller *registered) {
	destination := r.PathValue("name")
	if err := (baton.Emit{Destination: destination, Type: "list"}).Validate(); err != nil {
		writeProblem(w, problem(ProblemInvalid, "%v", err))
		return
	}
	if !caller.Observe && !caller.mayConsume(destination) {
		writeProblem(w, problem(ProblemForbidden, "system %q may not list the tokens of %q", caller.Name, destination))
		return
	}
	page, p := parsePage(r.URL.Query())
	if p != nil {
		writeProblem(w, p)
		return
	}
	tokens, err := s.tokens.ListByDestination(r.Context(), destination, page)
	if err != nil {
		s.writeStoreError(w, "list destination", baton.TokenID{}, err)
		return
	}
	writeJSON(w, http.StatusOK, tokenList(tokens, page))
}

func (s *server) expireRoots(w http.ResponseWriter, r *http.Request, caller *registered) {
	if !caller.ExpireRoots {
		writeProblem(w, problem(ProblemForbidden, "system %q may not expire root tokens", caller.Name))
		return
	}
	body, p := s.readBody(w, r)
	if p != nil {
		writeProblem(w, p)
		return
	}
	before, limit, err := decodeExpiration(body)
	if err != nil {
		writeProblem(w, problem(ProblemInvalid, "%v", err))
		return
	}
	n, err := s.tokens.ExpireRoots(r.Context(), before, limit)
	if err != nil {
		s.writeStoreError(w, "expire roots", baton.TokenID{}, err)
		return
	}
	writeJSON(w, http.StatusOK, ExpirationResponse{Expired: n})
}

func (s *server) openAPI(w http.ResponseWriter, _ *http.Request, _ *registered) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(openAPIDocument)
}

func (s *server) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Microsecond) }

// readBody reads a JSON request body of at most MaxBodyBytes.
func (s *server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *Problem) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, problem(ProblemMediaType, "the body must be application/json")
	}
	if p := noQuery(r); p != nil {
		return nil, p
	}
	limit := s.cfg.MaxBodyBytes
	if r.ContentLength > limit {
		return nil, problem(ProblemTooLarge, "the body has %d bytes; the limit is %d", r.ContentLength, limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, problem(ProblemTooLarge, "the body exceeds the limit of %d bytes", limit)
	case err != nil:
		return nil, problem(ProblemInvalid, "reading the body: %v", err)
	}
	return body, nil
}

// writeStoreError answers a store error with its problem (storeProblem).
func (s *server) writeStoreError(w http.ResponseWriter, op string, id baton.TokenID, err error) {
	writeProblem(w, s.storeProblem(op, id, err))
}

// storeProblem is the problem of a store error, with the status that keeps
// its meaning: not applied (400, 404, 409, 410, 503) or outcome unknown
// (500).
func (s *server) storeProblem(op string, id baton.TokenID, err error) *Problem {
	var p *Problem
	switch {
	case errors.Is(err, store.ErrInvalid):
		p = problem(ProblemInvalid, "%v", err)
	case errors.Is(err, store.ErrNotFound):
		p = problem(ProblemNotFound, "token %s is not live", id)
	case errors.Is(err, store.ErrExists):
		p = problem(ProblemExists, "%v", err)
	case errors.Is(err, store.ErrExpired):
		p = problem(ProblemExpired, "token %s expired before it was claimed", id)
	case errors.Is(err, store.ErrNotApplied), errors.Is(err, store.ErrClosed), errors.Is(err, store.ErrConflict):
		// The store's health logs an outage once, not per request.
		s.log.Debug("token store refused an operation", "op", op, "token", id, "err", err)
		p = problem(ProblemNotApplied, "%s: the token store is unavailable; nothing was applied", op)
	default:
		s.log.Debug("token store failed; outcome unknown", "op", op, "token", id, "err", err)
		p = problem(ProblemOutcomeUnknown, "%s: the token store failed and the outcome is unknown; retrying is safe", op)
	}
	if !id.IsZero() {
		p = withToken(p, id)
	}
	return p
}

func withToken(p *Problem, id baton.TokenID) *Problem {
	p.Token = id.String()
	return p
}

// noQuery refuses query parameters on routes that take none.
func noQuery(r *http.Request) *Problem {
	if r.URL.RawQuery != "" {
		return problem(ProblemInvalid, "this route takes no query parameters")
	}
	return nil
}

// parsePage reads ?after=<token id>&limit=<n>. A missing or zero limit is
// store.DefaultPageLimit; one above store.MaxPageLimit is capped.
func parsePage(q url.Values) (store.Page, *Problem) {
	var page store.Page
	for name, values := range q {
		if len(values) != 1 {
			return page, problem(ProblemInvalid, "query parameter %q given %d times", name, len(values))
		}
		switch name {
		case "after":
			if values[0] == "" {
				continue
			}
			id, err := parseID("after", values[0], false)
			if err != nil {
				return page, problem(ProblemInvalid, "%v", err)
			}
			page.After = id
		case "limit":
			if values[0] == "" {
				continue
			}
			n, err := strconv.Atoi(values[0])
			if err != nil || n < 0 {
				return page, problem(ProblemInvalid, "limit %q must be a number from 0 to %d", values[0], store.MaxPageLimit)
			}
			page.Limit = min(n, store.MaxPageLimit)
		default:
			return page, problem(ProblemInvalid, "unknown query parameter %q (after and limit are known)", name)
		}
	}
	return page, nil
}

func tokenList(tokens []baton.Token, page store.Page) TokenList {
	list := TokenList{Tokens: make([]Token, len(tokens))}
	for i, t := range tokens {
		list.Tokens[i] = EncodeToken(t)
	}
	if len(tokens) > 0 && len(tokens) == page.Size() {
		list.NextAfter = tokens[len(tokens)-1].ID.String()
	}
	return list
}
