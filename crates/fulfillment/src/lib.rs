//! The fulfillment service: a worker that consumes `orders.placed`, ships each order exactly
//! once, and reports back to orders.
//!
//! ```text
//! queue ──orders.placed──▶ worker pool ──▶ fulfil: payment → shipment (INSERT … ON CONFLICT DO NOTHING)
//!  (SQLite | JetStream)    (semaphore)                      └──▶ PUT {ORDERS_URL}/orders/{id}/status
//! ```
//!
//! Delivery is at least once, so everything a message causes is idempotent: the shipment
//! insert is guarded by a unique `order_id`, and the status report is an idempotent `PUT`. A
//! message that keeps failing is redelivered with a growing delay and, after
//! `max_deliveries`, dead-lettered to `orders.placed.dlq` (counted in
//! `fulfillment_dead_letters_total`, and the order reported `failed`). A poison payload is
//! dead-lettered at once.
//!
//! Files, in the order a message travels: `queue_link.rs` (connecting in the background),
//! `worker.rs` (receive loop and pool), `fulfil.rs` (the business steps), `event.rs` (the
//! payload), `shipments.rs` (the table), `orders_client.rs` (the report); then `routes.rs` for
//! the HTTP API and `database.rs` for the connection and schema.
//!
//! The library initialises no telemetry: the binary does, and passes the metrics handle in.
//!
//! # Faults
//!
//! The admin listener serves `/admin/faults` ([`chaos::admin`]) over [`Config::faults`]; the
//! kinds fulfillment runs are [`FAULT_KINDS`]. Where each acts:
//!
//! - `http.*` and `runtime.*`: on the app listener's requests ([`chaos::http::inbound`], inside
//!   the SERVER span);
//! - `dependency.latency`, `dependency.error`, `telemetry.drop_context` (target `orders`): on
//!   the status report to orders, below its CLIENT span ([`chaos::client::OutboundLayer`]);
//! - `queue.consumer_stall`: the worker pool takes no messages while it lasts;
//! - `queue.slow_consumer`: a message's payment step takes `ms` longer, inside the CONSUMER
//!   span;
//! - `queue.poison`: the affected fraction of orders fail their payment step on every delivery,
//!   like an order the worker cannot handle, until they are dead-lettered;
//! - `telemetry.clock_skew`: through the span hook the binary installs
//!   ([`chaos::Faults::clock_skew_hook`]).

mod config;
mod database;
mod event;
mod fulfil;
mod orders_client;
mod queue_link;
mod routes;
mod shipments;
mod worker;

use std::sync::Arc;

use anyhow::Context as _;
use servicekit::admin::{Readiness, admin_router};
pub use servicekit::server::CancellationToken;
use servicekit::server::Listeners;
pub use servicekit::server::Running;

pub use config::Config;
pub use event::{InvalidEvent, Item, OrderPlaced, valid_id};
pub use queue_link::QUEUE_PENDING_MESSAGES;
pub use shipments::Shipment;
pub use worker::DEAD_LETTERS;

/// The fault kinds fulfillment runs; `PUT /admin/faults` refuses any other with 400.
pub const FAULT_KINDS: &[chaos::FaultKind] = &[
    chaos::FaultKind::HttpLatency,
    chaos::FaultKind::HttpError,
    chaos::FaultKind::HttpHang,
    chaos::FaultKind::DependencyLatency,
    chaos::FaultKind::DependencyError,
    chaos::FaultKind::QueueConsumerStall,
    chaos::FaultKind::QueueSlowConsumer,
    chaos::FaultKind::QueuePoison,
    chaos::FaultKind::RuntimeCpuBurn,
    chaos::FaultKind::RuntimeBlockingCall,
    chaos::FaultKind::RuntimeLockAcrossAwait,
    chaos::FaultKind::RuntimeMemoryLeak,
    chaos::FaultKind::TelemetryDropContext,
    chaos::FaultKind::TelemetryClockSkew,
];

/// Fulfillment's inbound routes, as `METHOD /template` (what a fault's `route` may name).
pub const ROUTES: &[&str] = &["GET /users/{id}/shipments"];

/// An empty fault registry for fulfillment: [`FAULT_KINDS`], its [`ROUTES`], and the one
/// outgoing hop the dependency faults and `telemetry.drop_context` may target — `orders`, by
/// name or by the `host:port` of `orders_url`. A spec naming anything else is refused instead
/// of never acting.
pub fn fault_registry(orders_url: &str) -> chaos::Faults {
    chaos::Faults::new("fulfillment", FAULT_KINDS)
        .with_routes(ROUTES)
        .with_dependencies(&[("orders", orders_url)])
}

use database::Database;
use fulfil::Fulfiller;
use orders_client::OrdersClient;
use queue_link::QueueLink;
use shipments::Shipments;

/// Starts the service and returns at once:
///
/// 1. connects the database (creating a SQLite file and its directory) and migrates it;
/// 2. starts connecting to the queue in the background: if it is unreachable the service still
///    runs, `/readyz` reports the queue as not ready, and consuming starts once it connects;
/// 3. binds the app and admin listeners (port 0 allowed: see [`Running`]);
/// 4. starts the worker pool and the `fulfillment_queue_pending_messages` refresher;
/// 5. starts the fault registry's expiry task (which also registers
///    `faultline_faults_active`) and serves `/admin/faults` on the admin listener.
///
/// Cancelling `shutdown` stops receiving, lets the messages in flight finish (or leaves them
/// unacked, to be redelivered), and closes the listeners gracefully. [`Running::wait`] returns
/// once the service has stopped: the listeners closed after their requests in flight, the
/// workers finished (or abandoned, unacked) their messages, and the database pool closed.
///
/// # Errors
/// The database cannot be opened or migrated, or a listener cannot be bound.
pub async fn start(
    config: Config,
    metrics: Option<telemetry::MetricsHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    describe_metrics();
    let longest_report = orders_client::longest_report(config.orders_timeout);
    if config.ack_wait <= longest_report {
        // The lease would run out while a worker is still retrying the report: the queue
        // redelivers the message to another worker, and the order is processed twice at once
        // (harmless, the steps are idempotent, but wasted work and confusing traces).
        tracing::warn!(
            ack_wait_ms = config.ack_wait.as_millis() as u64,
            longest_processing_ms = longest_report.as_millis() as u64,
            "FULFILLMENT_ACK_WAIT_MS is shorter than the longest processing time; raise it or lower FULFILLMENT_ORDERS_TIMEOUT_MS"
        );
    }
    let workers = config.workers.max(1);
    // One connection per worker plus a few for the HTTP API and readiness checks.
    let max_connections = u32::try_from(workers).unwrap_or(u32::MAX).saturating_add(4);
    let db = Database::connect(&config.database_url, max_connections).await?;
    db.migrate().await?;

    let listeners = Listeners::bind(config.listen_addr, config.admin_listen_addr).await?;
    let (app_addr, admin_addr) = (listeners.app_addr, listeners.admin_addr);

    // Everything below stops on `stop`: the caller's shutdown, or a listener failing (then the
    // workers must not go on consuming for a service nobody can reach or probe).
    let stop = shutdown.child_token();
    let mut queue_config = queue::QueueConfig::new(config.queue_url.clone());
    queue_config.max_deliveries = config.max_deliveries;
    queue_config.ack_wait = config.ack_wait;
    let link = QueueLink::connect(queue_config, stop.clone());

    let shipments = Shipments::new(db.clone());
    let faults = config.faults.clone();
    let expiry = tokio::spawn(faults.clone().run_expiry(stop.clone().cancelled_owned()));
    let fulfiller = Arc::new(Fulfiller {
        shipments: shipments.clone(),
        orders: OrdersClient::new(&config.orders_url, config.orders_timeout, faults.clone()),
        faults: faults.clone(),
    });

    let readiness = {
        let db = db.clone();
        let link = link.clone();
        Readiness::new()
            .check("database", move || {
                let db = db.clone();
                async move { db.ping().await }
            })
            .check("queue", move || {
                let link = link.clone();
                async move { link.ready().await }
            })
    };
    let app = routes::app_router(shipments, faults.clone());
    let admin = admin_router(metrics, readiness).merge(chaos::admin::router(
        faults.clone(),
        config.admin_token.clone(),
    ));

    let pending = tokio::spawn(link.clone().report_pending(stop.clone()));
    let workers = tokio::spawn(worker::run(link, fulfiller, workers, stop.clone()));
    let server = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let served = listeners.serve(app, admin, stop.clone()).await;
            if let Err(error) = &served {
                tracing::error!(%error, "a listener failed; stopping the service");
                stop.cancel();
            }
            served
        })
    };
    tracing::info!(%app_addr, %admin_addr, database = db.system, "fulfillment started");

    let task = tokio::spawn(async move {
        let served = server.await;
        let worked = workers.await;
        let _ = pending.await;
        let _ = expiry.await;
        db.close().await;
        served.context("the listener task panicked")??;
        worked.context("the worker pool panicked")?;
        tracing::info!("fulfillment stopped");
        Ok(())
    });
    Ok(Running::new("fulfillment", app_addr, admin_addr, task))
}

fn describe_metrics() {
    metrics::describe_counter!(
        DEAD_LETTERS,
        "Messages on orders.placed dead-lettered while fulfillment consumed them: failed for good, or delivered max_deliveries times without being settled."
    );
    // Exported from the start, at 0 (the `FulfillmentDeadLetters` rule fires on a rise, and on
    // a series that appears above 0, as one exported only from its first dead letter did).
    metrics::counter!(DEAD_LETTERS).increment(0);
    metrics::describe_gauge!(
        QUEUE_PENDING_MESSAGES,
        "Messages on orders.placed not yet acknowledged (waiting, in flight or awaiting a retry)."
    );
}
