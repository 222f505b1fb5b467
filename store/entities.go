package store

import (
	"context"
	"time"

	"github.com/batonhq/baton"
)

// MaxEntityKeyBytes is the longest entity key every entity store accepts.
const MaxEntityKeyBytes = 512

// Entity is the unit of consistency in a destination's own data: a document
// with a version, the business state and the outbox.
type Entity struct {
	Key     string
	Version uint64 // 0: the entity has never been committed
	State   []byte
	Outbox  []OutboxEntry // oldest first
}

// Entry returns the outbox entry recorded for the incoming token, if any.
func (e Entity) Entry(token baton.TokenID) (OutboxEntry, bool) {
	for _, entry := range e.Outbox {
		if entry.Token == token {
			return entry, true
		}
	}
	return OutboxEntry{}, false
}

// WithoutEntry returns a copy of e whose outbox lacks the entry for token.
func (e Entity) WithoutEntry(token baton.TokenID) Entity {
	kept := make([]OutboxEntry, 0, len(e.Outbox))
	for _, entry := range e.Outbox {
		if entry.Token != token {
			kept = append(kept, entry)
		}
	}
	e.Outbox = kept
	return e
}

// OutboxEntry records that the activity for one incoming signal happened:
// the signals it emits and its reply. It lives until those signals' tokens
// exist and the signals were dispatched.
//
// It also records which signal it is for, beyond the token id: a copy of
// that signal finds the entry (step 2 of the protocol) only if its
// conversation, causation, type and payload digest are those recorded
// (Matches), so a copy altered in any of them never gets the reply and
// never drives the entry. Entries written before baton recorded this have
// a zero Digest and match by token id alone.
type OutboxEntry struct {
	Token        baton.TokenID  `json:"token"`
	Conversation baton.TokenID  `json:"conversation,omitzero"`
	Causation    baton.TokenID  `json:"causation,omitzero"`
	Type         string         `json:"type,omitempty"`
	Digest       baton.Digest   `json:"digest,omitzero"`
	Signals      []baton.Signal `json:"signals,omitempty"`
	Reply        []byte         `json:"reply,omitempty"`
	CreatedAt    time.Time      `json:"created_at"`
}

// EntryFor returns an outbox entry for the incoming signal sig that records
// sig's identity, the emitted signals and the reply.
func EntryFor(sig baton.Signal, emitted []baton.Signal, reply []byte, created time.Time) OutboxEntry {
	return OutboxEntry{
		Token:        sig.ID,
		Conversation: sig.Conversation,
		Causation:    sig.Causation,
		Type:         sig.Type,
		Digest:       sig.Digest(),
		Signals:      emitted,
		Reply:        reply,
		CreatedAt:    created,
	}
}

// Empty reports whether o emits no signal and holds no reply: once its
// token is consumed, nothing is left for it to finish.
func (o OutboxEntry) Empty() bool { return len(o.Signals) == 0 && len(o.Reply) == 0 }

// Recorded reports whether o records the identity of its signal (see
// OutboxEntry); entries written before baton did match by token alone.
func (o OutboxEntry) Recorded() bool { return o.Digest != baton.Digest{} }

// Matches reports whether sig is the signal whose activity o records: the
// same token id and, where o records them, the same conversation,
// causation, type and payload digest.
func (o OutboxEntry) Matches(sig baton.Signal) bool {
	if sig.ID != o.Token {
		return false
	}
	if !o.Recorded() {
		return true
	}
	return sig.Conversation == o.Conversation && sig.Causation == o.Causation &&
		sig.Type == o.Type && sig.Digest() == o.Digest
}

// EntityStore keeps entities with optimistic concurrency, linearizable per
// entity (R1 of protocol.md 3.1).
type EntityStore interface {
	// Load returns the entity stored under key, or an entity with that key
	// and Version 0 if there is none.
	Load(ctx context.Context, key string) (Entity, error)

	// Commit stores e if the stored version is still e.Version (0 for a new
	// entity) and returns the new version, e.Version+1.
	//
	// Not applied: ErrConflict, ErrInvalid, ErrNotApplied, ErrClosed. Any
	// other error: outcome unknown.
	Commit(ctx context.Context, e Entity) (version uint64, err error)

	// Stale returns up to limit keys of entities that have an outbox entry
	// created before the given time, for the sweeper.
	Stale(ctx context.Context, before time.Time, limit int) ([]string, error)
}

// CommitTransitioner is implemented by a store that keeps entities and
// tokens in one database. It runs steps 4 and 5 of the protocol in one
// atomic operation (the fast path of protocol.md 3.2): commit e as Commit does,
// and consume token and create the tokens of create as
// TokenStore.Transition does, both or neither. If token is not live nothing
// is applied and consumed is false: the signal is a duplicate.
type CommitTransitioner interface {
	CommitTransition(ctx context.Context, e Entity, token baton.TokenID, create []baton.Token) (version uint64, consumed bool, err error)
}

// TokenLoader is implemented by a store that keeps entities and tokens in
// one database and can read both at one instant. The engine then does
// steps 1 and 3 of the protocol in one call on the fast path.
//
// LoadWithToken returns what Load(key) and Get(token) would return if both
// ran at the same instant (one snapshot, one transaction). Reading at one
// instant keeps the rule that the token is never read before the entity:
// a token live at that instant was not yet consumed, so an outbox entry
// for it that was committed before then is in the entity returned, and one
// committed after then makes the engine's compare-and-set fail.
//
// An error matching ErrNotFound means the entity was loaded and is
// returned, and the token is not live. Other errors are those of Load and
// Get; nothing is written either way.
type TokenLoader interface {
	LoadWithToken(ctx context.Context, key string, token baton.TokenID) (Entity, baton.Token, error)
}

// BatchCommitter is implemented by an entity store that commits several
// entities in one operation, each as Commit would alone: one entity's
// failed compare-and-set does not stop the others (group commit,
// protocol.md 3.2). The engine uses it to remove finished outbox entries
// in batches, and on the plain path with Config.Batch to commit the
// activities of a batch of signals.
//
// The entities must have distinct keys, else nothing is applied and the
// error matches ErrInvalid. An entity at Version 0 is created if its key
// is free, as Commit does. On a nil error, results[i] is nil when
// entities[i] was committed at Version+1, or matches ErrConflict when it
// was not. A non-nil
// error is for the whole call: ErrInvalid, ErrNotApplied or ErrClosed mean
// nothing was applied, any other error that the outcome of each commit is
// unknown.
type BatchCommitter interface {
	CommitBatch(ctx context.Context, entities []Entity) (results []error, err error)
}

// BatchLoader is implemented by an entity store that reads many entities
// in one operation. The engine uses it on the plain path with
// Config.Batch: step 1 of a batch of signals in one read, before it reads
// any of their tokens.
//
// LoadBatch returns, for each of keys, what Load would return for it (an
// entity at Version 0 for a key with none). Keys may repeat. The entities
// need not be read at one instant.
type BatchLoader interface {
	LoadBatch(ctx context.Context, keys []string) ([]Entity, error)
}

// TransitionBatcher is implemented by a store on the fast path that also
// runs the steps of many signals in one round trip and one commit (group
// commit, protocol.md 3.2). The engine uses it with Config.Batch.
//
// LoadWithTokens does what LoadWithToken does for each read, all at one
// instant. Reads may repeat a key. Loaded[i].Live is false where
// reads[i].Token is not live.
//
// CommitTransitions runs each transition as CommitTransition would alone
// and independently of the others: transition i is applied, all of it, only
// if its tokens (Consumes) are live and its entity is at Entity.Version;
// else none of it is. On a nil error, results[i] is nil when transitions[i]
// was applied, or matches ErrNotFound (one of its tokens was not live) or
// ErrConflict (its entity was at another version) when it was not. Entities must have distinct keys
// and tokens must be distinct, else the error matches ErrInvalid. A non-nil
// error is for the whole call: ErrInvalid, ErrExists (a token to create
// exists), ErrNotApplied or ErrClosed mean nothing was applied, any other
// error that the outcome of each transition is unknown.
type TransitionBatcher interface {
	LoadWithTokens(ctx context.Context, reads []TokenRead) ([]Loaded, error)
	CommitTransitions(ctx context.Context, transitions []Transition) (results []error, err error)
}

// TokenRead asks for an entity and a token read together.
type TokenRead struct {
	Key   string
	Token baton.TokenID
}

// Loaded is the answer to one TokenRead.
type Loaded struct {
	Entity Entity
	Token  baton.Token // zero unless Live
	Live   bool
}

// Transition is one signal's steps 4 and 5: commit Entity, consume Token,
// create Create. With Then it is a chain: the steps of several signals for
// one entity in one atomic write.
type Transition struct {
	Entity Entity
	Token  baton.TokenID
	// Then are the tokens of further signals for Entity whose activities
	// ran, in this order, after Token's, each on the state the one before
	// left: Entity is the state after all of them, with their outbox
	// entries, and Create holds the children of all. Every token is
	// consumed or none is: the transition is refused with ErrNotFound if
	// any of them is not live.
	Then   []baton.TokenID
	Create []baton.Token
}

// Consumes returns the tokens the transition consumes: Token, then Then.
func (t Transition) Consumes() []baton.TokenID {
	return append([]baton.TokenID{t.Token}, t.Then...)
}

// OutboxInUTC returns e's outbox with every CreatedAt in UTC (so that the
// times a backend encodes decode as they were) and the CreatedAt of its
// oldest entry (zero for an empty outbox), which backends index for Stale.
func (e Entity) OutboxInUTC() ([]OutboxEntry, time.Time) {
	if len(e.Outbox) == 0 {
		return e.Outbox, time.Time{}
	}
	out := make([]OutboxEntry, len(e.Outbox))
	var oldest time.Time
	for i, entry := range e.Outbox {
		entry.CreatedAt = entry.CreatedAt.UTC()
		out[i] = entry
		if i == 0 || entry.CreatedAt.Before(oldest) {
			oldest = entry.CreatedAt
		}
	}
	return out, oldest
}
