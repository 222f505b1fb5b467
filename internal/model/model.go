package model

import (
	"fmt"
	"strings"
)

// Options bound a run of the checker.
type Options struct {
	// MaxStates stops the search after this many distinct states, leaving
	// Result.Complete false. Zero means no limit.
	MaxStates int
}

// Result is the outcome of one exhaustive search.
type Result struct {
	Variant Variant
	// States is the number of distinct states reached.
	States int
	// Complete reports that every reachable state was explored (or a
	// violation was found) rather than the search hitting MaxStates.
	Complete bool
	// Violation is the first broken invariant found, nil if none. Search
	// is breadth first, so its trace is a shortest one.
	Violation *Violation
}

// Violation is a broken invariant and the interleaving that breaks it.
type Violation struct {
	Invariant string
	// Trace holds one line per atomic action, from the initial state to
	// the violating state.
	Trace []string
}

func (v *Violation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invariant broken: %s\n", v.Invariant)
	for i, line := range v.Trace {
		fmt.Fprintf(&b, "%3d. %s\n", i+1, line)
	}
	return b.String()
}

// Check explores every interleaving of the model for variant v breadth
// first and checks the invariants of protocol.md 3.5 in every state, and the
// quiescence ones in every state where no actor can move. It panics on a
// variant not listed by Variants.
func Check(v Variant, opts Options) Result {
	res := check(programFor(v), opts)
	res.Variant = v
	return res
}

// check searches the model running program p; tests use it to check the
// checker on deliberately broken programs.
func check(p program, opts Options) Result {
	var res Result

	init := initialState(p)
	states := newStateTable()
	states.add(init.encode(), -1, 0)

	var buf []action
	// states.keys grows while it is walked: that is the breadth-first queue.
	for id := 0; id < states.len(); id++ {
		s := decode(states.keys[id])
		buf = s.enabled(p, buf[:0])
		if len(buf) == 0 {
			if msg := s.quiescenceViolation(); msg != "" {
				res.States = states.len()
				res.Complete = true
				res.Violation = &Violation{Invariant: msg, Trace: states.trace(p, id, nil)}
				return res
			}
			continue
		}
		for _, act := range buf {
			ns := s
			ns.apply(p, act, false)
			msg := ns.safetyViolation()
			if msg != "" {
				res.States = states.len() + 1
				res.Complete = true
				res.Violation = &Violation{Invariant: msg, Trace: states.trace(p, id, &act)}
				return res
			}
			if !states.add(ns.encode(), int32(id), act) {
				continue
			}
			// Checked once per new state: it runs the workers on their own.
			if msg := ns.blockedWorker(p); msg != "" {
				res.States = states.len()
				res.Complete = true
				res.Violation = &Violation{Invariant: msg, Trace: states.trace(p, id, &act)}
				return res
			}
			if opts.MaxStates > 0 && states.len() >= opts.MaxStates {
				res.States = states.len()
				return res
			}
		}
	}
	res.States = states.len()
	res.Complete = true
	res.Violation = findCycle(p, states)
	return res
}

// trace replays the actions that first reached state id, plus last if it
// is not nil, from the initial state, describing each.
func (t *stateTable) trace(p program, id int, last *action) []string {
	var acts []action
	if last != nil {
		acts = append(acts, *last)
	}
	for i := id; t.parents[i] >= 0; i = int(t.parents[i]) {
		acts = append(acts, t.actions[i])
	}
	for i, j := 0, len(acts)-1; i < j; i, j = i+1, j-1 {
		acts[i], acts[j] = acts[j], acts[i]
	}
	return replay(p, acts)
}

// replay applies acts from the initial state, describing each.
func replay(p program, acts []action) []string {
	s := initialState(p)
	lines := make([]string, 0, len(acts))
	for _, act := range acts {
		lines = append(lines, s.apply(p, act, true))
	}
	return lines
}

// safetyViolation checks the invariants that must hold in every state and
// returns the first one broken, or "".
func (s *state) safetyViolation() string {
	for sig := range uint8(numSignals) {
		if s.applied[sig] > 1 {
			return fmt.Sprintf("activity of %s applied %d times (at most once)", signalName(sig), s.applied[sig])
		}
		anyChild := false
		for g := range uint8(maxGen) {
			c := &s.child[sig][g]
			name := func() string { return childName(int(sig), g+1) }
			if c.created > 0 {
				anyChild = true
			}
			if c.created > 1 {
				return fmt.Sprintf("token %s created %d times: resurrected after it was consumed (created at most once)", name(), c.created)
			}
			// Generations are numbered by commit, so a child of a later
			// generation than the commits so far came from no committed
			// activity.
			if c.created > 0 && g+1 > s.applied[sig] {
				return fmt.Sprintf("token %s created without a committed activity (garbage token)", name())
			}
			if c.dispatched && g+1 > s.applied[sig] {
				return fmt.Sprintf("signal %s dispatched without a committed activity (ghost)", name())
			}
			if c.applied > 1 {
				return fmt.Sprintf("activity of child signal %s applied %d times (at most once)", name(), c.applied)
			}
		}
		// Expiry only ever rejects: a root whose activity was committed
		// must stay for its transition, or its children never get tokens.
		if sig == expiringSig && s.expiredAway && s.applied[sig] > 0 {
			return fmt.Sprintf("token %s expired away after %s's activity was committed: its child is never created (lost signal)", tokenName(sig), signalName(sig))
		}
		// The parent goes only together with (or after) the creation of
		// its children; otherwise a crash in between loses them.
		if !s.parentLive[sig] && !anyChild && !(sig == expiringSig && s.expiredAway) {
			return fmt.Sprintf("token %s consumed but no child token created (lost signal)", tokenName(sig))
		}
	}
	return ""
}

// soloSteps bounds a worker's run on its own: a whole delivery, with a
// removal that conflicts once, takes fewer steps.
const soloSteps = 32

// blockedWorker checks that every worker, run on its own from s with no
// other actor moving, acks its signal: no worker ever waits for another
// one's outbox entry (or anything else) to be finished. It returns the
// first worker that cannot, or "".
func (s *state) blockedWorker(p program) string {
	for i := range numWorkers {
		solo := *s
		for range soloSteps {
			if solo.actors[i].pc == stepDone {
				break
			}
			solo.apply(p, mkAction(i, kindStep, 0), false)
		}
		if solo.actors[i].pc != stepDone {
			return fmt.Sprintf("%s cannot finish %s on its own: it waits for another actor (blocked)", actorName(i), signalName(workerSignal[i]))
		}
	}
	return ""
}

// quiescenceViolation checks, in a state where no actor can move, that
// all work is done exactly once and nothing is left behind.
func (s *state) quiescenceViolation() string {
	for i := range numWorkers {
		if s.actors[i].pc != stepDone {
			return fmt.Sprintf("quiet but %s never acked", actorName(i))
		}
	}
	for sig := range uint8(numSignals) {
		if sig == expiringSig && s.expiredAway {
			// Expired before it was admitted: refused, never applied, and
			// nothing of it is left.
			if s.applied[sig] != 0 || s.outbox[sig] != 0 || s.child[sig][0].created != 0 {
				return fmt.Sprintf("quiet but %s, whose root expired, left work behind", signalName(sig))
			}
			continue
		}
		if s.applied[sig] != 1 {
			return fmt.Sprintf("quiet but %s applied %d times (exactly once)", signalName(sig), s.applied[sig])
		}
		if s.parentLive[sig] {
			return fmt.Sprintf("quiet but token %s of finished %s still live", tokenName(sig), signalName(sig))
		}
		if s.outbox[sig] != 0 {
			return fmt.Sprintf("quiet but outbox[%s] not removed", tokenName(sig))
		}
		c := &s.child[sig][0]
		name := childName(int(sig), 1)
		switch {
		case c.created != 1:
			return fmt.Sprintf("quiet but token %s created %d times (exactly once)", name, c.created)
		case !c.dispatched:
			return fmt.Sprintf("quiet but signal %s never dispatched (lost)", name)
		case c.live || !c.consumed || c.applied != 1:
			return fmt.Sprintf("quiet but child %s applied %d times (exactly once)", name, c.applied)
		}
	}
	return ""
}
