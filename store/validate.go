package store

import (
	"fmt"
	"io"

	"github.com/batonhq/baton"
)

// ValidateToken checks what every backend requires of a token it stores.
// Backends call it first, so that all reject the same input with ErrInvalid.
func ValidateToken(t baton.Token) error {
	if t.ID.IsZero() {
		return fmt.Errorf("%w: token without id", ErrInvalid)
	}
	if t.Conversation.IsZero() {
		return fmt.Errorf("%w: token %s without conversation", ErrInvalid, t.ID)
	}
	sig := baton.Signal{ID: t.ID, Conversation: t.Conversation, Destination: t.Destination, Type: t.Type}
	if err := sig.Validate(); err != nil {
		return fmt.Errorf("%w: token %s: %w", ErrInvalid, t.ID, err)
	}
	return nil
}

// NewRoot checks a root token for TokenStore.Issue and returns it as the
// store keeps it: under a fresh id read from random (crypto/rand outside
// simulations), in a conversation of its own unless root names one.
// Backends call it first, so that all refuse the same input with
// ErrInvalid.
func NewRoot(root baton.Token, random io.Reader) (baton.Token, error) {
	switch {
	case !root.ID.IsZero():
		return baton.Token{}, fmt.Errorf("%w: a root token's id is chosen by the store, not the caller (got %s)", ErrInvalid, root.ID)
	case !root.Causation.IsZero():
		return baton.Token{}, fmt.Errorf("%w: a root token has no causation; a transition creates children", ErrInvalid)
	}
	id, err := baton.ReadTokenID(random)
	if err != nil {
		return baton.Token{}, fmt.Errorf("%w: %w", ErrNotApplied, err)
	}
	root.ID = id
	if root.Conversation.IsZero() {
		root.Conversation = id
	}
	if err := ValidateToken(root); err != nil {
		return baton.Token{}, err
	}
	return root, nil
}

// ValidateTransition checks a transition's arguments: a parent id, valid
// children with distinct ids that differ from the parent, within the limit.
func ValidateTransition(consume baton.TokenID, create []baton.Token) error {
	if consume.IsZero() {
		return fmt.Errorf("%w: transition without a token to consume", ErrInvalid)
	}
	if len(create) > MaxTokensPerTransition {
		return fmt.Errorf("%w: %d tokens in one transition, more than %d", ErrInvalid, len(create), MaxTokensPerTransition)
	}
	seen := make(map[baton.TokenID]bool, len(create))
	for _, t := range create {
		if err := ValidateToken(t); err != nil {
			return err
		}
		if t.ID == consume || seen[t.ID] {
			return fmt.Errorf("%w: token %s appears twice in one transition", ErrInvalid, t.ID)
		}
		seen[t.ID] = true
	}
	return nil
}

// ValidateEntity checks an entity before a commit.
func ValidateEntity(e Entity) error {
	if e.Key == "" || len(e.Key) > MaxEntityKeyBytes {
		return fmt.Errorf("%w: entity key must be 1 to %d bytes, got %d", ErrInvalid, MaxEntityKeyBytes, len(e.Key))
	}
	seen := make(map[baton.TokenID]bool, len(e.Outbox))
	for _, entry := range e.Outbox {
		if entry.Token.IsZero() || seen[entry.Token] {
			return fmt.Errorf("%w: entity %q: outbox entry with a missing or repeated token", ErrInvalid, e.Key)
		}
		seen[entry.Token] = true
	}
	return nil
}

// ValidateStart checks a start before a store records or updates it: an
// id, a valid root signal, and a root id if it is claimed.
func ValidateStart(s Start) error {
	if s.ID.IsZero() {
		return fmt.Errorf("%w: start without id", ErrInvalid)
	}
	if err := (baton.Emit{Destination: s.Destination, Type: s.Type, Payload: s.Payload}).Validate(); err != nil {
		return fmt.Errorf("%w: start %s: %w", ErrInvalid, s.ID, err)
	}
	if s.Claimed && s.Root.IsZero() {
		return fmt.Errorf("%w: start %s claimed without a root", ErrInvalid, s.ID)
	}
	return nil
}

// ValidateBatch checks the entities of a BatchCommitter.CommitBatch: each
// as ValidateEntity does, keys distinct.
func ValidateBatch(entities []Entity) error {
	seen := make(map[string]bool, len(entities))
	for _, e := range entities {
		if err := ValidateEntity(e); err != nil {
			return err
		}
		if seen[e.Key] {
			return fmt.Errorf("%w: CommitBatch takes entities with distinct keys (%q twice)", ErrInvalid, e.Key)
		}
		seen[e.Key] = true
	}
	return nil
}

// ValidateTransitions checks the transitions of a
// TransitionBatcher.CommitTransitions: each as ValidateEntity and
// ValidateTransition do, with distinct entity keys, no zero token in Then,
// and no token consumed or created twice in the batch.
func ValidateTransitions(transitions []Transition) error {
	keys := make(map[string]bool, len(transitions))
	tokens := make(map[baton.TokenID]bool, len(transitions))
	for _, t := range transitions {
		if err := ValidateEntity(t.Entity); err != nil {
			return err
		}
		if err := ValidateTransition(t.Token, t.Create); err != nil {
			return err
		}
		if keys[t.Entity.Key] {
			return fmt.Errorf("%w: entity %q appears twice in one batch", ErrInvalid, t.Entity.Key)
		}
		keys[t.Entity.Key] = true
		for _, id := range t.Then {
			if id.IsZero() {
				return fmt.Errorf("%w: transition of %q consumes a zero token id", ErrInvalid, t.Entity.Key)
			}
		}
		for _, id := range append(t.Consumes(), tokenIDs(t.Create)...) {
			if tokens[id] {
				return fmt.Errorf("%w: token %s appears twice in one batch", ErrInvalid, id)
			}
			tokens[id] = true
		}
	}
	return nil
}

func tokenIDs(tokens []baton.Token) []baton.TokenID {
	ids := make([]baton.TokenID, len(tokens))
	for i, t := range tokens {
		ids[i] = t.ID
	}
	return ids
}
