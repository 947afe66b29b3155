//! The shipments repository: the only place that writes or reads the `shipments` table.
//!
//! Every statement is wrapped in [`telemetry::db::instrument_with`], which makes the database
//! CLIENT span (`"INSERT shipments"`, `"SELECT shipments"`) and records
//! `db_client_operation_duration_seconds`; the repository itself only speaks SQL.

use serde::Serialize;
use sqlx::Row;
use telemetry::db::{DbOperation, DbServer};
use time::OffsetDateTime;

use crate::database::Database;
use crate::event::Item;

/// Records a shipment unless the order already has one. `ON CONFLICT (order_id) DO NOTHING`
/// is the idempotency guard: a redelivered message inserts nothing and the order ships once.
const INSERT_SHIPMENT: DbOperation = DbOperation::new(
    "sqlite",
    "INSERT",
    "shipments",
    "INSERT INTO shipments (id, order_id, user_id, items, shipped_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id) DO NOTHING",
);

/// Whether an order has been shipped (used when a message is dead-lettered).
const SELECT_SHIPPED: DbOperation = DbOperation::new(
    "sqlite",
    "SELECT",
    "shipments",
    "SELECT id FROM shipments WHERE order_id = $1",
);

/// A user's newest shipments.
const SELECT_FOR_USER: DbOperation = DbOperation::new(
    "sqlite",
    "SELECT",
    "shipments",
    "SELECT id, order_id, user_id, items, shipped_at FROM shipments WHERE user_id = $1 ORDER BY shipped_at DESC, id DESC LIMIT $2",
);

/// The most shipments `GET /users/{id}/shipments` returns.
pub(crate) const LIST_LIMIT: i64 = 50;

/// One shipment, as `GET /users/{id}/shipments` shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Shipment {
    /// The shipment's own id (UUID v4).
    pub shipment_id: String,
    /// The order it fulfils.
    pub order_id: String,
    /// The user who placed the order.
    pub user_id: String,
    /// The items shipped, as in the order event.
    pub items: serde_json::Value,
    /// When it shipped (UTC, RFC 3339).
    pub shipped_at: String,
}

/// What [`Shipments::record`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// A new shipment row was written.
    Shipped,
    /// The order had shipped before (a redelivery): nothing was written.
    AlreadyShipped,
}

/// The `shipments` table.
#[derive(Clone, Debug)]
pub(crate) struct Shipments {
    db: Database,
}

impl Shipments {
    pub(crate) fn new(db: Database) -> Self {
        Self { db }
    }

    /// Records that `order_id` shipped, once: see [`INSERT_SHIPMENT`].
    pub(crate) async fn record(
        &self,
        order_id: &str,
        user_id: &str,
        items: &[Item],
    ) -> Result<Recorded, sqlx::Error> {
        let items = serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned());
        let query = sqlx::query(INSERT_SHIPMENT.query)
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(order_id.to_owned())
            .bind(user_id.to_owned())
            .bind(items)
            .bind(timestamp(OffsetDateTime::now_utc()))
            .execute(&self.db.pool);
        let result = traced(&INSERT_SHIPMENT.on(self.db.system), &self.db.server, query).await?;
        Ok(if result.rows_affected() == 0 {
            Recorded::AlreadyShipped
        } else {
            Recorded::Shipped
        })
    }

    /// Whether `order_id` has a shipment.
    pub(crate) async fn is_shipped(&self, order_id: &str) -> Result<bool, sqlx::Error> {
        let query = sqlx::query(SELECT_SHIPPED.query)
            .bind(order_id.to_owned())
            .fetch_optional(&self.db.pool);
        let row = traced(&SELECT_SHIPPED.on(self.db.system), &self.db.server, query).await?;
        Ok(row.is_some())
    }

    /// The user's newest shipments, at most [`LIST_LIMIT`], newest first.
    pub(crate) async fn for_user(&self, user_id: &str) -> Result<Vec<Shipment>, sqlx::Error> {
        let query = sqlx::query(SELECT_FOR_USER.query)
            .bind(user_id.to_owned())
            .bind(LIST_LIMIT)
            .fetch_all(&self.db.pool);
        let rows = traced(&SELECT_FOR_USER.on(self.db.system), &self.db.server, query).await?;
        rows.iter()
            .map(|row| {
                let items: String = row.try_get("items")?;
                Ok(Shipment {
                    shipment_id: row.try_get("id")?,
                    order_id: row.try_get("order_id")?,
                    user_id: row.try_get("user_id")?,
                    // Written by `record` from typed items, so it parses; a row edited by hand
                    // still shows, as the raw text.
                    items: serde_json::from_str(&items).unwrap_or(serde_json::Value::String(items)),
                    shipped_at: row.try_get("shipped_at")?,
                })
            })
            .collect()
    }
}

/// `2025-01-31T09:08:07.123456Z`: RFC 3339 in UTC with exactly six fractional digits. A fixed
/// width makes the text sort chronologically, which `ORDER BY shipped_at` relies on in both
/// databases (`time`'s own RFC 3339 output trims trailing zeros, so its width varies).
pub(crate) fn timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

/// Runs one query in its database CLIENT span, with the database's error code as `error.type`.
async fn traced<F, T>(
    operation: &DbOperation,
    server: &DbServer,
    query: F,
) -> Result<T, sqlx::Error>
where
    F: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    telemetry::db::instrument_with(operation, server, servicekit::db::sqlx_error_type, query).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_fixed_width_utc_rfc3339() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(timestamp(at), "2023-11-14T22:13:20.000000Z");
        let parsed = OffsetDateTime::parse(
            &timestamp(at),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(parsed, at);
    }
}
