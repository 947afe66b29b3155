//! The concurrency limit: when every slot is taken, the next request is shed at once with 503,
//! not queued.

mod support;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use support::{ORDER_ID, config, fake, get as http_get, start};
use tokio::sync::{Notify, oneshot};

#[tokio::test]
async fn a_request_beyond_the_concurrency_limit_is_shed_with_503() {
    // The fake holds the first request until told to let go, and says when it has it.
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let arrived = Arc::new(std::sync::Mutex::new(Some(arrived_tx)));
    let release = Arc::new(Notify::new());
    let held = release.clone();
    let orders = fake(Router::new().route(
        "/orders/{id}",
        get(move || {
            let arrived = arrived.clone();
            let held = held.clone();
            async move {
                let first = arrived.lock().unwrap().take();
                if let Some(tx) = first {
                    let _ = tx.send(());
                    held.notified().await;
                }
                axum::Json(serde_json::json!({"status": "accepted"}))
            }
        }),
    ))
    .await;
    let mut cfg = config(&orders.url, &orders.url);
    cfg.max_concurrent_requests = 1;
    cfg.orders_timeout = std::time::Duration::from_secs(10);
    let gw = start(cfg).await;
    let url = format!("{}/api/orders/{ORDER_ID}", gw.url);

    let first = tokio::spawn({
        let url = url.clone();
        async move { http_get(&url).await }
    });
    arrived_rx.await.expect("the first request reaches orders");

    let shed = http_get(&url).await;
    let problem = shed.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        problem["detail"].as_str().unwrap().contains("concurrent"),
        "{problem}"
    );
    assert_eq!(shed.header("retry-after"), Some("1"));

    // The admin listener is not limited.
    assert_eq!(
        http_get(&format!("{}/healthz", gw.admin_url)).await.status,
        StatusCode::OK
    );

    release.notify_one();
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    // The slot is free again.
    assert_eq!(http_get(&url).await.status, StatusCode::OK);
    assert_eq!(orders.hits.count(), 2);
}
