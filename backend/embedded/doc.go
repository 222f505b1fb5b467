// Package embedded is baton's default store: a token store and an entity
// store in one single file, kept with bbolt (go.etcd.io/bbolt). No server is
// needed. One *Store implements store.TokenStore, store.EntityStore and
// store.CommitTransitioner, so the engine can run steps 4 and 5 of the
// protocol in one transaction (the fast path of docs/protocol.md 3.2), and also
// store.TokenLoader (an entity and a token in one read transaction),
// store.BatchCommitter and store.TokenBatcher (many entity commits, or
// many transitions, in one write transaction), store.BatchLoader and
// store.TransitionBatcher.
//
// # Guarantees
//
//   - Linearizable: bbolt runs one write transaction at a time and every
//     write (Transition, Issue, Commit, CommitBatch, CommitTransition,
//     ExpireRoots) is
//     one transaction that checks and changes records together. Reads run
//     in read transactions that see the last committed state.
//   - Durable: a call returns only after its transaction was written and
//     fsynced (bbolt's default; this package never sets NoSync). A write
//     acknowledged before a crash or power loss is in the file afterwards,
//     as far as the disk honours fsync.
//   - Atomic: a transition deletes its token and creates its children, and
//     CommitTransition also commits the entity, all or nothing.
//   - Times round-trip with nanosecond precision, in UTC (the location and
//     monotonic reading of a time.Time are not kept).
//
// # One process per file
//
// bbolt locks the file (flock) while it is open. A second Open of the same
// file, from another process or from this one, waits Config.OpenTimeout and
// then fails with ErrLocked. To share a store between processes, run the
// token service (baton serve) in front of it or use a server backend.
//
// # Group commit
//
// By default the writes of concurrent callers share one bbolt transaction
// and one fsync. A lone write commits at once; the writes that arrive while
// a commit is fsyncing form the next group (up to Config.MaxGroupSize), so
// groups grow with load and no write waits on a timer. (bbolt's DB.Batch
// waits on a timer, which made the default of 4 engine workers slower than
// no grouping; groupcommit.go keeps its contract without the timer.)
// Outcomes that callers expect (a version conflict, a token already
// consumed, a child that already exists) are recorded per call and do not
// fail the group, so one entity's failed compare-and-set neither fails nor
// slows the other writes of its group. Each write's checks run inside the
// shared transaction, after the writes queued before it, so group commit
// keeps linearizability. Config.NoGroupCommit gives every write its own
// transaction and fsync.
//
// # File layout
//
// Buckets (index buckets hold keys only; a write changes a record and its
// index entries in the same transaction):
//
//	meta            "format" -> file format byte (1)
//	tokens          token id[16] -> token record
//	tokens_by_conv  conversation[16] token id[16]          (ListByConversation)
//	tokens_by_dest  len[2] destination token id[16]        (ListByDestination)
//	tokens_expiry   expires-at[12] token id[16]            (ExpireRoots)
//	entities        entity key -> entity record
//	outbox_by_time  outbox entry created-at[12] entity key (Stale)
//
// Listings are range scans of an index, so Page.After is a cursor seek.
// Times in keys are 8 bytes of Unix seconds with the sign bit flipped and 4
// bytes of nanoseconds, big-endian, so they sort in time order.
// ExpireRoots deletes the earliest expiries first; Stale returns entities
// with the oldest outbox entries first.
//
// Records are a compact binary encoding that starts with a format byte
// (now 1; see codec.go for the exact layout), so a later version can read
// old records. Open refuses a file whose meta format it does not know with
// ErrUnsupportedFormat.
//
// # Failure semantics
//
// As the store package defines them:
//
//   - Not applied: store.ErrConflict, store.ErrExists, store.ErrInvalid,
//     store.ErrClosed (after Close), and store.ErrNotApplied, which wraps a
//     context that ended before the call started and any failure inside
//     the transaction before it committed (it was rolled back).
//   - Outcome unknown: an error while committing (writing pages, or the
//     fsync that follows). The data may or may not be in the file after a
//     restart; retrying is safe because every operation of the protocol is.
//
// A call that has started its transaction is not interrupted by its
// context: it waits for its group's commit (at most two commits: the one
// in progress and its own).
//
// # Backups
//
// BackupTo copies the store to a new file from one read transaction, while
// the store keeps serving, and marks the copy as a backup. Open refuses a
// marked file with ErrRestoredBackup until it is opened once with
// Config.AcceptRestoredBackup: a restored token store brings back every
// token consumed since the backup, so a copy of one of their signals still
// in flight would be applied a second time, unless the entity stores and
// brokers were restored to the same instant (docs/operations.md).
package embedded
