//! The **orders** service: it owns the orders database, places orders, and hands each placed
//! order to fulfillment through a transactional outbox.
//!
//! ```text
//! gateway ──POST /orders──▶ api ──▶ store: ONE transaction
//!                                      ├─ reserve stock   (optimistic or pessimistic locking)
//!                                      ├─ insert order    (status accepted)
//!                                      └─ insert outbox row (orders.placed + trace context)
//!                         outbox relay ──publish──▶ queue ──▶ fulfillment
//!                                                                 │
//! fulfillment ──PUT /orders/{id}/status──▶ api ──▶ store ◀────────┘
//! ```
//!
//! Modules, in the order a request meets them: [`config`] (environment), `api` (HTTP
//! handlers), `order` (validation and the domain types), `store` (every SQL statement and the
//! placing transaction), `db` (the SQLite/PostgreSQL pool, migrations, seed, and the pool
//! metrics), `outbox` (the relay task), `faults` (the database faults that run as background
//! tasks). The fault kinds the service runs, and where each acts, are listed at
//! [`FAULT_KINDS`].
//!
//! The binary initialises telemetry, reads [`Config::from_env`] and calls [`start`]; this
//! library never installs a global subscriber or recorder.

#![warn(missing_docs)]

mod api;
pub mod config;
mod db;
mod faults;
mod order;
mod outbox;
mod store;

use std::sync::Arc;

use anyhow::Context as _;
use servicekit::admin::{Readiness, admin_router};
use servicekit::server::Listeners;
use tokio::sync::Notify;

pub use config::{Config, Locking};
pub use db::DatabaseError;
pub use servicekit::server::CancellationToken;
pub use servicekit::server::Running;

use crate::api::AppState;
use crate::db::Database;
use crate::outbox::QueueLink;
use crate::store::Store;

/// The fault kinds the orders service runs (`PUT /admin/faults` refuses any other with 400).
///
/// Each acts where the real failure would: the HTTP and runtime kinds in the inbound
/// middleware ([`chaos::http::inbound`]); `db.slow_query` inside the statement, in the database
/// itself (`pg_sleep` on PostgreSQL, a calibrated busy query on SQLite), on the same connection
/// and inside the statement's CLIENT span; `db.lock_contention` as a competing client that
/// keeps taking the hot stock row; `db.pool_exhaustion` as connections taken from the pool and
/// held; `queue.publish_failure` in the outbox relay's publish; `telemetry.drop_context` (target
/// `queue`) where the outbox row's trace context is written; `telemetry.clock_skew` in the span
/// exporter, through [`chaos::Faults::clock_skew_hook`] (installed by whoever initialises
/// telemetry).
pub const FAULT_KINDS: &[chaos::FaultKind] = &[
    chaos::FaultKind::HttpLatency,
    chaos::FaultKind::HttpError,
    chaos::FaultKind::HttpHang,
    chaos::FaultKind::DbSlowQuery,
    chaos::FaultKind::DbLockContention,
    chaos::FaultKind::DbPoolExhaustion,
    chaos::FaultKind::QueuePublishFailure,
    chaos::FaultKind::RuntimeCpuBurn,
    chaos::FaultKind::RuntimeBlockingCall,
    chaos::FaultKind::RuntimeLockAcrossAwait,
    chaos::FaultKind::RuntimeMemoryLeak,
    chaos::FaultKind::TelemetryDropContext,
    chaos::FaultKind::TelemetryClockSkew,
];

/// The orders service's inbound routes, as `METHOD /template` (what a fault's `route` may
/// name).
pub const ROUTES: &[&str] = &[
    "POST /orders",
    "GET /orders/{id}",
    "PUT /orders/{id}/status",
    "GET /users/{id}/orders",
];

/// An empty fault registry for orders: [`FAULT_KINDS`], its [`ROUTES`], and what each
/// targeted kind may name — `db.slow_query` a table (`inventory`, `orders`, `outbox`),
/// `db.lock_contention` a seeded SKU (`sku-1` … `sku-10`), `telemetry.drop_context` the queue
/// hop (`queue` or `orders.placed`). A spec naming anything else is refused instead of never
/// acting.
pub fn fault_registry() -> chaos::Faults {
    let skus: Vec<String> = (1..=10).map(|n| format!("sku-{n}")).collect();
    let skus: Vec<&str> = skus.iter().map(String::as_str).collect();
    chaos::Faults::new("orders", FAULT_KINDS)
        .with_routes(ROUTES)
        .with_targets(
            &[chaos::FaultKind::DbSlowQuery],
            &["inventory", "orders", "outbox"],
        )
        .with_targets(&[chaos::FaultKind::DbLockContention], &skus)
        .with_targets(
            &[chaos::FaultKind::TelemetryDropContext],
            &["queue", order::ORDERS_PLACED],
        )
}

/// Starts the orders service and returns once it is listening.
///
/// In order: connects the database (creating the SQLite file and its directory if missing),
/// applies the migrations, seeds `sku-1` … `sku-10` with 10,000 each if the inventory is empty,
/// binds the app and admin listeners (port 0 picks a free port), and starts the outbox relay.
/// The queue is connected by the relay, lazily: a queue that is down does not stop the service
/// from accepting orders; they wait in the outbox. `metrics` renders the admin `/metrics`
/// (`None`: 404 there). The admin listener also serves `/admin/faults` for `config.faults`
/// (mutations need `config.admin_token` when it is set), and the background tasks that make
/// the faults act (expiry, lock contention, pool exhaustion) and publish the pool gauges start
/// here. Everything stops gracefully when `shutdown` is cancelled (or a listener fails, which
/// cancels it); await [`Running::wait`] to know when it has: the listeners have finished their
/// in-flight requests, the outbox relay has finished its current publish, the background tasks
/// have let go of their connections, and the database pool is closed.
///
/// # Errors
/// The database cannot be opened or migrated, or a listener cannot be bound.
pub async fn start(
    config: Config,
    metrics: Option<telemetry::MetricsHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    describe_metrics();
    let faults = config.faults.clone();
    let database = Database::connect(&config.database_url, config.db_pool_size)
        .await?
        .with_faults(faults.clone());
    database.migrate().await?;
    database.seed().await?;
    let store = Arc::new(Store::new(database));

    let listeners = Listeners::bind(config.listen_addr, config.admin_listen_addr).await?;
    let (app_addr, admin_addr) = (listeners.app_addr, listeners.admin_addr);

    let queue = Arc::new(QueueLink::new(config.queue_url.clone(), faults.clone()));
    let outbox_written = Arc::new(Notify::new());

    let readiness = {
        let store = store.clone();
        let queue = queue.clone();
        Readiness::new()
            .check("database", move || {
                let store = store.clone();
                async move { store.database().ready().await }
            })
            .check("queue", move || {
                let queue = queue.clone();
                async move { queue.ready().await }
            })
    };
    let admin = admin_router(metrics, readiness).merge(chaos::admin::router(
        faults.clone(),
        config.admin_token.clone(),
    ));
    let app = api::router(AppState {
        store: store.clone(),
        locking: config.locking,
        max_conflict_retries: config.max_conflict_retries,
        outbox_written: outbox_written.clone(),
        faults: faults.clone(),
    });

    // After `describe_metrics` (the recorder is installed by now): the expiry task publishes
    // `faultline_faults_active`.
    let background = [
        tokio::spawn(
            faults
                .clone()
                .run_expiry(shutdown.clone().cancelled_owned()),
        ),
        tokio::spawn({
            let (store, shutdown) = (store.clone(), shutdown.clone());
            async move {
                store
                    .database()
                    .report_pool_usage_until(shutdown.cancelled())
                    .await;
            }
        }),
        tokio::spawn({
            let (store, faults, shutdown) = (store.clone(), faults.clone(), shutdown.clone());
            async move { faults::lock_contention(store.database(), &faults, &shutdown).await }
        }),
        tokio::spawn({
            let (store, faults, shutdown) = (store.clone(), faults.clone(), shutdown.clone());
            async move { faults::pool_exhaustion(store.database(), &faults, &shutdown).await }
        }),
    ];

    let relay = tokio::spawn({
        let store = store.clone();
        let shutdown = shutdown.clone();
        async move {
            outbox::run(&store, queue.as_ref(), &outbox_written, &shutdown).await;
        }
    });
    let server = tokio::spawn(listeners.serve(app, admin, shutdown.clone()));

    tracing::info!(
        %app_addr,
        %admin_addr,
        database = %servicekit::db::redact(&config.database_url),
        queue = %servicekit::db::redact(&config.queue_url),
        locking = %config.locking,
        "orders service listening"
    );
    let task = tokio::spawn(async move {
        let served = server.await;
        // Whatever ended the server (shutdown or failure), everything else stops too.
        shutdown.cancel();
        let relayed = relay.await;
        for task in background {
            // They stop on the shutdown token; none outlives the pool it uses.
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a background task of the orders service panicked");
            }
        }
        store.database().close().await;
        served
            .context("the HTTP server task panicked")?
            .context("the HTTP server failed")?;
        relayed.context("the outbox relay task panicked")?;
        tracing::info!("orders service stopped");
        Ok(())
    });
    Ok(Running::new("orders", app_addr, admin_addr, task))
}

/// Describes the service's own metrics for `/metrics` (`# HELP` lines).
fn describe_metrics() {
    metrics::describe_counter!(
        store::STOCK_CONFLICTS,
        "Optimistic-locking conflicts while reserving stock; each rolled back a transaction."
    );
    // Exported from the start, at 0: `rate()` and `increase()` then read 0, not "no data",
    // until the first conflict (Prometheus' advice for counters without labels).
    metrics::counter!(store::STOCK_CONFLICTS).increment(0);
    metrics::describe_gauge!(
        store::OUTBOX_PENDING,
        "Outbox rows (orders.placed events) not yet published to the queue."
    );
    metrics::describe_gauge!(
        db::CONNECTIONS,
        "Database connections of the pool, by state (idle, used): db.client.connection.count."
    );
    metrics::describe_gauge!(
        db::CONNECTION_MAX,
        "The most connections the database pool opens: db.client.connection.max."
    );
    metrics::describe_histogram!(
        db::CONNECTION_WAIT_TIME,
        metrics::Unit::Seconds,
        "Time taken to obtain a database connection from the pool: db.client.connection.wait_time."
    );
}
