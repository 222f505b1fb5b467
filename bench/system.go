package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/postgres"
	"github.com/batonhq/baton/transport"
	natstransport "github.com/batonhq/baton/transport/nats"
)

// system is one variant, set up over its own PostgreSQL schema, Redis
// prefix, data directory and embedded NATS server.
type system interface {
	// start consumes both destinations with workers each until ctx ends,
	// calling obs.finish after each acknowledgement; wait returns once
	// the consumers stopped.
	start(ctx context.Context, workers int, obs *observer) (wait func(), err error)
	// begin starts one conversation at the edge.
	begin(ctx context.Context, p payload) error
	// stored is the deduplication data stored now: rows of the processed
	// table, or live tokens.
	stored(ctx context.Context) (int64, error)
	// state returns an entity's state, for the check after the run.
	state(ctx context.Context, key string) ([]byte, error)
	// leftover describes work not finished once every conversation
	// finished (outbox rows, live tokens); empty if none.
	leftover(ctx context.Context) (string, error)
	// serverPIDs are the server processes working for this variant.
	serverPIDs(ctx context.Context) []int
	// counts are the variant's counters of the runs that ended.
	counts() counts
	// idle releases connections between runs.
	idle()
	close() error
}

// counts are what a variant counted while it ran.
type counts struct {
	conflicts int64 // version conflicts retried
	// Baton only: activities applied, how many of them a batch commit
	// committed (engine.Config.Batch), and such commits.
	applied, batched, batches int64
}

// broker is one variant's embedded NATS JetStream server and transport.
// Every variant has its own, over its own data directory, so they pay the
// same broker costs (fsync of every publish, in-process client).
type broker struct {
	srv *natstransport.Embedded
	tr  *natstransport.Transport
}

func startBroker(ctx context.Context, dir string) (*broker, error) {
	srv, err := natstransport.StartEmbedded(natstransport.EmbeddedConfig{DataDir: dir})
	if err != nil {
		return nil, err
	}
	// Every variant pulls batchSize messages ahead, as the batching
	// variants want (natstransport.Config.Prefetch).
	tr, err := srv.NewTransport(ctx, natstransport.Config{Stream: "BENCH", Prefix: "bench", Prefetch: batchSize})
	if err != nil {
		srv.Shutdown()
		return nil, err
	}
	return &broker{srv: srv, tr: tr}, nil
}

func (b *broker) close() {
	b.tr.Close()
	b.srv.Shutdown()
}

// publishRetrying publishes sig, retrying a few times: a publish whose
// outcome is unknown may be repeated (JetStream drops a republish of the
// same message id).
func publishRetrying(ctx context.Context, tr transport.Transport, sig baton.Signal) error {
	var err error
	for attempt := range 5 {
		if attempt > 0 {
			if serr := sleepCtx(ctx, backoff(attempt)); serr != nil {
				return serr
			}
		}
		if err = tr.Publish(ctx, sig); err == nil {
			return nil
		}
	}
	return err
}

// consume runs workers goroutines that take deliveries of destination and
// pass each to handle; a nil error acknowledges it and tells obs, any
// other asks for redelivery.
func consume(ctx context.Context, tr transport.Transport, destination string, workers int, log *slog.Logger,
	handle func(context.Context, baton.Signal) error, obs *observer) (wait func(), err error) {
	sub, err := tr.Subscribe(ctx, destination)
	if err != nil {
		return nil, err
	}
	// Work in progress finishes after ctx ends; the runner drains first.
	work := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			receiveAll(ctx, sub, destination, log, func(d transport.Delivery) {
				settleBench(work, tr, log, destination, []transport.Delivery{d}, []error{handle(work, d.Signal())}, obs)
			})
		})
	}
	return func() {
		wg.Wait()
		sub.Close()
	}, nil
}

// receiveAll passes each delivery of sub to take until ctx ends or sub is
// closed, retrying failures to receive.
func receiveAll(ctx context.Context, sub transport.Subscription, destination string, log *slog.Logger, take func(transport.Delivery)) {
	for {
		d, err := sub.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, transport.ErrClosed) {
				return
			}
			log.Warn("receive failed", "destination", destination, "err", err)
			if sleepCtx(ctx, 50*time.Millisecond) != nil {
				return
			}
			continue
		}
		take(d)
	}
}

// observed wraps the transport an engine receives from, so that the
// benchmark sees each acknowledgement the engine makes.
type observed struct {
	transport.Transport
	obs *observer
}

// The engine acknowledges a batch in one exchange only through a Source
// that is a BatchAcker: a wrapper without it would make baton's variants
// ack one by one while classic-batched does not.
var _ transport.BatchAcker = observed{}

func (o observed) Subscribe(ctx context.Context, destination string) (transport.Subscription, error) {
	sub, err := o.Transport.Subscribe(ctx, destination)
	if err != nil {
		return nil, err
	}
	return observedSubscription{sub, o.obs}, nil
}

// AckBatch acknowledges through the wrapped transport's BatchAcker, as
// the engine does without the observer, and tells obs of each ack.
func (o observed) AckBatch(ctx context.Context, ds []transport.Delivery) []error {
	inner := make([]transport.Delivery, len(ds))
	for i, d := range ds {
		inner[i] = d
		if od, ok := d.(observedDelivery); ok {
			inner[i] = od.Delivery
		}
	}
	errs := transport.AckAll(ctx, o.Transport, inner)
	for i, err := range errs {
		if err == nil {
			o.obs.finish(ds[i].Signal())
		}
	}
	return errs
}

type observedSubscription struct {
	transport.Subscription
	obs *observer
}

func (s observedSubscription) Next(ctx context.Context) (transport.Delivery, error) {
	d, err := s.Subscription.Next(ctx)
	if err != nil {
		return nil, err
	}
	return observedDelivery{d, s.obs}, nil
}

type observedDelivery struct {
	transport.Delivery
	obs *observer
}

func (d observedDelivery) Ack(ctx context.Context) error {
	err := d.Delivery.Ack(ctx)
	if err == nil {
		d.obs.finish(d.Signal())
	}
	return err
}

// backoff is the delay before retry attempt (1, 2, ...) after a version
// conflict: exponential from 5ms with full jitter, capped at 1s. It is the
// engine's default (engine.Config.RetryDelay), so that every variant
// handles contention alike.
func backoff(attempt int) time.Duration {
	limit := 5 * time.Millisecond << min(attempt, 8)
	limit = min(limit, time.Second)
	return time.Duration(rand.Int64N(int64(limit) + 1))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// openPool connects to PostgreSQL with a pool of maxConns connections
// whose backends carry application_name app, so that their CPU can be
// told apart from other clients of a shared server.
func openPool(ctx context.Context, dsn, app string, maxConns int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgconn's parse errors redact the password; do not add the DSN.
		return nil, fmt.Errorf("postgres dsn: %w", err)
	}
	cfg.MaxConns = int32(maxConns)
	cfg.ConnConfig.RuntimeParams["application_name"] = app
	// As postgres.Open sets it, for every variant alike (the classic ones'
	// statements are planned once either way: they take no arrays).
	if _, set := cfg.ConnConfig.RuntimeParams["plan_cache_mode"]; !set {
		cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = postgres.GenericPlans
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("PostgreSQL at %s:%d is unreachable: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}

// backendPIDs returns the PostgreSQL backends serving the named
// applications, as the monitor pool sees them.
func backendPIDs(ctx context.Context, monitor *pgxpool.Pool, apps ...string) []int {
	if monitor == nil || len(apps) == 0 {
		return nil
	}
	rows, err := monitor.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE application_name = ANY($1)", apps)
	if err != nil {
		return nil
	}
	defer rows.Close()
	var pids []int
	for rows.Next() {
		var pid int32
		if rows.Scan(&pid) == nil {
			pids = append(pids, int(pid))
		}
	}
	return pids
}
