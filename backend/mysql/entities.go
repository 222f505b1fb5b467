package mysql

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// entityRow is what a commit writes for an entity besides key and state.
type entityRow struct {
	outbox            []byte
	oldestS, oldestNs any // NULL for an empty outbox
}

func newEntityRow(e store.Entity) (entityRow, error) {
	if err := store.ValidateEntity(e); err != nil {
		return entityRow{}, err
	}
	if e.Version >= math.MaxInt64 {
		return entityRow{}, fmt.Errorf("%w: entity %q: version %d is too large", store.ErrInvalid, e.Key, e.Version)
	}
	outbox, oldest := e.OutboxInUTC()
	encoded, err := json.Marshal(outbox)
	if err != nil {
		return entityRow{}, fmt.Errorf("%w: entity %q: encode outbox: %w", store.ErrInvalid, e.Key, err)
	}
	row := entityRow{outbox: encoded}
	if len(outbox) > 0 {
		row.oldestS, row.oldestNs = toColumns(oldest)
	}
	return row, nil
}

func decodeEntity(key string, version uint64, state, outbox []byte) (store.Entity, error) {
	e := store.Entity{Key: key, Version: version, State: state}
	if err := json.Unmarshal(outbox, &e.Outbox); err != nil {
		return store.Entity{}, fmt.Errorf("mysql: load %q: decode outbox: %w", key, err)
	}
	return e, nil
}

// Load implements store.EntityStore.
func (s *Store) Load(ctx context.Context, key string) (store.Entity, error) {
	if err := s.usable(ctx, "load"); err != nil {
		return store.Entity{}, err
	}
	var version uint64
	var state, outbox []byte
	err := s.db.QueryRowContext(ctx, s.sql.load, []byte(key)).Scan(&version, &state, &outbox)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Entity{Key: key}, nil
	}
	if err != nil {
		return store.Entity{}, fmt.Errorf("mysql: load %q: %w", key, err)
	}
	return decodeEntity(key, version, state, outbox)
}

// LoadBatch implements store.BatchLoader in one SELECT.
func (s *Store) LoadBatch(ctx context.Context, keys []string) ([]store.Entity, error) {
	if len(keys) == 0 {
		return []store.Entity{}, nil
	}
	if err := s.usable(ctx, "load batch"); err != nil {
		return nil, err
	}
	args := make([]any, len(keys))
	for i, key := range keys {
		args[i] = []byte(key)
	}
	rows, err := s.db.QueryContext(ctx, s.sql.loadBatch+placeholders(1, len(keys)), args...)
	if err != nil {
		return nil, fmt.Errorf("mysql: load batch of %d: %w", len(keys), err)
	}
	defer rows.Close()
	type row struct {
		version       uint64
		state, outbox []byte
	}
	stored := make(map[string]row, len(keys))
	for rows.Next() {
		var key []byte
		var r row
		if err := rows.Scan(&key, &r.version, &r.state, &r.outbox); err != nil {
			return nil, fmt.Errorf("mysql: load batch of %d: %w", len(keys), err)
		}
		stored[string(key)] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mysql: load batch of %d: %w", len(keys), err)
	}
	out := make([]store.Entity, len(keys))
	for i, key := range keys {
		r, ok := stored[key]
		if !ok {
			out[i] = store.Entity{Key: key}
			continue
		}
		// Each its own state, as from Load: keys may repeat.
		if out[i], err = decodeEntity(key, r.version, slices.Clone(r.state), r.outbox); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// LoadWithToken implements store.TokenLoader in one statement: InnoDB
// reads both rows from one consistent snapshot.
func (s *Store) LoadWithToken(ctx context.Context, key string, token baton.TokenID) (store.Entity, baton.Token, error) {
	if err := s.usable(ctx, "load with token"); err != nil {
		return store.Entity{}, baton.Token{}, err
	}
	var version sql.NullInt64
	var state, outbox []byte
	var r tokenRow
	err := s.db.QueryRowContext(ctx, s.sql.loadWithToken, []byte(key), token[:]).Scan(append([]any{&version, &state, &outbox}, r.fields()...)...)
	if err != nil {
		return store.Entity{}, baton.Token{}, fmt.Errorf("mysql: load %q with token %s: %w", key, token, err)
	}
	e := store.Entity{Key: key}
	if version.Valid {
		if e, err = decodeEntity(key, uint64(version.Int64), state, outbox); err != nil {
			return store.Entity{}, baton.Token{}, err
		}
	}
	if r.id == nil {
		return e, baton.Token{}, fmt.Errorf("%w: token %s", store.ErrNotFound, token)
	}
	tok, err := r.token()
	if err != nil {
		return store.Entity{}, baton.Token{}, err
	}
	return e, tok, nil
}

// writeEntity commits e in tx: an insert for version 0 (a duplicate key
// is a conflict), else an update conditional on the version.
func (s *Store) writeEntity(ctx context.Context, tx *sql.Tx, e store.Entity, row entityRow) error {
	var res sql.Result
	var err error
	if e.Version == 0 {
		res, err = tx.ExecContext(ctx, s.sql.insertEntity, []byte(e.Key), e.State, row.outbox, row.oldestS, row.oldestNs)
		if mysqlErrorNumber(err) == errDuplicateKey {
			return fmt.Errorf("%w: entity %q exists", store.ErrConflict, e.Key)
		}
	} else {
		res, err = tx.ExecContext(ctx, s.sql.updateEntity, e.State, row.outbox, row.oldestS, row.oldestNs, []byte(e.Key), e.Version)
	}
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("%w: entity %q is not at version %d", store.ErrConflict, e.Key, e.Version)
	}
	return nil
}

// Commit implements store.EntityStore.
func (s *Store) Commit(ctx context.Context, e store.Entity) (uint64, error) {
	row, err := newEntityRow(e)
	if err != nil {
		return 0, err
	}
	if err := s.inTx(ctx, "commit "+e.Key, func(tx *sql.Tx) error { return s.writeEntity(ctx, tx, e, row) }); err != nil {
		return 0, err
	}
	return e.Version + 1, nil
}

// CommitTransition implements store.CommitTransitioner (the fast path) in
// one transaction: delete the token (none: a duplicate, roll back), then
// the entity's compare-and-set, then the children; all or nothing. The
// token is locked before the entity, as everywhere in this package.
func (s *Store) CommitTransition(ctx context.Context, e store.Entity, token baton.TokenID, create []baton.Token) (uint64, bool, error) {
	row, err := newEntityRow(e)
	if err != nil {
		return 0, false, err
	}
	if err := store.ValidateTransition(token, create); err != nil {
		return 0, false, err
	}
	consumed := false
	err = s.inTx(ctx, "commit transition", func(tx *sql.Tx) error {
		consumed = false
		res, err := tx.ExecContext(ctx, s.sql.deleteToken, token[:])
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errDuplicate
		}
		if err := s.writeEntity(ctx, tx, e, row); err != nil {
			return err
		}
		if err := s.insertTokens(ctx, tx, create); err != nil {
			return err
		}
		consumed = true
		return nil
	})
	switch {
	case errors.Is(err, errDuplicate):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	}
	return e.Version + 1, consumed, nil
}

// errDuplicate rolls back a fast-path commit whose token is not live.
var errDuplicate = fmt.Errorf("%w: token not live", store.ErrNotFound)

// CommitBatch implements store.BatchCommitter in one transaction: each
// entity's conditional update (or insert, at version 0) on its own, so one
// entity's conflict leaves the others applied (a duplicate key undoes only
// its own statement); entities in key order, so that concurrent batches
// lock them in one order.
func (s *Store) CommitBatch(ctx context.Context, entities []store.Entity) ([]error, error) {
	if err := store.ValidateBatch(entities); err != nil {
		return nil, err
	}
	rows := make([]entityRow, len(entities))
	for i, e := range entities {
		row, err := newEntityRow(e)
		if err != nil {
			return nil, err
		}
		rows[i] = row
	}
	order := make([]int, len(entities))
	for i := range order {
		order[i] = i
	}
	sortByKey(order, entities)
	var results []error
	err := s.inTx(ctx, "commit batch", func(tx *sql.Tx) error {
		results = make([]error, len(entities))
		for _, i := range order {
			err := s.writeEntity(ctx, tx, entities[i], rows[i])
			if errors.Is(err, store.ErrConflict) {
				results[i] = err
				continue
			}
			if err != nil {
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

// Stale implements store.EntityStore.
func (s *Store) Stale(ctx context.Context, before time.Time, limit int) ([]string, error) {
	if err := s.usable(ctx, "stale"); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	sec, ns := toColumns(before)
	rows, err := s.db.QueryContext(ctx, s.sql.stale, sec, ns, limit)
	if err != nil {
		return nil, fmt.Errorf("mysql: stale: %w", err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k []byte
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("mysql: stale: %w", err)
		}
		keys = append(keys, string(k))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mysql: stale: %w", err)
	}
	return keys, nil
}
