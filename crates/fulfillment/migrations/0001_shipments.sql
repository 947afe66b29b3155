-- One row per shipped order. The UNIQUE constraint on order_id is what makes fulfillment
-- idempotent: a redelivered orders.placed message inserts nothing the second time
-- (INSERT ... ON CONFLICT (order_id) DO NOTHING), so an order never ships twice.
-- Written to run unchanged on SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS shipments (
    id         TEXT PRIMARY KEY,          -- shipment id, a UUID v4
    order_id   TEXT NOT NULL UNIQUE,
    user_id    TEXT NOT NULL,
    items      TEXT NOT NULL,             -- JSON array [{"sku": ..., "quantity": ...}]
    shipped_at TEXT NOT NULL              -- UTC, fixed-width RFC 3339 (sorts chronologically)
);

-- GET /users/{id}/shipments: newest first.
CREATE INDEX IF NOT EXISTS shipments_user_shipped_at ON shipments (user_id, shipped_at);
