package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedConfig configures an in-process NATS server with JetStream.
type EmbeddedConfig struct {
	// DataDir holds JetStream's files. Required. Starting again on the
	// same directory recovers every stored signal.
	DataDir string
	// Listen makes the server accept network clients on Host and Port as
	// well, and serve its HTTP monitoring endpoint on Host at a free port
	// (Embedded.MonitorURL): a transport in another process passes that as
	// Config.MonitorURL, so that New can see that the server syncs every
	// write. By default it takes no port at all: clients connect
	// in-process (Embedded.Connect), so it never collides with another
	// server.
	Listen bool
	// Host to listen on when Listen is set. Default 127.0.0.1.
	Host string
	// Port to listen on when Listen is set. Default 0: a free port chosen
	// by the system (see Embedded.ClientURL).
	Port int
	// ServerName names the server in logs and cluster views. Default
	// "baton-embedded".
	ServerName string
	// StartTimeout bounds how long StartEmbedded waits for the server to
	// be ready (it replays its files first). Default 30s.
	StartTimeout time.Duration
	// Logger receives the server's own log at Info and above. Nil
	// discards it.
	Logger *slog.Logger
}

// Embedded is a running in-process NATS server with JetStream. It stores
// in files and syncs every write to disk before acknowledging it
// (sync_interval: always), so a publish that returned is on disk.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts a server and waits until it accepts clients.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("%w: EmbeddedConfig.DataDir is required", ErrConfig)
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "baton-embedded"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		// fsync every write before the publish is acknowledged (the
		// option that the config file spells sync_interval: always).
		SyncAlways: true,
		// Headers and payload share the server's per-message limit.
		MaxPayload: maxMsgSize,
		DontListen: !cfg.Listen,
		Host:       cfg.Host,
		Port:       server.RANDOM_PORT,
		NoSigs:     true,
		NoLog:      cfg.Logger == nil,
	}
	if cfg.Listen && cfg.Port != 0 {
		opts.Port = cfg.Port
	}
	if cfg.Listen {
		opts.HTTPHost, opts.HTTPPort = cfg.Host, server.RANDOM_PORT
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats embedded: %w", err)
	}
	if cfg.Logger != nil {
		srv.SetLoggerV2(serverLogger{cfg.Logger}, false, false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(cfg.StartTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("nats embedded: server not ready after %v (is %s in use by another server?)", cfg.StartTimeout, cfg.DataDir)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, errors.New("nats embedded: JetStream did not start")
	}
	return &Embedded{srv: srv}, nil
}

// Connect opens an in-process client connection (no network).
func (e *Embedded) Connect(opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.Name("baton"), nats.InProcessServer(e.srv)}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("nats embedded: connect: %w", err)
	}
	return nc, nil
}

// NewTransport connects in-process and returns a transport over this
// server; cfg.URL and cfg.Conn must be empty. It checks that the server
// syncs every write from the server's own JetStream config (StartEmbedded
// sets it), so cfg.MonitorURL is not needed. Closing the transport closes
// its connection; the server keeps running until Shutdown.
func (e *Embedded) NewTransport(ctx context.Context, cfg Config) (*Transport, error) {
	if cfg.URL != "" || cfg.Conn != nil {
		return nil, fmt.Errorf("%w: Embedded.NewTransport connects by itself; leave URL and Conn empty", ErrConfig)
	}
	nc, err := e.Connect()
	if err != nil {
		return nil, err
	}
	cfg.Conn = nc
	cfg.embedded = e.srv
	t, err := New(ctx, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	t.ownsConn = true
	return t, nil
}

// ClientURL is the address network clients use when EmbeddedConfig.Listen
// is set, and "" otherwise.
func (e *Embedded) ClientURL() string {
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// MonitorURL is the server's HTTP monitoring address when
// EmbeddedConfig.Listen is set, for Config.MonitorURL of transports in
// other processes, and "" otherwise.
func (e *Embedded) MonitorURL() string {
	addr := e.srv.MonitorAddr()
	if addr == nil {
		return ""
	}
	return "http://" + addr.String()
}

// Server returns the underlying server, for monitoring or advanced setup.
func (e *Embedded) Server() *server.Server { return e.srv }

// Shutdown stops the server and waits until its files are closed, so a
// new server may start on the same DataDir. Stored signals stay on disk.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// serverLogger forwards the server's log to slog. The server's debug and
// trace output stays off (see SetLoggerV2 above).
type serverLogger struct{ log *slog.Logger }

func (l serverLogger) Noticef(format string, v ...any) { l.log.Info(fmt.Sprintf(format, v...)) }
func (l serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l serverLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
