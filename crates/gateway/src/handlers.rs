//! The public API (CONTRACT.md, "Public HTTP API (gateway)"): one function per route.
//!
//! A handler checks its input ([`crate::input`]), calls downstream services
//! ([`crate::downstream`]) and turns the outcome into a response. Every error is a
//! [`Problem`] (`application/problem+json` with the `trace_id`). There is no telemetry plumbing
//! here: the SERVER span, RED metrics and id headers come from the layer around the router, the
//! CLIENT spans from the HTTP client; handlers only log what happened in the shop's words.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use servicekit::problem::{Json, Problem};
use uuid::Uuid;

use crate::app::AppState;
use crate::downstream::DownstreamError;
use crate::input::{PlaceOrderBody, check_id};

/// `POST /api/orders`: validate, ask orders to place the order (once), answer `202 Accepted`
/// with where to follow it. Fulfillment happens later, asynchronously, hence 202 and not 201.
pub async fn place_order(
    State(app): State<AppState>,
    Json(body): Json<PlaceOrderBody>,
) -> Result<Response, Problem> {
    let order = body.validate().map_err(|invalid| {
        Problem::unprocessable(invalid.to_string()).with("field", invalid.field.clone())
    })?;
    let accepted = match app.orders.place(&order).await {
        Ok(accepted) => accepted,
        Err(e) if e.outcome_unknown() => {
            // The request may have reached orders and committed. Retrying here could place the
            // order twice, so the client is told the truth and how to find out.
            tracing::warn!(user_id = %order.user_id, error = %e, "placing an order timed out; outcome unknown");
            return Err(Problem::unavailable(format!(
                "orders did not answer in time; the order may or may not have been placed. \
                 Check GET /api/users/{}/summary before placing it again",
                order.user_id
            )));
        }
        Err(e) => return Err(downstream_problem(e)),
    };
    let status_url = format!("/api/orders/{}", accepted.order_id);
    tracing::info!(
        order_id = %accepted.order_id,
        user_id = %order.user_id,
        items = order.items.len(),
        "order accepted"
    );
    let body = json!({
        "order_id": accepted.order_id.to_string(),
        "status": accepted.status,
        "status_url": status_url,
    });
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, status_url)],
        axum::Json(body),
    )
        .into_response())
}

/// `GET /api/orders/{id}`: the order as orders has it (`status` is `accepted`, `fulfilled` or
/// `failed`).
pub async fn get_order(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Value>, Problem> {
    let Path(id) = id.map_err(path_problem)?;
    let id = Uuid::parse_str(&id).map_err(|_| {
        Problem::bad_request(format!(
            "order id {id:?} is not a UUID; use the order_id (or status_url) that POST /api/orders returned"
        ))
    })?;
    match app.orders.get(id).await {
        Ok(Some(order)) => Ok(axum::Json(order)),
        Ok(None) => Err(Problem::not_found(format!("there is no order {id}"))),
        Err(e) => Err(downstream_problem(e)),
    }
}

/// `GET /api/users/{id}/summary`: the user's orders and shipments, fetched **in parallel**.
///
/// Orders is essential (no summary without it: 503). Fulfillment is not: when it fails, the
/// summary is still served with `"shipments": null` and `"degraded": true`, so one slow service
/// degrades the page instead of breaking it.
pub async fn user_summary(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Value>, Problem> {
    let Path(user_id) = id.map_err(path_problem)?;
    check_id("user id", &user_id).map_err(|invalid| Problem::bad_request(invalid.to_string()))?;

    // Both futures are polled by this task, inside the request's span, so both CLIENT spans are
    // children of the SERVER span and run at the same time (`tokio::spawn` would lose the span
    // unless instrumented, and buy nothing for two I/O-bound calls).
    let (orders, shipments) = tokio::join!(
        app.orders.for_user(&user_id),
        app.fulfillment.shipments_for_user(&user_id),
    );
    let orders = orders.map_err(downstream_problem)?;
    let (shipments, degraded) = match shipments {
        Ok(shipments) => (Value::Array(shipments), false),
        Err(e) => {
            tracing::warn!(user_id = %user_id, error = %e, "fulfillment unavailable; serving a degraded summary");
            (Value::Null, true)
        }
    };
    Ok(axum::Json(json!({
        "user_id": user_id,
        "orders": orders,
        "shipments": shipments,
        "degraded": degraded,
    })))
}

/// Every path no route matches.
pub async fn no_route(method: Method, uri: Uri) -> Problem {
    Problem::not_found(format!(
        "no resource at {method} {}; the API is POST /api/orders, GET /api/orders/{{id}} and \
         GET /api/users/{{id}}/summary",
        uri.path()
    ))
}

/// A known path with the wrong method (axum adds the `Allow` header).
pub async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        format!(
            "{} does not accept {method}; see the Allow header",
            uri.path()
        ),
    )
}

fn path_problem(rejection: PathRejection) -> Problem {
    Problem::bad_request(rejection.body_text())
}

/// A downstream failure as the client sees it: orders refusing an order (4xx: out of stock,
/// unknown SKU) keeps its status, title and detail, with *our* `trace_id`, since it is about the
/// client's request; any other failure is `503`, because the gateway itself is fine and the
/// request may succeed later. The 503 detail names the service and the kind of failure; the full
/// error (URLs, bodies) goes to the log line under the same `trace_id`.
fn downstream_problem(error: DownstreamError) -> Problem {
    match error {
        DownstreamError::Refused {
            status,
            title,
            detail,
            ..
        } => Problem::new(status, title, detail),
        other => {
            tracing::warn!(error = %other, "downstream call failed");
            Problem::unavailable(format!("{}; retry later", other.public_detail()))
        }
    }
}
