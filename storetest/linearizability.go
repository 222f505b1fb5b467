package storetest

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	mathrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// LinearizabilityOptions configures RunLinearizability. The zero value runs
// 16 histories of 8 clients doing 25 operations each over 8 token ids for
// children and up to 8 roots.
type LinearizabilityOptions struct {
	// Histories is how many independent histories run at once over the
	// store, each over token ids of its own. Zero means 16.
	Histories int
	// Clients is how many goroutines call the store concurrently in each
	// history. Zero means 8.
	Clients int
	// OpsPerClient is how many operations each client runs. Zero means 25.
	// Histories stay short because checking is NP-hard in their length.
	OpsPerClient int
	// IDs is how many token ids the transitions of one history create
	// children under, 3 to 16. Few ids make operations collide. Roots get
	// ids of the store's choosing, as many as the rest of the model's 24
	// slots hold. Zero means 8.
	IDs int
	// Seed seeds the choice of operations. Zero means a random seed, which
	// is logged. With one client and a deterministic store a seed replays
	// a history exactly.
	Seed uint64
	// Wrap, if set, wraps the store under test, for example with Faulty so
	// that histories hold operations whose outcome is unknown.
	Wrap func(store.TokenStore) store.TokenStore
	// CheckTimeout bounds the check of one history. A check that times out
	// fails the test: it proved nothing. Zero means 20 seconds.
	CheckTimeout time.Duration
}

func (o LinearizabilityOptions) withDefaults() (LinearizabilityOptions, error) {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Histories, 16)
	def(&o.Clients, 8)
	def(&o.OpsPerClient, 25)
	def(&o.IDs, 8)
	if o.CheckTimeout == 0 {
		o.CheckTimeout = 20 * time.Second
	}
	if o.Seed == 0 {
		o.Seed = mathrand.Uint64() | 1
	}
	switch {
	case o.Histories < 0 || o.Clients < 0 || o.OpsPerClient < 0 || o.CheckTimeout < 0:
		return o, fmt.Errorf("storetest: negative LinearizabilityOptions: %+v", o)
	case o.IDs < 3 || o.IDs > maxLinChildIDs:
		return o, fmt.Errorf("storetest: LinearizabilityOptions.IDs is %d, want 3 to %d", o.IDs, maxLinChildIDs)
	}
	return o, nil
}

// RunLinearizability checks that a store from h.New is linearizable for
// Issue, Transition and Get (R2 of docs/protocol.md).
//
// Several independent histories run at once over one store. In each,
// concurrent clients issue roots and consume and read a handful of token
// ids, so that operations collide: a transition creates children drawn
// from the same ids that later operations consume and read again, and
// consumes roots that Issue returned. Every call's
// invocation and response times are recorded on the monotonic clock, and
// porcupine searches for an order of the operations, each taking effect at
// one instant within its call, that the sequential specification of
// store.TokenStore explains. The checker's model is documented at
// tokenModel.
//
// An operation that failed with an error proving nothing happened
// (store.NotApplied) is left out of the history. Any other failure of
// Transition leaves its outcome unknown: the operation stays in the
// history with no response time (it may take effect at any instant after
// its call, or never), as a crashed client's operation would. An Issue
// whose outcome is unknown is left out too: the root it may have created
// has an id nobody learnt, so no other operation can observe it. A failed
// Get observed nothing and is left out.
//
// On failure the test reports the operations of the history that has no
// linearization and writes porcupine's visualization of it to an HTML file
// whose path it prints; the file outlives the test so that it can be
// opened.
func RunLinearizability(t *testing.T, h TokenHarness, opts LinearizabilityOptions) {
	t.Helper()
	if h.New == nil {
		t.Fatal("storetest: TokenHarness.New is nil")
	}
	opts, err := opts.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	s := h.New(t)
	if opts.Wrap != nil {
		s = opts.Wrap(s)
	}
	ctx := testContext(t)
	run := recordLinearizability(ctx, s, opts)
	for _, p := range run.problems {
		t.Error(p)
	}

	checkStart := time.Now()
	for _, hist := range run.histories {
		result, info := checkHistory(hist, opts.CheckTimeout)
		switch result {
		case porcupine.Ok:
			continue
		case porcupine.Unknown:
			t.Errorf("history %d (%d operations): porcupine found no answer within %s; use shorter histories (seed %d)", hist.index, len(hist.ops), opts.CheckTimeout, opts.Seed)
			continue
		}
		where := visualize(hist, info)
		t.Errorf("history %d is not linearizable (seed %d): no order of its %d operations, each taking effect within its call, is explained by the token store's specification.\nVisualization: %s\nOperations by call time (times in µs since the start; return \"-\": outcome unknown):\n%s",
			hist.index, opts.Seed, len(hist.ops), where, describeHistory(hist.ops))
	}
	t.Logf("linearizability: seed %d, %s; ran in %s, checked in %s",
		opts.Seed, run.stats, run.elapsed.Round(time.Millisecond), time.Since(checkStart).Round(time.Millisecond))
	if run.stats.consumed == 0 || run.stats.found == 0 {
		t.Errorf("the workload exercised too little to check anything (%s)", run.stats)
	}
}

// maxLinIDs bounds a history's token ids (children's and roots'),
// maxLinChildIDs those that children are created under, and
// maxLinChildren a transition's children; the model's state is an array
// of maxLinIDs.
const (
	maxLinIDs      = 24
	maxLinChildIDs = 16
	maxLinChildren = 2
)

// linState is the model's state: for each token id of a history (its
// slot), 0 if it was never created, linGone once it was consumed, or the
// tag (> 0) of the live token. Tags tell apart the tokens that one id may
// name over time. The first slots hold the ids that children are created
// under; the others are bound, in the order Issue returns them, to the
// roots' ids.
type linState [maxLinIDs]int32

const linGone int32 = -1

type linKind uint8

const (
	linIssue linKind = iota
	linTransition
	linGet
)

// linInput is one operation. id is the consumed parent or the read token's
// slot; tag is the issued root's.
type linInput struct {
	kind     linKind
	id       int8
	tag      int32
	n        int8
	children [maxLinChildren]linChild
}

// linChild is a token that a transition asks to create.
type linChild struct {
	id  int8
	tag int32
}

type linOutcome uint8

const (
	linIssued      linOutcome = iota // Issue returned nil, the root's id bound to slot
	linExists                        // Transition: store.ErrExists
	linConsumed                      // Transition: true, nil
	linNotConsumed                   // Transition: false, nil
	linFound                         // Get: the token with tag
	linNotFound                      // Get: store.ErrNotFound
	linUnknown                       // Issue or Transition: any other error
)

type linOutput struct {
	outcome linOutcome
	tag     int32 // of the token Get returned
	slot    int8  // where Issue's id was bound
}

// linEffect is one response the specification allows, and the state after.
type linEffect struct {
	out  linOutput
	next linState
}

// linEffects is the sequential specification of store.TokenStore for the
// three operations, as backend/memory implements it. Issue creates the
// root under an id that no token ever had, which the history binds to the
// slot out names. Whether a child's id may be used again after its token
// was consumed the interface leaves open (the protocol never does it;
// memory allows it, a store keeping tombstones would refuse with
// ErrExists), so both answers are allowed there.
func linEffects(s linState, in linInput, out linOutput) []linEffect {
	switch in.kind {
	case linIssue:
		if out.outcome != linIssued || s[out.slot] != 0 {
			return nil
		}
		issued := s
		issued[out.slot] = in.tag
		return []linEffect{{out, issued}}
	case linTransition:
		if s[in.id] <= 0 {
			// An absent parent: nothing is created, whatever the children.
			return []linEffect{{linOutput{outcome: linNotConsumed}, s}}
		}
		next := s
		next[in.id] = linGone
		reused := false
		for _, c := range in.children[:in.n] {
			if s[c.id] > 0 {
				return []linEffect{{linOutput{outcome: linExists}, s}}
			}
			reused = reused || s[c.id] == linGone
			next[c.id] = c.tag
		}
		effects := []linEffect{{linOutput{outcome: linConsumed}, next}}
		if reused {
			effects = append(effects, linEffect{linOutput{outcome: linExists}, s})
		}
		return effects
	default:
		if s[in.id] > 0 {
			return []linEffect{{linOutput{outcome: linFound, tag: s[in.id]}, s}}
		}
		return []linEffect{{linOutput{outcome: linNotFound}, s}}
	}
}

// tokenModel is the model that porcupine checks histories against. A
// history is checked as one partition: a transition touches its parent
// and its children at once, so splitting by token id would be unsound;
// the histories of one run use disjoint ids and are the partitions.
//
// The model is nondeterministic only for operations whose outcome is
// unknown: such an operation either took effect as the specification says
// or did nothing at all.
var tokenModel = (&porcupine.NondeterministicModel{
	Init: func() []any { return []any{linState{}} },
	Step: func(state, input, output any) []any {
		s, in, out := state.(linState), input.(linInput), output.(linOutput)
		var next []any
		for _, e := range linEffects(s, in, out) {
			if out.outcome == linUnknown || e.out == out {
				next = append(next, e.next)
			}
		}
		if out.outcome == linUnknown {
			next = append(next, s) // it did nothing
		}
		return next
	},
	Hash: func(state any) uint64 {
		s := state.(linState)
		h := fnv.New64a()
		var b [4]byte
		for _, v := range s {
			b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
			h.Write(b[:])
		}
		return h.Sum64()
	},
	DescribeOperation: func(input, output any) string {
		return describeOp(input.(linInput), output.(linOutput))
	},
	DescribeState: func(state any) string {
		s := state.(linState)
		var live, gone []string
		for id, v := range s {
			switch {
			case v > 0:
				live = append(live, fmt.Sprintf("t%d#%d", id, v))
			case v == linGone:
				gone = append(gone, fmt.Sprintf("t%d", id))
			}
		}
		return fmt.Sprintf("live [%s] consumed [%s]", strings.Join(live, " "), strings.Join(gone, " "))
	},
}).ToModel()

func describeOp(in linInput, out linOutput) string {
	var call string
	switch in.kind {
	case linIssue:
		call = fmt.Sprintf("Issue(#%d)", in.tag)
	case linTransition:
		children := make([]string, in.n)
		for i, c := range in.children[:in.n] {
			children[i] = fmt.Sprintf("t%d#%d", c.id, c.tag)
		}
		call = fmt.Sprintf("Transition(t%d, [%s])", in.id, strings.Join(children, " "))
	default:
		call = fmt.Sprintf("Get(t%d)", in.id)
	}
	var result string
	switch out.outcome {
	case linIssued:
		result = fmt.Sprintf("t%d", out.slot)
	case linExists:
		result = "ErrExists"
	case linConsumed:
		result = "consumed"
	case linNotConsumed:
		result = "not consumed"
	case linFound:
		result = fmt.Sprintf("#%d", out.tag)
	case linNotFound:
		result = "ErrNotFound"
	default:
		result = "unknown"
	}
	return call + " -> " + result
}

// linHistory is the record of one history.
type linHistory struct {
	index int
	ops   []porcupine.Operation
}

// linStats counts what the operations of a run returned.
type linStats struct {
	ops                                  int // in the histories
	overlapping                          int // ops concurrent with another of their history
	issued, exists, consumed, notConsumd int
	found, notFound, unknown             int
	dropped                              int // not applied, or an Issue of unknown outcome (left out)
	failedReads                          int // Get errors (left out)
}

func (s linStats) String() string {
	return fmt.Sprintf("%d operations checked, %d of them concurrent with another (Issue ok %d, ErrExists %d, consumed %d, not consumed %d, found %d, not found %d, outcome unknown %d); left out: %d not applied, %d failed reads",
		s.ops, s.overlapping, s.issued, s.exists, s.consumed, s.notConsumd, s.found, s.notFound, s.unknown, s.dropped, s.failedReads)
}

// linRun is what recordLinearizability saw.
type linRun struct {
	histories []linHistory
	stats     linStats
	problems  []string // wrong whatever the order: an error that is never right here, a token with other fields
	elapsed   time.Duration
}

// recordLinearizability runs the histories concurrently over s and
// records them. opts must have its defaults applied.
func recordLinearizability(ctx context.Context, s store.TokenStore, opts LinearizabilityOptions) linRun {
	var (
		mu  sync.Mutex
		run linRun
		wg  sync.WaitGroup
	)
	begin := time.Now()
	clock := func() int64 { return time.Since(begin).Nanoseconds() } // monotonic
	for i := range opts.Histories {
		wg.Go(func() {
			r := newLinRecorder(i, opts)
			r.run(ctx, s, clock)
			mu.Lock()
			defer mu.Unlock()
			run.histories = append(run.histories, linHistory{index: i, ops: r.ops})
			run.problems = append(run.problems, r.problems...)
			st := &run.stats
			st.ops += len(r.ops)
			st.overlapping += overlapping(r.ops)
			st.dropped += r.dropped + r.unknownIssues
			st.failedReads += r.failedReads
			for _, op := range r.ops {
				switch op.Output.(linOutput).outcome {
				case linIssued:
					st.issued++
				case linExists:
					st.exists++
				case linConsumed:
					st.consumed++
				case linNotConsumed:
					st.notConsumd++
				case linFound:
					st.found++
				case linNotFound:
					st.notFound++
				case linUnknown:
					st.unknown++
				}
			}
		})
	}
	wg.Wait()
	run.elapsed = time.Since(begin)
	slices.SortFunc(run.histories, func(a, b linHistory) int { return a.index - b.index })
	return run
}

// overlapping counts the operations whose call overlaps another's.
func overlapping(ops []porcupine.Operation) int {
	n := 0
	for i, a := range ops {
		for j, b := range ops {
			if i != j && a.Call <= b.Return && b.Call <= a.Return {
				n++
				break
			}
		}
	}
	return n
}

// linRecorder runs and records one history.
type linRecorder struct {
	index        int
	opts         LinearizabilityOptions
	conversation baton.TokenID
	destination  string

	mu            sync.Mutex
	ids           []baton.TokenID       // by slot: children's ids, then roots' as Issue returned them
	issuing       int                   // Issue calls in flight, each holding a slot
	tokens        map[int32]baton.Token // by tag: every token an operation asked to create
	nextTag       int32
	nextClient    int
	ops           []porcupine.Operation
	problems      []string
	dropped       int
	unknownIssues int
	failedReads   int
}

func newLinRecorder(index int, opts LinearizabilityOptions) *linRecorder {
	r := &linRecorder{
		index:        index,
		opts:         opts,
		conversation: baton.NewTokenID(),
		destination:  uniqueName("lin"),
		tokens:       make(map[int32]baton.Token),
		nextClient:   opts.Clients,
	}
	for range opts.IDs {
		r.ids = append(r.ids, baton.NewTokenID())
	}
	return r
}

func (r *linRecorder) run(ctx context.Context, s store.TokenStore, clock func() int64) {
	var wg sync.WaitGroup
	for c := range r.opts.Clients {
		wg.Go(func() {
			rng := mathrand.New(mathrand.NewPCG(r.opts.Seed, uint64(r.index)<<32|uint64(c)))
			client := c
			for range r.opts.OpsPerClient {
				if ctx.Err() != nil {
					return
				}
				in := r.choose(rng)
				op, keep := r.call(ctx, s, in, clock)
				if !keep {
					continue
				}
				op.ClientId = client
				r.mu.Lock()
				r.ops = append(r.ops, op)
				if op.Output.(linOutput).outcome == linUnknown {
					// As a crashed process in a Jepsen history: the
					// operation stays open, and the client carries on
					// under a new id.
					client = r.nextClient
					r.nextClient++
				}
				r.mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// newToken records and returns the token with a fresh tag for id, a root
// (whose id the store chooses) if parent is negative.
func (r *linRecorder) newToken(id, parent int8) int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nextTag++
	tag := r.nextTag
	t := baton.Token{
		Conversation: r.conversation,
		Destination:  r.destination,
		Type:         "lin." + strconv.Itoa(int(tag)),
		Digest:       baton.DigestOf([]byte(strconv.Itoa(int(tag)))),
		CreatedAt:    timestamp(0),
	}
	if parent >= 0 {
		t.ID = r.ids[id]
		t.Causation = r.ids[parent]
	}
	r.tokens[tag] = t
	return tag
}

// bound returns the id of slot and how many slots are bound.
func (r *linRecorder) bound(slot int8) (baton.TokenID, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if int(slot) >= len(r.ids) {
		return baton.TokenID{}, len(r.ids)
	}
	return r.ids[slot], len(r.ids)
}

// reserveIssue reports whether a slot is free for one more Issue, and
// holds it until releaseIssue.
func (r *linRecorder) reserveIssue() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ids)+r.issuing >= maxLinIDs {
		return false
	}
	r.issuing++
	return true
}

// releaseIssue gives back a reserved slot, binding it to the issued root
// if Issue returned one, and returns its index.
func (r *linRecorder) releaseIssue(tag int32, issued baton.Token, ok bool) int8 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.issuing--
	if !ok {
		return -1
	}
	for slot, id := range r.ids {
		if id == issued.ID {
			r.problems = append(r.problems, fmt.Sprintf("history %d: Issue returned id %s, which slot t%d already has", r.index, issued.ID, slot))
			return -1
		}
	}
	r.ids = append(r.ids, issued.ID)
	want := r.tokens[tag]
	want.ID, want.CreatedAt = issued.ID, issued.CreatedAt // a store may set its own creation time
	if want.Conversation.IsZero() {
		want.Conversation = issued.ID
	}
	if d := tokenDiff(issued, want); d != "" {
		r.problems = append(r.problems, fmt.Sprintf("history %d: Issue returned another token than it was given: %s", r.index, d))
	}
	r.tokens[tag] = want
	return int8(len(r.ids) - 1)
}

func (r *linRecorder) token(tag int32) (baton.Token, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.tokens[tag]
	return t, ok
}

func (r *linRecorder) problem(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.problems = append(r.problems, fmt.Sprintf("history %d: ", r.index)+fmt.Sprintf(format, args...))
}

// choose picks the next operation: 25% Issue (while slots are free), 45%
// Transition with 0 to 2 children (1 on average, so that the number of
// live tokens stays level), 30% Get, all over the history's few ids.
func (r *linRecorder) choose(rng *mathrand.Rand) linInput {
	_, bound := r.bound(0)
	id := int8(rng.IntN(bound))
	switch x := rng.IntN(20); {
	case x < 5 && r.reserveIssue():
		return linInput{kind: linIssue, tag: r.newToken(0, -1)}
	case x < 14:
		in := linInput{kind: linTransition, id: id}
		want := [...]int8{0, 1, 1, 1, 2}[rng.IntN(5)]
		for in.n < want {
			child := int8(rng.IntN(r.opts.IDs))
			if child == id || slices.ContainsFunc(in.children[:in.n], func(c linChild) bool { return c.id == child }) {
				continue
			}
			in.children[in.n] = linChild{id: child, tag: r.newToken(child, id)}
			in.n++
		}
		return in
	default:
		return linInput{kind: linGet, id: id}
	}
}

// call runs one operation and classifies its result. keep is false for an
// operation that certainly did nothing (or, for Get, saw nothing).
func (r *linRecorder) call(ctx context.Context, s store.TokenStore, in linInput, clock func() int64) (op porcupine.Operation, keep bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	op.Input = in
	var out linOutput
	var err error
	op.Call = clock()
	switch in.kind {
	case linIssue:
		root, _ := r.token(in.tag)
		var issued baton.Token
		issued, err = s.Issue(ctx, root)
		op.Return = clock()
		out = linOutput{outcome: linIssued, slot: r.releaseIssue(in.tag, issued, err == nil)}
		switch {
		case err == nil && out.slot >= 0:
			op.Output = out
			return op, true
		case err == nil:
			return op, false // a problem, reported
		case !store.NotApplied(err):
			r.mu.Lock()
			r.unknownIssues++
			r.mu.Unlock()
			return op, false
		}
	case linTransition:
		create := make([]baton.Token, in.n)
		for i, c := range in.children[:in.n] {
			create[i], _ = r.token(c.tag)
		}
		parent, _ := r.bound(in.id)
		var consumed bool
		consumed, err = s.Transition(ctx, parent, create)
		out.outcome = linNotConsumed
		if consumed {
			out.outcome = linConsumed
		}
	default:
		var got baton.Token
		id, _ := r.bound(in.id)
		got, err = s.Get(ctx, id)
		op.Return = clock()
		switch {
		case err == nil:
			out = linOutput{outcome: linFound, tag: r.checkToken(in.id, got)}
		case errors.Is(err, store.ErrNotFound):
			out.outcome = linNotFound
		default:
			r.mu.Lock()
			r.failedReads++
			r.mu.Unlock()
			return op, false
		}
		op.Output = out
		return op, true
	}
	op.Return = clock()
	switch {
	case err == nil:
	case errors.Is(err, store.ErrExists):
		out.outcome = linExists
	case errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrClosed) ||
		errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict):
		r.problem("%s failed with %v, which is never right for this valid call", describeOp(in, linOutput{outcome: linUnknown}), err)
		return op, false
	case store.NotApplied(err):
		r.mu.Lock()
		r.dropped++
		r.mu.Unlock()
		return op, false
	default:
		out.outcome = linUnknown
		op.Return = math.MaxInt64 // it may take effect at any time after its call
	}
	op.Output = out
	return op, true
}

// checkToken returns the tag of a token that Get returned for id, after
// checking that it is exactly the token created under that tag. A token
// that no operation created gets tag 0, which no state explains.
func (r *linRecorder) checkToken(id int8, got baton.Token) int32 {
	digits, ok := strings.CutPrefix(got.Type, "lin.")
	tag, err := strconv.Atoi(digits)
	if !ok || err != nil || tag <= 0 || tag > math.MaxInt32 {
		r.problem("Get(t%d) returned a token that no operation created: %+v", id, got)
		return 0
	}
	want, ok := r.token(int32(tag))
	if slotID, _ := r.bound(id); !ok || want.ID != slotID {
		r.problem("Get(t%d) returned a token that no operation created for this id: %+v", id, got)
		return 0
	}
	if d := tokenDiff(got, want); d != "" {
		r.problem("Get(t%d) returned token #%d with other fields: %s", id, tag, d)
	}
	return int32(tag)
}

func checkHistory(h linHistory, timeout time.Duration) (porcupine.CheckResult, porcupine.LinearizationInfo) {
	return porcupine.CheckOperationsVerbose(tokenModel, h.ops, timeout)
}

// describeHistory lists operations by call time, one a line.
func describeHistory(ops []porcupine.Operation) string {
	sorted := slices.Clone(ops)
	slices.SortStableFunc(sorted, func(a, b porcupine.Operation) int {
		switch {
		case a.Call < b.Call:
			return -1
		case a.Call > b.Call:
			return 1
		}
		return 0
	})
	var b strings.Builder
	for _, op := range sorted {
		ret := "-"
		if op.Return != math.MaxInt64 {
			ret = strconv.FormatInt(op.Return/1000, 10)
		}
		fmt.Fprintf(&b, "  client %2d  [%d, %s]  %s\n", op.ClientId, op.Call/1000, ret, describeOp(op.Input.(linInput), op.Output.(linOutput)))
	}
	return b.String()
}

// visualize writes porcupine's visualization of a history to a file that
// outlives the test (t.TempDir would be removed before anyone opens it)
// and returns its path, or why it could not.
func visualize(h linHistory, info porcupine.LinearizationInfo) string {
	f, err := os.CreateTemp("", fmt.Sprintf("baton-linearizability-history%d-*.html", h.index))
	if err != nil {
		return "not written: " + err.Error()
	}
	path := f.Name()
	f.Close()
	if err := porcupine.VisualizePath(tokenModel, info, path); err != nil {
		return "not written: " + err.Error()
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return path
}

// ErrInjected marks the failures that Faulty injects.
var ErrInjected = errors.New("storetest: injected fault")

// RunLinearizabilityWithFaults runs RunLinearizability twice, as parallel
// subtests: "Plain" on the stores h opens, and "Faulty" with Faulty
// failing a tenth of the calls, so that the checker also meets operations
// whose outcome is unknown.
func RunLinearizabilityWithFaults(t *testing.T, h TokenHarness) {
	t.Helper()
	t.Run("Plain", func(t *testing.T) {
		t.Parallel()
		RunLinearizability(t, h, LinearizabilityOptions{})
	})
	t.Run("Faulty", func(t *testing.T) {
		t.Parallel()
		RunLinearizability(t, h, LinearizabilityOptions{
			Wrap: func(s store.TokenStore) store.TokenStore { return Faulty(s, 1, 0.1) },
		})
	})
}

// Faulty returns a store that passes every call to inner but fails about a
// fraction rate of them: half before calling inner, with an error that
// matches store.ErrNotApplied (nothing happened), and half after inner
// returned, with an error that does not (the outcome is unknown: inner
// may well have applied the call). Both match ErrInjected. The choices
// follow a generator seeded with seed; it is safe for concurrent use.
func Faulty(inner store.TokenStore, seed uint64, rate float64) store.TokenStore {
	return &faultyStore{inner: inner, rate: rate, rng: mathrand.New(mathrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

type faultyStore struct {
	inner store.TokenStore
	rate  float64
	mu    sync.Mutex
	rng   *mathrand.Rand
}

var _ store.TokenStore = (*faultyStore)(nil)

type fault uint8

const (
	noFault fault = iota
	faultBefore
	faultAfter
)

func (f *faultyStore) draw() fault {
	f.mu.Lock()
	x := f.rng.Float64()
	f.mu.Unlock()
	switch {
	case x < f.rate/2:
		return faultBefore
	case x < f.rate:
		return faultAfter
	}
	return noFault
}

func errBefore(method string) error {
	return fmt.Errorf("%w: %w before %s reached the store", store.ErrNotApplied, ErrInjected, method)
}

func errAfter(method string) error {
	return fmt.Errorf("%w after %s reached the store: outcome unknown", ErrInjected, method)
}

// faulty runs call unless the draw fails it before, and hides its result
// if the draw fails it after.
func faulty[T any](f *faultyStore, method string, call func() (T, error)) (T, error) {
	var zero T
	which := f.draw()
	if which == faultBefore {
		return zero, errBefore(method)
	}
	v, err := call()
	if which == faultAfter {
		return zero, errAfter(method)
	}
	return v, err
}

func (f *faultyStore) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	return faulty(f, "Transition", func() (bool, error) { return f.inner.Transition(ctx, consume, create) })
}

func (f *faultyStore) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	return faulty(f, "Issue", func() (baton.Token, error) { return f.inner.Issue(ctx, root) })
}

func (f *faultyStore) ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	return faulty(f, "ClaimRoot", func() (baton.Token, error) { return f.inner.ClaimRoot(ctx, id, now) })
}

func (f *faultyStore) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	return faulty(f, "Get", func() (baton.Token, error) { return f.inner.Get(ctx, id) })
}

func (f *faultyStore) ListByConversation(ctx context.Context, conversation baton.TokenID, page store.Page) ([]baton.Token, error) {
	return faulty(f, "ListByConversation", func() ([]baton.Token, error) { return f.inner.ListByConversation(ctx, conversation, page) })
}

func (f *faultyStore) ListByDestination(ctx context.Context, destination string, page store.Page) ([]baton.Token, error) {
	return faulty(f, "ListByDestination", func() ([]baton.Token, error) { return f.inner.ListByDestination(ctx, destination, page) })
}

func (f *faultyStore) ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	return faulty(f, "ExpireRoots", func() (int, error) { return f.inner.ExpireRoots(ctx, before, limit) })
}
