package embedded

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// Transition implements store.TokenStore.
func (s *Store) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	if err := store.ValidateTransition(consume, create); err != nil {
		return false, err
	}
	var consumed bool
	var refused error
	err := s.write(ctx, "transition", func(tx *bolt.Tx) error {
		consumed, refused = false, nil
		b := bucketsOf(tx)
		var err error
		consumed, refused, err = b.transition(consume, create)
		return err
	})
	switch {
	case err != nil:
		return false, err
	case refused != nil:
		return false, refused
	}
	return consumed, nil
}

// transition applies a transition in tx. It changes nothing unless it
// consumes the token; refused reports an expected refusal (ErrExists).
func (b buckets) transition(consume baton.TokenID, create []baton.Token) (consumed bool, refused, err error) {
	parent, live, err := b.getToken(consume)
	if err != nil || !live {
		return false, nil, err
	}
	for _, t := range create {
		if b.tokens.Get(t.ID[:]) != nil {
			return false, fmt.Errorf("%w: token %s", store.ErrExists, t.ID), nil
		}
	}
	if err := b.deleteToken(parent); err != nil {
		return false, nil, err
	}
	for _, t := range create {
		if err := b.putToken(t); err != nil {
			return false, nil, err
		}
	}
	return true, nil, nil
}

// Issue implements store.TokenStore.
func (s *Store) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	return store.IssueBy(ctx, root, s.cfg.Random, s.CreateRoot)
}

// CreateRoot implements store.RootCreator.
func (s *Store) CreateRoot(ctx context.Context, root baton.Token) (baton.Token, error) {
	if err := store.ValidateRoot(root); err != nil {
		return baton.Token{}, err
	}
	taken := false
	err := s.write(ctx, "issue", func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		if taken = b.tokens.Get(root.ID[:]) != nil; taken {
			return nil
		}
		return b.putToken(root)
	})
	switch {
	case err != nil:
		return baton.Token{}, err
	case taken:
		return baton.Token{}, fmt.Errorf("%w: token %s", store.ErrExists, root.ID)
	}
	return root, nil
}

// ClaimRoot implements store.TokenStore.
func (s *Store) ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	var claimed baton.Token
	var refused error
	err := s.write(ctx, "claim root", func(tx *bolt.Tx) error {
		refused = nil
		b := bucketsOf(tx)
		t, live, err := b.getToken(id)
		switch {
		case err != nil:
			return err
		case !live:
			refused = fmt.Errorf("%w: token %s", store.ErrNotFound, id)
			return nil
		case t.Expired(now):
			refused = fmt.Errorf("%w: token %s expired at %s", store.ErrExpired, id, t.ExpiresAt)
			return nil
		case t.ExpiresAt.IsZero():
			claimed = t
			return nil
		}
		if err := b.rootExpiry.Delete(expiryKey(t.ExpiresAt, t.ID)); err != nil {
			return err
		}
		t.ExpiresAt = time.Time{}
		claimed = t
		return b.tokens.Put(append([]byte{}, t.ID[:]...), encodeToken(t))
	})
	switch {
	case err != nil:
		return baton.Token{}, err
	case refused != nil:
		return baton.Token{}, refused
	}
	return claimed, nil
}

// Get implements store.TokenStore.
func (s *Store) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	var t baton.Token
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var live bool
		var err error
		t, live, err = bucketsOf(tx).getToken(id)
		if err == nil && !live {
			err = fmt.Errorf("%w: token %s", store.ErrNotFound, id)
		}
		return err
	})
	if err != nil {
		return baton.Token{}, err
	}
	return t, nil
}

// ListByConversation implements store.TokenStore.
func (s *Store) ListByConversation(ctx context.Context, conversation baton.TokenID, page store.Page) ([]baton.Token, error) {
	return s.list(ctx, bucketByConversation, conversation[:], page)
}

// ListByDestination implements store.TokenStore.
func (s *Store) ListByDestination(ctx context.Context, destination string, page store.Page) ([]baton.Token, error) {
	return s.list(ctx, bucketByDestination, destinationPrefix(destination), page)
}

// list reads the tokens that an index lists under prefix, in id order.
func (s *Store) list(ctx context.Context, index, prefix []byte, page store.Page) ([]baton.Token, error) {
	var out []baton.Token
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		return scanIDs(tx.Bucket(index), prefix, page.After, func(id baton.TokenID) (bool, error) {
			t, live, err := b.getToken(id)
			if err != nil {
				return false, err
			}
			if !live {
				return false, fmt.Errorf("%w: index lists token %s, which is absent", errCorrupt, id)
			}
			out = append(out, t)
			return len(out) < page.Size(), nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ExpireRoots implements store.TokenStore. It deletes the tokens with the
// earliest expiries first.
func (s *Store) ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		// Still report a closed store or a cancelled context.
		return 0, s.view(ctx, func(*bolt.Tx) error { return nil })
	}
	bound := appendTime(nil, before)
	var deleted int
	err := s.write(ctx, "expire roots", func(tx *bolt.Tx) error {
		deleted = 0
		b := bucketsOf(tx)
		var expired []baton.TokenID
		c := b.rootExpiry.Cursor()
		for k, _ := c.First(); k != nil && len(expired) < limit; k, _ = c.Next() {
			if len(k) != timeLen+16 {
				return fmt.Errorf("%w: expiry index key of %d bytes", errCorrupt, len(k))
			}
			if bytes.Compare(k[:timeLen], bound) >= 0 {
				break
			}
			expired = append(expired, baton.TokenID(k[timeLen:]))
		}
		// Delete after the scan: deleting under a cursor skips keys.
		for _, id := range expired {
			t, live, err := b.getToken(id)
			if err != nil {
				return err
			}
			if !live {
				return fmt.Errorf("%w: expiry index lists token %s, which is absent", errCorrupt, id)
			}
			if err := b.deleteToken(t); err != nil {
				return err
			}
		}
		deleted = len(expired)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return deleted, nil
}
