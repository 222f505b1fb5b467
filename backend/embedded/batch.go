package embedded

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

var _ store.TransitionBatcher = (*Store)(nil)

// LoadWithTokens implements store.TransitionBatcher: every read in one
// read transaction.
func (s *Store) LoadWithTokens(ctx context.Context, reads []store.TokenRead) ([]store.Loaded, error) {
	out := make([]store.Loaded, len(reads))
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		for i, r := range reads {
			l := store.Loaded{Entity: store.Entity{Key: r.Key}}
			if r.Key != "" && len(r.Key) <= store.MaxEntityKeyBytes { // no commit accepts other keys
				if v := b.entities.Get([]byte(r.Key)); v != nil {
					var err error
					if l.Entity, err = decodeEntity(r.Key, v); err != nil {
						return err
					}
				}
			}
			var err error
			if l.Token, l.Live, err = b.getToken(r.Token); err != nil {
				return err
			}
			out[i] = l
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CommitTransitions implements store.TransitionBatcher in one bbolt
// transaction (one fsync): each transition is checked (token live, entity
// at its version) before anything of it is written, and applied as
// CommitTransition would alone.
func (s *Store) CommitTransitions(ctx context.Context, transitions []store.Transition) ([]error, error) {
	if err := store.ValidateTransitions(transitions); err != nil {
		return nil, err
	}
	if len(transitions) == 0 {
		return nil, nil
	}
	results := make([]error, len(transitions))
	var exists error
	err := s.write(ctx, "commit and transition batch", func(tx *bolt.Tx) error {
		clear(results)
		exists = nil
		b := bucketsOf(tx)
		// A child that exists refuses the whole batch before any write.
		for _, t := range transitions {
			for _, c := range t.Create {
				if b.tokens.Get(c.ID[:]) != nil {
					exists = fmt.Errorf("%w: token %s", store.ErrExists, c.ID)
					return nil
				}
			}
		}
		for i, t := range transitions {
			if gone := b.firstAbsent(t.Consumes()); gone != nil {
				results[i] = fmt.Errorf("%w: token %s", store.ErrNotFound, *gone)
				continue
			}
			refused, err := b.checkVersion(t.Entity)
			if err != nil {
				return err
			}
			if refused != nil {
				results[i] = refused
				continue
			}
			if err := b.apply(t); err != nil {
				return err
			}
		}
		return nil
	})
	switch {
	case err != nil:
		return nil, err
	case exists != nil:
		return nil, exists
	}
	return results, nil
}

// firstAbsent returns the first of ids that is not a live token's, or nil.
func (b buckets) firstAbsent(ids []baton.TokenID) *baton.TokenID {
	for i, id := range ids {
		if b.tokens.Get(id[:]) == nil {
			return &ids[i]
		}
	}
	return nil
}

// apply writes a transition whose tokens are live and whose entity is at
// its version; anything refused now fails the whole write transaction.
func (b buckets) apply(t store.Transition) error {
	for i, id := range t.Consumes() {
		var create []baton.Token
		if i == 0 {
			create = t.Create
		}
		consumed, refused, err := b.transition(id, create)
		if err != nil || refused != nil || !consumed {
			return errors.Join(err, refused, fmt.Errorf("embedded: token %s was checked live but not consumed", id))
		}
	}
	if conflict, err := b.commit(t.Entity); err != nil || conflict != nil {
		return errors.Join(err, conflict)
	}
	return nil
}

var _ store.TokenBatcher = (*Store)(nil)

// GetTokens implements store.TokenBatcher: every read in one read
// transaction.
func (s *Store) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	tokens, errs := make([]baton.Token, len(ids)), make([]error, len(ids))
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		for i, id := range ids {
			t, live, err := b.getToken(id)
			switch {
			case err != nil:
				return err
			case !live:
				errs[i] = fmt.Errorf("%w: token %s", store.ErrNotFound, id)
			default:
				tokens[i] = t
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return tokens, errs, nil
}

// TransitionTokens implements store.TokenBatcher: every transition in one
// write transaction (one fsync), each applied or refused on its own. A
// commit that failed leaves every transition's outcome unknown: its error
// is each one's, as the whole call's would say that nothing was applied.
func (s *Store) TransitionTokens(ctx context.Context, transitions []store.TokenTransition) ([]bool, []error, error) {
	if err := store.ValidateTokenTransitions(transitions); err != nil {
		return nil, nil, err
	}
	consumed, errs := make([]bool, len(transitions)), make([]error, len(transitions))
	err := s.write(ctx, "transition tokens", func(tx *bolt.Tx) error {
		clear(consumed)
		clear(errs)
		b := bucketsOf(tx)
		for i, t := range transitions {
			var err error
			if consumed[i], errs[i], err = b.transition(t.Consume, t.Create); err != nil {
				return err
			}
		}
		return nil
	})
	switch {
	case store.NotApplied(err):
		return nil, nil, err
	case err != nil:
		for i := range errs {
			consumed[i], errs[i] = false, err
		}
	}
	return consumed, errs, nil
}
