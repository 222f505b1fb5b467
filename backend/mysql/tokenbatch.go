package mysql

import (
	"context"
	"fmt"
	"slices"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

var _ store.TokenBatcher = (*Store)(nil)

// readsPerStatement bounds the ids of one statement of GetTokens.
const readsPerStatement = 500

// GetTokens implements store.TokenBatcher: the tokens in one SELECT per
// readsPerStatement ids, each answered as Get answers it.
func (s *Store) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	if err := s.usable(ctx, "get tokens"); err != nil {
		return nil, nil, err
	}
	found := make(map[baton.TokenID]baton.Token, len(ids))
	for part := range slices.Chunk(ids, readsPerStatement) {
		args := make([]any, len(part))
		for i, id := range part {
			args[i] = id[:]
		}
		rows, err := s.db.QueryContext(ctx, "SELECT "+tokenColumns+" FROM "+table(s.cfg.Prefix, "tokens")+" WHERE id IN "+placeholders(1, len(part)), args...)
		if err != nil {
			return nil, nil, fmt.Errorf("mysql: get tokens: %w", err)
		}
		err = func() error {
			defer rows.Close()
			for rows.Next() {
				var r tokenRow
				if err := rows.Scan(r.fields()...); err != nil {
					return err
				}
				tok, err := r.token()
				if err != nil {
					return err
				}
				found[tok.ID] = tok
			}
			return rows.Err()
		}()
		if err != nil {
			return nil, nil, fmt.Errorf("mysql: get tokens: %w", err)
		}
	}
	tokens, errs := make([]baton.Token, len(ids)), make([]error, len(ids))
	for i, id := range ids {
		tok, ok := found[id]
		if !ok {
			errs[i] = fmt.Errorf("%w: token %s", store.ErrNotFound, id)
			continue
		}
		tokens[i] = tok
	}
	return tokens, errs, nil
}

// TransitionTokens implements store.TokenBatcher: each transition is its
// own transaction, as Transition runs it, and up to half the pool's
// connections run them together, so that the server flushes their commits
// in shared groups (InnoDB's group commit) instead of one after another.
func (s *Store) TransitionTokens(ctx context.Context, transitions []store.TokenTransition) ([]bool, []error, error) {
	if err := store.ValidateTokenTransitions(transitions); err != nil {
		return nil, nil, err
	}
	if err := s.usable(ctx, "transition tokens"); err != nil {
		return nil, nil, err
	}
	consumed, errs := store.TransitionTogether(ctx, s, transitions, s.cfg.MaxConns/2)
	return consumed, errs, nil
}
