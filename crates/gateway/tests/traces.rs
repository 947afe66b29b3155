//! What a request through the gateway looks like in the telemetry: one SERVER span per request,
//! one CLIENT span per downstream attempt as its children, overlapping CLIENT spans for the
//! parallel summary, the trace id on the response and in problem bodies and logs.
//!
//! Its own test binary because it installs the process-wide telemetry (as the binary does).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use fake_collector::{FakeCollector, Span, SpanKind, StatusCode as SpanStatus, children};
use http::StatusCode;
use serde_json::json;
use support::{
    ORDER_ID, VALID_ORDER, closed_url, config, fake, get as http_get, post as http_post, start,
};

const WAIT: Duration = Duration::from_secs(10);

/// The SERVER span named `name` in `trace_id`, once exported with `clients` CLIENT children.
async fn server_span(
    collector: &FakeCollector,
    trace_id: &str,
    name: &str,
    clients: usize,
) -> (Span, Vec<Span>) {
    let matches = |spans: &[Span]| -> Option<(Span, Vec<Span>)> {
        let server = spans
            .iter()
            .find(|s| s.trace_id == trace_id && s.name == name && s.kind == SpanKind::Server)?;
        let kids: Vec<Span> = children(spans, server)
            .into_iter()
            .filter(|s| s.kind == SpanKind::Client)
            .cloned()
            .collect();
        (kids.len() == clients).then(|| (server.clone(), kids))
    };
    let spans = collector
        .wait_for_spans(|spans| matches(spans).is_some(), WAIT)
        .await;
    matches(&spans).unwrap()
}

fn overlap(a: &Span, b: &Span) -> bool {
    a.start_unix_nanos < b.end_unix_nanos && b.start_unix_nanos < a.end_unix_nanos
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_downstream_attempt_is_a_client_span_under_the_request() {
    let collector = FakeCollector::start().await;
    let mut telemetry_config = telemetry::TelemetryConfig::new("gateway");
    telemetry_config.otlp_endpoint = Some(collector.grpc_endpoint());
    telemetry_config.scheduled_delay = Duration::from_millis(50);
    let guard = telemetry::init_with_writer(telemetry_config, std::io::sink).expect("telemetry");

    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    let orders = fake(
        Router::new()
            .route(
                "/users/{id}/orders",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    axum::Json(json!([]))
                }),
            )
            .route(
                "/orders/{id}",
                get(move || {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n == 0 {
                            StatusCode::SERVICE_UNAVAILABLE.into_response()
                        } else {
                            axum::Json(json!({"status": "accepted"})).into_response()
                        }
                    }
                }),
            )
            .route(
                "/orders",
                post(|| async {
                    let body = json!({"type": "about:blank", "title": "Out of stock", "status": 409, "detail": "sku-1: 2 requested, 1 in stock"});
                    (StatusCode::CONFLICT, axum::Json(body))
                }),
            ),
    )
    .await;
    let fulfillment = fake(Router::new().route(
        "/users/{id}/shipments",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            axum::Json(json!([]))
        }),
    ))
    .await;
    let gw = start(config(&orders.url, &fulfillment.url)).await;

    // 1. The summary: two CLIENT spans under the SERVER span, in flight at the same time.
    let reply = http_get(&format!("{}/api/users/u-1/summary", gw.url)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let trace_id = reply.header("x-trace-id").expect("x-trace-id").to_owned();
    assert!(reply.header("x-request-id").is_some());
    let (server, clients) =
        server_span(&collector, &trace_id, "GET /api/users/{id}/summary", 2).await;
    assert_eq!(
        server.attr_str("http.route").as_deref(),
        Some("/api/users/{id}/summary")
    );
    let mut urls: Vec<String> = clients
        .iter()
        .map(|c| c.attr_str("url.full").unwrap())
        .collect();
    urls.sort();
    let mut expected = vec![
        format!("{}/users/u-1/orders", orders.url),
        format!("{}/users/u-1/shipments", fulfillment.url),
    ];
    expected.sort();
    assert_eq!(urls, expected);
    assert!(clients.iter().all(|c| c.name == "GET"));
    assert!(
        overlap(&clients[0], &clients[1]),
        "the two calls were in flight together: {clients:#?}"
    );

    // 2. A retried read: one CLIENT span per attempt, the first one failed.
    let reply = http_get(&format!("{}/api/orders/{ORDER_ID}", gw.url)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let trace_id = reply.header("x-trace-id").unwrap().to_owned();
    let (_, mut clients) = server_span(&collector, &trace_id, "GET /api/orders/{id}", 2).await;
    clients.sort_by_key(|c| c.start_unix_nanos);
    assert_eq!(
        clients[0]
            .attr("http.response.status_code")
            .and_then(|v| v.as_i64()),
        Some(503)
    );
    assert_eq!(clients[0].status, SpanStatus::Error);
    assert_eq!(
        clients[1]
            .attr("http.response.status_code")
            .and_then(|v| v.as_i64()),
        Some(200)
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 2);

    // 3. A passed-through 409 carries the gateway's trace id in its body and header.
    let reply = http_post(&format!("{}/api/orders", gw.url), VALID_ORDER).await;
    let problem = reply.problem(StatusCode::CONFLICT);
    let trace_id = reply.header("x-trace-id").unwrap().to_owned();
    assert_eq!(problem["trace_id"], trace_id.as_str());
    let (server, clients) = server_span(&collector, &trace_id, "POST /api/orders", 1).await;
    assert_eq!(clients[0].name, "POST");
    assert_eq!(
        server.status,
        SpanStatus::Unset,
        "a 4xx is the client's fault"
    );

    // 4. A degraded summary: warned about, in the request's trace.
    let degraded = start(config(&orders.url, &closed_url().await)).await;
    let reply = http_get(&format!("{}/api/users/u-1/summary", degraded.url)).await;
    assert_eq!(reply.json()["degraded"], true);
    let trace_id = reply.header("x-trace-id").unwrap().to_owned();
    let logs = collector
        .wait_for_logs(
            |logs| {
                logs.iter()
                    .any(|l| l.trace_id == trace_id && l.body.contains("degraded summary"))
            },
            WAIT,
        )
        .await;
    let warning = logs
        .iter()
        .find(|l| l.trace_id == trace_id && l.body.contains("degraded summary"))
        .unwrap();
    assert_eq!(warning.severity_text, "WARN");

    guard.shutdown().await.expect("flush");
}
