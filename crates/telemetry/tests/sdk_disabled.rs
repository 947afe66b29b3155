//! `OTEL_SDK_DISABLED=true`: nothing is recorded or exported, but as with the OpenTelemetry API
//! and no SDK, an incoming trace context is joined and propagated downstream unchanged.

mod support;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use http_body_util::Full;
use support::{LogCapture, call, client, get as plain_get, serve};

const INCOMING_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const INCOMING_PARENT: &str = "00f067aa0ba902b7";

/// A backend request's `traceparent` and `baggage` headers (`None` if absent).
type Propagated = (Option<String>, Option<String>);

/// What each backend request carried.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Propagated>>>);

async fn backend(State(seen): State<Seen>, headers: HeaderMap) -> StatusCode {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    seen.0
        .lock()
        .unwrap()
        .push((header("traceparent"), header("baggage")));
    StatusCode::OK
}

async fn frontend(State(backend): State<String>) -> StatusCode {
    tracing::info!("frontend calling the backend");
    let request = http::Request::get(format!("{backend}/b"))
        .body(Full::default())
        .unwrap();
    call(&client(), request).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sdk_an_incoming_trace_is_still_joined_and_propagated() {
    let logs = LogCapture::default();
    let config = telemetry::TelemetryConfig::new("sdk-off")
        .with_lookup(|key| (key == "OTEL_SDK_DISABLED").then(|| "true".to_owned()))
        .unwrap();
    assert!(config.sdk_disabled);
    let guard = telemetry::init_with_writer(config, logs.clone()).expect("init");

    let seen = Seen::default();
    let back = serve(
        axum::Router::new()
            .route("/b", get(backend))
            .with_state(seen.clone())
            .layer(telemetry::http::ServerLayer::new()),
    )
    .await;
    let front = serve(
        axum::Router::new()
            .route("/f", get(frontend))
            .with_state(format!("http://{back}"))
            .layer(telemetry::http::ServerLayer::new()),
    )
    .await;

    // A caller in a trace: the response names it, the backend gets it (no span of ours in
    // between: the caller's span stays the parent) and the log line carries it.
    let traceparent = format!("00-{INCOMING_TRACE}-{INCOMING_PARENT}-01");
    let (status, headers, _) = plain_get(
        &client(),
        &format!("http://{front}/f"),
        &[("traceparent", &traceparent), ("baggage", "tenant=t-1")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-trace-id"], INCOMING_TRACE);

    // A caller with no trace: there is none to name or propagate.
    let (status, headers, _) = plain_get(&client(), &format!("http://{front}/f"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("x-trace-id").is_none(), "{headers:?}");
    assert!(headers.get("x-request-id").is_some(), "{headers:?}");

    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (Some(traceparent.clone()), Some("tenant=t-1".to_owned())),
            (None, None)
        ]
    );
    let line = logs
        .lines()
        .into_iter()
        .find(|l| l["message"] == "frontend calling the backend")
        .expect("the frontend's log line");
    assert_eq!(line["trace_id"], INCOMING_TRACE, "{line}");
    guard.shutdown().await.expect("shutdown");
}
