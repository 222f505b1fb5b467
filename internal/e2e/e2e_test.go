package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/testenv/etcdcluster"
	"github.com/batonhq/baton/store"
)

// The binaries are built once per test run, on first use, so that a run
// that skips every test (no services configured) does not build them.
var (
	binDir      string
	buildBin    = sync.OnceValues(func() (string, error) { return goBuild("github.com/batonhq/baton/internal/e2e/worker", "worker") })
	buildOrders = sync.OnceValues(func() (string, error) { return goBuild("github.com/batonhq/baton/examples/orders", "orders") })
)

// goBuild builds the command pkg into binDir/name.
func goBuild(pkg, name string) (string, error) {
	bin := filepath.Join(binDir, name)
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, "build", "-o", bin, pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", name, err, out)
	}
	return bin, nil
}

func TestMain(m *testing.M) {
	etcdcluster.MemberMain() // a member of a row's etcd cluster runs in a process of this binary
	dir, err := os.MkdirTemp("", "baton-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proxiedDSN returns the MySQL DSN with its address replaced by the one
// that proxy returns for it.
func proxiedDSN(t *testing.T, dsn string, proxy func(addr string) string) string {
	t.Helper()
	cfg, err := mysqldriver.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("mysql DSN: %v", err)
	}
	cfg.Addr = proxy(cfg.Addr)
	return cfg.FormatDSN()
}

func workerBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildBin()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// row is one combination of backends, and the engine processes that run
// it. Every process serving a destination must share that destination's
// entity store, and an embedded store is one process's file: so rows with
// embedded entities give each destination to exactly one process (with
// its own file), and embedded tokens mean a single process.
type row struct {
	name      string
	tokens    string // postgres, mysql, redis, etcd (a cluster of three whose leader is killed and cut off) or embedded
	entities  string // postgres, mysql or embedded
	transport string // nats or rabbitmq
	procs     []proc
	// deferRemovals runs the engines with Config.DeferRemovals: acks
	// before the outbox entry goes, which a SIGKILL then leaves to the
	// sweeper.
	deferRemovals bool
	// batch is engine.Config.Batch: workers take up to this many
	// deliveries together. Such a row runs one worker per destination in
	// each process, so that deliveries wait for it and batches form.
	batch int
	// redisParts splits Redis tokens by conversation over this many
	// stores (backend/split; prefixes of RedisPartPrefixes).
	redisParts int
}

type proc struct {
	serve []string
	file  string // embedded store file of this process, if any
}

var all = Destinations

// plan is how hard a run is pushed.
type plan struct {
	conversations int
	publishOver   time.Duration // roots are published evenly over this time
	killEvery     [2]time.Duration
	faults        bool
	kills         bool
	broken        string // worker -broken mode
	quietTimeout  time.Duration
}

var chaos = plan{
	conversations: 50,
	publishOver:   10 * time.Second,
	killEvery:     [2]time.Duration{1200 * time.Millisecond, 2500 * time.Millisecond},
	faults:        true,
	kills:         true,
	quietTimeout:  90 * time.Second,
}

// TestExactlyOnceMatrix runs the workload on every backend and both brokers
// with workers killed by SIGKILL and network faults through toxiproxy, and
// checks the ledger: every activity applied exactly once, no token and no
// outbox entry left. The rows run one after another (not in parallel): each
// starts several processes, and the machine has two cores.
func TestExactlyOnceMatrix(t *testing.T) {
	rows := []row{
		{name: "pg-tokens+pg-entities/nats/3-procs/deferred-removals/batches", tokens: "postgres", entities: "postgres", transport: "nats", deferRemovals: true, batch: 8,
			procs: []proc{{serve: all}, {serve: []string{Order, Billing, Stock}}, {serve: []string{Billing, Stock, Shipping}}}},
		{name: "redis-tokens+pg-entities/rabbitmq/3-procs/batches", tokens: "redis", entities: "postgres", transport: "rabbitmq", batch: 8,
			procs: []proc{{serve: all}, {serve: []string{Order, Billing, Shipping}}, {serve: []string{Order, Stock, Shipping}}}},
		{name: "embedded-tokens+entities/nats/1-proc/deferred-removals/batches", tokens: "embedded", entities: "embedded", transport: "nats", deferRemovals: true, batch: 8,
			procs: []proc{{serve: all, file: "all.db"}}},
		{name: "pg-tokens+embedded-entities/nats/4-procs/batches", tokens: "postgres", entities: "embedded", transport: "nats", batch: 8,
			procs: []proc{{serve: []string{Order}, file: "order.db"}, {serve: []string{Billing}, file: "billing.db"},
				{serve: []string{Stock}, file: "stock.db"}, {serve: []string{Shipping}, file: "shipping.db"}}},
		{name: "mysql-tokens+mysql-entities/nats/3-procs/deferred-removals/batches", tokens: "mysql", entities: "mysql", transport: "nats", deferRemovals: true, batch: 8,
			procs: []proc{{serve: all}, {serve: []string{Order, Billing, Stock}}, {serve: []string{Billing, Stock, Shipping}}}},
		{name: "etcd-tokens+pg-entities/nats/3-procs/leader-kills/batches", tokens: "etcd", entities: "postgres", transport: "nats", batch: 8,
			procs: []proc{{serve: all}, {serve: []string{Order, Billing, Stock}}, {serve: []string{Billing, Stock, Shipping}}}},
		{name: "split-redis-tokens+pg-entities/nats/3-procs/batches", tokens: "redis", redisParts: 3, entities: "postgres", transport: "nats", batch: 8,
			procs: []proc{{serve: all}, {serve: []string{Order, Billing, Stock}}, {serve: []string{Billing, Stock, Shipping}}}},
		{name: "mysql-tokens+pg-entities/rabbitmq/2-procs/batches", tokens: "mysql", entities: "postgres", transport: "rabbitmq", batch: 8,
			procs: []proc{{serve: all}, {serve: []string{Order, Billing, Stock, Shipping}}}},
		{name: "redis-tokens+embedded-entities/rabbitmq/2-procs", tokens: "redis", entities: "embedded", transport: "rabbitmq",
			procs: []proc{{serve: []string{Order, Billing}, file: "a.db"}, {serve: []string{Stock, Shipping}, file: "b.db"}}},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			if report := runRow(t, r, chaos); !report.OK() {
				t.Errorf("exactly-once violated:\n%s", report)
			}
		})
	}
}

// validate refuses a row whose processes could not share its stores.
func (r row) validate() error {
	served := map[string]int{}
	for _, pr := range r.procs {
		if r.tokens == "embedded" || r.entities == "embedded" {
			if pr.file == "" {
				return fmt.Errorf("a process with an embedded store needs its own file")
			}
		}
		for _, d := range pr.serve {
			served[d]++
		}
	}
	for _, d := range Destinations {
		switch {
		case served[d] == 0:
			return fmt.Errorf("no process serves %s", d)
		case served[d] > 1 && r.entities == "embedded":
			return fmt.Errorf("%s is served by %d processes, but its entities are in one process's embedded file", d, served[d])
		}
	}
	if r.tokens == "embedded" && (len(r.procs) != 1 || r.entities != "embedded") {
		return fmt.Errorf("embedded tokens are one process's file: one process, with its entities in the same file")
	}
	return nil
}

// runRow runs the workload on r's backends as p says, prints what it did,
// and returns the ledger check of the stores after the workers stopped.
func runRow(t *testing.T, r row, p plan) Report {
	if err := r.validate(); err != nil {
		t.Fatalf("row %s: %v", r.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := newNamespace()
	svc := connect(t, ctx, r, ns)
	bin := workerBinary(t)
	started := time.Now()
	dir := t.TempDir()

	// Conversations and their root signals.
	roots := make([]baton.Signal, p.conversations)
	amounts := map[baton.TokenID]int{}
	for i := range roots {
		id := baton.NewTokenID()
		amounts[id] = 1 + rand.IntN(100)
		roots[i] = RootSignal(id, amounts[id])
	}
	conversations := make([]baton.TokenID, len(roots))
	for i, sig := range roots {
		conversations[i] = sig.Conversation
	}
	keys := KeysOf(conversations)

	// An embedded token store belongs to the one worker process: issue
	// every root token before it starts. Shared token stores get each root
	// token just before its signal is first published.
	if r.tokens == "embedded" {
		fs := openFile(t, filepath.Join(dir, r.procs[0].file))
		for i, sig := range roots {
			var err error
			if roots[i], err = issue(ctx, fs, sig); err != nil {
				t.Fatal(err)
			}
		}
		fs.Close()
	}

	// Toxiproxy between the workers and every service they use over TCP.
	f := newFaults(t)
	proxied := map[string]string{}
	for name, addr := range map[string]string{"postgres": svc.pgURL, "redis": svc.redisURL, "nats": svc.natsURL, "rabbitmq": svc.amqpURL} {
		if addr != "" && (name != "rabbitmq" || rabbitMQProxied) {
			proxied[name] = f.proxy(t, name, addr)
		} else if addr != "" {
			proxied[name] = addr
		}
	}
	if svc.mysqlDSN != "" {
		proxied["mysql"] = proxiedDSN(t, svc.mysqlDSN, func(addr string) string { return f.proxy(t, "mysql", addr) })
	}
	if svc.etcdCluster != nil {
		var endpoints []string
		for i, e := range svc.etcdCluster.Endpoints() {
			endpoints = append(endpoints, f.proxy(t, fmt.Sprintf("etcd%d", i), e))
		}
		proxied["etcd"] = strings.Join(endpoints, ",")
	}

	// Start the workers.
	slots := make([]*workerSlot, len(r.procs))
	for i, pr := range r.procs {
		args := []string{"-tokens", r.tokens, "-entities", r.entities, "-transport", r.transport,
			"-serve", strings.Join(pr.serve, ","), "-sweep-after", "1s", "-sweep-interval", "500ms", "-broken", p.broken,
			fmt.Sprintf("-defer-removals=%t", r.deferRemovals), fmt.Sprintf("-batch=%d", r.batch)}
		if r.batch > 1 {
			args = append(args, "-workers=1")
		}
		if pr.file != "" {
			args = append(args, "-file", filepath.Join(dir, pr.file))
		}
		if u := proxied["postgres"]; u != "" {
			args = append(args, "-postgres", u, "-pg-schema", ns.pgSchema)
		}
		if u := proxied["mysql"]; u != "" {
			args = append(args, "-mysql", u, "-mysql-prefix", ns.mysqlPrefix)
		}
		if u := proxied["redis"]; u != "" {
			args = append(args, "-redis", u, "-redis-prefix", ns.redisPrefix, fmt.Sprintf("-redis-parts=%d", max(r.redisParts, 1)))
		}
		if u := proxied["etcd"]; u != "" {
			args = append(args, "-etcd", u, "-etcd-prefix", ns.etcdPrefix)
		}
		if u := proxied["nats"]; u != "" {
			args = append(args, "-nats", u, "-nats-stream", ns.natsStream, "-nats-prefix", ns.natsPrefix,
				"-nats-dup-window", natsDuplicateWindow.String(), "-ack-wait", "3s")
		}
		if u := proxied["rabbitmq"]; u != "" {
			args = append(args, "-rabbitmq", u, "-rabbitmq-prefix", ns.amqpPrefix, "-ack-wait", "10s")
		}
		slots[i] = startSlot(t, fmt.Sprintf("worker%d[%s]", i+1, strings.Join(pr.serve, ",")), bin, args)
	}
	stopAll := sync.OnceFunc(func() {
		var wg sync.WaitGroup
		for _, s := range slots {
			wg.Go(func() { s.stop(20 * time.Second) })
		}
		wg.Wait()
	})
	t.Cleanup(stopAll)
	waitAllReady(t, ctx, slots, 60*time.Second)

	// Where the test reads entities and tokens while the workers run:
	// shared stores directly, embedded ones through their worker.
	live := readJobs(r, svc, keys, func(i int) reader { return workerReader{slots[i]} })

	// Chaos: publish every root twice (the copies apart in time), kill
	// workers and inject network faults, all at random moments.
	chaosCtx, stopChaos := context.WithCancel(ctx)
	var background sync.WaitGroup
	if p.kills {
		background.Go(func() { killLoop(chaosCtx, slots, p.killEvery) })
	}
	if p.faults {
		background.Go(func() { f.run(chaosCtx, t, 2) })
	}
	var etcdChaos etcdcluster.ChaosLog
	if svc.etcdCluster != nil && p.kills {
		background.Go(func() {
			if err := svc.etcdCluster.Chaos(chaosCtx, &etcdChaos); err != nil {
				t.Error(err)
			}
		})
	}
	var duringRun, afterRun atomic.Int64
	var publishers sync.WaitGroup
	// If the test ends early, the chaos goroutines end before the workers
	// are stopped and before the test is over.
	t.Cleanup(func() {
		stopChaos()
		background.Wait()
		publishers.Wait()
	})
	// Roots go out in bursts of the row's batch size, published side by
	// side (one by one without batches), so that batching workers find
	// deliveries to take together.
	burst := max(1, r.batch)
	gap := p.publishOver * time.Duration(burst) / time.Duration(len(roots))
	for start := 0; start < len(roots); start += burst {
		chunk := roots[start:min(start+burst, len(roots))]
		if svc.tokens != nil {
			for i, sig := range chunk {
				var err error
				if chunk[i], err = issue(ctx, svc.tokens, sig); err != nil {
					t.Fatal(err)
				}
			}
		}
		var sent sync.WaitGroup
		for _, sig := range chunk {
			sent.Go(func() {
				if err := publish(ctx, svc.pub, sig); err != nil {
					t.Error(err)
				}
			})
		}
		sent.Wait()
		if t.Failed() {
			t.FailNow()
		}
		for _, sig := range chunk {
			publishers.Go(func() {
				time.Sleep(duplicateGap + time.Duration(rand.IntN(2000))*time.Millisecond)
				if err := publish(ctx, svc.pub, sig); err != nil {
					t.Error(err)
					return
				}
				duringRun.Add(1)
			})
		}
		time.Sleep(gap)
	}
	publishers.Wait()
	time.Sleep(time.Second) // let the last kills and faults land among the last signals
	stopChaos()
	background.Wait()
	chaosEnded := time.Now()

	// Quiescence: every expected activity applied, no live token, no
	// outbox entry.
	waitAllReady(t, ctx, slots, 60*time.Second)
	rootIDs := map[baton.TokenID]baton.TokenID{}
	for _, sig := range roots {
		rootIDs[sig.Conversation] = sig.ID
	}
	report, err := waitQuiet(ctx, live, amounts, rootIDs, p.quietTimeout)
	if err != nil {
		t.Logf("waiting for quiescence: %v", err)
	}
	quietAt := time.Now()

	// A third copy of every root, long after its conversation finished:
	// there is no deduplication window, so it must be dropped too.
	if report.Quiet() {
		for _, sig := range roots {
			if err := publish(ctx, svc.pub, sig); err != nil {
				t.Fatal(err)
			}
			afterRun.Add(1)
		}
		if err := waitDrained(ctx, svc, 30*time.Second); err != nil {
			t.Errorf("late duplicates: %v", err)
		}
	}

	// Stop every worker cleanly, then read the stores directly, embedded
	// files included, for the final check.
	stopAll()
	final := readJobs(r, svc, keys, func(i int) reader {
		fs := openFile(t, filepath.Join(dir, r.procs[i].file))
		t.Cleanup(func() { fs.Close() })
		return storeReader{tokens: tokensIf(r.tokens == "embedded", fs), entities: fs}
	})
	snap, err := snapshot(ctx, final)
	if err != nil {
		t.Fatalf("final snapshot: %v", err)
	}
	residue, err := svc.residue(ctx, keys)
	if err != nil {
		t.Fatalf("final snapshot: %v", err)
	}
	snap.ExtraKeys = residue
	snap.Roots = rootIDs
	report = Check(amounts, snap)

	var sum slotCounts
	for _, s := range slots {
		c := s.counts()
		sum.kills += c.kills
		sum.restarts += c.restarts
		sum.crashes += c.crashes
		sum.failedStarts += c.failedStarts
		sum.stats = sum.stats.Plus(c.stats)
	}
	stats := sum.stats
	faultCount, faultKinds := f.summary()
	t.Logf("RUN %s: conversations=%d activities=%d (expected %d) processes=%d kills=%d restarts=%d failed_starts=%d crashes=%d duplicates_published=%d (%d during, %d after) network_faults=%d [%s] on [%s] | chaos %.1fs, quiet %.1fs later, total %.1fs",
		r.name, len(roots), report.Applied, report.Expected, len(slots), sum.kills, sum.restarts, sum.failedStarts, sum.crashes,
		duringRun.Load()+afterRun.Load(), duringRun.Load(), afterRun.Load(),
		faultCount, faultKinds, f.names(), chaosEnded.Sub(started).Seconds(), quietAt.Sub(chaosEnded).Seconds(), time.Since(started).Seconds())
	t.Logf("RUN %s: engine counters summed over every process life (as last reported before it ended): applied=%d duplicates_dropped=%d conflicts=%d transitions_already_done=%d swept=%d parked=%d dispatch_retries=%d batched=%d in %d batch commits",
		r.name, stats.Applied, stats.Duplicates, stats.Conflicts, stats.TransitionsDone, stats.Swept, stats.Parked, stats.DispatchRetries, stats.Batched, stats.Batches)
	if r.batch > 1 && stats.Batched == 0 {
		// The row would prove nothing about batches.
		t.Errorf("RUN %s: no activity was committed in a batch", r.name)
	}
	t.Logf("RUN %s: ledger check: %s", r.name, report.Summary())
	if svc.etcdCluster != nil {
		t.Logf("RUN %s: the etcd cluster of three members under chaos: %s", r.name, etcdChaos.String())
	}
	if r.tokens == "redis" {
		t.Logf("RUN %s: Redis runs here without appendfsync always (AllowUnsafeDurability): this test kills workers, not Redis; Redis durability itself is proven by backend/redis's own tests", r.name)
	}
	return report
}

func tokensIf(ok bool, s store.TokenStore) store.TokenStore {
	if ok {
		return s
	}
	return nil
}

// readJobs says where to read each part of a snapshot: shared stores
// through svc, embedded files through embeddedReader(process index).
func readJobs(r row, svc *services, keys []string, embeddedReader func(i int) reader) []readJob {
	var jobs []readJob
	if svc.ents != nil {
		jobs = append(jobs, readJob{reader: storeReader{entities: svc.ents}, keys: keys})
	} else {
		for i, pr := range r.procs {
			var dests []string
			if r.tokens == "embedded" {
				dests = all
			}
			jobs = append(jobs, readJob{reader: embeddedReader(i), keys: keysServedBy(pr.serve, keys), destinations: dests})
		}
	}
	if svc.tokens != nil {
		jobs = append(jobs, readJob{reader: storeReader{tokens: svc.tokens}, destinations: all})
	}
	return jobs
}

// keysServedBy returns the keys of the entities that the destinations
// keep.
func keysServedBy(destinations, keys []string) []string {
	prefixes := map[string]string{Order: "order-", Billing: "account-", Stock: "stock-", Shipping: "shipment-"}
	var out []string
	for _, k := range keys {
		for _, d := range destinations {
			if strings.HasPrefix(k, prefixes[d]) {
				out = append(out, k)
			}
		}
	}
	return out
}

func waitAllReady(t *testing.T, ctx context.Context, slots []*workerSlot, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, s := range slots {
		if _, err := s.waitReady(ctx); err != nil {
			t.Fatalf("%v; its log ends:\n%s", err, tail(s.logPath, 20))
		}
	}
}

// killLoop sends SIGKILL to a random worker every so often; the slot
// restarts it.
func killLoop(ctx context.Context, slots []*workerSlot, every [2]time.Duration) {
	for {
		d := every[0] + time.Duration(rand.Int64N(int64(every[1]-every[0])+1))
		if !sleepCtx(ctx, d) {
			return
		}
		for _, i := range rand.Perm(len(slots)) {
			if slots[i].kill() {
				break
			}
		}
	}
}

// waitQuiet polls the snapshot until the ledger check says quiet, and
// returns the last report.
func waitQuiet(ctx context.Context, jobs []readJob, amounts map[baton.TokenID]int, roots map[baton.TokenID]baton.TokenID, timeout time.Duration) (Report, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last Report
	var lastErr error
	for {
		snap, err := snapshot(ctx, jobs)
		if err == nil {
			snap.Roots = roots
			last = Check(amounts, snap)
			if last.Quiet() {
				return last, nil
			}
		} else {
			lastErr = err
		}
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return last, fmt.Errorf("not quiet after %v (last read error: %v): %s", timeout, lastErr, last.Summary())
		}
	}
}

// waitDrained waits until the broker holds no signal: every late duplicate
// was delivered and acknowledged.
func waitDrained(ctx context.Context, svc *services, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		n, err := svc.drain(ctx)
		if err == nil && n == 0 {
			return nil
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return fmt.Errorf("broker still holds %d signals after %v (last error: %v)", n, timeout, err)
		}
	}
}
