package participant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/batonhq/baton/backend/embedded"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/httpsignal"
	"github.com/batonhq/baton/tokenservice/client"
)

// Defaults of Config.
const (
	DefaultAddr        = "127.0.0.1:7470"
	DefaultDestination = "billing"
)

// Config configures a participant.
type Config struct {
	// Addr is where it serves signals (at /signals). Default DefaultAddr;
	// port 0 picks a free one.
	Addr string
	// TokenService is the token service's base URL. Required.
	TokenService string
	// Key is the participant's API key at the token service. Required.
	Key string
	// Destination is its destination, the system name its key belongs to.
	// Default DefaultDestination.
	Destination string
	// Data is the directory of its entity store (one file). Required.
	Data string
	// ForwardTo and ForwardURL, if set, make the counting activity pass
	// each signal on to the destination ForwardTo, served at ForwardURL.
	ForwardTo, ForwardURL string
	// SweepAfter is how old an outbox entry that nobody drives must be
	// before the sweeper finishes it. Default 5s.
	SweepAfter time.Duration
	// Logger receives the engine's events. Nil discards.
	Logger *slog.Logger
}

func (c *Config) withDefaults() error {
	switch {
	case c.TokenService == "":
		return errors.New("participant: the token service's URL is required")
	case c.Key == "":
		return errors.New("participant: the API key at the token service is required")
	case c.Data == "":
		return errors.New("participant: a data directory is required")
	}
	if (c.ForwardTo == "") != (c.ForwardURL == "") {
		return errors.New("participant: forwarding needs both a destination and its URL")
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Destination == "" {
		c.Destination = DefaultDestination
	}
	if c.SweepAfter <= 0 {
		c.SweepAfter = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Run serves signals until ctx ends. ready, if not nil, is called with the
// URL at which signals are served once the participant listens.
func Run(ctx context.Context, cfg Config, ready func(signalsURL string)) error {
	if err := cfg.withDefaults(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return fmt.Errorf("participant: data directory: %w", err)
	}
	entities, err := embedded.Open(filepath.Join(cfg.Data, cfg.Destination+".db"), embedded.Config{Logger: cfg.Logger})
	if err != nil {
		return fmt.Errorf("participant: %w", err)
	}
	defer entities.Close()
	tokens, err := client.New(cfg.TokenService, cfg.Key, client.Options{UserAgent: "baton-participant"})
	if err != nil {
		return fmt.Errorf("participant: token service: %w", err)
	}
	defer tokens.Close()
	var dispatch engine.Publisher = engine.Routes{}
	if cfg.ForwardTo != "" {
		if dispatch, err = httpsignal.NewPublisher(httpsignal.PublisherConfig{
			Endpoints: map[string]string{cfg.ForwardTo: cfg.ForwardURL}, Logger: cfg.Logger}); err != nil {
			return fmt.Errorf("participant: %w", err)
		}
	}
	e, err := engine.New(engine.Config{Destination: cfg.Destination, Tokens: tokens, Entities: entities,
		Dispatch: dispatch, SweepAfter: cfg.SweepAfter, SweepInterval: time.Second, Logger: cfg.Logger})
	if err != nil {
		return fmt.Errorf("participant: %w", err)
	}
	for _, register := range []func(*engine.Engine) error{
		func(e *engine.Engine) error { return engine.Register(e, chargeActivity) },
		func(e *engine.Engine) error { return engine.Register(e, countingActivity(cfg.ForwardTo)) },
	} {
		if err := register(e); err != nil {
			return fmt.Errorf("participant: %w", err)
		}
	}
	signals, err := httpsignal.NewServer(e, httpsignal.Options{})
	if err != nil {
		return fmt.Errorf("participant: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/signals", signals)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("participant: %w", err)
	}
	srv := newServer(mux)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	swept := make(chan error, 1)
	go func() { swept <- e.Run(ctx) }()
	if ready != nil {
		ready("http://" + ln.Addr().String() + "/signals")
	}
	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("participant: serving: %w", err)
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdown)
	if runErr := <-swept; runErr != nil && !errors.Is(runErr, context.Canceled) {
		err = errors.Join(err, runErr)
	}
	return err
}

// newServer serves h with bounds on every phase of a connection, as `baton
// serve` does: a client that sends its body a byte at a time, never reads
// the answer, or keeps an idle connection open is cut off instead of
// holding a connection and its goroutine for ever.
func newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second, // above httpsignal's ProcessTimeout of 30s
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}
