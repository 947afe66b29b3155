//! The app listener's HTTP API: `GET /users/{id}/shipments`.
//!
//! The gateway calls it (in parallel with orders) to build a user's summary. Errors are
//! `application/problem+json` carrying the `trace_id`; the SERVER span and RED metrics come
//! from [`telemetry::http::ServerLayer`], added with `Router::layer` so it sees the matched
//! route. The inbound fault middleware sits inside it.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use servicekit::problem::Problem;

use crate::event::valid_id;
use crate::shipments::{Shipment, Shipments};

/// The app router. The inbound faults (`http.*`, `runtime.*`) act inside the SERVER span, so
/// the span and the RED metrics see their effect as they would see a real incident's.
pub(crate) fn app_router(shipments: Shipments, faults: chaos::Faults) -> Router {
    Router::new()
        .route("/users/{id}/shipments", get(user_shipments))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shipments)
        .layer(axum::middleware::from_fn_with_state(
            faults,
            chaos::http::inbound,
        ))
        .layer(telemetry::http::ServerLayer::new())
}

/// `GET /users/{id}/shipments`: the user's newest shipments (at most 50), newest first; `[]`
/// for a user with none.
async fn user_shipments(
    State(shipments): State<Shipments>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<Shipment>>, Problem> {
    let Path(user_id) = id.map_err(|e| Problem::bad_request(e.body_text()))?;
    if !valid_id(&user_id) {
        return Err(Problem::bad_request(format!(
            "user id {user_id:?} is not valid: use 1-64 characters of A-Z, a-z, 0-9, '_' or '-'"
        )));
    }
    match shipments.for_user(&user_id).await {
        Ok(list) => Ok(Json(list)),
        Err(error) => {
            tracing::error!(%error, user_id, "reading shipments failed");
            Err(Problem::unavailable(
                "the shipments database is not answering; try again shortly",
            ))
        }
    }
}

async fn not_found() -> Problem {
    Problem::not_found("no such resource; the fulfillment API serves GET /users/{id}/shipments")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "this resource only answers GET",
    )
}
