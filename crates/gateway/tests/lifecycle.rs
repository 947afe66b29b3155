//! Starting, probing and stopping the gateway as the binary does.

mod support;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use servicekit::server::CancellationToken;
use support::{closed_url, config, fake, get as http_get, start};

#[tokio::test]
async fn readyz_says_which_downstream_service_is_unreachable() {
    // The fakes know none of the probe paths: a 404 still proves they are up.
    let up = fake(Router::new()).await;
    let gw = start(config(&up.url, &up.url)).await;

    assert_eq!(
        http_get(&format!("{}/healthz", gw.admin_url)).await.status,
        StatusCode::OK
    );
    let ready = http_get(&format!("{}/readyz", gw.admin_url)).await;
    assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.json());
    assert_eq!(ready.json()["checks"]["orders"], "ok");
    assert_eq!(ready.json()["checks"]["fulfillment"], "ok");
    let probed: Vec<String> = up.hits.all().into_iter().map(|h| h.path).collect();
    assert!(probed.contains(&"/orders/00000000-0000-0000-0000-000000000000".to_owned()));
    assert!(probed.contains(&"/users/readiness-probe/shipments".to_owned()));

    let half = start(config(&up.url, &closed_url().await)).await;
    let ready = http_get(&format!("{}/readyz", half.admin_url)).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["checks"]["orders"], "ok");
    assert_ne!(ready.json()["checks"]["fulfillment"], "ok");
    // The app keeps serving what it can.
    let summary = http_get(&format!("{}/api/users/u-1/summary", half.url)).await;
    assert_eq!(
        summary.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the fake orders has no list route"
    );

    // Without a metrics handle, /metrics says so.
    assert_eq!(
        http_get(&format!("{}/metrics", gw.admin_url)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn cancelling_the_token_finishes_requests_in_flight_then_stops() {
    let slow = fake(Router::new().route(
        "/orders/{id}",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            axum::Json(serde_json::json!({"status": "accepted"}))
        }),
    ))
    .await;
    let shutdown = CancellationToken::new();
    let running = gateway::start(config(&slow.url, &slow.url), None, shutdown.clone())
        .await
        .unwrap();
    let url = format!(
        "http://{}/api/orders/{}",
        running.app_addr,
        support::ORDER_ID
    );
    let in_flight = tokio::spawn(async move { http_get(&url).await });
    while slow.hits.count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    shutdown.cancel();
    let app_addr = running.app_addr;
    tokio::time::timeout(Duration::from_secs(5), running.wait())
        .await
        .expect("stops within 5 s")
        .expect("stops cleanly");
    assert_eq!(
        in_flight.await.unwrap().status,
        StatusCode::OK,
        "the request in flight was answered"
    );
    assert!(
        tokio::net::TcpStream::connect(app_addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn a_port_in_use_is_an_error_naming_the_variable() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = config("http://127.0.0.1:1", "http://127.0.0.1:1");
    cfg.admin_listen_addr = taken.local_addr().unwrap();
    let err = gateway::start(cfg, None, CancellationToken::new())
        .await
        .expect_err("the admin port is taken");
    assert!(err.to_string().contains("ADMIN_LISTEN_ADDR"), "{err}");
}
