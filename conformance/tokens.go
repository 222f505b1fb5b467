package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/tokenservice"
)

// fault is how the kit's token service misbehaves towards the participant.
type fault int32

const (
	healthy fault = iota
	// storeDown: every call is 503 not-applied, as when the service's store
	// is unreachable.
	storeDown
	// keyRefused: every call is 401, as when the participant's key was
	// rotated away.
	keyRefused
	// transitionsFail: transitions are 503 not-applied; reads and claims
	// work, so the participant commits its activity and then cannot
	// consume the token.
	transitionsFail
	// transitionAnswersLost: transitions are applied, and answered 500
	// outcome-unknown, as when the answer is lost on its way.
	transitionAnswersLost
)

// tokenService is the kit's token service: the real API over an in-memory
// store, behind a switch of faults.
type tokenService struct {
	tokens *memory.TokenStore
	api    http.Handler
	mode   atomic.Int32
	server *http.Server
	url    string
}

// startTokenService serves the kit's token service at addr, with the
// participant registered as destination with key.
func startTokenService(addr, destination, key string) (*tokenService, error) {
	ts := &tokenService{tokens: memory.NewTokenStore()}
	api, err := tokenservice.New(tokenservice.Config{Tokens: ts.tokens, Systems: []tokenservice.System{
		{Name: destination, KeySHA256: tokenservice.HashAPIKey(key)},
	}})
	if err != nil {
		return nil, fmt.Errorf("conformance: token service: %w", err)
	}
	ts.api = api
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("conformance: the kit's token service cannot listen at %s: %w", addr, err)
	}
	ts.url = "http://" + ln.Addr().String()
	ts.server = &http.Server{Handler: ts, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = ts.server.Serve(ln) }()
	return ts, nil
}

func (ts *tokenService) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return ts.server.Shutdown(ctx)
}

// inject sets the fault the service shows from now on; healthy ends it.
func (ts *tokenService) inject(f fault) { ts.mode.Store(int32(f)) }

func (ts *tokenService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	transition := r.Method == http.MethodPost && r.URL.Path == "/v1/transitions"
	switch fault(ts.mode.Load()) {
	case storeDown:
		writeTokenProblem(w, http.StatusServiceUnavailable, tokenservice.ProblemNotApplied, "the kit's token service plays a store outage")
		return
	case keyRefused:
		w.Header().Set("WWW-Authenticate", `Bearer realm="baton"`)
		writeTokenProblem(w, http.StatusUnauthorized, tokenservice.ProblemUnauthorized, "the kit's token service plays a refused key")
		return
	case transitionsFail:
		if transition {
			writeTokenProblem(w, http.StatusServiceUnavailable, tokenservice.ProblemNotApplied, "the kit's token service plays a store outage for transitions")
			return
		}
	case transitionAnswersLost:
		if transition {
			ts.api.ServeHTTP(discardAnswer{header: http.Header{}}, r)
			writeTokenProblem(w, http.StatusInternalServerError, tokenservice.ProblemOutcomeUnknown, "the kit's token service applied the transition and plays a lost answer")
			return
		}
	}
	ts.api.ServeHTTP(w, r)
}

// writeTokenProblem answers as the token service does when it fails.
func writeTokenProblem(w http.ResponseWriter, status int, typ, detail string) {
	h := w.Header()
	h.Set("Content-Type", tokenservice.ProblemContentType)
	h.Set("Cache-Control", "no-store")
	if status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(tokenservice.Problem{Type: typ, Title: http.StatusText(status), Status: status, Detail: detail})
}

// discardAnswer is a ResponseWriter that drops what it is given: the
// answer of a transition whose loss the kit plays.
type discardAnswer struct{ header http.Header }

func (d discardAnswer) Header() http.Header         { return d.header }
func (d discardAnswer) Write(b []byte) (int, error) { return len(b), nil }
func (d discardAnswer) WriteHeader(int)             {}
