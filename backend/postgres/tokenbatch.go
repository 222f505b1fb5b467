package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

var _ store.TokenBatcher = (*Store)(nil)

// GetTokens implements store.TokenBatcher in one statement.
func (s *Store) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	raw := make([][]byte, len(ids))
	for i := range ids {
		raw[i] = ids[i][:]
	}
	live := make(map[baton.TokenID]baton.Token, len(ids))
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, s.sql.getMany, raw)
		if err != nil {
			return err
		}
		var r tokenRow
		_, err = pgx.ForEachRow(rows, r.fields(), func() error {
			t, err := r.token()
			live[t.ID] = t
			return err
		})
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: get %d tokens: %w", len(ids), err)
	}
	tokens, errs := make([]baton.Token, len(ids)), make([]error, len(ids))
	for i, id := range ids {
		var ok bool
		if tokens[i], ok = live[id]; !ok {
			errs[i] = fmt.Errorf("%w: token %s", store.ErrNotFound, id)
		}
	}
	return tokens, errs, nil
}

// TransitionTokens implements store.TokenBatcher: the transitions' statements
// in one round trip and one transaction (one commit), in the order of the
// tokens they consume, so that two batches never wait for each other in a
// cycle. One statement that fails (a child that exists) rolls the whole
// transaction back; then each transition runs alone, which sorts the
// applied from the refused.
func (s *Store) TransitionTokens(ctx context.Context, transitions []store.TokenTransition) ([]bool, []error, error) {
	if err := store.ValidateTokenTransitions(transitions); err != nil {
		return nil, nil, err
	}
	for _, t := range transitions {
		if err := checkTokenText(t.Create...); err != nil {
			return nil, nil, err
		}
	}
	order := make([]int, len(transitions))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return bytes.Compare(transitions[a].Consume[:], transitions[b].Consume[:]) })
	consumed, errs := make([]bool, len(transitions)), make([]error, len(transitions))
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		var batch pgx.Batch
		for _, i := range order {
			t := transitions[i]
			batch.Queue(s.sql.transition, append([]any{t.Consume[:]}, tokenArrays(t.Create)...)...)
		}
		results := conn.SendBatch(ctx, &batch)
		for _, i := range order {
			var n int
			if err := results.QueryRow().Scan(&n); err != nil {
				results.Close()
				return err
			}
			consumed[i] = n == 1
		}
		return results.Close()
	})
	switch {
	case err == nil:
	case errors.Is(err, store.ErrExists):
		// Rolled back whole: each alone says which child exists.
		for i, t := range transitions {
			consumed[i], errs[i] = s.Transition(ctx, t.Consume, t.Create)
		}
	case store.NotApplied(err):
		return nil, nil, fmt.Errorf("postgres: transition %d tokens: %w", len(transitions), err)
	default:
		for i := range errs {
			consumed[i], errs[i] = false, fmt.Errorf("postgres: transition %s: %w", transitions[i].Consume, err)
		}
	}
	return consumed, errs, nil
}
