package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// Load implements store.EntityStore.
func (s *Store) Load(ctx context.Context, key string) (store.Entity, error) {
	var e store.Entity
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		e, err = loadEntity(tx.Bucket(bucketEntities), key)
		return err
	})
	if err != nil {
		return store.Entity{}, err
	}
	return e, nil
}

// LoadBatch implements store.BatchLoader: every read in one read
// transaction.
func (s *Store) LoadBatch(ctx context.Context, keys []string) ([]store.Entity, error) {
	out := make([]store.Entity, len(keys))
	err := s.view(ctx, func(tx *bolt.Tx) error {
		entities := tx.Bucket(bucketEntities)
		for i, key := range keys {
			var err error
			if out[i], err = loadEntity(entities, key); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// loadEntity returns the entity stored under key in the entities bucket,
// or one at version 0 if there is none.
func loadEntity(entities *bolt.Bucket, key string) (store.Entity, error) {
	if key == "" || len(key) > store.MaxEntityKeyBytes {
		return store.Entity{Key: key}, nil // no commit accepts such a key, so none is stored
	}
	v := entities.Get([]byte(key))
	if v == nil {
		return store.Entity{Key: key}, nil
	}
	return decodeEntity(key, v)
}

// LoadWithToken implements store.TokenLoader: both reads in one read
// transaction.
func (s *Store) LoadWithToken(ctx context.Context, key string, token baton.TokenID) (store.Entity, baton.Token, error) {
	var e store.Entity
	var t baton.Token
	var live bool
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		var err error
		if e, err = loadEntity(b.entities, key); err != nil {
			return err
		}
		t, live, err = b.getToken(token)
		return err
	})
	if err != nil {
		return store.Entity{}, baton.Token{}, err
	}
	if !live {
		return e, baton.Token{}, fmt.Errorf("%w: token %s", store.ErrNotFound, token)
	}
	return e, t, nil
}

// Commit implements store.EntityStore.
func (s *Store) Commit(ctx context.Context, e store.Entity) (uint64, error) {
	if err := store.ValidateEntity(e); err != nil {
		return 0, err
	}
	var refused error
	err := s.write(ctx, "commit", func(tx *bolt.Tx) error {
		refused = nil
		var err error
		refused, err = bucketsOf(tx).commit(e)
		return err
	})
	switch {
	case err != nil:
		return 0, err
	case refused != nil:
		return 0, refused
	}
	return e.Version + 1, nil
}

// CommitBatch implements store.BatchCommitter in one bbolt transaction
// (one fsync): each entity is committed (created, at version 0) as Commit
// would, and one that is refused leaves the others applied.
func (s *Store) CommitBatch(ctx context.Context, entities []store.Entity) ([]error, error) {
	if err := store.ValidateBatch(entities); err != nil {
		return nil, err
	}
	if len(entities) == 0 {
		return nil, nil
	}
	results := make([]error, len(entities))
	err := s.write(ctx, "commit batch", func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		for i, e := range entities {
			var err error
			if results[i], err = b.commit(e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// CommitTransition implements store.CommitTransitioner: Commit and
// Transition in one bbolt transaction, both or neither. When the token is
// not live it reports consumed false and applies nothing, whatever the
// entity's version: the signal is a duplicate either way. Otherwise a
// version conflict returns store.ErrConflict and a child that already
// exists returns store.ErrExists, and nothing is applied.
func (s *Store) CommitTransition(ctx context.Context, e store.Entity, token baton.TokenID, create []baton.Token) (uint64, bool, error) {
	if err := store.ValidateEntity(e); err != nil {
		return 0, false, err
	}
	if err := store.ValidateTransition(token, create); err != nil {
		return 0, false, err
	}
	var consumed bool
	var refused error
	err := s.write(ctx, "commit and transition", func(tx *bolt.Tx) error {
		consumed, refused = false, nil
		b := bucketsOf(tx)
		if v := b.tokens.Get(token[:]); v == nil {
			return nil // duplicate: apply nothing
		}
		// Check the entity before the transition writes anything, so a
		// conflict leaves the transaction untouched.
		var err error
		if refused, err = b.checkVersion(e); err != nil || refused != nil {
			return err
		}
		if consumed, refused, err = b.transition(token, create); err != nil || refused != nil || !consumed {
			// The transition wrote nothing (it checks before it writes).
			consumed = false
			return err
		}
		// The version was checked above, so commit cannot refuse; if it
		// did, failing rolls back the consumed token with it.
		if conflict, err := b.commit(e); err != nil || conflict != nil {
			return errors.Join(err, conflict)
		}
		return nil
	})
	switch {
	case err != nil:
		return 0, false, err
	case refused != nil:
		return 0, false, refused
	case !consumed:
		return 0, false, nil
	}
	return e.Version + 1, true, nil
}

// Stale implements store.EntityStore. It returns the keys of the entities
// with the oldest outbox entries first.
func (s *Store) Stale(ctx context.Context, before time.Time, limit int) ([]string, error) {
	bound := appendTime(nil, before)
	var keys []string
	err := s.view(ctx, func(tx *bolt.Tx) error {
		seen := make(map[string]bool)
		c := tx.Bucket(bucketOutboxCreated).Cursor()
		for k, _ := c.First(); k != nil && len(keys) < limit; k, _ = c.Next() {
			if len(k) <= timeLen {
				return fmt.Errorf("%w: outbox index key of %d bytes", errCorrupt, len(k))
			}
			if bytes.Compare(k[:timeLen], bound) >= 0 {
				break
			}
			if key := string(k[timeLen:]); !seen[key] {
				seen[key] = true
				keys = append(keys, key)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return keys, nil
}

// checkVersion refuses with store.ErrConflict unless the stored version of
// e is e.Version (0: absent). It reads only the version, not the whole
// record.
func (b buckets) checkVersion(e store.Entity) (refused, err error) {
	var current uint64
	if v := b.entities.Get([]byte(e.Key)); v != nil {
		d := decoder{buf: v}
		d.format(recordFormat, entityFormat)
		if current = d.uint64(); d.err != nil {
			return nil, fmt.Errorf("entity %q: %w", e.Key, d.err)
		}
	}
	if current != e.Version {
		return fmt.Errorf("%w: entity %q is at version %d, not %d", store.ErrConflict, e.Key, current, e.Version), nil
	}
	return nil, nil
}

// commit stores e at version e.Version+1 if the stored version is
// e.Version, and brings the outbox index in line: the index entries of
// the outbox entries that e dropped go, those of new entries come.
// refused is store.ErrConflict; err is a database failure.
func (b buckets) commit(e store.Entity) (refused, err error) {
	key := []byte(e.Key)
	var oldOutbox []store.OutboxEntry
	if v := b.entities.Get(key); v != nil {
		stored, err := decodeEntity(e.Key, v)
		if err != nil {
			return nil, err
		}
		oldOutbox = stored.Outbox
		if stored.Version != e.Version {
			return fmt.Errorf("%w: entity %q is at version %d, not %d", store.ErrConflict, e.Key, stored.Version, e.Version), nil
		}
	} else if e.Version != 0 {
		return fmt.Errorf("%w: entity %q is at version 0, not %d", store.ErrConflict, e.Key, e.Version), nil
	}

	oldIndex := outboxIndexKeys(e.Key, oldOutbox)
	newIndex := outboxIndexKeys(e.Key, e.Outbox)
	for k := range oldIndex {
		if !newIndex[k] {
			if err := b.outboxCreated.Delete([]byte(k)); err != nil {
				return nil, err
			}
		}
	}
	for k := range newIndex {
		if !oldIndex[k] {
			if err := b.outboxCreated.Put([]byte(k), nil); err != nil {
				return nil, err
			}
		}
	}
	e.Version++
	return nil, b.entities.Put(key, encodeEntity(e))
}

// outboxIndexKeys returns the outbox index keys of an entity's entries.
// Entries created at the same instant share one key.
func outboxIndexKeys(key string, outbox []store.OutboxEntry) map[string]bool {
	keys := make(map[string]bool, len(outbox))
	for _, o := range outbox {
		keys[string(outboxKey(o.CreatedAt, key))] = true
	}
	return keys
}
