package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

var _ store.TransitionBatcher = (*Store)(nil)

// LoadWithTokens implements store.TransitionBatcher in one statement, so
// every read sees one snapshot.
func (s *Store) LoadWithTokens(ctx context.Context, reads []store.TokenRead) ([]store.Loaded, error) {
	n := len(reads)
	out := make([]store.Loaded, n)
	if n == 0 {
		return out, nil
	}
	keys, tokens, items := make([]string, n), make([][]byte, n), make([]int32, n)
	for i, r := range reads {
		items[i] = int32(i + 1)
		out[i].Entity.Key = r.Key
		if storableText(r.Key) {
			keys[i] = r.Key
		} // else "": no stored entity has that key either
		tokens[i] = r.Token[:]
	}
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, s.sql.loadWithTokens, keys, tokens, items)
		if err != nil {
			return err
		}
		defer rows.Close()
		seen := 0
		for rows.Next() {
			seen++
			var item int64
			var version *int64
			var state, outbox []byte
			var tr tokenRow
			if err := rows.Scan(append([]any{&item, &version, &state, &outbox}, tr.fields()...)...); err != nil {
				return err
			}
			if item < 1 || item > int64(n) {
				return fmt.Errorf("postgres: load batch returned read %d of %d", item, n)
			}
			l := &out[item-1]
			if version != nil {
				if l.Entity, err = (storedEntity{*version, state, outbox}).entity(l.Entity.Key); err != nil {
					return err
				}
			}
			if tr.id != nil {
				if l.Token, err = tr.token(); err != nil {
					return err
				}
				l.Live = true
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if seen != n {
			// A missing answer must not pass for a token that is not live.
			return fmt.Errorf("postgres: load batch answered %d of %d reads", seen, n)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: load batch of %d: %w", n, err)
	}
	return out, nil
}

// CommitTransitions implements store.TransitionBatcher in one SQL
// statement (one round trip, one commit).
func (s *Store) CommitTransitions(ctx context.Context, transitions []store.Transition) ([]error, error) {
	if err := store.ValidateTransitions(transitions); err != nil {
		return nil, err
	}
	n := len(transitions)
	if n == 0 {
		return nil, nil
	}
	var (
		items                    = make([]int32, n)
		tokens, states, outboxes = make([][]byte, n), make([][]byte, n), make([][]byte, n)
		keys                     = make([]string, n)
		versions                 = make([]int64, n)
		oldestAt                 = make([]*time.Time, n)
		oldestNs                 = make([]*int16, n)
		thenItems, childItems    []int32
		then                     [][]byte
		children                 []baton.Token
	)
	for i, t := range transitions {
		row, err := newEntityRow(t.Entity)
		if err != nil {
			return nil, err
		}
		if err := checkTokenText(t.Create...); err != nil {
			return nil, err
		}
		items[i], tokens[i], keys[i], versions[i] = int32(i+1), t.Token[:], t.Entity.Key, int64(t.Entity.Version)
		states[i], outboxes[i], oldestAt[i], oldestNs[i] = t.Entity.State, row.outbox, row.oldestAt, row.oldestNs
		for _, id := range t.Then {
			thenItems, then = append(thenItems, int32(i+1)), append(then, id[:])
		}
		for range t.Create {
			childItems = append(childItems, int32(i+1))
		}
		children = append(children, t.Create...)
	}
	args := append([]any{items, tokens, keys, versions, states, outboxes, oldestAt, oldestNs, thenItems, then, childItems}, tokenArrays(children)...)
	results := make([]error, n)
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, s.sql.commitTransitions, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		seen := 0
		for rows.Next() {
			var item int32
			var live, committed bool
			if err := rows.Scan(&item, &live, &committed); err != nil {
				return err
			}
			if item < 1 || int(item) > n {
				return fmt.Errorf("postgres: commit batch returned transition %d of %d", item, n)
			}
			t := transitions[item-1]
			switch {
			case committed:
				results[item-1] = nil
			case !live:
				results[item-1] = fmt.Errorf("%w: a token of %v", store.ErrNotFound, t.Consumes())
			default:
				results[item-1] = fmt.Errorf("%w: entity %q is not at version %d", store.ErrConflict, t.Entity.Key, t.Entity.Version)
			}
			seen++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if seen != n {
			return fmt.Errorf("postgres: commit batch reported %d of %d transitions", seen, n)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: commit and transition batch of %d: %w", n, err)
	}
	return results, nil
}
