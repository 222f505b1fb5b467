// Package split is a token store split by conversation over several token
// stores, its parts, so that N independent servers share the load.
//
// Every operation of the protocol touches the tokens of one conversation: a
// transition consumes a token and creates children in the same
// conversation, and a root either starts a conversation or joins one. So
// the tokens of a conversation all live in one part, chosen from the
// conversation's id, and every part is an ordinary token store that knows
// nothing of the others. Each part is linearizable and durable on its own;
// since every token lives in exactly one part, the whole is too (a history
// is linearizable when it is per object).
//
// Routing. Part i of N keeps the conversations whose id, read as a 128-bit
// big-endian number, is i modulo N. A new conversation's root id is its
// conversation's id, so the store draws it itself (crypto/rand) and creates
// the root in its part (store.RootCreator). Calls that name only a token id
// (Get, ClaimRoot, a Transition without children) go to the part of the
// conversation the caller names with store.WithConversation, which the
// engine and the token service's client do for every signal; without it,
// or when that part does not have the token, they ask the other parts, and
// a token is found in the one that has it. Ids are unique within a part
// only: a caller that chooses a child's id can plant a copy of a live id
// of another part. So a caller that authorized a token it read (the token
// service) binds its write to that token's conversation
// (store.BindConversations), and the consumption or claim then asks that
// part only. So the name only saves reads:
// a signal that names another conversation than its token's finds its
// token all the same, and is refused for the mismatch as on one store,
// and the price of a duplicate (a token found nowhere) is a read of every
// part. A token is reported absent only when every part said so: a part
// that fails makes the call fail (outcome unknown), never a false
// "duplicate".
//
// Batches (store.TokenBatcher, the engine's plain path with Config.Batch):
// a batch of reads asks every part once for all its ids; a batch of
// transitions goes to its conversations' parts (the children's, or
// TokenTransition.Conversation), one call per part, each a part's own
// batch where it has one.
//
// The parts are fixed: adding one, removing one or changing their order
// moves conversations to parts that do not hold their tokens, whose signals
// would then be dropped as duplicates. Open therefore marks each part with
// a token of its own (destination "baton.split", type "part-I-of-N") and
// refuses parts whose marks disagree. To grow, start with more parts than
// servers (several databases or schemas on one server) and move parts to
// servers of their own later.
package split

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// Part is a token store that can be part of a split store.
type Part interface {
	store.TokenStore
	store.RootCreator
}

// MarkDestination is the destination of the tokens that mark the parts.
const MarkDestination = "baton.split"

// ErrMismatchedParts is returned by Open for parts that were marked as
// parts of another split: other parts, another count or another order.
var ErrMismatchedParts = errors.New("split: the parts do not match their marks")

// Store is a token store split by conversation over its parts.
type Store struct {
	parts []Part
}

var (
	_ store.TokenStore  = (*Store)(nil)
	_ store.RootCreator = (*Store)(nil)
)

// Open returns a store split over parts, in that order, after checking
// (and on first use writing) each part's mark.
func Open(ctx context.Context, parts ...store.TokenStore) (*Store, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: a split store needs at least one part", store.ErrInvalid)
	}
	s := &Store{}
	for i, p := range parts {
		part, ok := p.(Part)
		if !ok {
			return nil, fmt.Errorf("%w: part %d (%T) cannot create roots under a chosen id (store.RootCreator)", store.ErrInvalid, i, p)
		}
		s.parts = append(s.parts, part)
	}
	for i := range s.parts {
		if err := s.checkMark(ctx, i); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// markOf is the token that marks part i of n.
func markOf(i, n int) baton.Token {
	sum := sha256.Sum256(fmt.Appendf(nil, "baton split mark of part %d", i))
	var id baton.TokenID
	copy(id[:], sum[:])
	return baton.Token{ID: id, Conversation: id, Destination: MarkDestination, Type: fmt.Sprintf("part-%d-of-%d", i+1, n),
		Digest: baton.DigestOf(nil), CreatedAt: time.Unix(0, 0).UTC()}
}

func (s *Store) checkMark(ctx context.Context, i int) error {
	want := markOf(i, len(s.parts))
	marks, err := s.parts[i].ListByDestination(ctx, MarkDestination, store.Page{Limit: 10})
	if err != nil {
		return fmt.Errorf("split: read the mark of part %d: %w", i+1, err)
	}
	switch {
	case len(marks) == 0:
		if _, err := s.parts[i].CreateRoot(ctx, want); err != nil && !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("split: mark part %d: %w", i+1, err)
		}
		return nil
	case len(marks) == 1 && marks[0].ID == want.ID && marks[0].Type == want.Type:
		return nil
	}
	var found []string
	for _, m := range marks {
		found = append(found, m.Type)
	}
	return fmt.Errorf("%w: part %d of %d is marked %v: its conversations belong elsewhere, and their signals would be dropped as duplicates; give the parts in their first order and number",
		ErrMismatchedParts, i+1, len(s.parts), found)
}

// PartOf returns the index of the part that keeps conversation in a
// store of n parts: the conversation's id, a 128-bit big-endian number,
// modulo n.
func PartOf(conversation baton.TokenID, n int) int {
	hi, lo := binary.BigEndian.Uint64(conversation[:8]), binary.BigEndian.Uint64(conversation[8:])
	return int(bits.Rem64(hi, lo, uint64(n)))
}

// partOf returns the part of conversation.
func (s *Store) partOf(conversation baton.TokenID) Part {
	return s.parts[PartOf(conversation, len(s.parts))]
}

// Parts returns how many parts the store has.
func (s *Store) Parts() int { return len(s.parts) }

// Transition implements store.TokenStore in the part of the conversation.
func (s *Store) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	if err := store.ValidateTransition(consume, create); err != nil {
		return false, err
	}
	if len(create) > 0 {
		if err := oneConversation(create); err != nil {
			return false, err
		}
		return s.partOf(create[0].Conversation).Transition(ctx, consume, create)
	}
	hinted, ok := s.hinted(ctx)
	if ok {
		consumed, err := hinted.Transition(ctx, consume, nil)
		if consumed || err != nil || store.ConversationsBound(ctx) {
			return consumed, err
		}
	}
	part, err := s.find(ctx, consume, hinted)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return part.Transition(ctx, consume, nil)
}

// hinted returns the part of the conversation that ctx names
// (store.WithConversation), if it names one.
func (s *Store) hinted(ctx context.Context) (Part, bool) {
	conversation, ok := store.ConversationFrom(ctx)
	if !ok {
		return nil, false
	}
	return s.partOf(conversation), true
}

// Issue implements store.TokenStore: a new conversation's root under an id
// the store draws, in the part that id chooses; a root that joins a
// conversation in that conversation's part.
func (s *Store) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	if !root.Conversation.IsZero() {
		return s.partOf(root.Conversation).Issue(ctx, root)
	}
	return store.IssueBy(ctx, root, rand.Reader, s.CreateRoot)
}

// CreateRoot implements store.RootCreator in the part of the conversation.
func (s *Store) CreateRoot(ctx context.Context, root baton.Token) (baton.Token, error) {
	if err := store.ValidateRoot(root); err != nil {
		return baton.Token{}, err
	}
	return s.partOf(root.Conversation).CreateRoot(ctx, root)
}

// ClaimRoot implements store.TokenStore.
func (s *Store) ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	hinted, ok := s.hinted(ctx)
	if ok {
		t, err := hinted.ClaimRoot(ctx, id, now)
		if !errors.Is(err, store.ErrNotFound) || store.ConversationsBound(ctx) {
			return t, err
		}
	}
	part, err := s.find(ctx, id, hinted)
	if err != nil {
		return baton.Token{}, err
	}
	return part.ClaimRoot(ctx, id, now)
}

// Get implements store.TokenStore.
func (s *Store) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	hinted, ok := s.hinted(ctx)
	if ok {
		t, err := hinted.Get(ctx, id)
		if !errors.Is(err, store.ErrNotFound) {
			return t, err
		}
	}
	var found baton.Token
	_, err := s.each(ctx, hinted, func(ctx context.Context, p Part) (bool, error) {
		t, err := p.Get(ctx, id)
		if err == nil {
			found = t
		}
		return err == nil, err
	})
	return found, err
}

// find returns the part other than skip that holds the live token id, or
// ErrNotFound.
func (s *Store) find(ctx context.Context, id baton.TokenID, skip Part) (Part, error) {
	return s.each(ctx, skip, func(ctx context.Context, p Part) (bool, error) {
		_, err := p.Get(ctx, id)
		return err == nil, err
	})
}

// each runs has on every part but skip at once and returns the part for
// which it reported true. Without one, it returns the first error other
// than ErrNotFound, or else ErrNotFound: a token is absent only if every
// part says so.
func (s *Store) each(ctx context.Context, skip Part, has func(context.Context, Part) (bool, error)) (Part, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		found   Part
		failure error
		wg      sync.WaitGroup
	)
	for _, p := range s.parts {
		if p == skip {
			continue
		}
		wg.Go(func() {
			ok, err := has(ctx, p)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case ok:
				found = p
				cancel() // the others cannot have it
			case err != nil && !errors.Is(err, store.ErrNotFound) && failure == nil:
				failure = err
			}
		})
	}
	wg.Wait()
	switch {
	case found != nil:
		return found, nil
	case failure != nil:
		return nil, failure
	}
	return nil, store.ErrNotFound
}

// ListByConversation implements store.TokenStore in the conversation's part.
func (s *Store) ListByConversation(ctx context.Context, conversation baton.TokenID, page store.Page) ([]baton.Token, error) {
	return s.partOf(conversation).ListByConversation(ctx, conversation, page)
}

// ListByDestination implements store.TokenStore: a page of every part,
// merged in id order.
func (s *Store) ListByDestination(ctx context.Context, destination string, page store.Page) ([]baton.Token, error) {
	var all []baton.Token
	for i, p := range s.parts {
		toks, err := p.ListByDestination(ctx, destination, page)
		if err != nil {
			return nil, fmt.Errorf("split: part %d: %w", i+1, err)
		}
		all = append(all, toks...)
	}
	slices.SortFunc(all, func(a, b baton.Token) int { return cmp.Compare(string(a.ID[:]), string(b.ID[:])) })
	return all[:min(len(all), page.Size())], nil
}

// ExpireRoots implements store.TokenStore in every part, up to limit in all.
// A part that fails after others deleted roots makes the call's error one
// of unknown outcome, never "not applied", with the roots deleted so far.
func (s *Store) ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	total := 0
	for i, p := range s.parts {
		if total >= limit {
			break
		}
		n, err := p.ExpireRoots(ctx, before, limit-total)
		total += n
		switch {
		case err != nil && total > 0:
			// Some were deleted: "not applied" would be false of the call.
			return total, fmt.Errorf("split: part %d: %d roots expired in other parts, then: %v", i+1, total, err)
		case err != nil:
			return total, fmt.Errorf("split: part %d: %w", i+1, err)
		}
	}
	return total, nil
}
