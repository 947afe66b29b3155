//! Placing and reading orders through the gateway: what orders answers, what the client gets,
//! and which calls are retried.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use serde_json::json;
use support::{
    ORDER_ID, VALID_ORDER, closed_url, config, fake, get as http_get, post as http_post, start,
};

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = json!({"type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail, "trace_id": "0123456789abcdef0123456789abcdef"});
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn orders_answering_post(status: StatusCode) -> Router {
    Router::new().route(
        "/orders",
        post(move || async move {
            match status {
                StatusCode::CREATED => (
                    StatusCode::CREATED,
                    axum::Json(json!({"order_id": ORDER_ID, "status": "accepted"})),
                )
                    .into_response(),
                StatusCode::CONFLICT => {
                    problem(status, "Out of stock", "sku-1: 2 requested, 1 in stock")
                }
                StatusCode::NOT_FOUND => problem(status, "Unknown SKU", "there is no sku-1"),
                other => (other, "orders is broken").into_response(),
            }
        }),
    )
}

#[tokio::test]
async fn an_accepted_order_is_answered_202_with_its_status_url() {
    let orders = fake(orders_answering_post(StatusCode::CREATED)).await;
    let gw = start(config(&orders.url, &closed_url().await)).await;

    let reply = http_post(
        &format!("{}/api/orders", gw.url),
        r#"{"user_id":"u-1","items":[{"sku":"sku-1","quantity":2}],"comment":"ignored"}"#,
    )
    .await;

    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let status_url = format!("/api/orders/{ORDER_ID}");
    assert_eq!(reply.header("location"), Some(status_url.as_str()));
    assert_eq!(
        reply.json(),
        json!({"order_id": ORDER_ID, "status": "accepted", "status_url": status_url})
    );
    let hits = orders.hits.all();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].path, "/orders");
    assert_eq!(
        hits[0].json(),
        json!({"user_id":"u-1","items":[{"sku":"sku-1","quantity":2}]}),
        "orders receives the validated order"
    );
}

#[tokio::test]
async fn an_order_for_missing_stock_is_rejected_with_409() {
    let orders = fake(orders_answering_post(StatusCode::CONFLICT)).await;
    let gw = start(config(&orders.url, &closed_url().await)).await;

    let problem = http_post(&format!("{}/api/orders", gw.url), VALID_ORDER)
        .await
        .problem(StatusCode::CONFLICT);
    assert_eq!(problem["title"], "Out of stock");
    assert_eq!(problem["detail"], "sku-1: 2 requested, 1 in stock");
    assert_ne!(
        problem["trace_id"], "0123456789abcdef0123456789abcdef",
        "the trace id is the gateway's, not orders'"
    );
    assert_eq!(orders.hits.count(), 1);
}

#[tokio::test]
async fn an_unknown_sku_is_passed_through_as_404() {
    let orders = fake(orders_answering_post(StatusCode::NOT_FOUND)).await;
    let gw = start(config(&orders.url, &closed_url().await)).await;
    let problem = http_post(&format!("{}/api/orders", gw.url), VALID_ORDER)
        .await
        .problem(StatusCode::NOT_FOUND);
    assert_eq!(problem["detail"], "there is no sku-1");
}

#[tokio::test]
async fn placing_an_order_is_never_retried() {
    // 503 would be retried on a GET; a POST gets one attempt whatever the failure.
    for status in [
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::BAD_GATEWAY,
    ] {
        let orders = fake(orders_answering_post(status)).await;
        let gw = start(config(&orders.url, &closed_url().await)).await;
        let problem = http_post(&format!("{}/api/orders", gw.url), VALID_ORDER)
            .await
            .problem(StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            problem["detail"].as_str().unwrap().contains("orders"),
            "{problem}"
        );
        assert_eq!(
            orders.hits.count(),
            1,
            "orders answered {status}: POST sent once"
        );
    }
}

#[tokio::test]
async fn a_timed_out_order_is_not_retried_and_the_client_is_told_the_outcome_is_unknown() {
    let orders = fake(Router::new().route(
        "/orders",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::CREATED
        }),
    ))
    .await;
    let mut cfg = config(&orders.url, &closed_url().await);
    cfg.orders_timeout = Duration::from_millis(150);
    let gw = start(cfg).await;

    let problem = http_post(&format!("{}/api/orders", gw.url), VALID_ORDER)
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE);
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("may or may not"), "{detail}");
    assert!(detail.contains("/api/users/u-1/summary"), "{detail}");
    assert_eq!(orders.hits.count(), 1);
}

#[tokio::test]
async fn orders_down_is_503() {
    let gw = start(config(&closed_url().await, &closed_url().await)).await;
    let problem = http_post(&format!("{}/api/orders", gw.url), VALID_ORDER)
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE);
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("orders could not be reached"), "{detail}");
    assert!(
        !detail.contains("127.0.0.1"),
        "internal addresses stay internal: {detail}"
    );

    http_get(&format!("{}/api/orders/{ORDER_ID}", gw.url))
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn an_order_is_read_through_to_orders() {
    let orders = fake(Router::new().route(
        "/orders/{id}",
        get(|Path(id): Path<String>| async move {
            if id == ORDER_ID {
                axum::Json(json!({"order_id": id, "status": "fulfilled", "items": [{"sku": "sku-1", "quantity": 2}]}))
                    .into_response()
            } else {
                problem(StatusCode::NOT_FOUND, "Not found", "no such order")
            }
        }),
    ))
    .await;
    let gw = start(config(&orders.url, &closed_url().await)).await;

    let reply = http_get(&format!("{}/api/orders/{ORDER_ID}", gw.url)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["status"], "fulfilled");
    assert_eq!(reply.json()["items"][0]["quantity"], 2);

    let other = "00000000-0000-4000-8000-000000000001";
    let problem = http_get(&format!("{}/api/orders/{other}", gw.url))
        .await
        .problem(StatusCode::NOT_FOUND);
    assert!(problem["detail"].as_str().unwrap().contains(other));
    assert_eq!(orders.hits.count(), 2, "a 404 is an answer, not retried");
}

/// A fake `GET /orders/{id}` that fails with `first` for the first `failures` attempts.
fn flaky_order(first: StatusCode, failures: usize) -> (Router, Arc<AtomicUsize>) {
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    let router = Router::new().route(
        "/orders/{id}",
        get(move |Path(id): Path<String>| {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) < failures {
                    (first, "not now").into_response()
                } else {
                    axum::Json(json!({"order_id": id, "status": "accepted"})).into_response()
                }
            }
        }),
    );
    (router, attempts)
}

#[tokio::test]
async fn reading_an_order_is_retried_after_a_503() {
    let (router, attempts) = flaky_order(StatusCode::SERVICE_UNAVAILABLE, 1);
    let orders = fake(router).await;
    let gw = start(config(&orders.url, &closed_url().await)).await;

    let reply = http_get(&format!("{}/api/orders/{ORDER_ID}", gw.url)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn reads_give_up_after_two_retries() {
    let (router, attempts) = flaky_order(StatusCode::BAD_GATEWAY, usize::MAX);
    let orders = fake(router).await;
    let gw = start(config(&orders.url, &closed_url().await)).await;

    let problem = http_get(&format!("{}/api/orders/{ORDER_ID}", gw.url))
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        problem["detail"].as_str().unwrap().contains("502"),
        "{problem}"
    );
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "one attempt and two retries"
    );
}

#[tokio::test]
async fn a_500_is_not_retried() {
    let (router, attempts) = flaky_order(StatusCode::INTERNAL_SERVER_ERROR, usize::MAX);
    let orders = fake(router).await;
    let gw = start(config(&orders.url, &closed_url().await)).await;

    http_get(&format!("{}/api/orders/{ORDER_ID}", gw.url))
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_read_that_times_out_is_retried_then_answered_503() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    let orders = fake(Router::new().route(
        "/orders/{id}",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                StatusCode::OK
            }
        }),
    ))
    .await;
    let mut cfg = config(&orders.url, &closed_url().await);
    cfg.orders_timeout = Duration::from_millis(100);
    let gw = start(cfg).await;

    let problem = http_get(&format!("{}/api/orders/{ORDER_ID}", gw.url))
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer in time"),
        "{problem}"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}
