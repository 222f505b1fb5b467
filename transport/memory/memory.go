// Package memory is an in-process transport. It delivers at least once and,
// on demand, misbehaves the way real brokers do: it duplicates deliveries,
// reorders them and redelivers those not acknowledged in time.
package memory

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/transport"
)

// Config sets the transport's faults. The zero value is a well-behaved
// FIFO broker.
type Config struct {
	// DuplicateRate is the probability (0 to 1) that a published signal is
	// enqueued twice.
	DuplicateRate float64
	// Reorder hands out a random queued signal instead of the oldest.
	Reorder bool
	// AckWait is how long a delivery may stay unacknowledged before it is
	// redelivered (as a broker does after a consumer dies). Default 30s.
	AckWait time.Duration
	// Seed seeds the fault choices.
	Seed uint64
}

// Transport is an in-memory transport.Transport.
type Transport struct {
	cfg    Config
	mu     sync.Mutex
	rng    *rand.Rand
	queues map[string]*queue
	parked []Parked
	parks  int // parked signals so far: the next one's id
	closed bool
	stats  Stats
}

// Parked is a signal that a consumer parked.
type Parked struct {
	ID       string
	Signal   baton.Signal
	Reason   string
	Attempts int
	ParkedAt time.Time
}

// Stats counts the transport's work and the faults it injected.
type Stats struct {
	Published, Delivered, Duplicated, Redelivered, Acked, Nacked, Parked int
}

type message struct {
	sig       baton.Signal
	attempt   int
	visibleAt time.Time
}

type queue struct {
	ready    []*message
	inflight map[*message]time.Time // deadline for the ack
	wake     chan struct{}          // closed and replaced when something changes
}

var _ transport.Transport = (*Transport)(nil)

// New returns a transport with the given faults.
func New(cfg Config) *Transport {
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	return &Transport{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)), queues: make(map[string]*queue)}
}

func (t *Transport) queue(destination string) *queue {
	q, ok := t.queues[destination]
	if !ok {
		q = &queue{inflight: make(map[*message]time.Time), wake: make(chan struct{})}
		t.queues[destination] = q
	}
	return q
}

func (q *queue) notify() {
	close(q.wake)
	q.wake = make(chan struct{})
}

// Publish implements transport.Transport.
func (t *Transport) Publish(ctx context.Context, sig baton.Signal) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := sig.Validate(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.ErrClosed
	}
	q := t.queue(sig.Destination)
	copies := 1
	if t.cfg.DuplicateRate > 0 && t.rng.Float64() < t.cfg.DuplicateRate {
		copies = 2
		t.stats.Duplicated++
	}
	for range copies {
		q.ready = append(q.ready, &message{sig: sig})
	}
	t.stats.Published++
	q.notify()
	return nil
}

// Subscribe implements transport.Transport.
func (t *Transport) Subscribe(ctx context.Context, destination string) (transport.Subscription, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, transport.ErrClosed
	}
	t.queue(destination)
	return &subscription{t: t, destination: destination, done: make(chan struct{})}, nil
}

// Stats returns the transport's counters.
func (t *Transport) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

// Parked returns the signals parked so far.
func (t *Transport) Parked() []Parked {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Parked(nil), t.parked...)
}

// Pending returns how many signals for destination are queued or awaiting
// an acknowledgement.
func (t *Transport) Pending(destination string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	q := t.queue(destination)
	return len(q.ready) + len(q.inflight)
}

// Close stops the transport; subscriptions return transport.ErrClosed.
func (t *Transport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, q := range t.queues {
		q.notify()
	}
	return nil
}

type subscription struct {
	t           *Transport
	destination string
	once        sync.Once
	done        chan struct{}
}

func (s *subscription) Next(ctx context.Context) (transport.Delivery, error) {
	for {
		t := s.t
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, transport.ErrClosed
		}
		q := t.queue(s.destination)
		now := time.Now()
		t.requeueExpired(q, now)
		if m, wait := t.take(q, now); m != nil {
			m.attempt++
			if m.attempt > 1 {
				t.stats.Redelivered++
			}
			t.stats.Delivered++
			q.inflight[m] = now.Add(t.cfg.AckWait)
			t.mu.Unlock()
			return &delivery{t: t, q: q, m: m, attempt: m.attempt}, nil
		} else {
			wake := q.wake
			t.mu.Unlock()
			timer := time.NewTimer(wait)
			select {
			case <-wake:
			case <-timer.C:
			case <-s.done:
				timer.Stop()
				return nil, transport.ErrClosed
			case <-ctx.Done():
				timer.Stop()
				return nil, ctx.Err()
			}
			timer.Stop()
		}
	}
}

// take removes a visible message from the ready list, or says how long to
// wait for one.
func (t *Transport) take(q *queue, now time.Time) (*message, time.Duration) {
	var visible []int
	wait := time.Second
	for i, m := range q.ready {
		if !m.visibleAt.After(now) {
			visible = append(visible, i)
			if !t.cfg.Reorder {
				break
			}
		} else {
			wait = min(wait, m.visibleAt.Sub(now))
		}
	}
	for _, deadline := range q.inflight {
		wait = min(wait, max(deadline.Sub(now), time.Millisecond))
	}
	if len(visible) == 0 {
		return nil, wait
	}
	i := visible[0]
	if t.cfg.Reorder {
		i = visible[t.rng.IntN(len(visible))]
	}
	m := q.ready[i]
	q.ready = append(q.ready[:i], q.ready[i+1:]...)
	return m, 0
}

func (t *Transport) requeueExpired(q *queue, now time.Time) {
	for m, deadline := range q.inflight {
		if !deadline.After(now) {
			delete(q.inflight, m)
			q.ready = append(q.ready, m)
		}
	}
}

func (s *subscription) Close() error {
	s.once.Do(func() { close(s.done) })
	return nil
}

type delivery struct {
	t       *Transport
	q       *queue
	m       *message
	attempt int
}

func (d *delivery) Signal() baton.Signal { return d.m.sig }
func (d *delivery) Attempt() int         { return d.attempt }

// settle removes the message from the in-flight set if this delivery still
// owns it (it may have been redelivered after the ack wait).
func (d *delivery) settle() bool {
	if _, ok := d.q.inflight[d.m]; !ok || d.m.attempt != d.attempt {
		return false
	}
	delete(d.q.inflight, d.m)
	return true
}

func (d *delivery) Ack(ctx context.Context) error {
	d.t.mu.Lock()
	defer d.t.mu.Unlock()
	if d.settle() {
		d.t.stats.Acked++
	}
	return nil
}

func (d *delivery) Nack(ctx context.Context, delay time.Duration) error {
	d.t.mu.Lock()
	defer d.t.mu.Unlock()
	if d.settle() {
		d.t.stats.Nacked++
		d.m.visibleAt = time.Now().Add(delay)
		d.q.ready = append(d.q.ready, d.m)
		d.q.notify()
	}
	return nil
}

func (d *delivery) Park(ctx context.Context, reason string) error {
	d.t.mu.Lock()
	defer d.t.mu.Unlock()
	if d.settle() {
		d.t.stats.Parked++
		d.t.parks++
		d.t.parked = append(d.t.parked, Parked{ID: strconv.Itoa(d.t.parks), Signal: d.m.sig, Reason: reason,
			Attempts: d.m.attempt, ParkedAt: time.Now()})
	}
	return nil
}

var _ transport.ParkedStore = (*Transport)(nil)

// ListParked implements transport.ParkedStore.
func (t *Transport) ListParked(_ context.Context, destination string, limit int) ([]transport.ParkedSignal, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []transport.ParkedSignal
	for _, p := range t.parked {
		if len(out) == limit {
			break
		}
		if destination == "" || p.Signal.Destination == destination {
			out = append(out, transport.ParkedSignal(p))
		}
	}
	return out, nil
}

// GetParked implements transport.ParkedStore.
func (t *Transport) GetParked(_ context.Context, id string) (transport.ParkedSignal, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := t.parkedIndex(id)
	if i < 0 {
		return transport.ParkedSignal{}, fmt.Errorf("%w: %s", transport.ErrNotParked, id)
	}
	return transport.ParkedSignal(t.parked[i]), nil
}

// Replay implements transport.ParkedStore.
func (t *Transport) Replay(ctx context.Context, id string) error {
	p, err := t.GetParked(ctx, id)
	if err != nil {
		return err
	}
	if err := t.Publish(ctx, p.Signal); err != nil {
		return err
	}
	return t.RemoveParked(ctx, id)
}

// RemoveParked implements transport.ParkedStore.
func (t *Transport) RemoveParked(_ context.Context, id string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := t.parkedIndex(id)
	if i < 0 {
		return fmt.Errorf("%w: %s", transport.ErrNotParked, id)
	}
	t.parked = append(t.parked[:i], t.parked[i+1:]...)
	return nil
}

func (t *Transport) parkedIndex(id string) int {
	for i, p := range t.parked {
		if p.ID == id {
			return i
		}
	}
	return -1
}
