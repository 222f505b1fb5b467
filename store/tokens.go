package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
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
// linearizable, and an acknowledged write must be durable (R2 of protocol.md 3.1).
type TokenStore interface {
	// Transition is the store's one atomic operation: if the token consume
	// is live, delete it and create every token of create, and report true;
	// if it is absent, create nothing and report false with a nil error.
	// An expired root token is still live for Transition: expiry is
	// enforced when a signal is admitted, not after its activity committed
	// (see ClaimRoot).
	//
	// Not applied: ErrExists (a token of create already exists), ErrInvalid,
	// ErrNotApplied, ErrClosed. Any other error: outcome unknown.
	Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (consumed bool, err error)

	// Issue creates a root token, one that no transition creates, under a
	// fresh id that the store draws from a cryptographic source, and
	// returns the token as stored. root.ID must be zero: no caller chooses
	// a root's id, so no caller, however careless, can issue the id of a
	// consumed token again and bring it back (a redelivered copy of its
	// signal would then be applied a second time). A zero
	// root.Conversation becomes the new id, so the root starts its own
	// conversation; root.Causation must be zero. A store that keeps its
	// own clock (the token service) may set CreatedAt; the token returned
	// is the one stored.
	//
	// Not applied: ErrInvalid, ErrNotApplied, ErrClosed. Any other error:
	// outcome unknown; issuing again is safe, and a root that the lost
	// answer created stays unused (it expires if it has an expiry).
	Issue(ctx context.Context, root baton.Token) (baton.Token, error)

	// ClaimRoot makes a live root token that may expire stop expiring,
	// and returns the token as stored after the claim (ExpiresAt zero).
	// A destination whose activity commit and transition are separate
	// operations claims an expiring root after admitting its signal and
	// before committing the activity: from then on the transition finds
	// the root however long it takes (a destination may be down for
	// hours), so expiry only ever rejects a signal and never loses the
	// children of one whose activity committed. A live token without an
	// expiry is returned unchanged, so claiming twice is harmless.
	//
	// Not applied: ErrNotFound (not live), ErrExpired (its ExpiresAt is
	// at or before now: the signal is refused, the token stays as it
	// was), ErrInvalid, ErrNotApplied, ErrClosed. Any other error: outcome
	// unknown.
	ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error)

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
	// expiry, claimed roots included, are never deleted. Callers pass a
	// time somewhat in the past (a grace period), so that a signal on the
	// fast path admitted just before its root's expiry is still consumed
	// by its commit rather than refused as a duplicate.
	//
	// Outcome unknown on any error, as for Transition.
	ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error)
}

// TokenBatcher is implemented by a token store that runs many reads, or
// many transitions, in one round trip (pipelined). The engine uses it on
// the plain path with Config.Batch: step 3 of a batch of signals in one
// call, and step 5 of those whose activities were committed in another.
// Each operation is applied as it would be alone, atomic on its own and
// independent of the others, which may be applied in between.
//
// GetTokens returns, for each of ids, the token Get would return, or in
// errs[i] its error (ErrNotFound for one not live). A non-nil err is for
// the whole call: no token was read.
//
// TransitionTokens runs each transition as Transition would alone and
// returns consumed[i] and errs[i] as Transition returns them for it:
// errors are per transition, as a connection lost half way through a
// pipeline leaves some applied and others not. A non-nil err is for the
// whole call and means nothing was applied (ErrInvalid, ErrNotApplied,
// ErrClosed); no token may be consumed or created twice in one call
// (ValidateTokenTransitions).
//
// Callers find it by type assertion (BatcherOf). A type that wraps a token
// store by embedding it gets the embedded store's batch methods too, which
// skip the wrapper's own Get and Transition: a wrapper that changes those
// (checks, faults, tracing) must implement TokenBatcher as well, or embed
// the TokenStore interface, which has no batch methods.
type TokenBatcher interface {
	GetTokens(ctx context.Context, ids []baton.TokenID) (tokens []baton.Token, errs []error, err error)
	TransitionTokens(ctx context.Context, transitions []TokenTransition) (consumed []bool, errs []error, err error)
}

// TokenTransition is one transition of TokenBatcher.TransitionTokens:
// what TokenStore.Transition takes, and the consumed token's conversation
// where the caller knows it (zero where not): a hint for a store split by
// conversation, as WithConversation is for one call.
type TokenTransition struct {
	Consume      baton.TokenID
	Conversation baton.TokenID
	Create       []baton.Token
}

// BatcherOf returns the token store's own TokenBatcher, or one that runs
// the operations of a batch one after another.
func BatcherOf(tokens TokenStore) TokenBatcher {
	if b, ok := tokens.(TokenBatcher); ok {
		return b
	}
	return oneByOne{tokens}
}

// oneByOne is a TokenBatcher over a token store without one.
type oneByOne struct{ tokens TokenStore }

func (o oneByOne) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	tokens, errs := make([]baton.Token, len(ids)), make([]error, len(ids))
	for i, id := range ids {
		tokens[i], errs[i] = o.tokens.Get(ctx, id)
	}
	return tokens, errs, nil
}

func (o oneByOne) TransitionTokens(ctx context.Context, transitions []TokenTransition) ([]bool, []error, error) {
	if err := ValidateTokenTransitions(transitions); err != nil {
		return nil, nil, err
	}
	consumed, errs := make([]bool, len(transitions)), make([]error, len(transitions))
	for i, t := range transitions {
		consumed[i], errs[i] = o.tokens.Transition(WithConversation(ctx, t.Conversation), t.Consume, t.Create)
	}
	return consumed, errs, nil
}

// GetTokensIn implements HintedTokenReader: each read with its
// conversation, as Get takes it (WithConversation).
func (o oneByOne) GetTokensIn(ctx context.Context, lookups []TokenLookup) ([]baton.Token, []error, error) {
	tokens, errs := make([]baton.Token, len(lookups)), make([]error, len(lookups))
	for i, l := range lookups {
		tokens[i], errs[i] = o.tokens.Get(WithConversation(ctx, l.Conversation), l.ID)
	}
	return tokens, errs, nil
}

// TransitionTogether runs each of transitions through tokens.Transition,
// up to n at a time, and returns their answers as TransitionTokens does:
// for a store whose transitions are calls of their own that its server
// commits in shared groups when they arrive together (etcd's raft rounds,
// InnoDB's group commit). The caller has validated the batch
// (ValidateTokenTransitions).
func TransitionTogether(ctx context.Context, tokens TokenStore, transitions []TokenTransition, n int) ([]bool, []error) {
	consumed, errs := make([]bool, len(transitions)), make([]error, len(transitions))
	start := 0
	for part := range slices.Chunk(transitions, max(1, n)) {
		var wg sync.WaitGroup
		for i, t := range part {
			wg.Go(func() {
				consumed[start+i], errs[start+i] = tokens.Transition(WithConversation(ctx, t.Conversation), t.Consume, t.Create)
			})
		}
		wg.Wait()
		start += len(part)
	}
	return consumed, errs
}

// ValidateTokenTransitions checks the transitions of
// TokenBatcher.TransitionTokens: each as ValidateTransition does, with
// distinct tokens to consume and to create across the batch.
func ValidateTokenTransitions(transitions []TokenTransition) error {
	seen := make(map[baton.TokenID]bool)
	for _, t := range transitions {
		if err := ValidateTransition(t.Consume, t.Create); err != nil {
			return err
		}
		if seen[t.Consume] {
			return fmt.Errorf("%w: token %s appears twice in one batch", ErrInvalid, t.Consume)
		}
		seen[t.Consume] = true
		for _, c := range t.Create {
			if seen[c.ID] {
				return fmt.Errorf("%w: token %s appears twice in one batch", ErrInvalid, c.ID)
			}
			seen[c.ID] = true
		}
	}
	return nil
}

// RootCreator is implemented by a token store that can be a part of a
// store split by conversation (package backend/split). Such a store draws
// a new conversation's root id itself, because the id decides which part
// keeps the conversation, and then creates the root in that part.
type RootCreator interface {
	// CreateRoot stores root, a root token as NewRoot returns it: its id
	// drawn from a cryptographic source by the caller, a store itself. It
	// returns the token as stored. Only a store that draws ids as Issue
	// does may call it; no caller of Issue chooses a root's id.
	//
	// Not applied: ErrExists (a token with the id exists), ErrInvalid,
	// ErrNotApplied, ErrClosed. Any other error: outcome unknown.
	CreateRoot(ctx context.Context, root baton.Token) (baton.Token, error)
}

// IssueBy issues root as TokenStore.Issue does, by create (a store's
// CreateRoot) under fresh ids read from random, drawing again while an id
// is taken.
func IssueBy(ctx context.Context, root baton.Token, random io.Reader, create func(context.Context, baton.Token) (baton.Token, error)) (baton.Token, error) {
	for {
		tok, err := NewRoot(root, random)
		if err != nil {
			return baton.Token{}, err
		}
		tok, err = create(ctx, tok)
		if errors.Is(err, ErrExists) {
			continue
		}
		return tok, err
	}
}

// ValidateRoot checks a root token for RootCreator.CreateRoot.
func ValidateRoot(root baton.Token) error {
	if !root.Causation.IsZero() {
		return fmt.Errorf("%w: a root token has no causation", ErrInvalid)
	}
	return ValidateToken(root)
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
