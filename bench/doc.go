// Package bench runs one business process under several ways of making it
// safe against duplicates and measures what each costs: `baton bench`.
//
// The process has two steps: a root signal places an order (entity
// order-N), whose activity emits a charge to billing (one of a few
// accounts, so charges contend). Every variant runs the same activities
// over the same JSON state, with the same broker (an embedded NATS
// JetStream server in the process, fsync on every write) and the same
// number of workers, and keeps the same number of conversations in flight
// (a closed loop: a new conversation starts when one finishes). The
// variants are:
//
//   - ceiling: at-least-once without deduplication: load, run, update
//     (conditional on the version), publish, ack.
//   - classic: a processed-message table and a transactional outbox table
//     written in the business transaction, a relay that publishes outbox
//     rows and deletes them, and a cleanup job that deletes processed rows
//     older than ClassicRetention (7 days), as NServiceBus and MassTransit
//     do. The table grows for the whole run.
//   - classic-steady: classic with a retention of seconds, so that its
//     cleanup deletes rows inside the measured time.
//   - classic-batched: the classic approach with baton-pg's batching, so
//     that batches are compared with batches.
//   - baton-pg, baton-pg-single, baton-pg-tx, baton-pg-plain,
//     baton-pg-inline, baton-embedded, baton-redis, baton-redis-fsync,
//     baton-redis-fsync-single, baton-service, baton-service-single,
//     baton-memory: the engine over the named stores and settings
//     (baton-service: tokens behind the token service over HTTP).
//   - classic-mysql and baton-mysql: the classic approach and baton on
//     one MySQL or MariaDB server (Config.MySQLDSN); baton-mysql's "x
//     classic" is against classic-mysql. Not in the default set.
//
// The comparison runs twice: with charges spread over Config.Accounts
// accounts, and under contention over Config.ContentionAccounts.
//
// # What is measured
//
// Per variant, from the same run: signals per second while measuring,
// latency from the sender's decision to send to the ack after processing
// (p50, p99), this process's CPU time per signal (getrusage; it includes
// the embedded NATS server), the CPU per signal of the variant's
// PostgreSQL backends (found in pg_stat_activity by application_name) and
// Redis server (from /proc/<pid>/stat; not seen on another host), and the
// deduplication data stored, sampled over time: rows of the processed
// table, or live tokens. Ratios are against the ceiling, classic and
// classic-batched of the same run. Variants run in interleaved rounds so
// that the load of a shared machine falls on all alike; run the benchmark
// several times and compare the spread before trusting a difference of a
// few percent.
//
// After its last round every variant is checked: the accounts' charge
// counts and totals must equal the conversations started (each charge
// applied exactly once) and nothing may be left (outbox rows, live
// tokens). Result.Check says "ok" or what went wrong.
//
// # Isolation and requirements
//
// Each variant gets a fresh PostgreSQL schema, Redis key prefix, data
// directory and NATS server, all removed at the end. PostgreSQL must be
// reachable at Config.PostgresDSN (synchronous_commit on, as the baton
// PostgreSQL store requires); baton-redis opens Config.RedisURL with
// AllowUnsafeDurability, so its numbers are an upper bound for Redis
// without fsync; baton-redis-fsync starts its own redis-server (on PATH)
// with appendonly yes and appendfsync always on a free port. Run returns
// a one-line error when a server it needs does not answer.
package bench
