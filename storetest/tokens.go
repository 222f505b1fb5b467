package storetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// TokenHarness tells RunTokenStore how to open the store under test.
type TokenHarness struct {
	// New returns an empty store that no other call of New shares data
	// with, because subtests run in parallel. It registers the store's
	// cleanup with t.Cleanup.
	New func(t *testing.T) store.TokenStore
	// Reopen, if set, closes s and opens the store again over the same
	// data, for the durability checks. Leave it nil for a store that keeps
	// nothing across a restart; those checks are then skipped.
	Reopen func(t *testing.T, s store.TokenStore) store.TokenStore
}

// RunTokenStore checks that the stores h opens implement store.TokenStore
// as documented. Each check is a parallel subtest with its own store.
func RunTokenStore(t *testing.T, h TokenHarness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("storetest: TokenHarness.New is nil")
	}
	checks := []struct {
		name string
		run  func(*testing.T, TokenHarness)
	}{
		{"TransitionConsumesAndCreates", testTransitionConsumesAndCreates},
		{"TransitionWithoutChildren", testTransitionWithoutChildren},
		{"TransitionOfAbsentToken", testTransitionOfAbsentToken},
		{"TransitionTwice", testTransitionTwice},
		{"TransitionChildExists", testTransitionChildExists},
		{"TransitionInvalid", testTransitionInvalid},
		{"TransitionMaxChildren", testTransitionMaxChildren},
		{"ConcurrentTransitionsOfOneToken", testConcurrentTransitionsOfOneToken},
		{"ConcurrentTransitionsOfDistinctTokens", testConcurrentTransitionsOfDistinctTokens},
		{"Issue", testIssue},
		{"IssueChoosesFreshIDs", testIssueChoosesFreshIDs},
		{"GetAbsent", testGetAbsent},
		{"ListByConversation", testListByConversation},
		{"ListByDestination", testListByDestination},
		{"ListLimitCapped", testListLimitCapped},
		{"ExpireRoots", testExpireRoots},
		{"ExpireRootsLimit", testExpireRootsLimit},
		{"ExpiredRootStillConsumable", testExpiredRootStillConsumable},
		{"ClaimRoot", testClaimRoot},
		{"ClaimRootRaces", testClaimRootRaces},
		{"TransitionAtomicForReaders", testTransitionAtomicForReaders},
		{"TokenBatch", testTokenBatch},
		{"CancelledContext", testTokenCancelledContext},
		{"Durability", testTokenDurability},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, h)
		})
	}
}

func testTransitionConsumesAndCreates(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	parent := issue(ctx, t, s, newRoot(baton.TokenID{}, uniqueName("orders")))
	children := []baton.Token{
		newChild(parent, uniqueName("billing")),
		newChild(parent, uniqueName("shipping")),
		newChild(parent, parent.Destination),
	}
	transition(ctx, t, s, parent.ID, children)

	requireAbsent(ctx, t, s, parent.ID)
	requireLive(ctx, t, s, children...)
	requireConversation(ctx, t, s, parent.Conversation, children...)
}

func testTransitionWithoutChildren(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	parent := issue(ctx, t, s, newRoot(baton.TokenID{}, uniqueName("orders")))
	transition(ctx, t, s, parent.ID, nil)
	requireAbsent(ctx, t, s, parent.ID)
	requireConversation(ctx, t, s, parent.Conversation)
}

func testTransitionOfAbsentToken(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	other := issue(ctx, t, s, newRoot(baton.TokenID{}, uniqueName("orders")))

	// The absent token belongs to the same conversation as a live one, so a
	// store that keeps a conversation's tokens together is exercised too.
	absent := unissued(other.Conversation, other.Destination)
	children := newChildren(absent, uniqueName("billing"), 3)
	consumed, err := s.Transition(ctx, absent.ID, children)
	if err != nil || consumed {
		t.Fatalf("Transition of an absent token = %v, %v; want false, nil", consumed, err)
	}
	requireAbsent(ctx, t, s, idsOf(children)...)
	requireConversation(ctx, t, s, other.Conversation, other)

	fresh := unissued(baton.TokenID{}, uniqueName("orders"))
	consumed, err = s.Transition(ctx, fresh.ID, newChildren(fresh, fresh.Destination, 1))
	if err != nil || consumed {
		t.Fatalf("Transition of a token of an unknown conversation = %v, %v; want false, nil", consumed, err)
	}
	requireConversation(ctx, t, s, fresh.Conversation)
}

func testTransitionTwice(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	parent := issue(ctx, t, s, newRoot(baton.TokenID{}, uniqueName("orders")))
	first := newChildren(parent, uniqueName("billing"), 2)
	transition(ctx, t, s, parent.ID, first)

	second := newChildren(parent, uniqueName("billing"), 2)
	consumed, err := s.Transition(ctx, parent.ID, second)
	if err != nil || consumed {
		t.Fatalf("second Transition of the same token = %v, %v; want false, nil", consumed, err)
	}
	requireAbsent(ctx, t, s, idsOf(second)...)
	requireLive(ctx, t, s, first...)
	requireConversation(ctx, t, s, parent.Conversation, first...)

	// A retry with the very same children, as after an unknown outcome,
	// must not recreate them either once they are consumed.
	transition(ctx, t, s, first[0].ID, nil)
	consumed, err = s.Transition(ctx, parent.ID, first)
	if err != nil || consumed {
		t.Fatalf("retried Transition after a child was consumed = %v, %v; want false, nil", consumed, err)
	}
	requireAbsent(ctx, t, s, first[0].ID)
	requireConversation(ctx, t, s, parent.Conversation, first[1])
}

func testTransitionChildExists(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	parent := issue(ctx, t, s, newRoot(baton.TokenID{}, uniqueName("orders")))
	existing := issue(ctx, t, s, newRoot(parent.Conversation, uniqueName("billing")))

	clash := newChild(parent, uniqueName("shipping"))
	clash.ID = existing.ID
	fresh := newChildren(parent, uniqueName("billing"), 2)
	consumed, err := s.Transition(ctx, parent.ID, []baton.Token{fresh[0], clash, fresh[1]})
	if !errors.Is(err, store.ErrExists) {
		t.Fatalf("Transition creating an existing token = %v, %v; want an error matching store.ErrExists", consumed, err)
	}
	if consumed {
		t.Errorf("Transition reported consumed=true together with %v", err)
	}
	requireLive(ctx, t, s, parent, existing)
	requireAbsent(ctx, t, s, idsOf(fresh)...)
	requireConversation(ctx, t, s, parent.Conversation, parent, existing)
}

func testTransitionInvalid(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	parent := issue(ctx, t, s, newRoot(baton.TokenID{}, uniqueName("orders")))
	destination := uniqueName("billing")

	valid := newChild(parent, destination)
	withoutID := newChild(parent, destination)
	withoutID.ID = baton.TokenID{}
	withoutConversation := newChild(parent, destination)
	withoutConversation.Conversation = baton.TokenID{}
	withoutDestination := newChild(parent, "")
	duplicate := newChild(parent, destination)
	duplicate.ID = valid.ID
	parentAgain := newChild(parent, destination)
	parentAgain.ID = parent.ID
	tooMany := newChildren(parent, destination, store.MaxTokensPerTransition+1)

	cases := []struct {
		name    string
		consume baton.TokenID
		create  []baton.Token
	}{
		{"zero token to consume", baton.TokenID{}, []baton.Token{valid}},
		{"child without id", parent.ID, []baton.Token{valid, withoutID}},
		{"child without conversation", parent.ID, []baton.Token{valid, withoutConversation}},
		{"child without destination", parent.ID, []baton.Token{valid, withoutDestination}},
		{"duplicate child ids", parent.ID, []baton.Token{valid, duplicate}},
		{"child with the consumed token's id", parent.ID, []baton.Token{valid, parentAgain}},
		{"more than MaxTokensPerTransition children", parent.ID, tooMany},
	}
	for _, c := range cases {
		consumed, err := s.Transition(ctx, c.consume, c.create)
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Transition with %s = %v, %v; want an error matching store.ErrInvalid", c.name, consumed, err)
		}
		if consumed {
			t.Errorf("Transition with %s reported consumed=true", c.name)
		}
	}
	requireLive(ctx, t, s, parent)
	requireAbsent(ctx, t, s, valid.ID, tooMany[0].ID, tooMany[len(tooMany)-1].ID)
	requireConversation(ctx, t, s, parent.Conversation, parent)

	before, err := s.ListByConversation(ctx, parent.Conversation, store.Page{Limit: store.MaxPageLimit})
	if err != nil {
		t.Fatalf("ListByConversation = %v", err)
	}
	withCausation := newRoot(parent.Conversation, destination)
	withCausation.Causation = parent.ID
	invalidRoots := map[string]baton.Token{
		"without destination": newRoot(parent.Conversation, ""),
		"without type":        func() baton.Token { r := newRoot(parent.Conversation, destination); r.Type = ""; return r }(),
		"with a causation":    withCausation,
	}
	for name, root := range invalidRoots {
		if got, err := s.Issue(ctx, root); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Issue of a root %s = %+v, %v; want an error matching store.ErrInvalid", name, got, err)
		}
	}
	requireConversation(ctx, t, s, parent.Conversation, before...)
}

func testTransitionMaxChildren(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	parent := issue(ctx, t, s, newRoot(baton.TokenID{}, uniqueName("orders")))
	children := newChildren(parent, uniqueName("billing"), store.MaxTokensPerTransition)
	transition(ctx, t, s, parent.ID, children)
	requireAbsent(ctx, t, s, parent.ID)
	requireLive(ctx, t, s, children[0], children[len(children)/2], children[len(children)-1])
	requireConversation(ctx, t, s, parent.Conversation, children...)
}

func testConcurrentTransitionsOfOneToken(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	parent := issue(ctx, t, s, newRoot(baton.TokenID{}, uniqueName("orders")))

	const racers = 32
	destination := uniqueName("billing")
	children := make([][]baton.Token, racers)
	for i := range children {
		children[i] = newChildren(parent, destination, 2)
	}
	consumed := make([]bool, racers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			<-start
			ok, err := transitionRetrying(ctx, s, parent.ID, children[i])
			if err != nil {
				t.Errorf("racer %d: Transition = %v", i, err)
			}
			consumed[i] = ok
		})
	}
	close(start)
	wg.Wait()

	var winners []int
	for i, ok := range consumed {
		if ok {
			winners = append(winners, i)
		} else {
			requireAbsent(ctx, t, s, idsOf(children[i])...)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d of %d concurrent transitions of one token consumed it (racers %v), want exactly 1", len(winners), racers, winners)
	}
	requireAbsent(ctx, t, s, parent.ID)
	requireLive(ctx, t, s, children[winners[0]]...)
	requireConversation(ctx, t, s, parent.Conversation, children[winners[0]]...)
}

func testConcurrentTransitionsOfDistinctTokens(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	const conversations, perConversation = 4, 16
	destination := uniqueName("orders")
	var parents []baton.Token
	for range conversations {
		conversation := baton.NewTokenID()
		for range perConversation {
			parents = append(parents, newRoot(conversation, destination))
		}
	}

	// Issue and transition concurrently, many in the same conversation, so
	// that a store which serialises per conversation is contended.
	var wg sync.WaitGroup
	for i, p := range parents {
		wg.Go(func() {
			tok, err := issueRetrying(ctx, s, p)
			if err != nil {
				t.Errorf("concurrent Issue(%s root) = %v", p.Type, err)
			}
			parents[i] = tok
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	children := make([][]baton.Token, len(parents))
	for i, p := range parents {
		children[i] = newChildren(p, destination, 2)
	}
	start := make(chan struct{})
	for i, p := range parents {
		wg.Go(func() {
			<-start
			consumed, err := transitionRetrying(ctx, s, p.ID, children[i])
			if err != nil || !consumed {
				t.Errorf("concurrent Transition(%s) = %v, %v; want true, nil", p.ID, consumed, err)
			}
		})
	}
	close(start)
	wg.Wait()

	requireAbsent(ctx, t, s, idsOf(parents)...)
	for c := range conversations {
		var want []baton.Token
		for i := c * perConversation; i < (c+1)*perConversation; i++ {
			want = append(want, children[i]...)
		}
		requireConversation(ctx, t, s, parents[c*perConversation].Conversation, want...)
	}
}

func testIssue(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	expiring := newRoot(baton.TokenID{}, uniqueName("orders"))
	expiring.ExpiresAt = timestamp(time.Hour)
	expiring = issue(ctx, t, s, expiring)
	lasting := issue(ctx, t, s, newRoot(baton.TokenID{}, uniqueName("orders")))
	joining := issue(ctx, t, s, newRoot(expiring.Conversation, uniqueName("orders")))
	requireLive(ctx, t, s, expiring, lasting, joining)
	requireConversation(ctx, t, s, expiring.Conversation, expiring, joining)
	if expiring.Conversation != expiring.ID {
		t.Errorf("a root issued without a conversation is in conversation %s, want its own id %s", expiring.Conversation, expiring.ID)
	}

	got, err := s.Get(ctx, lasting.ID)
	if err == nil && !got.ExpiresAt.IsZero() {
		t.Errorf("a root issued without expiry came back with ExpiresAt %s", got.ExpiresAt)
	}
	if err == nil && !got.Root() {
		t.Errorf("an issued root came back with causation %s", got.Causation)
	}
}

// testIssueChoosesFreshIDs: the store chooses every root's id, so no
// caller can issue the id of a live or consumed token again: a consumed
// root brought back would let a redelivered copy of its signal be
// applied a second time.
func testIssueChoosesFreshIDs(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	original := issue(ctx, t, s, newRoot(baton.TokenID{}, uniqueName("orders")))
	children := newChildren(original, original.Destination, 1)
	transition(ctx, t, s, original.ID, children)

	for _, id := range []baton.TokenID{original.ID, children[0].ID, baton.NewTokenID()} {
		again := newRoot(baton.TokenID{}, original.Destination)
		again.ID = id
		if got, err := s.Issue(ctx, again); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Issue naming id %s = %+v, %v; want an error matching store.ErrInvalid", id, got, err)
		}
	}
	requireAbsent(ctx, t, s, original.ID)
	requireLive(ctx, t, s, children...)

	seen := map[baton.TokenID]bool{original.ID: true, children[0].ID: true}
	template := newRoot(baton.TokenID{}, original.Destination)
	for range 20 {
		tok := issue(ctx, t, s, template)
		if seen[tok.ID] {
			t.Fatalf("Issue returned id %s twice", tok.ID)
		}
		seen[tok.ID] = true
	}
}

func testGetAbsent(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	live := issue(ctx, t, s, newRoot(baton.TokenID{}, uniqueName("orders")))
	requireAbsent(ctx, t, s, baton.NewTokenID())
	transition(ctx, t, s, live.ID, nil)
	requireAbsent(ctx, t, s, live.ID)
}

// lister is one of the two listings, bound to its key.
type lister func(ctx context.Context, page store.Page) ([]baton.Token, error)

// listAll pages through a listing with the given page size and checks
// every page: ascending ids after page.After, full pages until the last.
func listAll(ctx context.Context, t *testing.T, list lister, limit int) []baton.Token {
	t.Helper()
	var all []baton.Token
	page := store.Page{Limit: limit}
	for pages := 0; ; pages++ {
		if pages > 100000 {
			t.Fatalf("listing with limit %d did not end after %d pages", limit, pages)
		}
		got, err := list(ctx, page)
		if err != nil {
			t.Fatalf("listing page after %s with limit %d: %v", page.After, limit, err)
		}
		if len(got) > page.Size() {
			t.Fatalf("listing page with limit %d returned %d tokens", limit, len(got))
		}
		for i, tok := range got {
			prev := page.After
			if i > 0 {
				prev = got[i-1].ID
			}
			if compareIDs(tok.ID, prev) <= 0 {
				t.Fatalf("listing page after %s: token %d (%s) does not follow %s in ascending id order", page.After, i, tok.ID, prev)
			}
		}
		all = append(all, got...)
		if len(got) < page.Size() {
			return all
		}
		page.After = got[len(got)-1].ID
	}
}

// checkListing runs every check of one listing. want holds the live tokens
// the listing must return; the store also holds tokens it must not return.
func checkListing(ctx context.Context, t *testing.T, name string, list lister, want []baton.Token) {
	t.Helper()
	want = sortTokens(want)
	if len(want) <= store.DefaultPageLimit {
		t.Fatalf("storetest: checkListing needs more than %d tokens, got %d", store.DefaultPageLimit, len(want))
	}

	for _, limit := range []int{1, 64, store.MaxPageLimit} {
		requireTokens(t, name+" paged by "+strconv.Itoa(limit), listAll(ctx, t, list, limit), want)
	}

	got, err := list(ctx, store.Page{})
	if err != nil {
		t.Fatalf("%s with the zero Page: %v", name, err)
	}
	requireTokens(t, name+" with the zero Page (DefaultPageLimit)", got, want[:store.DefaultPageLimit])

	got, err = list(ctx, store.Page{After: want[41].ID, Limit: 10})
	if err != nil {
		t.Fatalf("%s after a listed token: %v", name, err)
	}
	requireTokens(t, name+" after a listed token", got, want[42:52])

	got, err = list(ctx, store.Page{After: want[len(want)-1].ID})
	if err != nil {
		t.Fatalf("%s after the last token: %v", name, err)
	}
	requireTokens(t, name+" after the last token", got, nil)

	// page.After need not be a live token; the listing resumes after it.
	after := baton.NewTokenID()
	var rest []baton.Token
	for _, tok := range want {
		if compareIDs(tok.ID, after) > 0 {
			rest = append(rest, tok)
		}
	}
	requireTokens(t, name+" after an id that is not live", listAll(ctx, t, func(ctx context.Context, page store.Page) ([]baton.Token, error) {
		if page.After.IsZero() {
			page.After = after
		}
		return list(ctx, page)
	}, 50), rest)
}

func testListByConversation(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	destinations := []string{uniqueName("orders"), uniqueName("billing")}

	// 250 tokens in the conversation, made by a transition and by issues,
	// with two destinations; other conversations share those destinations.
	root := issue(ctx, t, s, newRoot(baton.TokenID{}, destinations[0]))
	var want []baton.Token
	for i := range 240 {
		want = append(want, newChild(root, destinations[i%2]))
	}
	transition(ctx, t, s, root.ID, want)
	for i := range 10 {
		extra := issue(ctx, t, s, newRoot(root.Conversation, destinations[i%2]))
		want = append(want, extra)
	}
	for range 3 {
		other := issue(ctx, t, s, newRoot(baton.TokenID{}, destinations[0]))
		transition(ctx, t, s, other.ID, newChildren(other, destinations[1], 10))
	}

	checkListing(ctx, t, "ListByConversation", func(ctx context.Context, page store.Page) ([]baton.Token, error) {
		return s.ListByConversation(ctx, root.Conversation, page)
	}, want)

	got, err := s.ListByConversation(ctx, baton.NewTokenID(), store.Page{})
	if err != nil || len(got) != 0 {
		t.Errorf("ListByConversation of an unknown conversation = %d tokens, %v; want none, nil", len(got), err)
	}
}

func testListByDestination(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	destination := uniqueName("orders")
	// Names that a store matching by prefix, pattern or case would confuse
	// with destination.
	others := []string{
		destination + "x",
		destination + ".x",
		destination[:len(destination)-1],
		destination[:len(destination)-1] + "%",
		destination[:len(destination)-1] + "_",
		destination + "*",
		strings.ToUpper(destination),
	}

	// 250 tokens for destination, spread over several conversations.
	var want []baton.Token
	for c := range 5 {
		root := issue(ctx, t, s, newRoot(baton.TokenID{}, others[c]))
		children := newChildren(root, destination, 45)
		children = append(children, newChildren(root, others[c+1], 5)...)
		transition(ctx, t, s, root.ID, children)
		want = append(want, children[:45]...)
		for range 5 {
			extra := issue(ctx, t, s, newRoot(root.Conversation, destination))
			want = append(want, extra)
		}
	}
	for _, name := range others {
		issue(ctx, t, s, newRoot(baton.TokenID{}, name))
	}

	checkListing(ctx, t, "ListByDestination", func(ctx context.Context, page store.Page) ([]baton.Token, error) {
		return s.ListByDestination(ctx, destination, page)
	}, want)

	got, err := s.ListByDestination(ctx, uniqueName("nobody"), store.Page{})
	if err != nil || len(got) != 0 {
		t.Errorf("ListByDestination of an unknown destination = %d tokens, %v; want none, nil", len(got), err)
	}
}

func testListLimitCapped(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	destination := uniqueName("orders")
	first := issue(ctx, t, s, newRoot(baton.TokenID{}, destination))
	second := issue(ctx, t, s, newRoot(first.Conversation, destination))
	want := newChildren(first, destination, store.MaxTokensPerTransition)
	transition(ctx, t, s, first.ID, want)
	more := newChildren(second, destination, 100)
	transition(ctx, t, s, second.ID, more)
	want = sortTokens(append(want, more...))

	page := store.Page{Limit: store.MaxPageLimit + 500}
	got, err := s.ListByConversation(ctx, first.Conversation, page)
	if err != nil {
		t.Fatalf("ListByConversation with limit %d: %v", page.Limit, err)
	}
	requireTokens(t, "ListByConversation with a limit above MaxPageLimit", got, want[:store.MaxPageLimit])
	got, err = s.ListByDestination(ctx, destination, page)
	if err != nil {
		t.Fatalf("ListByDestination with limit %d: %v", page.Limit, err)
	}
	requireTokens(t, "ListByDestination with a limit above MaxPageLimit", got, want[:store.MaxPageLimit])
}

func testExpireRoots(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	destination := uniqueName("orders")
	now := timestamp(0)
	expiringAt := func(at time.Time) baton.Token {
		root := newRoot(baton.TokenID{}, destination)
		root.ExpiresAt = at
		return issue(ctx, t, s, root)
	}
	longExpired := expiringAt(now.Add(-48 * time.Hour))
	justExpired := expiringAt(now.Add(-time.Microsecond))
	atCutoff := expiringAt(now) // not before now: kept
	future := expiringAt(now.Add(time.Hour))
	lasting := issue(ctx, t, s, newRoot(baton.TokenID{}, destination))
	parent := issue(ctx, t, s, newRoot(baton.TokenID{}, destination))
	children := newChildren(parent, destination, 3)
	transition(ctx, t, s, parent.ID, children)

	n, err := s.ExpireRoots(ctx, now, 100)
	if err != nil || n != 2 {
		t.Fatalf("ExpireRoots(now, 100) = %d, %v; want 2, nil", n, err)
	}
	requireAbsent(ctx, t, s, longExpired.ID, justExpired.ID)
	requireLive(ctx, t, s, atCutoff, future, lasting)
	requireLive(ctx, t, s, children...)

	n, err = s.ExpireRoots(ctx, now, 100)
	if err != nil || n != 0 {
		t.Errorf("ExpireRoots with nothing left to expire = %d, %v; want 0, nil", n, err)
	}
	// An expired and deleted root is gone for Transition as well.
	consumed, err := s.Transition(ctx, longExpired.ID, newChildren(longExpired, destination, 1))
	if err != nil || consumed {
		t.Errorf("Transition of a deleted expired root = %v, %v; want false, nil", consumed, err)
	}

	// Far in the future every expiring root goes, and nothing else.
	n, err = s.ExpireRoots(ctx, now.Add(1000*time.Hour), 100)
	if err != nil || n != 2 {
		t.Fatalf("ExpireRoots(far future, 100) = %d, %v; want 2, nil", n, err)
	}
	requireAbsent(ctx, t, s, atCutoff.ID, future.ID)
	requireLive(ctx, t, s, lasting)
	requireLive(ctx, t, s, children...)
}

func testExpireRootsLimit(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	destination := uniqueName("orders")
	now := timestamp(0)
	var expired []baton.Token
	for i := range 5 {
		root := newRoot(baton.TokenID{}, destination)
		root.ExpiresAt = now.Add(-time.Duration(i+1) * time.Minute)
		expired = append(expired, issue(ctx, t, s, root))
	}

	total := 0
	for _, want := range []int{2, 2, 1, 0} {
		n, err := s.ExpireRoots(ctx, now, 2)
		if err != nil || n != want {
			t.Fatalf("ExpireRoots(now, 2) after %d deleted = %d, %v; want %d, nil", total, n, err, want)
		}
		total += n
		live := 0
		for _, root := range expired {
			if _, err := s.Get(ctx, root.ID); err == nil {
				live++
			} else if !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Get(%s) = %v", root.ID, err)
			}
		}
		if live != len(expired)-total {
			t.Fatalf("after ExpireRoots reported %d deletions in all, %d of %d roots are live, want %d", total, live, len(expired), len(expired)-total)
		}
	}
}

func testExpiredRootStillConsumable(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	root := newRoot(baton.TokenID{}, uniqueName("orders"))
	root.ExpiresAt = timestamp(-time.Hour)
	root = issue(ctx, t, s, root)
	requireLive(ctx, t, s, root)
	children := newChildren(root, uniqueName("billing"), 2)
	transition(ctx, t, s, root.ID, children)
	requireAbsent(ctx, t, s, root.ID)
	requireLive(ctx, t, s, children...)
}

// testClaimRoot: a claimed root stops expiring and is otherwise the same
// token; an expired, absent or unexpiring token is refused or unchanged.
func testClaimRoot(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	destination := uniqueName("orders")
	now := timestamp(0)
	expiringAt := func(at time.Time) baton.Token {
		root := newRoot(baton.TokenID{}, destination)
		root.ExpiresAt = at
		return issue(ctx, t, s, root)
	}
	pending := expiringAt(now.Add(time.Hour))
	expired := expiringAt(now.Add(-time.Microsecond))
	atNow := expiringAt(now) // expires at now: too late
	lasting := issue(ctx, t, s, newRoot(baton.TokenID{}, destination))

	claimed, err := s.ClaimRoot(ctx, pending.ID, now)
	want := pending
	want.ExpiresAt = time.Time{}
	if err != nil {
		t.Fatalf("ClaimRoot of a pending root = %v", err)
	}
	if d := tokenDiff(claimed, want); d != "" {
		t.Errorf("ClaimRoot returned another token: %s", d)
	}
	requireLive(ctx, t, s, want)
	again, err := s.ClaimRoot(ctx, pending.ID, now.Add(2*time.Hour))
	if err != nil || tokenDiff(again, want) != "" {
		t.Errorf("ClaimRoot of a claimed root, after its old expiry = %+v, %v; want it unchanged", again, err)
	}
	if got, err := s.ClaimRoot(ctx, lasting.ID, now); err != nil || tokenDiff(got, lasting) != "" {
		t.Errorf("ClaimRoot of a root without expiry = %+v, %v; want it unchanged", got, err)
	}
	for name, tok := range map[string]baton.Token{"expired": expired, "expiring at now": atNow} {
		if got, err := s.ClaimRoot(ctx, tok.ID, now); !errors.Is(err, store.ErrExpired) {
			t.Errorf("ClaimRoot of a root %s = %+v, %v; want an error matching store.ErrExpired", name, got, err)
		}
	}
	requireLive(ctx, t, s, expired, atNow)
	if got, err := s.ClaimRoot(ctx, unissued(baton.TokenID{}, destination).ID, now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ClaimRoot of an absent token = %+v, %v; want an error matching store.ErrNotFound", got, err)
	}

	// Expiry takes the unclaimed ones only, and the claimed root goes on
	// to its transition.
	n, err := s.ExpireRoots(ctx, now.Add(1000*time.Hour), 100)
	if err != nil || n != 2 {
		t.Fatalf("ExpireRoots(far future) = %d, %v; want 2 (the unclaimed expiring roots), nil", n, err)
	}
	requireAbsent(ctx, t, s, expired.ID, atNow.ID)
	requireLive(ctx, t, s, want, lasting)
	children := newChildren(want, destination, 2)
	transition(ctx, t, s, want.ID, children)
	if got, err := s.ClaimRoot(ctx, want.ID, now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ClaimRoot of a consumed root = %+v, %v; want an error matching store.ErrNotFound", got, err)
	}
}

// testClaimRootRaces runs ClaimRoot against ExpireRoots and Transition for
// many roots at once. A claimed root is never deleted by expiry (else the
// transition after its activity's commit would find nothing to consume),
// and a consumed root never comes back (else a redelivered copy would be
// applied again): a store whose ClaimRoot reads and writes in two steps
// breaks one or the other.
func testClaimRootRaces(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	destination := uniqueName("orders")
	now := timestamp(0)
	const roots = 64
	tokens := make([]baton.Token, roots)
	for i := range tokens {
		root := newRoot(baton.TokenID{}, destination)
		root.ExpiresAt = now.Add(time.Hour)
		tokens[i] = issue(ctx, t, s, root)
	}
	claimed, consumed := make([]bool, roots), make([]bool, roots)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, tok := range tokens {
		wg.Go(func() {
			<-start
			_, err := s.ClaimRoot(ctx, tok.ID, now)
			switch {
			case err == nil:
				claimed[i] = true
			case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrNotApplied):
			default:
				t.Errorf("ClaimRoot(%s) = %v", tok.ID, err)
			}
		})
		if i%2 == 0 {
			wg.Go(func() {
				<-start
				ok, err := transitionRetrying(ctx, s, tok.ID, nil)
				if err != nil {
					t.Errorf("Transition(%s) = %v", tok.ID, err)
				}
				consumed[i] = ok
			})
		}
	}
	for range 4 {
		wg.Go(func() {
			<-start
			// Expiry far in the future deletes every root not yet claimed.
			for range 8 {
				if _, err := s.ExpireRoots(ctx, now.Add(1000*time.Hour), 8); err != nil && !errors.Is(err, store.ErrNotApplied) {
					t.Errorf("ExpireRoots = %v", err)
				}
			}
		})
	}
	close(start)
	wg.Wait()
	for i, tok := range tokens {
		_, err := s.Get(ctx, tok.ID)
		switch {
		case consumed[i] && !errors.Is(err, store.ErrNotFound):
			t.Errorf("root %s: consumed, then Get = %v: it came back", tok.ID, err)
		case consumed[i]:
		case claimed[i] && err != nil:
			t.Errorf("root %s: ClaimRoot succeeded, then the root was gone: %v", tok.ID, err)
		case claimed[i]:
			if ok, err := s.Transition(ctx, tok.ID, nil); err != nil || !ok {
				t.Errorf("root %s: claimed but its transition = %v, %v", tok.ID, ok, err)
			}
		case err != nil && !errors.Is(err, store.ErrNotFound):
			t.Errorf("Get(%s) = %v", tok.ID, err)
		}
	}
}

// testTransitionAtomicForReaders: readers of a conversation whose one live
// token is consumed by a transition that creates one child must always
// see exactly one of the two. A store that deletes the parent and creates
// the children in two steps shows a moment with neither, in which a
// redelivered copy of the parent's signal is a duplicate and the child's
// signal is one too: the child's activity is lost.
func testTransitionAtomicForReaders(t *testing.T, h TokenHarness) {
	ctx, s := testContext(t), h.New(t)
	destination := uniqueName("orders")
	const rounds, readers = 200, 16
	for round := range rounds {
		parent := issue(ctx, t, s, newRoot(baton.TokenID{}, destination))
		child := newChild(parent, destination)
		done := make(chan struct{})
		problems := make(chan string, readers)
		var wg, reading sync.WaitGroup
		reading.Add(readers)
		for range readers {
			wg.Go(func() {
				for first := true; ; first = false {
					if first {
						reading.Done()
					}
					select {
					case <-done:
						return
					default:
					}
					live, err := s.ListByConversation(ctx, parent.Conversation, store.Page{})
					switch {
					case errors.Is(err, store.ErrNotApplied):
					case err != nil:
						problems <- fmt.Sprintf("ListByConversation = %v", err)
						return
					case len(live) != 1 || live[0].ID != parent.ID && live[0].ID != child.ID:
						problems <- fmt.Sprintf("the conversation held %d tokens %v, want the parent or its child: the transition was seen half done", len(live), idsOf(live))
						return
					}
				}
			})
		}
		reading.Wait() // the readers contend with the transition
		transition(ctx, t, s, parent.ID, []baton.Token{child})
		close(done)
		wg.Wait()
		close(problems)
		for p := range problems {
			t.Fatalf("round %d of %d: %s", round+1, rounds, p)
		}
		transition(ctx, t, s, child.ID, nil)
	}
}

func testTokenCancelledContext(t *testing.T, h TokenHarness) {
	live, s := testContext(t), h.New(t)
	root := issue(live, t, s, newRoot(baton.TokenID{}, uniqueName("orders")))

	ctx, cancel := context.WithCancel(live)
	cancel()
	fresh := newRoot(baton.TokenID{}, root.Destination)
	if _, err := s.Transition(ctx, root.ID, newChildren(root, root.Destination, 1)); err == nil {
		t.Error("Transition with a cancelled context returned no error")
	}
	if _, err := s.Issue(ctx, fresh); err == nil {
		t.Error("Issue with a cancelled context returned no error")
	}
	if _, err := s.Get(ctx, root.ID); err == nil {
		t.Error("Get with a cancelled context returned no error")
	}
	if _, err := s.ListByConversation(ctx, root.Conversation, store.Page{}); err == nil {
		t.Error("ListByConversation with a cancelled context returned no error")
	}
	if _, err := s.ListByDestination(ctx, root.Destination, store.Page{}); err == nil {
		t.Error("ListByDestination with a cancelled context returned no error")
	}
	if _, err := s.ExpireRoots(ctx, time.Now().Add(time.Hour), 10); err == nil {
		t.Error("ExpireRoots with a cancelled context returned no error")
	}
	if _, err := s.ClaimRoot(ctx, root.ID, time.Now()); err == nil {
		t.Error("ClaimRoot with a cancelled context returned no error")
	}
}

func testTokenDurability(t *testing.T, h TokenHarness) {
	if h.Reopen == nil {
		t.Skip("TokenHarness.Reopen is nil: the store is not durable, durability not checked")
	}
	ctx, s := testContext(t), h.New(t)
	destination := uniqueName("orders")
	parent := issue(ctx, t, s, newRoot(baton.TokenID{}, destination))
	expiring := newRoot(parent.Conversation, destination)
	expiring.ExpiresAt = timestamp(time.Hour)
	children := newChildren(parent, uniqueName("billing"), 3)
	transition(ctx, t, s, parent.ID, children)
	expiring = issue(ctx, t, s, expiring)
	claimed := newRoot(parent.Conversation, destination)
	claimed.ExpiresAt = timestamp(time.Hour)
	claimed = issue(ctx, t, s, claimed)
	claimed, err := s.ClaimRoot(ctx, claimed.ID, timestamp(0))
	if err != nil {
		t.Fatalf("ClaimRoot = %v", err)
	}

	s = h.Reopen(t, s)
	requireAbsent(ctx, t, s, parent.ID)
	requireLive(ctx, t, s, expiring, claimed)
	if n, err := s.ExpireRoots(ctx, timestamp(1000*time.Hour), 10); err != nil || n != 1 {
		t.Errorf("ExpireRoots after the reopen = %d, %v; want 1 (the unclaimed root), nil", n, err)
	}
	requireAbsent(ctx, t, s, expiring.ID)
	requireLive(ctx, t, s, children...)
	requireConversation(ctx, t, s, parent.Conversation, append([]baton.Token{claimed}, children...)...)

	// The reopened store keeps enforcing the transition rule.
	consumed, err := s.Transition(ctx, parent.ID, newChildren(parent, destination, 1))
	if err != nil || consumed {
		t.Errorf("Transition of a token consumed before the reopen = %v, %v; want false, nil", consumed, err)
	}
	transition(ctx, t, s, children[0].ID, nil)
	requireAbsent(ctx, t, s, children[0].ID)
}
