//! # gateway — Faultline's public REST edge
//!
//! Every user request enters Faultline here. The gateway owns no data; it checks requests,
//! protects the services behind it, and calls them:
//!
//! ```text
//! client ──▶ gateway :8080 ──▶ orders :8081        POST /orders, GET /orders/{id}, GET /users/{id}/orders
//!                        └───▶ fulfillment :8082   GET /users/{id}/shipments
//! ```
//!
//! | route | what it does |
//! |---|---|
//! | `POST /api/orders` | validates, calls orders **once** (not idempotent), answers `202` + `Location` |
//! | `GET /api/orders/{id}` | reads through to orders (retried), `404` when unknown |
//! | `GET /api/users/{id}/summary` | orders and fulfillment **in parallel**; degraded, not failed, without fulfillment |
//!
//! The resilience of an edge service, each in its own module:
//! - [`admission`]: a rate limit (429 + `Retry-After`) and a concurrency limit (503, load
//!   shedding) in front of every route;
//! - [`retry`]: exponential backoff with jitter, for idempotent reads only;
//! - per-call timeouts (`orders_timeout`, `fulfillment_timeout`) enforced by the HTTP client;
//! - [`input`]: every request is checked before anything downstream is called.
//!
//! Telemetry is set up by the binary (`telemetry::init`); this library only adds the SERVER layer
//! to its router and calls services through the instrumented client, so one request is one
//! trace across all three services.
//!
//! The admin listener (:9080) serves `/metrics`, `/healthz` and `/readyz`. Readiness means
//! "both downstream services answer HTTP": orders and fulfillment serve `/healthz` on their admin
//! ports, which the gateway is not told, so each check asks the app port for something that
//! cannot exist (`GET /orders/00000000-0000-0000-0000-000000000000`,
//! `GET /users/readiness-probe/shipments`) and takes any answer, 404 included, as "up".
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let shutdown = servicekit::server::CancellationToken::new();
//! servicekit::server::cancel_on_signals(shutdown.clone());
//! let running = gateway::start(gateway::Config::from_env()?, None, shutdown).await?;
//! running.wait().await
//! # }
//! ```

pub mod admission;
pub mod app;
mod config;
pub mod downstream;
pub mod handlers;
pub mod input;
pub mod retry;

use std::net::SocketAddr;

use anyhow::Context as _;
use servicekit::server::{CancellationToken, bind, serve};
use tokio::task::JoinHandle;

pub use app::{AppState, router};
pub use config::{
    Config, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_RATE_LIMIT_RPS,
};

/// A started gateway: where it listens, and its serving task.
#[derive(Debug)]
pub struct Running {
    /// The app listener's address (the real port when 0 was asked for).
    pub app_addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Waits until both listeners have stopped: after the shutdown token is cancelled and the
    /// requests in flight are answered, or when a server fails.
    ///
    /// # Errors
    /// The server's error, or the serving task's panic.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task
            .await
            .context("the gateway's serving task panicked or was cancelled")?
    }
}

/// Binds both listeners (port 0 picks a free port), starts serving on the current runtime and
/// returns at once. Cancel `shutdown` to stop: both listeners stop accepting, requests in flight
/// are finished, then [`Running::wait`] returns.
///
/// `metrics` renders `GET /metrics` on the admin listener (`None`: that route answers 404).
///
/// # Errors
/// When a listener cannot be bound; the message names the variable to change.
pub async fn start(
    config: Config,
    metrics: Option<telemetry::MetricsHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let app_listener = bind(config.listen_addr, "LISTEN_ADDR").await?;
    let admin_listener = bind(config.admin_listen_addr, "ADMIN_LISTEN_ADDR").await?;
    let app_addr = app_listener
        .local_addr()
        .context("reading the app listener's address")?;
    let admin_addr = admin_listener
        .local_addr()
        .context("reading the admin listener's address")?;

    admission::describe_metrics();
    let state = AppState::new(&config);
    let admin = servicekit::admin::admin_router(metrics, state.readiness());
    let app = router(state);

    tracing::info!(
        %app_addr,
        %admin_addr,
        orders_url = %config.orders_url,
        fulfillment_url = %config.fulfillment_url,
        rate_limit_rps = config.rate_limit_rps,
        rate_limit_burst = config.rate_limit_burst,
        max_concurrent_requests = config.max_concurrent_requests,
        "gateway listening"
    );
    let task = tokio::spawn(async move {
        serve(app, app_listener, admin, admin_listener, shutdown).await?;
        tracing::info!("gateway stopped");
        Ok(())
    });
    Ok(Running {
        app_addr,
        admin_addr,
        task,
    })
}
