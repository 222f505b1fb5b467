package model

// stateTable holds every distinct state found, in discovery order, with how
// each was first reached. Discovery order is also the breadth-first queue,
// so the search needs no separate frontier. An open-addressing index of
// int32 positions keeps the visited set at a few bytes per state on top of
// the packed keys, where a map would hold a second copy of every key.
type stateTable struct {
	keys    []key
	parents []int32  // position of the state it was first reached from, -1 for the initial state
	actions []action // the action that reached it from its parent
	slots   []int32  // position+1 of the state hashed there, 0 = empty
}

func newStateTable() *stateTable {
	return &stateTable{slots: make([]int32, 1<<16)}
}

func (t *stateTable) len() int { return len(t.keys) }

func hashKey(k key) uint64 {
	h := k[0]*0x9e3779b97f4a7c15 ^ k[1]
	h ^= h >> 32
	h *= 0xd6e8feb86659fd93
	h ^= h >> 32
	return h
}

// add stores k, reached from parent by act, unless it is already there.
// It reports whether k is new.
func (t *stateTable) add(k key, parent int32, act action) bool {
	mask := uint64(len(t.slots) - 1)
	for i := hashKey(k) & mask; ; i = (i + 1) & mask {
		pos := t.slots[i]
		if pos == 0 {
			t.slots[i] = int32(len(t.keys) + 1)
			break
		}
		if t.keys[pos-1] == k {
			return false
		}
	}
	t.keys = append(t.keys, k)
	t.parents = append(t.parents, parent)
	t.actions = append(t.actions, act)
	// Keep the load at most one half so that probes stay short.
	if 2*len(t.keys) > len(t.slots) {
		t.grow()
	}
	return true
}

// find returns the position of k, or -1 if it is not there.
func (t *stateTable) find(k key) int32 {
	mask := uint64(len(t.slots) - 1)
	for i := hashKey(k) & mask; ; i = (i + 1) & mask {
		pos := t.slots[i]
		if pos == 0 {
			return -1
		}
		if t.keys[pos-1] == k {
			return pos - 1
		}
	}
}

func (t *stateTable) grow() {
	t.slots = make([]int32, 2*len(t.slots))
	mask := uint64(len(t.slots) - 1)
	for pos, k := range t.keys {
		i := hashKey(k) & mask
		for t.slots[i] != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = int32(pos + 1)
	}
}
