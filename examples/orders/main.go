// Command orders is an example service that adopts baton with tables of its
// own: orders, customer accounts with a ledger, stock with reservations,
// and shipments, in PostgreSQL. Its HTTP edge places an order and starts
// the order's process in one transaction; billing, stock and shipping are
// transactional activities that write those tables in the transaction that
// commits their step. Tokens and baton's entities live in the same
// database (schema "baton" by default), so every step is one transaction.
//
//	go run ./examples/orders --postgres postgres://postgres@127.0.0.1:5432/test?sslmode=disable
//	curl -X POST localhost:7460/orders -d '{"id":"o-1","customer":"ada","sku":"mug","qty":1,"amount_cents":1200}'
//	curl localhost:7460/orders/o-1
//
// Without --nats it runs its own NATS JetStream server in --data. Run
// several copies against one database and one NATS: they share the work.
// It prints "READY http=<addr>" once it serves; SIGINT or SIGTERM stop it
// after the work in progress, which --shutdown-timeout bounds (what is cut
// off is redelivered to another copy).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton/backend/postgres"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/transport/nats"
)

type options struct {
	postgres, schema, batonSchema      string
	nats, natsMonitor, natsPrefix      string
	natsStream, dataDir                string
	natsAllowUnsafe                    bool
	addr, serve                        string
	customers, skus                    string
	balance                            int64
	available                          int
	sweepAfter, sweepInterval, ackWait time.Duration
	shutdownTimeout                    time.Duration
	logLevel                           string
}

func main() {
	var o options
	flag.StringVar(&o.postgres, "postgres", os.Getenv("ORDERS_POSTGRES"), "PostgreSQL URL [ORDERS_POSTGRES]")
	flag.StringVar(&o.schema, "schema", "orders", "schema of the service's own tables")
	flag.StringVar(&o.batonSchema, "baton-schema", postgres.DefaultSchema, "schema of baton's tokens and entities")
	flag.StringVar(&o.nats, "nats", "", "NATS URL; empty: run an embedded NATS JetStream server in --data")
	flag.StringVar(&o.natsMonitor, "nats-monitor", "", "NATS monitoring URL, to check that the server syncs every write")
	flag.BoolVar(&o.natsAllowUnsafe, "nats-allow-unsafe-durability", false, "accept a NATS server that does not show it syncs every write (tests only)")
	flag.StringVar(&o.natsStream, "nats-stream", "ORDERS", "JetStream stream")
	flag.StringVar(&o.natsPrefix, "nats-prefix", "orders", "NATS subject prefix")
	flag.StringVar(&o.dataDir, "data", "orders-data", "directory of the embedded NATS server")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:7460", "HTTP address; port 0 picks a free one")
	flag.StringVar(&o.serve, "serve", "billing,stock,shipping", "destinations this process serves")
	flag.StringVar(&o.customers, "seed-customers", "ada,grace,edsger", "customers given an account at start, if missing")
	flag.StringVar(&o.skus, "seed-skus", "mug,book", "SKUs given stock at start, if missing")
	flag.Int64Var(&o.balance, "seed-balance", 1_000_000_00, "starting balance of each seeded account, in cents")
	flag.IntVar(&o.available, "seed-stock", 1_000_000, "starting stock of each seeded SKU")
	flag.DurationVar(&o.sweepAfter, "sweep-after", 5*time.Second, "age of an unfinished step or start that the sweeper finishes")
	flag.DurationVar(&o.sweepInterval, "sweep-interval", 2*time.Second, "how often to sweep")
	flag.DurationVar(&o.ackWait, "ack-wait", 5*time.Second, "how long a delivery may stay unacknowledged before it is redelivered")
	flag.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "after SIGTERM, how long to wait for requests and signals in progress")
	flag.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("orders stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	if o.postgres == "" {
		return errors.New("--postgres is required")
	}
	poolCfg, err := pgxpool.ParseConfig(o.postgres)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	// One plan per prepared statement, as postgres.Open sets it: see the
	// package's doc.
	poolCfg.ConnConfig.RuntimeParams["plan_cache_mode"] = postgres.GenericPlans
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer pool.Close()
	if err := migrate(ctx, pool, o.schema); err != nil {
		return err
	}
	t := tablesIn(o.schema)
	if err := seed(ctx, pool, t, splitList(o.customers), splitList(o.skus), o.balance, o.available); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	// Tokens and entities in the service's own database: the same store
	// value for both, so every step is one transaction (the fast path).
	pg, err := postgres.New(ctx, pool, postgres.Config{Schema: o.batonSchema, Logger: log})
	if err != nil {
		return err
	}
	defer pg.Close()

	natsCfg := nats.Config{URL: o.nats, MonitorURL: o.natsMonitor, AllowUnsafeDurability: o.natsAllowUnsafe,
		Stream: o.natsStream, Prefix: o.natsPrefix, AckWait: o.ackWait, Logger: log}
	var tr *nats.Transport
	if o.nats == "" {
		srv, err := nats.StartEmbedded(nats.EmbeddedConfig{DataDir: o.dataDir})
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		tr, err = srv.NewTransport(ctx, natsCfg)
		if err != nil {
			return err
		}
	} else if tr, err = nats.New(ctx, natsCfg); err != nil {
		return err
	}
	defer tr.Close()

	newEngine := func(d string, source bool) (*engine.Engine, error) {
		cfg := engine.Config{Destination: d, Tokens: pg, Entities: pg, Dispatch: tr,
			SweepAfter: o.sweepAfter, SweepInterval: o.sweepInterval, ShutdownTimeout: o.shutdownTimeout, Logger: log}
		if source {
			cfg.Source = tr
		}
		return engine.New(cfg)
	}
	// The shop engine only starts conversations and sweeps their starts.
	shopEngine, err := newEngine("shop", false)
	if err != nil {
		return err
	}
	engines := []*engine.Engine{shopEngine}
	for _, d := range splitList(o.serve) {
		e, err := newEngine(d, true)
		if err != nil {
			return err
		}
		if err := register(e, d, t); err != nil {
			return err
		}
		engines = append(engines, e)
	}

	edge := &shop{pool: pool, t: t, engine: shopEngine}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", edge.placeOrder)
	mux.HandleFunc("GET /orders/{id}", edge.getOrder)
	listener, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	// Every phase of a connection is bounded, so that a client that sends
	// a byte a second or keeps an idle connection holds nothing for ever.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	go func() { _ = srv.Serve(listener) }()

	var wg sync.WaitGroup
	for _, e := range engines {
		wg.Go(func() {
			if err := e.Run(ctx); err != nil {
				log.Error("engine stopped", "destination", e.Destination(), "err", err)
			}
		})
	}
	fmt.Printf("READY http=%s\n", listener.Addr())
	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	_ = srv.Shutdown(shutdown)
	wg.Wait()
	return nil
}
