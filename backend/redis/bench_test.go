package redis

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/testenv/redisserver"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// BenchmarkTransition compares, in one run, the protocol's transition (one
// script: check, consume the parent, create the child with its index
// entries) with the raw writes a system without the protocol would do (a
// plain pipeline: HSET the child, DEL the parent; no check, no atomicity,
// no indexes). Each worker walks its own chain parent -> child -> ...
//
// Reported: script-ops/s, raw-ops/s and script/raw (throughput ratio).
// "shared" is the machine's Redis (no fsync); "durable" is a redis-server
// with appendfsync always started by the benchmark.
func BenchmarkTransition(b *testing.B) {
	targets := []struct {
		name string
		open func(b *testing.B) *TokenStore
	}{
		{"shared", func(b *testing.B) *TokenStore { return sharedStore(b) }},
		{"durable", func(b *testing.B) *TokenStore {
			return openTest(b, redisserver.Start(b, redisserver.DurableArgs...).URL(), false)
		}},
	}
	for _, target := range targets {
		b.Run(target.name, func(b *testing.B) {
			s := target.open(b)
			for _, workers := range []int{1, 8} {
				b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
					script := newChains(b, workers, func(ctx context.Context, root baton.Token) (baton.Token, error) {
						return s.Issue(ctx, rootTemplate(root))
					},
						func(ctx context.Context, parent, child baton.Token) error {
							consumed, err := s.Transition(ctx, parent.ID, []baton.Token{child})
							if err == nil && !consumed {
								err = fmt.Errorf("token %s was not live", parent.ID)
							}
							return err
						})
					raw := newChains(b, workers, func(ctx context.Context, root baton.Token) (baton.Token, error) {
						return root, s.client.HSet(ctx, s.keys.token(root.Conversation, root.ID), rawFields(root)...).Err()
					}, func(ctx context.Context, parent, child baton.Token) error {
						_, err := s.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
							p.HSet(ctx, s.keys.token(child.Conversation, child.ID), rawFields(child)...)
							p.Del(ctx, s.keys.token(parent.Conversation, parent.ID))
							return nil
						})
						return err
					})
					// Alternate in rounds so that load from elsewhere on
					// the machine hits both sides alike.
					const rounds = 10
					for r := range rounds {
						n := b.N/rounds + boolInt(r < b.N%rounds)
						script.run(b, n)
						raw.run(b, n)
					}
					b.ReportMetric(script.rate(), "script-ops/s")
					b.ReportMetric(raw.rate(), "raw-ops/s")
					b.ReportMetric(script.rate()/raw.rate(), "script/raw")
				})
			}
		})
	}
}

// BenchmarkTransitionTokens compares n transitions run one after another
// (Transition: n round trips, n fsyncs) with the same n in one pipeline
// (TransitionTokens), on a redis-server with appendfsync always that the
// benchmark starts. Each of n chains parent -> child -> ... advances one
// step per batch.
func BenchmarkTransitionTokens(b *testing.B) {
	ctx := b.Context()
	s := openTest(b, redisserver.Start(b, redisserver.DurableArgs...).URL(), false)
	oneByOne := func(transitions []store.TokenTransition) error {
		for _, t := range transitions {
			if consumed, err := s.Transition(ctx, t.Consume, t.Create); err != nil || !consumed {
				return fmt.Errorf("Transition(%s) = %v, %v", t.Consume, consumed, err)
			}
		}
		return nil
	}
	pipelined := func(transitions []store.TokenTransition) error {
		consumed, errs, err := s.TransitionTokens(ctx, transitions)
		if err != nil {
			return err
		}
		for i, t := range transitions {
			if errs[i] != nil || !consumed[i] {
				return fmt.Errorf("TransitionTokens: %s: %v, %v", t.Consume, consumed[i], errs[i])
			}
		}
		return nil
	}
	for _, n := range []int{16, 128} {
		for _, mode := range []struct {
			name  string
			apply func([]store.TokenTransition) error
		}{{"Transition", oneByOne}, {"TransitionTokens", pipelined}} {
			b.Run(fmt.Sprintf("n=%d/%s", n, mode.name), func(b *testing.B) {
				heads := make([]baton.Token, n)
				for i := range heads {
					heads[i] = issued(ctx, b, s, testRoot("bench"))
				}
				batch := make([]store.TokenTransition, n)
				for b.Loop() {
					for i, parent := range heads {
						child := testChild(parent, "bench")
						batch[i] = store.TokenTransition{Consume: parent.ID, Create: []baton.Token{child}}
						heads[i] = child
					}
					if err := mode.apply(batch); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "transitions/s")
			})
		}
	}
}

// chains are one chain parent -> child -> ... per worker, advanced by step.
type chains struct {
	step    func(ctx context.Context, parent, child baton.Token) error
	heads   []baton.Token
	steps   int
	elapsed time.Duration
}

func newChains(b *testing.B, workers int, start func(ctx context.Context, root baton.Token) (baton.Token, error), step func(ctx context.Context, parent, child baton.Token) error) *chains {
	c := &chains{step: step, heads: make([]baton.Token, workers)}
	for w := range c.heads {
		var err error
		if c.heads[w], err = start(b.Context(), testRoot("bench")); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

// run advances the chains by n steps in all, split over the workers.
func (c *chains) run(b *testing.B, n int) {
	ctx := b.Context()
	workers := len(c.heads)
	var wg sync.WaitGroup
	began := time.Now()
	for w := range workers {
		share := n/workers + boolInt(w < n%workers)
		wg.Go(func() {
			for range share {
				child := testChild(c.heads[w], "bench")
				if err := c.step(ctx, c.heads[w], child); err != nil {
					b.Error(err)
					return
				}
				c.heads[w] = child
			}
		})
	}
	wg.Wait()
	c.elapsed += time.Since(began)
	c.steps += n
}

// rate returns steps per second.
func (c *chains) rate() float64 { return float64(c.steps) / c.elapsed.Seconds() }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func rawFields(t baton.Token) []any {
	f := appendTokenFields(nil, t)
	return []any{"cause", f[2], "dest", f[3], "type", f[4], "digest", f[5], "created", f[6], "expires", f[7]}
}

// BenchmarkConversations measures the store under the protocol's load
// (storetest.BenchmarkConversations) on a redis-server with appendfsync
// always that the benchmark starts:
//
//	go test -run XXX -bench Conversations -benchtime 10s ./backend/redis
func BenchmarkConversations(b *testing.B) {
	srv := redisserver.Start(b, redisserver.DurableArgs...)
	storetest.BenchmarkConversations(b, openTest(b, srv.URL(), false), []int{srv.PID()})
}
