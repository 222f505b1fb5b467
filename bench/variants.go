package bench

import (
	"context"
	"strings"
)

// Variant is one way of running the process.
type Variant struct {
	Name  string
	Label string
	// Note is said under the table when the variant is in it.
	Note string

	postgres, redis, redisServer, mysql bool
	// classic is the classic variant on the same database, the baseline
	// of "x classic"; empty: "classic" (PostgreSQL).
	classic string
	open    func(ctx context.Context, env *env, name string) (system, error)
}

// Variants lists every variant the benchmark knows, in table order.
var Variants = []Variant{
	{
		Name: "ceiling", Label: "at-least-once, no dedup (ceiling)", postgres: true,
		Note: "ceiling: consume, load the entity, run the handler, update the entity (one autocommit statement, conditional on its version), publish the next signal, ack. Duplicates are applied again.",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openSQLSystem(ctx, env, sqlOptions{}, name)
		},
	},
	{
		Name: "classic", Label: "classic: processed table + outbox", postgres: true,
		Note: "classic: processed-message table and outbox rows written in the business transaction (3 round trips, 1 commit), a relay that publishes outbox rows and deletes them in batches, and a cleanup job with 7-day retention (the table grows for the whole run).",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openSQLSystem(ctx, env, sqlOptions{classic: true}, name)
		},
	},
	{
		Name: "classic-steady", Label: "classic, retention paid (scaled to 2 s)", postgres: true,
		Note: "classic-steady: classic with its retention window scaled from 7 days to 2 s and the cleanup job from hourly to every 250 ms, so that it deletes processed rows as fast as the consumers write them, as production does once the first window has passed; classic leaves that cost outside its measured minutes. The rows of a run's last 2 s are still there when it ends, their deletion not counted (about 7% of a 30 s run's rows). A duplicate that arrives more than 2 s after its original is applied again: the check at the end would show it.",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openSQLSystem(ctx, env, sqlOptions{classic: true, retention: classicSteadyRetention, cleanupEvery: classicSteadyCleanup}, name)
		},
	},
	{
		Name: "classic-batched", Label: "classic, batched as baton-pg is", postgres: true,
		Note: "classic-batched: the classic approach with baton-pg's batching: a worker takes the deliveries already received (up to 16, never waiting for more), reads their entities and processed marks in one query and commits them in one transaction of two statements (mark, write and outbox for all; undo the marks of those whose write did not happen), each applied or refused on its own; the relay and cleanup as classic.",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openSQLSystem(ctx, env, sqlOptions{classic: true, batches: true}, name)
		},
	},
	{
		Name: "baton-pg", Label: "baton, PostgreSQL (fast path, batches)", postgres: true,
		Note: "baton-pg: tokens and entities in one postgres.Store on the fast path, with engine.Config.Batch 16: a worker takes the deliveries already received (up to 16, never waiting for more), reads their entities and tokens in one statement and commits them in one (each signal applied or refused on its own); every baton variant runs with engine.Config.DeferRemovals (outbox entries removed in batches after the ack).",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openBatonPostgres(ctx, env, name, batonOptions{batch: batchSize})
		},
	},
	{
		Name: "baton-pg-single", Label: "baton, PostgreSQL (fast path, one by one)", postgres: true,
		Note: "baton-pg-single: as baton-pg one signal at a time: steps 1 and 3 are one read (LoadWithToken), steps 4 and 5 one statement.",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openBatonPostgres(ctx, env, name, batonOptions{})
		},
	},
	{
		Name: "baton-pg-tx", Label: "baton, PostgreSQL (transactional activities)", postgres: true,
		Note: "baton-pg-tx: as baton-pg-single with the activities registered as transactional ones (engine.RegisterTx over pgx.Tx): each step is a transaction (lock the token, the entity, run the handler with the transaction, write the step, commit) in which a handler could write the service's own tables; these handlers write nothing more, so the difference to baton-pg-single is the cost of the transaction. Transactional activities are never batched: a batch's signals would share one transaction, and one handler's failure would roll back the others' writes.",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openBatonPostgres(ctx, env, name, batonOptions{tx: true})
		},
	},
	{
		Name: "baton-pg-inline", Label: "baton, PostgreSQL (fast path, inline removal)", postgres: true,
		Note: "baton-pg-inline: as baton-pg-single without DeferRemovals: each signal removes its outbox entry itself before the ack (one more commit per signal).",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openBatonPostgres(ctx, env, name, batonOptions{inlineRemovals: true})
		},
	},
	{
		Name: "baton-pg-plain", Label: "baton, PostgreSQL (plain path)", postgres: true,
		Note: "baton-pg-plain: as baton-pg-single with engine.Config.NoFastPath: commit and transition are two statements.",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openBatonPostgres(ctx, env, name, batonOptions{noFastPath: true})
		},
	},
	{
		Name: "baton-embedded", Label: "baton, embedded store (bbolt)",
		Note: "baton-embedded: tokens and entities in one bbolt file (fast path, batches of up to 16 as baton-pg, group commit, fsync per group).",
		open: openBatonEmbedded,
	},
	{
		Name: "baton-redis", Label: "baton, Redis tokens (no fsync) + PG entities", postgres: true, redis: true,
		Note: "baton-redis: tokens on the machine's Redis, opened with AllowUnsafeDurability because it does not fsync (appendonly no): NOT durable, an upper bound. Entities in PostgreSQL; plain path (commit and transition are calls to two servers), in batches as baton-redis-fsync.",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openBatonRedis(ctx, env, name, env.cfg.RedisURL, true, env.machineRedisPIDs, batonOptions{batch: batchSize})
		},
	},
	{
		Name: "baton-redis-fsync", Label: "baton, Redis tokens (fsync always) + PG entities, batches", postgres: true, redisServer: true,
		Note: "baton-redis-fsync: tokens on a redis-server the benchmark starts with appendonly yes and appendfsync always (durable, as the Redis backend requires by default). Entities in PostgreSQL; plain path in batches of up to 16 (engine.Config.Batch): a worker reads the batch's entities in one statement, then its tokens in one pipeline, commits the entities in one statement and runs the transitions in one pipeline (one fsync).",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openBatonRedis(ctx, env, name, env.redisServer.url(), false, env.redisServer.pids, batonOptions{batch: batchSize})
		},
	},
	{
		Name: "baton-redis-fsync-single", Label: "baton, Redis tokens (fsync always) + PG entities, one at a time", postgres: true, redisServer: true,
		Note: "baton-redis-fsync-single: as baton-redis-fsync one signal at a time: entity read, token read, entity commit and transition are four round trips to two servers (not in the default set).",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openBatonRedis(ctx, env, name, env.redisServer.url(), false, env.redisServer.pids, batonOptions{})
		},
	},
	{
		Name: "baton-service", Label: "baton, token service (HTTP, Redis fsync always) + PG entities, batches", postgres: true, redisServer: true,
		Note: "baton-service: tokens behind the token service (HTTP on the loopback, served in this process) over the benchmark's redis-server with appendfsync always; entities in PostgreSQL; plain path in batches of up to 16: a batch's tokens in one POST /v1/tokens/read, its transitions in one POST /v1/transitions/batch (not in the default set).",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openBatonService(ctx, env, name, batonOptions{batch: batchSize})
		},
	},
	{
		Name: "baton-service-single", Label: "baton, token service (HTTP, Redis fsync always) + PG entities, one at a time", postgres: true, redisServer: true,
		Note: "baton-service-single: as baton-service one signal at a time: a token read and a transition are a request each (not in the default set).",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openBatonService(ctx, env, name, batonOptions{})
		},
	},
	{
		Name: "classic-mysql", Label: "classic on MySQL: processed table + outbox", mysql: true, classic: "classic-mysql",
		Note: "classic-mysql: classic on the MySQL or MariaDB server of --mysql-dsn (InnoDB): the processed table, the entity's conditional update and the outbox row in one transaction, the relay and the cleanup job as classic; server CPU is the whole server process's while the variant ran.",
		open: openMySQLClassic,
	},
	{
		Name: "baton-mysql", Label: "baton, MySQL (fast path, batches)", mysql: true, classic: "classic-mysql",
		Note: "baton-mysql: tokens and entities in one backend/mysql store on the same server as classic-mysql, on the fast path, with engine.Config.Batch 16 as baton-pg; its \"x classic\" is against classic-mysql.",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openBatonMySQL(ctx, env, name, batonOptions{batch: batchSize})
		},
	},
	{
		Name: "baton-mysql-single", Label: "baton, MySQL (fast path, one by one)", mysql: true, classic: "classic-mysql",
		Note: "baton-mysql-single: as baton-mysql one signal at a time.",
		open: func(ctx context.Context, env *env, name string) (system, error) {
			return openBatonMySQL(ctx, env, name, batonOptions{})
		},
	},
	{
		Name: "baton-memory", Label: "baton, in-memory stores (not durable)",
		Note: "baton-memory: the in-memory reference stores; nothing is durable. For tests of the benchmark.",
		open: openBatonMemory,
	},
}

func variantByName(name string) (Variant, bool) {
	for _, v := range Variants {
		if v.Name == name {
			return v, true
		}
	}
	return Variant{}, false
}

func variantNames() string {
	names := make([]string, len(Variants))
	for i, v := range Variants {
		names[i] = v.Name
	}
	return strings.Join(names, ", ")
}
