package httpsignal_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/httpsignal"
	"github.com/batonhq/baton/internal/syncio"
	"github.com/batonhq/baton/internal/testclock"
	"github.com/batonhq/baton/store"
)

// billing is a destination served over HTTP, with a fault-injecting token
// store and a settable clock.
type billing struct {
	*system
	tokens *faultyTokens
	clock  *testclock.Clock
	server *httpsignal.Server
	url    string
}

func newBilling(t *testing.T, opts httpsignal.Options) *billing {
	t.Helper()
	b := &billing{tokens: &faultyTokens{TokenStore: memory.NewTokenStore()}, clock: newClock()}
	b.system = newSystem(t, "billing", b.tokens, nil, b.clock.Now)
	registerCharge(t, b.e)
	must(t, engine.Register(b.e, engine.Activity[ledger]{Type: "lost", Entity: func(baton.Signal) (string, error) {
		return "", errors.New("no entity for this signal")
	}, Handle: func(context.Context, baton.Signal, *ledger) (engine.Effects, error) { return engine.Effects{}, nil }}))
	var err error
	b.server, err = httpsignal.NewServer(b.e, opts)
	must(t, err)
	srv := httptest.NewServer(b.server)
	t.Cleanup(srv.Close)
	b.url = srv.URL
	return b
}

func (b *billing) root(t *testing.T, dest, typ, payload string, ttl time.Duration) baton.Signal {
	t.Helper()
	sig, err := b.e.IssueRoot(t.Context(), baton.Emit{Destination: dest, Type: typ, Payload: []byte(payload)}, ttl)
	must(t, err)
	return sig
}

func TestAppliedThenAlreadyProcessed(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{})
	sig := b.root(t, "billing", "charge", "42", 0)

	resp, body := send(t, b.url, sig, nil)
	wantReply(t, resp, body, httpsignal.OutcomeApplied, "charged 42")
	if got := resp.Header.Get(httpsignal.HeaderToken); got != sig.ID.String() {
		t.Errorf("answer names token %q, want %s", got, sig.ID)
	}

	resp, body = send(t, b.url, sig, nil)
	p := wantProblem(t, resp, body, http.StatusConflict, httpsignal.ProblemAlreadyProcessed)
	if resp.Header.Get(httpsignal.HeaderOutcome) != httpsignal.OutcomeDuplicate || p.Token != sig.ID.String() {
		t.Errorf("duplicate answer: outcome %q, problem %+v", resp.Header.Get(httpsignal.HeaderOutcome), p)
	}
	if n := b.applied(t)[sig.ID.String()]; n != 1 {
		t.Errorf("applied %d times, want 1", n)
	}
	if n := b.tokens.TokenStore.(*memory.TokenStore).Len(); n != 0 {
		t.Errorf("%d tokens left", n)
	}
}

// A retry while the outbox entry (and so the reply) is stored gets the
// same reply, marked replayed.
func TestRetryWhileEntryStoredGetsReplay(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{RetryAfter: 3 * time.Second})
	sig := b.root(t, "billing", "charge", "7", 0)
	b.tokens.failTransitions.Store(1) // committed, then step 5 fails

	resp, body := send(t, b.url, sig, nil)
	wantProblem(t, resp, body, http.StatusServiceUnavailable, httpsignal.ProblemUnavailable)
	if got := resp.Header.Get("Retry-After"); got != "3" {
		t.Errorf("Retry-After %q, want 3", got)
	}
	resp, body = send(t, b.url, sig, nil)
	wantReply(t, resp, body, httpsignal.OutcomeReplayed, "charged 7")
	resp, body = send(t, b.url, sig, nil)
	wantProblem(t, resp, body, http.StatusConflict, httpsignal.ProblemAlreadyProcessed)
	if n := b.applied(t)[sig.ID.String()]; n != 1 {
		t.Errorf("applied %d times, want 1", n)
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{MaxBody: 16})
	live := b.root(t, "billing", "charge", "1", 0)
	setHeader := func(name, value string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set(name, value) }
	}
	cases := []struct {
		name   string
		sig    baton.Signal
		edit   func(*http.Request)
		status int
		typ    string
	}{
		{"no token header", live, func(r *http.Request) { r.Header.Del(httpsignal.HeaderToken) }, 400, httpsignal.ProblemMalformed},
		{"malformed token", live, setHeader(httpsignal.HeaderToken, "not-a-token"), 400, httpsignal.ProblemMalformed},
		{"uppercase token", live, setHeader(httpsignal.HeaderToken, strings.ToUpper(live.ID.String())), 400, httpsignal.ProblemMalformed},
		{"two token headers", live, func(r *http.Request) { r.Header.Add(httpsignal.HeaderToken, live.ID.String()) }, 400, httpsignal.ProblemMalformed},
		{"no conversation", live, func(r *http.Request) { r.Header.Del(httpsignal.HeaderConversation) }, 400, httpsignal.ProblemMalformed},
		{"no type", live, func(r *http.Request) { r.Header.Del(httpsignal.HeaderType) }, 400, httpsignal.ProblemMalformed},
		{"idempotency key of another token", live, setHeader(httpsignal.HeaderIdempotencyKey, `"`+baton.NewTokenID().String()+`"`), 400, httpsignal.ProblemMalformed},
		{"payload differs from the digest", withPayload(live, "2"), nil, 422, httpsignal.ProblemDigestMismatch},
		{"body over the limit", withPayload(live, strings.Repeat("x", 17)), nil, 413, httpsignal.ProblemTooLarge},
		{"token for another destination", b.root(t, "shipping", "charge", "", 0), setHeader(httpsignal.HeaderDestination, "billing"), 403, httpsignal.ProblemMisaddressed},
		{"signal for another destination", b.root(t, "shipping", "charge", "", 0), nil, 403, httpsignal.ProblemMisaddressed},
		{"unknown type", b.root(t, "billing", "refund", "", 0), nil, 404, httpsignal.ProblemUnknownType},
		{"unroutable", b.root(t, "billing", "lost", "", 0), nil, 422, httpsignal.ProblemUnroutable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := send(t, b.url, c.sig, c.edit)
			wantProblem(t, resp, body, c.status, c.typ)
		})
	}
	// None of the refusals consumed the live token: it still works.
	resp, body := send(t, b.url, live, nil)
	wantReply(t, resp, body, httpsignal.OutcomeApplied, "charged 1")

	t.Run("GET", func(t *testing.T) {
		resp, err := http.Get(b.url)
		must(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		wantProblem(t, resp, body, http.StatusMethodNotAllowed, httpsignal.ProblemMethod)
		if resp.Header.Get("Allow") != http.MethodPost {
			t.Errorf("Allow %q", resp.Header.Get("Allow"))
		}
	})
}

// A refusal tells the sender its problem type and a fixed detail, and the
// receiver's log the whole error with the token id. The detail was the
// error's text: an activity's own words (here a password) and the engine's
// entity key, or, for a signal that does not match its token, the live
// token's type and conversation (found in review).
func TestRefusalsKeepTheErrorFromTheSender(t *testing.T) {
	t.Parallel()
	var log syncio.Buffer
	b := newBilling(t, httpsignal.Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	must(t, engine.Register(b.e, engine.Activity[ledger]{Type: "fail",
		Entity: func(sig baton.Signal) (string, error) { return "acct-" + sig.Conversation.String(), nil },
		Handle: func(context.Context, baton.Signal, *ledger) (engine.Effects, error) {
			return engine.Effects{}, engine.Permanent(errors.New("db password=hunter2 refused"))
		}}))
	failing := b.root(t, "billing", "fail", "", 0)
	// A live child token, and a request that knows only its id.
	parent := b.root(t, "billing", "charge", "", 0)
	child := baton.Token{ID: baton.NewTokenID(), Conversation: parent.ID, Causation: parent.ID, Destination: "billing",
		Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: b.clock.Now()}
	_, err := b.tokens.Transition(t.Context(), parent.ID, []baton.Token{child})
	must(t, err)
	guess := baton.Signal{ID: child.ID, Conversation: baton.NewTokenID(), Causation: baton.NewTokenID(), Destination: "billing", Type: "fail"}

	for _, c := range []struct {
		name    string
		sig     baton.Signal
		secrets []string // in the log, never in the answer
	}{
		{"an activity failing for good", failing, []string{"hunter2", "acct-" + failing.Conversation.String()}},
		{"a signal that does not match its token", guess, []string{parent.ID.String(), "charge"}},
	} {
		resp, body := send(t, b.url, c.sig, nil)
		p := wantProblem(t, resp, body, http.StatusUnprocessableEntity, httpsignal.ProblemRejected)
		if p.Token != c.sig.ID.String() || p.Detail == "" {
			t.Errorf("%s: problem %+v, want the token id and a detail", c.name, p)
		}
		var logged string
		for line := range strings.Lines(log.String()) {
			if strings.Contains(line, "token="+c.sig.ID.String()) {
				logged = line
			}
		}
		for _, secret := range c.secrets {
			if strings.Contains(string(body), secret) {
				t.Errorf("%s: the answer tells the sender %s: %s", c.name, secret, body)
			}
			if !strings.Contains(logged, secret) {
				t.Errorf("%s: the log line of the token lacks %s: %q", c.name, secret, logged)
			}
		}
	}
}

// A refusal the activity means for the sender (Refuse) is the answer's
// detail, wrapped however the activity wrapped it; nothing else of the
// error is.
func TestARefusalForTheSenderIsTheDetail(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{})
	must(t, engine.Register(b.e, engine.Activity[ledger]{Type: "order",
		Entity: func(sig baton.Signal) (string, error) { return "acct-" + sig.Conversation.String(), nil },
		Handle: func(context.Context, baton.Signal, *ledger) (engine.Effects, error) {
			return engine.Effects{}, fmt.Errorf("table orders: %w", httpsignal.Refuse("quantity must be 1 to %d", 10))
		}}))
	sig := b.root(t, "billing", "order", "", 0)
	resp, body := send(t, b.url, sig, nil)
	p := wantProblem(t, resp, body, http.StatusUnprocessableEntity, httpsignal.ProblemRejected)
	if p.Detail != "quantity must be 1 to 10" {
		t.Errorf("detail %q; want the refusal's reason alone", p.Detail)
	}
}

func withPayload(sig baton.Signal, payload string) baton.Signal {
	sig.Payload = []byte(payload)
	return sig
}

func TestExpiredRootIsGone(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{})
	sig := b.root(t, "billing", "charge", "", time.Minute)
	b.clock.Advance(time.Minute)
	resp, body := send(t, b.url, sig, nil)
	wantProblem(t, resp, body, http.StatusGone, httpsignal.ProblemExpired)
	if n := len(b.applied(t)); n != 0 {
		t.Errorf("an expired root was applied")
	}
}

func TestStoreUnavailableAsksToRetry(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{})
	sig := b.root(t, "billing", "charge", "5", 0)
	b.tokens.failGets.Store(1)
	resp, body := send(t, b.url, sig, nil)
	wantProblem(t, resp, body, http.StatusServiceUnavailable, httpsignal.ProblemUnavailable)
	if resp.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q, want 1", resp.Header.Get("Retry-After"))
	}
	resp, body = send(t, b.url, sig, nil)
	wantReply(t, resp, body, httpsignal.OutcomeApplied, "charged 5")
}

func TestUnsignedRequestsPassOrAreRefused(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{})
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "next") })
	for _, pass := range []bool{false, true} {
		srv := httptest.NewServer(httpsignal.Middleware(b.e, httpsignal.Options{PassUnsigned: pass})(next))
		t.Cleanup(srv.Close)
		resp, err := http.Post(srv.URL, "text/plain", strings.NewReader("hello"))
		must(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if pass && (resp.StatusCode != 200 || string(body) != "next") {
			t.Errorf("PassUnsigned: got %d %q, want the next handler", resp.StatusCode, body)
		}
		if !pass {
			wantProblem(t, resp, body, http.StatusBadRequest, httpsignal.ProblemMalformed)
		}
		// A signal is processed either way.
		sig := b.root(t, "billing", "charge", "x", 0)
		resp, body = send(t, srv.URL, sig, nil)
		wantReply(t, resp, body, httpsignal.OutcomeApplied, "charged x")
	}
}

// blocking registers "slow", whose first run waits for release.
func blocking(t *testing.T, e *engine.Engine) (entered chan struct{}, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	must(t, engine.Register(e, engine.Activity[ledger]{Type: "slow", Entity: byConversation,
		Handle: func(ctx context.Context, sig baton.Signal, l *ledger) (engine.Effects, error) {
			once.Do(func() { close(entered); <-release })
			l.record(sig)
			return engine.Effects{Reply: []byte("slow done")}, nil
		}}))
	return entered, release
}

// sent is the result of an asynchronous send.
type sent struct {
	resp *http.Response
	body []byte
	err  error
}

func (s sent) must(t *testing.T) sent {
	t.Helper()
	must(t, s.err)
	return s
}

func goSend(ctx context.Context, url string, sig baton.Signal) chan sent {
	ch := make(chan sent, 1)
	go func() {
		resp, body, err := trySend(ctx, url, sig, nil)
		ch <- sent{resp, body, err}
	}()
	return ch
}

func TestConcurrentCopyWaitsForFirst(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{})
	entered, release := blocking(t, b.e)
	sig := b.root(t, "billing", "slow", "", 0)

	first, second := goSend(t.Context(), b.url, sig), make(chan sent, 1)
	<-entered
	second = goSend(t.Context(), b.url, sig)
	waitFor(t, "the copy to wait", func() bool { return b.server.Waiting() == 1 })
	close(release)
	r1, r2 := (<-first).must(t), (<-second).must(t)
	wantReply(t, r1.resp, r1.body, httpsignal.OutcomeApplied, "slow done")
	wantReply(t, r2.resp, r2.body, httpsignal.OutcomeReplayed, "slow done")
	if n := b.applied(t)[sig.ID.String()]; n != 1 {
		t.Errorf("applied %d times, want 1", n)
	}
}

func TestConcurrentCopyRejectedInProgress(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{Concurrency: httpsignal.RejectInProgress, RetryAfter: 2 * time.Second})
	entered, release := blocking(t, b.e)
	sig := b.root(t, "billing", "slow", "", 0)
	first := goSend(t.Context(), b.url, sig)
	<-entered
	resp, body := send(t, b.url, sig, nil)
	wantProblem(t, resp, body, http.StatusConflict, httpsignal.ProblemInProgress)
	if resp.Header.Get(httpsignal.HeaderOutcome) != httpsignal.OutcomeInProgress || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("in-progress answer headers %v", resp.Header)
	}
	close(release)
	if r := (<-first).must(t); r.resp.StatusCode != http.StatusOK {
		t.Errorf("first copy got %d", r.resp.StatusCode)
	}
}

func TestInvalidOptionsAreRefused(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{})
	for _, opts := range []httpsignal.Options{{MaxBody: -1}, {ProcessTimeout: -1}, {Concurrency: 7}} {
		if _, err := httpsignal.NewServer(b.e, opts); err == nil {
			t.Errorf("NewServer accepted %+v", opts)
		}
	}
	if _, err := httpsignal.NewServer(nil, httpsignal.Options{}); err == nil {
		t.Error("NewServer accepted a nil engine")
	}
}

// When an emitted signal is refused downstream, the incoming signal was
// still processed: the answer is its reply, and the refused child stays in
// the outbox for the sweeper and an operator.
func TestAppliedWithRefusedChildStillAnswersTheReply(t *testing.T) {
	t.Parallel()
	b := newBilling(t, httpsignal.Options{})
	must(t, engine.Register(b.e, engine.Activity[ledger]{Type: "notify", Entity: byConversation,
		Handle: func(ctx context.Context, sig baton.Signal, l *ledger) (engine.Effects, error) {
			l.record(sig)
			return engine.Effects{Emit: []baton.Emit{{Destination: "nowhere", Type: "mail"}}, Reply: []byte("noted")}, nil
		}}))
	sig := b.root(t, "billing", "notify", "", 0)
	resp, body := send(t, b.url, sig, nil)
	wantReply(t, resp, body, httpsignal.OutcomeApplied, "noted")
	resp, body = send(t, b.url, sig, nil)
	wantReply(t, resp, body, httpsignal.OutcomeReplayed, "noted")
	ent, err := b.entities.Load(t.Context(), "c-"+sig.Conversation.String())
	must(t, err)
	var l ledger
	must(t, json.Unmarshal(ent.State, &l))
	if l.Applied[sig.ID.String()] != 1 || len(ent.Outbox) != 1 {
		t.Errorf("applied %d times with %d outbox entries, want 1 and 1", l.Applied[sig.ID.String()], len(ent.Outbox))
	}
}

// TestTamperedCopyIsNotACopy: requests that reuse a signal's token id with
// another payload, type or conversation are not copies of it. While the
// genuine copy is processed, they are refused on their own and never get
// its reply; and a tampered request that is itself in progress never hands
// the genuine copy its refusal. Before, the Server merged concurrent
// requests by token id alone.
func TestTamperedCopyIsNotACopy(t *testing.T) {
	t.Parallel()
	t.Run("while the genuine copy is processed", func(t *testing.T) {
		t.Parallel()
		b := newBilling(t, httpsignal.Options{})
		entered, release := blocking(t, b.e)
		sig := b.root(t, "billing", "slow", "7", 0)
		genuine := goSend(t.Context(), b.url, sig)
		<-entered

		payload, typ, conversation := sig, sig, sig
		payload.Payload = []byte("700")
		typ.Type = "charge"
		conversation.Conversation = baton.NewTokenID()
		for name, c := range map[string]struct {
			sig     baton.Signal
			problem string
		}{
			"another payload":      {payload, httpsignal.ProblemDigestMismatch},
			"another type":         {typ, httpsignal.ProblemRejected},
			"another conversation": {conversation, httpsignal.ProblemRejected},
		} {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			resp, body, err := trySend(ctx, b.url, c.sig, nil)
			cancel()
			if err != nil {
				t.Errorf("a request with %s got no answer while the genuine copy was processed: %v", name, err)
				continue
			}
			if resp.StatusCode == http.StatusOK {
				t.Errorf("a request with %s got the genuine copy's answer: %d %q", name, resp.StatusCode, body)
				continue
			}
			wantProblem(t, resp, body, http.StatusUnprocessableEntity, c.problem)
		}
		close(release)
		r := (<-genuine).must(t)
		wantReply(t, r.resp, r.body, httpsignal.OutcomeApplied, "slow done")
		if n := b.applied(t)[sig.ID.String()]; n != 1 {
			t.Errorf("applied %d times, want 1", n)
		}
	})
	t.Run("while a tampered request is processed", func(t *testing.T) {
		t.Parallel()
		tokens := &gatedTokens{TokenStore: memory.NewTokenStore(), entered: make(chan struct{}), release: make(chan struct{})}
		sys := newSystem(t, "billing", tokens, nil, newClock().Now)
		registerCharge(t, sys.e)
		server, err := httpsignal.NewServer(sys.e, httpsignal.Options{})
		must(t, err)
		srv := httptest.NewServer(server)
		t.Cleanup(srv.Close)
		sig, err := sys.e.IssueRoot(t.Context(), baton.Emit{Destination: "billing", Type: "charge", Payload: []byte("7")}, 0)
		must(t, err)

		tampered := sig
		tampered.Payload = []byte("700")
		first := goSend(t.Context(), srv.URL, tampered)
		<-tokens.entered // the tampered request waits in its token read
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		resp, body, err := trySend(ctx, srv.URL, sig, nil)
		cancel()
		close(tokens.release)
		if err != nil {
			t.Fatalf("the genuine copy got no answer while the tampered request was in progress: %v", err)
		}
		wantReply(t, resp, body, httpsignal.OutcomeApplied, "charged 7")
		r := (<-first).must(t)
		if r.resp.StatusCode == http.StatusOK {
			t.Errorf("the tampered request got %d %q", r.resp.StatusCode, r.body)
		}
		if n := sys.applied(t)[sig.ID.String()]; n != 1 {
			t.Errorf("applied %d times, want 1", n)
		}
	})
}

// gatedTokens holds the first token read until release is closed.
type gatedTokens struct {
	store.TokenStore
	once             sync.Once
	entered, release chan struct{}
}

func (g *gatedTokens) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.entered)
		<-g.release
	}
	return g.TokenStore.Get(ctx, id)
}
