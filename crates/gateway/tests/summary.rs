//! `GET /api/users/{id}/summary`: orders and fulfillment in parallel; fulfillment optional.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use http::StatusCode;
use serde_json::json;
use support::{closed_url, config, fake, get as http_get, start};
use tokio::sync::Barrier;

fn orders_listing() -> Router {
    Router::new().route(
        "/users/{id}/orders",
        get(|Path(id): Path<String>| async move {
            axum::Json(
                json!([{"order_id": support::ORDER_ID, "user_id": id, "status": "fulfilled"}]),
            )
        }),
    )
}

fn fulfillment_listing() -> Router {
    Router::new().route(
        "/users/{id}/shipments",
        get(|| async { axum::Json(json!([{"order_id": support::ORDER_ID, "carrier": "snail"}])) }),
    )
}

#[tokio::test]
async fn a_summary_combines_orders_and_shipments() {
    let orders = fake(orders_listing()).await;
    let fulfillment = fake(fulfillment_listing()).await;
    let gw = start(config(&orders.url, &fulfillment.url)).await;

    let reply = http_get(&format!("{}/api/users/u-1/summary", gw.url)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({
            "user_id": "u-1",
            "orders": [{"order_id": support::ORDER_ID, "user_id": "u-1", "status": "fulfilled"}],
            "shipments": [{"order_id": support::ORDER_ID, "carrier": "snail"}],
            "degraded": false,
        })
    );
    assert_eq!(orders.hits.all()[0].path, "/users/u-1/orders");
    assert_eq!(fulfillment.hits.all()[0].path, "/users/u-1/shipments");
}

/// Each fake answers only once the *other* one has been called too: a two-party barrier. A
/// gateway calling them one after the other would leave the first waiting at the barrier for
/// ever (here: until its 2 s patience runs out and it answers 500). No timing is measured.
#[tokio::test]
async fn a_summary_calls_orders_and_fulfillment_in_parallel() {
    let barrier = Arc::new(Barrier::new(2));
    let meet = |barrier: Arc<Barrier>, body: serde_json::Value| {
        get(move || {
            let barrier = barrier.clone();
            let body = body.clone();
            async move {
                match tokio::time::timeout(Duration::from_secs(2), barrier.wait()).await {
                    Ok(_) => (StatusCode::OK, axum::Json(body)),
                    Err(_) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(json!("the other call never came")),
                    ),
                }
            }
        })
    };
    let orders =
        fake(Router::new().route("/users/{id}/orders", meet(barrier.clone(), json!([1])))).await;
    let fulfillment =
        fake(Router::new().route("/users/{id}/shipments", meet(barrier.clone(), json!([2])))).await;
    let mut cfg = config(&orders.url, &fulfillment.url);
    cfg.orders_timeout = Duration::from_secs(5);
    cfg.fulfillment_timeout = Duration::from_secs(5);
    let gw = start(cfg).await;

    let reply = http_get(&format!("{}/api/users/u-1/summary", gw.url)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["orders"], json!([1]));
    assert_eq!(body["shipments"], json!([2]));
    assert_eq!(body["degraded"], false);
}

#[tokio::test]
async fn without_fulfillment_the_summary_is_degraded_not_failed() {
    let orders = fake(orders_listing()).await;
    let failing = fake(Router::new().route(
        "/users/{id}/shipments",
        get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
    ))
    .await;
    let hanging = fake(Router::new().route(
        "/users/{id}/shipments",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            "too late"
        }),
    ))
    .await;
    let not_a_list = fake(Router::new().route(
        "/users/{id}/shipments",
        get(|| async { axum::Json(json!({"unexpected": true})) }),
    ))
    .await;

    for (case, fulfillment_url) in [
        ("down", closed_url().await),
        ("500", failing.url.clone()),
        ("slow", hanging.url.clone()),
        ("garbled", not_a_list.url.clone()),
    ] {
        let mut cfg = config(&orders.url, &fulfillment_url);
        cfg.fulfillment_timeout = Duration::from_millis(100);
        let gw = start(cfg).await;
        let reply = http_get(&format!("{}/api/users/u-1/summary", gw.url)).await;
        assert_eq!(reply.status, StatusCode::OK, "{case}");
        let body = reply.json();
        assert_eq!(body["degraded"], true, "{case}: {body}");
        assert!(body["shipments"].is_null(), "{case}: {body}");
        assert_eq!(body["orders"][0]["user_id"], "u-1", "{case}: {body}");
    }
    assert_eq!(failing.hits.count(), 1, "a 500 is not retried");
    assert_eq!(hanging.hits.count(), 3, "a timeout is retried twice");
}

#[tokio::test]
async fn without_orders_there_is_no_summary() {
    let fulfillment = fake(fulfillment_listing()).await;
    let failing = fake(Router::new().route(
        "/users/{id}/orders",
        get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
    ))
    .await;

    // A 4xx is a failure too: the user id was valid, so the services disagree about the API.
    let no_route = fake(Router::new()).await;

    for orders_url in [
        closed_url().await,
        failing.url.clone(),
        no_route.url.clone(),
    ] {
        let gw = start(config(&orders_url, &fulfillment.url)).await;
        let problem = http_get(&format!("{}/api/users/u-1/summary", gw.url))
            .await
            .problem(StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            problem["detail"].as_str().unwrap().starts_with("orders"),
            "{problem}"
        );
    }
}
