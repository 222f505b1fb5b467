package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// Load implements store.EntityStore.
func (s *Store) Load(ctx context.Context, key string) (store.Entity, error) {
	if !storableText(key) {
		return store.Entity{Key: key}, nil // no stored entity can have this key
	}
	var row storedEntity
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		return conn.QueryRow(ctx, s.sql.load, key).Scan(&row.version, &row.state, &row.outbox)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Entity{Key: key}, nil
	}
	if err != nil {
		return store.Entity{}, fmt.Errorf("postgres: load %q: %w", key, err)
	}
	return row.entity(key)
}

// LoadBatch implements store.BatchLoader in one statement.
func (s *Store) LoadBatch(ctx context.Context, keys []string) ([]store.Entity, error) {
	out := make([]store.Entity, len(keys))
	storable := make([]string, 0, len(keys))
	for i, key := range keys {
		out[i].Key = key
		if storableText(key) { // no stored entity has another key
			storable = append(storable, key)
		}
	}
	if len(storable) == 0 {
		return out, nil
	}
	stored := make(map[string]storedEntity, len(storable))
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, s.sql.loadBatch, storable)
		if err != nil {
			return err
		}
		var key string
		var row storedEntity
		_, err = pgx.ForEachRow(rows, []any{&key, &row.version, &row.state, &row.outbox}, func() error {
			stored[key] = row
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: load batch of %d: %w", len(keys), err)
	}
	for i, key := range keys {
		if row, ok := stored[key]; ok {
			// Each its own state, as from Load: keys may repeat.
			row.state = slices.Clone(row.state)
			if out[i], err = row.entity(key); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// storedEntity is an entity's row as a load reads it.
type storedEntity struct {
	version       int64
	state, outbox []byte
}

// entity decodes the row of the entity stored under key.
func (r storedEntity) entity(key string) (store.Entity, error) {
	e := store.Entity{Key: key, Version: uint64(r.version), State: r.state}
	if err := json.Unmarshal(r.outbox, &e.Outbox); err != nil {
		return store.Entity{}, fmt.Errorf("postgres: load %q: decode outbox: %w", key, err)
	}
	return e, nil
}

// LoadWithToken implements store.TokenLoader in one statement, so both
// reads see one snapshot.
func (s *Store) LoadWithToken(ctx context.Context, key string, token baton.TokenID) (store.Entity, baton.Token, error) {
	if !storableText(key) {
		// No stored entity can have this key; the token is read alone.
		tok, err := s.Get(ctx, token)
		return store.Entity{Key: key}, tok, err
	}
	var version *int64
	var state, outbox []byte
	var tr tokenRow
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		return conn.QueryRow(ctx, s.sql.loadWithToken, key, token[:]).Scan(append([]any{&version, &state, &outbox}, tr.fields()...)...)
	})
	if err != nil {
		return store.Entity{}, baton.Token{}, fmt.Errorf("postgres: load %q with token %s: %w", key, token, err)
	}
	e := store.Entity{Key: key}
	if version != nil {
		if e, err = (storedEntity{*version, state, outbox}).entity(key); err != nil {
			return store.Entity{}, baton.Token{}, err
		}
	}
	if tr.id == nil {
		return e, baton.Token{}, fmt.Errorf("%w: token %s", store.ErrNotFound, token)
	}
	tok, err := tr.token()
	if err != nil {
		return store.Entity{}, baton.Token{}, err
	}
	return e, tok, nil
}

// Commit implements store.EntityStore: an insert for version 0, else an
// update conditional on the version, one statement either way.
func (s *Store) Commit(ctx context.Context, e store.Entity) (uint64, error) {
	row, err := newEntityRow(e)
	if err != nil {
		return 0, err
	}
	var applied int64
	err = s.withConn(ctx, func(conn *pgxpool.Conn) error {
		var tag pgconn.CommandTag
		var err error
		if e.Version == 0 {
			tag, err = conn.Exec(ctx, s.sql.insertEntity, e.Key, e.State, row.outbox, row.oldestAt, row.oldestNs)
		} else {
			tag, err = conn.Exec(ctx, s.sql.updateEntity, e.Key, int64(e.Version), e.State, row.outbox, row.oldestAt, row.oldestNs)
		}
		applied = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: commit %q: %w", e.Key, err)
	}
	if applied != 1 {
		return 0, fmt.Errorf("%w: entity %q is not at version %d", store.ErrConflict, e.Key, e.Version)
	}
	return e.Version + 1, nil
}

// CommitBatch implements store.BatchCommitter in one SQL statement (one
// round trip, one commit): an update of every entity conditional on its
// own version, or an insert of a new one (version 0) if its key is free,
// so one entity's conflict leaves the others applied.
func (s *Store) CommitBatch(ctx context.Context, entities []store.Entity) ([]error, error) {
	if err := store.ValidateBatch(entities); err != nil {
		return nil, err
	}
	n := len(entities)
	keys, versions := make([]string, n), make([]int64, n)
	states, outboxes := make([][]byte, n), make([][]byte, n)
	oldestAt, oldestNs := make([]*time.Time, n), make([]*int16, n)
	for i, e := range entities {
		row, err := newEntityRow(e)
		if err != nil {
			return nil, err
		}
		keys[i], versions[i], states[i], outboxes[i] = e.Key, int64(e.Version), e.State, row.outbox
		oldestAt[i], oldestNs[i] = row.oldestAt, row.oldestNs
	}
	if n == 0 {
		return nil, nil
	}
	committed := make(map[string]bool, n)
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, s.sql.commitBatch, keys, versions, states, outboxes, oldestAt, oldestNs)
		if err != nil {
			return err
		}
		updated, err := pgx.CollectRows(rows, pgx.RowTo[string])
		for _, key := range updated {
			committed[key] = true
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: commit batch of %d: %w", n, err)
	}
	results := make([]error, n)
	for i, e := range entities {
		if !committed[e.Key] {
			results[i] = fmt.Errorf("%w: entity %q is not at version %d", store.ErrConflict, e.Key, e.Version)
		}
	}
	return results, nil
}

// CommitTransition implements store.CommitTransitioner in one SQL
// statement (one round trip, one commit): consume token, commit e, create
// the children, all or nothing. If token is not live it returns
// consumed false and changes nothing, whatever the entity's version.
func (s *Store) CommitTransition(ctx context.Context, e store.Entity, token baton.TokenID, create []baton.Token) (uint64, bool, error) {
	row, err := newEntityRow(e)
	if err != nil {
		return 0, false, err
	}
	if err := store.ValidateTransition(token, create); err != nil {
		return 0, false, err
	}
	if err := checkTokenText(create...); err != nil {
		return 0, false, err
	}
	query, args := s.sql.fastPathCall(token, e, row, create)
	var consumed int
	err = s.withConn(ctx, func(conn *pgxpool.Conn) error {
		err := conn.QueryRow(ctx, query, args...).Scan(&consumed)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23514" && pgErr.ConstraintName == "entity_version_conflict" {
			return fmt.Errorf("%w: entity %q is not at version %d", store.ErrConflict, e.Key, e.Version)
		}
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("postgres: commit %q and transition %s: %w", e.Key, token, err)
	}
	if consumed != 1 {
		return 0, false, nil
	}
	return e.Version + 1, true, nil
}

// Stale implements store.EntityStore. It returns the entities with the
// oldest outbox entries first.
func (s *Store) Stale(ctx context.Context, before time.Time, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	at, ns := splitTime(before)
	var keys []string
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, s.sql.stale, at, ns, limit)
		if err != nil {
			return err
		}
		keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: stale: %w", err)
	}
	return keys, nil
}

// entityRow is what a commit writes besides key, version and state.
type entityRow struct {
	outbox   []byte     // JSON of store.Entity.Outbox
	oldestAt *time.Time // NULL: empty outbox
	oldestNs *int16
}

// newEntityRow validates e and encodes its outbox.
func newEntityRow(e store.Entity) (entityRow, error) {
	if err := store.ValidateEntity(e); err != nil {
		return entityRow{}, err
	}
	if !storableText(e.Key) {
		return entityRow{}, fmt.Errorf("%w: entity key %q must be valid UTF-8 without NUL to be stored in PostgreSQL", store.ErrInvalid, e.Key)
	}
	if e.Version >= math.MaxInt64 {
		return entityRow{}, fmt.Errorf("%w: entity %q: version %d does not fit a bigint", store.ErrInvalid, e.Key, e.Version)
	}
	outbox, oldest := e.OutboxInUTC()
	encoded, err := json.Marshal(outbox)
	if err != nil {
		return entityRow{}, fmt.Errorf("%w: entity %q: encode outbox: %w", store.ErrInvalid, e.Key, err)
	}
	row := entityRow{outbox: encoded}
	if len(outbox) > 0 {
		at, ns := splitTime(oldest)
		row.oldestAt, row.oldestNs = &at, &ns
	}
	return row, nil
}
