//! The repository: every SQL statement of the service, and the transaction that places an
//! order.
//!
//! Placing an order is one transaction that (1) reserves stock for each item, (2) inserts the
//! order and (3) inserts an `orders.placed` row into the **outbox**, with the request's trace
//! context in its headers. Either all three happen or none: there is never an order without its
//! event, or an event for an order that does not exist. The outbox relay
//! ([`crate::outbox`]) publishes the row later, so a queue outage never loses an order.
//!
//! Stock is reserved in one of two ways ([`Locking`]):
//!
//! * **optimistic**: read `(stock, version)`, then
//!   `UPDATE … WHERE sku = $2 AND version = $3`. If another transaction changed the row in
//!   between, the update matches zero rows: that is a *conflict*; the whole transaction is
//!   rolled back and retried with exponential backoff and jitter (so that the retries of
//!   colliding requests spread out instead of colliding again), at most
//!   `max_conflict_retries` times, then the client gets 503. On SQLite a deferred transaction
//!   that read a snapshot and then wants the write lock may instead fail at once with
//!   `SQLITE_BUSY`/"database is locked" (another writer committed after our snapshot): the same
//!   situation, treated the same way.
//! * **pessimistic**: take the lock first — PostgreSQL `SELECT … FOR UPDATE` locks the row;
//!   SQLite `BEGIN IMMEDIATE` takes the database's write lock — then read and update. Waiting
//!   replaces retrying.
//!
//! Items are reserved in SKU order, so two multi-item orders always lock rows in the same
//! order and cannot deadlock each other. Whatever happens, the `CHECK (stock >= 0)` constraint
//! keeps stock from going negative.

use std::collections::BTreeMap;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sqlx::any::{Any, AnyRow};
use sqlx::error::ErrorKind;
use sqlx::{Connection, Row};
use telemetry::db::DbOperation;

use crate::config::Locking;
use crate::db::{Backend, Database, statement};
use crate::order::{Item, NewOrder, ORDERS_PLACED, Order, OrderPlaced, Status};

/// Counter: optimistic-locking conflicts (each one rolls back a transaction).
pub(crate) const STOCK_CONFLICTS: &str = "orders_stock_conflicts_total";
/// Gauge: outbox rows not yet published.
pub(crate) const OUTBOX_PENDING: &str = "orders_outbox_pending_messages";

/// Most rows the relay takes at a time.
pub(crate) const OUTBOX_BATCH: i64 = 100;
/// Most orders `GET /users/{id}/orders` returns.
const USER_ORDERS_LIMIT: i64 = 50;

/// The first retry after a conflict waits about this long (doubling, plus up to 100% jitter).
const CONFLICT_MIN_DELAY: Duration = Duration::from_millis(5);
/// The longest wait between two attempts (before jitter).
const CONFLICT_MAX_DELAY: Duration = Duration::from_millis(200);

const SELECT_STOCK: DbOperation = statement(
    "SELECT",
    "inventory",
    "SELECT stock, version FROM inventory WHERE sku = $1",
);
const SELECT_STOCK_FOR_UPDATE: DbOperation = statement(
    "SELECT",
    "inventory",
    "SELECT stock, version FROM inventory WHERE sku = $1 FOR UPDATE",
);
const RESERVE_IF_UNCHANGED: DbOperation = statement(
    "UPDATE",
    "inventory",
    "UPDATE inventory SET stock = stock - $1, version = version + 1 WHERE sku = $2 AND version = $3",
);
const RESERVE_LOCKED: DbOperation = statement(
    "UPDATE",
    "inventory",
    "UPDATE inventory SET stock = stock - $1, version = version + 1 WHERE sku = $2",
);
/// SQLite's write lock is taken by `BEGIN IMMEDIATE` itself: the time spent waiting for it is
/// this span's duration, so it is named after the table the lock is taken for.
const BEGIN_IMMEDIATE: DbOperation = statement("BEGIN", "inventory", "BEGIN IMMEDIATE");
/// The commit makes the order, its stock and its outbox row durable at once.
const COMMIT: DbOperation = statement("COMMIT", "orders", "COMMIT");
const INSERT_ORDER: DbOperation = statement(
    "INSERT",
    "orders",
    "INSERT INTO orders (id, user_id, status, items, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
);
const INSERT_OUTBOX: DbOperation = statement(
    "INSERT",
    "outbox",
    "INSERT INTO outbox (id, subject, payload, headers, created_at, attempts) VALUES ($1, $2, $3, $4, $5, 0)",
);
const SELECT_ORDER: DbOperation = statement(
    "SELECT",
    "orders",
    "SELECT id, user_id, status, items, created_at, updated_at FROM orders WHERE id = $1",
);
const SELECT_USER_ORDERS: DbOperation = statement(
    "SELECT",
    "orders",
    "SELECT id, user_id, status, items, created_at, updated_at FROM orders WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
);
const UPDATE_STATUS: DbOperation = statement(
    "UPDATE",
    "orders",
    "UPDATE orders SET status = $1, updated_at = $2 WHERE id = $3 AND status = 'accepted'",
);
const SELECT_UNSENT: DbOperation = statement(
    "SELECT",
    "outbox",
    "SELECT id, subject, payload, headers FROM outbox WHERE sent_at IS NULL ORDER BY created_at, id LIMIT $1",
);
const MARK_SENT: DbOperation = statement(
    "UPDATE",
    "outbox",
    "UPDATE outbox SET sent_at = $1, attempts = attempts + 1 WHERE id = $2",
);
const COUNT_FAILED_ATTEMPT: DbOperation = statement(
    "UPDATE",
    "outbox",
    "UPDATE outbox SET attempts = attempts + 1 WHERE id = $1",
);
const COUNT_UNSENT: DbOperation = statement(
    "SELECT",
    "outbox",
    "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL",
);

/// Why an order could not be placed or changed. Each variant is one answer to the client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// No such SKU in the inventory (422).
    #[error("unknown SKU {0:?}: it is not in the inventory")]
    UnknownSku(String),
    /// Not enough stock (409).
    #[error("{sku}: {requested} requested, {available} in stock")]
    OutOfStock {
        sku: String,
        requested: i64,
        available: i64,
    },
    /// Someone else changed the stock row between our read and our write (retried
    /// internally; never leaves [`Store::place_order`]).
    #[error("the stock of {0} changed concurrently")]
    Conflict(String),
    /// Every attempt conflicted (503).
    #[error("the stock of {sku} is under heavy contention: {attempts} attempts conflicted")]
    Contention { sku: String, attempts: u32 },
    /// No order with that id (404).
    #[error("no order with id {0}")]
    NotFound(String),
    /// A final status cannot change to the other final status (409).
    #[error("order {id} is already {current}; it cannot become {requested}")]
    FinalStatus {
        id: String,
        current: Status,
        requested: Status,
    },
    /// No connection became free in time (503).
    #[error("no database connection became free in time: {0}")]
    PoolExhausted(sqlx::Error),
    /// Anything else the database said (500).
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// A stored row could not be read back (500).
    #[error("corrupt row in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => StoreError::PoolExhausted(e),
            e => StoreError::Database(e),
        }
    }
}

/// One outbox row waiting for the relay.
#[derive(Clone, Debug)]
pub(crate) struct OutboxRow {
    pub(crate) id: String,
    pub(crate) subject: String,
    pub(crate) payload: String,
    /// The W3C propagation fields of the request that placed the order.
    pub(crate) headers: BTreeMap<String, String>,
}

/// What `PUT /orders/{id}/status` did.
#[derive(Debug)]
pub(crate) enum StatusChange {
    /// The status changed.
    Changed(Order),
    /// The order already had that status (a repeated report): nothing changed.
    Unchanged(Order),
}

/// The repository over one [`Database`].
#[derive(Debug)]
pub(crate) struct Store {
    db: Database,
}

impl Store {
    pub(crate) fn new(db: Database) -> Self {
        Self { db }
    }

    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// Places `order` (see the [module docs](self)): reserves stock, inserts the order and its
    /// outbox row carrying `trace_headers`, all in one transaction. Retries optimistic
    /// conflicts up to `max_conflict_retries` times.
    pub(crate) async fn place_order(
        &self,
        order: &NewOrder,
        locking: Locking,
        max_conflict_retries: u32,
        trace_headers: &BTreeMap<String, String>,
    ) -> Result<Order, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let headers = serde_json::to_string(trace_headers).map_err(|e| StoreError::Corrupt {
            table: "outbox",
            reason: e.to_string(),
        })?;
        let backoff = ExponentialBuilder::new()
            .with_min_delay(CONFLICT_MIN_DELAY)
            .with_max_delay(CONFLICT_MAX_DELAY)
            .with_max_times(max_conflict_retries as usize)
            // Seeded afresh per order (backon's `std` feature), so colliding orders spread out.
            .with_jitter();
        let attempt = || self.place_once(&id, order, locking, &headers);
        let result = attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, StoreError::Conflict(_)))
            .notify(|e, delay| {
                tracing::debug!(error = %e, retry_in = ?delay, "stock conflict, retrying the order");
            })
            .await;
        match result {
            Err(StoreError::Conflict(sku)) => Err(StoreError::Contention {
                sku,
                attempts: max_conflict_retries + 1,
            }),
            other => other,
        }
    }

    /// One attempt of [`place_order`](Self::place_order). Dropping the transaction on an
    /// early return rolls it back.
    async fn place_once(
        &self,
        id: &str,
        order: &NewOrder,
        locking: Locking,
        headers: &str,
    ) -> Result<Order, StoreError> {
        let backend = self.db.backend();
        // The wait for a connection is measured (`db_client_connection_wait_time_seconds`) on
        // its own, before the transaction begins.
        let mut conn = self.db.acquire().await.map_err(|e| classify(e, None))?;
        let mut tx = match (locking, backend) {
            (Locking::Pessimistic, Backend::Sqlite) => {
                let begin = Connection::begin_with(&mut *conn, BEGIN_IMMEDIATE.query);
                self.db
                    .run(&BEGIN_IMMEDIATE, begin)
                    .await
                    .map_err(|e| classify(e, None))?
            }
            _ => Connection::begin(&mut *conn)
                .await
                .map_err(|e| classify(e, None))?,
        };

        // Lock rows in one global order (by SKU) so that concurrent multi-item orders cannot
        // deadlock.
        let mut by_sku: Vec<&Item> = order.items.iter().collect();
        by_sku.sort_by(|a, b| a.sku.cmp(&b.sku));
        for item in by_sku {
            let sku = item.sku.as_str();
            let read = match (locking, backend) {
                (Locking::Pessimistic, Backend::Postgres) => &SELECT_STOCK_FOR_UPDATE,
                _ => &SELECT_STOCK,
            };
            let row = self
                .db
                .run_in(read, &mut tx, |c| {
                    sqlx::query::<Any>(read.query).bind(sku).fetch_optional(c)
                })
                .await
                .map_err(|e| classify(e, Some(sku)))?
                .ok_or_else(|| StoreError::UnknownSku(sku.to_owned()))?;
            let stock: i64 = row.try_get(0)?;
            let version: i64 = row.try_get(1)?;
            if stock < item.quantity {
                return Err(StoreError::OutOfStock {
                    sku: sku.to_owned(),
                    requested: item.quantity,
                    available: stock,
                });
            }
            let updated = match locking {
                Locking::Optimistic => {
                    self.db
                        .run_in(&RESERVE_IF_UNCHANGED, &mut tx, |c| {
                            sqlx::query(RESERVE_IF_UNCHANGED.query)
                                .bind(item.quantity)
                                .bind(sku)
                                .bind(version)
                                .execute(c)
                        })
                        .await
                }
                Locking::Pessimistic => {
                    self.db
                        .run_in(&RESERVE_LOCKED, &mut tx, |c| {
                            sqlx::query(RESERVE_LOCKED.query)
                                .bind(item.quantity)
                                .bind(sku)
                                .execute(c)
                        })
                        .await
                }
            };
            let updated = updated.map_err(|e| match e {
                // The constraint caught what the read did not (it cannot, unless the row
                // changed under a lock we thought we held): still an honest "out of stock".
                sqlx::Error::Database(ref db) if db.kind() == ErrorKind::CheckViolation => {
                    StoreError::OutOfStock {
                        sku: sku.to_owned(),
                        requested: item.quantity,
                        available: stock,
                    }
                }
                e => classify(e, Some(sku)),
            })?;
            if updated.rows_affected() == 0 {
                return Err(conflict(sku));
            }
        }

        let now = now_rfc3339();
        let items = serde_json::to_string(&order.items).map_err(|e| StoreError::Corrupt {
            table: "orders",
            reason: e.to_string(),
        })?;
        self.db
            .run_in(&INSERT_ORDER, &mut tx, |c| {
                sqlx::query(INSERT_ORDER.query)
                    .bind(id)
                    .bind(order.user_id.as_str())
                    .bind(Status::Accepted.as_str())
                    .bind(items.as_str())
                    .bind(now.as_str())
                    .bind(now.as_str())
                    .execute(c)
            })
            .await
            .map_err(|e| classify(e, None))?;

        let payload = serde_json::to_string(&OrderPlaced {
            order_id: id,
            user_id: &order.user_id,
            items: &order.items,
            placed_at: &now,
        })
        .map_err(|e| StoreError::Corrupt {
            table: "outbox",
            reason: e.to_string(),
        })?;
        self.db
            .run_in(&INSERT_OUTBOX, &mut tx, |c| {
                sqlx::query(INSERT_OUTBOX.query)
                    .bind(uuid::Uuid::new_v4().to_string())
                    .bind(ORDERS_PLACED)
                    .bind(payload)
                    .bind(headers)
                    .bind(now.as_str())
                    .execute(c)
            })
            .await
            .map_err(|e| classify(e, None))?;

        self.db
            .run(&COMMIT, tx.commit())
            .await
            .map_err(|e| classify(e, order.items.first().map(|i| i.sku.as_str())))?;

        Ok(Order {
            order_id: id.to_owned(),
            user_id: order.user_id.clone(),
            status: Status::Accepted,
            items: order.items.clone(),
            created_at: now.clone(),
            updated_at: now,
        })
    }

    /// The order with `id`, if any.
    pub(crate) async fn order(&self, id: &str) -> Result<Option<Order>, StoreError> {
        let row = self
            .db
            .run_pooled(&SELECT_ORDER, |mut c| async move {
                sqlx::query(SELECT_ORDER.query)
                    .bind(id)
                    .fetch_optional(&mut *c)
                    .await
            })
            .await?;
        row.as_ref().map(order_from_row).transpose()
    }

    /// The user's orders, newest first, at most 50.
    pub(crate) async fn user_orders(&self, user_id: &str) -> Result<Vec<Order>, StoreError> {
        let rows = self
            .db
            .run_pooled(&SELECT_USER_ORDERS, |mut c| async move {
                sqlx::query(SELECT_USER_ORDERS.query)
                    .bind(user_id)
                    .bind(USER_ORDERS_LIMIT)
                    .fetch_all(&mut *c)
                    .await
            })
            .await?;
        rows.iter().map(order_from_row).collect()
    }

    /// Records what fulfillment reported. Idempotent: `accepted` → `fulfilled`/`failed`
    /// changes the order; reporting the status it already has changes nothing; switching
    /// between the two final statuses is refused.
    pub(crate) async fn set_status(
        &self,
        id: &str,
        status: Status,
    ) -> Result<StatusChange, StoreError> {
        // One conditional UPDATE decides atomically, so two concurrent reports cannot both
        // "win"; the read afterwards only explains the outcome.
        let now = now_rfc3339();
        let changed = self
            .db
            .run_pooled(&UPDATE_STATUS, |mut c| async move {
                sqlx::query(UPDATE_STATUS.query)
                    .bind(status.as_str())
                    .bind(now)
                    .bind(id)
                    .execute(&mut *c)
                    .await
            })
            .await?
            .rows_affected()
            > 0;
        let order = self
            .order(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        if changed {
            Ok(StatusChange::Changed(order))
        } else if order.status == status {
            Ok(StatusChange::Unchanged(order))
        } else {
            Err(StoreError::FinalStatus {
                id: id.to_owned(),
                current: order.status,
                requested: status,
            })
        }
    }

    /// Up to [`OUTBOX_BATCH`] unsent outbox rows, oldest first.
    pub(crate) async fn unsent(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = self
            .db
            .run_pooled(&SELECT_UNSENT, |mut c| async move {
                sqlx::query(SELECT_UNSENT.query)
                    .bind(OUTBOX_BATCH)
                    .fetch_all(&mut *c)
                    .await
            })
            .await?;
        rows.iter()
            .map(|row| {
                let headers: String = row.try_get("headers")?;
                Ok(OutboxRow {
                    id: row.try_get("id")?,
                    subject: row.try_get("subject")?,
                    payload: row.try_get("payload")?,
                    // Unreadable headers only cost the trace link, never the message.
                    headers: serde_json::from_str(&headers).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Marks an outbox row as published.
    pub(crate) async fn mark_sent(&self, id: &str) -> Result<(), StoreError> {
        let now = now_rfc3339();
        self.db
            .run_pooled(&MARK_SENT, |mut c| async move {
                sqlx::query(MARK_SENT.query)
                    .bind(now)
                    .bind(id)
                    .execute(&mut *c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Counts a failed publish of an outbox row (the row stays unsent).
    pub(crate) async fn count_failed_attempt(&self, id: &str) -> Result<(), StoreError> {
        self.db
            .run_pooled(&COUNT_FAILED_ATTEMPT, |mut c| async move {
                sqlx::query(COUNT_FAILED_ATTEMPT.query)
                    .bind(id)
                    .execute(&mut *c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// How many outbox rows are not yet published.
    pub(crate) async fn unsent_count(&self) -> Result<i64, StoreError> {
        let row = self
            .db
            .run_pooled(&COUNT_UNSENT, |mut c| async move {
                sqlx::query(COUNT_UNSENT.query).fetch_one(&mut *c).await
            })
            .await?;
        Ok(row.try_get(0)?)
    }
}

/// Counts and names a conflict.
fn conflict(sku: &str) -> StoreError {
    metrics::counter!(STOCK_CONFLICTS).increment(1);
    StoreError::Conflict(sku.to_owned())
}

/// Lock contention reported by the database is a conflict (retried); anything else is an
/// error.
fn classify(e: sqlx::Error, sku: Option<&str>) -> StoreError {
    if is_contention(&e) {
        conflict(sku.unwrap_or("the order"))
    } else {
        e.into()
    }
}

/// SQLite `SQLITE_BUSY` and `SQLITE_LOCKED` (with their extended codes, e.g. `BUSY_SNAPSHOT`:
/// our read snapshot is older than the latest commit, so we may not write), PostgreSQL
/// `serialization_failure` (40001) and `deadlock_detected` (40P01).
fn is_contention(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    matches!(
        db.code().as_deref(),
        Some("5" | "261" | "517" | "773" | "6" | "262" | "40001" | "40P01")
    )
}

fn order_from_row(row: &AnyRow) -> Result<Order, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        table: "orders",
        reason,
    };
    let status: String = row.try_get("status")?;
    let items: String = row.try_get("items")?;
    Ok(Order {
        order_id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        status: Status::parse(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?,
        items: serde_json::from_str(&items).map_err(|e| corrupt(format!("items: {e}")))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Now as RFC 3339 UTC with a fixed width (`2026-11-29T09:41:07.123456Z`), so that timestamps
/// stored as text sort in time order.
pub(crate) fn now_rfc3339() -> String {
    telemetry::logging::Rfc3339Micros::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_fixed_width_rfc3339_utc() {
        let now = now_rfc3339();
        assert_eq!(now.len(), "2026-11-29T09:41:07.123456Z".len(), "{now}");
        time::OffsetDateTime::parse(&now, &time::format_description::well_known::Rfc3339).unwrap();
    }
}
