// Package cached shares one expensive reading among many readers. A
// reading is reused until it is MaxAge old; then one reader reads afresh
// while the others keep getting the last reading without waiting, so any
// number of pollers cost one reading per MaxAge.
package cached

import (
	"context"
	"sync"
	"time"
)

// Value holds the last reading of Read. Its zero value is not usable; set
// the fields before the first Get and do not change them after.
type Value[T any] struct {
	// Read takes a reading. It runs in the goroutine of the Get that found
	// the last reading too old, with that Get's context.
	Read func(context.Context) (T, error)
	// MaxAge is how long a reading is reused. Zero or negative: every Get
	// reads afresh, concurrently.
	MaxAge time.Duration
	// Now is the clock. Nil means time.Now.
	Now func() time.Time

	mu         sync.Mutex
	have       bool
	value      T
	err        error
	at         time.Time
	refreshing chan struct{} // closed when the reading in progress ends; nil if none
	expired    uint64        // counts Expire calls, so a reading begun before one counts as old
}

// Expire makes the next Get read afresh: the source changed (an operator
// acted on it). A reading in progress when Expire is called is published
// as already old, since it may predate the change.
func (v *Value[T]) Expire() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.expired++
	v.at = time.Time{}
}

// Get returns a reading at most MaxAge old, or, while another Get takes a
// new one, the last reading however old. Only a Get with no reading to
// fall back on waits for the one in progress (or for ctx). A failed
// reading is cached like a successful one, so a failing source is not
// asked more often than a healthy one.
func (v *Value[T]) Get(ctx context.Context) (T, error) {
	if v.MaxAge <= 0 {
		return v.Read(ctx)
	}
	for {
		v.mu.Lock()
		if v.have && (v.refreshing != nil || v.now().Sub(v.at) < v.MaxAge) {
			value, err := v.value, v.err
			v.mu.Unlock()
			return value, err
		}
		if wait := v.refreshing; wait != nil {
			v.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				var zero T
				return zero, ctx.Err()
			}
		}
		done := make(chan struct{})
		v.refreshing = done
		v.mu.Unlock()
		return v.refresh(ctx, done)
	}
}

// refresh takes a reading and publishes it, also when Read panics.
func (v *Value[T]) refresh(ctx context.Context, done chan struct{}) (value T, err error) {
	finished := false
	v.mu.Lock()
	expired := v.expired
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		if finished {
			v.have, v.value, v.err, v.at = true, value, err, v.now()
			if v.expired != expired {
				v.at = time.Time{}
			}
		}
		v.refreshing = nil
		v.mu.Unlock()
		close(done)
	}()
	value, err = v.Read(ctx)
	finished = true
	return value, err
}

func (v *Value[T]) now() time.Time {
	if v.Now == nil {
		return time.Now()
	}
	return v.Now()
}
