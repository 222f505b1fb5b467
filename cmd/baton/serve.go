package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/embedded"
	"github.com/batonhq/baton/backend/etcd"
	"github.com/batonhq/baton/backend/postgres"
	batonredis "github.com/batonhq/baton/backend/redis"
	"github.com/batonhq/baton/backend/split"
	"github.com/batonhq/baton/conversation"
	"github.com/batonhq/baton/dashboard"
	"github.com/batonhq/baton/internal/telemetry"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/transport"
)

// defaultServeAddr is baton's own port: no well-known service uses 7451,
// so `baton serve` never collides with PostgreSQL, Redis or NATS.
const defaultServeAddr = "127.0.0.1:7451"

// defaultDashboardAddr is the loopback address of the dashboard and the
// metrics without credentials: the port after the API's.
const defaultDashboardAddr = "127.0.0.1:7452"

// dashboardTokenRefresh is how long the dashboard reuses one listing of
// the live tokens, whatever the number of open pages.
const dashboardTokenRefresh = 2 * time.Second

// serveEnv maps flags to the environment variables that set them when the
// flag is not given.
var serveEnv = map[string]string{
	"addr":                    "BATON_ADDR",
	"store":                   "BATON_STORE",
	"data-dir":                "BATON_DATA_DIR",
	"postgres-dsn":            "BATON_POSTGRES_DSN",
	"postgres-schema":         "BATON_POSTGRES_SCHEMA",
	"redis-url":               "BATON_REDIS_URL",
	"allow-unsafe-durability": "BATON_ALLOW_UNSAFE_DURABILITY",
	"systems":                 "BATON_SYSTEMS",
	"tls-cert":                "BATON_TLS_CERT",
	"tls-key":                 "BATON_TLS_KEY",
	"client-ca":               "BATON_CLIENT_CA",
	"max-body":                "BATON_MAX_BODY",
	"log-level":               "BATON_LOG_LEVEL",
	"dashboard":               "BATON_DASHBOARD",
	"dashboard-addr":          "BATON_DASHBOARD_ADDR",
	"dashboard-conversations": "BATON_DASHBOARD_CONVERSATIONS",
	"dashboard-memory-mib":    "BATON_DASHBOARD_MEMORY_MIB",
	"allowed-hosts":           "BATON_ALLOWED_HOSTS",
	"insecure-plain-http":     "BATON_INSECURE_PLAIN_HTTP",
	"audit-log":               "BATON_AUDIT_LOG",
	"etcd-endpoints":          "BATON_ETCD_ENDPOINTS",
	"etcd-prefix":             "BATON_ETCD_PREFIX",
	"stuck-after-for":         "BATON_STUCK_AFTER_FOR",
	"stuck-after":             "BATON_STUCK_AFTER",
}

// bootstrapEnv holds one system as JSON, in the form of a systems file
// entry: enough to start a service without a file.
const bootstrapEnv = "BATON_SYSTEM"

type serveOptions struct {
	addr, store, dataDir      string
	postgresDSNs              []string // more than one: a store split by conversation over them
	postgresSchema            string
	redisURLs                 []string // likewise
	etcdEndpoints             []string
	etcdPrefix                string
	allowUnsafe               bool
	allowAsyncReplication     bool
	systems                   string
	tlsCert, tlsKey, clientCA string
	maxBody                   int64
	logLevel                  string
	dashboard                 bool
	// dashboardAddr is the loopback address of the dashboard and /metrics
	// without credentials; empty: none.
	dashboardAddr string
	// dashboardConversations and dashboardMemoryMiB bound the recorder;
	// zero takes conversation.DefaultLimit and conversation.DefaultBytes.
	dashboardConversations int
	dashboardMemoryMiB     int
	allowedHosts           []string // Host names accepted besides addresses and localhost
	insecurePlainHTTP      bool     // allow plain HTTP on a non-loopback --addr
	stuckAfter             time.Duration
	stuckAfterFor          map[string]string // destination: duration, overriding stuckAfter
	// broker is where the dashboard finds parked signals; with it, systems
	// with the operate permission replay and discard them there, and each
	// discard is appended to auditLog.
	broker   brokerFlags
	auditLog string
}

func newServeCommand() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the token service: baton's HTTP API for systems in any language",
		Long: `serve runs the token service over a token store, so that systems written in any
language issue, consume and create tokens over HTTP (docs/token-service.md).

Callers authenticate as a registered system with "Authorization: Bearer <api key>"
or a client certificate (--client-ca). Register systems in a JSON file (--systems)
or one in the BATON_SYSTEM variable; create keys with "baton serve keygen".

The dashboard draws the conversations of every system from the transitions the
service sees; Prometheus metrics are at /metrics. Both show every in-flight
token id, so on --addr they answer only systems with the observe permission;
--dashboard-addr serves them without credentials on a loopback address only.
Requests whose Host header is not an IP address, localhost, a name of --addr or
of the TLS certificate, or one of --allowed-hosts are refused (DNS rebinding).
Plain HTTP on an address other than loopback is refused unless
--insecure-plain-http is given.

Every flag can also be set by its environment variable, shown in brackets.
The service keeps no state of its own: run as many instances over one shared
store (--store postgres or redis) as you like.`,
		Example: `  baton serve keygen --system billing
  baton serve --systems systems.json
  baton serve --addr 127.0.0.1:0 --store postgres --postgres-dsn postgres://baton@db/baton --systems systems.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			return runServe(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.addr, "addr", defaultServeAddr, "listen address; port 0 picks a free port and prints it")
	f.StringVar(&o.store, "store", "embedded", "token store: embedded, postgres, redis or etcd")
	f.StringVar(&o.dataDir, "data-dir", "baton-data", "directory of the embedded store's file (--store embedded)")
	f.StringArrayVar(&o.postgresDSNs, "postgres-dsn", nil, "PostgreSQL URL or key=value DSN (--store postgres); repeated, the tokens are split by conversation over the databases, in the order given (docs/scaling.md)")
	f.StringVar(&o.postgresSchema, "postgres-schema", postgres.DefaultSchema, "PostgreSQL schema of the store's tables")
	f.StringArrayVar(&o.redisURLs, "redis-url", nil, "Redis URL, redis://host:port/db (--store redis); repeated, the tokens are split by conversation over the servers, in the order given")
	f.StringSliceVar(&o.etcdEndpoints, "etcd-endpoints", nil, "client URLs of the etcd cluster's members, comma separated (--store etcd)")
	f.StringVar(&o.etcdPrefix, "etcd-prefix", etcd.DefaultPrefix, "prefix of the store's keys in etcd")
	f.BoolVar(&o.allowUnsafe, "allow-unsafe-durability", false, "accept a PostgreSQL, Redis or NATS server that acknowledges writes before they are on disk (tests only)")
	f.BoolVar(&o.allowAsyncReplication, "allow-async-replication", false, "accept a Redis server with replicas, which a failover to a lagging one turns into lost and revived tokens (only if no replica is ever promoted)")
	f.StringVar(&o.systems, "systems", "", "JSON file of the registered systems")
	f.StringVar(&o.tlsCert, "tls-cert", "", "serve HTTPS with this PEM certificate (with --tls-key)")
	f.StringVar(&o.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&o.clientCA, "client-ca", "", "PEM CA certificates that sign client certificates; a certificate's common name names its system")
	f.Int64Var(&o.maxBody, "max-body", tokenservice.DefaultMaxBodyBytes, "largest request body in bytes; larger ones get 413")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error (logs go to stderr)")
	f.BoolVar(&o.dashboard, "dashboard", true, "record conversations and serve the dashboard (false: no recorder, only /metrics)")
	f.StringVar(&o.dashboardAddr, "dashboard-addr", defaultDashboardAddr, "loopback address of the dashboard and /metrics without credentials; port 0 picks a free port and prints it; empty: none")
	f.IntVar(&o.dashboardConversations, "dashboard-conversations", conversation.DefaultLimit, "conversations the dashboard's recorder keeps")
	f.IntVar(&o.dashboardMemoryMiB, "dashboard-memory-mib", conversation.DefaultBytes>>20, "estimated memory the dashboard's recorder may use, in MiB")
	f.StringSliceVar(&o.allowedHosts, "allowed-hosts", nil, "host names that requests may name in their Host header, besides IP addresses, localhost and the names of --addr and the TLS certificate")
	f.DurationVar(&o.stuckAfter, "stuck-after", telemetry.DefaultStuckAfter, "age from which /metrics (baton_tokens_stuck) and the dashboard count a live token as stuck")
	f.StringToStringVar(&o.stuckAfterFor, "stuck-after-for", nil, "destinations with thresholds of their own, as DEST=DURATION,... (shipping=24h)")
	f.BoolVar(&o.insecurePlainHTTP, "insecure-plain-http", false, "serve plain HTTP on an address other than loopback (only behind a TLS-terminating proxy on a trusted network)")
	o.broker.register(f, false)
	for _, name := range []string{"nats", "rabbitmq"} {
		f.Lookup(name).Usage = strings.Replace(f.Lookup(name).Usage, " [", ": the dashboard lists its parked signals, and systems with the operate permission replay and discard them there [", 1)
	}
	f.StringVar(&o.auditLog, "audit-log", "baton-discards.jsonl", "file that discards from the dashboard are appended to, one JSON object per line (with --nats or --rabbitmq)")
	f.VisitAll(func(fl *pflag.Flag) {
		if env, ok := serveEnv[fl.Name]; ok {
			fl.Usage += " [" + env + "]"
		}
	})
	cmd.AddCommand(newKeygenCommand())
	return cmd
}

// applyEnv sets every flag that was not given from its environment
// variable, if that is set.
func applyEnv(flags *pflag.FlagSet) error {
	var err error
	flags.VisitAll(func(fl *pflag.Flag) {
		env, ok := serveEnv[fl.Name]
		if !ok || fl.Changed || err != nil {
			return
		}
		if v, set := os.LookupEnv(env); set {
			if e := flags.Set(fl.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %v", env, v, e)
			}
		}
	})
	return err
}

func runServe(ctx context.Context, stdout, stderr io.Writer, o serveOptions) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	log := slog.New(flagNamesHandler{slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})})
	quietLibraries(log)
	systems, err := loadSystems(o.systems)
	if err != nil {
		return err
	}
	if o.maxBody <= 0 {
		return fmt.Errorf("--max-body must be positive, got %d", o.maxBody)
	}
	if o.stuckAfter <= 0 {
		return fmt.Errorf("--stuck-after must be positive, got %s", o.stuckAfter)
	}
	if o.dashboardConversations < 0 || o.dashboardMemoryMiB < 0 {
		return errors.New("--dashboard-conversations and --dashboard-memory-mib must not be negative")
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if o.clientCA != "" && o.tlsCert == "" {
		return errors.New("--client-ca needs --tls-cert and --tls-key: client certificates need TLS")
	}
	var tlsCfg *tls.Config
	if o.tlsCert != "" {
		if tlsCfg, err = tokenservice.TLSConfig(o.tlsCert, o.tlsKey, o.clientCA); err != nil {
			return err
		}
	}
	if err := checkAddresses(ctx, o, tlsCfg != nil); err != nil {
		return err
	}
	hosts, err := allowedHosts(o, tlsCfg)
	if err != nil {
		return err
	}
	tokens, closeStore, err := openStore(ctx, o, log)
	if err != nil {
		return err
	}
	defer closeStore()
	ops, closeOps, err := openParkedOps(ctx, o, log)
	if err != nil {
		return err
	}
	defer closeOps()
	handlers, err := serveHandler(tokens, systems, hosts, o, ops, log)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %v", o.addr, err)
	}
	var local net.Listener
	if handlers.local != nil {
		if local, err = net.Listen("tcp", o.dashboardAddr); err != nil {
			l.Close()
			return fmt.Errorf("--dashboard-addr: listen on %s: %v (choose another port, or \"\" for none)", o.dashboardAddr, err)
		}
	}
	baseCtx := context.WithoutCancel(ctx)
	srv := newHTTPServer(baseCtx, handlers.api, log)
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
		srv.TLSConfig = tlsCfg
	}
	fmt.Fprintf(stdout, "listening on %s://%s\n", scheme, l.Addr())
	if local != nil {
		fmt.Fprintf(stdout, "dashboard on http://%s\n", local.Addr())
	}
	log.Info("token service started", "addr", l.Addr().String(), "store", o.store, "systems", len(systems),
		"tls", tlsCfg != nil, "client_certificates", o.clientCA != "", "dashboard", o.dashboard,
		"dashboard_addr", addrOf(local), "parked_actions", ops.place != nil, "audit_log", auditLogOf(ops, o))

	served := make(chan error, 2)
	go func() {
		if tlsCfg != nil {
			served <- srv.ServeTLS(l, "", "")
		} else {
			served <- srv.Serve(l)
		}
	}()
	servers := []*trackedServer{srv}
	if local != nil {
		localSrv := newHTTPServer(baseCtx, handlers.local, log)
		servers = append(servers, localSrv)
		go func() { served <- localSrv.Serve(local) }()
	}
	var serveErr error
	select {
	case err := <-served:
		serveErr = fmt.Errorf("serve: %v", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing requests in flight", "grace", shutdownGrace)
	if err := stopServers(servers, shutdownGrace, log); err != nil && serveErr == nil {
		serveErr = fmt.Errorf("shutdown: %v", err)
	}
	if serveErr != nil {
		return serveErr
	}
	log.Info("token service stopped")
	return nil
}

// shutdownGrace is how long a stopping serve lets requests in flight
// finish before it closes their connections; a variable for tests.
var shutdownGrace = 15 * time.Second

// stopServers shuts the servers down together, letting requests in flight
// finish within grace, and then closes the connections still open: a
// client that stalls mid-request must not turn a SIGTERM into a failed
// exit or keep the store from being closed. A warning says how many
// connections were cut.
func stopServers(servers []*trackedServer, grace time.Duration, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var (
		wg                    sync.WaitGroup
		mu                    sync.Mutex
		connections, requests int
		firstErr              error
	)
	for _, s := range servers {
		wg.Go(func() {
			err := s.Shutdown(ctx)
			if !errors.Is(err, context.DeadlineExceeded) {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			open, active := s.openConnections()
			s.Close()
			mu.Lock()
			connections, requests = connections+open, requests+active
			mu.Unlock()
		})
	}
	wg.Wait()
	if connections > 0 {
		log.Warn("shutdown: grace period over, closed the connections still open",
			"grace", grace, "connections", connections, "requests", requests)
	}
	return firstErr
}

// quietLibraries sends what the store's client and the metrics SDK print
// by themselves (go-redis a line per failed dial, OpenTelemetry a line per
// scrape whose gauge could not read the store) to log at debug level,
// instead of unstructured lines on the process's stderr: an outage of the
// store is logged once by the token service, and counted on /metrics
// (baton_token_store_errors_total).
func quietLibraries(log *slog.Logger) {
	goredis.SetLogger(redisLog{log})
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Debug("metrics: " + err.Error())
	}))
}

// redisLog is go-redis's logger over slog.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}

func newHTTPServer(base context.Context, h http.Handler, log *slog.Logger) *trackedServer {
	s := &trackedServer{conns: map[net.Conn]http.ConnState{}}
	s.Server = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return base },
		ConnState:         s.track,
	}
	return s
}

// trackedServer is an http.Server that knows the state of each of its
// connections, so that a forced stop can say how many it cut.
type trackedServer struct {
	*http.Server
	mu    sync.Mutex
	conns map[net.Conn]http.ConnState
}

func (s *trackedServer) track(c net.Conn, state http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if state == http.StateClosed || state == http.StateHijacked {
		delete(s.conns, c)
	} else {
		s.conns[c] = state
	}
}

// openConnections counts the connections that are not idle, and of them
// those reading or answering a request.
func (s *trackedServer) openConnections() (open, active int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, state := range s.conns {
		if state != http.StateIdle {
			open++
		}
		if state == http.StateActive {
			active++
		}
	}
	return open, active
}

func auditLogOf(ops parkedOps, o serveOptions) string {
	if ops.place == nil {
		return ""
	}
	return o.auditLog
}

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// checkAddresses refuses what would expose secrets: plain HTTP on an
// address other than loopback, where API keys and token ids would cross
// the network in clear (unless --insecure-plain-http says a TLS proxy in
// front takes care of it), and a dashboard address other than loopback,
// where the dashboard would answer anyone without credentials.
func checkAddresses(ctx context.Context, o serveOptions, tls bool) error {
	if !tls && !o.insecurePlainHTTP {
		loopback, err := isLoopback(ctx, o.addr)
		if err != nil {
			return fmt.Errorf("--addr %s: %v", o.addr, err)
		}
		if !loopback {
			return fmt.Errorf("--addr %s is not a loopback address and serving it over plain HTTP would send API keys in clear: give --tls-cert and --tls-key, or --insecure-plain-http behind a TLS-terminating proxy", o.addr)
		}
	}
	if o.dashboardAddr != "" {
		loopback, err := isLoopback(ctx, o.dashboardAddr)
		if err != nil {
			return fmt.Errorf("--dashboard-addr %s: %v", o.dashboardAddr, err)
		}
		if !loopback {
			return fmt.Errorf("--dashboard-addr %s is not a loopback address: the dashboard there needs no credentials (on --addr it answers systems with the observe permission)", o.dashboardAddr)
		}
	}
	return nil
}

// isLoopback reports whether a listener on addr (host:port) is reachable
// only from this machine: its host is a loopback address, or a name whose
// every address is one. An empty or unspecified host listens on every
// interface.
func isLoopback(ctx context.Context, addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, err
	}
	if host == "" {
		return false, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.IsLoopback(), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return false, err
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false, nil
		}
	}
	return len(ips) > 0, nil
}

// allowedHosts lists the names a request's Host header may give besides
// IP addresses and localhost (tokenservice.CheckHost): --allowed-hosts,
// the host names of --addr and --dashboard-addr, and the DNS names of the
// TLS certificate.
func allowedHosts(o serveOptions, tlsCfg *tls.Config) ([]string, error) {
	var names []string
	for _, h := range o.allowedHosts {
		h = strings.TrimSpace(h)
		if h == "" || strings.ContainsAny(h, "/*@ \t") {
			return nil, fmt.Errorf("--allowed-hosts %q: want host names such as tokens.example.com, without scheme, path or wildcard", h)
		}
		names = append(names, h)
	}
	for _, addr := range []string{o.addr, o.dashboardAddr} {
		if host, _, err := net.SplitHostPort(addr); err == nil && host != "" {
			names = append(names, host)
		}
	}
	if tlsCfg != nil {
		for _, c := range tlsCfg.Certificates {
			if c.Leaf != nil {
				names = append(names, c.Leaf.DNSNames...)
			}
		}
	}
	return names, nil
}

// handlers are what `baton serve` serves on its two addresses.
type handlers struct {
	api      http.Handler           // --addr
	local    http.Handler           // --dashboard-addr; nil without it
	recorder *conversation.Recorder // nil with --dashboard=false
}

// serveHandler puts the token service under /v1/ and /healthz, Prometheus
// metrics at /metrics and, unless disabled, the dashboard at /, which draws
// the conversations of every system from the transitions the service sees.
// On the API's address the metrics and the dashboard need an observe
// system's credentials; the loopback dashboard address serves just them,
// without credentials. Both check the Host header against hosts.
func serveHandler(tokens store.TokenStore, systems []tokenservice.System, hosts []string, o serveOptions, ops parkedOps, log *slog.Logger) (handlers, error) {
	var h handlers
	apiTokens := tokens
	if o.dashboard {
		// Only the dashboard reads the recorder: without it nothing is
		// recorded at all.
		h.recorder = conversation.NewRecorderWithLimits(conversation.Limits{
			Conversations: o.dashboardConversations, Bytes: int64(o.dashboardMemoryMiB) << 20})
		apiTokens = conversation.RecordTokens(tokens, h.recorder, nil)
	}
	provider, metrics, err := telemetry.Prometheus()
	if err != nil {
		return h, err
	}
	api, err := tokenservice.New(tokenservice.Config{Tokens: apiTokens, ProbeTokens: tokens, Systems: systems, MaxBodyBytes: o.maxBody, Logger: log,
		MeterProvider: provider})
	if err != nil {
		return h, err
	}
	destinations := knownDestinations(systems)
	byDestination, err := parseThresholds("--stuck-after-for", o.stuckAfterFor)
	if err != nil {
		return h, err
	}
	stuckAfter := telemetry.StuckAfter{Default: o.stuckAfter, ByDestination: byDestination}
	if err := telemetry.LiveTokens(provider.Meter("github.com/batonhq/baton/cmd/baton"), tokens, destinations, stuckAfter); err != nil {
		return h, err
	}
	var board http.Handler
	if o.dashboard {
		cfg := dashboard.Config{Recorder: h.recorder, Tokens: apiTokens, Destinations: destinations,
			Logger: log, TokenRefresh: dashboardTokenRefresh, StuckAfter: stuckAfter.For(""), StuckAfterByDestination: byDestination}
		if ops.place != nil {
			cfg.Parked, cfg.Audit = ops.place, ops.audit
			if cfg.Operate, err = operators(systems); err != nil {
				return h, err
			}
		}
		if board, err = dashboard.New(cfg); err != nil {
			return h, err
		}
	}
	observe, err := tokenservice.RequireObserve(systems, log)
	if err != nil {
		return h, err
	}
	checkHost := tokenservice.CheckHost(hosts)

	mux := http.NewServeMux()
	mux.Handle("/v1/", api)
	mux.Handle("/healthz", api)
	mux.Handle("GET /metrics", observe(metrics))
	if board != nil {
		mux.Handle("/", observe(board))
	}
	h.api = checkHost(mux)
	if o.dashboardAddr != "" {
		local := http.NewServeMux()
		local.Handle("GET /metrics", metrics)
		if board != nil {
			local.Handle("/", board)
		}
		h.local = checkHost(local)
	}
	return h, nil
}

// parkedOps is the park place the dashboard acts on, and where discards are
// recorded; zero for none.
type parkedOps struct {
	place transport.ParkedStore
	audit io.Writer
}

// operators admits the dashboard's replay and discard requests from the
// registered systems with the operate permission, each request by its own
// credentials: a page served without credentials (--dashboard-addr) lets
// anyone look, but only an operator's key or certificate act.
func operators(systems []tokenservice.System) (func(*http.Request) (string, error), error) {
	authenticate, err := tokenservice.Authenticator(systems)
	if err != nil {
		return nil, err
	}
	return func(r *http.Request) (string, error) {
		sys, err := authenticate(r)
		if err != nil {
			return "", fmt.Errorf("%w: %v", dashboard.ErrNoCredentials, err)
		}
		if !sys.Operate {
			return "", fmt.Errorf("system %q may not replay or discard parked signals: that needs the operate permission", sys.Name)
		}
		return sys.Name, nil
	}, nil
}

// openParkedOps opens the broker named by --nats or --rabbitmq and the
// audit log, or returns a zero parkedOps without a broker. The broker's
// warnings (a server accepted by --allow-unsafe-durability) go to log.
func openParkedOps(ctx context.Context, o serveOptions, log *slog.Logger) (parkedOps, func(), error) {
	if !o.broker.configured() {
		return parkedOps{}, func() {}, nil
	}
	b := o.broker
	b.allowUnsafe, b.log = o.allowUnsafe, log
	place, closeBroker, err := b.open(ctx)
	if err != nil {
		return parkedOps{}, nil, fmt.Errorf("broker of the parked signals: %w", err)
	}
	audit, err := os.OpenFile(o.auditLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		closeBroker()
		return parkedOps{}, nil, fmt.Errorf("--audit-log: %w", err)
	}
	return parkedOps{place: place, audit: audit}, func() { audit.Close(); closeBroker() }, nil
}

// knownDestinations lists the destinations of the registered systems, for
// the dashboard's and the metrics' live tokens by destination.
func knownDestinations(systems []tokenservice.System) func() []string {
	seen := map[string]bool{}
	var out []string
	for _, sys := range systems {
		for _, d := range append([]string{sys.Name}, sys.Destinations...) {
			if d != tokenservice.AnyDestination && !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	slices.Sort(out)
	return func() []string { return out }
}

// loadSystems reads the systems file and the bootstrap system.
func loadSystems(path string) ([]tokenservice.System, error) {
	var systems []tokenservice.System
	if path != "" {
		s, err := tokenservice.LoadSystems(path)
		if err != nil {
			return nil, err
		}
		systems = s
	}
	if v := strings.TrimSpace(os.Getenv(bootstrapEnv)); v != "" {
		s, err := tokenservice.ParseSystem([]byte(v))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", bootstrapEnv, err)
		}
		systems = append(systems, s)
	}
	if len(systems) == 0 {
		return nil, fmt.Errorf("no systems registered: pass --systems FILE or set %s (create keys with: baton serve keygen --system NAME)", bootstrapEnv)
	}
	return systems, nil
}

// openStore opens the token store that o selects and returns its closer.
func openStore(ctx context.Context, o serveOptions, log *slog.Logger) (store.TokenStore, func(), error) {
	openCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	switch o.store {
	case "embedded":
		if o.dataDir == "" {
			return nil, nil, errors.New("--data-dir must not be empty")
		}
		if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("data dir: %v", err)
		}
		s, err := embedded.Open(filepath.Join(o.dataDir, "tokens.db"), embedded.Config{Logger: log})
		if err != nil {
			return nil, nil, fmt.Errorf("open embedded token store: %v", err)
		}
		return s, func() { s.Close() }, nil
	case "postgres":
		if len(o.postgresDSNs) == 0 {
			return nil, nil, errors.New("--store postgres needs --postgres-dsn")
		}
		return openParts(ctx, o.postgresDSNs, func(dsn string) (store.TokenStore, func(), error) {
			s, err := postgres.Open(openCtx, dsn, postgres.Config{Schema: o.postgresSchema, AllowUnsafe: o.allowUnsafe, Logger: log})
			if err != nil {
				return nil, nil, storeError("postgres", err, errors.Is(err, postgres.ErrUnsafeServer))
			}
			return s, func() { s.Close() }, nil
		})
	case "etcd":
		if len(o.etcdEndpoints) == 0 {
			return nil, nil, errors.New("--store etcd needs --etcd-endpoints")
		}
		s, err := etcd.Open(openCtx, etcd.Config{Endpoints: o.etcdEndpoints, Prefix: o.etcdPrefix, Logger: log})
		if err != nil {
			return nil, nil, storeError("etcd", err, false)
		}
		return s, func() { s.Close() }, nil
	case "redis":
		if len(o.redisURLs) == 0 {
			return nil, nil, errors.New("--store redis needs --redis-url")
		}
		return openParts(ctx, o.redisURLs, func(url string) (store.TokenStore, func(), error) {
			s, err := batonredis.Open(openCtx, batonredis.Config{URL: url, AllowUnsafeDurability: o.allowUnsafe,
				AllowAsyncReplication: o.allowAsyncReplication, Logger: log})
			if err != nil {
				return nil, nil, storeError("redis", err, errors.Is(err, batonredis.ErrUnsafeDurability))
			}
			return s, func() { s.Close() }, nil
		})
	}
	return nil, nil, fmt.Errorf("--store %q: want embedded, postgres, redis or etcd", o.store)
}

// openParts opens one store per address, and with several, a store split
// by conversation over them in the order given.
func openParts(ctx context.Context, addrs []string, open func(string) (store.TokenStore, func(), error)) (store.TokenStore, func(), error) {
	var parts []store.TokenStore
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	for _, addr := range addrs {
		s, closeStore, err := open(addr)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		parts, closers = append(parts, s), append(closers, closeStore)
	}
	if len(parts) == 1 {
		return parts[0], closeAll, nil
	}
	s, err := split.Open(ctx, parts...)
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("split token store over %d parts: %v", len(parts), err)
	}
	return s, closeAll, nil
}

// storeError reports a store that could not be opened on one line (pgx
// lists each address it tried on a line of its own), in terms of the
// command's flags, with a hint for a server that is not durable.
func storeError(kind string, err error, unsafe bool) error {
	msg := strings.Join(strings.Fields(withFlagNames(err).Error()), " ")
	if unsafe && !strings.Contains(msg, "--allow-unsafe-durability") {
		msg += " (--allow-unsafe-durability accepts it, for tests only)"
	}
	return fmt.Errorf("open %s token store: %s", kind, msg)
}

// configFlags rewrites the config fields that the stores' and brokers'
// errors name (they speak to Go callers) as the flags that set them. The
// phrases come first, so that their advice reads as a command line's; the
// bare names after them catch any other wording.
var configFlags = strings.NewReplacer(
	"Config.MonitorURL is not set", "--nats-monitor is not given",
	"and Config.MonitorURL to its monitoring address (http_port) so that New can see it",
	"and pass its monitoring address (http_port) as --nats-monitor so that baton can check it",
	"set postgres.Config.AllowUnsafe", "pass --allow-unsafe-durability",
	"set Config.AllowUnsafeDurability", "pass --allow-unsafe-durability",
	"set Config.AllowUnsafe", "pass --allow-unsafe-durability",
	"set Config.AllowAsyncReplication", "pass --allow-async-replication",
	"postgres.Config.AllowUnsafe", "--allow-unsafe-durability",
	"Config.MonitorURL", "--nats-monitor",
	"Config.AllowUnsafeDurability", "--allow-unsafe-durability",
	"Config.AllowUnsafe", "--allow-unsafe-durability",
	"Config.AllowAsyncReplication", "--allow-async-replication",
)

// flagError is an error of a library, reworded for the command line; it
// still matches what the library's error matches (errors.Is).
type flagError struct {
	msg string
	err error
}

func (e flagError) Error() string { return e.msg }
func (e flagError) Unwrap() error { return e.err }

// flagNamesHandler writes the libraries' log records with the config
// fields they name replaced by the flags that set them (configFlags), as
// withFlagNames does for their errors.
type flagNamesHandler struct{ slog.Handler }

func (h flagNamesHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, configFlags.Replace(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Value.Kind() == slog.KindString {
			a.Value = slog.StringValue(configFlags.Replace(a.Value.String()))
		}
		out.AddAttrs(a)
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h flagNamesHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return flagNamesHandler{h.Handler.WithAttrs(attrs)}
}

func (h flagNamesHandler) WithGroup(name string) slog.Handler {
	return flagNamesHandler{h.Handler.WithGroup(name)}
}

// withFlagNames returns err with the config fields it names replaced by
// the flags that set them (configFlags): those of a server refused as not
// durable (postgres.ErrUnsafeServer, redis.ErrUnsafeDurability,
// nats.ErrUnsafeDurability) or as replicating asynchronously
// (redis.ErrAsyncReplication).
func withFlagNames(err error) error {
	if err == nil {
		return nil
	}
	msg := configFlags.Replace(err.Error())
	if msg == err.Error() {
		return err
	}
	return flagError{msg: msg, err: err}
}

func newKeygenCommand() *cobra.Command {
	var (
		entry        tokenservice.System
		destinations []string
	)
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Print a new API key for a system and its entry for the systems file",
		Long: `keygen prints a new random API key (256 bits) and the entry to add to the
systems file. The entry holds only the key's SHA-256: the service never stores
the key, so give it to the system now; it cannot be shown again.`,
		Example: "  baton serve keygen --system billing\n  baton serve keygen --system shop --issue-roots --root-destination shop",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if entry.Name == "" {
				return errors.New("--system NAME is required")
			}
			if err := checkName("--system", "system name", entry.Name); err != nil {
				return err
			}
			for _, d := range destinations {
				if d != tokenservice.AnyDestination {
					if err := checkName("--destination", "destination", d); err != nil {
						return err
					}
				}
			}
			for _, d := range entry.RootDestinations {
				if d != tokenservice.AnyDestination {
					if err := checkName("--root-destination", "destination", d); err != nil {
						return err
					}
				}
			}
			key, hash := tokenservice.NewAPIKey()
			entry.KeySHA256 = hash
			entry.Destinations = destinations
			if _, err := tokenservice.ParseSystem(mustJSON(entry)); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "# API key for system %q: give it to that system now and keep it secret; it is not stored anywhere.\n", entry.Name)
			fmt.Fprintln(out, key)
			fmt.Fprintln(out, "# Entry for the systems file (--systems) or BATON_SYSTEM; it holds only the key's SHA-256:")
			fmt.Fprintln(out, string(mustJSON(entry)))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&entry.Name, "system", "", "name of the system (required)")
	f.StringSliceVar(&destinations, "destination", nil, "destinations it may consume (default: its own name; * for all)")
	f.BoolVar(&entry.IssueRoots, "issue-roots", false, "it may issue root tokens")
	f.StringSliceVar(&entry.RootDestinations, "root-destination", nil, "with --issue-roots, a destination it may issue roots for (default: any; list them)")
	f.BoolVar(&entry.Observe, "observe", false, "it may read and list every token")
	f.BoolVar(&entry.ExpireRoots, "expire-roots", false, "it may delete expired root tokens")
	f.BoolVar(&entry.Operate, "operate", false, "it may replay and discard parked signals on the dashboard (an operator)")
	return cmd
}

// checkName refuses a name that the token service refuses for a system or
// a destination (it checks them as a signal's destination), in one line
// that says what a name may be.
func checkName(flag, what, name string) error {
	if baton.ValidateName(what, name) != nil {
		return fmt.Errorf("%s %q: invalid %s: a name has 1 to %d bytes of UTF-8 and no space, control character or U+FFFD, such as billing or order-service",
			flag, name, what, baton.MaxNameBytes)
	}
	return nil
}

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return data
}
