package postgres

import (
	"fmt"
	"strings"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// tokenColumns are the tokens table's columns in the order that every
// statement here writes and reads them.
const tokenColumns = "id, conversation, causation, destination, type, digest, created_at, created_ns, expires_at, expires_ns"

// tokenTypes are the types of tokenColumns, for zip.
var tokenTypes = []string{"bytea", "bytea", "bytea", "text", "text", "bytea", "timestamptz", "int2", "timestamptz", "int2"}

// zip returns a select list that turns array parameters $first,
// $first+1, ... into rows: unnest($first::t[]), unnest($first+1::u[]), ...
// A column is its element type ("text"), or a name and the type
// ("key text") to be named with AS. Set-returning functions in a select
// list run in lockstep, so arrays of equal length give one row per index,
// as unnest(a, b, ...) in FROM does. Not that form: a function scan stores
// each array's elements in a tuplestore before the first row, which cost
// about 250 µs of server CPU per statement with ten arrays, more than the
// insert it fed (BenchmarkArrayRows).
func zip(first int, columns ...string) string {
	cols := make([]string, len(columns))
	for i, c := range columns {
		name, typ, named := strings.Cut(c, " ")
		if !named {
			cols[i] = fmt.Sprintf("unnest($%d::%s[])", first+i, c)
			continue
		}
		cols[i] = fmt.Sprintf("unnest($%d::%s[]) AS %s", first+i, typ, name)
	}
	return strings.Join(cols, ", ")
}

// statements holds the SQL of one schema, built once per Store. The
// schema name in it was validated and quoted by Config.
type statements struct {
	transition, issue, claimRoot, get, getMany, listByConversation, listByDestination, expireRoots string
	load, loadBatch, loadWithToken, insertEntity, updateEntity, commitBatch, stale                 string
	// fastPath[newEntity][withChildren] (fastPath).
	fastPath                          [2][2]string
	loadWithTokens, commitTransitions string
}

func newStatements(cfg Config) statements {
	r := strings.NewReplacer(
		"{tokens}", cfg.table("tokens"),
		"{entities}", cfg.table("entities"),
		"{guard}", cfg.table("commit_guard"),
		"{columns}", tokenColumns,
		"{children}", "SELECT "+zip(2, tokenTypes...),
	)
	return statements{
		// One statement, so one atomic step: the children are inserted
		// only if this statement deleted the parent, and a child that
		// exists (unique_violation) aborts the whole statement, deletion
		// included. Two concurrent transitions of one token serialize on
		// its row lock; under READ COMMITTED the second re-checks the row,
		// finds it deleted, and deletes and creates nothing.
		transition: r.Replace(`WITH consumed AS (
	DELETE FROM {tokens} WHERE id = $1 RETURNING id
), created AS (
	INSERT INTO {tokens} ({columns})
	{children}
	WHERE EXISTS (SELECT 1 FROM consumed)
)
SELECT count(*) FROM consumed`),

		// Roots issued together (issueGroup): every root whose id is free
		// is inserted, and the statement names those it inserted.
		issue: r.Replace(`INSERT INTO {tokens} ({columns})
SELECT ` + zip(1, tokenTypes...) + `
ON CONFLICT (id) DO NOTHING
RETURNING id`),
		get:     r.Replace(`SELECT {columns} FROM {tokens} WHERE id = $1`),
		getMany: r.Replace(`SELECT {columns} FROM {tokens} WHERE id = ANY($1::bytea[])`),
		// The row is locked first, so a claim that waited for a
		// concurrent transition or expiry sees the row as they left it
		// (READ COMMITTED rechecks a locked row): gone, or still there.
		// The claim updates only a locked row that has not expired; the
		// second branch answers only if it did not: the token has expired.
		claimRoot: r.Replace(`WITH locked AS (
	SELECT {columns} FROM {tokens} WHERE id = $1 FOR UPDATE
), claimed AS (
	UPDATE {tokens} SET expires_at = NULL, expires_ns = NULL
	WHERE id IN (SELECT id FROM locked WHERE expires_at IS NULL OR (expires_at, expires_ns) > ($2, $3))
	RETURNING {columns}
)
SELECT 1, {columns} FROM claimed
UNION ALL
SELECT 2, {columns} FROM locked WHERE NOT EXISTS (SELECT 1 FROM claimed)`),
		listByConversation: r.Replace(`SELECT {columns} FROM {tokens}
WHERE conversation = $1 AND id > $2 ORDER BY id LIMIT $3`),
		listByDestination: r.Replace(`SELECT {columns} FROM {tokens}
WHERE destination = $1 AND id > $2 ORDER BY id LIMIT $3`),
		// The expiry is checked again on the row itself: a row that a
		// concurrent ClaimRoot changed is rechecked on its new version
		// (READ COMMITTED), while the id list was read before; without the
		// second check a root claimed meanwhile would be deleted.
		expireRoots: r.Replace(`DELETE FROM {tokens} WHERE id IN (
	SELECT id FROM {tokens}
	WHERE expires_at IS NOT NULL AND (expires_at, expires_ns) < ($1, $2)
	ORDER BY expires_at, expires_ns LIMIT $3
) AND expires_at IS NOT NULL AND (expires_at, expires_ns) < ($1, $2)`),

		load: r.Replace(`SELECT version, state, outbox FROM {entities} WHERE key = $1`),
		// One statement reads both at one snapshot (store.TokenLoader);
		// the outer joins return one row whether or not either exists.
		loadWithToken: r.Replace(`SELECT e.version, e.state, e.outbox, t.id, t.conversation, t.causation, t.destination, t.type,
	t.digest, t.created_at, t.created_ns, t.expires_at, t.expires_ns
FROM (VALUES (1)) AS one (x)
LEFT JOIN {entities} e ON e.key = $1
LEFT JOIN {tokens} t ON t.id = $2`),
		insertEntity: r.Replace(`INSERT INTO {entities} (key, version, state, outbox, oldest_outbox_at, oldest_outbox_ns)
VALUES ($1, 1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING`),
		updateEntity: r.Replace(`UPDATE {entities}
SET version = version + 1, state = $3, outbox = $4, oldest_outbox_at = $5, oldest_outbox_ns = $6
WHERE key = $1 AND version = $2`),
		// LoadBatch: keys may repeat; each stored entity comes once.
		loadBatch: r.Replace(`SELECT key, version, state, outbox FROM {entities} WHERE key = ANY($1::text[])`),
		// Each row is its own compare-and-set, an update at its version or
		// (version 0) an insert of a new entity; keys are distinct, so no
		// target row joins two input rows. The rows are locked in key order
		// first, as commitTransitions locks them, and new entities are
		// inserted in key order after, so that two batches never wait for
		// each other in a cycle (a deadlock costs a second before PostgreSQL
		// breaks it).
		commitBatch: r.Replace(`WITH input AS (
	SELECT ` + zip(1, "key text", "version bigint", "state bytea", "outbox bytea", "oldest_at timestamptz", "oldest_ns int2") + `
), locked AS (
	SELECT key FROM {entities} WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE
), updated AS (
	UPDATE {entities} AS e
	SET version = e.version + 1, state = i.state, outbox = i.outbox, oldest_outbox_at = i.oldest_at, oldest_outbox_ns = i.oldest_ns
	FROM input i
	WHERE i.version > 0 AND e.key = i.key AND e.version = i.version AND e.key IN (SELECT key FROM locked)
	RETURNING e.key
), inserted AS (
	INSERT INTO {entities} (key, version, state, outbox, oldest_outbox_at, oldest_outbox_ns)
	SELECT key, 1, state, outbox, oldest_at, oldest_ns FROM input WHERE version = 0 ORDER BY key
	ON CONFLICT (key) DO NOTHING
	RETURNING key
)
SELECT key FROM updated
UNION ALL
SELECT key FROM inserted`),
		stale: r.Replace(`SELECT key FROM {entities}
WHERE oldest_outbox_at IS NOT NULL AND (oldest_outbox_at, oldest_outbox_ns) < ($1, $2)
ORDER BY oldest_outbox_at, oldest_outbox_ns LIMIT $3`),

		// LoadWithTokens: one row per read, in one snapshot. $3 numbers
		// the reads: generate_series would number them too, but the
		// planner expects 1000 rows of it and then reads the whole
		// entities table instead of looking up each key.
		loadWithTokens: r.Replace(`SELECT r.n, e.version, e.state, e.outbox, t.id, t.conversation, t.causation, t.destination, t.type,
	t.digest, t.created_at, t.created_ns, t.expires_at, t.expires_ns
FROM (SELECT ` + zip(1, "key text", "token bytea", "n int4") + `) AS r
LEFT JOIN {entities} e ON e.key = r.key
LEFT JOIN {tokens} t ON t.id = r.token`),

		// Many fast paths in one statement, each applied or not on its
		// own (so no guard: one refused transition must not abort the
		// others). The live tokens are locked first, then the entities,
		// each in key order, and new entities are inserted in key order,
		// as the single fast path too takes its token before its entity,
		// so that concurrent statements wait for each other in one
		// direction only (a deadlock costs a second before PostgreSQL
		// breaks it, and sends the batch down the single path); a
		// transition is alive when all its tokens are live (its Token and
		// those chained after it, store.Transition.Then), ready when it is
		// alive and its entity locked or new, committed when its entity's
		// compare-and-set (or insert of a new entity) succeeded, and only
		// then are its tokens deleted and its children created. A token
		// deleted or an entity changed by a concurrent commit is seen as
		// such once its lock is granted (READ COMMITTED rechecks the row).
		// Parameters: $1-$8 one row per transition, $9-$10 the chained
		// tokens and $11-$21 the children, each with its transition's item
		// number.
		commitTransitions: r.Replace(`WITH input AS (
	SELECT ` + zip(1, "item int4", "token bytea", "key text", "version bigint", "state bytea", "outbox bytea", "oldest_at timestamptz", "oldest_ns int2") + `
), chained AS (
	SELECT ` + zip(9, "item int4", "token bytea") + `
), live AS (
	SELECT id FROM {tokens} WHERE id = ANY($2::bytea[] || $10::bytea[]) ORDER BY id FOR UPDATE
), locked AS (
	-- The count runs live to its end (every token locked) before the
	-- first entity is locked, whatever plan the planner picks.
	SELECT key FROM {entities} WHERE key = ANY($3::text[]) AND (SELECT count(*) FROM live) >= 0
	ORDER BY key FOR UPDATE
), alive AS (
	SELECT i.item FROM input i
	WHERE i.token IN (SELECT id FROM live)
	AND NOT EXISTS (SELECT 1 FROM chained c WHERE c.item = i.item AND c.token NOT IN (SELECT id FROM live))
), ready AS (
	SELECT i.* FROM input i
	WHERE i.item IN (SELECT item FROM alive) AND (i.version = 0 OR i.key IN (SELECT key FROM locked))
), updated AS (
	UPDATE {entities} AS e
	SET version = e.version + 1, state = r.state, outbox = r.outbox, oldest_outbox_at = r.oldest_at, oldest_outbox_ns = r.oldest_ns
	FROM ready r
	WHERE r.version > 0 AND e.key = r.key AND e.version = r.version
	RETURNING r.item
), inserted AS (
	INSERT INTO {entities} (key, version, state, outbox, oldest_outbox_at, oldest_outbox_ns)
	SELECT key, 1, state, outbox, oldest_at, oldest_ns FROM ready WHERE version = 0 ORDER BY key
	ON CONFLICT (key) DO NOTHING
	RETURNING key
), committed AS (
	SELECT item FROM updated
	UNION ALL
	SELECT r.item FROM ready r JOIN inserted n ON n.key = r.key WHERE r.version = 0
), consumed AS (
	DELETE FROM {tokens} WHERE id IN (
		SELECT token FROM input WHERE item IN (SELECT item FROM committed)
		UNION ALL
		SELECT token FROM chained WHERE item IN (SELECT item FROM committed)
	)
), created AS (
	INSERT INTO {tokens} ({columns})
	SELECT id, conversation, causation, destination, type, digest, created_at, created_ns, expires_at, expires_ns
	FROM (SELECT unnest($11::int4[]) AS item, ` + zip(12, tokenTypes...) + `) AS c (item, {columns})
	WHERE c.item IN (SELECT item FROM committed)
)
SELECT i.item, i.item IN (SELECT item FROM alive), i.item IN (SELECT item FROM committed) FROM input i`),

		fastPath: [2][2]string{
			{fastPath(r, false, false), fastPath(r, false, true)},
			{fastPath(r, true, false), fastPath(r, true, true)},
		},
	}
}

// fastPath is the fast path's statement (one round trip, one commit):
// consume the token; commit the entity (insert it when newEntity, else
// update it at its version) only if the token was consumed; create the
// children only if the entity was committed. If the token was consumed but
// the compare-and-set failed, the insert into the guard table violates its
// CHECK (false) constraint and aborts the statement, so the token stays
// live. Parameters: $1 token, $2 key, $3 expected version, $4 state, $5
// outbox, $6-$7 oldest outbox entry, and withChildren $8-$17 the children
// (as in transition, shifted). Without children the statement does not
// name the tokens table as an insert's target: opening it and its indexes
// for an insert of no rows cost about 50 µs of server CPU (measured with
// BenchmarkStepCosts).
func fastPath(r *strings.Replacer, newEntity, withChildren bool) string {
	commit := `UPDATE {entities}
	SET version = version + 1, state = $4::bytea, outbox = $5::bytea, oldest_outbox_at = $6::timestamptz, oldest_outbox_ns = $7::int2
	WHERE key = $2::text AND version = $3::bigint AND EXISTS (SELECT 1 FROM consumed)
	RETURNING version`
	if newEntity {
		commit = `INSERT INTO {entities} (key, version, state, outbox, oldest_outbox_at, oldest_outbox_ns)
	SELECT $2::text, 1, $4::bytea, $5::bytea, $6::timestamptz, $7::int2 FROM consumed WHERE $3::bigint = 0
	ON CONFLICT (key) DO NOTHING
	RETURNING version`
	}
	created := ""
	if withChildren {
		created = `, created AS (
	INSERT INTO {tokens} ({columns})
	SELECT ` + zip(8, tokenTypes...) + `
	WHERE EXISTS (SELECT 1 FROM committed)
)`
	}
	return r.Replace(`WITH consumed AS (
	DELETE FROM {tokens} WHERE id = $1 RETURNING id
), committed AS (
	` + commit + `
), refused AS (
	INSERT INTO {guard} (entity_key) SELECT $2::text FROM consumed WHERE NOT EXISTS (SELECT 1 FROM committed)
)` + created + `
SELECT count(*) FROM consumed`)
}

// fastPathCall returns the fast path's statement for committing e (stored
// as row) while consuming token and creating create, with its arguments.
func (s *statements) fastPathCall(token baton.TokenID, e store.Entity, row entityRow, create []baton.Token) (string, []any) {
	args := []any{token[:], e.Key, int64(e.Version), e.State, row.outbox, row.oldestAt, row.oldestNs}
	if len(create) > 0 {
		args = append(args, tokenArrays(create)...)
	}
	return s.fastPath[boolInt(e.Version == 0)][boolInt(len(create) > 0)], args
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}
