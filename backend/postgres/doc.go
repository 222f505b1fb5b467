// Package postgres keeps baton's tokens and entities in PostgreSQL, with
// pgx (github.com/jackc/pgx/v5). One *Store implements store.TokenStore,
// store.EntityStore and store.CommitTransitioner over one schema, and
// store.TxCommitter[pgx.Tx] and store.Starter[pgx.Tx] (the service's own
// tables in the step's transaction, see Transactional activities); use it
// as either store alone when the other lives elsewhere (tokens in Redis,
// entities here, for example). Open connects from a DSN and owns its pool;
// New uses a *pgxpool.Pool that the caller owns.
//
// # Guarantees
//
//   - Atomic: Transition is one SQL statement that deletes the token and,
//     only if it deleted it, inserts the children; a child id that exists
//     fails the statement (store.ErrExists) and nothing changes.
//     CommitTransition (the fast path of docs/protocol.md 3.2) is one statement too:
//     token, entity and children together or not at all. Commit is one
//     statement: an insert that does nothing on conflict for version 0, an
//     update conditional on the version otherwise. CommitBatch
//     (store.BatchCommitter, which the engine uses to remove finished
//     outbox entries and, on the plain path, to commit a batch's
//     activities) is one statement in which each row is its own
//     compare-and-set: an update, or for version 0 an insert that does
//     nothing on conflict. LoadBatch (store.BatchLoader) reads many
//     entities in one statement. LoadWithToken (store.TokenLoader) reads an
//     entity and a token in one statement, so both come from one snapshot.
//     GetTokens (store.TokenBatcher) reads many tokens in one statement;
//     TransitionTokens sends the transitions' statements in one round trip,
//     which PostgreSQL runs in one transaction: a child that exists rolls
//     them all back, and each then runs alone to say which was refused.
//   - Linearizable: every write is a single statement in its own
//     transaction (TransitionTokens: several, in one transaction). Concurrent transitions of one token serialize on the
//     token's row lock; under READ COMMITTED the later one re-reads the
//     row, finds it deleted and creates nothing, so exactly one consumes
//     the token. Concurrent commits of one entity serialize on its row and
//     re-check the version, so exactly one wins.
//   - Durable: a call returns after PostgreSQL committed it, and the store
//     writes on no connection whose commits are not flushed (see Required
//     server settings).
//   - One round trip per call, one commit per write; no advisory locks,
//     LISTEN/NOTIFY or server-side functions on the hot path.
//   - Times round-trip with nanosecond precision, in UTC: each time is
//     stored as a timestamptz truncated to the microsecond plus a smallint
//     of the remaining nanoseconds, and cutoffs (ExpireRoots, Stale)
//     compare both, exactly as time.Time does.
//
// # Schema and migrations
//
// Config.Schema (default "baton") holds the tables tokens, entities,
// starts, commit_guard and schema_migrations. Migrate creates the schema and
// applies the SQL files embedded from migrations/ in one transaction, under
// an advisory lock derived from the schema name, so processes that start
// together wait for each other; each applied version is recorded in
// schema_migrations. The lock is a session lock taken before the
// transaction begins (pg_advisory_lock), not pg_advisory_xact_lock:
// PostgreSQL refreshes a session's catalog caches when a transaction
// starts, not when it is granted an advisory lock, so a transaction that
// waited inside for the lock could still believe that the schema the
// previous holder created is missing, and fail creating it again. SchemaVersion reads the version;
// LatestSchemaVersion is what this code needs. New and Open migrate unless
// Config.SkipMigrate is set, and refuse a schema at another version
// (ErrSchemaVersion), so old code never writes to a newer schema.
//
// The entities table carries oldest_outbox_at/_ns, the CreatedAt of the
// entity's oldest outbox entry (NULL for an empty outbox), set by every
// commit and indexed where not NULL: Stale is an index range scan that
// returns the entities with the oldest entries first. The outbox itself is
// stored as JSON (the json tags of store.OutboxEntry) in a bytea column.
// commit_guard never holds a row: CommitTransition inserts one when it
// consumed the token but the entity's compare-and-set failed, and the
// table's CHECK (false) constraint, entity_version_conflict, aborts the
// whole statement, which is how one statement can undo its own deletion.
//
// # Transactional activities
//
// CommitTx (engine.RegisterTx) begins a transaction on a connection of the
// store's pool, locks the token (fast path) and the entity's row (an
// advisory lock on its key stands in for a new entity's row, so two first
// activities of one entity run one after the other), checks the version,
// runs the handler with the pgx.Tx, writes the entity with its outbox entry
// and, on the fast path, the transition, and commits: the handler's own
// writes share the commit's fate. The transaction is READ COMMITTED; a
// deadlock or serialization failure in the handler's statements rolls
// everything back and the signal is retried. A handler that sets
// synchronous_commit off in the transaction has the step refused
// (ErrUnsafeServer, not applied, unless Config.AllowUnsafe), as the
// commit would not be durable.
// RecordStart (engine.StartTx)
// writes a start, and with the tokens here its root token, in the caller's
// pgx.Tx, which must be on this store's database (Pool gives the pool of
// New's caller or Open's own). docs/adopting.md walks through both.
//
// # Required server settings
//
//   - synchronous_commit not off (on, the default, or local, remote_write,
//     remote_apply) and fsync on. Both are settings of the session, fixed
//     when a connection opens (from the server, database and role), so the
//     store reads them on every connection before it first uses it: New
//     on one connection, failing with ErrUnsafeServer; every call on a
//     connection opened later (after an ALTER ROLE or ALTER DATABASE, by a
//     hook of the caller's pool), refusing it with an error matching
//     ErrUnsafeServer and store.ErrNotApplied, closing it and logging an
//     error. Config.AllowUnsafe accepts such connections instead and logs
//     one warning per Store. A SET in a session the store already checked
//     goes unseen by its statements (set them for the database or role,
//     not per session), but for a transactional activity's step, whose
//     transaction reads synchronous_commit before it commits: off, the
//     step is refused and the connection closed.
//     For replicas to hold acknowledged tokens after a failover, use
//     synchronous replication (synchronous_standby_names with
//     synchronous_commit on or remote_apply). New logs a warning when the
//     server streams to a standby asynchronously, or with
//     synchronous_commit local does not wait for its synchronous ones
//     (standbys' modes are visible to superusers and pg_read_all_stats
//     members only; for other roles it cannot tell).
//   - default_transaction_isolation READ COMMITTED (the default).
//     REPEATABLE READ and SERIALIZABLE stay correct, but concurrent calls
//     on one token or entity then fail with serialization failures, which
//     this package reports as store.ErrNotApplied for the caller to retry.
//   - autovacuum on (the default). The tokens table holds only the
//     signals in flight but every signal inserts and deletes rows, and
//     every commit rewrites an entity row, so dead rows come at the rate
//     of the traffic; without vacuum they slow every index scan, more the
//     longer the store runs (measured by baton bench on a server with
//     autovacuum off: about half the throughput after 100,000 signals).
//   - A UTF8 database. Entity keys, destinations and types are text, so
//     keys, destinations and types that are not valid UTF-8 or contain NUL
//     are refused with store.ErrInvalid (Load of such a key finds nothing).
//   - pgx caches prepared statements per connection. Behind a pooler in
//     transaction mode that cannot track them, add
//     default_query_exec_mode=exec to the DSN.
//
// # Prepared statements
//
// The batched statements take their rows as arrays. By default PostgreSQL
// plans such a prepared statement anew on every call, for the arrays it
// is given, because its generic plan's estimate (ten rows per array) costs
// more than a plan for the usual handful: planning then costs more server
// CPU than running the statement (about 140 µs against 150 to 400 µs for the
// removal of eight outbox entries; BenchmarkStepCosts: about 28 µs less
// server CPU per conversation). Every statement of this package looks rows
// up by key whatever the parameters, so one generic plan per statement
// serves all calls (TestStatementsLookUpByKey checks each generic plan for
// whole-table reads). Open therefore sets plan_cache_mode to
// force_generic_plan (GenericPlans) on its connections; for a pool given
// to New, set it in the pool's ConnConfig.RuntimeParams, or add
// plan_cache_mode=force_generic_plan to the DSN, where the service's own
// statements can take it too (it only changes prepared statements, and a
// statement whose best plan depends on its parameters should not be
// prepared under it). Without it the store works the same, at that cost.
//
// # Failure semantics
//
// As the store package defines them. Not applied: store.ErrConflict,
// store.ErrExists (PostgreSQL unique_violation, SQLSTATE 23505),
// store.ErrInvalid, store.ErrClosed (after Close), store.ErrNotFound, and
// store.ErrNotApplied, which wraps a context that ended before the call
// started, a failure to get a connection, an error pgx proves was raised
// before the request was sent (pgconn.SafeToRetry), and the server's
// rollback of the statement for serialization_failure (40001),
// deadlock_detected (40P01) or read_only_sql_transaction (25006: a
// read-only server, such as a standby, refused a write). Every other
// error means the outcome is
// unknown, in particular a connection lost or a context cancelled after
// the statement was sent (pgx then reports the context's error or the
// server's query_canceled); retrying is safe because every operation of
// the protocol is.
//
// # Several engine processes, one PostgreSQL
//
// Any number of processes may open Stores over the same schema: each has
// its own pool, every write is one self-contained statement, and the
// database's row locks do all the coordination, so no process needs to
// know of the others. The first to start migrates, the rest wait on the
// advisory lock and then find the schema current. Every process may run
// the sweeper: finishing an outbox entry twice is harmless by design. Keep
// the sum of the pools' sizes (pgxpool's pool_max_conns, default the
// larger of 4 and the number of CPUs) under the server's max_connections.
// Separate schemas are separate stores.
//
// # Supported databases
//
// Tested: PostgreSQL 15. The SQL is plain PostgreSQL (data-modifying CTEs,
// INSERT ... ON CONFLICT, unnest, row-value comparisons), so 12 and later
// should work; they are not tested here. CockroachDB and YugabyteDB speak
// the same protocol and accept most of this SQL, but neither is tested:
// Migrate takes pg_advisory_lock, which they may not support (migrate
// with another tool and set SkipMigrate), CockroachDB runs SERIALIZABLE
// (see above) and may restrict statements that change one table twice,
// and their durability settings differ from the ones New checks.
package postgres
