package postgres

import "strings"

// tokenColumns are the tokens table's columns in the order that every
// statement here writes and reads them.
const tokenColumns = "id, conversation, causation, destination, type, digest, created_at, created_ns, expires_at, expires_ns"

// unnestTokens turns the ten column arrays of tokenArgs, starting at
// parameter $2, into rows of the tokens table.
const unnestTokens = `SELECT * FROM unnest($2::bytea[], $3::bytea[], $4::bytea[], $5::text[], $6::text[],
		$7::bytea[], $8::timestamptz[], $9::int2[], $10::timestamptz[], $11::int2[])`

// statements holds the SQL of one schema, built once per Store. The
// schema name in it was validated and quoted by Config.
type statements struct {
	transition, issue, get, listByConversation, listByDestination, expireRoots string
	load, loadWithToken, insertEntity, updateEntity, commitBatch, stale        string
	commitTransitionInsert, commitTransitionUpdate                             string
}

func newStatements(cfg Config) statements {
	r := strings.NewReplacer(
		"{tokens}", cfg.table("tokens"),
		"{entities}", cfg.table("entities"),
		"{guard}", cfg.table("commit_guard"),
		"{columns}", tokenColumns,
		"{unnest}", unnestTokens,
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
	{unnest}
	WHERE EXISTS (SELECT 1 FROM consumed)
)
SELECT count(*) FROM consumed`),

		issue: r.Replace(`INSERT INTO {tokens} ({columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`),
		get:   r.Replace(`SELECT {columns} FROM {tokens} WHERE id = $1`),
		listByConversation: r.Replace(`SELECT {columns} FROM {tokens}
WHERE conversation = $1 AND id > $2 ORDER BY id LIMIT $3`),
		listByDestination: r.Replace(`SELECT {columns} FROM {tokens}
WHERE destination = $1 AND id > $2 ORDER BY id LIMIT $3`),
		expireRoots: r.Replace(`DELETE FROM {tokens} WHERE id IN (
	SELECT id FROM {tokens}
	WHERE expires_at IS NOT NULL AND (expires_at, expires_ns) < ($1, $2)
	ORDER BY expires_at, expires_ns LIMIT $3
)`),

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
		// Each row is its own compare-and-set; keys are distinct, so no
		// target row joins two source rows.
		commitBatch: r.Replace(`UPDATE {entities} AS e
SET version = e.version + 1, state = v.state, outbox = v.outbox, oldest_outbox_at = v.oldest_at, oldest_outbox_ns = v.oldest_ns
FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::bytea[], $5::timestamptz[], $6::int2[])
	AS v (key, version, state, outbox, oldest_at, oldest_ns)
WHERE e.key = v.key AND e.version = v.version
RETURNING e.key`),
		stale: r.Replace(`SELECT key FROM {entities}
WHERE oldest_outbox_at IS NOT NULL AND (oldest_outbox_at, oldest_outbox_ns) < ($1, $2)
ORDER BY oldest_outbox_at, oldest_outbox_ns LIMIT $3`),

		// The fast path, in one statement: consume the token; commit the
		// entity only if the token was consumed; create the children only
		// if the entity was committed. If the token was consumed but the
		// compare-and-set failed, the insert into the guard table violates
		// its CHECK (false) constraint and aborts the statement, so the
		// token stays live. Parameters: $1 token, $2-$11 children (as in
		// transition), $12 key, $13 expected version, $14 state, $15
		// outbox, $16-$17 oldest outbox entry.
		commitTransitionInsert: r.Replace(`WITH consumed AS (
	DELETE FROM {tokens} WHERE id = $1 RETURNING id
), committed AS (
	INSERT INTO {entities} (key, version, state, outbox, oldest_outbox_at, oldest_outbox_ns)
	SELECT $12::text, 1, $14::bytea, $15::bytea, $16::timestamptz, $17::int2 FROM consumed WHERE $13::bigint = 0
	ON CONFLICT (key) DO NOTHING
	RETURNING version
), refused AS (
	INSERT INTO {guard} (entity_key) SELECT $12::text FROM consumed WHERE NOT EXISTS (SELECT 1 FROM committed)
), created AS (
	INSERT INTO {tokens} ({columns})
	{unnest}
	WHERE EXISTS (SELECT 1 FROM committed)
)
SELECT count(*) FROM consumed`),
		commitTransitionUpdate: r.Replace(`WITH consumed AS (
	DELETE FROM {tokens} WHERE id = $1 RETURNING id
), committed AS (
	UPDATE {entities}
	SET version = version + 1, state = $14::bytea, outbox = $15::bytea, oldest_outbox_at = $16::timestamptz, oldest_outbox_ns = $17::int2
	WHERE key = $12::text AND version = $13::bigint AND EXISTS (SELECT 1 FROM consumed)
	RETURNING version
), refused AS (
	INSERT INTO {guard} (entity_key) SELECT $12::text FROM consumed WHERE NOT EXISTS (SELECT 1 FROM committed)
), created AS (
	INSERT INTO {tokens} ({columns})
	{unnest}
	WHERE EXISTS (SELECT 1 FROM committed)
)
SELECT count(*) FROM consumed`),
	}
}
