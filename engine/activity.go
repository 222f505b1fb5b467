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
	// pure function of the signal (R0 of protocol.md 3.1): two copies of one signal must
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

// TxActivity is an activity whose handler writes the service's own tables
// in the transaction that commits it: the entity's version check, the
// outbox entry and, on the fast path, the token transition are written in
// the same transaction, so that all of it is committed or none of it is.
// A version conflict, a duplicate found at commit, an error of Handle or a
// crash rolls the handler's writes back. Tx is the entity store's
// transaction type (pgx.Tx for the PostgreSQL store, *sql.Tx for the MySQL
// store, *memory.Tx for the memory store).
//
// Handle may run more than once for one signal (after a version conflict,
// a failure or a crash), but only one run is ever committed. It must write
// only through tx, and must not commit or roll back tx itself. Signals
// handled by a TxActivity are processed one at a time, never in batches:
// one handler's failure would roll back the whole batch's transaction.
type TxActivity[S any, Tx any] struct {
	Type   string
	Entity func(sig baton.Signal) (string, error)
	Handle func(ctx context.Context, tx Tx, sig baton.Signal, state *S) (Effects, error)
}

// handler is an activity with its state type erased: state in, state out,
// encoded as JSON. run gets the transaction of a TxActivity (nil
// otherwise); commitTx is set for a TxActivity: the entity store's
// CommitTx with the transaction type erased.
type handler struct {
	entity   func(baton.Signal) (string, error)
	run      func(ctx context.Context, tx any, sig baton.Signal, state []byte) ([]byte, Effects, error)
	commitTx func(ctx context.Context, step store.TxStep, write func(ctx context.Context, tx any) (store.Entity, []baton.Token, error)) (uint64, bool, error)
}

// ErrActivityPanic wraps the panic of an activity's Handle or Entity.
var ErrActivityPanic = errors.New("engine: activity panicked")

// ErrInvalidActivity is returned by Register for an incomplete activity.
var ErrInvalidActivity = errors.New("engine: invalid activity")

// Register adds an activity to e. The state of type S is stored as JSON; its
// zero value is the state of an entity that was never committed.
func Register[S any](e *Engine, a Activity[S]) error {
	if err := checkActivity(e, a.Type, a.Entity, a.Handle == nil); err != nil {
		return err
	}
	handle := func(ctx context.Context, _ any, sig baton.Signal, state *S) (Effects, error) {
		return a.Handle(ctx, sig, state)
	}
	return e.addHandler(a.Type, handler{entity: a.Entity, run: runner(a.Type, handle)})
}

// RegisterTx adds a transactional activity to e. e's entity store must
// implement store.TxCommitter[Tx] (ErrInvalidActivity otherwise). The state
// of type S is stored as JSON as for Register; use struct{} for none.
func RegisterTx[S any, Tx any](e *Engine, a TxActivity[S, Tx]) error {
	if err := checkActivity(e, a.Type, a.Entity, a.Handle == nil); err != nil {
		return err
	}
	tc, ok := e.cfg.Entities.(store.TxCommitter[Tx])
	if !ok {
		var tx Tx
		return fmt.Errorf("%w: %q: the entity store %T does not commit in transactions of type %T", ErrInvalidActivity, a.Type, e.cfg.Entities, tx)
	}
	handle := func(ctx context.Context, tx any, sig baton.Signal, state *S) (Effects, error) {
		return a.Handle(ctx, tx.(Tx), sig, state)
	}
	commitTx := func(ctx context.Context, step store.TxStep, write func(context.Context, any) (store.Entity, []baton.Token, error)) (uint64, bool, error) {
		return tc.CommitTx(ctx, step, func(ctx context.Context, tx Tx) (store.Entity, []baton.Token, error) { return write(ctx, tx) })
	}
	return e.addHandler(a.Type, handler{entity: a.Entity, run: runner(a.Type, handle), commitTx: commitTx})
}

func checkActivity(e *Engine, typ string, entity func(baton.Signal) (string, error), noHandle bool) error {
	switch {
	case e == nil:
		return fmt.Errorf("%w: nil engine", ErrInvalidActivity)
	case typ == "":
		return fmt.Errorf("%w: missing type", ErrInvalidActivity)
	case entity == nil:
		return fmt.Errorf("%w: %q has no Entity routing function", ErrInvalidActivity, typ)
	case noHandle:
		return fmt.Errorf("%w: %q has no Handle function", ErrInvalidActivity, typ)
	}
	return nil
}

// runner erases the state type of handle: JSON state in, JSON state out,
// and a panic turned into a permanent error.
func runner[S any](typ string, handle func(ctx context.Context, tx any, sig baton.Signal, state *S) (Effects, error)) func(context.Context, any, baton.Signal, []byte) ([]byte, Effects, error) {
	return func(ctx context.Context, tx any, sig baton.Signal, raw []byte) (_ []byte, _ Effects, err error) {
		// A panicking activity is a bug in it: the signal is parked with
		// the panic as its reason instead of taking the process down.
		defer func() {
			if p := recover(); p != nil {
				err = Permanent(fmt.Errorf("%w: %q panicked: %v", ErrActivityPanic, typ, p))
			}
		}()
		var state S
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &state); err != nil {
				return nil, Effects{}, Permanent(fmt.Errorf("engine: decode state for %q: %w", typ, err))
			}
		}
		effects, err := handle(ctx, tx, sig, &state)
		if err != nil {
			return nil, Effects{}, err
		}
		out, err := json.Marshal(&state)
		if err != nil {
			return nil, Effects{}, Permanent(fmt.Errorf("engine: encode state for %q: %w", typ, err))
		}
		return out, effects, nil
	}
}

func (e *Engine) addHandler(typ string, h handler) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, dup := e.handlers[typ]; dup {
		return fmt.Errorf("%w: %q registered twice", ErrInvalidActivity, typ)
	}
	e.handlers[typ] = h
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
