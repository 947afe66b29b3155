//! The app router: routes, fallbacks and the layers around them, in one place so the order of
//! the layers (which matters) is visible at a glance.
//!
//! From the outside in, a request meets:
//! 1. [`telemetry::http::ServerLayer`] — the SERVER span, RED metrics, `x-request-id` and
//!    `x-trace-id`. Outermost, so that everything below, refusals included, is traced and
//!    measured, and every problem body carries the `trace_id`;
//! 2. [`crate::admission::admit`] — rate limit (429) and concurrency limit (503);
//! 3. the body size limit (413), applied by the JSON extractor;
//! 4. [`chaos::http::inbound`] — the injected HTTP and runtime faults of matching routes
//!    (latency, errors, hangs, CPU burn, blocking calls, a lock held across an await, a
//!    leak). Inside the SERVER layer, so the span and the RED metrics see their effects as
//!    they would see a real incident; after admission, so a refused request (429/503) never
//!    meets a fault; right before the handler, as if the handler itself misbehaved;
//! 5. the handler ([`crate::handlers`]).
//!
//! All of them are added with `Router::layer`, so they also wrap the fallbacks and see axum's
//! matched route (the span name is `"POST /api/orders"`, never the raw path; a fault's `route`
//! is that same template).
//!
//! Outgoing calls meet the dependency faults (`dependency.latency`, `dependency.error`,
//! `telemetry.drop_context`) in the HTTP client, below its CLIENT span: see [`AppState::new`].

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use servicekit::admin::Readiness;
use servicekit::client::HttpClient;

use crate::Config;
use crate::admission::{Admission, admit};
use crate::downstream::{Fulfillment, Orders};
use crate::handlers;
use crate::retry::RetryPolicy;

/// What the handlers share: the downstream clients and the admission limits. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub(crate) orders: Orders,
    pub(crate) fulfillment: Fulfillment,
    admission: Arc<Admission>,
    max_body_bytes: usize,
    faults: chaos::Faults,
}

impl AppState {
    /// The state for `config`: one pooled HTTP client shared by both downstream services, a rate
    /// limiter and a concurrency limit.
    ///
    /// The client carries the outbound faults of [`Config::faults`], with the two downstream
    /// services named `orders` and `fulfillment`, so a fault's `target` can name either.
    pub fn new(config: &Config) -> Self {
        let faults = chaos::client::OutboundLayer::new(config.faults.clone())
            .dependency("orders", &config.orders_url)
            .dependency("fulfillment", &config.fulfillment_url);
        let client = HttpClient::new().with_faults(faults);
        let retry = RetryPolicy::default();
        Self {
            orders: Orders::new(
                client.clone(),
                config.orders_url.trim_end_matches('/').to_owned(),
                config.orders_timeout,
                retry,
            ),
            fulfillment: Fulfillment::new(
                client,
                config.fulfillment_url.trim_end_matches('/').to_owned(),
                config.fulfillment_timeout,
                retry,
            ),
            admission: Arc::new(Admission::new(
                config.rate_limit_rps,
                config.rate_limit_burst,
                config.max_concurrent_requests,
            )),
            max_body_bytes: config.max_body_bytes,
            faults: config.faults.clone(),
        }
    }

    /// The `/readyz` checks: each downstream service answers HTTP at all (see
    /// [`Orders::probe`](crate::downstream::Orders)). A 404 counts as ready: the point is that
    /// the service is up and reachable from here, not that the probe path exists.
    pub fn readiness(&self) -> Readiness {
        let orders = self.orders.clone();
        let fulfillment = self.fulfillment.clone();
        Readiness::new()
            .check("orders", move || {
                let orders = orders.clone();
                async move { orders.probe().await }
            })
            .check("fulfillment", move || {
                let fulfillment = fulfillment.clone();
                async move { fulfillment.probe().await }
            })
    }
}

/// The app router (public API, port 8080), fully layered; serve it or call it in-process.
pub fn router(state: AppState) -> Router {
    let admission = state.admission.clone();
    let max_body_bytes = state.max_body_bytes;
    let faults = state.faults.clone();
    Router::new()
        .route("/api/orders", post(handlers::place_order))
        .route("/api/orders/{id}", get(handlers::get_order))
        .route("/api/users/{id}/summary", get(handlers::user_summary))
        .fallback(handlers::no_route)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            faults,
            chaos::http::inbound,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(admission, admit))
        .layer(telemetry::http::ServerLayer::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    /// Every route in [`crate::ROUTES`] is a route the fault middleware sees by that name: a
    /// fault set on it acts on a request to it (so the list cannot drift from the router).
    #[tokio::test]
    async fn every_declared_route_is_matched_by_route_faults() {
        let config = Config::default();
        let app = router(AppState::new(&config));
        for route in crate::ROUTES {
            let spec = serde_json::json!({"kind": "http.error", "status": 418, "route": route});
            let fault = config
                .faults
                .set(&serde_json::from_value(spec).unwrap())
                .unwrap();
            let (method, template) = route.split_once(' ').unwrap();
            let request = http::Request::builder()
                .method(method)
                .uri(template.replace("{id}", "x"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 418, "{route}");
            config.faults.clear(&fault.id);
        }
    }
}
