// Command worker is the engine process of the end-to-end tests of package
// e2e: it runs the e2e workload for the destinations it is told to serve,
// over the token store, entity store and transport that its flags select,
// until SIGTERM. The tests start several of them, kill them with SIGKILL at
// random moments, and check the stores afterwards.
//
// On start it prints one line "READY http=<addr>" to stdout; <addr> serves
// POST /snapshot, which reads this process's stores (the only way to read
// an embedded store while the process holds its file lock). After a clean
// It prints "STATS <json>", the sum of its engines' counters since it
// started, every half second and once more after a clean stop.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/internal/e2e"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/transport"
)

type options struct {
	tokens, entities, transport string

	postgres, pgSchema   string
	mysql, mysqlPrefix   string
	redis, redisPrefix   string
	redisParts           int
	etcd, etcdPrefix     string
	file                 string
	nats, natsStream     string
	natsPrefix           string
	ackWait              time.Duration
	natsDupWindow        time.Duration
	rabbitmq, rabbitName string

	serve           string
	workers         int
	sweepAfter      time.Duration
	sweepInterval   time.Duration
	redeliveryDelay time.Duration
	storeTimeout    time.Duration
	broken          string
	deferRemovals   bool
	batch           int
	logLevel        string
}

func main() {
	var o options
	flag.StringVar(&o.tokens, "tokens", "", "token store: postgres, mysql, redis, etcd or embedded")
	flag.StringVar(&o.entities, "entities", "", "entity store: postgres, mysql or embedded")
	flag.StringVar(&o.transport, "transport", "", "transport: nats or rabbitmq")
	flag.StringVar(&o.postgres, "postgres", "", "PostgreSQL DSN")
	flag.StringVar(&o.pgSchema, "pg-schema", "", "PostgreSQL schema of the tokens and entities")
	flag.StringVar(&o.mysql, "mysql", "", "MySQL DSN")
	flag.StringVar(&o.mysqlPrefix, "mysql-prefix", "", "MySQL table prefix of the tokens and entities")
	flag.StringVar(&o.redis, "redis", "", "Redis URL")
	flag.StringVar(&o.redisPrefix, "redis-prefix", "", "Redis key prefix")
	flag.IntVar(&o.redisParts, "redis-parts", 1, "split the Redis tokens by conversation over this many stores (prefixes <redis-prefix>:p<i>)")
	flag.StringVar(&o.etcd, "etcd", "", "comma separated etcd endpoints")
	flag.StringVar(&o.etcdPrefix, "etcd-prefix", "", "etcd key prefix")
	flag.StringVar(&o.file, "file", "", "embedded store file (tokens, entities or both)")
	flag.StringVar(&o.nats, "nats", "", "NATS URL")
	flag.StringVar(&o.natsStream, "nats-stream", "", "JetStream stream name")
	flag.StringVar(&o.natsPrefix, "nats-prefix", "", "NATS subject prefix")
	flag.DurationVar(&o.ackWait, "ack-wait", 2*time.Second, "how long an unacknowledged delivery waits before redelivery")
	flag.DurationVar(&o.natsDupWindow, "nats-dup-window", 0, "JetStream deduplication window (0: the transport's default)")
	flag.StringVar(&o.rabbitmq, "rabbitmq", "", "RabbitMQ URL")
	flag.StringVar(&o.rabbitName, "rabbitmq-prefix", "", "RabbitMQ queue and exchange name prefix")
	flag.StringVar(&o.serve, "serve", strings.Join(e2e.Destinations, ","), "comma separated destinations to serve")
	flag.IntVar(&o.workers, "workers", 4, "signals processed at once per destination")
	flag.DurationVar(&o.sweepAfter, "sweep-after", 2*time.Second, "age of an outbox entry that the sweeper finishes")
	flag.DurationVar(&o.sweepInterval, "sweep-interval", time.Second, "how often to sweep")
	flag.DurationVar(&o.redeliveryDelay, "redelivery-delay", 100*time.Millisecond, "first delay before a failed signal is redelivered")
	flag.DurationVar(&o.storeTimeout, "store-timeout", 10*time.Second, "deadline of each store call")
	flag.BoolVar(&o.deferRemovals, "defer-removals", false, "remove outbox entries after the ack, in batches (engine.Config.DeferRemovals)")
	flag.IntVar(&o.batch, "batch", 0, "most deliveries a worker processes together (engine.Config.Batch)")
	flag.StringVar(&o.broken, "broken", "", "test only: skip-token-check runs a worker that breaks the protocol")
	flag.StringVar(&o.logLevel, "log-level", "warn", "debug, info, warn or error")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("worker failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	serve := strings.Split(o.serve, ",")
	for _, d := range serve {
		if !isDestination(d) {
			return fmt.Errorf("-serve: unknown destination %q", d)
		}
	}
	if o.broken != "" && o.broken != "skip-token-check" {
		return fmt.Errorf("-broken: unknown mode %q", o.broken)
	}

	stores, err := openStores(ctx, o, log)
	if err != nil {
		return err
	}
	defer stores.close()
	tr, err := openTransport(ctx, o, log)
	if err != nil {
		return err
	}
	defer tr.close()

	var tokens store.TokenStore = stores.tokens
	var source transport.Transport = tr.transport
	if o.broken != "" {
		log.Warn("BROKEN MODE: consumed tokens are treated as live; this worker applies duplicates", "mode", o.broken)
		seen := &received{signals: map[baton.TokenID]baton.Signal{}}
		tokens = forgetfulTokens{stores.tokens, seen}
		source = recordingTransport{tr.transport, seen}
	}

	var engines []*engine.Engine
	for _, d := range serve {
		e, err := engine.New(engine.Config{
			Destination:     d,
			Tokens:          tokens,
			Entities:        stores.entities,
			Dispatch:        tr.transport,
			Source:          source,
			NoFastPath:      o.broken != "",
			DeferRemovals:   o.deferRemovals,
			Batch:           o.batch,
			Subscriptions:   e2e.Subscriptions,
			Workers:         o.workers,
			MaxAttempts:     1 << 20, // never park: every signal must get through
			RedeliveryDelay: o.redeliveryDelay,
			SweepAfter:      o.sweepAfter,
			SweepInterval:   o.sweepInterval,
			ShutdownTimeout: 10 * time.Second,
			Logger:          log,
		})
		if err != nil {
			return err
		}
		if err := e2e.Register(e); err != nil {
			return err
		}
		engines = append(engines, e)
	}

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: snapshotHandler(stores), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(listener)
	defer srv.Close()

	var wg sync.WaitGroup
	for _, e := range engines {
		wg.Go(func() {
			if err := e.Run(ctx); err != nil {
				log.Error("engine stopped", "destination", e.Destination(), "err", err)
			}
		})
	}
	fmt.Printf("READY http=%s\n", listener.Addr())
	// Counters go out every half second as well as at the end, so that the
	// test sees most of what a process did before it was killed.
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				printStats(engines)
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	<-reported
	printStats(engines)
	return nil
}

// printStats prints the sum of the engines' counters since the process
// started, as one line "STATS <json>".
func printStats(engines []*engine.Engine) {
	var total engine.Stats
	for _, e := range engines {
		total = total.Plus(e.Stats())
	}
	line, _ := json.Marshal(total)
	fmt.Printf("STATS %s\n", line)
}

func isDestination(d string) bool {
	for _, known := range e2e.Destinations {
		if d == known {
			return true
		}
	}
	return false
}

// snapshotRequest asks a worker to read its own stores.
type snapshotRequest struct {
	Keys         []string `json:"keys"`
	Destinations []string `json:"destinations"` // list live tokens of these
}

type snapshotResponse struct {
	Entities  []store.Entity `json:"entities"` // only those ever committed
	Tokens    []baton.Token  `json:"tokens"`
	StaleKeys []string       `json:"stale_keys"`
}

func snapshotHandler(s *stores) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /snapshot", func(w http.ResponseWriter, r *http.Request) {
		var req snapshotRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := s.snapshot(r.Context(), req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(resp)
	})
	return mux
}

func (s *stores) snapshot(ctx context.Context, req snapshotRequest) (snapshotResponse, error) {
	resp := snapshotResponse{Entities: []store.Entity{}, Tokens: []baton.Token{}}
	for _, key := range req.Keys {
		e, err := s.entities.Load(ctx, key)
		if err != nil {
			return resp, err
		}
		if e.Version > 0 {
			resp.Entities = append(resp.Entities, e)
		}
	}
	for _, d := range req.Destinations {
		var page store.Page
		for {
			page.Limit = store.MaxPageLimit
			tokens, err := s.tokens.ListByDestination(ctx, d, page)
			if err != nil {
				return resp, err
			}
			resp.Tokens = append(resp.Tokens, tokens...)
			if len(tokens) < page.Limit {
				break
			}
			page.After = tokens[len(tokens)-1].ID
		}
	}
	stale, err := s.entities.Stale(ctx, time.Now().Add(24*time.Hour), store.MaxPageLimit)
	if err != nil {
		return resp, err
	}
	resp.StaleKeys = append([]string{}, stale...)
	return resp, nil
}
