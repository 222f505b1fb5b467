package memory

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// Tx is a transaction over an EntityStore's tables: the in-memory
// counterpart of a database transaction, in which a service keeps its own
// data (tables of keys and values) and which baton commits with an
// activity's outbox entry (store.TxCommitter) or in which a caller starts a
// conversation (store.Starter). Writes are buffered and applied at once by
// Commit; reads see the transaction's own writes, then what is committed
// (read committed). A Tx is for one goroutine.
type Tx struct {
	s      *EntityStore
	writes map[tableKey]*[]byte // nil: deleted
	starts []store.Start
	done   bool
}

type tableKey struct{ table, key string }

var (
	_ store.TxCommitter[*Tx] = (*EntityStore)(nil)
	_ store.Starter[*Tx]     = (*EntityStore)(nil)
)

// Begin starts a transaction over s's tables.
func (s *EntityStore) Begin() *Tx { return &Tx{s: s, writes: map[tableKey]*[]byte{}} }

// Get returns the value of key in table as tx sees it.
func (tx *Tx) Get(table, key string) ([]byte, bool) {
	if v, ok := tx.writes[tableKey{table, key}]; ok {
		if v == nil {
			return nil, false
		}
		return slices.Clone(*v), true
	}
	return tx.s.Get(table, key)
}

// Put sets key in table to value when tx commits.
func (tx *Tx) Put(table, key string, value []byte) {
	v := slices.Clone(value)
	tx.writes[tableKey{table, key}] = &v
}

// Delete removes key from table when tx commits.
func (tx *Tx) Delete(table, key string) { tx.writes[tableKey{table, key}] = nil }

// Commit applies tx's writes and starts at once.
func (tx *Tx) Commit() error {
	s := tx.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := tx.usable(); err != nil {
		return err
	}
	tx.apply()
	return nil
}

// Rollback discards tx. It is harmless after Commit.
func (tx *Tx) Rollback() { tx.done = true }

func (tx *Tx) usable() error {
	switch {
	case tx.done:
		return fmt.Errorf("%w: transaction already ended", store.ErrInvalid)
	case tx.s.closed:
		return store.ErrClosed
	}
	return nil
}

// apply writes tx into the store; s.mu is held.
func (tx *Tx) apply() {
	s := tx.s
	for k, v := range tx.writes {
		if v == nil {
			delete(s.tables[k.table], k.key)
			continue
		}
		if s.tables[k.table] == nil {
			s.tables[k.table] = map[string][]byte{}
		}
		s.tables[k.table][k.key] = *v
	}
	for _, start := range tx.starts {
		s.starts[start.ID] = start
	}
	tx.done = true
}

// Get returns the committed value of key in table.
func (s *EntityStore) Get(table, key string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.tables[table][key]
	return slices.Clone(v), ok
}

// Table returns a copy of the committed rows of table.
func (s *EntityStore) Table(table string) map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.tables[table])
}

// CommitTx implements store.TxCommitter. The memory store is never the
// token store too, so step.Fused is refused. The entity's version is
// checked before write runs and again, with write's tables, at the commit:
// two activities of one entity cannot both commit.
func (s *EntityStore) CommitTx(ctx context.Context, step store.TxStep, write func(context.Context, *Tx) (store.Entity, []baton.Token, error)) (uint64, bool, error) {
	if step.Fused {
		return 0, false, fmt.Errorf("%w: the memory entity store keeps no tokens", store.ErrInvalid)
	}
	if err := s.checkVersion(ctx, step.Key, step.Version); err != nil {
		return 0, false, err
	}
	tx := s.Begin()
	next, _, err := write(ctx, tx)
	if err != nil {
		return 0, false, err
	}
	if next.Key != step.Key || next.Version != step.Version {
		return 0, false, fmt.Errorf("%w: CommitTx of %q at version %d got entity %q at version %d", store.ErrInvalid, step.Key, step.Version, next.Key, next.Version)
	}
	if err := store.ValidateEntity(next); err != nil {
		return 0, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return 0, false, err
	}
	if err := s.commit(next); err != nil {
		return 0, false, err
	}
	tx.apply()
	return next.Version + 1, true, nil
}

func (s *EntityStore) checkVersion(ctx context.Context, key string, version uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return err
	}
	if current := s.entities[key].Version; current != version {
		return fmt.Errorf("%w: entity %q is at version %d, not %d", store.ErrConflict, key, current, version)
	}
	return nil
}

// RecordStart implements store.Starter: the start is recorded when tx
// commits. The memory store is never the token store too, so root must be
// nil.
func (s *EntityStore) RecordStart(_ context.Context, tx *Tx, start store.Start, root *baton.Token) (store.Start, error) {
	switch {
	case root != nil:
		return store.Start{}, fmt.Errorf("%w: the memory entity store keeps no tokens", store.ErrInvalid)
	case tx.s != s:
		return store.Start{}, fmt.Errorf("%w: a transaction of another store", store.ErrInvalid)
	case tx.done:
		return store.Start{}, fmt.Errorf("%w: transaction already ended", store.ErrInvalid)
	}
	if err := store.ValidateStart(start); err != nil {
		return store.Start{}, err
	}
	start.Version = 1
	start.Root, start.Claimed = baton.TokenID{}, false
	tx.starts = append(tx.starts, cloneStart(start))
	return start, nil
}

// LoadStart implements store.Starts.
func (s *EntityStore) LoadStart(ctx context.Context, id baton.TokenID) (store.Start, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return store.Start{}, err
	}
	start, ok := s.starts[id]
	if !ok {
		return store.Start{}, fmt.Errorf("%w: start %s", store.ErrNotFound, id)
	}
	return cloneStart(start), nil
}

// UpdateStart implements store.Starts.
func (s *EntityStore) UpdateStart(ctx context.Context, start store.Start) (store.Start, error) {
	if err := store.ValidateStart(start); err != nil {
		return store.Start{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return store.Start{}, err
	}
	current, ok := s.starts[start.ID]
	switch {
	case !ok:
		return store.Start{}, fmt.Errorf("%w: start %s", store.ErrNotFound, start.ID)
	case current.Version != start.Version:
		return store.Start{}, fmt.Errorf("%w: start %s is at version %d, not %d", store.ErrConflict, start.ID, current.Version, start.Version)
	}
	start.Version++
	s.starts[start.ID] = cloneStart(start)
	return start, nil
}

// DeleteStart implements store.Starts.
func (s *EntityStore) DeleteStart(ctx context.Context, id baton.TokenID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return err
	}
	delete(s.starts, id)
	return nil
}

// PendingStarts implements store.Starts.
func (s *EntityStore) PendingStarts(ctx context.Context, before time.Time, limit int) ([]store.Start, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	var out []store.Start
	for _, start := range s.starts {
		if start.CreatedAt.Before(before) {
			out = append(out, cloneStart(start))
		}
	}
	slices.SortFunc(out, func(a, b store.Start) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return compareIDs(a.ID, b.ID)
	})
	return out[:min(len(out), max(limit, 0))], nil
}

func cloneStart(s store.Start) store.Start {
	s.Payload = slices.Clone(s.Payload)
	return s
}
