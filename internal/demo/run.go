package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/embedded"
	"github.com/batonhq/baton/conversation"
	"github.com/batonhq/baton/dashboard"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
	natstransport "github.com/batonhq/baton/transport/nats"
)

// SystemEnv is the environment variable that carries a system's
// SystemConfig, as JSON, from the demo to the system's process (so its API
// key never shows in a process listing).
const SystemEnv = "BATON_DEMO_SYSTEM"

// Options configure a demo run.
type Options struct {
	Orders      int     // orders the simulated people place; default 50
	Concurrency int     // people placing orders at once; default 8
	Rate        float64 // orders per second at most; 0: as fast as the shop takes them
	// Chaos faults. DoubleClickRate is the share of orders submitted twice
	// at once; KillEvery is how often a random system is killed with
	// SIGKILL and restarted (0: never).
	Chaos           Chaos
	DoubleClickRate float64
	KillEvery       time.Duration
	Addr            string        // token service and dashboard; default DefaultAddr
	DataDir         string        // default: a fresh temporary directory, removed at the end
	Timeout         time.Duration // for all orders to finish; default 2m
	Seed            uint64
	Progress        io.Writer // one line per milestone; nil discards
	Logger          *slog.Logger
	// Command returns the command that runs one system; the demo adds
	// SystemEnv to its environment. Required.
	Command func() *exec.Cmd
	// Ready, if set, is called once the dashboard and the shop serve.
	Ready func(dashboardURL, shopURL string)
	// Linger keeps the dashboard and the systems running after the report
	// (without chaos) until ctx ends, so a person can look and place
	// orders by hand. OnReport receives the report before that.
	Linger   bool
	OnReport func(Report)
}

// DefaultAddr is the demo's documented port, chosen to stay clear of the
// well-known ports of PostgreSQL, Redis, RabbitMQ and NATS.
const DefaultAddr = "127.0.0.1:7450"

var roles = []string{Shop, Billing, Warehouse}

// inspector is the token service's read-only system, whose key the demo
// prints for `baton tokens`.
const inspector = "inspector"

// demo is the state of one run of the parent process.
type demo struct {
	opts        Options
	log         *slog.Logger
	dataDir     string
	tokens      *embedded.Store
	recorder    *conversation.Recorder
	tsURL       string
	natsURL     string
	natsMonitor string // SystemConfig.NATSMonitor
	systems     map[string]*child
	listeners   map[string]*net.TCPListener // each system's socket, kept across restarts

	tokenCounts  tokenCounts // counted at the token service: exact
	doubleClicks atomic.Int64
	kills        atomic.Int64
	statusMu     sync.Mutex
	statuses     map[int]Status // latest report of every process, by pid
	roots        sync.Map       // conversation id string -> struct{}
	placed       atomic.Int64
	final        atomic.Pointer[Report] // the verified report, once the run is over
}

func (o *Options) setDefaults() error {
	if o.Orders <= 0 {
		o.Orders = 50
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Command == nil {
		return errors.New("demo: Options.Command is required")
	}
	for _, r := range []float64{o.Chaos.DuplicateRate, o.Chaos.LostResponseRate, o.DoubleClickRate} {
		if r < 0 || r > 1 {
			return fmt.Errorf("demo: rates must be between 0 and 1, got %v", r)
		}
	}
	return nil
}

// Run runs the demo: it starts the infrastructure and the three systems,
// places the orders under chaos, waits until every order is finished, stops
// the systems and verifies the result from their stores. It returns the
// report; Report.OK says whether every invariant held.
func Run(ctx context.Context, opts Options) (Report, error) {
	if err := opts.setDefaults(); err != nil {
		return Report{}, err
	}
	d := &demo{opts: opts, log: opts.Logger, systems: map[string]*child{}, statuses: map[int]Status{}}
	started := time.Now()
	cleanup, err := d.prepareDataDir()
	if err != nil {
		return Report{}, err
	}
	defer cleanup()

	if d.tokens, err = embedded.Open(filepath.Join(d.dataDir, "tokens.db"), embedded.Config{Logger: d.log}); err != nil {
		return Report{}, err
	}
	defer d.tokens.Close()
	if live, err := d.liveTokens(ctx); err == nil { // tokens left in a reused --data directory
		d.tokenCounts.live.Store(int64(live))
	}
	broker, err := natstransport.StartEmbedded(natstransport.EmbeddedConfig{DataDir: filepath.Join(d.dataDir, "nats"), Listen: true})
	if err != nil {
		return Report{}, err
	}
	defer broker.Shutdown()
	d.natsURL, d.natsMonitor = broker.ClientURL(), broker.MonitorURL()

	keys, handler, err := d.services()
	if err != nil {
		return Report{}, err
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return Report{}, fmt.Errorf("demo: listen on %s: %w (choose another with --addr, or 127.0.0.1:0 for any free port)", opts.Addr, err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	d.tsURL = "http://" + ln.Addr().String()

	runCtx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	defer d.closeListeners() // after the systems stop (deferred below)
	if err := d.startSystems(runCtx, keys, opts.Chaos); err != nil {
		return Report{}, err
	}
	defer d.stopSystems()
	fmt.Fprintf(opts.Progress, "dashboard  %s\nshop       %s\nseed       %d\n", d.tsURL, d.systems[Shop].url, opts.Seed)
	fmt.Fprintf(opts.Progress, "inspect    BATON_SERVER=%s BATON_API_KEY=%s baton tokens list --destination shop\n"+
		"           (a read-only key of this run; baton conversations list needs only BATON_SERVER)\n", d.tsURL, keys[inspector])
	if opts.Ready != nil {
		opts.Ready(d.tsURL, d.systems[Shop].url)
	}

	var background sync.WaitGroup
	background.Go(func() { d.sample(runCtx) })
	killCtx, stopKilling := context.WithCancel(runCtx)
	if opts.KillEvery > 0 {
		background.Go(func() { d.killAtRandom(killCtx) })
	}
	deadline, cancelDeadline := context.WithTimeout(runCtx, opts.Timeout)
	defer cancelDeadline()
	loadErr := d.placeOrders(deadline)
	quiet := d.waitQuiet(deadline)
	stopKilling()
	if quiet == nil {
		quiet = d.waitQuiet(deadline) // a kill may have struck at the end
	}
	if quiet == nil {
		fmt.Fprintln(opts.Progress, "all orders finished: no live tokens, no outbox entries; verifying the systems' stores")
	}
	// Interrupted (Ctrl-C, SIGTERM): what did not finish is no violation,
	// but what happened is still checked for steps applied twice.
	interrupted := ctx.Err() != nil
	if interrupted {
		fmt.Fprintln(opts.Progress, "interrupted: stopping the systems and checking what they did so far")
	}
	d.pollStatuses(context.WithoutCancel(ctx))
	stopAll()
	background.Wait()
	d.stopSystems()

	report := d.verify(started, interrupted)
	switch {
	case interrupted:
		report.Interrupted = true
		report.DataDir = opts.DataDir
	default:
		if loadErr != nil {
			report.Violations = append(report.Violations, "placing orders: "+loadErr.Error())
		}
		if quiet != nil {
			report.Violations = append(report.Violations, quiet.Error())
		}
	}
	report.OK = len(report.Violations) == 0
	report.Counters = d.counters()
	d.final.Store(&report)
	if opts.OnReport != nil {
		opts.OnReport(report)
	}
	if opts.Linger && ctx.Err() == nil {
		if err := d.startSystems(ctx, keys, Chaos{}); err != nil {
			d.stopSystems()
			if ctx.Err() != nil {
				return report, nil // stopped while starting to linger
			}
			return report, err
		}
		fmt.Fprintf(opts.Progress, "\nstill serving: dashboard %s, shop %s (Ctrl-C to stop)\n", d.tsURL, d.systems[Shop].url)
		background.Go(func() { d.sample(ctx) })
		<-ctx.Done()
		d.stopSystems()
		background.Wait()
	}
	return report, nil
}

func (d *demo) prepareDataDir() (func(), error) {
	if d.opts.DataDir != "" {
		d.dataDir = d.opts.DataDir
		return func() {}, os.MkdirAll(d.dataDir, 0o755)
	}
	dir, err := os.MkdirTemp("", "baton-demo-")
	if err != nil {
		return nil, err
	}
	d.dataDir = dir
	return func() { os.RemoveAll(dir) }, nil
}

// services builds the token service (every system has its own key and may
// consume only its own tokens) and the dashboard, on one handler.
func (d *demo) services() (map[string]string, http.Handler, error) {
	d.recorder = conversation.NewRecorder(0)
	keys := map[string]string{}
	var systems []tokenservice.System
	for _, role := range roles {
		key, hash := tokenservice.NewAPIKey()
		keys[role] = key
		systems = append(systems, tokenservice.System{Name: role, KeySHA256: hash, IssueRoots: role == Shop, ExpireRoots: true})
	}
	// A key that may only read, for a person with `baton tokens`; it dies
	// with the run.
	key, hash := tokenservice.NewAPIKey()
	keys[inspector] = key
	systems = append(systems, tokenservice.System{Name: inspector, KeySHA256: hash, Observe: true})
	api, err := tokenservice.New(tokenservice.Config{
		Tokens:  conversation.RecordTokens(&countingTokens{TokenStore: d.tokens, counts: &d.tokenCounts}, d.recorder, nil),
		Systems: systems,
		Logger:  d.log,
	})
	if err != nil {
		return nil, nil, err
	}
	board, err := dashboard.New(dashboard.Config{
		Recorder:     d.recorder,
		Tokens:       d.tokens,
		Destinations: func() []string { return roles },
		Stats:        d.counters,
		Report:       func() any { return d.liveReport() },
		Logger:       d.log,
	})
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", api)
	mux.Handle("/", board)
	// The dashboard needs no credentials because it listens on this
	// machine; the Host check keeps a web page that DNS rebinding points
	// here from reading it.
	var names []string
	if host, _, err := net.SplitHostPort(d.opts.Addr); err == nil && host != "" {
		names = append(names, host)
	}
	return keys, tokenservice.CheckHost(names)(mux), nil
}

// sample records the peak number of live tokens, and the systems' counters.
func (d *demo) sample(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if live, err := d.liveTokens(ctx); err == nil {
			raisePeak(&d.tokenCounts.peak, int64(live))
		}
		if n++; n%3 == 0 {
			d.pollStatuses(ctx)
		}
	}
}

// liveTokens counts the live tokens of every destination.
func (d *demo) liveTokens(ctx context.Context) (int, error) {
	total := 0
	for _, role := range roles {
		n, err := store.CountByDestination(ctx, d.tokens, role, 0)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// unfinished counts the live tokens of signals that were sent, and apart
// from them the roots of order forms that no person submitted: a form
// whose page never reached its person (the shop was killed after
// rendering it) is loaded again with a new token, and the first one stays
// unused until it expires (formTTL). Expiry only ever rejects, so an
// unused root is no unfinished work; a live root of a submitted form is.
func (d *demo) unfinished(ctx context.Context) (live, unusedForms int, err error) {
	for _, role := range roles {
		for page := (store.Page{}); ; {
			toks, err := d.tokens.ListByDestination(ctx, role, page)
			if err != nil {
				return 0, 0, err
			}
			for _, t := range toks {
				if d.unusedForm(t) {
					unusedForms++
				} else {
					live++
				}
			}
			if len(toks) < page.Size() {
				break
			}
			page.After = toks[len(toks)-1].ID
		}
	}
	return live, unusedForms, nil
}

// unusedForm reports whether t is the root of a form no person got.
func (d *demo) unusedForm(t baton.Token) bool {
	_, got := d.roots.Load(t.Conversation.String())
	return t.Root() && !got
}

// describeLive names up to limit live tokens, for a report that says
// which signal did not finish.
func (d *demo) describeLive(ctx context.Context, limit int) string {
	var parts []string
	for _, role := range roles {
		toks, err := d.tokens.ListByDestination(ctx, role, store.Page{Limit: limit})
		if err != nil {
			return err.Error()
		}
		for _, t := range toks {
			if d.unusedForm(t) {
				continue
			}
			kind := "child of " + t.Causation.String()
			if t.Root() {
				kind = "root"
			}
			parts = append(parts, fmt.Sprintf("%s for %s (%s, %s, conversation %s, created %s)",
				t.ID, t.Destination, t.Type, kind, t.Conversation, t.CreatedAt.Format("15:04:05.000")))
		}
	}
	return strings.Join(parts[:min(len(parts), limit)], "; ")
}

func (d *demo) pollStatuses(ctx context.Context) {
	for _, c := range d.systems {
		d.pollStatus(ctx, c)
	}
}

// pollStatus keeps the latest counters of c's current process.
func (d *demo) pollStatus(ctx context.Context, c *child) {
	st, err := c.status(ctx)
	if err != nil {
		return // killed or restarting
	}
	d.statusMu.Lock()
	d.statuses[st.PID] = st
	d.statusMu.Unlock()
}

// totals sums the last report of every process that ever ran: a killed
// process's counters up to its last report survive it.
func (d *demo) totals() (stats engine.Stats, duplicates, lost int64) {
	d.statusMu.Lock()
	defer d.statusMu.Unlock()
	for _, st := range d.statuses {
		stats = stats.Plus(st.Stats)
		duplicates += st.DuplicatesInjected
		lost += st.LostResponsesInject
	}
	return stats, duplicates, lost
}

// counters are the dashboard's numbers. What the token service sees is
// counted at the token service, in this process, which chaos never kills:
// roots issued, transitions (one per applied activity), transitions that
// found their token consumed, duplicates dropped (reads of a consumed
// token) and expired roots, exactly. The rest the systems count
// themselves; each process is asked for its counters just before chaos
// kills it, so a kill loses only what it counted in between. The final
// report holds them as they were when the run was verified.
func (d *demo) counters() map[string]int64 {
	stats, duplicates, lost := d.totals()
	c := stats.Counters()
	c["chaos.duplicates_injected"] = duplicates
	c["chaos.lost_responses"] = lost
	c["chaos.double_clicks"] = d.doubleClicks.Load()
	c["chaos.crashes"] = d.kills.Load()
	c["orders.placed"] = d.placed.Load()
	c["tokens.peak_live"] = d.tokenCounts.peak.Load()
	c["roots.issued"] = d.tokenCounts.roots.Load()
	c["roots.expired"] = d.tokenCounts.expired.Load()
	c["transitions"] = d.tokenCounts.transitions.Load()
	c["activities.applied"] = d.tokenCounts.transitions.Load()
	c["transitions.already_done"] = d.tokenCounts.alreadyDone.Load()
	c["duplicates.dropped"] = d.tokenCounts.duplicates.Load()
	return c
}

// killAtRandom kills a random system with SIGKILL every KillEvery and
// starts it again at once, as a crashing container would be restarted.
func (d *demo) killAtRandom(ctx context.Context) {
	rng := rand.New(rand.NewPCG(d.opts.Seed, 0x6b696c6c))
	for {
		// The pause starts when the last restart finished, so a system
		// always gets time to work between kills.
		select {
		case <-ctx.Done():
			return
		case <-time.After(d.opts.KillEvery):
		}
		c := d.systems[roles[rng.IntN(len(roles))]]
		d.pollStatus(ctx, c) // its counters up to now survive it
		if err := c.kill(); err != nil {
			d.log.Warn("kill", "system", c.role, "err", err)
			continue
		}
		d.kills.Add(1)
		fmt.Fprintf(d.opts.Progress, "chaos: killed %s (SIGKILL), restarting\n", c.role)
		if err := c.start(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("restart", "system", c.role, "err", err)
		}
	}
}

// waitQuiet waits until no token is live and no system holds an outbox
// entry, for two checks in a row.
func (d *demo) waitQuiet(ctx context.Context) error {
	calm := 0
	for calm < 2 {
		select {
		case <-ctx.Done():
			live, _, _ := d.unfinished(context.Background())
			return fmt.Errorf("not finished within %s: %d tokens still live", d.opts.Timeout, live)
		case <-time.After(250 * time.Millisecond):
		}
		live, _, err := d.unfinished(ctx)
		if err != nil || live > 0 || d.pendingOutboxes(ctx) {
			calm = 0
			continue
		}
		calm++
	}
	return nil
}

func (d *demo) pendingOutboxes(ctx context.Context) bool {
	for _, c := range d.systems {
		st, err := c.status(ctx)
		if err != nil || st.OutboxPending {
			return true
		}
	}
	return false
}

// liveReport is the dashboard's report: the verified one once the run is
// over, and until then what is known so far, marked as running and not
// (yet) OK.
func (d *demo) liveReport() Report {
	if final := d.final.Load(); final != nil {
		return *final
	}
	r := d.partialReport()
	r.Running = true
	return r
}

func decodeStatus(r io.Reader) (Status, error) {
	var st Status
	err := json.NewDecoder(io.LimitReader(r, 1<<20)).Decode(&st)
	return st, err
}
