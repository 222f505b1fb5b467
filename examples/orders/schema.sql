-- The orders service's own tables: what a real team already has before it
-- adopts baton. There is deliberately no unique key on order_id in the
-- ledger, reservations and shipments, so that a step applied twice would
-- show up as a second row (the end-to-end test counts them) instead of an
-- error.
CREATE TABLE IF NOT EXISTS orders (
	id           text        PRIMARY KEY,
	customer     text        NOT NULL,
	sku          text        NOT NULL,
	qty          integer     NOT NULL CHECK (qty > 0),
	amount_cents bigint      NOT NULL CHECK (amount_cents > 0),
	status       text        NOT NULL,
	conversation bytea       NOT NULL,
	created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS accounts (
	customer      text   PRIMARY KEY,
	balance_cents bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
	entry        bigserial   PRIMARY KEY,
	order_id     text        NOT NULL REFERENCES orders (id),
	customer     text        NOT NULL,
	amount_cents bigint      NOT NULL,
	charged_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS stock (
	sku       text    PRIMARY KEY,
	available integer NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
	entry    bigserial PRIMARY KEY,
	order_id text      NOT NULL REFERENCES orders (id),
	sku      text      NOT NULL,
	qty      integer   NOT NULL
);
CREATE TABLE IF NOT EXISTS shipments (
	entry      bigserial   PRIMARY KEY,
	order_id   text        NOT NULL REFERENCES orders (id),
	shipped_at timestamptz NOT NULL DEFAULT now()
);
