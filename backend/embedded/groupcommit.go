package embedded

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Group commit.
//
// bbolt's DB.Batch groups writes with a timer: the first write of a group
// waits MaxBatchDelay for others. That delay is paid by every write when
// few run at once; measured here, DB.Batch made 1 and 4 concurrent writers
// 2 to 4 times slower than one transaction per write, so the default
// store would have been slower for the engine's default of 4 workers.
// committer groups without a timer instead, as databases do: one goroutine
// commits whatever writes are queued, and the writes that arrive during
// that commit's fsync form the next group. A lone write commits at once;
// under load, groups grow to the number of writers waiting.
//
// It keeps DB.Batch's contract: the functions of a group run in one
// transaction in arrival order; if one returns an error (or panics), the
// transaction rolls back, the group runs again without it, and the failed
// call runs alone in its caller's goroutine, so a function may run more
// than once and must be idempotent.

// errRunAlone tells a caller that its function failed inside a group and
// must run in a transaction of its own.
var errRunAlone = errors.New("embedded: run alone")

type groupCall struct {
	fn   func(*bolt.Tx) error
	done chan error
}

type committer struct {
	db       *bolt.DB
	maxGroup int
	calls    chan groupCall
	stopped  chan struct{}
}

func newCommitter(db *bolt.DB, maxGroup int) *committer {
	c := &committer{
		db:       db,
		maxGroup: maxGroup,
		calls:    make(chan groupCall, maxGroup),
		stopped:  make(chan struct{}),
	}
	go c.loop()
	return c
}

// update runs fn in a write transaction shared with concurrent callers and
// returns once that transaction committed (or failed).
func (c *committer) update(fn func(*bolt.Tx) error) error {
	call := groupCall{fn: fn, done: make(chan error, 1)}
	c.calls <- call
	err := <-call.done
	if err == errRunAlone {
		err = c.db.Update(fn)
	}
	return err
}

// stop ends the loop once no call is in flight; the caller guarantees that
// no update starts after stop.
func (c *committer) stop() {
	close(c.calls)
	<-c.stopped
}

func (c *committer) loop() {
	defer close(c.stopped)
	group := make([]groupCall, 0, c.maxGroup)
	for first := range c.calls {
		group = append(group[:0], first)
	gather:
		for len(group) < c.maxGroup {
			select {
			case call, ok := <-c.calls:
				if !ok {
					break gather
				}
				group = append(group, call)
			default:
				break gather
			}
		}
		c.commit(group)
	}
}

// commit runs group in one transaction, dropping the calls that fail.
func (c *committer) commit(group []groupCall) {
	for len(group) > 0 {
		failed := -1
		err := c.db.Update(func(tx *bolt.Tx) error {
			for i, call := range group {
				if err := runGuarded(call.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, call := range group {
				call.done <- err
			}
			return
		}
		group[failed].done <- errRunAlone
		group = append(group[:failed], group[failed+1:]...)
	}
}

// runGuarded turns a panic in fn into an error, so that a panicking call
// rolls back its group and then panics in its own caller's goroutine.
func runGuarded(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("embedded: write panicked: %v", p)
		}
	}()
	return fn(tx)
}
