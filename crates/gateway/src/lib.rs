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
//! Faults ([`chaos`]) can be injected at run time through `/admin/faults` on the admin listener
//! ([`FAULT_KINDS`] lists those that act here): HTTP and runtime faults on the routes (a
//! middleware near the handlers, see [`app`]), dependency faults and a dropped trace context on
//! the calls to `orders` and `fulfillment` (below the CLIENT span). A fault shows in the
//! telemetry only through its effects, unless it was set with `reveal`.
//!
//! The admin listener (:9080) serves `/metrics`, `/healthz`, `/readyz` and `/admin/faults`
//! (mutations need the [`Config::admin_token`] when one is set). Readiness means
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

use servicekit::server::{CancellationToken, Listeners};

pub use app::{AppState, router};
pub use config::{
    Config, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_RATE_LIMIT_RPS,
    FAULT_KINDS, ROUTES, fault_registry,
};
pub use servicekit::server::Running;

/// Binds both listeners (port 0 picks a free port), starts serving on the current runtime and
/// returns at once. Cancel `shutdown` to stop: both listeners stop accepting, requests in flight
/// are finished, then [`Running::wait`] returns.
///
/// `metrics` renders `GET /metrics` on the admin listener (`None`: that route answers 404).
/// The admin listener also serves `/admin/faults` for [`Config::faults`], and a task removes
/// expired faults until `shutdown` (it also registers the `faultline_faults_active` gauge, so
/// start the gateway after the metrics recorder is installed).
///
/// # Errors
/// When a listener cannot be bound; the message names the variable to change.
pub async fn start(
    config: Config,
    metrics: Option<telemetry::MetricsHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let listeners = Listeners::bind(config.listen_addr, config.admin_listen_addr).await?;
    let (app_addr, admin_addr) = (listeners.app_addr, listeners.admin_addr);

    admission::describe_metrics();
    tokio::spawn(
        config
            .faults
            .clone()
            .run_expiry(shutdown.clone().cancelled_owned()),
    );
    let state = AppState::new(&config);
    let admin = servicekit::admin::admin_router(metrics, state.readiness()).merge(
        chaos::admin::router(config.faults.clone(), config.admin_token.clone()),
    );
    let app = router(state);

    tracing::info!(
        %app_addr,
        %admin_addr,
        orders_url = %config.orders_url,
        fulfillment_url = %config.fulfillment_url,
        rate_limit_rps = config.rate_limit_rps,
        rate_limit_burst = config.rate_limit_burst,
        max_concurrent_requests = config.max_concurrent_requests,
        admin_token = config.admin_token.is_some(),
        "gateway listening"
    );
    let task = tokio::spawn(async move {
        listeners.serve(app, admin, shutdown).await?;
        tracing::info!("gateway stopped");
        Ok(())
    });
    Ok(Running::new("gateway", app_addr, admin_addr, task))
}
