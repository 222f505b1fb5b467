package memory

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// TokenStore is an in-memory store.TokenStore. The zero value is not ready;
// use NewTokenStore.
type TokenStore struct {
	mu     sync.Mutex
	tokens map[baton.TokenID]baton.Token
	random io.Reader // root token ids
	closed bool
}

var (
	_ store.TokenStore   = (*TokenStore)(nil)
	_ store.TokenBatcher = (*TokenStore)(nil)
)

// NewTokenStore returns an empty token store that draws root token ids
// from crypto/rand.
func NewTokenStore() *TokenStore { return NewTokenStoreFrom(rand.Reader) }

// NewTokenStoreFrom returns an empty token store that draws root token ids
// from random. Only a deterministic simulation passes anything but
// crypto/rand: ids must be unguessable.
func NewTokenStoreFrom(random io.Reader) *TokenStore {
	return &TokenStore{tokens: make(map[baton.TokenID]baton.Token), random: random}
}

// Transition implements store.TokenStore.
func (s *TokenStore) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	if err := store.ValidateTransition(consume, create); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return false, err
	}
	if _, live := s.tokens[consume]; !live {
		return false, nil
	}
	for _, t := range create {
		if _, exists := s.tokens[t.ID]; exists {
			return false, fmt.Errorf("%w: token %s", store.ErrExists, t.ID)
		}
	}
	delete(s.tokens, consume)
	for _, t := range create {
		s.tokens[t.ID] = t
	}
	return true, nil
}

// Issue implements store.TokenStore.
func (s *TokenStore) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	return store.IssueBy(ctx, root, lockedReader{&s.mu, s.random}, s.CreateRoot)
}

// CreateRoot implements store.RootCreator.
func (s *TokenStore) CreateRoot(ctx context.Context, root baton.Token) (baton.Token, error) {
	if err := store.ValidateRoot(root); err != nil {
		return baton.Token{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return baton.Token{}, err
	}
	if _, exists := s.tokens[root.ID]; exists {
		return baton.Token{}, fmt.Errorf("%w: token %s", store.ErrExists, root.ID)
	}
	s.tokens[root.ID] = root
	return root, nil
}

// lockedReader reads a random source under the store's lock, which
// guards it (a seeded source in simulations is not safe for concurrent use).
type lockedReader struct {
	mu *sync.Mutex
	r  io.Reader
}

func (l lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(p)
}

// ClaimRoot implements store.TokenStore.
func (s *TokenStore) ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return baton.Token{}, err
	}
	t, ok := s.tokens[id]
	switch {
	case !ok:
		return baton.Token{}, fmt.Errorf("%w: token %s", store.ErrNotFound, id)
	case t.Expired(now):
		return baton.Token{}, fmt.Errorf("%w: token %s expired at %s", store.ErrExpired, id, t.ExpiresAt)
	}
	t.ExpiresAt = time.Time{}
	s.tokens[id] = t
	return t, nil
}

// Get implements store.TokenStore.
func (s *TokenStore) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return baton.Token{}, err
	}
	t, ok := s.tokens[id]
	if !ok {
		return baton.Token{}, fmt.Errorf("%w: token %s", store.ErrNotFound, id)
	}
	return t, nil
}

// GetTokens implements store.TokenBatcher, one Get after another.
func (s *TokenStore) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	if err := s.ready(ctx); err != nil {
		return nil, nil, err
	}
	tokens, errs := make([]baton.Token, len(ids)), make([]error, len(ids))
	for i, id := range ids {
		tokens[i], errs[i] = s.Get(ctx, id)
	}
	return tokens, errs, nil
}

// TransitionTokens implements store.TokenBatcher, one Transition after
// another.
func (s *TokenStore) TransitionTokens(ctx context.Context, transitions []store.TokenTransition) ([]bool, []error, error) {
	if err := store.ValidateTokenTransitions(transitions); err != nil {
		return nil, nil, err
	}
	if err := s.ready(ctx); err != nil {
		return nil, nil, err
	}
	consumed, errs := make([]bool, len(transitions)), make([]error, len(transitions))
	for i, t := range transitions {
		consumed[i], errs[i] = s.Transition(ctx, t.Consume, t.Create)
	}
	return consumed, errs, nil
}

// ListByConversation implements store.TokenStore.
func (s *TokenStore) ListByConversation(ctx context.Context, conversation baton.TokenID, page store.Page) ([]baton.Token, error) {
	return s.list(ctx, page, func(t baton.Token) bool { return t.Conversation == conversation })
}

// ListByDestination implements store.TokenStore.
func (s *TokenStore) ListByDestination(ctx context.Context, destination string, page store.Page) ([]baton.Token, error) {
	return s.list(ctx, page, func(t baton.Token) bool { return t.Destination == destination })
}

func (s *TokenStore) list(ctx context.Context, page store.Page, match func(baton.Token) bool) ([]baton.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	var out []baton.Token
	for id, t := range s.tokens {
		if match(t) && compareIDs(id, page.After) > 0 {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b baton.Token) int { return compareIDs(a.ID, b.ID) })
	return out[:min(len(out), page.Size())], nil
}

// ExpireRoots implements store.TokenStore.
func (s *TokenStore) ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	var expired []baton.TokenID
	for id, t := range s.tokens {
		if !t.ExpiresAt.IsZero() && t.ExpiresAt.Before(before) {
			expired = append(expired, id)
		}
	}
	slices.SortFunc(expired, compareIDs)
	expired = expired[:min(len(expired), max(limit, 0))]
	for _, id := range expired {
		delete(s.tokens, id)
	}
	return len(expired), nil
}

// Len returns the number of live tokens.
func (s *TokenStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tokens)
}

// Close makes every later call fail with store.ErrClosed.
func (s *TokenStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// ready checks, as usable does under the lock, that a call may start.
func (s *TokenStore) ready(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usable(ctx)
}

func (s *TokenStore) usable(ctx context.Context) error {
	if s.closed {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", store.ErrNotApplied, err)
	}
	return nil
}

func compareIDs(a, b baton.TokenID) int { return slices.Compare(a[:], b[:]) }
