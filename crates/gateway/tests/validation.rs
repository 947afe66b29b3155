//! Bad input is refused at the edge with a problem that says what is wrong, and nothing is
//! sent downstream.

mod support;

use axum::Router;
use axum::routing::{get, post};
use http::{Method, StatusCode};
use support::{config, fake, get as http_get, post as http_post, send, start};

/// A fake orders (and fulfillment) that would accept anything, so any request reaching it
/// is a validation the gateway failed to make.
fn accepting() -> Router {
    Router::new()
        .route(
            "/orders",
            post(|| async {
                (
                    StatusCode::CREATED,
                    axum::Json(
                        serde_json::json!({"order_id": support::ORDER_ID, "status": "accepted"}),
                    ),
                )
            }),
        )
        .route(
            "/orders/{id}",
            get(|| async { axum::Json(serde_json::json!({})) }),
        )
        .route(
            "/users/{id}/orders",
            get(|| async { axum::Json(serde_json::json!([])) }),
        )
        .route(
            "/users/{id}/shipments",
            get(|| async { axum::Json(serde_json::json!([])) }),
        )
}

#[tokio::test]
async fn invalid_orders_are_refused_before_orders_is_called() {
    let orders = fake(accepting()).await;
    let fulfillment = fake(accepting()).await;
    let gw = start(config(&orders.url, &fulfillment.url)).await;
    let url = format!("{}/api/orders", gw.url);

    let items = |n: usize| vec![r#"{"sku":"sku-1","quantity":1}"#; n].join(",");
    let huge = format!(
        r#"{{"user_id":"u-1","items":[{{"sku":"sku-1","quantity":1}}],"padding":"{}"}}"#,
        "x".repeat(17 * 1024)
    );
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            "{\"user_id\": ".into(),
            StatusCode::BAD_REQUEST,
            "JSON",
        ),
        (
            "not an object",
            "[1,2]".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
        ),
        (
            "missing user_id",
            r#"{"items":[{"sku":"sku-1","quantity":1}]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "user_id",
        ),
        (
            "missing items",
            r#"{"user_id":"u-1"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "items",
        ),
        (
            "missing quantity",
            r#"{"user_id":"u-1","items":[{"sku":"sku-1"}]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "quantity",
        ),
        (
            "quantity is a string",
            r#"{"user_id":"u-1","items":[{"sku":"sku-1","quantity":"2"}]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "quantity",
        ),
        (
            "quantity is fractional",
            r#"{"user_id":"u-1","items":[{"sku":"sku-1","quantity":1.5}]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "quantity",
        ),
        (
            "zero quantity",
            r#"{"user_id":"u-1","items":[{"sku":"sku-1","quantity":0}]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "items[0].quantity",
        ),
        (
            "negative quantity",
            r#"{"user_id":"u-1","items":[{"sku":"sku-1","quantity":-2}]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "items[0].quantity",
        ),
        (
            "quantity too large",
            r#"{"user_id":"u-1","items":[{"sku":"sku-1","quantity":1001}]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "items[0].quantity",
        ),
        (
            "no items",
            r#"{"user_id":"u-1","items":[]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "items",
        ),
        (
            "too many items",
            format!(r#"{{"user_id":"u-1","items":[{}]}}"#, items(21)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "items",
        ),
        (
            "empty user_id",
            r#"{"user_id":"","items":[{"sku":"sku-1","quantity":1}]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "user_id",
        ),
        (
            "user_id with a slash",
            r#"{"user_id":"../admin","items":[{"sku":"sku-1","quantity":1}]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "user_id",
        ),
        (
            "sku too long",
            format!(
                r#"{{"user_id":"u-1","items":[{{"sku":"{}","quantity":1}}]}}"#,
                "s".repeat(65)
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "items[0].sku",
        ),
        ("body over 16 KiB", huge, StatusCode::PAYLOAD_TOO_LARGE, ""),
    ];
    for (case, body, status, mentions) in cases {
        let reply = http_post(&url, &body).await;
        let problem = reply.problem(status);
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(mentions),
            "{case}: the detail should name {mentions:?}: {detail}"
        );
    }

    // No body and no content type.
    send(Method::POST, &url, None)
        .await
        .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Twenty items and unknown members are fine (and reach orders, proving the fake works).
    let ok = format!(
        r#"{{"user_id":"u-1","items":[{}],"coupon":"X"}}"#,
        items(20)
    );
    assert_eq!(http_post(&url, &ok).await.status, StatusCode::ACCEPTED);
    assert_eq!(
        orders.hits.count(),
        1,
        "only the valid order reached orders"
    );
}

#[tokio::test]
async fn rule_violations_name_the_field_in_an_extension_member() {
    let orders = fake(accepting()).await;
    let gw = start(config(&orders.url, &orders.url)).await;
    let reply = http_post(
        &format!("{}/api/orders", gw.url),
        r#"{"user_id":"u-1","items":[{"sku":"sku-1","quantity":1},{"sku":"sku-2","quantity":0}]}"#,
    )
    .await;
    let problem = reply.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["field"], "items[1].quantity");
    assert_eq!(orders.hits.count(), 0);
}

#[tokio::test]
async fn bad_ids_in_paths_are_400_and_call_nothing() {
    let orders = fake(accepting()).await;
    let fulfillment = fake(accepting()).await;
    let gw = start(config(&orders.url, &fulfillment.url)).await;

    for path in [
        "/api/orders/42",
        "/api/orders/not-a-uuid",
        "/api/orders/%E2%9C%93",
    ] {
        let problem = http_get(&format!("{}{path}", gw.url))
            .await
            .problem(StatusCode::BAD_REQUEST);
        assert!(
            problem["detail"].as_str().unwrap().contains("UUID"),
            "{problem}"
        );
    }
    let too_long = "u".repeat(65);
    for user in ["bad.user", "u%20space", too_long.as_str()] {
        http_get(&format!("{}/api/users/{user}/summary", gw.url))
            .await
            .problem(StatusCode::BAD_REQUEST);
    }
    assert_eq!(orders.hits.count(), 0);
    assert_eq!(fulfillment.hits.count(), 0);
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems_too() {
    let orders = fake(accepting()).await;
    let gw = start(config(&orders.url, &orders.url)).await;

    let problem = http_get(&format!("{}/nope/at/all", gw.url))
        .await
        .problem(StatusCode::NOT_FOUND);
    assert!(problem["detail"].as_str().unwrap().contains("/api/orders"));

    let reply = send(Method::DELETE, &format!("{}/api/orders", gw.url), None).await;
    reply.problem(StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("POST"));
    assert_eq!(orders.hits.count(), 0);
}
