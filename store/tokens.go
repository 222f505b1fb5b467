package store

import (
	"context"
	"time"

	"github.com/batonhq/baton"
)

// Limits that every token store accepts at least, and that callers keep to.
const (
	MaxTokensPerTransition = 1000
	DefaultPageLimit       = 100
	MaxPageLimit           = 1000
)

// TokenStore holds live tokens: the signals still in flight. It must be
// linearizable, and an acknowledged write must be durable (DESIGN R2).
type TokenStore interface {
	// Transition is the store's one atomic operation: if the token consume
	// is live, delete it and create every token of create, and report true;
	// if it is absent, create nothing and report false with a nil error.
	// An expired root token is still live for Transition: expiry is
	// enforced when a signal is admitted, not after its activity committed.
	//
	// Not applied: ErrExists (a token of create already exists), ErrInvalid,
	// ErrNotApplied, ErrClosed. Any other error: outcome unknown.
	Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (consumed bool, err error)

	// Issue creates a root token, one that no transition creates.
	//
	// Not applied: ErrExists, ErrInvalid, ErrNotApplied, ErrClosed. Any
	// other error: outcome unknown.
	Issue(ctx context.Context, root baton.Token) error

	// Get returns a live token. It returns ErrNotFound if the token is not
	// live (never created, consumed, or expired and removed).
	Get(ctx context.Context, id baton.TokenID) (baton.Token, error)

	// ListByConversation returns the live tokens of a conversation in
	// ascending id order, starting after page.After.
	ListByConversation(ctx context.Context, conversation baton.TokenID, page Page) ([]baton.Token, error)

	// ListByDestination returns the live tokens addressed to destination in
	// ascending id order, starting after page.After.
	ListByDestination(ctx context.Context, destination string, page Page) ([]baton.Token, error)

	// ExpireRoots deletes up to limit root tokens whose ExpiresAt is before
	// the given time and reports how many it deleted. Tokens without an
	// expiry are never deleted. Callers pass a time well in the past (a
	// grace period) so that a root admitted just before its expiry can
	// still be consumed by its transition.
	//
	// Outcome unknown on any error, as for Transition.
	ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error)
}

// Page selects a slice of a listing ordered by token id.
type Page struct {
	After baton.TokenID // zero: from the start
	Limit int           // 0: DefaultPageLimit; capped at MaxPageLimit
}

// Size returns the effective number of items to return.
func (p Page) Size() int {
	switch {
	case p.Limit <= 0:
		return DefaultPageLimit
	case p.Limit > MaxPageLimit:
		return MaxPageLimit
	default:
		return p.Limit
	}
}
