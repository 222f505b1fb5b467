package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/tokenservice/client"
)

// service starts a token service over a fresh memory store with one
// all-powerful system and returns its URL and that system's key.
func service(t *testing.T, systems ...tokenservice.System) (url, key string, tokens *memory.TokenStore) {
	t.Helper()
	h, key, tokens := serviceHandler(t, systems...)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL, key, tokens
}

// serviceHandler is the handler of service, to serve in a test's own way.
func serviceHandler(t *testing.T, systems ...tokenservice.System) (h http.Handler, key string, tokens *memory.TokenStore) {
	t.Helper()
	key, hash := tokenservice.NewAPIKey()
	systems = append(systems, tokenservice.System{Name: "ops", KeySHA256: hash,
		Destinations: []string{tokenservice.AnyDestination}, IssueRoots: true, Observe: true, ExpireRoots: true})
	tokens = memory.NewTokenStore()
	h, err := tokenservice.New(tokenservice.Config{Tokens: tokens, Systems: systems})
	if err != nil {
		t.Fatal(err)
	}
	return h, key, tokens
}

func newClient(t *testing.T, url, key string) *client.Client {
	t.Helper()
	c, err := client.New(url, key, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// The client over the service over a memory store passes the token store
// conformance suite: the service keeps the store's semantics exactly.
func TestConformance(t *testing.T) {
	t.Parallel()
	type endpoint struct{ url, key string }
	var endpoints sync.Map // store.TokenStore -> endpoint
	storetest.RunTokenStore(t, storetest.TokenHarness{
		New: func(t *testing.T) store.TokenStore {
			url, key, _ := service(t)
			c := newClient(t, url, key)
			endpoints.Store(c, endpoint{url, key})
			return c
		},
		// The data lives behind the service: a new client sees it all.
		Reopen: func(t *testing.T, s store.TokenStore) store.TokenStore {
			s.(*client.Client).Close()
			e, _ := endpoints.Load(s)
			return newClient(t, e.(endpoint).url, e.(endpoint).key)
		},
	})
}

// root returns a root to issue; the service chooses its id.
func root(destination string) baton.Token {
	return baton.Token{Destination: destination, Type: "t",
		Digest: baton.DigestOf([]byte("p")), CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
}

// Errors map back to the sentinels of package store, and refusals to the
// client's own as well.
func TestErrorMapping(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	billingKey, billingHash := tokenservice.NewAPIKey()
	url, opsKey, tokens := service(t, tokenservice.System{Name: "billing", KeySHA256: billingHash})
	ops, billing := newClient(t, url, opsKey), newClient(t, url, billingKey)
	stranger := newClient(t, url, "bk_not-a-registered-key")

	orders, err := ops.Issue(ctx, root("orders"))
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, err error, want ...error) {
		t.Helper()
		for _, w := range want {
			if !errors.Is(err, w) {
				t.Errorf("%s: error %v does not match %v", what, err, w)
			}
		}
		var p *client.ProblemError
		if err != nil && !errors.As(err, &p) {
			t.Errorf("%s: error %v is not a *client.ProblemError", what, err)
		}
	}
	_, err = stranger.Get(ctx, orders.ID)
	check("unknown key", err, client.ErrUnauthorized, store.ErrNotApplied)
	_, err = billing.Get(ctx, orders.ID)
	check("reading another destination's token", err, client.ErrForbidden, store.ErrNotYours, store.ErrNotApplied)
	_, err = billing.Transition(ctx, orders.ID, nil)
	check("consuming another destination's token", err, client.ErrForbidden, store.ErrNotApplied)
	_, err = billing.Issue(ctx, root("billing"))
	check("issuing a root without permission", err, client.ErrForbidden)
	if errors.Is(err, store.ErrNotYours) {
		t.Errorf("issuing a root without permission: %v matches store.ErrNotYours; only a token of another destination does", err)
	}
	_, err = billing.ListByConversation(ctx, orders.Conversation, store.Page{})
	check("listing without observe", err, client.ErrForbidden)
	_, err = billing.ExpireRoots(ctx, time.Now(), 10)
	check("expiring roots without expire_roots", err, client.ErrForbidden, store.ErrForbidden, store.ErrNotApplied)
	_, err = ops.Issue(ctx, orders)
	if !errors.Is(err, store.ErrInvalid) {
		t.Errorf("issuing a root that names its id: %v, want store.ErrInvalid", err)
	}
	_, err = billing.ClaimRoot(ctx, orders.ID, time.Now())
	check("claiming another destination's root", err, client.ErrForbidden, store.ErrNotYours, store.ErrNotApplied)
	_, err = ops.Get(ctx, baton.NewTokenID())
	check("getting an absent token", err, store.ErrNotFound)
	stray := root("billing")
	stray.ID, stray.Conversation, stray.Causation = baton.NewTokenID(), baton.NewTokenID(), orders.ID
	_, err = ops.Transition(ctx, orders.ID, []baton.Token{stray})
	check("creating a token in another conversation", err, client.ErrForbidden)
	if _, err := tokens.Get(ctx, orders.ID); err != nil {
		t.Errorf("after the refusals the root is gone: %v", err)
	}
	if tokens.Len() != 1 {
		t.Errorf("after the refusals the store holds %d tokens, want 1", tokens.Len())
	}

	// billing may read and list its own tokens.
	child := root("billing")
	child.ID, child.Conversation, child.Causation = baton.NewTokenID(), orders.Conversation, orders.ID
	if consumed, err := ops.Transition(ctx, orders.ID, []baton.Token{child}); err != nil || !consumed {
		t.Fatalf("Transition = %v, %v", consumed, err)
	}
	if _, err := billing.Get(ctx, child.ID); err != nil {
		t.Errorf("billing reading its own token: %v", err)
	}
	if got, err := billing.ListByDestination(ctx, "billing", store.Page{}); err != nil || len(got) != 1 {
		t.Errorf("billing listing its own destination = %d tokens, %v", len(got), err)
	}
}

// A connection that cannot be made proves nothing was sent.
func TestConnectionRefusedIsNotApplied(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := newClient(t, "http://"+addr, "bk_key")
	_, err = c.Transition(t.Context(), baton.NewTokenID(), nil)
	if !errors.Is(err, store.ErrNotApplied) {
		t.Errorf("Transition against a closed port = %v, want an error matching store.ErrNotApplied", err)
	}
}

// failingStore fails every transition with the given error.
type failingStore struct {
	store.TokenStore // the interface: no batch calls that would skip Transition
	err              error
}

func (s failingStore) Transition(context.Context, baton.TokenID, []baton.Token) (bool, error) {
	return false, s.err
}

// The store's own failure semantics survive the trip: not applied stays
// not applied, an unknown outcome stays unknown.
func TestStoreFailures(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		err        error
		notApplied bool
	}{
		{"not applied", store.ErrNotApplied, true},
		{"closed", store.ErrClosed, true},
		{"outcome unknown", errors.New("connection reset after commit was sent"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			key, hash := tokenservice.NewAPIKey()
			mem := memory.NewTokenStore()
			h, err := tokenservice.New(tokenservice.Config{Tokens: failingStore{mem, c.err},
				Systems: []tokenservice.System{{Name: "orders", KeySHA256: hash}}})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			r, err := mem.Issue(t.Context(), root("orders"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = newClient(t, srv.URL, key).Transition(t.Context(), r.ID, nil)
			if err == nil {
				t.Fatal("Transition over a failing store returned no error")
			}
			if got := store.NotApplied(err); got != c.notApplied {
				t.Errorf("store.NotApplied(%v) = %v, want %v", err, got, c.notApplied)
			}
		})
	}
}

// A connection lost after the request was sent leaves the outcome unknown.
func TestLostAnswerIsOutcomeUnknown(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer srv.Close()
	_, err := newClient(t, srv.URL, "bk_key").Transition(t.Context(), baton.NewTokenID(), nil)
	if err == nil || store.NotApplied(err) {
		t.Errorf("Transition whose answer was lost = %v, want an error of unknown outcome", err)
	}
}

// A cancelled context fails before anything is sent.
func TestCancelledContext(t *testing.T) {
	t.Parallel()
	url, key, _ := service(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := newClient(t, url, key).Transition(ctx, baton.NewTokenID(), nil)
	if !errors.Is(err, store.ErrNotApplied) || !errors.Is(err, context.Canceled) {
		t.Errorf("Transition with a cancelled context = %v", err)
	}
}

func TestNewRefusesBadURLs(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "127.0.0.1:7451", "ftp://host", "http://", "http://host/?q=1", "::"} {
		if _, err := client.New(u, "bk_key", client.Options{}); !errors.Is(err, client.ErrInvalidConfig) {
			t.Errorf("New(%q) = %v, want ErrInvalidConfig", u, err)
		}
	}
	if _, err := client.New("http://host", "bk key", client.Options{}); !errors.Is(err, client.ErrInvalidConfig) {
		t.Errorf("New with a key containing a space = %v, want ErrInvalidConfig", err)
	}
}

// TestServiceWithoutBatchRoutes: a service that does not serve the batch
// routes (an older one) answers no-such-route, which ran nothing: the
// batch calls fail as not applied, and the engine then processes the
// signals one by one.
func TestServiceWithoutBatchRoutes(t *testing.T) {
	t.Parallel()
	h, key, _ := serviceHandler(t)
	older := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/tokens/read" || r.URL.Path == "/v1/transitions/batch" {
			w.Header().Set("Content-Type", tokenservice.ProblemContentType)
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(tokenservice.Problem{Type: tokenservice.ProblemNoRoute, Status: http.StatusNotFound})
			return
		}
		h.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(older)
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, key)
	if _, _, err := c.GetTokens(t.Context(), []baton.TokenID{baton.NewTokenID()}); !errors.Is(err, store.ErrNotApplied) || errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetTokens from a service without the route = %v; want not applied", err)
	}
	if _, _, err := c.TransitionTokens(t.Context(), []store.TokenTransition{{Consume: baton.NewTokenID()}}); !errors.Is(err, store.ErrNotApplied) {
		t.Errorf("TransitionTokens from a service without the route = %v; want not applied, for the whole call", err)
	}
}

// The client sends its key to the service it was given and nowhere else.
// Go's http.Client, following a redirect, keeps Authorization for any
// port, scheme (https to http) or subdomain of the same host, so a
// redirect (a proxy's rule, a rogue answer) took the key in clear to
// another listener. The client follows none: a redirect is an answer
// whose outcome is unknown.
func TestClientFollowsNoRedirect(t *testing.T) {
	t.Parallel()
	var leaked sync.Map
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" {
			leaked.Store(r.Method+" "+r.URL.Path, a)
		}
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(elsewhere.Close)
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirecting.Close)
	key, _ := tokenservice.NewAPIKey()
	c := newClient(t, redirecting.URL, key)
	id := baton.NewTokenID()
	_, err := c.Get(t.Context(), id)
	var p *client.ProblemError
	if !errors.As(err, &p) || p.Status != http.StatusTemporaryRedirect || errors.Is(err, store.ErrNotApplied) {
		t.Errorf("Get through a redirect: %v, want a 307 answer of unknown outcome", err)
	}
	if _, err := c.Transition(t.Context(), id, nil); err == nil || errors.Is(err, store.ErrNotApplied) {
		t.Errorf("Transition through a redirect: %v, want an error of unknown outcome", err)
	}
	leaked.Range(func(k, v any) bool {
		t.Errorf("%s sent the API key to the redirect's target", k)
		return true
	})
	// A base URL with trailing slashes names the service's own paths,
	// which the service would otherwise redirect to.
	url, key, _ := service(t)
	if _, err := newClient(t, url+"//", key).Get(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get with a base URL ending in //: %v, want not found", err)
	}
}

// TestSweepWithoutExpireRoots: an engine whose system may not delete
// expired roots (most systems: expire_roots is for a trusted sweeper)
// sweeps without failing. Its sweeps failed with 403 every SweepInterval,
// counted as sweeper failures (the alert of docs/operations.md) and
// logged as warnings, in a participant set up as docs/participants.md says.
func TestSweepWithoutExpireRoots(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	billingKey, billingHash := tokenservice.NewAPIKey()
	url, _, _ := service(t, tokenservice.System{Name: "billing", KeySHA256: billingHash})
	e, err := engine.New(engine.Config{Destination: "billing", Tokens: newClient(t, url, billingKey),
		Entities: memory.NewEntityStore(), Dispatch: engine.Routes{}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := e.Sweep(ctx); err != nil {
			t.Errorf("Sweep = %v, want nil: deleting expired roots is another system's job here", err)
		}
	}
}
