package client_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/tokenservice/client"
)

// A batch larger than tokenservice.MaxBatch goes in requests of at most
// that many.
func TestBatchSplitsRequests(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	h, key, tokens := serviceHandler(t)
	var mu sync.Mutex
	requests := make(map[string]int) // by path
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests[r.URL.Path]++
		mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, key)

	const n = 2*tokenservice.MaxBatch + 1
	roots, ids := make([]baton.Token, n), make([]baton.TokenID, n)
	transitions := make([]store.TokenTransition, n)
	for i := range roots {
		r, err := tokens.Issue(ctx, root("orders"))
		if err != nil {
			t.Fatal(err)
		}
		kid := root("billing")
		kid.ID, kid.Conversation, kid.Causation = baton.NewTokenID(), r.Conversation, r.ID
		roots[i], ids[i], transitions[i] = r, r.ID, store.TokenTransition{Consume: r.ID, Create: []baton.Token{kid}}
	}
	// The zero id is answered without a request, as Get answers it.
	got, errs, err := c.GetTokens(ctx, append(ids, baton.TokenID{}, baton.NewTokenID()))
	if err != nil || len(got) != n+2 || len(errs) != n+2 {
		t.Fatalf("GetTokens of %d ids = %d tokens, %d errors, %v", n+2, len(got), len(errs), err)
	}
	for i, r := range roots {
		if errs[i] != nil || tokenservice.EncodeToken(got[i]) != tokenservice.EncodeToken(r) {
			t.Errorf("GetTokens: id %d = %+v, %v; want %+v", i, got[i], errs[i], r)
		}
	}
	for _, i := range []int{n, n + 1} {
		if !errors.Is(errs[i], store.ErrNotFound) {
			t.Errorf("GetTokens: id %d (not live) = %v, want store.ErrNotFound", i, errs[i])
		}
	}
	consumed, errs, err := c.TransitionTokens(ctx, transitions)
	if err != nil || len(consumed) != n || len(errs) != n {
		t.Fatalf("TransitionTokens of %d = %d results, %d errors, %v", n, len(consumed), len(errs), err)
	}
	for i := range transitions {
		if !consumed[i] || errs[i] != nil {
			t.Errorf("TransitionTokens: transition %d = %t, %v; want consumed", i, consumed[i], errs[i])
		}
	}
	if tokens.Len() != n {
		t.Errorf("the store holds %d tokens, want the %d children", tokens.Len(), n)
	}
	mu.Lock()
	defer mu.Unlock()
	if requests["/v1/tokens/read"] != 3 || requests["/v1/transitions/batch"] != 3 {
		t.Errorf("requests %v, want 3 reads and 3 batches of transitions", requests)
	}
}

// Each item of a batch fails with the error its single call would.
func TestBatchErrorMapping(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	billingKey, billingHash := tokenservice.NewAPIKey()
	url, opsKey, tokens := service(t, tokenservice.System{Name: "billing", KeySHA256: billingHash})
	ops, billing := newClient(t, url, opsKey), newClient(t, url, billingKey)
	orders, err := ops.Issue(ctx, root("orders"))
	if err != nil {
		t.Fatal(err)
	}
	parent, err := ops.Issue(ctx, root("orders"))
	if err != nil {
		t.Fatal(err)
	}
	var mine []baton.Token // billing's
	for range 2 {
		kid := root("billing")
		kid.ID, kid.Conversation, kid.Causation = baton.NewTokenID(), parent.Conversation, parent.ID
		mine = append(mine, kid)
	}
	if ok, err := ops.Transition(ctx, parent.ID, mine); err != nil || !ok {
		t.Fatal(ok, err)
	}
	stray := root("shipping")
	stray.ID, stray.Conversation, stray.Causation = baton.NewTokenID(), baton.NewTokenID(), mine[1].ID

	same := func(what string, got, want error, sentinels ...error) {
		t.Helper()
		var p *client.ProblemError
		if got == nil || want == nil || got.Error() != want.Error() || !errors.As(got, &p) {
			t.Errorf("%s: error %v, want %v as a *client.ProblemError", what, got, want)
		}
		for _, s := range sentinels {
			if !errors.Is(got, s) {
				t.Errorf("%s: error %v does not match %v", what, got, s)
			}
		}
	}
	absent := baton.NewTokenID()
	_, errs, err := billing.GetTokens(ctx, []baton.TokenID{orders.ID, mine[0].ID, absent})
	if err != nil || len(errs) != 3 {
		t.Fatalf("GetTokens = %v, %v", errs, err)
	}
	_, single := billing.Get(ctx, orders.ID)
	same("reading another destination's token", errs[0], single, client.ErrForbidden, store.ErrNotYours, store.ErrNotApplied)
	if errs[1] != nil {
		t.Errorf("reading its own token: %v", errs[1])
	}
	_, single = billing.Get(ctx, absent)
	same("reading an absent token", errs[2], single, store.ErrNotFound)

	consumed, errs, err := billing.TransitionTokens(ctx, []store.TokenTransition{
		{Consume: orders.ID}, {Consume: mine[1].ID, Create: []baton.Token{stray}}, {Consume: mine[0].ID},
	})
	if err != nil || len(errs) != 3 {
		t.Fatalf("TransitionTokens = %v, %v, %v", consumed, errs, err)
	}
	if !consumed[2] || errs[2] != nil {
		t.Errorf("consuming its own token = %t, %v", consumed[2], errs[2])
	}
	_, single = billing.Transition(ctx, orders.ID, nil)
	same("consuming another destination's token", errs[0], single, client.ErrForbidden, store.ErrNotYours, store.ErrNotApplied)
	_, single = billing.Transition(ctx, mine[1].ID, []baton.Token{stray})
	same("creating a token in another conversation", errs[1], single, client.ErrForbidden, store.ErrNotApplied)
	for _, id := range []baton.TokenID{orders.ID, mine[1].ID} {
		if _, err := tokens.Get(ctx, id); err != nil {
			t.Errorf("a refused transition consumed %s: %v", id, err)
		}
	}
}

// answer serves a fixed answer.
func answer(status int, contentType, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func problemAnswer(typ string, status int) http.HandlerFunc {
	return answer(status, tokenservice.ProblemContentType, `{"type":"`+typ+`","title":"t","status":0,"detail":"d"}`)
}

// A refused request is the whole call's error, as nothing was applied; a
// request whose outcome is unknown fails each of its transitions with an
// error of unknown outcome, never the whole call. Any failure of a read
// is the whole call's.
func TestBatchRequestFailures(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		answer http.HandlerFunc
		whole  error // the error of a refused call; nil: outcome unknown
	}{
		{"lost answer", func(w http.ResponseWriter, _ *http.Request) {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
		}, nil},
		{"500 without a type", answer(500, "text/html", "<h1>bad gateway</h1>"), nil},
		{"500 outcome unknown", problemAnswer(tokenservice.ProblemOutcomeUnknown, 500), nil},
		{"not JSON", answer(200, "application/json", `{"results":`), nil},
		{"too few results", answer(200, "application/json", `{"results":[{"consumed":true}]}`), nil},
		{"empty results", answer(200, "application/json", `{"results":[{},{}]}`), nil},
		{"503", problemAnswer(tokenservice.ProblemNotApplied, 503), store.ErrNotApplied},
		{"400", problemAnswer(tokenservice.ProblemInvalid, 400), store.ErrInvalid},
		{"401", problemAnswer(tokenservice.ProblemUnauthorized, 401), client.ErrUnauthorized},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(c.answer)
			t.Cleanup(srv.Close)
			tokens := newClient(t, srv.URL, "bk_key")
			batch := []store.TokenTransition{{Consume: baton.NewTokenID()}, {Consume: baton.NewTokenID()}}
			consumed, errs, err := tokens.TransitionTokens(t.Context(), batch)
			switch {
			case c.whole != nil:
				if !errors.Is(err, c.whole) || !store.NotApplied(err) || consumed != nil || errs != nil {
					t.Errorf("TransitionTokens = %v, %v, %v; want the whole call refused with %v", consumed, errs, err, c.whole)
				}
			case err != nil || len(errs) != len(batch):
				t.Errorf("TransitionTokens = %v, %v, %v; want an error of unknown outcome for each transition", consumed, errs, err)
			default:
				for i := range batch {
					if consumed[i] || errs[i] == nil || store.NotApplied(errs[i]) {
						t.Errorf("transition %d = %t, %v; want an error of unknown outcome", i, consumed[i], errs[i])
					}
				}
			}
			_, _, err = tokens.GetTokens(t.Context(), []baton.TokenID{batch[0].Consume, batch[1].Consume})
			if err == nil || errors.Is(err, store.ErrNotFound) {
				t.Errorf("GetTokens = %v, want an error of the whole call, not store.ErrNotFound", err)
			}
		})
	}
}

// A request after the first that fails fails its own transitions only:
// those of the requests before it were applied.
func TestTransitionTokensLaterRequestFails(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	h, key, tokens := serviceHandler(t)
	var batches atomic.Int32
	refuse := problemAnswer(tokenservice.ProblemNotApplied, 503)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/transitions/batch" && batches.Add(1) == 2 {
			refuse(w, r)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, key)
	const n = tokenservice.MaxBatch + 1
	batch := make([]store.TokenTransition, n)
	for i := range batch {
		r, err := tokens.Issue(ctx, root("orders"))
		if err != nil {
			t.Fatal(err)
		}
		batch[i].Consume = r.ID
	}
	consumed, errs, err := c.TransitionTokens(ctx, batch)
	if err != nil || len(errs) != n {
		t.Fatalf("TransitionTokens = %v, %v, %v; want an error for the last transition alone", consumed, errs, err)
	}
	for i := range n - 1 {
		if !consumed[i] || errs[i] != nil {
			t.Errorf("transition %d = %t, %v; want consumed", i, consumed[i], errs[i])
		}
	}
	if consumed[n-1] || !errors.Is(errs[n-1], store.ErrNotApplied) {
		t.Errorf("transition %d, of the refused request = %t, %v; want store.ErrNotApplied", n-1, consumed[n-1], errs[n-1])
	}
	if tokens.Len() != 1 {
		t.Errorf("the store holds %d tokens, want the last root", tokens.Len())
	}
}

// A batch whose request the service finds too large (413: nothing ran) is
// sent again in halves: eight transitions with many children each exceed
// the body limit together, and fit alone.
func TestBatchTooLargeIsSplit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	h, key, tokens := serviceHandler(t)
	var mu sync.Mutex
	var statuses []int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		mu.Lock()
		statuses = append(statuses, rec.status)
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, key)

	batch := make([]store.TokenTransition, 8)
	for i := range batch {
		r, err := tokens.Issue(ctx, root("orders"))
		if err != nil {
			t.Fatal(err)
		}
		batch[i].Consume = r.ID
		for range store.MaxTokensPerTransition {
			kid := root("billing")
			kid.ID, kid.Conversation, kid.Causation = baton.NewTokenID(), r.Conversation, r.ID
			batch[i].Create = append(batch[i].Create, kid)
		}
	}
	consumed, errs, err := c.TransitionTokens(ctx, batch)
	if err != nil {
		t.Fatalf("TransitionTokens = %v", err)
	}
	for i := range batch {
		if errs[i] != nil || !consumed[i] {
			t.Errorf("transition %d = %t, %v; want consumed", i, consumed[i], errs[i])
		}
		if _, err := tokens.Get(ctx, batch[i].Create[0].ID); err != nil {
			t.Errorf("transition %d: child not created: %v", i, err)
		}
	}
	if len(statuses) < 2 || statuses[0] != http.StatusRequestEntityTooLarge {
		t.Errorf("requests answered %v; want a 413 first, then the halves", statuses)
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

// The client sends the conversations it is given, in the
// Baton-Conversations header, and bodies of the fields every service
// knows: a service older than the hints (which refuses unknown fields in a
// body, and ignores unknown headers) serves its batches as before.
func TestBatchSendsConversations(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	h, key, tokens := serviceHandler(t)
	type sent struct{ path, conversations string }
	var mu sync.Mutex
	var requests []sent
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		// The bodies' shapes before the hints, decoded strictly.
		var shape any = &struct {
			IDs []string `json:"ids"`
		}{}
		if r.URL.Path == "/v1/transitions/batch" {
			shape = &struct {
				Transitions []struct {
					Consume string            `json:"consume"`
					Create  []json.RawMessage `json:"create"`
				} `json:"transitions"`
			}{}
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(shape); err != nil {
			t.Errorf("%s: a service without the hints would refuse %s: %v", r.URL.Path, body, err)
		}
		mu.Lock()
		requests = append(requests, sent{r.URL.Path, r.Header.Get(tokenservice.ConversationsHeader)})
		mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, key)
	a, err := tokens.Issue(ctx, root("billing"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := tokens.Issue(ctx, root("billing"))
	if err != nil {
		t.Fatal(err)
	}

	got, errs, err := c.GetTokensIn(ctx, []store.TokenLookup{{ID: a.ID, Conversation: a.Conversation}, {ID: b.ID}})
	if err != nil || errs[0] != nil || errs[1] != nil || got[0].ID != a.ID || got[1].ID != b.ID {
		t.Fatalf("GetTokensIn = %v, %v, %v", got, errs, err)
	}
	if _, _, err := c.GetTokens(ctx, []baton.TokenID{a.ID}); err != nil {
		t.Fatal(err)
	}
	consumed, errs, err := c.TransitionTokens(ctx, []store.TokenTransition{{Consume: a.ID}, {Consume: b.ID, Conversation: b.Conversation}})
	if err != nil || errs[0] != nil || errs[1] != nil || !consumed[0] || !consumed[1] {
		t.Fatalf("TransitionTokens = %v, %v, %v", consumed, errs, err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []sent{
		{"/v1/tokens/read", a.Conversation.String() + ","},
		{"/v1/tokens/read", ""},
		{"/v1/transitions/batch", "," + b.Conversation.String()},
	}
	if !slices.Equal(requests, want) {
		t.Errorf("sent %q, want %q", requests, want)
	}
}
