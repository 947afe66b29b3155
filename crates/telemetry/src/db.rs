//! Database CLIENT spans and the `db.client.operation.duration` metric.
//!
//! Wrap each database call (a `sqlx` query future, say) in [`instrument`]: it opens a CLIENT
//! span named `"{db.operation.name} {db.collection.name}"` (e.g. `"UPDATE inventory"`) with the
//! stable [database semantic conventions][semconv] — `db.system.name`, `db.operation.name`,
//! `db.collection.name`, `db.query.text` (the *parameterised* text: never put values in it),
//! `server.address`/`server.port` when known — marks it Error with `error.type` when the call
//! fails, and records `db_client_operation_duration_seconds`.
//!
//! A call made outside any span — a background poll, a readiness probe — records the metric
//! but opens no span: a one-span trace per poll would bury the traces that matter.
//!
//! [semconv]: https://opentelemetry.io/docs/specs/semconv/database/database-spans/
//!
//! ```no_run
//! use telemetry::db::{DbOperation, instrument};
//! # async fn g() -> Result<u64, std::io::Error> {
//! const RESERVE: DbOperation = DbOperation::new("postgresql", "UPDATE", "inventory",
//!     "UPDATE inventory SET stock = stock - $1, version = version + 1 WHERE sku = $2 AND version = $3");
//! let rows = instrument(&RESERVE, async { Ok::<u64, std::io::Error>(1) }).await?;
//! # Ok(rows) }
//! ```

use std::future::Future;
use std::time::Instant;

use tracing::Instrument;
use tracing::field::Empty;

use crate::metrics::DB_CLIENT_OPERATION_DURATION;

/// One kind of database call: what the span and metric say about it. Build it once (a
/// `const` per query) and reuse it.
#[derive(Clone, Debug)]
pub struct DbOperation {
    /// `db.system.name`: `postgresql`, `sqlite`, …
    pub system: &'static str,
    /// `db.operation.name`: `SELECT`, `INSERT`, `UPDATE`, `DELETE`, …
    pub operation: &'static str,
    /// `db.collection.name`: the table.
    pub collection: &'static str,
    /// `db.query.text`: the parameterised statement.
    pub query: &'static str,
}

impl DbOperation {
    /// Describes one statement.
    pub const fn new(
        system: &'static str,
        operation: &'static str,
        collection: &'static str,
        query: &'static str,
    ) -> Self {
        Self {
            system,
            operation,
            collection,
            query,
        }
    }

    /// The same statement on another database system (one `const`, two backends).
    pub const fn on(&self, system: &'static str) -> Self {
        Self {
            system,
            operation: self.operation,
            collection: self.collection,
            query: self.query,
        }
    }
}

/// Where the database server is (`server.address`, `server.port`); none for an embedded one.
#[derive(Clone, Debug, Default)]
pub struct DbServer {
    /// Host name or IP.
    pub address: Option<String>,
    /// Port.
    pub port: Option<u16>,
}

/// Runs `call` inside a database CLIENT span and records its duration. See the
/// [module docs](self).
///
/// # Errors
/// Whatever `call` returns; an error marks the span Error with `error.type` = the error's
/// type name (short form) and is recorded in the metric's `error_type` label.
pub async fn instrument<F, T, E>(operation: &DbOperation, call: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    instrument_on(operation, &DbServer::default(), call).await
}

/// [`instrument`] with the server's address and port.
///
/// # Errors
/// As [`instrument`].
pub async fn instrument_on<F, T, E>(
    operation: &DbOperation,
    server: &DbServer,
    call: F,
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    instrument_with(
        operation,
        server,
        |_: &E| short_type_name::<E>().to_owned(),
        call,
    )
    .await
}

/// [`instrument_on`] with a classifier giving each error its `error.type`: per the
/// conventions, the database's own status code (a SQLSTATE such as `40001`, an SQLite result
/// code such as `5`) when there is one, or a short class (`pool_timeout`, `io_error`). Keep
/// the set of values small: it becomes a metric label.
///
/// A failed call is logged at `debug` only: some failures are routine (an optimistic-locking
/// conflict retried a moment later); the span status, `error.type` and the metric carry it,
/// and the caller logs what matters to it.
///
/// # Errors
/// As [`instrument`].
pub async fn instrument_with<F, T, E, C>(
    operation: &DbOperation,
    server: &DbServer,
    error_type: C,
    call: F,
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
    C: Fn(&E) -> String,
{
    let start = Instant::now();
    if tracing::Span::current().is_none() {
        let result = call.await;
        let class = match &result {
            Ok(_) => String::new(),
            Err(e) => error_type(e),
        };
        record(operation, class, start);
        return result;
    }
    // A `&str`, not a `%` (Display) field: the OpenTelemetry layer formats those anew.
    let name = [operation.operation, " ", operation.collection].concat();
    let span = tracing::info_span!(
        target: "telemetry::db",
        "database call",
        otel.name = name.as_str(),
        otel.kind = "client",
        db.system.name = operation.system,
        db.operation.name = operation.operation,
        db.collection.name = operation.collection,
        db.query.text = operation.query,
        server.address = server.address.as_deref(),
        server.port = server.port.map(i64::from),
        otel.status_code = Empty,
        error.type = Empty,
    );
    let result = call.instrument(span.clone()).await;
    let class = match &result {
        Ok(_) => String::new(),
        Err(e) => {
            let class = error_type(e);
            span.record("otel.status_code", "ERROR");
            span.record("error.type", class.as_str());
            span.in_scope(|| {
                tracing::debug!(target: "telemetry::db", error = %e, error_type = %class, "database call failed");
            });
            class
        }
    };
    record(operation, class, start);
    result
}

fn record(operation: &DbOperation, error_type: String, start: Instant) {
    let labels = [
        metrics::Label::from_static_parts("db_system_name", operation.system),
        metrics::Label::from_static_parts("db_operation_name", operation.operation),
        metrics::Label::from_static_parts("db_collection_name", operation.collection),
        metrics::Label::new("error_type", error_type),
    ];
    metrics::histogram!(DB_CLIENT_OPERATION_DURATION, labels.iter())
        .record(start.elapsed().as_secs_f64());
}

/// The error's Rust type path without generic arguments (`sqlx_core::error::Error`): the
/// "exception type" the conventions ask for, with bounded cardinality.
fn short_type_name<E>() -> &'static str {
    let full = std::any::type_name::<E>();
    full.split('<').next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_are_the_rust_type_path_without_generics() {
        assert_eq!(short_type_name::<std::io::Error>(), "std::io::error::Error");
        assert_eq!(short_type_name::<Vec<u8>>(), "alloc::vec::Vec");
    }

    #[tokio::test]
    async fn a_call_outside_any_span_opens_no_span_but_one_inside_does() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tracing_subscriber::layer::SubscriberExt;

        struct CountDbSpans(Arc<AtomicUsize>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountDbSpans {
            fn on_new_span(
                &self,
                attrs: &tracing::span::Attributes<'_>,
                _: &tracing::span::Id,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                if attrs.metadata().target() == "telemetry::db" {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        const OP: DbOperation = DbOperation::new("sqlite", "SELECT", "outbox", "SELECT 1");
        let count = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(CountDbSpans(count.clone()));
        let _default = tracing::subscriber::set_default(subscriber);

        let _ = instrument(&OP, async { Ok::<_, std::io::Error>(()) }).await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            0,
            "a background poll makes no root span"
        );

        let outer = tracing::info_span!("request");
        let _ = instrument(&OP, async { Ok::<_, std::io::Error>(()) })
            .instrument(outer)
            .await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "inside a trace the call gets its span"
        );
    }

    #[tokio::test]
    async fn the_duration_is_recorded_with_the_semconv_labels() {
        let (recorder, handle) = crate::metrics::local_recorder();
        const OP: DbOperation = DbOperation::new(
            "sqlite",
            "SELECT",
            "orders",
            "SELECT * FROM orders WHERE id = $1",
        );
        let _guard = metrics::set_default_local_recorder(&recorder);
        let ok: Result<u8, std::io::Error> = instrument(&OP, async { Ok(1) }).await;
        assert_eq!(ok.unwrap(), 1);
        let err: Result<u8, std::io::Error> =
            instrument(&OP, async { Err(std::io::Error::other("locked")) }).await;
        assert!(err.is_err());
        let text = handle.render();
        let counts: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("db_client_operation_duration_seconds_count"))
            .collect();
        assert_eq!(counts.len(), 2, "{text}");
        assert!(
            counts
                .iter()
                .any(|l| l.contains("db_operation_name=\"SELECT\"")
                    && l.contains("db_collection_name=\"orders\"")
                    && l.contains("error_type=\"std::io::error::Error\""))
        );
        assert!(
            text.contains("le=\"0.001\""),
            "semantic-convention database buckets"
        );
    }
}
