package store

import (
	"context"
	"time"

	"github.com/batonhq/baton"
)

// TxCommitter is implemented by an entity store whose database offers
// transactions across tables, of type Tx (pgx.Tx, *sql.Tx, ...). An
// activity may then write the service's own tables in the transaction
// that commits it: step 4 of the protocol is whatever one atomic write of
// the destination's database holds.
//
// CommitTx begins a transaction and, before anything else, takes the
// locks that serialise the step: with step.Fused the token's (if it is not
// live, CommitTx rolls back and returns consumed false: a duplicate), then
// the entity's, checking that it is still at step.Version (else
// ErrConflict). It then calls write with the transaction. write runs the
// activity, which makes its own writes in tx, and returns the entity to
// commit (step.Key at step.Version, with the activity's new state and
// outbox entry) and the tokens of the signals it emits. CommitTx writes the
// entity and, with step.Fused, consumes step.Token and creates those
// tokens, in the same transaction, and commits. Either all of it is
// committed, the activity's own writes included, or none of it.
//
// An error from write is returned as it is, after the rollback: nothing
// was applied. Not applied also: ErrConflict, ErrInvalid, ErrNotApplied,
// ErrClosed, ErrExists (a token to create exists). Any other error: outcome
// unknown; the engine's retry then finds the outbox entry if the commit
// happened.
type TxCommitter[Tx any] interface {
	CommitTx(ctx context.Context, step TxStep, write func(ctx context.Context, tx Tx) (Entity, []baton.Token, error)) (version uint64, consumed bool, err error)
}

// TxStep says which commit CommitTx makes.
type TxStep struct {
	Key     string
	Version uint64        // the version that step 1 loaded; 0: a new entity
	Token   baton.TokenID // the signal's token
	// Fused: the token store is this database too (the fast path), so the
	// transition runs in the same transaction.
	Fused bool
}

// Start is a conversation that a caller's transaction started: the root
// signal to send once the transaction commits. It is recorded in the
// caller's database, in that transaction, so that the caller's own writes
// and the start happen both or neither; it is removed once its signal was
// sent, and until then a sweeper sends it if the caller could not.
type Start struct {
	// ID names the start; it is also the conversation's id.
	ID baton.TokenID
	// Version counts the start's updates, for compare-and-set.
	Version uint64
	// Root is the root token's id, zero until the root exists.
	Root baton.TokenID
	// Claimed says the root no longer expires: its signal may be sent.
	Claimed     bool
	Destination string
	Type        string
	Payload     []byte
	Trace       baton.TraceContext
	CreatedAt   time.Time
}

// Signal returns the root signal of s; s.Root must be set.
func (s Start) Signal() baton.Signal {
	return baton.Signal{ID: s.Root, Conversation: s.ID, Destination: s.Destination, Type: s.Type, Payload: s.Payload, Trace: s.Trace}
}

// RootToken returns the root token to issue for s (the token store
// chooses its id).
func (s Start) RootToken(created, expires time.Time) baton.Token {
	return baton.Token{Conversation: s.ID, Destination: s.Destination, Type: s.Type, Digest: baton.DigestOf(s.Payload),
		CreatedAt: created, ExpiresAt: expires}
}

// Starter is implemented by an entity store that records starts in the
// caller's transactions, of type Tx.
//
// RecordStart writes start in tx (start.Root zero, start.Version 0). With
// root non-nil, the token store is this database too: it also creates
// *root in tx, under a fresh id it sets in root.ID, and records the start
// as claimed with that root, so that the caller's commit commits both.
//
// Errors are the caller's transaction's: on any error the caller rolls
// back.
type Starter[Tx any] interface {
	Starts
	RecordStart(ctx context.Context, tx Tx, start Start, root *baton.Token) (Start, error)
}

// Starts reads and finishes the starts recorded in an entity store's
// database. The engine drives each start from the caller's commit until
// its signal was sent; any engine over the same database may finish any
// start.
type Starts interface {
	// LoadStart returns the start with id, or ErrNotFound.
	LoadStart(ctx context.Context, id baton.TokenID) (Start, error)
	// UpdateStart stores start if the stored one is still at
	// start.Version, and returns it at the next version.
	//
	// Not applied: ErrConflict, ErrNotFound, ErrInvalid, ErrNotApplied,
	// ErrClosed. Any other error: outcome unknown.
	UpdateStart(ctx context.Context, start Start) (Start, error)
	// DeleteStart removes the start with id; a start already gone is fine.
	DeleteStart(ctx context.Context, id baton.TokenID) error
	// PendingStarts returns up to limit starts created before the given
	// time, oldest first, for the sweeper.
	PendingStarts(ctx context.Context, before time.Time, limit int) ([]Start, error)
}
