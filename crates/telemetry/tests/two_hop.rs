//! Server → client → server, exported over OTLP/gRPC to a real (in-process) gRPC collector:
//! one trace, the right parents and kinds, semantic-convention names and attributes, and log
//! lines carrying the exported ids.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use fake_collector::{FakeCollector, SpanKind, StatusCode as SpanStatus, find};
use http_body_util::Full;
use support::{LogCapture, call, client, get as plain_get, serve};

const INCOMING_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const INCOMING_PARENT: &str = "00f067aa0ba902b7";

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

async fn backend_item(
    Path(id): Path<String>,
    State(seen): State<Seen>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    if let Some(tp) = headers.get("traceparent") {
        seen.0.lock().unwrap().push(tp.to_str().unwrap().to_owned());
    }
    tracing::info!(item = %id, "backend serving item");
    match id.as_str() {
        "missing" => (StatusCode::NOT_FOUND, "no such item".into()),
        "broken" => (StatusCode::INTERNAL_SERVER_ERROR, "boom".into()),
        _ => (StatusCode::OK, format!("item {id}")),
    }
}

async fn frontend(Path(id): Path<String>, State(backend): State<String>) -> (StatusCode, String) {
    tracing::info!(item = %id, "frontend asking the backend");
    let request = http::Request::get(format!("{backend}/items/{id}"))
        .body(Full::default())
        .unwrap();
    match call(&client(), request).await {
        Ok((status, _, body)) => (status, body),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_through_two_services_is_one_trace_with_correlated_logs() {
    let collector = FakeCollector::start().await;
    let logs = LogCapture::default();
    let mut config = telemetry::TelemetryConfig::new("two-hop");
    config.otlp_endpoint = Some(collector.grpc_endpoint());
    config.scheduled_delay = Duration::from_millis(50);
    config.service_namespace = Some("tests".into());
    config.service_version = "1.2.3".into();
    config.log_filter = "info,telemetry=debug".into();
    let guard = telemetry::init_with_writer(config, logs.clone()).expect("init");

    let seen = Seen::default();
    let backend = serve(
        axum::Router::new()
            .route("/items/{id}", get(backend_item))
            .with_state(seen.clone())
            .layer(telemetry::http::ServerLayer::new()),
    )
    .await;
    let front = serve(
        axum::Router::new()
            .route("/front/{id}", get(frontend))
            .with_state(format!("http://{backend}"))
            .layer(telemetry::http::ServerLayer::new()),
    )
    .await;

    // 1. A caller that is already in a trace (sampled + random flags).
    let traceparent = format!("00-{INCOMING_TRACE}-{INCOMING_PARENT}-03");
    let (status, headers, body) = plain_get(
        &client(),
        &format!("http://{front}/front/42"),
        &[("traceparent", &traceparent), ("x-request-id", "req-abc")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "item 42");
    assert_eq!(headers["x-trace-id"], INCOMING_TRACE);
    assert_eq!(headers["x-request-id"], "req-abc");

    // 1b. An unsampled caller with the random flag: nothing exported, flag still propagated.
    let unsampled_trace = "0af7651916cd43dd8448eb211c80319c";
    let (status, _, _) = plain_get(
        &client(),
        &format!("http://{front}/front/7"),
        &[(
            "traceparent",
            &format!("00-{unsampled_trace}-b7ad6b7169203331-02"),
        )],
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // 2. 4xx and 5xx from the backend.
    let (status, h404, _) =
        plain_get(&client(), &format!("http://{front}/front/missing"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, h500, _) =
        plain_get(&client(), &format!("http://{front}/front/broken"), &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let created_request_id = h404["x-request-id"].to_str().unwrap();
    uuid::Uuid::parse_str(created_request_id).expect("a created x-request-id is a UUID");

    guard.shutdown().await.expect("flush");
    let spans = collector.spans();
    let in_trace: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == INCOMING_TRACE)
        .collect();
    assert_eq!(in_trace.len(), 3, "one trace of three spans: {in_trace:#?}");

    let front_span = find(&spans, "GET /front/{id}").expect("frontend SERVER span");
    let client_span = in_trace
        .iter()
        .find(|s| s.kind == SpanKind::Client)
        .expect("CLIENT span");
    let back_span = in_trace
        .iter()
        .find(|s| s.name == "GET /items/{id}")
        .expect("backend SERVER span");

    // Parent chain and kinds.
    assert_eq!(front_span.trace_id, INCOMING_TRACE);
    assert_eq!(front_span.parent_span_id, INCOMING_PARENT);
    assert_eq!(front_span.kind, SpanKind::Server);
    assert_eq!(client_span.parent_span_id, front_span.span_id);
    assert_eq!(client_span.name, "GET");
    assert_eq!(back_span.parent_span_id, client_span.span_id);
    assert_eq!(back_span.kind, SpanKind::Server);

    // Semantic-convention attributes.
    assert_eq!(
        front_span.attr_str("http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        front_span.attr_str("http.route").as_deref(),
        Some("/front/{id}")
    );
    assert_eq!(
        front_span.attr_str("url.path").as_deref(),
        Some("/front/42")
    );
    assert_eq!(front_span.attr_str("url.scheme").as_deref(), Some("http"));
    assert_eq!(
        front_span.attr_str("network.protocol.version").as_deref(),
        Some("1.1")
    );
    assert_eq!(
        front_span
            .attr("http.response.status_code")
            .and_then(|v| v.as_i64()),
        Some(200)
    );
    assert_eq!(front_span.status, SpanStatus::Unset);
    assert_eq!(
        client_span.attr_str("server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        client_span.attr("server.port").and_then(|v| v.as_i64()),
        Some(i64::from(backend.port()))
    );
    assert_eq!(
        client_span.attr_str("url.full"),
        Some(format!("http://{backend}/items/42"))
    );

    // The resource names the service.
    assert_eq!(front_span.service_name, "two-hop");
    assert_eq!(
        front_span
            .resource
            .get("service.namespace")
            .and_then(|v| v.as_str()),
        Some("tests")
    );
    assert_eq!(
        front_span
            .resource
            .get("service.version")
            .and_then(|v| v.as_str()),
        Some("1.2.3")
    );
    assert!(front_span.resource.contains_key("service.instance.id"));
    assert!(
        front_span
            .resource
            .contains_key("deployment.environment.name")
    );

    // Level 2: the random flag travels with the trace.
    let outgoing = seen.0.lock().unwrap()[0].clone();
    assert_eq!(
        outgoing,
        format!("00-{INCOMING_TRACE}-{}-03", client_span.span_id)
    );

    let unsampled_seen = seen.0.lock().unwrap()[1].clone();
    assert!(
        unsampled_seen.starts_with(&format!("00-{unsampled_trace}-"))
            && unsampled_seen.ends_with("-02"),
        "random flag kept, sampled flag clear: {unsampled_seen}"
    );
    assert!(
        spans.iter().all(|s| s.trace_id != unsampled_trace),
        "an unsampled trace is not exported"
    );

    // 404: the client span is an error, the server span is not.
    let t404 = h404["x-trace-id"].to_str().unwrap();
    let c404 = spans
        .iter()
        .find(|s| s.trace_id == t404 && s.kind == SpanKind::Client)
        .unwrap();
    let s404 = spans
        .iter()
        .find(|s| s.trace_id == t404 && s.name == "GET /items/{id}")
        .unwrap();
    assert_eq!(c404.status, SpanStatus::Error);
    assert_eq!(c404.attr_str("error.type").as_deref(), Some("404"));
    assert_eq!(s404.status, SpanStatus::Unset);
    // 500: both are errors.
    let t500 = h500["x-trace-id"].to_str().unwrap();
    let s500 = spans
        .iter()
        .find(|s| s.trace_id == t500 && s.name == "GET /items/{id}")
        .unwrap();
    assert_eq!(s500.status, SpanStatus::Error);
    assert_eq!(s500.attr_str("error.type").as_deref(), Some("500"));

    // Log lines (stdout JSON) carry the exported ids of the span they were written in.
    let lines = logs.lines();
    let front_line = lines
        .iter()
        .find(|l| l["message"] == "frontend asking the backend" && l["item"] == "42")
        .expect("frontend log line");
    assert_eq!(front_line["trace_id"], INCOMING_TRACE);
    assert_eq!(front_line["span_id"], front_span.span_id.as_str());
    assert_eq!(front_line["service"], "two-hop");
    let back_line = lines
        .iter()
        .find(|l| l["message"] == "backend serving item" && l["item"] == "42")
        .expect("backend log line");
    assert_eq!(back_line["trace_id"], INCOMING_TRACE);
    assert_eq!(back_line["span_id"], back_span.span_id.as_str());
    for l in &lines {
        if let Some(id) = l.get("trace_id").and_then(|v| v.as_str()) {
            assert_eq!(id.len(), 32);
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
    }

    // OTLP log records carry the same ids.
    let records = collector.logs();
    let record = records
        .iter()
        .find(|r| r.body == "backend serving item" && r.trace_id == INCOMING_TRACE)
        .expect("exported log record in the trace");
    assert_eq!(record.span_id, back_span.span_id);
    // The time of the event is set (`tracing` gives the bridge only the observed time), and is
    // inside the backend's span.
    assert!(
        (back_span.start_unix_nanos..=back_span.end_unix_nanos).contains(&record.time_unix_nanos),
        "time_unix_nano {} outside the span {}..{}",
        record.time_unix_nanos,
        back_span.start_unix_nanos,
        back_span.end_unix_nanos
    );
    assert_eq!(record.time_unix_nanos, record.observed_time_unix_nanos);
}
