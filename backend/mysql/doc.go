// Package mysql keeps baton's tokens and entities in MySQL or MariaDB
// (InnoDB), with go-sql-driver/mysql. One *Store implements
// store.TokenStore, store.EntityStore, store.CommitTransitioner (the fast
// path), store.TokenLoader, store.BatchCommitter, store.TransitionBatcher,
// store.TokenBatcher, store.TxCommitter[*sql.Tx]
// and store.Starter[*sql.Tx] over the tables of one prefix; use it as
// either store alone when the other lives elsewhere. Open connects from a
// DSN and owns its pool (Config.MaxConns connections, default 16).
//
// # Guarantees
//
//   - Atomic: Transition is one transaction that deletes the token and,
//     only if that deleted a row, inserts the children; a child id that
//     exists fails it (store.ErrExists) and nothing changes.
//     CommitTransition is one transaction too: delete the token (none: a
//     duplicate, rolled back), compare-and-set the entity, insert the
//     children, all or nothing. The token is always locked before the
//     entity, so the store's own transactions wait for each other in one
//     direction. CommitBatch is one transaction, each entity its own
//     compare-and-set: it locks the batch's rows in key order and reads
//     their versions (one SELECT ... FOR UPDATE), then writes those at
//     their version in one statement and inserts the new ones in another (a
//     batch of up to four: a conditional statement per entity).
//     LoadWithToken is one SELECT: InnoDB reads both rows from one
//     consistent snapshot.
//   - Linearizable: a DELETE is a locking read of the latest committed
//     row, at any isolation level, so of concurrent transitions of one
//     token exactly one deletes it and the others find no row and create
//     nothing; of concurrent commits of one entity exactly one updates the
//     row at the expected version (a second insert of a new entity fails
//     on its key).
//   - Durable: a call returns after the server committed it, and the store
//     uses no connection of a server that may acknowledge a commit before
//     it is on disk (see Required server settings).
//   - Times round-trip with nanosecond precision, in UTC: each time is two
//     columns, seconds since the Unix epoch and nanoseconds, and cutoffs
//     (ExpireRoots, Stale, PendingStarts) compare both.
//
// # Required server settings
//
// An acknowledged write must survive a crash (docs/protocol.md 3.1), so the
// server must run with innodb_flush_log_at_trx_commit = 1 (write and flush
// the redo log at every commit) and, when the binary log is on (log_bin),
// sync_binlog = 1; it must not skip fsync (innodb_flush_method nosync or
// littlesync) nor run with the redo log disabled (MySQL 8's ALTER INSTANCE
// DISABLE INNODB REDO_LOG). These are global settings that SET GLOBAL can
// change while the server runs, so the store reads them on every new
// connection, before the pool hands it out, and refuses the connection with
// an error matching ErrUnsafeDurability, naming the setting.
// Config.AllowUnsafeDurability uses such connections anyway and logs a
// warning. Connections opened before a change are not checked again.
//
// # Isolation, locks and deadlocks
//
// The store runs its transactions at the session's isolation level,
// REPEATABLE READ by default on both servers; READ COMMITTED and SERIALIZABLE
// do as well, because every decision is made by a locking statement (DELETE,
// UPDATE ... WHERE version = ?, SELECT ... FOR UPDATE), which reads the
// latest committed row whatever the level. READ UNCOMMITTED does not: its
// plain reads (Load, LoadWithToken) see other transactions' uncommitted
// writes, and an outbox entry of a commit that then rolls back would be
// driven (ghost messages). Every new connection reads its level and refuses
// READ-UNCOMMITTED (ErrUnsafeIsolation), and adds STRICT_ALL_TABLES to its
// sql_mode, so that a value too long for its column fails its statement
// instead of being truncated with a warning, and turns autocommit on and
// completion_type's chaining off, so that a statement outside a transaction
// (Issue, ExpireRoots) commits when it returns. Under REPEATABLE READ a
// DELETE or SELECT ... FOR UPDATE of a row that does not exist takes a gap
// lock, and inserts of children into that gap wait for it; two transactions
// can then deadlock. InnoDB rolls one back with ER_LOCK_DEADLOCK (1213): the
// whole transaction is undone, nothing of it is applied, and the store runs
// it again, up to 8 times, as it does after a lock wait timeout (1205, after
// which it rolls back itself) and after MariaDB's ER_CHECKREAD (1020: with
// innodb_snapshot_isolation, on by default from MariaDB 11.6.2, a row that a
// transactional activity read changed before it wrote it; the whole
// transaction is undone). A transaction that keeps failing so is
// reported as store.ErrNotApplied.
// TestConcurrentTransitionsUnderRepeatableRead races 800 transitions, half of
// them of tokens that never existed, and counts the retries.
//
// # Unknown outcomes
//
// An error before COMMIT means nothing was applied: the server rolls back a
// transaction that is not committed, also when the connection is lost, and
// the store reports store.ErrNotApplied. An error that the server sends in
// answer to COMMIT means the same only if it says the transaction was rolled
// back (a deadlock, a lock wait timeout, a changed row): a server may answer COMMIT with
// another error although it committed (a session killed, or the server shut
// down, while it waited for a semi-synchronous replica), so any other leaves
// the outcome unknown, as does a connection lost while COMMIT is under way:
// the error then matches none of the not-applied sentinels, and the engine's
// retry finds out (the token consumed, or the outbox entry committed). A
// single statement outside a transaction (Issue, ExpireRoots) answered with a
// server error did nothing, unless the error says it was interrupted (killed,
// timed out, the server shutting down), which may come after its commit; such
// an error, and a lost connection, leave the outcome unknown. A call that
// could not open a connection (the server unreachable, or the connection
// refused by the checks above) sent nothing: store.ErrNotApplied.
//
// # Transactional activities
//
// CommitTx begins a transaction on the store's pool, locks the token (fast
// path) and the entity's row (SELECT ... FOR UPDATE), checks the version,
// runs the handler with the *sql.Tx, writes the entity with its outbox entry
// and, on the fast path, the transition, and commits: the handler's own
// writes share the commit's fate. A new entity has no row to lock, so two
// first activities of one entity may both run; the second insert of the
// entity fails as a conflict, and its handler's writes are rolled back with
// it. A deadlock in the handler's statements rolls everything back and runs
// it again. Unlike PostgreSQL, MySQL leaves a session whose transaction a
// deadlock rolled back in autocommit, so a handler that ignored that error
// would have the store's writes commit one by one without its own: CommitTx
// sets a savepoint before the handler and releases it after, and fails the
// step if the savepoint is gone (the transaction ended while the handler
// ran). A SET SESSION in the handler outlives the transaction: after the
// handler, whether it succeeded or failed, CommitTx sets a sql_mode
// without STRICT_ALL_TABLES, a chaining completion_type and read-only
// transactions back, and closes the connection (refusing the step) if the
// handler turned autocommit off or set the session's isolation level READ
// UNCOMMITTED. RecordStart writes a start (and, with the tokens here, its
// root token) in the caller's *sql.Tx, which must be on the store's
// database (DB gives the pool).
//
// # Schema and migrations
//
// Config.Prefix (default "baton_") starts the table names: tokens, entities,
// starts and schema_migrations. Migrate creates them from the SQL files
// embedded from migrations/ under a named lock (GET_LOCK), so processes that
// start together wait for each other; MySQL commits every DDL statement on
// its own, so each statement can run again (IF NOT EXISTS) and a version is
// recorded once all of its statements ran. Open migrates and refuses tables
// of a newer version (ErrSchemaVersion); with Config.SkipMigrate it refuses
// tables at any other version, or none. Names and keys are byte strings
// (VARBINARY), compared byte for byte; outboxes are JSON in a LONGBLOB. The
// DSN's interpolateParams is set, so each statement is one round trip (the
// driver quotes arguments itself; the connection must use utf8mb4 or another
// charset that interpolation is safe with, as the default is).
//
// # Batches
//
// The store implements store.TransitionBatcher, so an engine with
// Config.Batch commits many signals in one transaction. LoadWithTokens is
// one SELECT over a derived table of the reads, so all of them come from
// one snapshot whatever the isolation level (READ UNCOMMITTED is refused).
// CommitTransitions locks every token of the batch in id order, then every
// entity in key order (the order of CommitTransition too), refuses on
// their own the transitions whose token is not live or whose entity is not
// at its version (store.ErrNotFound, store.ErrConflict), and applies the
// others in four statements whatever their number: the entities at their
// version written in one, the new ones inserted in another, the consumed
// tokens deleted in one, the children inserted in one (a statement is
// split past 1 MiB of values); one transaction, one commit.
//
// As a token store beside another entity store (the engine's plain path),
// it is a store.TokenBatcher: a batch's tokens are read in one SELECT, and
// its transitions run as Transition runs them, up to half the pool at once,
// so that InnoDB flushes their commits in shared groups
// (BenchmarkTokenBatches: 16 reads and 16 transitions about 2.6 times as
// fast as one after another).
package mysql
