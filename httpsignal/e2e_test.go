package httpsignal_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/httpsignal"
)

// chaos injects a random fault into about half of the requests.
type chaos struct {
	h      http.Handler
	mu     sync.Mutex
	rng    *rand.Rand
	counts [processTwice + 1]atomic.Int64
}

func newChaos(h http.Handler, seed uint64) *chaos {
	return &chaos{h: h, rng: rand.New(rand.NewPCG(seed, seed))}
}

func (c *chaos) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	x := fault(c.rng.IntN(2 * int(processTwice)))
	c.mu.Unlock()
	if x > processTwice {
		x = pass
	}
	c.counts[x].Add(1)
	serveWithFault(w, r, c.h, x)
}

// Two systems: the shop takes orders over HTTP and its activity emits a
// charge to billing over HTTP. Both fronts lose responses, refuse, drop
// connections and duplicate requests, and the client sends every order
// twice at once and retries until it gets an answer. At the end each
// activity was applied exactly once and no token is left.
func TestTwoSystemsOverHTTPApplyEachActivityOnce(t *testing.T) {
	t.Parallel()
	tokens := memory.NewTokenStore()

	billing := newSystem(t, "billing", tokens, nil, nil)
	registerCharge(t, billing.e)
	billingServer, err := httpsignal.NewServer(billing.e, httpsignal.Options{})
	must(t, err)
	billingFront := newChaos(billingServer, 1)
	billingHTTP := httptest.NewServer(billingFront)
	t.Cleanup(billingHTTP.Close)

	fast := httpsignal.TransportConfig{MaxAttempts: 4, BaseDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond, MaxRetryAfter: time.Millisecond}
	toBilling, err := httpsignal.NewTransport(fast)
	must(t, err)
	dispatch, err := httpsignal.NewPublisher(httpsignal.PublisherConfig{
		Endpoints: map[string]string{"billing": billingHTTP.URL}, Transport: toBilling})
	must(t, err)

	shop := newSystem(t, "shop", tokens, dispatch, nil)
	must(t, engine.Register(shop.e, engine.Activity[ledger]{Type: "order", Entity: byConversation,
		Handle: func(ctx context.Context, sig baton.Signal, l *ledger) (engine.Effects, error) {
			l.record(sig)
			return engine.Effects{
				Emit:  []baton.Emit{{Destination: "billing", Type: "charge", Payload: sig.Payload}},
				Reply: append([]byte("accepted "), sig.Payload...),
			}, nil
		}}))
	shopServer, err := httpsignal.NewServer(shop.e, httpsignal.Options{})
	must(t, err)
	shopFront := newChaos(shopServer, 2)
	shopHTTP := httptest.NewServer(shopFront)
	t.Cleanup(shopHTTP.Close)

	toShop, err := httpsignal.NewTransport(fast)
	must(t, err)
	client, err := httpsignal.NewPublisher(httpsignal.PublisherConfig{
		Endpoints: map[string]string{"shop": shopHTTP.URL}, Transport: toShop})
	must(t, err)

	const orders = 40
	roots := make([]baton.Signal, orders)
	var outcomes sync.Map // outcome -> *atomic.Int64
	count := func(outcome string) {
		n, _ := outcomes.LoadOrStore(outcome, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*orders)
	for i := range orders {
		sig, err := shop.e.IssueRoot(t.Context(), baton.Emit{Destination: "shop", Type: "order", Payload: fmt.Appendf(nil, "order-%d", i)}, 0)
		must(t, err)
		roots[i] = sig
		for range 2 { // a double submit: two copies at once
			wg.Go(func() {
				for try := 0; ; try++ {
					reply, outcome, err := client.Call(t.Context(), sig)
					if err == nil {
						count(outcome)
						if outcome != httpsignal.OutcomeDuplicate && string(reply) != "accepted "+string(sig.Payload) {
							errs <- fmt.Errorf("order %s: reply %q", sig.Payload, reply)
						}
						return
					}
					if try == 50 {
						errs <- fmt.Errorf("order %s never answered: %w", sig.Payload, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// A caller that got its answer may leave outbox entries behind (a lost
	// response after the commit); the sweepers finish them.
	deadline := time.Now().Add(10 * time.Second)
	for tokens.Len() > 0 || pending(t, shop) > 0 || pending(t, billing) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not quiet: %d tokens, %d and %d outbox entries", tokens.Len(), pending(t, shop), pending(t, billing))
		}
		_, _ = shop.e.Sweep(t.Context())
		_, _ = billing.e.Sweep(t.Context())
		time.Sleep(2 * time.Millisecond)
	}

	shopLedger, billingLedger := shop.applied(t), billing.applied(t)
	for _, sig := range roots {
		if n := shopLedger[sig.ID.String()]; n != 1 {
			t.Errorf("order %s applied %d times", sig.Payload, n)
		}
	}
	if len(shopLedger) != orders || len(billingLedger) != orders {
		t.Errorf("shop applied %d signals, billing %d; want %d each", len(shopLedger), len(billingLedger), orders)
	}
	for id, n := range billingLedger {
		if n != 1 {
			t.Errorf("charge %s applied %d times", id, n)
		}
	}
	if s, b := shop.e.Stats(), billing.e.Stats(); s.Applied != orders || b.Applied != orders {
		t.Errorf("engines applied %d and %d activities, want %d each", s.Applied, b.Applied, orders)
	}
	faults := func(c *chaos) []int64 {
		var out []int64
		for i := range c.counts {
			out = append(out, c.counts[i].Load())
		}
		return out
	}
	got := map[string]int64{}
	outcomes.Range(func(k, v any) bool { got[k.(string)] = v.(*atomic.Int64).Load(); return true })
	t.Logf("faults (pass, refuse, drop before, drop after, 502 after, twice): shop %v, billing %v; client outcomes %v; billing duplicates dropped %d",
		faults(shopFront), faults(billingFront), got, billing.e.Stats().Duplicates)
	for _, c := range []*chaos{shopFront, billingFront} {
		if c.counts[dropAfter].Load() == 0 || c.counts[badGateway].Load() == 0 || c.counts[processTwice].Load() == 0 {
			t.Errorf("the chaos did not lose a response or duplicate a request: %v", faults(c))
		}
	}
}

// pending counts a system's outbox entries.
func pending(t *testing.T, s *system) int {
	t.Helper()
	n := 0
	for _, key := range s.entities.Keys() {
		ent, err := s.entities.Load(t.Context(), key)
		must(t, err)
		n += len(ent.Outbox)
	}
	return n
}
