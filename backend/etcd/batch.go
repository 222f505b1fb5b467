package etcd

import (
	"context"
	"fmt"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

var _ store.TokenBatcher = (*Store)(nil)

const (
	// readsPerTxn bounds the gets of one read transaction, well under the
	// cluster's --max-txn-ops (128 by default).
	readsPerTxn = 64
	// transitionsAtOnce bounds the transitions of one TransitionTokens in
	// flight together.
	transitionsAtOnce = 32
)

// GetTokens implements store.TokenBatcher: the tokens in one linearizable
// read-only transaction per readsPerTxn ids (one round trip each), each
// answered as Get answers it.
func (s *Store) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	if err := s.usable(ctx); err != nil {
		return nil, nil, err
	}
	tokens, errs := make([]baton.Token, len(ids)), make([]error, len(ids))
	start := 0
	for part := range slices.Chunk(ids, readsPerTxn) {
		ops := make([]clientv3.Op, len(part))
		for i, id := range part {
			ops[i] = clientv3.OpGet(s.keys.token(id))
		}
		resp, err := s.client.Txn(ctx).Then(ops...).Commit()
		if err == nil && len(resp.Responses) != len(part) {
			err = fmt.Errorf("%d answers for %d reads", len(resp.Responses), len(part))
		}
		if err != nil {
			// A read applies nothing.
			return nil, nil, fmt.Errorf("%w: etcd: read tokens: %w", store.ErrNotApplied, err)
		}
		for i, r := range resp.Responses {
			kvs := r.GetResponseRange().GetKvs()
			if len(kvs) == 0 {
				errs[start+i] = fmt.Errorf("%w: token %s", store.ErrNotFound, part[i])
				continue
			}
			tokens[start+i], errs[start+i] = decode(kvs[0].Value)
		}
		start += len(part)
	}
	return tokens, errs, nil
}

// TransitionTokens implements store.TokenBatcher: each transition is its
// own transaction, as Transition runs it, and up to transitionsAtOnce of
// them are in flight together, so that the cluster commits them in shared
// raft rounds (one fsync for many) instead of one after another.
func (s *Store) TransitionTokens(ctx context.Context, transitions []store.TokenTransition) ([]bool, []error, error) {
	if err := store.ValidateTokenTransitions(transitions); err != nil {
		return nil, nil, err
	}
	if err := s.usable(ctx); err != nil {
		return nil, nil, err
	}
	consumed, errs := store.TransitionTogether(ctx, s, transitions, transitionsAtOnce)
	return consumed, errs, nil
}
