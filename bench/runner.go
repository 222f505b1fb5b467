package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton/internal/proccpu"
)

// producers is how many goroutines start conversations at the edge.
func producers(inFlight int) int { return min(inFlight, 16) }

// drainTimeout bounds the wait for the conversations in flight after a
// measurement.
const drainTimeout = time.Minute

// Run runs the comparison, the scaling run unless cfg.NoScaling, and the
// long run if cfg.Long, and returns the report. Every variant gets a fresh
// schema, key prefix and data directory, removed at the end.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	started := time.Now()
	e := &env{cfg: cfg, workload: workload{Orders: cfg.Orders, Accounts: cfg.Accounts}, log: cfg.Logger, runID: newRunID()}
	needPG, needRedis, needRedisServer, needMySQL := cfg.needs()
	if needPG {
		monitor, err := checkPostgres(ctx, cfg.PostgresDSN)
		if err != nil {
			return nil, err
		}
		defer monitor.Close()
		e.monitor = monitor
		if e.vacuum = e.autovacuumOff(ctx); e.vacuum {
			vacuumCtx, stopVacuum := context.WithCancel(ctx)
			defer stopVacuum()
			go e.vacuumLoop(vacuumCtx)
		}
	}
	if needRedis {
		if err := checkRedis(ctx, cfg.RedisURL); err != nil {
			return nil, err
		}
	}
	if needMySQL {
		if err := checkMySQL(ctx, cfg.MySQLDSN); err != nil {
			return nil, err
		}
	}
	tmp := cfg.TempDir
	if tmp == "" {
		var err error
		if tmp, err = os.MkdirTemp("", "baton-bench-"); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		defer os.RemoveAll(tmp)
	}
	e.tmp = tmp
	if needRedisServer {
		srv, err := startRedisServer(ctx, cfg.RedisServer, e.dir("redis"))
		if err != nil {
			return nil, err
		}
		defer srv.stop()
		e.redisServer = srv
	}

	rep := &Report{Started: started, Machine: describeMachine(ctx, e), Settings: settingsOf(cfg)}
	results, err := compare(ctx, e, cfg.Variants)
	if err != nil {
		return nil, err
	}
	rep.Results = results
	if !cfg.NoContention {
		fmt.Fprintf(cfg.Progress, "under contention: charges spread over %d accounts\n", cfg.ContentionAccounts)
		if rep.Contention, err = compare(ctx, e.contended(), cfg.ContentionVariants); err != nil {
			return nil, err
		}
		rep.ContentionAccounts = cfg.ContentionAccounts
	}
	if !cfg.NoScaling {
		if rep.Scaling, err = scale(ctx, e); err != nil {
			return nil, err
		}
	}
	if cfg.Long {
		if rep.Long, err = longRun(ctx, e); err != nil {
			return nil, err
		}
	}
	rep.Elapsed = time.Since(started)
	return rep, nil
}

// running is a variant whose system is open, with what its measurements
// add up to.
type running struct {
	v      Variant
	sys    system
	obs    *observer
	res    Result
	lat    []time.Duration
	cpu    time.Duration
	server time.Duration
	seen   bool    // server processes were seen
	ran    float64 // running time so far, the time axis of samples
}

// compare runs the variants in interleaved rounds and checks each at the
// end.
func compare(ctx context.Context, e *env, variants []string) ([]Result, error) {
	cfg := e.cfg
	var runs []*running
	defer func() {
		for _, r := range runs {
			r.sys.close()
		}
	}()
	for _, name := range variants {
		v, _ := variantByName(name)
		sys, err := v.open(ctx, e, name)
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", name, err)
		}
		runs = append(runs, &running{v: v, sys: sys, obs: newObserver(cfg.InFlight),
			res: Result{Variant: v.Name, Label: v.Label, Note: v.Note}})
	}
	per := cfg.Duration / time.Duration(cfg.Rounds)
	for round := range cfg.Rounds {
		order := slices.Clone(runs)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, r := range order {
			seg, err := runSegment(ctx, e, r.sys, r.obs, cfg.Workers, measure{d: per, signals: int64(cfg.Signals / cfg.Rounds)}, r.ran)
			if err != nil {
				return nil, fmt.Errorf("bench: %s: %w", r.v.Name, err)
			}
			r.add(seg)
			fmt.Fprintf(cfg.Progress, "%-18s round %d/%d  %8.0f signals/s  p50 %-8s p99 %-8s stored max %d\n",
				r.v.Name, round+1, cfg.Rounds, seg.throughput(), roundDur(percentile(seg.lat, 50)),
				roundDur(percentile(seg.lat, 99)), seg.maxStored())
		}
	}
	results := make([]Result, 0, len(runs))
	for _, r := range runs {
		r.finish()
		r.res.Check = check(ctx, e, r.sys, r.obs)
		results = append(results, r.res)
	}
	setRatios(results)
	return results, nil
}

func (r *running) add(s segment) {
	r.res.Signals += s.signals
	r.res.Seconds += s.seconds
	r.lat = append(r.lat, s.lat...)
	r.cpu += s.cpu
	r.server += s.server
	r.seen = r.seen || s.serverSeen
	r.ran += s.ran
	r.res.Samples = append(r.res.Samples, s.samples...)
}

func (r *running) finish() {
	res := &r.res
	slices.Sort(r.lat)
	res.P50, res.P99 = percentile(r.lat, 50), percentile(r.lat, 99)
	if res.Seconds > 0 {
		res.Throughput = float64(res.Signals) / res.Seconds
	}
	if res.Signals > 0 {
		res.CPUPerSignal = r.cpu / time.Duration(res.Signals)
		if r.seen {
			res.ServerCPUPerSignal = r.server / time.Duration(res.Signals)
			res.ServerCPUSeen = true
		}
	}
	c := r.sys.counts()
	res.Conflicts, res.Applied, res.Batched, res.Batches = c.conflicts, c.applied, c.batched, c.batches
	for _, s := range res.Samples {
		res.StoredMax = max(res.StoredMax, s.Stored)
		res.InFlightMax = max(res.InFlightMax, s.InFlight)
	}
	if n := len(res.Samples); n > 0 {
		res.StoredEnd = res.Samples[n-1].Stored
	}
}

// check verifies, once every conversation finished, that each charge was
// applied exactly once (the accounts' counts and totals match the
// conversations started) and that nothing is left over.
func check(ctx context.Context, e *env, sys system, obs *observer) string {
	var charges, total int64
	for a := range e.cfg.Accounts {
		raw, err := sys.state(ctx, accountKey(a))
		if err != nil {
			return "check failed: " + err.Error()
		}
		var st accountState
		if err := unmarshalState(raw, &st); err != nil {
			return "check failed: " + err.Error()
		}
		charges += st.Charges
		total += st.Total
	}
	begun := obs.begun.Load()
	if charges != begun || total != obs.amount.Load() {
		return fmt.Sprintf("MISMATCH: %d charges applied for %d conversations (amount %d, want %d)", charges, begun, total, obs.amount.Load())
	}
	left, err := sys.leftover(ctx)
	if err != nil {
		return "check failed: " + err.Error()
	}
	if left != "" {
		return "LEFTOVER: " + left
	}
	return "ok"
}

// segment is one measured period of one variant.
type segment struct {
	signals    int64
	seconds    float64
	lat        []time.Duration
	cpu        time.Duration
	server     time.Duration
	serverSeen bool
	samples    []sample // over the whole segment, warm-up and drain included
	ran        float64  // seconds from start to stop of the consumers
}

func (s segment) throughput() float64 {
	if s.seconds == 0 {
		return 0
	}
	return float64(s.signals) / s.seconds
}

// maxStored is the most deduplication data stored during the segment.
func (s segment) maxStored() int64 {
	var m int64
	for _, x := range s.samples {
		m = max(m, x.Stored)
	}
	return m
}

// runSegment starts the consumers and keeps InFlight conversations going;
// after the warm-up it measures for d, then lets every conversation in
// flight finish and stops the consumers. Stored deduplication data is
// sampled from start to stop; offset is the variant's running time
// before this segment, the time axis of its samples.
func runSegment(ctx context.Context, e *env, sys system, obs *observer, workers int, m measure, offset float64) (segment, error) {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := time.Now()
	wait, err := sys.start(runCtx, workers, obs)
	if err != nil {
		return segment{}, err
	}
	var seg segment
	samplerDone := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(samplerDone)
		seg.samples = sampleStored(ctx, sys, obs, e.cfg.SampleEvery, started, offset, stopSampling)
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			close(stopSampling)
			<-samplerDone
			cancel()
			wait()
			sys.idle()
			seg.ran = time.Since(started).Seconds()
		}
	}
	defer stop()

	stopProducing, producing := startProducers(ctx, e, sys, obs)
	if err := sleepCtx(ctx, e.cfg.Warmup); err != nil {
		stopProducing()
		return segment{}, err
	}

	pidsBefore := sys.serverPIDs(ctx)
	srvBefore, _ := proccpu.Of(pidsBefore)
	cpuBefore := processCPU()
	obs.window(true)
	began := time.Now()
	werr := m.wait(ctx, obs)
	obs.window(false)
	seg.seconds = time.Since(began).Seconds()
	seg.cpu = processCPU() - cpuBefore
	pidsAfter := sys.serverPIDs(ctx)
	srvAfter, ok := proccpu.Of(pidsAfter)
	seg.serverSeen = ok && len(pidsAfter) > 0
	seg.server = cpuDelta(srvBefore, srvAfter)
	seg.signals = obs.inWindow.Load()
	seg.lat = obs.takeLatencies()

	stopProducing()
	if err := producing(); err != nil {
		return segment{}, fmt.Errorf("starting conversations: %w", err)
	}
	if werr != nil {
		return segment{}, werr
	}
	if err := drain(ctx, obs); err != nil {
		return segment{}, err
	}
	stop()
	return seg, nil
}

// measure says how long a segment measures: d, or until signals signals
// finished if signals is set.
type measure struct {
	d       time.Duration
	signals int64
}

func (m measure) wait(ctx context.Context, obs *observer) error {
	if m.signals <= 0 {
		return sleepCtx(ctx, m.d)
	}
	for obs.inWindow.Load() < m.signals {
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// startProducers keeps obs's slots busy with new conversations until
// stop is called; wait returns the first error of starting one.
func startProducers(ctx context.Context, e *env, sys system, obs *observer) (stop func(), wait func() error) {
	quit := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	var seq atomic.Int64
	seq.Store(obs.begun.Load())
	for range producers(e.cfg.InFlight) {
		wg.Go(func() {
			for {
				select {
				case <-quit:
					return
				case <-ctx.Done():
					return
				case <-obs.slots:
				}
				select {
				case <-quit:
					obs.slots <- struct{}{}
					return
				default:
				}
				p := e.workload.rootPayload(seq.Add(1), time.Now())
				obs.begun.Add(1)
				obs.amount.Add(p.Amount)
				if err := sys.begin(ctx, p); err != nil {
					// The conversation may or may not have started; stop
					// and report.
					firstErr.CompareAndSwap(nil, &err)
					once.Do(func() { close(quit) })
					return
				}
			}
		})
	}
	stop = func() { once.Do(func() { close(quit) }) }
	wait = func() error {
		wg.Wait()
		if p := firstErr.Load(); p != nil {
			return *p
		}
		return nil
	}
	return stop, wait
}

// drain waits until every conversation started has finished.
func drain(ctx context.Context, obs *observer) error {
	deadline := time.Now().Add(drainTimeout)
	for obs.inFlight() > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d conversations did not finish within %v", obs.inFlight(), drainTimeout)
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// sampleStored reads the stored deduplication data every interval until
// stop is closed. A reading that fails is left out.
func sampleStored(ctx context.Context, sys system, obs *observer, every time.Duration, began time.Time, offset float64, stop <-chan struct{}) []sample {
	var out []sample
	take := func() {
		inFlight := obs.inFlight()
		n, err := sys.stored(ctx)
		if err != nil {
			return
		}
		out = append(out, sample{At: offset + time.Since(began).Seconds(), Stored: n, InFlight: max(inFlight, obs.inFlight())})
	}
	take()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			take()
			return out
		case <-ctx.Done():
			return out
		case <-t.C:
			take()
		}
	}
}

// scale runs each scaling variant with each worker count, one system per
// variant, in interleaved rounds as the comparison does.
func scale(ctx context.Context, e *env) ([]ScalingPoint, error) {
	cfg := e.cfg
	type point struct {
		signals int64
		seconds float64
		lat     []time.Duration
	}
	systems := map[string]system{}
	observers := map[string]*observer{}
	defer func() {
		for _, sys := range systems {
			sys.close()
		}
	}()
	for _, name := range cfg.ScalingVariants {
		v, _ := variantByName(name)
		sys, err := v.open(ctx, e, name)
		if err != nil {
			return nil, fmt.Errorf("bench: scaling %s: %w", name, err)
		}
		systems[name], observers[name] = sys, newObserver(cfg.InFlight)
	}
	points := map[string]map[int]*point{}
	per := cfg.ScalingDuration / time.Duration(cfg.Rounds)
	for round := range cfg.Rounds {
		workers := slices.Clone(cfg.ScalingWorkers)
		if round%2 == 1 {
			slices.Reverse(workers)
		}
		for _, w := range workers {
			for _, name := range cfg.ScalingVariants {
				seg, err := runSegment(ctx, e, systems[name], observers[name], w, measure{d: per}, 0)
				if err != nil {
					return nil, fmt.Errorf("bench: scaling %s with %d workers: %w", name, w, err)
				}
				if points[name] == nil {
					points[name] = map[int]*point{}
				}
				if points[name][w] == nil {
					points[name][w] = &point{}
				}
				p := points[name][w]
				p.signals += seg.signals
				p.seconds += seg.seconds
				p.lat = append(p.lat, seg.lat...)
				fmt.Fprintf(cfg.Progress, "%-18s round %d/%d  %d workers  %8.0f signals/s  p99 %s\n",
					name, round+1, cfg.Rounds, w, seg.throughput(), roundDur(percentile(seg.lat, 99)))
			}
		}
	}
	var out []ScalingPoint
	for _, w := range cfg.ScalingWorkers {
		for _, name := range cfg.ScalingVariants {
			p := points[name][w]
			slices.Sort(p.lat)
			out = append(out, ScalingPoint{Variant: name, Workers: w, Throughput: float64(p.signals) / p.seconds, P99: percentile(p.lat, 99)})
		}
	}
	return out, nil
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= 100*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}
