-- 0001: tokens, entities, and the guard of the fast path.
-- Migrate runs this with search_path set to the store's schema, so names
-- here are unqualified.

-- Live tokens. Times are kept to the nanosecond: *_at holds the time
-- truncated to the microsecond (PostgreSQL's resolution) and *_ns the
-- remaining 0 to 999 nanoseconds.
CREATE TABLE tokens (
	id           bytea       PRIMARY KEY CHECK (length(id) = 16),
	conversation bytea       NOT NULL CHECK (length(conversation) = 16),
	causation    bytea       CHECK (length(causation) = 16), -- NULL: a root token
	destination  text        NOT NULL,
	type         text        NOT NULL,
	digest       bytea       NOT NULL CHECK (length(digest) = 32),
	created_at   timestamptz NOT NULL,
	created_ns   smallint    NOT NULL CHECK (created_ns BETWEEN 0 AND 999),
	expires_at   timestamptz,                                  -- NULL: never expires
	expires_ns   smallint    CHECK (expires_ns BETWEEN 0 AND 999)
);
CREATE INDEX tokens_by_conversation ON tokens (conversation, id);
CREATE INDEX tokens_by_destination ON tokens (destination, id);
CREATE INDEX tokens_by_expiry ON tokens (expires_at, expires_ns) WHERE expires_at IS NOT NULL;

-- Entities with their outbox. oldest_outbox_* is the CreatedAt of the
-- oldest outbox entry, NULL when the outbox is empty; every commit sets it,
-- so the sweeper's query (Stale) is an index range scan.
CREATE TABLE entities (
	key              text        PRIMARY KEY,
	version          bigint      NOT NULL CHECK (version > 0),
	state            bytea,
	outbox           bytea       NOT NULL, -- JSON array of store.OutboxEntry
	oldest_outbox_at timestamptz,
	oldest_outbox_ns smallint    CHECK (oldest_outbox_ns BETWEEN 0 AND 999)
);
CREATE INDEX entities_by_oldest_outbox ON entities (oldest_outbox_at, oldest_outbox_ns)
	WHERE oldest_outbox_at IS NOT NULL;

-- No row can enter this table. CommitTransition inserts one when it
-- consumed the token but the entity's compare-and-set failed, so that the
-- check violation aborts the whole statement, token deletion included.
CREATE TABLE commit_guard (
	entity_key text,
	CONSTRAINT entity_version_conflict CHECK (false)
);
