package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/store"
)

// DefaultConversations is the workload's size when Options leave it unset;
// `baton sim` uses it too, so a seed means the same run in a test and on
// the command line.
const DefaultConversations = 6

// Options configure one simulation run.
type Options struct {
	Seed uint64
	// Conversations is the number of orders of the workload. Default
	// DefaultConversations.
	Conversations int
	// Steps is how many scheduling steps run with faults on before the
	// simulation turns faults off and waits for quiescence. Default 4000.
	Steps int
	// Workers bounds concurrent deliveries. Default 6.
	Workers int
	// Configure, if set, is called with every engine before the run; tests
	// use it to switch engines to broken orderings.
	Configure func(*engine.Engine)
}

// Faults are the per-call probabilities of each fault, chosen per seed.
type Faults struct {
	Duplicate  float64 // broker enqueues a second copy
	Reorder    float64 // deliver a random ready copy rather than the oldest
	FailBefore float64 // a store or broker write fails without applying
	FailAfter  float64 // a write applies, then reports an error
	Crash      float64 // the worker dies at this call
	Sweep      float64 // weight of starting a sweeper at a step
}

// Report is the outcome of one run.
type Report struct {
	Seed     uint64
	Steps    int
	Faults   Faults
	FastPath bool // the seed ran the fast path (protocol.md 3.2)
	// SnapshotReads: on the fast path, the seed read the entity and the
	// token in one call (store.TokenLoader).
	SnapshotReads bool
	// DeferRemovals: the engines ran with Config.DeferRemovals.
	DeferRemovals bool
	// Batches: the engines processed batches of deliveries (Config.Batch).
	Batches bool
	// ExpiringRoots: the roots were issued with a short time to live, so
	// that some expire before or while they are processed.
	ExpiringRoots bool
	Expected      int // activities the workload must apply
	Expired       int // conversations refused because their root expired first
	Applied       int
	Lost          int
	Duplicate     int
	Unexpected    int
	LiveEnd       int // tokens live at quiescence
	OutboxEnd     int // outbox entries left at quiescence
	Counters      map[string]int
	Violation     string   // empty when every invariant held
	Trace         []string // the last scheduling events before the violation
}

// OK reports whether every invariant held.
func (r Report) OK() bool { return r.Violation == "" }

// Sim is the state of one run. It is driven by one goroutine; the actors it
// starts run only while it waits for them.
type Sim struct {
	opts     Options
	rng      *rand.Rand
	faults   Faults
	faultsOn bool
	fastPath bool // entities and tokens in one store: steps 4 and 5 fused
	// snapshotReads: on the fast path, steps 1 and 3 in one read too
	snapshotReads bool
	// deferRemovals: Process queues outbox removals, and remover actors
	// (which may crash) run them, as Run's remover does.
	deferRemovals bool
	// batches: on the fast path with snapshot reads, or on the plain
	// path, the engines process batches of deliveries (Config.Batch) and
	// workers take several.
	batches bool
	// expiringRoots: roots are issued with a short time to live.
	expiringRoots bool
	removing      bool
	step          int
	epoch         time.Time

	tokens   *tokenStore
	entities map[string]*entityStore
	views    map[string]*storeView // each destination's view of the stores
	engines  map[string]*engine.Engine
	retired  engine.Stats // counters of engines replaced after a crash
	messages []*message
	acked    map[baton.TokenID]bool
	// held: publishes of these conversations' signals to these
	// destinations fail, while the blocked-entry probe runs.
	held map[heldKey]bool

	actors    []*actor
	nextActor int
	yielded   chan *actor
	sweeping  bool

	ledger           map[string]int
	consumedEver     map[baton.TokenID]bool
	committedSignals map[baton.TokenID]bool
	issuedRoots      map[baton.TokenID]bool
	rolledBack       []baton.TokenID   // conversations whose start was rolled back
	rows             map[string]string // the billing service's own rows: conversation -> token that wrote it
	roots            []root
	counters         map[string]int
	violation        string
	traceLog         []string
}

// Run runs one simulation with opts and returns its report.
func Run(opts Options) Report {
	if opts.Conversations <= 0 {
		opts.Conversations = DefaultConversations
	}
	if opts.Steps <= 0 {
		opts.Steps = 4000
	}
	if opts.Workers <= 0 {
		opts.Workers = 6
	}
	s := &Sim{
		opts:             opts,
		rng:              rand.New(rand.NewPCG(opts.Seed, 0x62617430)),
		epoch:            time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		entities:         map[string]*entityStore{},
		views:            map[string]*storeView{},
		engines:          map[string]*engine.Engine{},
		acked:            map[baton.TokenID]bool{},
		held:             map[heldKey]bool{},
		yielded:          make(chan *actor),
		ledger:           map[string]int{},
		consumedEver:     map[baton.TokenID]bool{},
		committedSignals: map[baton.TokenID]bool{},
		issuedRoots:      map[baton.TokenID]bool{},
		rows:             map[string]string{},
		counters:         map[string]int{},
	}
	s.faults = s.chooseFaults()
	s.fastPath = s.rng.IntN(2) == 0
	s.snapshotReads = s.fastPath && s.rng.IntN(2) == 0
	s.deferRemovals = s.rng.IntN(2) == 0
	// From the seed, not the generator, so that adding batches left the
	// draws of every seed as they were.
	s.batches = s.snapshotReads && opts.Seed%2 == 1 ||
		!s.fastPath && (opts.Seed/2)%2 == 1 // with and without transactional starts and expiring roots
	// From the seed too, for the same reason as batches.
	s.expiringRoots = opts.Seed%3 == 0
	if err := s.setUp(); err != nil {
		return Report{Seed: opts.Seed, Violation: "set-up failed: " + err.Error()}
	}
	s.faultsOn = true
	for s.step < opts.Steps && s.violation == "" && s.act() {
	}
	s.faultsOn = false
	s.quiesce()
	if s.violation == "" {
		s.probeBlockedEntry()
		s.quiesce()
	}
	return s.report()
}

func (s *Sim) chooseFaults() Faults {
	r := s.rng
	return Faults{
		Duplicate:  r.Float64() * 0.4,
		Reorder:    r.Float64(),
		FailBefore: r.Float64() * 0.05,
		FailAfter:  r.Float64() * 0.05,
		Crash:      r.Float64() * 0.04,
		Sweep:      r.Float64() * 0.1,
	}
}

func (s *Sim) now() time.Time { return s.epoch.Add(time.Duration(s.step) * time.Millisecond) }

// randomReader feeds the engines' token ids and jitter from the seed.
type randomReader struct{ s *Sim }

func (r randomReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r.s.rng.Uint32())
	}
	return len(p), nil
}

// storeView is what one destination's engine is given as its stores: the
// shared token store and its own entity store, or on the fast path one
// store that is both.
type storeView struct {
	tokens   store.TokenStore
	entities store.EntityStore
}

func (s *Sim) setUp() error {
	s.tokens = &tokenStore{sim: s, inner: memory.NewTokenStoreFrom(randomReader{s})}
	for _, d := range destinations {
		s.entities[d] = &entityStore{sim: s, destination: d, inner: memory.NewEntityStore()}
		view := &storeView{tokens: s.tokens, entities: s.entities[d]}
		if s.fastPath {
			fast := &fastStore{s.tokens, s.entities[d]}
			view.tokens, view.entities = fast, fast
			if s.snapshotReads {
				view.tokens, view.entities = snapshotStore{fast}, snapshotStore{fast}
			}
			if s.batches {
				view.tokens, view.entities = batchStore{snapshotStore{fast}}, batchStore{snapshotStore{fast}}
			}
		}
		s.views[d] = view
		if err := s.restart(d); err != nil {
			return err
		}
	}
	for i := range s.opts.Conversations {
		// On the plain path some conversations start in a caller's
		// transaction (engine.StartTx), some of which roll back.
		if !s.fastPath && s.opts.Seed%4 == 2 && i%2 == 0 {
			if err := s.startInTransaction(); err != nil {
				return err
			}
			continue
		}
		var ttl time.Duration
		if s.expiringRoots {
			ttl = time.Duration(20+s.rng.IntN(400)) * time.Millisecond
		}
		sig, err := s.engines["order"].IssueRoot(context.Background(), baton.Emit{Destination: "order", Type: "order.place"}, ttl)
		if err != nil {
			return err
		}
		s.roots = append(s.roots, root{id: sig.ID, conversation: sig.Conversation, expires: ttl > 0, activities: expectedTypes})
		s.enqueue(sig)
		if s.rng.IntN(2) == 0 {
			s.count("fault: double submit of a root signal")
			s.enqueue(sig)
		}
	}
	return nil
}

// restart starts destination d's process: a fresh engine over its stores,
// with what its predecessor counted kept in s.retired.
func (s *Sim) restart(d string) error {
	if old := s.engines[d]; old != nil {
		s.retired = s.retired.Plus(old.Stats())
	}
	view := s.views[d]
	e, err := engine.New(engine.Config{
		Destination:        d,
		Tokens:             view.tokens,
		Entities:           view.entities,
		Source:             broker{s},
		Dispatch:           broker{s},
		Subscriptions:      map[string][]string{"placed": {"billing", "stock"}},
		SweepAfter:         50 * time.Millisecond,
		RootExpiryGrace:    10 * time.Millisecond,
		MaxConflictRetries: 1000,
		// Parking after too many attempts would leave live tokens that
		// only an operator finishes; faults here are all transient.
		MaxAttempts:   1 << 30,
		DeferRemovals: s.deferRemovals,
		Batch:         batchSize(s.batches),
		Now:           s.now,
		Sleep: func(ctx context.Context, d time.Duration) error {
			return s.yield(ctx, "sleep")
		},
		Random: randomReader{s},
	})
	if err != nil {
		return err
	}
	if err := register(e); err != nil {
		return err
	}
	if s.opts.Configure != nil {
		s.opts.Configure(e)
	}
	s.engines[d] = e
	return nil
}

// act takes one scheduling step: resume a waiting actor, deliver a message,
// or start a sweeper. It reports false when nothing can happen.
func (s *Sim) act() bool {
	s.step++
	var choices []func()
	for _, a := range s.actors {
		choices = append(choices, func() { s.resume(a) })
	}
	if ready := s.ready(); len(ready) > 0 && len(s.actors) < s.opts.Workers {
		m := ready[0]
		if len(ready) > 1 && s.chance(s.faults.Reorder) {
			m = ready[s.rng.IntN(len(ready))]
			s.count("fault: broker reordered a delivery")
		}
		choices = append(choices, func() { s.deliver(m) })
		if batch := s.batchWith(m, ready); len(batch) > 1 {
			choices = append(choices, func() { s.deliverBatch(batch) })
		}
	}
	if !s.sweeping && s.chance(s.faults.Sweep) {
		choices = append(choices, s.startSweeper)
	}
	if s.deferRemovals && !s.removing && s.chance(0.3) {
		choices = append(choices, s.startRemover)
	}
	if len(choices) == 0 {
		return false
	}
	choices[s.rng.IntN(len(choices))]()
	return true
}

func (s *Sim) startSweeper() { s.startSweeperAt(destinations[s.rng.IntN(len(destinations))]) }

func (s *Sim) startSweeperAt(d string) {
	s.sweeping = true
	s.start(&actor{name: "sweeper@" + d, dest: d, run: func(ctx context.Context) {
		n, _ := s.engines[d].Sweep(ctx)
		s.counters["recovery: outbox entries finished by the sweeper"] += n
		s.sweeping = false
	}})
}

// startRemover runs the deferred outbox removals of one destination, as
// Run's remover does in the background.
func (s *Sim) startRemover() {
	d := destinations[s.rng.IntN(len(destinations))]
	s.removing = true
	s.start(&actor{name: "remover@" + d, dest: d, run: func(ctx context.Context) {
		n, _ := s.engines[d].RemovePending(ctx)
		s.counters["recovery: deferred outbox removals"] += n
		s.removing = false
	}})
}

// quiesce runs with faults off until nothing is left to do, letting time
// pass so the sweepers see every abandoned outbox entry as stale and every
// unused root as expired.
func (s *Sim) quiesce() {
	for rounds := 0; rounds < 200000 && s.violation == ""; rounds++ {
		if s.act() {
			continue
		}
		latest, expiring := s.latestExpiry()
		work := len(s.messages) > 0 || s.outboxEntries() > 0 || s.pendingStarts() > 0
		if !work && !expiring {
			return
		}
		// Only abandoned outbox entries and starts and unused roots are
		// left: let them age past SweepAfter and their expiry, and sweep
		// every destination.
		s.step += 100
		if !work && s.now().Before(latest) {
			s.step = int(latest.Sub(s.epoch)/time.Millisecond) + 100
		}
		for _, d := range destinations {
			s.startSweeperAt(d)
		}
	}
	if s.violation == "" {
		s.violate("did not quiesce: %d actors, %d messages, %d outbox entries", len(s.actors), len(s.messages), s.outboxEntries())
	}
}

// latestExpiry returns the latest expiry of the live tokens that may still
// expire, and whether there is any.
func (s *Sim) latestExpiry() (time.Time, bool) {
	var latest time.Time
	found := false
	for _, d := range destinations {
		toks, _ := s.tokens.inner.ListByDestination(context.Background(), d, store.Page{Limit: store.MaxPageLimit})
		for _, t := range toks {
			if !t.ExpiresAt.IsZero() {
				found = true
				if t.ExpiresAt.After(latest) {
					latest = t.ExpiresAt
				}
			}
		}
	}
	return latest, found
}

func (s *Sim) pendingStarts() int {
	starts, _ := s.entities["order"].inner.PendingStarts(context.Background(), s.now().Add(time.Hour), 1000)
	return len(starts)
}

func (s *Sim) outboxEntries() int {
	n := 0
	for _, d := range destinations {
		inner := s.entities[d].inner
		for _, key := range inner.Keys() {
			e, _ := inner.Load(context.Background(), key)
			n += len(e.Outbox)
		}
	}
	return n
}

func (s *Sim) violate(format string, args ...any) {
	if s.violation == "" {
		s.violation = fmt.Sprintf(format, args...)
		s.trace("VIOLATION: %s", s.violation)
	}
}

func (s *Sim) report() Report {
	r := Report{Seed: s.opts.Seed, Steps: s.step, Faults: s.faults, FastPath: s.fastPath, SnapshotReads: s.snapshotReads,
		DeferRemovals: s.deferRemovals, Batches: s.batches, ExpiringRoots: s.expiringRoots, Counters: map[string]int{}}
	for k, v := range s.counters {
		r.Counters[k] = v
	}
	st := s.retired
	for _, d := range destinations {
		st = st.Plus(s.engines[d].Stats())
	}
	r.Counters["outcome: applied"] += int(st.Applied)
	r.Counters["outcome: completed"] += int(st.Completed)
	r.Counters["recovery: duplicates dropped"] += int(st.Duplicates)
	r.Counters["recovery: version conflicts retried"] += int(st.Conflicts)
	r.Counters["recovery: transitions found already done"] += int(st.TransitionsDone)
	r.Counters["recovery: dispatch retries"] += int(st.DispatchRetries)
	r.Counters["path: starts launched"] += int(st.StartsLaunched)

	// A conversation whose root activity was applied must have every
	// activity applied once; one whose root expired before it was
	// admitted must have none, and its root must be gone.
	expected := map[string]bool{}
	for _, root := range s.roots {
		if root.expires && s.ledger[root.conversation.String()+"/"+root.activities[0]] == 0 {
			r.Expired++
			continue
		}
		for _, t := range root.activities {
			expected[root.conversation.String()+"/"+t] = true
		}
	}
	r.Expected = len(expected)
	for key, n := range s.ledger {
		switch {
		case !expected[key]:
			r.Unexpected += n
		case n > 1:
			r.Duplicate += n - 1
		}
		r.Applied += n
	}
	for key := range expected {
		if s.ledger[key] == 0 {
			r.Lost++
		}
	}
	for _, id := range s.rolledBack {
		if _, err := s.entities["order"].inner.LoadStart(context.Background(), id); err == nil {
			s.violate("start %s of a rolled-back transaction is recorded", short(id))
		}
		if _, ok := s.entities["order"].inner.Get("orders", id.String()); ok {
			s.violate("order row of a rolled-back transaction %s is committed", short(id))
		}
	}
	charged := 0
	for key, n := range s.ledger {
		if strings.HasSuffix(key, "/order.placed@billing") && n > 0 {
			charged++
		}
	}
	if len(s.rows) != charged && s.violation == "" {
		s.violate("%d billing rows for %d charged conversations", len(s.rows), charged)
	}
	r.LiveEnd = s.tokens.inner.Len()
	r.OutboxEnd = s.outboxEntries()
	if s.violation == "" {
		switch {
		case r.Lost > 0 || r.Duplicate > 0 || r.Unexpected > 0:
			s.violate("ledger: %d lost, %d duplicated, %d unexpected", r.Lost, r.Duplicate, r.Unexpected)
		case r.LiveEnd > 0:
			s.violate("%d tokens of finished signals still live at quiescence", r.LiveEnd)
		case r.OutboxEnd > 0:
			s.violate("%d outbox entries left at quiescence", r.OutboxEnd)
		}
	}
	r.Violation = s.violation
	if r.Violation != "" {
		r.Trace = slices.Clone(s.traceLog)
	}
	return r
}

// Summary is the report as one line.
func (r Report) Summary() string {
	status := "ok"
	if !r.OK() {
		status = "VIOLATION: " + r.Violation
	}
	path := "plain"
	if r.FastPath {
		path = "fast"
	}
	if r.SnapshotReads {
		path = "fast+snapshot"
	}
	if r.DeferRemovals {
		path += ", deferred removal"
	}
	if r.Batches {
		path += ", batches"
	}
	if r.ExpiringRoots {
		path += fmt.Sprintf(", expiring roots (%d expired)", r.Expired)
	}
	return fmt.Sprintf("seed %d: %s (%s path, steps %d, applied %d/%d, lost %d, duplicated %d, unexpected %d)",
		r.Seed, status, path, r.Steps, r.Applied, r.Expected, r.Lost, r.Duplicate, r.Unexpected)
}

// SortedCounters returns the counters as "name: value" lines in name order.
func SortedCounters(c map[string]int) []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%-55s %d", k, c[k])
	}
	return out
}

// RequiredCounters are the fault kinds and recovery paths that a run over
// many seeds must show, or the simulation proves less than it claims.
var RequiredCounters = []string{
	"fault: broker duplicated a message",
	"fault: broker reordered a delivery",
	"fault: double submit of a root signal",
	"fault: process crashed",
	"fault: entity commit failed before applying",
	"fault: entity commit failed after applying",
	"fault: transition failed before applying",
	"fault: transition failed after applying",
	"fault: commit+transition failed after applying",
	"fault: publish failed before applying",
	"fault: publish failed after applying",
	"fault: ack failed before applying",
	"fault: ack failed after applying",
	"fault: nack failed before applying",
	"fault: claim failed before applying",
	"fault: claim failed after applying",
	"path: fast commit+transition",
	"path: snapshot load with token",
	"recovery: deferred outbox removals",
	"path: batch commit of deferred removals",
	"path: chain of signals for one entity committed",
	"path: deliveries acknowledged in a batch",
	"fault: entity batch commit failed after applying",
	"path: plain batch load",
	"path: plain batch commit of activities",
	"path: plain chain of signals for one entity committed",
	"path: plain batch token read",
	"path: plain batch transitions",
	"fault: transition in a batch failed before applying",
	"fault: transition in a batch failed after applying",
	"fault: entity load with token failed before applying",
	"outcome: completed",
	"outcome: expired root signal parked",
	"recovery: duplicates dropped",
	"recovery: version conflicts retried",
	"recovery: transitions found already done",
	"recovery: outbox entries finished by the sweeper",
	"recovery: redelivered after a failure or crash",
	"recovery: delivery nacked for a retry",
	"recovery: unsettled delivery handed out again",
	"recovery: dispatch retries",
	"probe: a signal went past another's unfinished outbox entry",
	"path: transactional commit+transition",
	"fault: transaction commit failed before applying",
	"fault: transaction commit failed after applying",
	"fault: a caller's transaction rolled back its start",
	"path: start launched by its caller",
	"path: starts launched",
	"fault: start update failed after applying",
}
