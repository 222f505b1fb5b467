-- 0002: conversations started in a caller's transaction (store.Starter).
-- A row is written in the caller's transaction and deleted once its root
-- signal was sent; the sweeper sends those a caller left behind, oldest
-- first. root is NULL until the root token exists; claimed says it no
-- longer expires (always true when the tokens are in this schema too).
CREATE TABLE starts (
	id          bytea       PRIMARY KEY CHECK (length(id) = 16),
	version     bigint      NOT NULL CHECK (version > 0),
	root        bytea       CHECK (length(root) = 16),
	claimed     boolean     NOT NULL,
	destination text        NOT NULL,
	type        text        NOT NULL,
	payload     bytea       NOT NULL,
	traceparent text        NOT NULL,
	tracestate  text        NOT NULL,
	created_at  timestamptz NOT NULL,
	created_ns  smallint    NOT NULL CHECK (created_ns BETWEEN 0 AND 999),
	CHECK (NOT claimed OR root IS NOT NULL)
);
CREATE INDEX starts_by_created ON starts (created_at, created_ns);
