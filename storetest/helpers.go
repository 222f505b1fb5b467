package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// callTimeout bounds every subtest so that a backend that hangs fails the
// test instead of stalling the whole run.
const callTimeout = 60 * time.Second

// retryLimit bounds how often the concurrency checks repeat an operation
// that a backend rejected with store.ErrNotApplied (for example a
// serialization failure it chose not to retry itself), as the engine does.
const retryLimit = 200

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

// timestamp returns a time near now in UTC, truncated to microseconds but
// with a non-zero sub-millisecond part, so that a store that keeps only
// milliseconds (or seconds) fails the round-trip checks.
func timestamp(offset time.Duration) time.Time {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return now.Add(offset + time.Duration(1+mathrand.IntN(999))*time.Microsecond)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// uniqueName returns a destination or type name that no other test uses.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%x", prefix, randomBytes(6))
}

// newRoot returns a root token to issue, addressed to destination, in
// conversation (zero: a conversation of its own). Its id is zero: the
// store chooses it.
func newRoot(conversation baton.TokenID, destination string) baton.Token {
	return baton.Token{
		Conversation: conversation,
		Destination:  destination,
		Type:         uniqueName("type"),
		Digest:       baton.DigestOf(randomBytes(32)),
		CreatedAt:    timestamp(0),
	}
}

// unissued returns a root token with an id that no store holds: the token
// of a signal that was never issued, or was consumed long ago.
func unissued(conversation baton.TokenID, destination string) baton.Token {
	t := newRoot(conversation, destination)
	t.ID = baton.NewTokenID()
	if t.Conversation.IsZero() {
		t.Conversation = t.ID
	}
	return t
}

// newChild returns a token that a transition consuming parent may create.
func newChild(parent baton.Token, destination string) baton.Token {
	child := newRoot(parent.Conversation, destination)
	child.ID = baton.NewTokenID()
	child.Causation = parent.ID
	return child
}

// newChildren returns n children of parent addressed to destination.
func newChildren(parent baton.Token, destination string, n int) []baton.Token {
	children := make([]baton.Token, n)
	for i := range children {
		children[i] = newChild(parent, destination)
	}
	return children
}

func compareIDs(a, b baton.TokenID) int { return bytes.Compare(a[:], b[:]) }

func sortTokens(tokens []baton.Token) []baton.Token {
	sorted := slices.Clone(tokens)
	slices.SortFunc(sorted, func(a, b baton.Token) int { return compareIDs(a.ID, b.ID) })
	return sorted
}

func sameTime(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() == b.IsZero()
	}
	return a.Equal(b)
}

// tokenDiff describes how got differs from want, or returns "" if the
// tokens are equal. Times compare with time.Equal.
func tokenDiff(got, want baton.Token) string {
	var diffs []string
	if got.ID != want.ID {
		diffs = append(diffs, fmt.Sprintf("ID %s, want %s", got.ID, want.ID))
	}
	if got.Conversation != want.Conversation {
		diffs = append(diffs, fmt.Sprintf("Conversation %s, want %s", got.Conversation, want.Conversation))
	}
	if got.Causation != want.Causation {
		diffs = append(diffs, fmt.Sprintf("Causation %s, want %s", got.Causation, want.Causation))
	}
	if got.Destination != want.Destination {
		diffs = append(diffs, fmt.Sprintf("Destination %q, want %q", got.Destination, want.Destination))
	}
	if got.Type != want.Type {
		diffs = append(diffs, fmt.Sprintf("Type %q, want %q", got.Type, want.Type))
	}
	if got.Digest != want.Digest {
		diffs = append(diffs, fmt.Sprintf("Digest %s, want %s", got.Digest, want.Digest))
	}
	if !sameTime(got.CreatedAt, want.CreatedAt) {
		diffs = append(diffs, fmt.Sprintf("CreatedAt %s, want %s", got.CreatedAt.Format(time.RFC3339Nano), want.CreatedAt.Format(time.RFC3339Nano)))
	}
	if !sameTime(got.ExpiresAt, want.ExpiresAt) {
		diffs = append(diffs, fmt.Sprintf("ExpiresAt %s, want %s", got.ExpiresAt.Format(time.RFC3339Nano), want.ExpiresAt.Format(time.RFC3339Nano)))
	}
	if len(diffs) == 0 {
		return ""
	}
	return fmt.Sprintf("token %s: %v", want.ID, diffs)
}

// requireLive fails t unless every token of want is live with exactly its
// fields.
func requireLive(ctx context.Context, t *testing.T, s store.TokenStore, want ...baton.Token) {
	t.Helper()
	for _, w := range want {
		got, err := s.Get(ctx, w.ID)
		if err != nil {
			t.Errorf("Get(%s) = %v, want the live token", w.ID, err)
			continue
		}
		if d := tokenDiff(got, w); d != "" {
			t.Errorf("Get returned a different token: %s", d)
		}
	}
}

// requireAbsent fails t unless Get reports store.ErrNotFound for every id.
func requireAbsent(ctx context.Context, t *testing.T, s store.TokenStore, ids ...baton.TokenID) {
	t.Helper()
	for _, id := range ids {
		got, err := s.Get(ctx, id)
		switch {
		case err == nil:
			t.Errorf("Get(%s) returned a live token %+v, want store.ErrNotFound", id, got)
		case !errors.Is(err, store.ErrNotFound):
			t.Errorf("Get(%s) = %v, want an error matching store.ErrNotFound", id, err)
		}
	}
}

func idsOf(tokens []baton.Token) []baton.TokenID {
	ids := make([]baton.TokenID, len(tokens))
	for i, t := range tokens {
		ids[i] = t.ID
	}
	return ids
}

// requireTokens fails t unless got holds exactly the tokens of want, in the
// same order, with equal fields.
func requireTokens(t *testing.T, what string, got, want []baton.Token) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d tokens, want %d", what, len(got), len(want))
		return
	}
	for i := range want {
		if got[i].ID != want[i].ID {
			t.Errorf("%s: token %d is %s, want %s (listings are in ascending id order)", what, i, got[i].ID, want[i].ID)
			return
		}
		if d := tokenDiff(got[i], want[i]); d != "" {
			t.Errorf("%s: %s", what, d)
		}
	}
}

// requireConversation fails t unless the conversation holds exactly the
// live tokens of want (in any order).
func requireConversation(ctx context.Context, t *testing.T, s store.TokenStore, conversation baton.TokenID, want ...baton.Token) {
	t.Helper()
	got, err := s.ListByConversation(ctx, conversation, store.Page{Limit: store.MaxPageLimit})
	if err != nil {
		t.Errorf("ListByConversation(%s) = %v", conversation, err)
		return
	}
	requireTokens(t, "ListByConversation", got, sortTokens(want))
}

// issue issues root, which must succeed, and returns the token as the
// store keeps it, after checking it is root under a fresh id.
func issue(ctx context.Context, t *testing.T, s store.TokenStore, root baton.Token) baton.Token {
	t.Helper()
	got, err := s.Issue(ctx, root)
	if err != nil {
		t.Fatalf("Issue(%s root to %q) = %v", root.Type, root.Destination, err)
	}
	requireIssued(t, got, root)
	return got
}

// issueAll issues every root and returns them as issued, in order.
func issueAll(ctx context.Context, t *testing.T, s store.TokenStore, roots ...baton.Token) []baton.Token {
	t.Helper()
	out := make([]baton.Token, len(roots))
	for i, root := range roots {
		out[i] = issue(ctx, t, s, root)
	}
	return out
}

// requireIssued fails t unless got is what Issue must return for root: the
// store's fresh id, the conversation root named (or the new id), and
// every other field as given.
func requireIssued(t *testing.T, got, root baton.Token) {
	t.Helper()
	if got.ID.IsZero() {
		t.Fatalf("Issue returned a token without id: %+v", got)
	}
	want := root
	want.ID = got.ID
	if want.Conversation.IsZero() {
		want.Conversation = got.ID
	}
	if got.CreatedAt.IsZero() {
		t.Fatalf("Issue returned a root without a creation time: %+v", got)
	}
	want.CreatedAt = got.CreatedAt // a store with a clock of its own may set it
	if d := tokenDiff(got, want); d != "" {
		t.Fatalf("Issue returned another token than it was given: %s", d)
	}
}

// transition runs a transition that must succeed and consume its token.
func transition(ctx context.Context, t *testing.T, s store.TokenStore, consume baton.TokenID, create []baton.Token) {
	t.Helper()
	consumed, err := s.Transition(ctx, consume, create)
	if err != nil || !consumed {
		t.Fatalf("Transition(%s, %d tokens) = %v, %v; want true, nil", consume, len(create), consumed, err)
	}
}

// transitionRetrying repeats a transition while the backend reports
// store.ErrNotApplied, which proves nothing happened.
func transitionRetrying(ctx context.Context, s store.TokenStore, consume baton.TokenID, create []baton.Token) (bool, error) {
	for attempt := 1; ; attempt++ {
		consumed, err := s.Transition(ctx, consume, create)
		if err == nil || !errors.Is(err, store.ErrNotApplied) || attempt == retryLimit || ctx.Err() != nil {
			return consumed, err
		}
		time.Sleep(time.Duration(mathrand.IntN(attempt)+1) * time.Millisecond)
	}
}

func issueRetrying(ctx context.Context, s store.TokenStore, root baton.Token) (baton.Token, error) {
	for attempt := 1; ; attempt++ {
		tok, err := s.Issue(ctx, root)
		if err == nil || !errors.Is(err, store.ErrNotApplied) || attempt == retryLimit || ctx.Err() != nil {
			return tok, err
		}
		time.Sleep(time.Duration(mathrand.IntN(attempt)+1) * time.Millisecond)
	}
}
