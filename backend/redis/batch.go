package redis

import (
	"context"

	goredis "github.com/redis/go-redis/v9"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

var _ store.TokenBatcher = (*TokenStore)(nil)

// GetTokens implements store.TokenBatcher: on a standalone server one
// pipeline of get scripts, one round trip; on a cluster one Get after
// another.
func (s *TokenStore) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	if err := s.usable(ctx, "get tokens"); err != nil {
		return nil, nil, err
	}
	tokens, errs := make([]baton.Token, len(ids)), make([]error, len(ids))
	s.runEach(ctx, getScript, len(ids),
		func(i int) []any { return s.getArgs(ids[i]) },
		func(i int, cmd *goredis.Cmd) {
			reply, err := cmd.Result()
			tokens[i], errs[i] = gotToken(ids[i], reply, err)
		},
		func(i int) { tokens[i], errs[i] = s.Get(ctx, ids[i]) })
	return tokens, errs, nil
}

// TransitionTokens implements store.TokenBatcher: on a standalone server
// one pipeline of transition scripts, one round trip, and with
// appendfsync always one fsync for all the scripts the server reads at a
// time rather than one per transition; on a cluster one Transition after
// another. Each transition is its own script, atomic alone. A connection
// lost half way leaves every transition of the pipeline outcome unknown:
// go-redis then reports its error for every command, answered or not.
func (s *TokenStore) TransitionTokens(ctx context.Context, transitions []store.TokenTransition) ([]bool, []error, error) {
	if err := s.validateTransitions(transitions); err != nil {
		return nil, nil, err
	}
	if err := s.usable(ctx, "transition tokens"); err != nil {
		return nil, nil, err
	}
	consumed, errs := make([]bool, len(transitions)), make([]error, len(transitions))
	s.runEach(ctx, transitionScript, len(transitions),
		func(i int) []any { return s.transitionArgs(transitions[i].Consume, transitions[i].Create) },
		func(i int, cmd *goredis.Cmd) {
			n, err := cmd.Int()
			consumed[i], errs[i] = transitioned(transitions[i].Consume, n, err)
		},
		func(i int) { consumed[i], errs[i] = s.Transition(ctx, transitions[i].Consume, transitions[i].Create) })
	return consumed, errs, nil
}

// validateTransitions refuses, before any is applied, a batch that
// Transition would refuse in part as invalid without reading the store.
func (s *TokenStore) validateTransitions(transitions []store.TokenTransition) error {
	if err := store.ValidateTokenTransitions(transitions); err != nil {
		return err
	}
	if s.cluster {
		for _, t := range transitions {
			if _, err := sameConversation("transition tokens", t.Create); err != nil {
				return err
			}
		}
	}
	return nil
}

// runEach runs n operations. On a standalone server it sends script once
// for each, with ARGV args(i), in one pipeline and hands each command to
// read. EVALSHA cannot fall back to EVAL inside a pipeline, so an
// operation refused with NOSCRIPT (the server lost its script cache, as
// in a restart) did not run: alone, which loads the script, runs it
// again. On a cluster, where the operations' keys live in different
// slots, alone runs every operation, one after another.
func (s *TokenStore) runEach(ctx context.Context, script *goredis.Script, n int, args func(i int) []any, read func(i int, cmd *goredis.Cmd), alone func(i int)) {
	if s.cluster {
		for i := range n {
			alone(i)
		}
		return
	}
	if n == 0 {
		return
	}
	pipe := s.client.Pipeline()
	cmds := make([]*goredis.Cmd, n)
	for i := range cmds {
		cmds[i] = script.EvalSha(ctx, pipe, nil, args(i)...)
	}
	_, _ = pipe.Exec(ctx) // every command keeps its own error
	for i, cmd := range cmds {
		if goredis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			alone(i)
		} else {
			read(i, cmd)
		}
	}
}
