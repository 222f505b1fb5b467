package split_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/backend/split"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/tokenservice/client"
)

// newSplit returns a store split over n fresh in-memory parts.
func newSplit(t *testing.T, n int, wrap func(int, split.Part) store.TokenStore) (*split.Store, []*memory.TokenStore) {
	t.Helper()
	var mems []*memory.TokenStore
	var parts []store.TokenStore
	for i := range n {
		m := memory.NewTokenStore()
		t.Cleanup(func() { m.Close() })
		mems = append(mems, m)
		if wrap != nil {
			parts = append(parts, wrap(i, m))
		} else {
			parts = append(parts, m)
		}
	}
	s, err := split.Open(t.Context(), parts...)
	if err != nil {
		t.Fatal(err)
	}
	return s, mems
}

func TestConformanceOverThreeParts(t *testing.T) {
	t.Parallel()
	storetest.RunTokenStore(t, storetest.TokenHarness{
		New: func(t *testing.T) store.TokenStore { s, _ := newSplit(t, 3, nil); return s },
	})
}

// faultyPart fails a tenth of a part's calls, half of them after the part
// applied them (outcome unknown); CreateRoot passes through.
type faultyPart struct {
	store.TokenStore
	creator store.RootCreator
}

func (f faultyPart) CreateRoot(ctx context.Context, root baton.Token) (baton.Token, error) {
	return f.creator.CreateRoot(ctx, root)
}

// Linearizable over three parts: as is, with faults of the whole, and
// with faults in the parts (a part that fails must make a call fail, not
// report a live token absent).
func TestLinearizabilityOverThreeParts(t *testing.T) {
	t.Parallel()
	t.Run("whole", func(t *testing.T) {
		t.Parallel()
		storetest.RunLinearizabilityWithFaults(t, storetest.TokenHarness{
			New: func(t *testing.T) store.TokenStore { s, _ := newSplit(t, 3, nil); return s },
		})
	})
	t.Run("FaultyParts", func(t *testing.T) {
		t.Parallel()
		var seed atomic.Uint64
		storetest.RunLinearizability(t, storetest.TokenHarness{
			New: func(t *testing.T) store.TokenStore {
				s, _ := newSplit(t, 3, func(_ int, p split.Part) store.TokenStore {
					return faultyPart{TokenStore: storetest.Faulty(p, seed.Add(1), 0.1), creator: p}
				})
				return s
			},
		}, storetest.LinearizabilityOptions{})
	})
}

// Conversations spread over the parts, and a signal's conversation sends
// its token's calls to one part.
func TestRoutesByConversation(t *testing.T) {
	t.Parallel()
	var calls [3]atomic.Int64
	s, mems := newSplit(t, 3, func(i int, p split.Part) store.TokenStore { return countingPart{p, &calls[i]} })
	ctx := t.Context()
	var roots []baton.Token
	for range 300 {
		root, err := s.Issue(ctx, baton.Token{Destination: "shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		if root.Conversation != root.ID {
			t.Fatalf("a new conversation's root %s is in conversation %s", root.ID, root.Conversation)
		}
		roots = append(roots, root)
	}
	for i, m := range mems {
		if n := m.Len() - 1; n < 60 { // less the part's mark
			t.Errorf("part %d holds %d of 300 conversations; want them spread", i+1, n)
		}
	}
	for i := range calls {
		calls[i].Store(0)
	}
	for _, root := range roots {
		child := baton.Token{ID: baton.NewTokenID(), Conversation: root.Conversation, Causation: root.ID, Destination: "billing",
			Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}
		hinted := store.WithConversation(ctx, root.Conversation)
		if _, err := s.Get(hinted, root.ID); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.Transition(hinted, root.ID, []baton.Token{child}); !ok || err != nil {
			t.Fatalf("transition: %v, %v", ok, err)
		}
		if ok, err := s.Transition(store.WithConversation(ctx, child.Conversation), child.ID, nil); !ok || err != nil {
			t.Fatalf("leaf transition: %v, %v", ok, err)
		}
	}
	total := calls[0].Load() + calls[1].Load() + calls[2].Load()
	if total != 3*300 {
		t.Errorf("%d calls to the parts for 300 gets and 600 transitions named by conversation; want one each", total)
	}

	// Without the conversation every part is asked, and the answer is the same.
	root, err := s.Issue(ctx, baton.Token{Destination: "shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, root.ID); err != nil || got.ID != root.ID {
		t.Errorf("Get without a conversation = %v, %v", got.ID, err)
	}
	if ok, err := s.Transition(ctx, root.ID, nil); !ok || err != nil {
		t.Errorf("a leaf transition without a conversation = %v, %v", ok, err)
	}
	if _, err := s.Get(ctx, root.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of the consumed root = %v; want ErrNotFound", err)
	}
}

// A part that fails makes a call without a conversation fail: the token may
// be in that part, so "absent" would drop a live signal as a duplicate.
func TestFailingPartIsNotAbsence(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	s := withPartDown(t, 3, &down)
	ctx := t.Context()
	down.Store(true)
	missing := baton.NewTokenID()
	if _, err := s.Get(ctx, missing); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get with a part down = %v; want its error, not ErrNotFound", err)
	}
	if ok, err := s.Transition(ctx, missing, nil); err == nil || ok {
		t.Errorf("Transition with a part down = %v, %v; want its error", ok, err)
	}
	if _, err := s.ClaimRoot(ctx, missing, time.Now()); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("ClaimRoot with a part down = %v; want its error, not ErrNotFound", err)
	}
}

// The parts are marked: another order or another count is refused.
func TestMarksRefuseOtherParts(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, b, c := memory.NewTokenStore(), memory.NewTokenStore(), memory.NewTokenStore()
	if _, err := split.Open(ctx, a, b, c); err != nil {
		t.Fatal(err)
	}
	if _, err := split.Open(ctx, a, b, c); err != nil {
		t.Fatalf("the same parts again: %v", err)
	}
	for name, parts := range map[string][]store.TokenStore{
		"another order": {b, a, c},
		"fewer parts":   {a, b},
		"more parts":    {a, b, c, memory.NewTokenStore()},
	} {
		if _, err := split.Open(ctx, parts...); !errors.Is(err, split.ErrMismatchedParts) {
			t.Errorf("%s: %v; want ErrMismatchedParts", name, err)
		}
	}
	if _, err := split.Open(ctx); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("no parts: %v; want ErrInvalid", err)
	}
}

// countingPart counts the calls that name a token.
type countingPart struct {
	split.Part
	calls *atomic.Int64
}

func (c countingPart) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	c.calls.Add(1)
	return c.Part.Get(ctx, id)
}

func (c countingPart) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	c.calls.Add(1)
	return c.Part.Transition(ctx, consume, create)
}

// failingPart fails every call that names a token while down.
type failingPart struct {
	split.Part
	down *atomic.Bool
}

var errDown = errors.New("part unreachable")

// withPartDown returns a store split over n parts whose second part fails
// every call while down is set.
func withPartDown(t *testing.T, n int, down *atomic.Bool) *split.Store {
	s, _ := newSplit(t, n, func(i int, p split.Part) store.TokenStore {
		if i == 1 {
			return failingPart{p, down}
		}
		return p
	})
	return s
}

func (f failingPart) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	if f.down.Load() {
		return baton.Token{}, errDown
	}
	return f.Part.Get(ctx, id)
}

func (f failingPart) ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	if f.down.Load() {
		return baton.Token{}, errDown
	}
	return f.Part.ClaimRoot(ctx, id, now)
}

func (f failingPart) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	if f.down.Load() {
		return false, errDown
	}
	return f.Part.Transition(ctx, consume, create)
}

func (f failingPart) ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	if f.down.Load() {
		return 0, fmt.Errorf("%w: %w", store.ErrNotApplied, errDown)
	}
	return f.Part.ExpireRoots(ctx, before, limit)
}

// A part down after another expired roots: the call says how many were
// deleted and that its outcome is unknown, never "not applied" (a review
// found the token service answering 503 "nothing was applied" then).
func TestExpiryWithAPartDownIsNotNotApplied(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	s := withPartDown(t, 2, &down)
	ctx := t.Context()
	past := time.Now().Add(-time.Hour)
	inFirst := 0
	for inFirst < 3 {
		root, err := s.Issue(ctx, baton.Token{Destination: "shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: past, ExpiresAt: past.Add(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		if split.PartOf(root.Conversation, 2) == 0 {
			inFirst++
		}
	}
	down.Store(true)
	n, err := s.ExpireRoots(ctx, time.Now(), 100)
	if n != inFirst || err == nil || store.NotApplied(err) {
		t.Errorf("ExpireRoots with the second part down = %d, %v; want %d and an error of unknown outcome", n, err, inFirst)
	}
}

// serviceClient serves tokens through a token service with sys as its one
// system, and returns a client of sys, the service's URL and sys's key.
func serviceClient(t *testing.T, tokens store.TokenStore, sys tokenservice.System) (*client.Client, string, string) {
	t.Helper()
	key, hash := tokenservice.NewAPIKey()
	sys.KeySHA256 = hash
	api, err := tokenservice.New(tokenservice.Config{Tokens: tokens, Systems: []tokenservice.System{sys}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, key, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, srv.URL, key
}

// Through the token service: the client names the signal's conversation
// (Baton-Conversation), so a service over a split store asks one part.
func TestThroughTheTokenService(t *testing.T) {
	t.Parallel()
	var calls [3]atomic.Int64
	s, _ := newSplit(t, 3, func(i int, p split.Part) store.TokenStore { return countingPart{p, &calls[i]} })
	c, srvURL, key := serviceClient(t, s, tokenservice.System{Name: "shop", IssueRoots: true, Destinations: []string{"shop"}})
	ctx := t.Context()
	root, err := c.Issue(ctx, baton.Token{Destination: "shop", Type: "order", Digest: baton.DigestOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	before := calls[0].Load() + calls[1].Load() + calls[2].Load()
	hinted := store.WithConversation(ctx, root.Conversation)
	if _, err := c.Get(hinted, root.ID); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Transition(hinted, root.ID, nil); !ok || err != nil {
		t.Fatalf("transition: %v, %v", ok, err)
	}
	// The service reads the token before it transitions it: two reads and
	// a transition, each in one part.
	if n := calls[0].Load() + calls[1].Load() + calls[2].Load() - before; n != 3 {
		t.Errorf("%d calls to the parts for a get and a transition naming the conversation; want 3", n)
	}
	req, _ := http.NewRequest("GET", srvURL+"/v1/tokens/"+root.ID.String(), nil)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set(tokenservice.ConversationHeader, "not-an-id")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("a malformed %s: %d; want 400", tokenservice.ConversationHeader, res.StatusCode)
	}
}

// A call that names another conversation than its token's finds the token
// all the same: the name only saves reads.
func TestAWrongConversationCostsOnlyReads(t *testing.T) {
	t.Parallel()
	s, _ := newSplit(t, 3, nil)
	ctx := t.Context()
	root, err := s.Issue(ctx, baton.Token{Destination: "shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	var wrong baton.TokenID
	for wrong = baton.NewTokenID(); ; wrong = baton.NewTokenID() {
		if _, err := s.Get(store.WithConversation(ctx, wrong), root.ID); err != nil {
			t.Fatalf("Get naming conversation %s = %v; want the token", wrong, err)
		}
		if split.PartOf(wrong, 3) != split.PartOf(root.Conversation, 3) {
			break // a conversation of another part: the case that matters
		}
	}
	misnamed := store.WithConversation(ctx, wrong)
	if _, err := s.ClaimRoot(misnamed, root.ID, time.Now()); err != nil {
		t.Errorf("ClaimRoot naming another part's conversation = %v", err)
	}
	if ok, err := s.Transition(misnamed, root.ID, nil); !ok || err != nil {
		t.Errorf("Transition naming another part's conversation = %v, %v; want it consumed", ok, err)
	}
	if _, err := s.Get(misnamed, root.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of the consumed token = %v", err)
	}
}

// batchCountingPart counts calls of a part that runs batches in one call.
type batchCountingPart struct {
	countingPart
	batches store.TokenBatcher
}

func (c batchCountingPart) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	c.calls.Add(1)
	return c.batches.GetTokens(ctx, ids)
}

func (c batchCountingPart) TransitionTokens(ctx context.Context, transitions []store.TokenTransition) ([]bool, []error, error) {
	c.calls.Add(1)
	return c.batches.TransitionTokens(ctx, transitions)
}

// TestBatchesGoOncePerPart: a batch's reads ask every part once, and its
// transitions go to their conversations' parts, one call each; a leaf
// transition without a conversation still finds its token.
func TestBatchesGoOncePerPart(t *testing.T) {
	t.Parallel()
	var calls [3]atomic.Int64
	s, _ := newSplit(t, 3, func(i int, p split.Part) store.TokenStore {
		return batchCountingPart{countingPart{p, &calls[i]}, p.(store.TokenBatcher)}
	})
	ctx := t.Context()
	total := func() int64 { return calls[0].Swap(0) + calls[1].Swap(0) + calls[2].Swap(0) }
	var ids []baton.TokenID
	var parents, leaves []store.TokenTransition
	for range 30 {
		root, err := s.Issue(ctx, baton.Token{Destination: "shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		child := baton.Token{ID: baton.NewTokenID(), Conversation: root.Conversation, Causation: root.ID, Destination: "billing",
			Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}
		ids = append(ids, root.ID)
		parents = append(parents, store.TokenTransition{Consume: root.ID, Create: []baton.Token{child}})
		leaves = append(leaves, store.TokenTransition{Consume: child.ID, Conversation: child.Conversation})
	}
	total()

	tokens, errs, err := s.GetTokens(ctx, append(ids, baton.NewTokenID()))
	if err != nil || errors.Join(errs[:30]...) != nil || !errors.Is(errs[30], store.ErrNotFound) {
		t.Fatalf("GetTokens = %v, %v; want 30 tokens and one ErrNotFound", errs, err)
	}
	for i, tok := range tokens[:30] {
		if tok.ID != ids[i] {
			t.Fatalf("GetTokens[%d] = %s, want %s", i, tok.ID, ids[i])
		}
	}
	if n := total(); n != 3 {
		t.Errorf("GetTokens of 31 ids made %d calls to the parts; want 3, one per part", n)
	}
	for _, step := range []struct {
		name  string
		batch []store.TokenTransition
	}{{"with children", parents}, {"leaves named by conversation", leaves}} { // in this order: the leaves are the children
		consumed, errs, err := s.TransitionTokens(ctx, step.batch)
		if err != nil || errors.Join(errs...) != nil || slices.Contains(consumed, false) {
			t.Fatalf("TransitionTokens %s = %v, %v, %v; want all consumed", step.name, consumed, errs, err)
		}
		if n := total(); n != 3 {
			t.Errorf("TransitionTokens of 30 %s made %d calls to the parts; want 3, one per part", step.name, n)
		}
	}

	// A leaf without its conversation is looked for in every part.
	root, err := s.Issue(ctx, baton.Token{Destination: "shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	consumed, errs, err := s.TransitionTokens(ctx, []store.TokenTransition{{Consume: root.ID}, {Consume: baton.NewTokenID()}})
	if err != nil || errors.Join(errs...) != nil || !consumed[0] || consumed[1] {
		t.Errorf("TransitionTokens of an unnamed leaf and an unknown token = %v, %v, %v; want true, false", consumed, errs, err)
	}
}

// TestHintedReadsAskTheirPart: a batch read whose tokens name their
// conversation asks only that conversation's part; without hints, with a
// wrong one or for a token that is gone, every part is asked, and the
// answers are the same.
func TestHintedReadsAskTheirPart(t *testing.T) {
	t.Parallel()
	var calls [3]atomic.Int64
	s, _ := newSplit(t, 3, func(i int, p split.Part) store.TokenStore {
		return batchCountingPart{countingPart{p, &calls[i]}, p.(store.TokenBatcher)}
	})
	ctx := t.Context()
	root, err := s.Issue(ctx, baton.Token{Destination: "shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	var children []baton.Token
	for range 5 {
		children = append(children, baton.Token{ID: baton.NewTokenID(), Conversation: root.Conversation, Causation: root.ID,
			Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	}
	if consumed, err := s.Transition(ctx, root.ID, children); err != nil || !consumed {
		t.Fatalf("Transition = %v, %v", consumed, err)
	}
	// elsewhere is a conversation kept by another part than root's.
	elsewhere := baton.NewTokenID()
	for split.PartOf(elsewhere, 3) == split.PartOf(root.Conversation, 3) {
		elsewhere = baton.NewTokenID()
	}
	lookups := func(conversation baton.TokenID) []store.TokenLookup {
		var out []store.TokenLookup
		for _, c := range children {
			out = append(out, store.TokenLookup{ID: c.ID, Conversation: conversation})
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		lookups []store.TokenLookup
		calls   int64
	}{
		{"hinted", lookups(root.Conversation), 1},
		{"unhinted", lookups(baton.TokenID{}), 3},
		{"wrongly hinted", lookups(elsewhere), 3},
	} {
		calls[0].Store(0)
		calls[1].Store(0)
		calls[2].Store(0)
		tokens, errs, err := s.GetTokensIn(ctx, tc.lookups)
		if err != nil || errors.Join(errs...) != nil {
			t.Fatalf("%s: GetTokensIn = %v, %v", tc.name, errs, err)
		}
		for i, tok := range tokens {
			if tok.ID != children[i].ID {
				t.Errorf("%s: token %d = %s, want %s", tc.name, i, tok.ID, children[i].ID)
			}
		}
		if n := calls[0].Load() + calls[1].Load() + calls[2].Load(); n != tc.calls {
			t.Errorf("%s: %d calls to the parts, want %d", tc.name, n, tc.calls)
		}
	}
	_, errs, err := s.GetTokensIn(ctx, []store.TokenLookup{{ID: baton.NewTokenID(), Conversation: root.Conversation}})
	if err != nil || !errors.Is(errs[0], store.ErrNotFound) {
		t.Errorf("GetTokensIn of an absent token = %v, %v; want ErrNotFound", errs, err)
	}
}

// shortPart answers one result fewer than asked for, after applying every
// transition: a broken part.
type shortPart struct {
	split.Part
	batcher store.TokenBatcher
}

func (p shortPart) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	tokens, errs, err := p.batcher.GetTokens(ctx, ids)
	if err != nil || len(ids) == 0 {
		return tokens, errs, err
	}
	return tokens[1:], errs[1:], nil
}

func (p shortPart) TransitionTokens(ctx context.Context, ts []store.TokenTransition) ([]bool, []error, error) {
	consumed, errs, err := p.batcher.TransitionTokens(ctx, ts)
	if err != nil || len(ts) == 0 {
		return consumed, errs, err
	}
	return consumed[1:], errs[1:], nil
}

// A part whose batch answer is short fails its items, as an unknown
// outcome for transitions (they may have run), instead of panicking.
func TestShortPartAnswers(t *testing.T) {
	t.Parallel()
	s, _ := newSplit(t, 2, func(_ int, p split.Part) store.TokenStore {
		return shortPart{p, p.(store.TokenBatcher)}
	})
	ctx := t.Context()
	var ids []baton.TokenID
	var batch []store.TokenTransition
	for range 10 {
		root, err := s.Issue(ctx, baton.Token{Destination: "shop", Type: "order", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, root.ID)
		batch = append(batch, store.TokenTransition{Consume: root.ID, Conversation: root.Conversation})
	}
	hinted := make([]store.TokenLookup, len(batch))
	for i, tr := range batch {
		hinted[i] = store.TokenLookup{ID: tr.Consume, Conversation: tr.Conversation}
	}
	for name, read := range map[string]func() ([]baton.Token, []error, error){
		"GetTokens":   func() ([]baton.Token, []error, error) { return s.GetTokens(ctx, ids) },
		"GetTokensIn": func() ([]baton.Token, []error, error) { return s.GetTokensIn(ctx, hinted) },
	} {
		_, errs, err := read()
		if err != nil {
			t.Fatalf("%s = %v", name, err)
		}
		for i, err := range errs {
			if err == nil || errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s[%d] over short answers = %v, want a failure (not absence)", name, i, err)
			}
		}
	}
	_, errs, err := s.TransitionTokens(ctx, batch)
	if err != nil {
		t.Fatalf("TransitionTokens = %v", err)
	}
	for i, err := range errs {
		if err == nil || store.NotApplied(err) {
			t.Errorf("TransitionTokens[%d] over a short answer = %v, want an unknown outcome", i, err)
		}
	}
}

// plantedCopy makes, in a split store of two parts, a live token addressed
// to "orders" (the original) and a copy of its id planted by "billing" in
// a conversation of the other part, as a caller that chooses a child's id
// can: ids are unique within a part only. It returns both.
func plantedCopy(t *testing.T, s store.TokenStore) (original, copied baton.Token) {
	t.Helper()
	ctx := t.Context()
	now := time.Now()
	original, err := s.Issue(ctx, baton.Token{Destination: "orders", Type: "place", Digest: baton.DigestOf(nil), CreatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	other := baton.NewTokenID()
	for split.PartOf(other, 2) == split.PartOf(original.Conversation, 2) {
		other = baton.NewTokenID()
	}
	billing, err := s.Issue(ctx, baton.Token{Conversation: other, Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	copied = baton.Token{ID: original.ID, Conversation: other, Causation: billing.ID, Destination: "billing", Type: "t",
		Digest: baton.DigestOf(nil), CreatedAt: now}
	if ok, err := s.Transition(ctx, billing.ID, []baton.Token{copied}); !ok || err != nil {
		t.Fatalf("planting the copy: %v, %v", ok, err)
	}
	return original, copied
}

// A write bound to the conversation the caller read its token in
// (store.BindConversations) consumes or claims in that part only: once the
// planted copy is gone, it does not go on to the original in the other
// part, as an unbound call would.
func TestBoundWritesStayInTheirPart(t *testing.T) {
	t.Parallel()
	s, _ := newSplit(t, 2, nil)
	ctx := t.Context()
	original, copied := plantedCopy(t, s)
	bound := store.BindConversations(store.WithConversation(ctx, copied.Conversation))
	if ok, err := s.Transition(bound, copied.ID, nil); !ok || err != nil {
		t.Fatalf("consuming the copy: %v, %v", ok, err)
	}
	if ok, err := s.Transition(bound, copied.ID, nil); ok || err != nil {
		t.Errorf("a second bound transition = %v, %v; want not consumed", ok, err)
	}
	if _, err := s.ClaimRoot(bound, copied.ID, time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a bound claim = %v; want not found", err)
	}
	consumed, errs, err := s.TransitionTokens(store.BindConversations(ctx), []store.TokenTransition{{Consume: copied.ID, Conversation: copied.Conversation}})
	if err != nil || consumed[0] || errs[0] != nil {
		t.Errorf("a bound batch transition = %v, %v, %v; want not consumed", consumed, errs, err)
	}
	if tok, err := s.Get(store.WithConversation(ctx, original.Conversation), original.ID); err != nil || tok.Destination != "orders" {
		t.Fatalf("the original after bound writes on the copy: %+v, %v; want it live", tok, err)
	}
}

// raceAfterRead consumes a token of billing's that it reads, in its own
// conversation, right after the read: a concurrent request of billing's
// that consumed it between the token service's read (its authorization)
// and its write.
type raceAfterRead struct{ store.TokenStore }

func (r raceAfterRead) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	tok, err := r.TokenStore.Get(ctx, id)
	if err == nil && tok.Destination == "billing" {
		_, _ = r.TokenStore.Transition(store.BindConversations(store.WithConversation(ctx, tok.Conversation)), id, nil)
	}
	return tok, err
}

// Through the token service, billing cannot consume orders' token by
// planting a copy of its id in a conversation of the other part and
// consuming the copy twice at once: the service writes the token it
// authorized, in its part only (a review found the second consumption
// landing on the original).
func TestTheServiceWritesTheTokenItAuthorized(t *testing.T) {
	t.Parallel()
	s, _ := newSplit(t, 2, nil)
	c, _, _ := serviceClient(t, raceAfterRead{s}, tokenservice.System{Name: "billing"})
	consumeOnce := map[string]func(copied baton.Token) (bool, error){
		"transition": func(copied baton.Token) (bool, error) {
			return c.Transition(store.WithConversation(t.Context(), copied.Conversation), copied.ID, nil)
		},
		"transition batch": func(copied baton.Token) (bool, error) {
			consumed, errs, err := c.TransitionTokens(t.Context(), []store.TokenTransition{{Consume: copied.ID, Conversation: copied.Conversation}})
			if err != nil {
				return false, err
			}
			return consumed[0], errs[0]
		},
	}
	for name, consume := range consumeOnce {
		original, copied := plantedCopy(t, s)
		// Unhinted, the read may find either copy: billing's (consumed
		// meanwhile) or orders' (403).
		var refused *client.ProblemError
		if ok, err := consume(copied); ok || err != nil && !(errors.As(err, &refused) && refused.Status == http.StatusForbidden) {
			t.Errorf("%s of billing's copy, consumed by another request meanwhile = %v, %v; want not consumed, or 403", name, ok, err)
		}
		if tok, err := s.Get(store.WithConversation(t.Context(), original.Conversation), original.ID); err != nil || tok.Destination != "orders" {
			t.Errorf("%s: orders' token after billing's: %+v, %v; want it live", name, tok, err)
		}
	}
}
