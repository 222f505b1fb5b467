package model

import "fmt"

// findCycle looks for an execution that goes round forever. The quiescence
// invariants are checked only where no actor can move; a livelock (say, an
// outbox entry that is picked and left over and over) would never reach
// such a state and so would slip past them. With no cycle, the reachable
// state graph is finite and acyclic, so every execution ends in a quiet
// state, where those invariants were checked.
//
// It is a depth-first search from the initial state over the states the
// breadth-first search stored; a successor that is on the current path
// closes a cycle.
func findCycle(p program, t *stateTable) *Violation {
	const (
		white = iota
		onPath
		done
	)
	type frame struct {
		id   int32
		s    state
		acts []action
		next int // index in acts of the next action to follow
	}
	color := make([]uint8, t.len())
	var path []frame
	depth := 0
	push := func(id int32) {
		if depth == len(path) {
			path = append(path, frame{})
		}
		f := &path[depth]
		f.id, f.s, f.next = id, decode(t.keys[id]), 0
		f.acts = f.s.enabled(p, f.acts[:0])
		color[id] = onPath
		depth++
	}
	push(0)
	for depth > 0 {
		f := &path[depth-1]
		if f.next == len(f.acts) {
			color[f.id] = done
			depth--
			continue
		}
		act := f.acts[f.next]
		f.next++
		ns := f.s
		ns.apply(p, act, false)
		id := t.find(ns.encode())
		if id < 0 {
			panic("model: successor of a stored state was not stored")
		}
		switch color[id] {
		case white:
			push(id)
		case onPath:
			acts := make([]action, 0, depth)
			back := 0
			for i := range depth {
				acts = append(acts, path[i].acts[path[i].next-1])
				if path[i].id == id {
					back = i
				}
			}
			lines := replay(p, acts)
			lines = append(lines, fmt.Sprintf("(back to the state before step %d: this repeats forever)", back+1))
			return &Violation{
				Invariant: "an execution cycles forever and never becomes quiet (livelock)",
				Trace:     lines,
			}
		}
	}
	return nil
}
