package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/embedded"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/tokenservice/client"
	memtransport "github.com/batonhq/baton/transport/memory"
)

// batchStores are the stores of a batch test on each path: one embedded
// store for both (the fast path), or embedded entities with memory tokens
// or with the token service's (the plain path).
func batchStores() map[string]func(*testing.T, store.EntityStore) (store.TokenStore, store.EntityStore) {
	return map[string]func(*testing.T, store.EntityStore) (store.TokenStore, store.EntityStore){
		"fast path": func(_ *testing.T, st store.EntityStore) (store.TokenStore, store.EntityStore) {
			return st.(store.TokenStore), st
		},
		"plain path": func(_ *testing.T, st store.EntityStore) (store.TokenStore, store.EntityStore) {
			return memory.NewTokenStore(), st
		},
		"plain path over the token service": func(t *testing.T, st store.EntityStore) (store.TokenStore, store.EntityStore) {
			return tokenService(t), st
		},
	}
}

// tokenService serves a memory token store over HTTP as the token service
// and returns a client of it for a system that may do everything.
func tokenService(t *testing.T) *client.Client {
	t.Helper()
	key, hash := tokenservice.NewAPIKey()
	h, err := tokenservice.New(tokenservice.Config{Tokens: memory.NewTokenStore(), Systems: []tokenservice.System{{Name: "ops", KeySHA256: hash,
		Destinations: []string{tokenservice.AnyDestination}, IssueRoots: true, Observe: true, ExpireRoots: true}}})
	must(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, key, client.Options{})
	must(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func openEmbedded(t *testing.T) *embedded.Store {
	t.Helper()
	st, err := embedded.Open(filepath.Join(t.TempDir(), "baton.db"), embedded.Config{})
	must(t, err)
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// TestBatchesApplyEachActivityOnce runs a chain in batches (Config.Batch)
// on both paths, with every root sent twice, duplicated and reordered
// deliveries, and charges contending for five accounts (so that batches
// meet signals for one entity, conflicts and consumed tokens).
func TestBatchesApplyEachActivityOnce(t *testing.T) {
	t.Parallel()
	for path, stores := range batchStores() {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			tokens, entities := stores(t, openEmbedded(t))
			testBatchesApplyEachActivityOnce(t, tokens, entities)
		})
	}
}

func testBatchesApplyEachActivityOnce(t *testing.T, tokens store.TokenStore, entities store.EntityStore) {
	tr := memtransport.New(memtransport.Config{DuplicateRate: 0.5, Reorder: true, Seed: 11})
	newBatchEngine := func(dest string) *engine.Engine {
		e, err := engine.New(engine.Config{Destination: dest, Tokens: tokens, Entities: entities, Dispatch: tr, Source: tr,
			Batch: 8, Workers: 2, DeferRemovals: dest == "billing", SweepInterval: 50 * time.Millisecond, SweepAfter: 200 * time.Millisecond})
		must(t, err)
		return e
	}
	shop, billing := newBatchEngine("shop"), newBatchEngine("billing")
	must(t, engine.Register(shop, engine.Activity[counter]{Type: "order", Entity: byConversation,
		Handle: func(_ context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
			s.record(sig)
			return engine.Effects{Emit: []baton.Emit{{Destination: "billing", Type: "charge", Payload: sig.Payload}}}, nil
		}}))
	byAccount := func(sig baton.Signal) (string, error) {
		var n int
		if err := json.Unmarshal(sig.Payload, &n); err != nil {
			return "", err
		}
		return fmt.Sprintf("account-%d", n%5), nil
	}
	must(t, engine.Register(billing, engine.Activity[counter]{Type: "charge", Entity: byAccount,
		Handle: func(_ context.Context, sig baton.Signal, s *counter) (engine.Effects, error) {
			s.record(sig)
			return engine.Effects{}, nil
		}}))

	ctx, cancel := context.WithCancel(t.Context())
	const orders = 200
	conversations := submitOrders(ctx, t, shop, tr, orders)
	// Every signal is queued before the engines start, so that workers
	// find batches to take.
	var wg sync.WaitGroup
	for _, e := range []*engine.Engine{shop, billing} {
		wg.Go(func() { _ = e.Run(ctx) })
	}
	deadline := time.Now().Add(30 * time.Second)
	for liveTokens(t, tokens) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if n := liveTokens(t, tokens); n != 0 {
		t.Errorf("%d tokens still live", n)
	}

	for _, c := range conversations {
		s := loadCounter(t, entities, "c-"+c.String())
		if len(s.Applied) != 1 {
			t.Errorf("shop: conversation %s applied %d distinct signals, want 1", c, len(s.Applied))
		}
		for id, n := range s.Applied {
			if n != 1 {
				t.Errorf("shop: signal %s applied %d times", id, n)
			}
		}
	}
	charges := 0
	for a := range 5 {
		s := loadCounter(t, entities, fmt.Sprintf("account-%d", a))
		for id, n := range s.Applied {
			if n != 1 {
				t.Errorf("billing: charge %s applied %d times", id, n)
			}
		}
		charges += len(s.Applied)
	}
	if charges != orders {
		t.Errorf("billing applied %d charges, want %d", charges, orders)
	}
	if tr.Stats().Duplicated == 0 {
		t.Error("the transport injected no duplicates")
	}
	for _, e := range []*engine.Engine{shop, billing} {
		s := e.Stats()
		if s.Batched == 0 || s.Batches == 0 {
			t.Errorf("%s: no activity was committed in a batch: %+v", e.Destination(), s)
		}
		if s.Applied != orders {
			t.Errorf("%s: %d activities applied, want %d", e.Destination(), s.Applied, orders)
		}
		t.Logf("%s: %d of %d activities in %d batch commits, %d duplicates dropped, %d conflicts", e.Destination(),
			s.Batched, s.Applied, s.Batches, s.Duplicates, s.Conflicts)
	}
}

func liveTokens(t *testing.T, st store.TokenStore) int {
	t.Helper()
	n := 0
	for _, d := range []string{"shop", "billing"} {
		toks, err := st.ListByDestination(t.Context(), d, store.Page{Limit: store.MaxPageLimit})
		must(t, err)
		n += len(toks)
	}
	return n
}

func loadCounter(t *testing.T, st store.EntityStore, key string) counter {
	t.Helper()
	ent, err := st.Load(t.Context(), key)
	must(t, err)
	if len(ent.Outbox) != 0 {
		t.Errorf("entity %s keeps %d outbox entries", key, len(ent.Outbox))
	}
	var s counter
	if err := json.Unmarshal(ent.State, &s); err != nil {
		t.Fatalf("state of %s: %v", key, err)
	}
	return s
}

// ledger is the state of TestSignalsForOneEntityMakeChains: the payloads
// of the signals applied, in order.
type ledger struct {
	Applied []string `json:"applied"`
}

// raceBeforeCommit is an embedded store whose first batch commit
// (CommitTransitions on the fast path, CommitBatch on the plain path) is
// preceded by a commit of another writer to one entity, as if a process
// committed it between the batch's read and its commit.
type raceBeforeCommit struct {
	*embedded.Store
	key  string
	once sync.Once
}

func (r *raceBeforeCommit) race(ctx context.Context) error {
	var err error
	r.once.Do(func() {
		var ent store.Entity
		if ent, err = r.Load(ctx, r.key); err == nil {
			_, err = r.Commit(ctx, ent)
		}
	})
	return err
}

func (r *raceBeforeCommit) CommitTransitions(ctx context.Context, transitions []store.Transition) ([]error, error) {
	if err := r.race(ctx); err != nil {
		return nil, err
	}
	return r.Store.CommitTransitions(ctx, transitions)
}

func (r *raceBeforeCommit) CommitBatch(ctx context.Context, entities []store.Entity) ([]error, error) {
	if err := r.race(ctx); err != nil {
		return nil, err
	}
	return r.Store.CommitBatch(ctx, entities)
}

// TestSignalsForOneEntityMakeChains: signals of one batch for the same
// entity make a chain: each activity runs on the state the one before
// left, in order of arrival, and the entity is committed once with all
// their tokens. A duplicate or a failing activity drops out of its chain
// without stopping the others; a chain whose entity changed after the read
// is refused whole, and its signals go through Process, each applied once.
func TestSignalsForOneEntityMakeChains(t *testing.T) {
	t.Parallel()
	for path, stores := range batchStores() {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			tokens, entities := stores(t, &raceBeforeCommit{Store: openEmbedded(t), key: "account-c"})
			testSignalsForOneEntityMakeChains(t, tokens, entities)
		})
	}
}

func testSignalsForOneEntityMakeChains(t *testing.T, tokens store.TokenStore, st store.EntityStore) {
	ctx := t.Context()
	_, err := st.Commit(ctx, store.Entity{Key: "account-c", State: []byte(`{}`)})
	must(t, err)
	e, err := engine.New(engine.Config{Destination: "billing", Tokens: tokens, Entities: st, Dispatch: publisher{}, Batch: 16})
	must(t, err)
	must(t, engine.Register(e, engine.Activity[ledger]{Type: "charge",
		Entity: func(sig baton.Signal) (string, error) { return "account-" + string(sig.Payload[:1]), nil },
		Handle: func(_ context.Context, sig baton.Signal, s *ledger) (engine.Effects, error) {
			if bytes.HasSuffix(sig.Payload, []byte("fail")) {
				return engine.Effects{}, errors.New("declined")
			}
			s.Applied = append(s.Applied, string(sig.Payload))
			return engine.Effects{}, nil
		}}))
	// Four charges for each of three accounts, interleaved; a's second
	// is consumed before the batch, b's third fails.
	payloads := []string{"a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2fail", "c2", "a3", "b3", "c3"}
	var sigs []baton.Signal
	for _, p := range payloads {
		sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "billing", Type: "charge", Payload: []byte(p)}, 0)
		must(t, err)
		sigs = append(sigs, sig)
	}
	if res, err := e.Process(ctx, sigs[3]); err != nil || res.Outcome != engine.Applied {
		t.Fatalf("Process a1 alone = %v, %v", res.Outcome, err)
	}
	results, errs := e.ProcessBatch(ctx, sigs)
	for i, p := range payloads {
		want := engine.Applied
		switch p {
		case "a1":
			want = engine.Duplicate
		case "b2fail":
			if errs[i] == nil {
				t.Errorf("%s: no error from a failing activity", p)
			}
			continue
		}
		if errs[i] != nil || results[i].Outcome != want {
			t.Errorf("%s: %v, %v; want %v", p, results[i].Outcome, errs[i], want)
		}
	}
	for key, want := range map[string][]string{
		"account-a": {"a1", "a0", "a2", "a3"}, "account-b": {"b0", "b1", "b3"}, "account-c": {"c0", "c1", "c2", "c3"},
	} {
		ent, err := st.Load(ctx, key)
		must(t, err)
		var s ledger
		must(t, json.Unmarshal(ent.State, &s))
		if !slices.Equal(s.Applied, want) {
			t.Errorf("%s applied %v, want %v", key, s.Applied, want)
		}
		if len(ent.Outbox) != 0 {
			t.Errorf("%s keeps %d outbox entries", key, len(ent.Outbox))
		}
	}
	// a and b in one commit of two chains; c's chain refused, its four
	// signals alone.
	if stats := e.Stats(); stats.Batches != 1 || stats.Batched != 6 || stats.Conflicts != 1 {
		t.Errorf("%d batch commits committed %d activities with %d conflicts; want 1 of 6 and 1 conflict", stats.Batches, stats.Batched, stats.Conflicts)
	}
	if n := liveTokens(t, tokens); n != 1 {
		t.Errorf("%d tokens live, want 1 (the failed charge's)", n)
	}
}

// TestBatchWithoutSharedCommitsSaysWhy: an engine with Batch set whose
// stores cannot work in batches logs why, once, at New; one whose stores
// can says nothing.
func TestBatchWithoutSharedCommitsSaysWhy(t *testing.T) {
	t.Parallel()
	st, err := embedded.Open(filepath.Join(t.TempDir(), "baton.db"), embedded.Config{})
	must(t, err)
	t.Cleanup(func() { _ = st.Close() })
	tr := memtransport.New(memtransport.Config{})
	bare := bareStore{st, st} // one store value with no batch calls
	for _, c := range []struct {
		name       string
		tokens     store.TokenStore
		entities   store.EntityStore
		noFastPath bool
		want       string // "" when no line is wanted
	}{
		{"one store that batches", st, st, false, ""},
		{"two stores that batch", memory.NewTokenStore(), memory.NewEntityStore(), false, ""},
		{"two stores, tokens one at a time", tokensOneByOne{memory.NewTokenStore()}, memory.NewEntityStore(), false, "store.TokenBatcher"},
		{"fast path off, plain batches", st, st, true, ""},
		{"fast path off, no batches", bare, bare, true, "Config.NoFastPath is set"},
	} {
		var logged bytes.Buffer
		_, err := engine.New(engine.Config{Destination: "billing", Tokens: c.tokens, Entities: c.entities, Dispatch: tr, Source: tr,
			Batch: 8, NoFastPath: c.noFastPath, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
		must(t, err)
		line := strings.Contains(logged.String(), "each signal is processed on its own")
		switch {
		case c.want == "" && line:
			t.Errorf("%s: logged %q, want nothing about batches", c.name, logged.String())
		case c.want != "" && (!line || !strings.Contains(logged.String(), c.want)):
			t.Errorf("%s: logged %q, want the line with %q", c.name, logged.String(), c.want)
		}
	}
}

// tokensOneByOne hides a token store's batch operations.
type tokensOneByOne struct{ store.TokenStore }

// shortAnswers is a token store whose batch calls answer one item fewer
// than asked, as a broken store might.
type shortAnswers struct{ *memory.TokenStore }

func (s shortAnswers) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	tokens, errs, err := s.TokenStore.GetTokens(ctx, ids)
	return tokens[1:], errs[1:], err
}

func (s shortAnswers) TransitionTokens(ctx context.Context, transitions []store.TokenTransition) ([]bool, []error, error) {
	consumed, errs, err := s.TokenStore.TransitionTokens(ctx, transitions)
	return consumed[1:], errs[1:], err
}

// TestBatchWithShortAnswersFallsBack: a store that answers fewer items
// than a batch asked is not trusted (nor indexed past its answer): the
// signals go through Process, each applied once.
func TestBatchWithShortAnswersFallsBack(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tokens := shortAnswers{memory.NewTokenStore()}
	entities := memory.NewEntityStore()
	e, err := engine.New(engine.Config{Destination: "billing", Tokens: tokens, Entities: entities, Dispatch: publisher{}, Batch: 16})
	must(t, err)
	must(t, engine.Register(e, engine.Activity[ledger]{Type: "charge",
		Entity: func(sig baton.Signal) (string, error) { return "account-" + string(sig.Payload), nil },
		Handle: func(_ context.Context, sig baton.Signal, s *ledger) (engine.Effects, error) {
			s.Applied = append(s.Applied, string(sig.Payload))
			return engine.Effects{}, nil
		}}))
	var sigs []baton.Signal
	for _, p := range []string{"a", "b", "c"} {
		sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "billing", Type: "charge", Payload: []byte(p)}, 0)
		must(t, err)
		sigs = append(sigs, sig)
	}
	results, errs := e.ProcessBatch(ctx, sigs)
	for i := range sigs {
		if errs[i] != nil || results[i].Outcome != engine.Applied {
			t.Errorf("signal %d: %v, %v; want applied", i, results[i].Outcome, errs[i])
		}
	}
	if n := liveTokens(t, tokens); n != 0 {
		t.Errorf("%d tokens live, want 0", n)
	}
	if stats := e.Stats(); stats.Batched != 0 {
		t.Errorf("%d activities committed in batches from short answers, want 0", stats.Batched)
	}
}

// bareStore is a token and entity store with none of the optional calls.
type bareStore struct {
	store.TokenStore
	store.EntityStore
}

// lostTransitionOnce is a token store whose first Transition fails as a
// lost answer would, without running. Its batch calls are the memory
// store's own: only a Transition alone is lost.
type lostTransitionOnce struct {
	*memory.TokenStore
	lost sync.Once
}

func (l *lostTransitionOnce) Transition(ctx context.Context, id baton.TokenID, create []baton.Token) (bool, error) {
	first := false
	l.lost.Do(func() { first = true })
	if first {
		return false, errors.New("connection lost")
	}
	return l.TokenStore.Transition(ctx, id, create)
}

// lastKeyFirst is an entity store whose LoadBatch reads the keys last
// first, one by one (store.BatchLoader allows reads of one key at
// different instants), and runs between before the second read.
type lastKeyFirst struct {
	*memory.EntityStore
	between func()
}

func (l lastKeyFirst) LoadBatch(ctx context.Context, keys []string) ([]store.Entity, error) {
	out := make([]store.Entity, len(keys))
	for i := len(keys) - 1; i >= 0; i-- {
		e, err := l.Load(ctx, keys[i])
		if err != nil {
			return nil, err
		}
		out[i] = e
		if i == len(keys)-1 && l.between != nil {
			l.between()
		}
	}
	return out, nil
}

// TestChainKnowsEntriesItsItemsPredate: two charges of one account in a
// batch, the second's own read older than the first's, which holds the
// second's outbox entry (another process committed it, and its transition's
// answer was lost). The second is not run again on the chain's state, which
// already holds it: Process finishes it from its entry (found in review).
func TestChainKnowsEntriesItsItemsPredate(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tokens := &lostTransitionOnce{TokenStore: memory.NewTokenStore()}
	entities := lastKeyFirst{EntityStore: memory.NewEntityStore()}
	var mu sync.Mutex
	runs := map[string]int{}
	register := func(e *engine.Engine) {
		must(t, engine.Register(e, engine.Activity[ledger]{Type: "charge",
			Entity: func(baton.Signal) (string, error) { return "account", nil },
			Handle: func(_ context.Context, sig baton.Signal, s *ledger) (engine.Effects, error) {
				mu.Lock()
				runs[string(sig.Payload)]++
				mu.Unlock()
				s.Applied = append(s.Applied, string(sig.Payload))
				return engine.Effects{}, nil
			}}))
	}
	other, err := engine.New(engine.Config{Destination: "billing", Tokens: tokens, Entities: entities.EntityStore, Dispatch: publisher{}})
	must(t, err)
	register(other)
	var sigs []baton.Signal
	for _, p := range []string{"a", "b"} {
		sig, err := other.IssueRoot(ctx, baton.Emit{Destination: "billing", Type: "charge", Payload: []byte(p)}, 0)
		must(t, err)
		sigs = append(sigs, sig)
	}
	entities.between = func() {
		if _, err := other.Process(ctx, sigs[1]); err == nil {
			t.Error("the other process's transition was to fail")
		}
	}
	e, err := engine.New(engine.Config{Destination: "billing", Tokens: tokens, Entities: entities, Dispatch: publisher{}, Batch: 16})
	must(t, err)
	register(e)
	results, errs := e.ProcessBatch(ctx, sigs)
	for i := range sigs {
		if errs[i] != nil {
			t.Errorf("signal %d: %v, %v", i, results[i].Outcome, errs[i])
		}
	}
	if runs["a"] != 1 || runs["b"] != 1 {
		t.Errorf("activities ran %v times; want each once", runs)
	}
	ent, err := entities.Load(ctx, "account")
	must(t, err)
	var s ledger
	must(t, json.Unmarshal(ent.State, &s))
	if !slices.Equal(s.Applied, []string{"b", "a"}) || len(ent.Outbox) != 0 {
		t.Errorf("account applied %v with %d outbox entries; want [b a] and none", s.Applied, len(ent.Outbox))
	}
	if n := liveTokens(t, tokens); n != 0 {
		t.Errorf("%d tokens live, want 0", n)
	}
}

// batchPublishing is a Dispatch with a PublishBatch that answers as answer
// says, and counts the publishes of one signal.
type batchPublishing struct {
	answer  func(sigs []baton.Signal) []error
	publish func(sig baton.Signal) error
	singles *atomic.Int64
}

func (b batchPublishing) Publish(_ context.Context, sig baton.Signal) error {
	b.singles.Add(1)
	return b.publish(sig)
}

func (b batchPublishing) PublishBatch(_ context.Context, sigs []baton.Signal) []error {
	return b.answer(sigs)
}

// TestBatchPublishAnswers: a batch publish that answers for fewer signals
// than it was given (a wrapper's nil) is not indexed past its answer: each
// signal is published alone. And once one signal failed its retries, the
// others are not tried: their deliveries wait for redelivery (found in
// review).
func TestBatchPublishAnswers(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name        string
		answer      func([]baton.Signal) []error
		publish     func(baton.Signal) error
		wantSingles int64
		wantFailed  bool
	}{
		{"short answer", func([]baton.Signal) []error { return nil }, func(baton.Signal) error { return nil }, 3, false},
		{"broker down", func(sigs []baton.Signal) []error {
			errs := make([]error, len(sigs))
			for i := range errs {
				errs[i] = errors.New("broker down")
			}
			return errs
		}, func(baton.Signal) error { return errors.New("broker down") }, 2, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			var singles atomic.Int64
			e, err := engine.New(engine.Config{Destination: "orders", Tokens: memory.NewTokenStore(), Entities: memory.NewEntityStore(),
				Dispatch: batchPublishing{c.answer, c.publish, &singles}, Batch: 16, DispatchAttempts: 2})
			must(t, err)
			must(t, engine.Register(e, engine.Activity[ledger]{Type: "place",
				Entity: func(sig baton.Signal) (string, error) { return "order-" + string(sig.Payload), nil },
				Handle: func(_ context.Context, sig baton.Signal, s *ledger) (engine.Effects, error) {
					return engine.Effects{Emit: []baton.Emit{{Destination: "billing", Type: "charge"}}}, nil
				}}))
			var sigs []baton.Signal
			for _, p := range []string{"a", "b", "c"} {
				sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "orders", Type: "place", Payload: []byte(p)}, 0)
				must(t, err)
				sigs = append(sigs, sig)
			}
			_, errs := e.ProcessBatch(ctx, sigs)
			for i, err := range errs {
				if (err != nil) != c.wantFailed {
					t.Errorf("signal %d: %v; want failed %t", i, err, c.wantFailed)
				}
			}
			if n := singles.Load(); n != c.wantSingles {
				t.Errorf("%d publishes of one signal; want %d", n, c.wantSingles)
			}
		})
	}
}

// hintRecorder is a token store that records the lookups of its hinted
// batch reads.
type hintRecorder struct {
	*memory.TokenStore
	mu      *sync.Mutex
	lookups *[]store.TokenLookup
}

func (h hintRecorder) GetTokensIn(ctx context.Context, lookups []store.TokenLookup) ([]baton.Token, []error, error) {
	h.mu.Lock()
	*h.lookups = append(*h.lookups, lookups...)
	h.mu.Unlock()
	ids := make([]baton.TokenID, len(lookups))
	for i, l := range lookups {
		ids[i] = l.ID
	}
	return h.GetTokens(ctx, ids)
}

// TestBatchReadsNameConversations: a plain batch reads its tokens with
// each signal's conversation, so that a store split by conversation asks
// only the conversation's part.
func TestBatchReadsNameConversations(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	var lookups []store.TokenLookup
	tokens := hintRecorder{memory.NewTokenStore(), new(sync.Mutex), &lookups}
	e, err := engine.New(engine.Config{Destination: "billing", Tokens: tokens, Entities: memory.NewEntityStore(), Dispatch: publisher{}, Batch: 16})
	must(t, err)
	must(t, engine.Register(e, engine.Activity[ledger]{Type: "charge",
		Entity: func(sig baton.Signal) (string, error) { return "account-" + string(sig.Payload), nil },
		Handle: func(_ context.Context, sig baton.Signal, s *ledger) (engine.Effects, error) {
			s.Applied = append(s.Applied, string(sig.Payload))
			return engine.Effects{}, nil
		}}))
	want := make(map[baton.TokenID]baton.TokenID)
	var sigs []baton.Signal
	for _, p := range []string{"a", "b", "c"} {
		sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "billing", Type: "charge", Payload: []byte(p)}, 0)
		must(t, err)
		sigs = append(sigs, sig)
		want[sig.ID] = sig.Conversation
	}
	results, errs := e.ProcessBatch(ctx, sigs)
	for i := range sigs {
		if errs[i] != nil || results[i].Outcome != engine.Applied {
			t.Fatalf("signal %d: %v, %v; want applied", i, results[i].Outcome, errs[i])
		}
	}
	if len(lookups) != len(sigs) {
		t.Fatalf("the batch read %d tokens with hints, want %d", len(lookups), len(sigs))
	}
	for _, l := range lookups {
		if conversation, ok := want[l.ID]; !ok || l.Conversation != conversation {
			t.Errorf("token %s read with conversation %s, want %s", l.ID, l.Conversation, conversation)
		}
	}
}
