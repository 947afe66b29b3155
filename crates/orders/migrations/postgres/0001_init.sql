-- The orders service's schema, PostgreSQL flavour. Keep it in step with ../sqlite/0001_init.sql:
-- the service runs the same statements against both.
--
-- Ids and timestamps are TEXT on both backends: sqlx's `Any` driver moves only integers,
-- floats, booleans, strings and bytes, so a UUID is its hyphenated form and a timestamp is
-- RFC 3339 UTC with a fixed width (`2026-11-29T09:41:07.123456Z`), which sorts by time as text.

CREATE TABLE inventory (
    sku     TEXT   NOT NULL PRIMARY KEY,
    -- The last line of defence: whatever the application does, stock never goes negative.
    stock   BIGINT NOT NULL CHECK (stock >= 0),
    -- Bumped by every change; the optimistic compare-and-swap reads and checks it.
    version BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE orders (
    id         TEXT NOT NULL PRIMARY KEY,
    user_id    TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('accepted', 'fulfilled', 'failed')),
    -- JSON array of {"sku","quantity"}.
    items      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- GET /users/{id}/orders: newest first.
CREATE INDEX orders_user_id_created_at ON orders (user_id, created_at);

-- The transactional outbox: written in the same transaction as the order, published by the relay.
CREATE TABLE outbox (
    id         TEXT   NOT NULL PRIMARY KEY,
    subject    TEXT   NOT NULL,
    -- JSON event body.
    payload    TEXT   NOT NULL,
    -- JSON object of W3C propagation fields (traceparent, tracestate, baggage).
    headers    TEXT   NOT NULL,
    created_at TEXT   NOT NULL,
    -- NULL until the queue accepted the message.
    sent_at    TEXT,
    attempts   BIGINT NOT NULL DEFAULT 0
);

-- The relay asks "unsent rows, oldest first": a partial index holds only those, so it stays
-- small however many rows have been sent.
CREATE INDEX outbox_unsent ON outbox (created_at) WHERE sent_at IS NULL;
