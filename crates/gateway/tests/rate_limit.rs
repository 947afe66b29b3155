//! The rate limit: 429 with `Retry-After` beyond the burst, counted in
//! `gateway_rate_limited_requests_total`; the admin listener is never limited.
//!
//! Its own test binary because it installs the process-wide `metrics` recorder.

mod support;

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use support::{ORDER_ID, config, fake, get as http_get, start_with_metrics};

#[tokio::test]
async fn beyond_the_burst_requests_get_429_with_retry_after_and_are_counted() {
    let (recorder, metrics) = telemetry::metrics::local_recorder();
    metrics::set_global_recorder(recorder).expect("the only recorder in this test binary");

    let orders = fake(Router::new().route(
        "/orders/{id}",
        get(|| async { axum::Json(serde_json::json!({"status": "accepted"})) }),
    ))
    .await;
    let mut cfg = config(&orders.url, &orders.url);
    // A burst of three, then one request per second (the lowest rate there is): the requests
    // below take milliseconds, so the fourth finds the bucket empty.
    cfg.rate_limit_rps = 1;
    cfg.rate_limit_burst = 3;
    let gw = start_with_metrics(cfg, Some(metrics.clone())).await;
    let url = format!("{}/api/orders/{ORDER_ID}", gw.url);

    for _ in 0..3 {
        assert_eq!(http_get(&url).await.status, StatusCode::OK);
    }
    let refused = http_get(&url).await;
    let problem = refused.problem(StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!(retry_after >= 1);
    assert_eq!(problem["retry_after_s"], retry_after);
    assert_eq!(orders.hits.count(), 3, "a refused request goes no further");

    // Unknown paths count against the limit too (a scan is traffic).
    http_get(&format!("{}/anything", gw.url))
        .await
        .problem(StatusCode::TOO_MANY_REQUESTS);

    // The admin listener keeps answering.
    for _ in 0..5 {
        assert_eq!(
            http_get(&format!("{}/healthz", gw.admin_url)).await.status,
            StatusCode::OK
        );
    }
    let exposition = http_get(&format!("{}/metrics", gw.admin_url)).await;
    assert_eq!(exposition.status, StatusCode::OK);
    let text = String::from_utf8(exposition.body).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "gateway_rate_limited_requests_total 2"),
        "{text}"
    );
    assert!(
        text.contains("# HELP gateway_rate_limited_requests_total"),
        "{text}"
    );
    assert!(
        text.contains(r#"http_route="/api/orders/{id}",http_response_status_code="429""#),
        "refusals are in the RED metrics under their route: {text}"
    );
}
