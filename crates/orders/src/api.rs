//! The HTTP API of the orders service (the app listener, port 8081):
//!
//! | route | does |
//! |---|---|
//! | `POST /orders` | validates, places the order (stock + order + outbox row in one transaction), 201 |
//! | `GET /orders/{id}` | one order, 404 if unknown |
//! | `GET /users/{id}/orders` | the user's latest 50 orders, newest first |
//! | `PUT /orders/{id}/status` | fulfillment's report: `fulfilled` or `failed`, idempotent |
//!
//! Every error is an `application/problem+json` body carrying the `trace_id`. The SERVER span,
//! request metrics and trace headers come from `telemetry::http::ServerLayer`; the handlers
//! only translate between HTTP and [`Store`].

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json as JsonResponse, Router};
use chaos::FaultKind;
use serde::Deserialize;
use servicekit::problem::{Json, Problem};
use tokio::sync::Notify;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::Locking;
use crate::order::{ORDERS_PLACED, PlaceOrder, Status, check_id};
use crate::store::{StatusChange, Store, StoreError};

/// Largest request body: an order of 20 items is well under 2 KiB.
const BODY_LIMIT_BYTES: usize = 16 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Arc<Store>,
    pub(crate) locking: Locking,
    pub(crate) max_conflict_retries: u32,
    /// Wakes the outbox relay after an order commits.
    pub(crate) outbox_written: Arc<Notify>,
    /// The service's faults.
    pub(crate) faults: chaos::Faults,
}

/// The app router, with the body limit, the inbound faults and the SERVER telemetry layer.
pub(crate) fn router(state: AppState) -> Router {
    let faults = state.faults.clone();
    Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{id}", get(get_order))
        .route("/orders/{id}/status", put(set_status))
        .route("/users/{id}/orders", get(user_orders))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(state)
        // `Router::layer`, so that both layers see the matched route (`/orders/{id}`). The
        // faults are inside the SERVER layer: its span and metrics see what they do.
        .layer(axum::middleware::from_fn_with_state(
            faults,
            chaos::http::inbound,
        ))
        .layer(telemetry::http::ServerLayer::new())
}

/// `POST /orders`.
async fn place_order(
    State(state): State<AppState>,
    Json(request): Json<PlaceOrder>,
) -> Result<Response, ApiError> {
    let order = request.validate().map_err(Problem::unprocessable)?;
    // The outbox row carries this request's trace context, so that publishing it later, in
    // another task, continues this trace — unless `telemetry.drop_context` breaks that hop.
    let mut trace_headers = telemetry::propagation::inject_map(&tracing::Span::current().context());
    if let Some(hit) = state.faults.roll(FaultKind::TelemetryDropContext, |spec| {
        chaos::target_matches(spec, &["queue", ORDERS_PLACED])
    }) {
        hit.acted();
        trace_headers.clear();
    }
    let placed = state
        .store
        .place_order(
            &order,
            state.locking,
            state.max_conflict_retries,
            &trace_headers,
        )
        .await?;
    state.outbox_written.notify_one();
    tracing::info!(
        order_id = %placed.order_id,
        user_id = %placed.user_id,
        items = placed.items.len(),
        "order accepted"
    );
    let location = format!("/orders/{}", placed.order_id);
    let mut response = (
        StatusCode::CREATED,
        JsonResponse(serde_json::json!({
            "order_id": placed.order_id,
            "status": placed.status,
        })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /orders/{id}`.
async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = order_id(&id)?;
    match state.store.order(&id).await? {
        Some(order) => Ok(JsonResponse(order).into_response()),
        None => Err(StoreError::NotFound(id).into()),
    }
}

/// `GET /users/{id}/orders`.
async fn user_orders(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    check_id("user id", &user_id).map_err(Problem::bad_request)?;
    let orders = state.store.user_orders(&user_id).await?;
    Ok(JsonResponse(orders).into_response())
}

#[derive(Debug, Deserialize)]
struct StatusReport {
    status: String,
}

/// `PUT /orders/{id}/status`.
async fn set_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(report): Json<StatusReport>,
) -> Result<Response, ApiError> {
    let id = order_id(&id)?;
    let status = match Status::parse(&report.status) {
        Some(s @ (Status::Fulfilled | Status::Failed)) => s,
        _ => {
            return Err(Problem::unprocessable(format!(
                "status must be \"fulfilled\" or \"failed\", not {:?}",
                report.status
            ))
            .into());
        }
    };
    let order = match state.store.set_status(&id, status).await? {
        StatusChange::Changed(order) => {
            tracing::info!(order_id = %id, %status, "order status changed");
            order
        }
        StatusChange::Unchanged(order) => {
            tracing::debug!(order_id = %id, %status, "repeated status report, nothing to change");
            order
        }
    };
    Ok(JsonResponse(order).into_response())
}

async fn no_route() -> Problem {
    Problem::not_found(
        "no such resource; see the orders API: /orders, /orders/{id}, /orders/{id}/status, /users/{id}/orders",
    )
}

async fn wrong_method() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "this resource does not support that method",
    )
}

/// An order id must be a UUID; its canonical (lowercase, hyphenated) form is the key.
fn order_id(raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| {
            Problem::bad_request(format!(
                "order id {raw:?} is not a UUID (expected e.g. 67e55044-10b1-426f-9247-bb680e5fe0c8)"
            ))
            .into()
        })
}

/// A handler's error: a [`Problem`], plus a `Retry-After` header when the problem says when to
/// retry (`retry_after_s`), so that clients and the gateway's retry logic need not parse the
/// body.
#[derive(Debug)]
pub(crate) struct ApiError(Box<Problem>);

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        Self(Box::new(problem))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self(Box::new(problem_for(error)))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = self
            .0
            .extensions
            .get("retry_after_s")
            .and_then(|v| v.as_u64());
        let mut response = self.0.into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

fn problem_for(error: StoreError) -> Problem {
    match &error {
        StoreError::UnknownSku(_) => Problem::unprocessable(error.to_string()),
        StoreError::OutOfStock { .. } => {
            Problem::new(StatusCode::CONFLICT, "Out of stock", error.to_string())
        }
        StoreError::NotFound(_) => Problem::not_found(error.to_string()),
        StoreError::FinalStatus { .. } => {
            Problem::new(StatusCode::CONFLICT, "Status conflict", error.to_string())
        }
        StoreError::Conflict(_) | StoreError::Contention { .. } => {
            tracing::warn!(error = %error, "giving up on an order after repeated stock conflicts");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "contention, retry",
                format!("{error}; retry the order in a moment"),
            )
            .with("retry_after_s", 1)
        }
        StoreError::PoolExhausted(_) => {
            tracing::warn!(error = %error, "database pool exhausted");
            Problem::unavailable(format!("{error}; retry in a moment")).with("retry_after_s", 1)
        }
        StoreError::Database(_) | StoreError::Corrupt { .. } => Problem::internal(&error),
    }
}
