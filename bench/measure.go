package bench

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/batonhq/baton"
)

// observer sees every signal a variant finished (acknowledged after
// processing). It counts them, keeps their latencies while a measurement
// window is open, and returns a conversation's slot to the producer when
// its last signal is done, which keeps a fixed number of conversations in
// flight (a closed loop).
type observer struct {
	measuring atomic.Bool
	finished  atomic.Int64 // signals finished, ever
	inWindow  atomic.Int64 // signals finished while measuring
	begun     atomic.Int64 // conversations started, ever
	ended     atomic.Int64 // conversations whose last signal finished, ever
	amount    atomic.Int64 // sum of the amounts of started conversations

	mu        sync.Mutex
	latencies []time.Duration

	slots chan struct{}
}

func newObserver(inFlight int) *observer {
	o := &observer{slots: make(chan struct{}, inFlight)}
	for range inFlight {
		o.slots <- struct{}{}
	}
	return o
}

// finish records that sig was processed and acknowledged.
func (o *observer) finish(sig baton.Signal) {
	o.finished.Add(1)
	if o.measuring.Load() {
		o.inWindow.Add(1)
		if sent := sentAt(sig.Payload); !sent.IsZero() {
			d := time.Since(sent)
			o.mu.Lock()
			o.latencies = append(o.latencies, d)
			o.mu.Unlock()
		}
	}
	if sig.Type == typeCharge {
		o.ended.Add(1)
		select {
		case o.slots <- struct{}{}:
		default: // a duplicate delivery of a finished conversation
		}
	}
}

// inFlight is the number of conversations started and not finished; each
// has exactly one signal in flight at any time.
func (o *observer) inFlight() int64 { return o.begun.Load() - o.ended.Load() }

// window opens or closes the measurement window.
func (o *observer) window(open bool) {
	if open {
		o.inWindow.Store(0)
		o.mu.Lock()
		o.latencies = o.latencies[:0]
		o.mu.Unlock()
	}
	o.measuring.Store(open)
}

func (o *observer) takeLatencies() []time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := slices.Clone(o.latencies)
	slices.Sort(out)
	return out
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted
// durations, nearest rank; zero for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// processCPU is the CPU time (user and system) this process used so far:
// engine, handlers, drivers and the embedded NATS server.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuDelta is the CPU the processes used between two readings. A process
// that appeared in between counts from zero.
func cpuDelta(before, after map[int]time.Duration) time.Duration {
	var d time.Duration
	for pid, a := range after {
		d += a - before[pid]
	}
	return d
}

// pidsNamed returns the processes whose command name is comm.
func pidsNamed(comm string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		name, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && strings.TrimSpace(string(name)) == comm {
			pids = append(pids, pid)
		}
	}
	return pids
}

// serverCPU measures the CPU of the server processes that work for one
// variant: its PostgreSQL backends (found by application_name) and its
// Redis server. Processes on another host cannot be seen.
type serverCPU interface {
	pids(ctx context.Context) []int
}

// sample is one reading of stored deduplication data.
type sample struct {
	At       float64 // seconds of measured time since the variant started
	Stored   int64   // rows in the processed table, or live tokens
	InFlight int64   // conversations (= signals) in flight
}
