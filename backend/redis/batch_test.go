package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/testenv/redisserver"
	"github.com/batonhq/baton/store"
)

// noscriptCounter counts the pipelined commands that the server refused
// with NOSCRIPT.
type noscriptCounter struct{ n *atomic.Int64 }

func (noscriptCounter) DialHook(next goredis.DialHook) goredis.DialHook          { return next }
func (noscriptCounter) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook { return next }
func (h noscriptCounter) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if goredis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
				h.n.Add(1)
			}
		}
		return err
	}
}

// TestBatchAfterScriptFlush: a server that lost its script cache refuses
// the pipelined scripts with NOSCRIPT, which ran nothing; each is run again
// alone, and the batch answers as if nothing had happened.
func TestBatchAfterScriptFlush(t *testing.T) {
	srv := redisserver.Start(t)
	s := openTest(t, srv.URL(), true)
	var noscripts atomic.Int64
	s.client.AddHook(noscriptCounter{&noscripts})
	ctx := t.Context()
	var batch []store.TokenTransition
	var children []baton.Token
	for range 3 {
		root := issued(ctx, t, s, testRoot("orders"))
		child := testChild(root, "billing")
		children = append(children, child)
		batch = append(batch, store.TokenTransition{Consume: root.ID, Create: []baton.Token{child}})
	}
	flush := func() {
		t.Helper()
		if err := s.client.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		noscripts.Store(0)
	}

	flush()
	consumed, errs, err := s.TransitionTokens(ctx, batch)
	if err != nil || errors.Join(errs...) != nil || !consumed[0] || !consumed[1] || !consumed[2] {
		t.Fatalf("TransitionTokens after SCRIPT FLUSH = %v, %v, %v; want all consumed", consumed, errs, err)
	}
	if n := noscripts.Load(); n != 3 {
		t.Errorf("NOSCRIPT answered %d times, want 3 (the test no longer flushes the cache)", n)
	}

	flush()
	ids := []baton.TokenID{children[0].ID, batch[0].Consume, children[2].ID}
	tokens, errs, err := s.GetTokens(ctx, ids)
	if err != nil || errs[0] != nil || !errors.Is(errs[1], store.ErrNotFound) || errs[2] != nil ||
		tokens[0].ID != children[0].ID || tokens[2].ID != children[2].ID {
		t.Fatalf("GetTokens after SCRIPT FLUSH = %v, %v, %v; want two children and a consumed root", tokens, errs, err)
	}
	if n := noscripts.Load(); n != 3 {
		t.Errorf("NOSCRIPT answered %d times, want 3", n)
	}
}

// TestBatchUnreachableServerAppliesNothing: a batch that could not reach
// the server reports every operation as not applied, and no token as
// absent.
func TestBatchUnreachableServerAppliesNothing(t *testing.T) {
	port := redisserver.FreePort(t)
	s := newTokenStore("baton", &goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1, DialerRetries: 1}, newTextLogger(io.Discard))
	t.Cleanup(func() { _ = s.Close() })
	root := testRoot("orders")
	consumed, errs, err := s.TransitionTokens(t.Context(), []store.TokenTransition{{Consume: root.ID}, {Consume: testRoot("orders").ID}})
	if err != nil || !store.NotApplied(errs[0]) || !store.NotApplied(errs[1]) || consumed[0] || consumed[1] {
		t.Errorf("TransitionTokens without a server = %v, %v, %v; want each not applied", consumed, errs, err)
	}
	_, errs, err = s.GetTokens(t.Context(), []baton.TokenID{root.ID})
	if err != nil || !store.NotApplied(errs[0]) || errors.Is(errs[0], store.ErrNotFound) {
		t.Errorf("GetTokens without a server = %v, %v; want not applied, not ErrNotFound", errs, err)
	}
}
