package httpsignal_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/httpsignal"
	"github.com/batonhq/baton/internal/testclock"
	"github.com/batonhq/baton/store"
)

// ledger is the state of a test entity: how often each signal was applied.
// It is committed with the activity, so it counts committed runs only.
type ledger struct {
	Applied map[string]int `json:"applied"`
	Names   []string       `json:"names,omitempty"`
}

func (l *ledger) record(sig baton.Signal) {
	if l.Applied == nil {
		l.Applied = map[string]int{}
	}
	l.Applied[sig.ID.String()]++
}

func byConversation(sig baton.Signal) (string, error) { return "c-" + sig.Conversation.String(), nil }

func newClock() *testclock.Clock { return testclock.At(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)) }

// faultyTokens fails chosen calls of a token store before they apply.
type faultyTokens struct {
	store.TokenStore
	failGets        atomic.Int64 // fail this many Gets
	failTransitions atomic.Int64 // fail this many Transitions
}

var errInjected = fmt.Errorf("%w: injected fault", store.ErrNotApplied)

func (f *faultyTokens) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	if f.failGets.Add(-1) >= 0 {
		return baton.Token{}, errInjected
	}
	return f.TokenStore.Get(ctx, id)
}

func (f *faultyTokens) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	if f.failTransitions.Add(-1) >= 0 {
		return false, errInjected
	}
	return f.TokenStore.Transition(ctx, consume, create)
}

// system is one destination: an engine with its own entity store.
type system struct {
	e        *engine.Engine
	entities *memory.EntityStore
}

func newSystem(t *testing.T, dest string, tokens store.TokenStore, dispatch engine.Publisher, now func() time.Time) *system {
	t.Helper()
	if dispatch == nil {
		dispatch = engine.Routes{}
	}
	entities := memory.NewEntityStore()
	e, err := engine.New(engine.Config{
		Destination: dest,
		Tokens:      tokens,
		Entities:    entities,
		Dispatch:    dispatch,
		Now:         now,
		RetryDelay:  time.Millisecond,
		SweepAfter:  time.Millisecond,
	})
	must(t, err)
	return &system{e: e, entities: entities}
}

// applied sums, over all entities, how often each signal was applied.
func (s *system) applied(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, key := range s.entities.Keys() {
		ent, err := s.entities.Load(t.Context(), key)
		must(t, err)
		if len(ent.Outbox) != 0 {
			t.Errorf("entity %s still has %d outbox entries", key, len(ent.Outbox))
		}
		var l ledger
		must(t, json.Unmarshal(ent.State, &l))
		for id, n := range l.Applied {
			out[id] += n
		}
	}
	return out
}

// registerCharge registers the "charge" activity: it records the signal
// and replies "charged <payload>".
func registerCharge(t *testing.T, e *engine.Engine) {
	t.Helper()
	must(t, engine.Register(e, engine.Activity[ledger]{Type: "charge", Entity: byConversation,
		Handle: func(ctx context.Context, sig baton.Signal, l *ledger) (engine.Effects, error) {
			l.record(sig)
			return engine.Effects{Reply: []byte("charged " + string(sig.Payload))}, nil
		}}))
}

// send posts sig with the Baton headers; edit may change the request.
func send(t *testing.T, url string, sig baton.Signal, edit func(*http.Request)) (*http.Response, []byte) {
	t.Helper()
	resp, body, err := trySend(t.Context(), url, sig, edit)
	must(t, err)
	return resp, body
}

// trySend is send for goroutines other than the test's, which must not
// call t.Fatal.
func trySend(ctx context.Context, url string, sig baton.Signal, edit func(*http.Request)) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return nil, nil, err
	}
	if err := httpsignal.EncodeRequest(req, sig); err != nil {
		return nil, nil, err
	}
	if edit != nil {
		edit(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// wantProblem checks that an answer is a problem document of the given
// status and type.
func wantProblem(t *testing.T, resp *http.Response, body []byte, status int, typ string) httpsignal.Problem {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != httpsignal.ProblemContentType {
		t.Fatalf("Content-Type %q, want %q", ct, httpsignal.ProblemContentType)
	}
	var p httpsignal.Problem
	must(t, json.Unmarshal(body, &p))
	if p.Type != typ || p.Status != status || p.Title == "" {
		t.Fatalf("problem %+v, want type %s and status %d", p, typ, status)
	}
	return p
}

func wantReply(t *testing.T, resp *http.Response, body []byte, outcome, reply string) {
	t.Helper()
	if resp.StatusCode != http.StatusOK || resp.Header.Get(httpsignal.HeaderOutcome) != outcome || string(body) != reply {
		t.Fatalf("got %d %s=%q body %q, want 200 %q body %q", resp.StatusCode, httpsignal.HeaderOutcome,
			resp.Header.Get(httpsignal.HeaderOutcome), body, outcome, reply)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// noSleep records the delays a Transport asks for and returns at once.
type noSleep struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (n *noSleep) Sleep(ctx context.Context, d time.Duration) error {
	n.mu.Lock()
	n.delays = append(n.delays, d)
	n.mu.Unlock()
	return ctx.Err()
}
