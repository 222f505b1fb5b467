package mysql

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

var _ store.TransitionBatcher = (*Store)(nil)

// LoadWithTokens implements store.TransitionBatcher in one SELECT, so that
// every read comes from one consistent snapshot whatever the session's
// isolation level: the reads are a derived table of (index, key, token)
// rows joined to the entities and the tokens.
func (s *Store) LoadWithTokens(ctx context.Context, reads []store.TokenRead) ([]store.Loaded, error) {
	if len(reads) == 0 {
		return nil, nil
	}
	if err := s.usable(ctx, "load with tokens"); err != nil {
		return nil, err
	}
	rows := make([]string, len(reads))
	args := make([]any, 0, 3*len(reads))
	for i, r := range reads {
		rows[i] = "SELECT ? AS i, ? AS k, ? AS tid"
		args = append(args, i, []byte(r.Key), r.Token[:])
	}
	query := "SELECT r.i, e.version, e.state, e.outbox, t." + strings.ReplaceAll(tokenColumns, ", ", ", t.") +
		" FROM (" + strings.Join(rows, " UNION ALL ") + ") AS r" +
		" LEFT JOIN " + table(s.cfg.Prefix, "entities") + " AS e ON e.`key` = r.k" +
		" LEFT JOIN " + table(s.cfg.Prefix, "tokens") + " AS t ON t.id = r.tid"
	res, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("mysql: load with tokens: %w", err)
	}
	defer res.Close()
	out := make([]store.Loaded, len(reads))
	seen := make([]bool, len(reads))
	for res.Next() {
		var i int
		var version sql.NullInt64
		var state, outbox []byte
		var r tokenRow
		if err := res.Scan(append([]any{&i, &version, &state, &outbox}, r.fields()...)...); err != nil {
			return nil, fmt.Errorf("mysql: load with tokens: %w", err)
		}
		if i < 0 || i >= len(reads) || seen[i] {
			return nil, fmt.Errorf("mysql: load with tokens: an answer for read %d", i)
		}
		seen[i] = true
		l := store.Loaded{Entity: store.Entity{Key: reads[i].Key}}
		if version.Valid {
			if l.Entity, err = decodeEntity(reads[i].Key, uint64(version.Int64), state, outbox); err != nil {
				return nil, err
			}
		}
		if r.id != nil {
			if l.Token, err = r.token(); err != nil {
				return nil, err
			}
			l.Live = true
		}
		out[i] = l
	}
	if err := res.Err(); err != nil {
		return nil, fmt.Errorf("mysql: load with tokens: %w", err)
	}
	if i := slices.Index(seen, false); i >= 0 {
		return nil, fmt.Errorf("mysql: load with tokens: no answer for read %d", i)
	}
	return out, nil
}

// CommitTransitions implements store.TransitionBatcher in one transaction:
// it locks every token (in id order), then every entity (in key order),
// then applies each transition whose tokens are live and whose entity is at
// its version: the entities at their version written in one statement, the
// new ones inserted in another (one by one if a key was taken meanwhile: a
// conflict), the tokens of those applied deleted in one, their children
// inserted in one (each split past maxStatementBytes). A refused transition
// changes nothing; a child that exists refuses the whole batch
// (store.ErrExists).
func (s *Store) CommitTransitions(ctx context.Context, transitions []store.Transition) ([]error, error) {
	if err := store.ValidateTransitions(transitions); err != nil {
		return nil, err
	}
	if len(transitions) == 0 {
		return []error{}, nil
	}
	rows := make([]entityRow, len(transitions))
	for i, t := range transitions {
		row, err := newEntityRow(t.Entity)
		if err != nil {
			return nil, err
		}
		rows[i] = row
	}
	order := make([]int, len(transitions))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(transitions[a].Entity.Key, transitions[b].Entity.Key) })
	var results []error
	err := s.inTx(ctx, "commit transitions", func(tx *sql.Tx) error {
		results = make([]error, len(transitions))
		live, err := s.lockTokens(ctx, tx, transitions)
		if err != nil {
			return err
		}
		keys := make([]string, len(order))
		entities := make([]store.Entity, len(transitions))
		for j, i := range order {
			keys[j] = transitions[i].Entity.Key
		}
		for i, t := range transitions {
			entities[i] = t.Entity
		}
		versions, err := s.lockKeys(ctx, tx, keys)
		if err != nil {
			return err
		}
		var updates, inserts []int
		for _, i := range order {
			t := transitions[i]
			consumes := t.Consumes()
			current, exists := versions[t.Entity.Key]
			switch gone := slices.IndexFunc(consumes, func(id baton.TokenID) bool { return !live[id] }); {
			case gone >= 0:
				results[i] = fmt.Errorf("%w: token %s", store.ErrNotFound, consumes[gone])
			case exists && current == t.Entity.Version:
				updates = append(updates, i)
			case !exists && t.Entity.Version == 0:
				inserts = append(inserts, i)
			default:
				results[i] = fmt.Errorf("%w: entity %q is at version %d, not %d", store.ErrConflict, t.Entity.Key, current, t.Entity.Version)
			}
		}
		if err := s.writeLocked(ctx, tx, entities, rows, updates); err != nil {
			return err
		}
		if err := s.insertNew(ctx, tx, entities, rows, inserts, results); err != nil {
			return err
		}
		var consumed [][]byte
		var children []baton.Token
		for _, i := range order {
			if results[i] != nil {
				continue
			}
			for _, id := range transitions[i].Consumes() {
				consumed = append(consumed, id[:])
			}
			children = append(children, transitions[i].Create...)
		}
		if err := s.deleteLockedTokens(ctx, tx, consumed); err != nil {
			return err
		}
		return s.insertTokens(ctx, tx, children)
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// deleteLockedTokens deletes tokens that tx locked live, in one statement.
func (s *Store) deleteLockedTokens(ctx context.Context, tx *sql.Tx, ids [][]byte) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	res, err := tx.ExecContext(ctx, "DELETE FROM "+table(s.cfg.Prefix, "tokens")+" WHERE id IN "+placeholders(1, len(ids)), args...)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != int64(len(ids)) {
		return fmt.Errorf("mysql: commit transitions: %d of %d locked tokens deleted", n, len(ids))
	}
	return nil
}

// lockTokens locks the tokens the batch consumes in id order and reports which are
// live.
func (s *Store) lockTokens(ctx context.Context, tx *sql.Tx, transitions []store.Transition) (map[baton.TokenID]bool, error) {
	var ids [][]byte
	for _, t := range transitions {
		for _, id := range t.Consumes() {
			ids = append(ids, id[:])
		}
	}
	slices.SortFunc(ids, bytes.Compare)
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	rows, err := tx.QueryContext(ctx, "SELECT id FROM "+table(s.cfg.Prefix, "tokens")+" WHERE id IN ("+
		strings.TrimSuffix(strings.Repeat("?, ", len(args)), ", ")+") ORDER BY id FOR UPDATE", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	live := make(map[baton.TokenID]bool, len(transitions))
	for rows.Next() {
		var id []byte
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		var tid baton.TokenID
		copy(tid[:], id)
		live[tid] = true
	}
	return live, rows.Err()
}
