package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// Activity is the work one signal type asks of this destination.
type Activity[S any] struct {
	// Type is the signal type this activity handles.
	Type string
	// Entity maps a signal to the key of the entity it acts on. It must be a
	// pure function of the signal (DESIGN R0): two copies of one signal must
	// route to the same entity. An activity that creates an entity derives
	// its key from the signal, for example from sig.ID.
	Entity func(sig baton.Signal) (string, error)
	// Handle runs the activity on the entity's state, which it may change
	// in place, and returns the signals to emit and an optional reply. It
	// may run more than once for one signal (after a version conflict or a
	// crash), but only one run is ever committed, so it must not have side
	// effects outside the state and the returned effects.
	Handle func(ctx context.Context, sig baton.Signal, state *S) (Effects, error)
}

// Effects is what an activity returns besides its new state.
type Effects struct {
	Emit  []baton.Emit
	Reply []byte
}

// handler is an activity with its state type erased: state in, state out,
// encoded as JSON.
type handler struct {
	entity func(baton.Signal) (string, error)
	run    func(ctx context.Context, sig baton.Signal, state []byte) ([]byte, Effects, error)
}

// ErrActivityPanic wraps the panic of an activity's Handle or Entity.
var ErrActivityPanic = errors.New("engine: activity panicked")

// ErrInvalidActivity is returned by Register for an incomplete activity.
var ErrInvalidActivity = errors.New("engine: invalid activity")

// Register adds an activity to e. The state of type S is stored as JSON; its
// zero value is the state of an entity that was never committed.
func Register[S any](e *Engine, a Activity[S]) error {
	switch {
	case e == nil:
		return fmt.Errorf("%w: nil engine", ErrInvalidActivity)
	case a.Type == "":
		return fmt.Errorf("%w: missing type", ErrInvalidActivity)
	case a.Entity == nil:
		return fmt.Errorf("%w: %q has no Entity routing function", ErrInvalidActivity, a.Type)
	case a.Handle == nil:
		return fmt.Errorf("%w: %q has no Handle function", ErrInvalidActivity, a.Type)
	}
	run := func(ctx context.Context, sig baton.Signal, raw []byte) (_ []byte, _ Effects, err error) {
		// A panicking activity is a bug in it: the signal is parked with
		// the panic as its reason instead of taking the process down.
		defer func() {
			if p := recover(); p != nil {
				err = Permanent(fmt.Errorf("%w: %q panicked: %v", ErrActivityPanic, a.Type, p))
			}
		}()
		var state S
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &state); err != nil {
				return nil, Effects{}, Permanent(fmt.Errorf("engine: decode state for %q: %w", a.Type, err))
			}
		}
		effects, err := a.Handle(ctx, sig, &state)
		if err != nil {
			return nil, Effects{}, err
		}
		out, err := json.Marshal(&state)
		if err != nil {
			return nil, Effects{}, Permanent(fmt.Errorf("engine: encode state for %q: %w", a.Type, err))
		}
		return out, effects, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, dup := e.handlers[a.Type]; dup {
		return fmt.Errorf("%w: %q registered twice", ErrInvalidActivity, a.Type)
	}
	e.handlers[a.Type] = handler{entity: a.Entity, run: run}
	return nil
}

func (e *Engine) route(sig baton.Signal) (handler, string, error) {
	e.mu.RLock()
	h, ok := e.handlers[sig.Type]
	e.mu.RUnlock()
	if !ok {
		return handler{}, "", permanentf(ErrUnknownType, "%q at %q", sig.Type, e.cfg.Destination)
	}
	key, err := safeEntity(h.entity, sig)
	if err != nil {
		return handler{}, "", permanentf(ErrUnroutable, "%q: %v", sig.Type, err)
	}
	if key == "" || len(key) > store.MaxEntityKeyBytes {
		return handler{}, "", permanentf(ErrUnroutable, "%q: entity key must be 1 to %d bytes, got %d", sig.Type, store.MaxEntityKeyBytes, len(key))
	}
	return h, key, nil
}

func safeEntity(entity func(baton.Signal) (string, error), sig baton.Signal) (key string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: routing %q panicked: %v", ErrActivityPanic, sig.Type, p)
		}
	}()
	return entity(sig)
}
