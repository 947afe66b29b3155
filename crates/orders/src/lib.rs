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
//! placing transaction), `db` (the SQLite/PostgreSQL pool, migrations, seed), `outbox` (the
//! relay task).
//!
//! The binary initialises telemetry, reads [`Config::from_env`] and calls [`start`]; this
//! library never installs a global subscriber or recorder.

#![warn(missing_docs)]

mod api;
pub mod config;
mod db;
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

/// Starts the orders service and returns once it is listening.
///
/// In order: connects the database (creating the SQLite file and its directory if missing),
/// applies the migrations, seeds `sku-1` … `sku-10` with 10,000 each if the inventory is empty,
/// binds the app and admin listeners (port 0 picks a free port), and starts the outbox relay.
/// The queue is connected by the relay, lazily: a queue that is down does not stop the service
/// from accepting orders; they wait in the outbox. `metrics` renders the admin `/metrics`
/// (`None`: 404 there). Everything stops gracefully when `shutdown` is cancelled (or a
/// listener fails, which cancels it); await [`Running::wait`] to know when it has: the
/// listeners have finished their in-flight requests, the outbox relay has finished its current
/// publish, and the database pool is closed.
///
/// # Errors
/// The database cannot be opened or migrated, or a listener cannot be bound.
pub async fn start(
    config: Config,
    metrics: Option<telemetry::MetricsHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    describe_metrics();
    let database = Database::connect(&config.database_url, config.db_pool_size).await?;
    database.migrate().await?;
    database.seed().await?;
    let store = Arc::new(Store::new(database));

    let listeners = Listeners::bind(config.listen_addr, config.admin_listen_addr).await?;
    let (app_addr, admin_addr) = (listeners.app_addr, listeners.admin_addr);

    let queue = Arc::new(QueueLink::new(config.queue_url.clone()));
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
    let admin = admin_router(metrics, readiness);
    let app = api::router(AppState {
        store: store.clone(),
        locking: config.locking,
        max_conflict_retries: config.max_conflict_retries,
        outbox_written: outbox_written.clone(),
    });

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
    metrics::describe_gauge!(
        store::OUTBOX_PENDING,
        "Outbox rows (orders.placed events) not yet published to the queue."
    );
}
