package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/embedded"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/httpsignal"
	"github.com/batonhq/baton/internal/telemetry"
	"github.com/batonhq/baton/tokenservice/client"
	"github.com/batonhq/baton/transport"
	natstransport "github.com/batonhq/baton/transport/nats"
)

// Timings that keep the demo brisk: a killed system's unacknowledged
// signals come back after ackWait, and abandoned outbox entries are swept
// after sweepAfter.
const (
	ackWait    = 2 * time.Second
	sweepAfter = 2 * time.Second
	formTTL    = 30 * time.Minute
)

// SystemConfig configures one system process.
type SystemConfig struct {
	Role         string // Shop, Billing or Warehouse
	DataDir      string // holds <role>.db, the system's own entity store
	TokenService string // base URL of the token service
	APIKey       string // the system's key for the token service
	NATSURL      string
	NATSMonitor  string // the NATS server's monitoring URL: the transport checks there that it syncs every write
	Listen       string // HTTP address: the shop's page, billing's signals, everyone's /status
	// InheritsListener: the process serves on a socket it was handed as
	// file descriptor inheritedListenerFD, bound to Listen, instead of
	// binding Listen itself.
	InheritsListener bool
	BillingURL       string // where the shop sends billing's signals
	Chaos            Chaos
	Seed             uint64
	// ParentPID is the demo's process: a system whose parent is no longer
	// that process (the demo was killed) stops, so no system outlives its
	// demo and holds the store files of the next run.
	ParentPID int
	Logger    *slog.Logger `json:"-"`
}

// Chaos sets the faults a system injects into its own traffic.
type Chaos struct {
	DuplicateRate    float64 // a received or sent signal is duplicated
	LostResponseRate float64 // billing processes a request, then drops the connection
}

// Status is what a system reports at GET /status.
type Status struct {
	Role                string       `json:"role"`
	PID                 int          `json:"pid"`
	Stats               engine.Stats `json:"stats"`
	DuplicatesInjected  int64        `json:"duplicates_injected"`
	LostResponsesInject int64        `json:"lost_responses_injected"`
	OutboxPending       bool         `json:"outbox_pending"` // some entity holds an outbox entry
}

type system struct {
	cfg        SystemConfig
	log        *slog.Logger
	engine     *engine.Engine
	entities   *embedded.Store
	metrics    http.Handler
	duplicated atomic.Int64
	lost       atomic.Int64
	rngMu      sync.Mutex
	rng        *rand.Rand
}

// stopWithParent calls stop once this process's parent is no longer
// parent: the demo died without stopping its systems (SIGKILL), and the
// orphan was handed to another process.
func stopWithParent(ctx context.Context, parent int, stop func(), log *slog.Logger) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if os.Getppid() != parent {
			log.Warn("the demo that started this system is gone; stopping")
			stop()
			return
		}
	}
}

func (s *system) chance(p float64) bool {
	if p <= 0 {
		return false
	}
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Float64() < p
}

// RunSystem runs one system until ctx ends.
func RunSystem(ctx context.Context, cfg SystemConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("system", cfg.Role)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if cfg.ParentPID > 0 {
		go stopWithParent(ctx, cfg.ParentPID, stop, log)
	}
	s := &system{cfg: cfg, log: log, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(os.Getpid())))}

	entities, err := embedded.Open(filepath.Join(cfg.DataDir, cfg.Role+".db"), embedded.Config{Logger: log})
	if err != nil {
		return err
	}
	defer entities.Close()
	s.entities = entities
	tokens, err := client.New(cfg.TokenService, cfg.APIKey, client.Options{})
	if err != nil {
		return err
	}
	defer tokens.Close()
	broker, err := natstransport.New(ctx, natstransport.Config{URL: cfg.NATSURL, MonitorURL: cfg.NATSMonitor,
		Stream: "BATON_DEMO", Prefix: "demo", AckWait: ackWait, Logger: log})
	if err != nil {
		return err
	}
	defer broker.Close()

	tracer, closeTracer, err := spanFile(filepath.Join(cfg.DataDir, cfg.Role+".spans"), cfg.Role)
	if err != nil {
		return err
	}
	defer closeTracer()
	meters, metrics, err := telemetry.Prometheus()
	if err != nil {
		return err
	}
	s.metrics = metrics

	ecfg := engine.Config{
		TracerProvider: tracer,
		MeterProvider:  meters,
		Destination:    cfg.Role,
		Tokens:         tokens,
		Entities:       entities,
		Dispatch:       broker,
		SweepAfter:     sweepAfter,
		SweepInterval:  time.Second,
		MaxAttempts:    100, // the demo never gives up on a signal
		// Deliveries that arrive together share their token service
		// requests and their entity commits (the plain path's batches).
		Batch:  8,
		Logger: log,
	}
	var register func(*engine.Engine) error
	switch cfg.Role {
	case Shop:
		billing, err := httpsignal.NewPublisher(httpsignal.PublisherConfig{
			Endpoints: map[string]string{Billing: cfg.BillingURL}, Logger: log})
		if err != nil {
			return err
		}
		ecfg.Dispatch = engine.Routes{Billing: &duplicatingPublisher{s, billing}, "": broker}
		ecfg.Source = &duplicatingSource{s, broker}
		ecfg.Subscriptions = map[string][]string{topicPlaced: {Billing, Warehouse}}
		register = registerShop
	case Billing:
		register = registerBilling // fed over HTTP: no Source, Run only sweeps
	case Warehouse:
		ecfg.Source = &duplicatingSource{s, broker}
		register = registerWarehouse
	default:
		return fmt.Errorf("demo: unknown role %q", cfg.Role)
	}
	if s.engine, err = engine.New(ecfg); err != nil {
		return err
	}
	if err := register(s.engine); err != nil {
		return err
	}
	mux, err := s.routes()
	if err != nil {
		return err
	}
	ln, err := listen(cfg)
	if err != nil {
		return fmt.Errorf("demo: %s: listen on %s: %w", cfg.Role, cfg.Listen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("system running", "listen", cfg.Listen)

	err = s.engine.Run(ctx)
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown)
	return err
}

// inheritedListenerFD is the first descriptor after stdin, stdout and
// stderr: where exec.Cmd puts ExtraFiles[0].
const inheritedListenerFD = 3

func listen(cfg SystemConfig) (net.Listener, error) {
	if !cfg.InheritsListener {
		return net.Listen("tcp", cfg.Listen)
	}
	socket := os.NewFile(inheritedListenerFD, "listener")
	defer socket.Close() // FileListener keeps a duplicate
	return net.FileListener(socket)
}

func (s *system) routes() (*http.ServeMux, error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		pending, err := s.entities.Stale(r.Context(), time.Now().Add(time.Hour), 1)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Status{Role: s.cfg.Role, PID: os.Getpid(), Stats: s.engine.Stats(),
			DuplicatesInjected: s.duplicated.Load(), LostResponsesInject: s.lost.Load(), OutboxPending: len(pending) > 0})
	})
	signals, err := httpsignal.NewServer(s.engine, httpsignal.Options{Logger: s.log, ReplyContentType: "application/json"})
	if err != nil {
		return nil, err
	}
	switch s.cfg.Role {
	case Shop:
		form, err := signals.Form(httpsignal.FormOptions{Type: typePlace, Render: renderSubmission})
		if err != nil {
			return nil, err
		}
		mux.HandleFunc("GET /{$}", s.orderForm)
		mux.Handle("POST /orders", form)
		mux.HandleFunc("GET /orders/{id}", s.orderStatus)
	case Billing:
		mux.Handle("POST /signals", s.losingResponses(signals))
	}
	return mux, nil
}

// losingResponses processes a request and then, now and then, drops the
// connection instead of answering: the caller cannot tell whether the
// charge happened and must retry.
func (s *system) losingResponses(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.chance(s.cfg.Chaos.LostResponseRate) {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(discardResponse{header: http.Header{}}, r)
		s.lost.Add(1)
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	})
}

type discardResponse struct{ header http.Header }

func (d discardResponse) Header() http.Header         { return d.header }
func (d discardResponse) Write(b []byte) (int, error) { return len(b), nil }
func (d discardResponse) WriteHeader(int)             {}

// duplicatingPublisher sends a signal twice now and then, as a client
// retrying after a timeout does.
type duplicatingPublisher struct {
	s     *system
	inner engine.Publisher
}

func (p *duplicatingPublisher) Publish(ctx context.Context, sig baton.Signal) error {
	if err := p.inner.Publish(ctx, sig); err != nil {
		return err
	}
	if p.s.chance(p.s.cfg.Chaos.DuplicateRate) {
		p.s.duplicated.Add(1)
		return p.inner.Publish(ctx, sig)
	}
	return nil
}

// duplicatingSource hands out an extra copy of a delivery now and then, as
// a broker redelivering a message whose acknowledgement was lost does.
// (JetStream drops republished copies by message id, so duplicating on the
// receiving side is what reaches the engine.)
type duplicatingSource struct {
	s     *system
	inner transport.Transport
}

func (d *duplicatingSource) Publish(ctx context.Context, sig baton.Signal) error {
	return d.inner.Publish(ctx, sig)
}

func (d *duplicatingSource) Subscribe(ctx context.Context, destination string) (transport.Subscription, error) {
	sub, err := d.inner.Subscribe(ctx, destination)
	if err != nil {
		return nil, err
	}
	return &duplicatingSubscription{Subscription: sub, s: d.s}, nil
}

type duplicatingSubscription struct {
	transport.Subscription
	s       *system
	mu      sync.Mutex
	pending []baton.Signal
}

func (d *duplicatingSubscription) Next(ctx context.Context) (transport.Delivery, error) {
	d.mu.Lock()
	if n := len(d.pending); n > 0 {
		sig := d.pending[n-1]
		d.pending = d.pending[:n-1]
		d.mu.Unlock()
		return copyDelivery{sig}, nil
	}
	d.mu.Unlock()
	delivery, err := d.Subscription.Next(ctx)
	if err == nil && d.s.chance(d.s.cfg.Chaos.DuplicateRate) {
		d.s.duplicated.Add(1)
		d.mu.Lock()
		d.pending = append(d.pending, delivery.Signal())
		d.mu.Unlock()
	}
	return delivery, err
}

// copyDelivery is an injected duplicate: settling it settles nothing.
type copyDelivery struct{ sig baton.Signal }

func (c copyDelivery) Signal() baton.Signal                      { return c.sig }
func (c copyDelivery) Attempt() int                              { return 1 }
func (c copyDelivery) Ack(context.Context) error                 { return nil }
func (c copyDelivery) Nack(context.Context, time.Duration) error { return nil }
func (c copyDelivery) Park(context.Context, string) error        { return nil }
