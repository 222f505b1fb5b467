package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/embedded"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/backend/postgres"
	batonredis "github.com/batonhq/baton/backend/redis"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/store"
)

// batchSize is engine.Config.Batch of the variants that batch: the most
// deliveries a worker takes together.
const batchSize = 16

// batonOptions are the engine settings that tell baton variants apart.
type batonOptions struct {
	noFastPath bool
	// inlineRemovals turns off engine.Config.DeferRemovals.
	inlineRemovals bool
	batch          int // engine.Config.Batch
	// tx registers the activities as transactional ones (engine.TxActivity
	// over pgx.Tx): each step commits in a transaction the handler could
	// write to, one signal at a time.
	tx bool
}

// batonSystem runs the process on two engines (orders and billing) over
// a token store and an entity store.
type batonSystem struct {
	w        workload
	tokens   store.TokenStore
	entities store.EntityStore
	opts     batonOptions
	b        *broker
	log      *slog.Logger

	// countTokens counts live tokens; nil counts them through the token
	// store's listings.
	countTokens func(ctx context.Context) (int64, error)
	pids        func(ctx context.Context) []int
	closers     []func() error
	pools       []*pgxpool.Pool

	mu     sync.Mutex
	edge   *engine.Engine // issues root tokens
	totals engine.Stats   // of the engines of past runs
}

func (s *batonSystem) newEngine(destination string, workers int, obs *observer) (*engine.Engine, error) {
	e, err := engine.New(engine.Config{
		Destination: destination,
		Tokens:      s.tokens,
		Entities:    s.entities,
		Dispatch:    s.b.tr,
		Source:      observed{s.b.tr, obs},
		Workers:     workers,
		NoFastPath:  s.opts.noFastPath,
		Batch:       s.opts.batch,
		// Run removes finished outbox entries in batches, off the path
		// of each signal (docs/protocol.md 3.2, step 7 and the fast path).
		DeferRemovals: !s.opts.inlineRemovals,
		Logger:        s.log,
	})
	if err != nil {
		return nil, err
	}
	switch {
	case destination == destOrders && s.opts.tx:
		err = engine.RegisterTx(e, engine.TxActivity[orderState, pgx.Tx]{Type: typePlace, Entity: s.route,
			Handle: func(ctx context.Context, _ pgx.Tx, sig baton.Signal, st *orderState) (engine.Effects, error) {
				return handlePlace(ctx, sig, st)
			}})
	case destination == destOrders:
		err = engine.Register(e, engine.Activity[orderState]{Type: typePlace, Entity: s.route, Handle: handlePlace})
	case destination == destBilling && s.opts.tx:
		err = engine.RegisterTx(e, engine.TxActivity[accountState, pgx.Tx]{Type: typeCharge, Entity: s.route,
			Handle: func(ctx context.Context, _ pgx.Tx, sig baton.Signal, st *accountState) (engine.Effects, error) {
				return handleCharge(ctx, sig, st)
			}})
	case destination == destBilling:
		err = engine.Register(e, engine.Activity[accountState]{Type: typeCharge, Entity: s.route, Handle: handleCharge})
	}
	return e, err
}

// handlePlace is the orders activity: place the order, emit its charge.
func handlePlace(_ context.Context, sig baton.Signal, st *orderState) (engine.Effects, error) {
	var p payload
	if err := json.Unmarshal(sig.Payload, &p); err != nil {
		return engine.Effects{}, engine.Permanent(err)
	}
	body, err := jsonBody(placeOrder(st, p, time.Now()))
	if err != nil {
		return engine.Effects{}, err
	}
	return engine.Effects{Emit: []baton.Emit{{Destination: destBilling, Type: typeCharge, Payload: body}}}, nil
}

// handleCharge is the billing activity: charge the account.
func handleCharge(_ context.Context, sig baton.Signal, st *accountState) (engine.Effects, error) {
	var p payload
	if err := json.Unmarshal(sig.Payload, &p); err != nil {
		return engine.Effects{}, engine.Permanent(err)
	}
	charge(st, p)
	return engine.Effects{}, nil
}

func (s *batonSystem) route(sig baton.Signal) (string, error) {
	var p payload
	if err := json.Unmarshal(sig.Payload, &p); err != nil {
		return "", err
	}
	return s.w.entityKey(sig.Type, p)
}

func (s *batonSystem) start(ctx context.Context, workers int, obs *observer) (func(), error) {
	var engines []*engine.Engine
	for _, d := range destinations {
		e, err := s.newEngine(d, workers, obs)
		if err != nil {
			return nil, err
		}
		engines = append(engines, e)
	}
	s.mu.Lock()
	s.edge = engines[0]
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, e := range engines {
		wg.Go(func() {
			if err := e.Run(ctx); err != nil {
				s.log.Error("engine stopped", "destination", e.Destination(), "err", err)
			}
		})
	}
	return func() {
		wg.Wait()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, e := range engines {
			s.totals = s.totals.Plus(e.Stats())
		}
	}, nil
}

// begin issues the conversation's root token at the edge, then publishes
// the root signal.
func (s *batonSystem) begin(ctx context.Context, p payload) error {
	body, err := jsonBody(p)
	if err != nil {
		return err
	}
	s.mu.Lock()
	edge := s.edge
	s.mu.Unlock()
	sig, err := edge.IssueRoot(ctx, baton.Emit{Destination: destOrders, Type: typePlace, Payload: body}, 0)
	if err != nil {
		return err
	}
	return publishRetrying(ctx, s.b.tr, sig)
}

func (s *batonSystem) stored(ctx context.Context) (int64, error) {
	if s.countTokens != nil {
		return s.countTokens(ctx)
	}
	return countByListing(ctx, s.tokens)
}

// countByListing counts live tokens through the TokenStore interface.
func countByListing(ctx context.Context, tokens store.TokenStore) (int64, error) {
	var n int64
	for _, d := range destinations {
		page := store.Page{Limit: store.MaxPageLimit}
		for {
			toks, err := tokens.ListByDestination(ctx, d, page)
			if err != nil {
				return 0, err
			}
			n += int64(len(toks))
			if len(toks) < page.Size() {
				break
			}
			page.After = toks[len(toks)-1].ID
		}
	}
	return n, nil
}

func (s *batonSystem) state(ctx context.Context, key string) ([]byte, error) {
	e, err := s.entities.Load(ctx, key)
	return e.State, err
}

func (s *batonSystem) leftover(ctx context.Context) (string, error) {
	n, err := s.stored(ctx)
	if err != nil || n == 0 {
		return "", err
	}
	return fmt.Sprintf("%d live tokens left", n), nil
}

func (s *batonSystem) serverPIDs(ctx context.Context) []int {
	if s.pids == nil {
		return nil
	}
	return s.pids(ctx)
}

func (s *batonSystem) counts() counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return counts{conflicts: s.totals.Conflicts, applied: s.totals.Applied, batched: s.totals.Batched, batches: s.totals.Batches}
}

func (s *batonSystem) idle() {
	for _, p := range s.pools {
		p.Reset()
	}
}

func (s *batonSystem) close() error {
	if s.b != nil {
		s.b.close()
	}
	var first error
	for i := len(s.closers) - 1; i >= 0; i-- {
		if err := s.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// openPostgresStore opens a baton PostgreSQL store in a fresh schema over
// a pool of its own; closing drops the schema.
func openPostgresStore(ctx context.Context, env *env, s *batonSystem, name string) (*postgres.Store, string, error) {
	schema := env.uniqueName(name)
	app := "baton-bench-" + schema
	pool, err := openPool(ctx, env.cfg.PostgresDSN, app, env.poolSize())
	if err != nil {
		return nil, "", err
	}
	st, err := postgres.New(ctx, pool, postgres.Config{Schema: schema, Logger: env.log})
	if err != nil {
		pool.Close()
		return nil, "", err
	}
	s.pools = append(s.pools, pool)
	s.closers = append(s.closers, func() error {
		st.Close()
		_, err := pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		pool.Close()
		return err
	})
	return st, app, nil
}

// countPostgresTokens counts the rows of a baton PostgreSQL store's
// tokens table (see backend/postgres: Config.Schema holds "tokens") on
// the monitor pool, so that the count's CPU is not billed to the variant.
func countPostgresTokens(monitor *pgxpool.Pool, schema string) func(ctx context.Context) (int64, error) {
	query := "SELECT count(*) FROM " + pgx.Identifier{schema, "tokens"}.Sanitize()
	return func(ctx context.Context) (int64, error) {
		var n int64
		err := monitor.QueryRow(ctx, query).Scan(&n)
		return n, err
	}
}

func openBatonPostgres(ctx context.Context, env *env, name string, opts batonOptions) (system, error) {
	s := &batonSystem{w: env.workload, log: env.log, opts: opts}
	st, app, err := openPostgresStore(ctx, env, s, name)
	if err != nil {
		return nil, err
	}
	s.tokens, s.entities = st, st // one value: the engine takes the fast path
	s.countTokens = countPostgresTokens(env.monitor, st.Schema())
	s.pids = func(ctx context.Context) []int { return backendPIDs(ctx, env.monitor, app) }
	if s.b, err = startBroker(ctx, env.dir(name)); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func openBatonEmbedded(ctx context.Context, env *env, name string) (system, error) {
	s := &batonSystem{w: env.workload, log: env.log, opts: batonOptions{batch: batchSize}}
	st, err := embedded.Open(filepath.Join(env.dir(name), "baton.db"), embedded.Config{Logger: env.log})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, st.Close)
	s.tokens, s.entities = st, st
	if s.b, err = startBroker(ctx, env.dir(name+"-nats")); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// openBatonMemory runs the engine over the in-memory stores (no fast
// path, nothing durable): for tests of the benchmark itself.
func openBatonMemory(ctx context.Context, env *env, name string) (system, error) {
	s := &batonSystem{w: env.workload, log: env.log, tokens: memory.NewTokenStore(), entities: memory.NewEntityStore()}
	var err error
	if s.b, err = startBroker(ctx, env.dir(name)); err != nil {
		return nil, err
	}
	return s, nil
}

// openBatonRedis keeps tokens in Redis at url and entities in PostgreSQL
// (the engine's plain path: commit and transition are two calls). unsafe
// allows a server that does not fsync every write.
func openBatonRedis(ctx context.Context, env *env, name, url string, unsafe bool, redisPIDs func() []int, opts batonOptions) (system, error) {
	s := &batonSystem{w: env.workload, log: env.log, opts: opts}
	st, app, err := openPostgresStore(ctx, env, s, name)
	if err != nil {
		return nil, err
	}
	s.entities = st
	prefix := env.uniqueName(name)
	tokens, err := batonredis.Open(ctx, batonredis.Config{URL: url, Prefix: prefix, AllowUnsafeDurability: unsafe, Logger: env.log})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	s.closers = append(s.closers, tokens.Close)
	s.tokens = tokens
	s.pids = func(ctx context.Context) []int { return append(backendPIDs(ctx, env.monitor, app), redisPIDs()...) }
	if s.b, err = startBroker(ctx, env.dir(name)); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func jsonBody(p payload) ([]byte, error) { return json.Marshal(p) }
