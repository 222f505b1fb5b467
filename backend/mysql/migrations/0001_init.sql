-- 0001: tokens, entities and starts. {prefix} starts every table name. Names are quoted: a prefix such as "1e5_" would otherwise read as a number.
-- Ids are 16 bytes, digests 32; names and keys are byte strings compared
-- byte for byte. A time is two columns, seconds since the Unix epoch and
-- the nanoseconds within the second (_s, _ns), so every time.Time in UTC
-- round-trips exactly.

CREATE TABLE IF NOT EXISTS `{prefix}tokens` (
	id           BINARY(16)      NOT NULL PRIMARY KEY,
	conversation BINARY(16)      NOT NULL,
	causation    BINARY(16)      NULL,     -- NULL: a root token
	destination  VARBINARY(200)  NOT NULL,
	type         VARBINARY(200)  NOT NULL,
	digest       BINARY(32)      NOT NULL,
	created_s    BIGINT          NOT NULL,
	created_ns   INT             NOT NULL,
	expires_s    BIGINT          NULL,     -- NULL: never expires
	expires_ns   INT             NULL,
	KEY `{prefix}tokens_by_conversation` (conversation, id),
	KEY `{prefix}tokens_by_destination` (destination, id),
	KEY `{prefix}tokens_by_expiry` (expires_s, expires_ns)
) ENGINE = InnoDB;

-- Entities with their outbox (JSON of store.OutboxEntry). oldest_outbox_*
-- is the CreatedAt of the oldest outbox entry, NULL for an empty outbox,
-- so that the sweeper's query is an index range scan.
CREATE TABLE IF NOT EXISTS `{prefix}entities` (
	`key`            VARBINARY(512)  NOT NULL PRIMARY KEY,
	version          BIGINT UNSIGNED NOT NULL,
	state            LONGBLOB        NULL,
	outbox           LONGBLOB        NOT NULL,
	oldest_outbox_s  BIGINT          NULL,
	oldest_outbox_ns INT             NULL,
	KEY `{prefix}entities_by_oldest_outbox` (oldest_outbox_s, oldest_outbox_ns)
) ENGINE = InnoDB;

-- Conversations started in a caller's transaction, until their root
-- signal was sent (store.Starter).
CREATE TABLE IF NOT EXISTS `{prefix}starts` (
	id          BINARY(16)      NOT NULL PRIMARY KEY,
	version     BIGINT UNSIGNED NOT NULL,
	root        BINARY(16)      NULL,
	claimed     BOOLEAN         NOT NULL,
	destination VARBINARY(200)  NOT NULL,
	type        VARBINARY(200)  NOT NULL,
	payload     LONGBLOB        NOT NULL,
	traceparent VARBINARY(64)   NOT NULL,
	tracestate  VARBINARY(512)  NOT NULL,
	created_s   BIGINT          NOT NULL,
	created_ns  INT             NOT NULL,
	KEY `{prefix}starts_by_age` (created_s, created_ns, id)
) ENGINE = InnoDB;
