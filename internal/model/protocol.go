package model

import "fmt"

// Variant selects the ordering of the protocol steps that the model runs.
// Correct is protocol.md 3.2; the others are the simplifications of protocol.md 3.3,
// each of which the checker must catch.
type Variant int

const (
	// Correct is the protocol of protocol.md 3.2.
	Correct Variant = iota
	// TokenBeforeEntity reads the token before loading the entity.
	TokenBeforeEntity
	// SplitTransition checks the parent, creates the child tokens and deletes
	// the parent as three separate token store operations instead of one
	// atomic transition.
	SplitTransition
	// RemoveBeforeConsume removes the outbox entry before the transition.
	RemoveBeforeConsume
	// DeferredRemoval is the correct protocol with step 7 after step 8
	// (engine.Config.DeferRemovals): the worker acks once it dispatched and
	// removes the entry afterwards; a crash after the ack is not
	// redelivered and leaves the entry to the sweeper.
	DeferredRemoval
	// ExpiryWithoutClaim commits the activity of a signal whose root
	// token may expire without claiming the root first (what baton did
	// before ClaimRoot): expiry can then delete the root between the
	// commit and the transition, and the children are never created.
	ExpiryWithoutClaim
	// FastPath is the protocol where tokens and entities are in one store
	// (protocol.md 3.7): steps 1 and 3 are one snapshot read, and steps 4
	// and 5 one atomic write that commits the entity only if its version
	// is current and the token live, and consumes the token only if the
	// entity commits. An expiring root is not claimed: its consumption
	// is part of the commit.
	FastPath
	// FastPathDeferredRemoval is FastPath with the ack before the removal,
	// as DeferredRemoval.
	FastPathDeferredRemoval
	// FastPathChain is FastPath where W2 takes its copy of S1 and S2
	// together, in one batch (protocol.md 3.2, chains): when its snapshot
	// finds no entry for either and both tokens live, it commits the
	// entity once with both outbox entries, consuming both tokens and
	// creating both children, or, if the entity moved or a token went,
	// nothing; then it dispatches both children, removes both entries in
	// one compare-and-set and acks both. A batch that is no chain, or a
	// refused one, it processes one signal after the other as FastPath.
	FastPathChain
)

// Variants lists every variant, the correct one first.
func Variants() []Variant {
	return []Variant{Correct, TokenBeforeEntity, SplitTransition, RemoveBeforeConsume, DeferredRemoval, ExpiryWithoutClaim,
		FastPath, FastPathDeferredRemoval, FastPathChain}
}

func (v Variant) String() string {
	switch v {
	case Correct:
		return "Correct"
	case TokenBeforeEntity:
		return "TokenBeforeEntity"
	case SplitTransition:
		return "SplitTransition"
	case RemoveBeforeConsume:
		return "RemoveBeforeConsume"
	case DeferredRemoval:
		return "DeferredRemoval"
	case ExpiryWithoutClaim:
		return "ExpiryWithoutClaim"
	case FastPath:
		return "FastPath"
	case FastPathDeferredRemoval:
		return "FastPathDeferredRemoval"
	case FastPathChain:
		return "FastPathChain"
	}
	return fmt.Sprintf("Variant(%d)", int(v))
}

// step is an actor's program counter: the next atomic action it will take.
type step uint8

const (
	stepLoad             step = iota // load entity: version and outbox snapshot
	stepCheckOutbox                  // outbox entry for t? then finish it
	stepReadToken                    // token t live? absent means duplicate, expired means refused
	stepClaim                        // claim t1, the expiring root: it stops expiring
	stepCommit                       // run handler, CAS commit state + outbox[t]
	stepTransition                   // atomic: consume t, create children
	stepCheckParent                  // SplitTransition: is t live?
	stepCreateChildren               // SplitTransition: create children
	stepDeleteParent                 // SplitTransition: delete t
	stepDispatch                     // send the children signals
	stepRemove                       // CAS remove outbox[t]
	stepReloadForRemove              // after a failed removal CAS
	stepAck                          // ack the signal to the transport
	stepAckEarly                     // DeferredRemoval: ack, then go on to remove
	stepDone                         // worker finished (acked)
	stepIdle                         // sweeper looking for an entry to finish
	stepLoadWithToken                // fast path: entity and token t in one snapshot
	stepCommitTransition             // fast path, atomic: CAS commit state + outbox[t] and consume t, create children
	stepLoadBatch                    // chain: entity and both tokens in one snapshot
	stepCommitChain                  // chain, atomic: CAS commit both activities and entries, consume both tokens, create both children
	stepDispatchChain1               // chain: send S1's child
	stepDispatchChain2               // chain: send S2's child
	stepRemoveChain                  // chain: CAS remove both outbox entries
	stepAckChain                     // chain: ack both signals
	numSteps
)

// program is the order in which a variant runs the steps.
type program struct {
	start  step           // first step of a delivery, and after a commit conflict
	finish step           // where an existing outbox entry is driven from; the sweeper's entry point
	next   [numSteps]step // the step after each one on the normal path
	// ackedBeforeRemove: a worker at the removal steps has acked already,
	// so a crash there is not redelivered.
	ackedBeforeRemove bool
	// waitForEmptyOutbox: a mutant in which a worker commits only when no
	// other signal's outbox entry is pending on the entity.
	waitForEmptyOutbox bool
	// Fast-path mutants: the token is consumed although the entity's
	// compare-and-set failed (no guard), or the entity is committed
	// although the token was not live.
	consumeOnConflict, commitWithoutToken bool
	// chain: W2 (batchWorker) takes S1 and S2 in one batch.
	chain bool
	// Chain mutants: the chain commits while one of its tokens is gone
	// (and consumes the other), or records the outbox entry of S1 only.
	chainWithATokenGone, chainOneEntry bool
}

// batchWorker is the worker that takes S1 and S2 together when the
// program has chains; its actor state then also says which signal it
// processes alone and whether S2 is still to come.
const batchWorker = 1

// startOf is where worker id begins a delivery.
func (p program) startOf(id int) step {
	if p.chain && id == batchWorker {
		return stepLoadBatch
	}
	return p.start
}

func programFor(v Variant) program {
	var seq []step
	switch v {
	case Correct:
		seq = []step{stepLoad, stepCheckOutbox, stepReadToken, stepClaim, stepCommit, stepTransition, stepDispatch, stepRemove, stepAck}
	case ExpiryWithoutClaim:
		seq = []step{stepLoad, stepCheckOutbox, stepReadToken, stepCommit, stepTransition, stepDispatch, stepRemove, stepAck}
	case TokenBeforeEntity:
		seq = []step{stepReadToken, stepClaim, stepLoad, stepCheckOutbox, stepCommit, stepTransition, stepDispatch, stepRemove, stepAck}
	case SplitTransition:
		seq = []step{stepLoad, stepCheckOutbox, stepReadToken, stepClaim, stepCommit, stepCheckParent, stepCreateChildren, stepDeleteParent, stepDispatch, stepRemove, stepAck}
	case RemoveBeforeConsume:
		seq = []step{stepLoad, stepCheckOutbox, stepReadToken, stepClaim, stepCommit, stepRemove, stepTransition, stepDispatch, stepAck}
	case DeferredRemoval:
		seq = []step{stepLoad, stepCheckOutbox, stepReadToken, stepClaim, stepCommit, stepTransition, stepDispatch, stepAckEarly, stepRemove, stepDone}
	case FastPath:
		seq = []step{stepLoadWithToken, stepCommitTransition, stepDispatch, stepRemove, stepAck}
	case FastPathDeferredRemoval:
		seq = []step{stepLoadWithToken, stepCommitTransition, stepDispatch, stepAckEarly, stepRemove, stepDone}
	case FastPathChain:
		// The program of a signal processed alone; the chain's steps are
		// the batch worker's own.
		seq = []step{stepLoadWithToken, stepCommitTransition, stepDispatch, stepRemove, stepAck}
	default:
		panic(fmt.Sprintf("model: unknown variant %d", int(v)))
	}
	p := program{start: seq[0], ackedBeforeRemove: v == DeferredRemoval || v == FastPathDeferredRemoval, chain: v == FastPathChain}
	for i := 0; i+1 < len(seq); i++ {
		p.next[seq[i]] = seq[i+1]
		if seq[i] == stepCommit {
			p.finish = seq[i+1]
		}
	}
	if v == FastPath || v == FastPathDeferredRemoval || v == FastPathChain {
		// An entry found at load, or picked by the sweeper, is finished
		// as on the plain path: the transition, then the rest.
		p.finish = stepTransition
		p.next[stepTransition] = stepDispatch
	}
	p.next[stepAck] = stepDone
	return p
}

// The modelled system: one entity, two incoming signals for it, each of
// which emits one child signal when applied. t1 is a root token that may
// expire: the clock may pass its expiry at any moment, after which an
// expirer may delete it unless it was claimed.
const (
	numSignals  = 2 // S1 (token t1) and S2 (token t2)
	maxGen      = 2 // child generations kept: a second application is already a violation
	numWorkers  = 3
	sweeperID   = numWorkers
	numActors   = numWorkers + 1 // workers and the sweeper; receivers come after
	clockID     = numActors + numSignals*maxGen
	expirerID   = clockID + 1
	expiringSig = 0 // S1's token t1 is the expiring root
)

// workerSignal is the signal each worker was delivered: W1 and W2 get
// copies of S1, W3 gets S2.
var workerSignal = [numWorkers]uint8{0, 0, 1}

// childToken is a token of a signal emitted by an applied activity. A
// second application of a signal (a violation) would emit a child with a
// fresh id, so children are indexed by signal and generation.
type childToken struct {
	created    uint8 // times it came into existence (absent -> live)
	applied    uint8 // times its receiver applied its activity
	live       bool
	consumed   bool
	dispatched bool // at least one copy was sent; the transport may duplicate it
}

// actor is the local state of a worker or the sweeper. A crash wipes it.
type actor struct {
	pc      step
	sig     uint8 // sweeper: the entry being finished; batch worker: the signal it processes alone; other workers: fixed
	gen     uint8 // outbox entry snapshot for the signal: 0 none, else its generation
	gen2    uint8 // batch worker in a chain: S2's generation (gen is S1's)
	pending bool  // batch worker processing S1 alone: S2 comes next
	fresh   bool  // the loaded entity version is still the current one
	crashed bool  // used its one crash
}

// state is one global state of the model. Entity versions are abstracted to
// a "fresh" bit per actor: versions are only ever compared with the current
// one, so this is exact and keeps the state space finite.
type state struct {
	outbox     [numSignals]uint8 // generation of outbox[t], 0 = no entry
	applied    [numSignals]uint8 // committed applications of each signal's activity
	parentLive [numSignals]bool  // t1, t2 live in the token store
	child      [numSignals][maxGen]childToken
	actors     [numActors]actor
	// Root expiry of t1: the clock passed its expiry; it was claimed (it
	// no longer expires); the expirer deleted it.
	expired, claimed, expiredAway bool
}

// key is the packed, canonical encoding of a state, used in the visited set.
type key [2]uint64

type packer struct {
	k   key
	bit uint
}

func (p *packer) put(v uint64, width uint) {
	w := p.bit / 64
	off := p.bit % 64
	p.k[w] |= v << off
	if off+width > 64 {
		p.k[w+1] |= v >> (64 - off)
	}
	p.bit += width
}

func (p *packer) get(width uint) uint64 {
	w := p.bit / 64
	off := p.bit % 64
	v := p.k[w] >> off
	if off+width > 64 {
		v |= p.k[w+1] << (64 - off)
	}
	p.bit += width
	return v & (1<<width - 1)
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// Field widths. Counters saturate well above 1, the largest legal value.
const (
	wCount = 2
	wStep  = 5
)

func (s *state) encode() key {
	var p packer
	for i := range numSignals {
		p.put(uint64(s.outbox[i]), wCount)
		p.put(uint64(s.applied[i]), wCount)
		p.put(b2u(s.parentLive[i]), 1)
		for g := range maxGen {
			c := &s.child[i][g]
			p.put(uint64(c.created), wCount)
			p.put(uint64(c.applied), wCount)
			p.put(b2u(c.live), 1)
			p.put(b2u(c.consumed), 1)
			p.put(b2u(c.dispatched), 1)
		}
	}
	for i := range numActors {
		a := &s.actors[i]
		p.put(uint64(a.pc), wStep)
		p.put(uint64(a.gen), wCount)
		p.put(b2u(a.fresh), 1)
		p.put(b2u(a.crashed), 1)
		if i == sweeperID || i == batchWorker {
			p.put(uint64(a.sig), 1)
		}
		if i == batchWorker {
			p.put(uint64(a.gen2), wCount)
			p.put(b2u(a.pending), 1)
		}
	}
	p.put(b2u(s.expired), 1)
	p.put(b2u(s.claimed), 1)
	p.put(b2u(s.expiredAway), 1)
	if p.bit > 128 {
		panic("model: state does not fit its key")
	}
	return p.k
}

func decode(k key) state {
	var s state
	p := packer{k: k}
	for i := range numSignals {
		s.outbox[i] = uint8(p.get(wCount))
		s.applied[i] = uint8(p.get(wCount))
		s.parentLive[i] = p.get(1) == 1
		for g := range maxGen {
			c := &s.child[i][g]
			c.created = uint8(p.get(wCount))
			c.applied = uint8(p.get(wCount))
			c.live = p.get(1) == 1
			c.consumed = p.get(1) == 1
			c.dispatched = p.get(1) == 1
		}
	}
	for i := range numActors {
		a := &s.actors[i]
		a.pc = step(p.get(wStep))
		a.gen = uint8(p.get(wCount))
		a.fresh = p.get(1) == 1
		a.crashed = p.get(1) == 1
		if i == sweeperID || i == batchWorker {
			a.sig = uint8(p.get(1))
		} else {
			a.sig = workerSignal[i]
		}
		if i == batchWorker {
			a.gen2 = uint8(p.get(wCount))
			a.pending = p.get(1) == 1
		}
	}
	s.expired = p.get(1) == 1
	s.claimed = p.get(1) == 1
	s.expiredAway = p.get(1) == 1
	return s
}

func initialState(p program) state {
	var s state
	for i := range numSignals {
		s.parentLive[i] = true
	}
	for i := range numWorkers {
		s.actors[i] = actor{pc: p.startOf(i), sig: workerSignal[i]}
	}
	s.actors[sweeperID] = actor{pc: stepIdle}
	return s
}

// An action is one atomic move of one actor, packed into a byte so that the
// search can keep one per state for rebuilding counterexamples.
type action uint8

const (
	kindStep  = iota // the actor's next step
	kindCrash        // the actor crashes and restarts (redelivery)
	kindPick         // sweeper: pick outbox[t_arg] to finish; receiver: take a delivered child
)

// Receivers of child signals are actors numActors.. numActors+numSignals*maxGen-1.
func mkAction(actorID, kind, arg int) action { return action(actorID<<4 | kind<<2 | arg) }
func (a action) actor() int                  { return int(a >> 4) }
func (a action) kind() int                   { return int(a>>2) & 3 }
func (a action) arg() int                    { return int(a) & 3 }

// enabled appends every action possible in s.
func (s *state) enabled(p program, buf []action) []action {
	for i := range numWorkers {
		a := &s.actors[i]
		if a.pc == stepDone {
			continue
		}
		buf = append(buf, mkAction(i, kindStep, 0))
		// A crash at the first step with nothing loaded changes nothing.
		if !a.crashed && a.pc != p.startOf(i) {
			buf = append(buf, mkAction(i, kindCrash, 0))
		}
	}
	sw := &s.actors[sweeperID]
	if sw.pc == stepIdle {
		for sig := range numSignals {
			if s.outbox[sig] != 0 {
				buf = append(buf, mkAction(sweeperID, kindPick, sig))
			}
		}
	} else {
		buf = append(buf, mkAction(sweeperID, kindStep, 0))
		if !sw.crashed {
			buf = append(buf, mkAction(sweeperID, kindCrash, 0))
		}
	}
	for sig := range numSignals {
		for g := range maxGen {
			c := &s.child[sig][g]
			// A duplicate of a child whose token is absent is dropped by its
			// receiver and changes nothing, so only live ones are actions.
			if c.dispatched && c.live {
				buf = append(buf, mkAction(numActors+sig*maxGen+g, kindPick, 0))
			}
		}
	}
	if !s.expired {
		buf = append(buf, mkAction(clockID, kindStep, 0))
	}
	if s.expired && !s.claimed && s.parentLive[expiringSig] {
		buf = append(buf, mkAction(expirerID, kindStep, 0))
	}
	return buf
}

// expiredNow reports whether a read of t1 sees it expired: the clock passed
// its expiry and it was not claimed (a claimed root no longer expires).
func (s *state) expiredNow(sig uint8) bool {
	return sig == expiringSig && s.expired && !s.claimed
}

func actorName(id int) string {
	switch {
	case id < numWorkers:
		return fmt.Sprintf("W%d", id+1)
	case id == sweeperID:
		return "SW"
	case id == clockID:
		return "CLOCK"
	case id == expirerID:
		return "EXP"
	default:
		r := id - numActors
		return "R(" + childName(r/maxGen, uint8(r%maxGen+1)) + ")"
	}
}

func tokenName(sig uint8) string  { return fmt.Sprintf("t%d", sig+1) }
func signalName(sig uint8) string { return fmt.Sprintf("S%d", sig+1) }

// childName names the child signal (and token) emitted by the gen-th
// application of sig: c1, and c1' for a second application.
func childName(sig int, gen uint8) string {
	n := fmt.Sprintf("c%d", sig+1)
	for range int(gen) - 1 {
		n += "'"
	}
	return n
}

// apply performs action act on s. With describe it also returns one line
// saying what happened; the search calls it without, for speed.
func (s *state) apply(p program, act action, describe bool) string {
	id := act.actor()
	switch id {
	case clockID:
		s.expired = true
		if describe {
			return "CLOCK: t1's expiry passes"
		}
		return ""
	case expirerID:
		s.parentLive[expiringSig] = false
		s.expiredAway = true
		if describe {
			return "EXP: delete t1, an expired unclaimed root"
		}
		return ""
	}
	if id >= numActors {
		r := id - numActors
		c := &s.child[r/maxGen][r%maxGen]
		c.live = false
		c.consumed = true
		c.applied++
		if describe {
			return fmt.Sprintf("%s: receive %s, token live -> consume it, apply its activity (%dx)",
				actorName(id), childName(r/maxGen, uint8(r%maxGen+1)), c.applied)
		}
		return ""
	}
	a := &s.actors[id]
	switch act.kind() {
	case kindCrash:
		what := "redelivery restarts it"
		acked := p.ackedBeforeRemove && (a.pc == stepRemove || a.pc == stepReloadForRemove)
		restart, sig := p.startOf(id), a.sig
		switch {
		case restart == stepLoadBatch && sig == 1 && !a.pending:
			restart = p.start // S1 was acked alone: only S2 is redelivered
		case restart == stepLoadBatch:
			sig = 0
		}
		*a = actor{pc: restart, sig: sig, crashed: true}
		switch {
		case id == sweeperID:
			*a = actor{pc: stepIdle, crashed: true}
			what = "its entry is left to be picked again"
		case acked:
			*a = actor{pc: stepDone, sig: a.sig}
			what = "acked already, so no redelivery: its entry is left to the sweeper"
		}
		if describe {
			return fmt.Sprintf("%s: crash, local state lost (%s)", actorName(id), what)
		}
		return ""
	case kindPick:
		sig := uint8(act.arg())
		*a = actor{pc: p.finish, sig: sig, gen: s.outbox[sig], fresh: true, crashed: a.crashed}
		if describe {
			return fmt.Sprintf("%s: load entity, pick outbox[%s]={%s} to finish", actorName(id), tokenName(sig), childName(int(sig), a.gen))
		}
		return ""
	}
	return s.step(p, id, describe)
}

// advance moves an actor to the step after from; past the finishing block a
// worker goes on to ack, the sweeper goes back to idle.
func (s *state) advance(p program, id int, from step) {
	a := &s.actors[id]
	n := p.next[from]
	if id == sweeperID {
		if n == stepAckEarly { // the sweeper has nothing to ack
			n = p.next[n]
		}
		if n == stepAck || n == stepDone {
			*a = actor{pc: stepIdle, crashed: a.crashed}
			return
		}
	}
	if n == stepDone {
		// As after stepAck: nothing local matters any more.
		*a = actor{pc: stepDone, sig: a.sig}
		return
	}
	a.pc = n
}

// entityCommitted records a successful entity compare-and-set by actor id:
// every other actor's loaded version is now stale.
func (s *state) entityCommitted(id int) {
	for i := range numActors {
		s.actors[i].fresh = false
	}
	s.actors[id].fresh = true
}

func (s *state) createChild(sig, gen uint8) {
	c := &s.child[sig][gen-1]
	if !c.live {
		c.created++
		c.live = true
	}
}

func (s *state) step(p program, id int, describe bool) string {
	a := &s.actors[id]
	sig := a.sig
	var t, msg string
	if describe {
		t = tokenName(sig)
	}
	switch pc := a.pc; pc {
	case stepLoad:
		a.gen = s.outbox[sig]
		a.fresh = true
		s.advance(p, id, pc)
		if describe {
			if a.gen == 0 {
				msg = fmt.Sprintf("load entity (no outbox entry for %s)", t)
			} else {
				msg = fmt.Sprintf("load entity (outbox[%s]={%s})", t, childName(int(sig), a.gen))
			}
		}
	case stepLoadWithToken:
		// One snapshot: what follows are local decisions on it.
		a.gen = s.outbox[sig]
		a.fresh = true
		switch {
		case a.gen != 0:
			a.pc = p.finish
			if describe {
				msg = fmt.Sprintf("load entity with token %s: outbox[%s]={%s} exists -> finish it", t, t, childName(int(sig), a.gen))
			}
		case !s.parentLive[sig]:
			a.pc = stepAck
			if describe {
				msg = fmt.Sprintf("load entity with token %s: no entry, token absent (duplicate, drop)", t)
			}
		case s.expiredNow(sig):
			a.pc = stepAck
			if describe {
				msg = fmt.Sprintf("load entity with token %s: no entry, token live but expired (refuse, park)", t)
			}
		default:
			s.advance(p, id, pc)
			if describe {
				msg = fmt.Sprintf("load entity with token %s: no entry, token live", t)
			}
		}
	case stepCommitTransition:
		switch {
		case !a.fresh:
			if p.consumeOnConflict && s.parentLive[sig] {
				s.parentLive[sig] = false
			}
			a.pc = p.start
			a.gen = 0
			if describe {
				msg = "run handler, commit entity with transition -> version conflict, nothing written, back to step 1"
			}
		case !s.parentLive[sig] && !p.commitWithoutToken:
			a.pc = stepAck
			if describe {
				msg = fmt.Sprintf("run handler, commit entity with transition -> %s absent, nothing written (duplicate, drop)", t)
			}
		default:
			s.applied[sig]++
			gen := s.applied[sig]
			s.outbox[sig] = gen
			a.gen = gen
			s.entityCommitted(id)
			if s.parentLive[sig] {
				s.parentLive[sig] = false
				s.createChild(sig, gen)
			}
			s.advance(p, id, pc)
			if describe {
				msg = fmt.Sprintf("run handler, commit entity with outbox[%s]={%s}, consume %s, create %s -> ok (%s applied %dx)",
					t, childName(int(sig), gen), t, childName(int(sig), gen), signalName(sig), gen)
			}
		}
	case stepLoadBatch, stepCommitChain, stepDispatchChain1, stepDispatchChain2, stepRemoveChain, stepAckChain:
		msg = s.chainStep(p, id, describe)
	case stepCheckOutbox:
		if a.gen != 0 {
			a.pc = p.finish
			if describe {
				msg = fmt.Sprintf("check outbox: entry for %s exists -> finish it", t)
			}
		} else {
			s.advance(p, id, pc)
			if describe {
				msg = fmt.Sprintf("check outbox: no entry for %s", t)
			}
		}
	case stepReadToken:
		switch {
		case s.parentLive[sig] && s.expiredNow(sig):
			a.pc = stepAck // refused: parked, its token left to expiry
			if describe {
				msg = fmt.Sprintf("read token %s -> live but expired (refuse, park)", t)
			}
		case s.parentLive[sig]:
			s.advance(p, id, pc)
			if describe {
				msg = fmt.Sprintf("read token %s -> live", t)
			}
		default:
			a.pc = stepAck
			if describe {
				msg = fmt.Sprintf("read token %s -> absent (duplicate, drop)", t)
			}
		}
	case stepClaim:
		switch {
		case sig != expiringSig:
			s.advance(p, id, pc) // t2 does not expire: nothing to claim
			if describe {
				msg = fmt.Sprintf("%s does not expire, nothing to claim", t)
			}
		case !s.parentLive[sig]:
			a.pc = stepAck
			if describe {
				msg = fmt.Sprintf("claim %s -> absent (duplicate, drop)", t)
			}
		case s.expiredNow(sig):
			a.pc = stepAck
			if describe {
				msg = fmt.Sprintf("claim %s -> expired (refuse, park)", t)
			}
		default:
			s.claimed = true
			s.advance(p, id, pc)
			if describe {
				msg = fmt.Sprintf("claim %s -> it no longer expires", t)
			}
		}
	case stepCommit:
		if p.waitForEmptyOutbox && s.outbox[1-sig] != 0 {
			if describe {
				msg = "another signal's outbox entry is pending: wait"
			}
			break
		}
		if a.fresh {
			s.applied[sig]++
			gen := s.applied[sig]
			s.outbox[sig] = gen
			a.gen = gen
			s.entityCommitted(id)
			s.advance(p, id, pc)
			if describe {
				msg = fmt.Sprintf("run handler, commit entity with outbox[%s]={%s} -> ok (%s applied %dx)",
					t, childName(int(sig), gen), signalName(sig), gen)
			}
		} else {
			a.pc = p.start
			a.gen = 0
			if describe {
				msg = "run handler, commit entity -> version conflict, back to step 1"
			}
		}
	case stepTransition:
		if s.parentLive[sig] {
			s.parentLive[sig] = false
			s.createChild(sig, a.gen)
			if describe {
				msg = fmt.Sprintf("transition: consume %s, create %s", t, childName(int(sig), a.gen))
			}
		} else {
			if describe {
				msg = fmt.Sprintf("transition: %s already absent, carry on", t)
			}
		}
		s.advance(p, id, pc)
	case stepCheckParent:
		if s.parentLive[sig] {
			s.advance(p, id, pc)
			if describe {
				msg = fmt.Sprintf("read token %s before creating children -> live", t)
			}
		} else {
			a.pc = stepDispatch
			if describe {
				msg = fmt.Sprintf("read token %s before creating children -> absent, carry on", t)
			}
		}
	case stepCreateChildren:
		existed := s.child[sig][a.gen-1].live
		s.createChild(sig, a.gen)
		s.advance(p, id, pc)
		if describe {
			msg = fmt.Sprintf("create token %s", childName(int(sig), a.gen))
			if existed {
				msg += " (already live, no-op)"
			}
		}
	case stepDeleteParent:
		s.parentLive[sig] = false
		s.advance(p, id, pc)
		if describe {
			msg = fmt.Sprintf("delete token %s", t)
		}
	case stepDispatch:
		s.child[sig][a.gen-1].dispatched = true
		s.advance(p, id, pc)
		if describe {
			msg = fmt.Sprintf("dispatch %s", childName(int(sig), a.gen))
		}
	case stepRemove:
		if a.fresh {
			s.outbox[sig] = 0
			s.entityCommitted(id)
			s.advance(p, id, pc)
			if describe {
				msg = fmt.Sprintf("remove outbox[%s] -> ok", t)
			}
		} else {
			a.pc = stepReloadForRemove
			if describe {
				msg = fmt.Sprintf("remove outbox[%s] -> version conflict", t)
			}
		}
	case stepReloadForRemove:
		a.fresh = true
		if s.outbox[sig] == 0 {
			s.advance(p, id, stepRemove)
			if describe {
				msg = fmt.Sprintf("reload entity: outbox[%s] already gone, fine", t)
			}
		} else {
			a.pc = stepRemove
			if describe {
				msg = fmt.Sprintf("reload entity: outbox[%s] still there, retry removal", t)
			}
		}
	case stepAckEarly:
		s.advance(p, id, pc)
		if describe {
			msg = fmt.Sprintf("ack %s (the outbox entry is removed next)", signalName(sig))
		}
	case stepAck:
		if a.pending {
			*a = actor{pc: p.start, sig: 1, crashed: a.crashed}
			if describe {
				msg = fmt.Sprintf("ack %s; now %s alone", signalName(sig), signalName(1))
			}
			break
		}
		// Nothing local matters once acked: clear it so that equal
		// situations share one state.
		*a = actor{pc: stepDone, sig: a.sig}
		if describe {
			msg = fmt.Sprintf("ack %s", signalName(sig))
		}
	default:
		panic(fmt.Sprintf("model: %s has no step at pc %d", actorName(id), a.pc))
	}
	if describe {
		return actorName(id) + ": " + msg
	}
	return ""
}

// chainStep is a step of the batch worker on a chain of S1 and S2.
func (s *state) chainStep(p program, id int, describe bool) string {
	a := &s.actors[id]
	alone := func(why string) string {
		*a = actor{pc: p.start, sig: 0, pending: true, crashed: a.crashed}
		return why + ": S1, then S2, alone"
	}
	var msg string
	switch a.pc {
	case stepLoadBatch:
		admitted := func(sig uint8) bool { return s.outbox[sig] == 0 && s.parentLive[sig] && !s.expiredNow(sig) }
		if admitted(0) && admitted(1) {
			a.fresh = true
			a.pc = stepCommitChain
			msg = "load entity with t1 and t2: no entries, both live -> a chain"
		} else {
			msg = alone("load entity with t1 and t2: not a chain")
		}
	case stepCommitChain:
		tokensLive := s.parentLive[0] && s.parentLive[1]
		if p.chainWithATokenGone {
			tokensLive = s.parentLive[0] || s.parentLive[1]
		}
		if !a.fresh || !tokensLive {
			msg = alone("run both handlers, commit the chain -> refused (entity moved or a token gone), nothing written")
			break
		}
		for sig := range uint8(numSignals) {
			s.applied[sig]++
			if sig == 0 || !p.chainOneEntry {
				s.outbox[sig] = s.applied[sig]
			}
			if s.parentLive[sig] {
				s.parentLive[sig] = false
				s.createChild(sig, s.applied[sig])
			}
		}
		a.gen, a.gen2 = s.applied[0], s.applied[1]
		s.entityCommitted(id)
		a.pc = stepDispatchChain1
		if describe {
			msg = fmt.Sprintf("run both handlers, commit entity with outbox[t1]={%s} and outbox[t2]={%s}, consume t1 and t2, create both -> ok",
				childName(0, a.gen), childName(1, a.gen2))
		}
	case stepDispatchChain1:
		s.child[0][a.gen-1].dispatched = true
		a.pc = stepDispatchChain2
		msg = "dispatch " + childName(0, a.gen)
	case stepDispatchChain2:
		s.child[1][a.gen2-1].dispatched = true
		a.pc = stepRemoveChain
		msg = "dispatch " + childName(1, a.gen2)
	case stepRemoveChain:
		if !a.fresh {
			msg = alone("remove outbox[t1] and outbox[t2] -> version conflict")
			break
		}
		s.outbox[0], s.outbox[1] = 0, 0
		s.entityCommitted(id)
		a.pc = stepAckChain
		msg = "remove outbox[t1] and outbox[t2] -> ok"
	case stepAckChain:
		*a = actor{pc: stepDone, sig: a.sig}
		msg = "ack S1 and S2"
	}
	if !describe {
		return ""
	}
	return msg
}
