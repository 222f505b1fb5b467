package memory

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// EntityStore is an in-memory store.EntityStore. Use NewEntityStore.
type EntityStore struct {
	mu       sync.Mutex
	entities map[string]store.Entity
	tables   map[string]map[string][]byte // the service's own data (Tx)
	starts   map[baton.TokenID]store.Start
	closed   bool
}

var (
	_ store.EntityStore    = (*EntityStore)(nil)
	_ store.BatchLoader    = (*EntityStore)(nil)
	_ store.BatchCommitter = (*EntityStore)(nil)
)

// NewEntityStore returns an empty entity store.
func NewEntityStore() *EntityStore {
	return &EntityStore{entities: make(map[string]store.Entity), tables: make(map[string]map[string][]byte),
		starts: make(map[baton.TokenID]store.Start)}
}

// Load implements store.EntityStore.
func (s *EntityStore) Load(ctx context.Context, key string) (store.Entity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return store.Entity{}, err
	}
	return s.load(key), nil
}

// LoadBatch implements store.BatchLoader.
func (s *EntityStore) LoadBatch(ctx context.Context, keys []string) ([]store.Entity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	out := make([]store.Entity, len(keys))
	for i, key := range keys {
		out[i] = s.load(key)
	}
	return out, nil
}

// load returns a copy of the entity stored under key; s.mu is held.
func (s *EntityStore) load(key string) store.Entity {
	e, ok := s.entities[key]
	if !ok {
		return store.Entity{Key: key}
	}
	return clone(e)
}

// Commit implements store.EntityStore.
func (s *EntityStore) Commit(ctx context.Context, e store.Entity) (uint64, error) {
	if err := store.ValidateEntity(e); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	if err := s.commit(e); err != nil {
		return 0, err
	}
	return e.Version + 1, nil
}

// CommitBatch implements store.BatchCommitter: each entity as Commit
// would, all at one instant.
func (s *EntityStore) CommitBatch(ctx context.Context, entities []store.Entity) ([]error, error) {
	if err := store.ValidateBatch(entities); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	results := make([]error, len(entities))
	for i, e := range entities {
		results[i] = s.commit(e)
	}
	return results, nil
}

// commit stores a copy of e at e.Version+1 if it is at e.Version, else
// refuses with store.ErrConflict; s.mu is held.
func (s *EntityStore) commit(e store.Entity) error {
	if current := s.entities[e.Key].Version; current != e.Version {
		return fmt.Errorf("%w: entity %q is at version %d, not %d", store.ErrConflict, e.Key, current, e.Version)
	}
	e = clone(e)
	e.Version++
	s.entities[e.Key] = e
	return nil
}

// Stale implements store.EntityStore.
func (s *EntityStore) Stale(ctx context.Context, before time.Time, limit int) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	var keys []string
	for key, e := range s.entities {
		if slices.ContainsFunc(e.Outbox, func(o store.OutboxEntry) bool { return o.CreatedAt.Before(before) }) {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	return keys[:min(len(keys), max(limit, 0))], nil
}

// Keys returns the keys of all committed entities, sorted.
func (s *EntityStore) Keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.entities))
	for k := range s.entities {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Close makes every later call fail with store.ErrClosed.
func (s *EntityStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *EntityStore) usable(ctx context.Context) error {
	if s.closed {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", store.ErrNotApplied, err)
	}
	return nil
}

// clone deep-copies e so callers never share memory with the store.
func clone(e store.Entity) store.Entity {
	e.State = slices.Clone(e.State)
	e.Outbox = slices.Clone(e.Outbox)
	for i := range e.Outbox {
		e.Outbox[i].Signals = slices.Clone(e.Outbox[i].Signals)
		for j := range e.Outbox[i].Signals {
			e.Outbox[i].Signals[j].Payload = slices.Clone(e.Outbox[i].Signals[j].Payload)
		}
		e.Outbox[i].Reply = slices.Clone(e.Outbox[i].Reply)
	}
	return e
}
