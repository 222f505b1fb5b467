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

// CommitBatch implements store.BatchCommitter in one transaction, each
// entity its own compare-and-set, so that one entity's conflict leaves the
// others applied. A batch of more than batchedFrom entities takes four
// statements whatever its size (more only past maxStatementBytes of
// values): one SELECT ... FOR UPDATE locks the rows
// of all its keys in key order (so that concurrent batches lock them in
// one order) and reads their versions; then, in one statement each, the
// entities found at their version are written (their rows are locked, so
// nothing can change them in between) and the new ones whose key is free
// are inserted (should one be taken meanwhile, under READ COMMITTED, the
// insert is repeated one entity at a time: a duplicate key undoes only its
// own statement). A smaller batch runs one conditional statement per
// entity, in key order.
func (s *Store) CommitBatch(ctx context.Context, entities []store.Entity) ([]error, error) {
	return s.commitBatch(ctx, entities, len(entities) > batchedFrom)
}

// commitBatch is CommitBatch, in four statements if batched, else in one
// per entity.
func (s *Store) commitBatch(ctx context.Context, entities []store.Entity, batched bool) ([]error, error) {
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
	write := s.commitEach
	if batched {
		write = s.commitBatched
	}
	var results []error
	err := s.inTx(ctx, "commit batch", func(tx *sql.Tx) error {
		results = make([]error, len(entities))
		return write(ctx, tx, entities, rows, order, results)
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// batchedFrom is the largest batch that CommitBatch commits one statement
// per entity: BenchmarkCommitBatch measured batches of 4 no faster in the
// four statements of commitBatched (which save two round trips but make
// the server insert-then-update each row), batches of 16 and 64 1.3 and
// 1.6 times as fast over a server on tmpfs, 2.6 and 3.2 times over one
// that syncs to a shared disk.
const batchedFrom = 4

// commitEach writes the entities of order one conditional statement each.
func (s *Store) commitEach(ctx context.Context, tx *sql.Tx, entities []store.Entity, rows []entityRow, order []int, results []error) error {
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
}

// commitBatched locks the rows of every key in order, then writes the
// entities at their version in one statement and inserts the new ones in
// another.
func (s *Store) commitBatched(ctx context.Context, tx *sql.Tx, entities []store.Entity, rows []entityRow, order []int, results []error) error {
	keys := make([]string, len(order))
	for j, i := range order {
		keys[j] = entities[i].Key
	}
	versions, err := s.lockKeys(ctx, tx, keys)
	if err != nil {
		return err
	}
	var updates, inserts []int
	for _, i := range order {
		e := entities[i]
		current, exists := versions[e.Key]
		switch {
		case exists && current == e.Version && e.Version > 0:
			updates = append(updates, i)
		case !exists && e.Version == 0:
			inserts = append(inserts, i)
		default:
			results[i] = fmt.Errorf("%w: entity %q is at version %d, not %d", store.ErrConflict, e.Key, current, e.Version)
		}
	}
	if err := s.writeLocked(ctx, tx, entities, rows, updates); err != nil {
		return err
	}
	return s.insertNew(ctx, tx, entities, rows, inserts, results)
}

// lockKeys locks the rows of keys (sorted), and the gaps where rows are
// missing, in key order, and returns the versions of those that exist.
func (s *Store) lockKeys(ctx context.Context, tx *sql.Tx, keys []string) (map[string]uint64, error) {
	args := make([]any, len(keys))
	for i, k := range keys {
		args[i] = []byte(k)
	}
	rows, err := tx.QueryContext(ctx, "SELECT `key`, version FROM "+table(s.cfg.Prefix, "entities")+" WHERE `key` IN "+
		placeholders(1, len(keys))+" ORDER BY `key` FOR UPDATE", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	versions := make(map[string]uint64, len(keys))
	for rows.Next() {
		var key []byte
		var version uint64
		if err := rows.Scan(&key, &version); err != nil {
			return nil, err
		}
		versions[string(key)] = version
	}
	return versions, rows.Err()
}

// writeLocked writes the entities of idx, whose rows exist at their
// versions and are locked by tx, in one statement: each row's update is
// certain, so an insert that finds the key and updates its row is one.
func (s *Store) writeLocked(ctx context.Context, tx *sql.Tx, entities []store.Entity, rows []entityRow, idx []int) error {
	for _, part := range statementParts(entities, rows, idx) {
		if err := s.upsertLocked(ctx, tx, entities, rows, part); err != nil {
			return err
		}
	}
	return nil
}

// maxStatementBytes bounds the values of one statement that writes many
// entities, well under the server's max_allowed_packet (16 MiB by default
// on MariaDB, 64 MiB on MySQL 8), which a batch of large states would
// otherwise pass and fail on every retry, where entity by entity it fit.
const maxStatementBytes = 1 << 20

// statementParts splits idx, in its order, into parts whose values stay
// within maxStatementBytes (an entity larger than that alone in a part).
func statementParts(entities []store.Entity, rows []entityRow, idx []int) [][]int {
	var parts [][]int
	start, bytes := 0, 0
	for j, i := range idx {
		size := len(entities[i].Key) + len(entities[i].State) + len(rows[i].outbox) + 64
		if j > start && bytes+size > maxStatementBytes {
			parts = append(parts, idx[start:j])
			start, bytes = j, 0
		}
		bytes += size
	}
	if start < len(idx) {
		parts = append(parts, idx[start:])
	}
	return parts
}

// upsertLocked is one statement of writeLocked.
func (s *Store) upsertLocked(ctx context.Context, tx *sql.Tx, entities []store.Entity, rows []entityRow, idx []int) error {
	args := make([]any, 0, 6*len(idx))
	for _, i := range idx {
		e, r := entities[i], rows[i]
		args = append(args, []byte(e.Key), e.Version+1, e.State, r.outbox, r.oldestS, r.oldestNs)
	}
	res, err := tx.ExecContext(ctx, s.sql.upsertEntities+placeholders(len(idx), 6)+s.sql.upsertEntitiesUpdate, args...)
	if err != nil {
		return err
	}
	// An insert that updates its row counts 2 (one that changes nothing
	// would count 0, but every write raises the version).
	if n, _ := res.RowsAffected(); n != 2*int64(len(idx)) {
		return fmt.Errorf("mysql: commit batch: %d rows affected writing %d locked entities, want %d", n, len(idx), 2*len(idx))
	}
	return nil
}

// insertNew inserts the new entities of idx in one statement, or, if a
// key was taken after lockKeys, one at a time, the taken ones conflicts.
func (s *Store) insertNew(ctx context.Context, tx *sql.Tx, entities []store.Entity, rows []entityRow, idx []int, results []error) error {
	for _, part := range statementParts(entities, rows, idx) {
		if err := s.insertPart(ctx, tx, entities, rows, part, results); err != nil {
			return err
		}
	}
	return nil
}

// insertPart is one statement of insertNew.
func (s *Store) insertPart(ctx context.Context, tx *sql.Tx, entities []store.Entity, rows []entityRow, idx []int, results []error) error {
	args := make([]any, 0, 6*len(idx))
	for _, i := range idx {
		e, r := entities[i], rows[i]
		args = append(args, []byte(e.Key), 1, e.State, r.outbox, r.oldestS, r.oldestNs)
	}
	_, err := tx.ExecContext(ctx, s.sql.insertEntities+placeholders(len(idx), 6), args...)
	if mysqlErrorNumber(err) != errDuplicateKey {
		return err
	}
	return s.commitEach(ctx, tx, entities, rows, idx, results)
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
