//! Shared by the integration tests: a log capture and a tiny two-service HTTP setup.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tower::{ServiceBuilder, ServiceExt};

/// Collects everything the log layer writes.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogCapture {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl LogCapture {
    /// Every line written so far, each parsed as JSON (panics on a line that is not JSON).
    pub fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// Serves `router` on 127.0.0.1:0 and returns its address.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `request` through the instrumented client layer; returns status, headers and body.
pub async fn call(
    client: &HttpClient,
    request: http::Request<Full<Bytes>>,
) -> Result<(http::StatusCode, http::HeaderMap, String), tower::BoxError> {
    let svc = ServiceBuilder::new()
        .layer(telemetry::http::ClientLayer::new())
        .service(client.clone());
    let response = svc.oneshot(request).await?;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await?.to_bytes();
    Ok((
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

/// Sends a plain (uninstrumented) GET with extra headers.
pub async fn get(
    client: &HttpClient,
    url: &str,
    headers: &[(&str, &str)],
) -> (http::StatusCode, http::HeaderMap, String) {
    let mut builder = http::Request::get(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = client
        .request(builder.body(Full::default()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

impl LogCapture {
    /// Everything written so far, as text (for the `pretty` format).
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Initialises telemetry in `format` with the exporter's transport logged at `trace`, logs
/// from the exporter's own targets and from the app (one event inside a span), flushes, and
/// checks that every event is a log line while only the app's are OTLP log records, the one
/// inside the span with its trace id. `init` installs process-wide state: one call per test
/// binary.
pub async fn exporter_targets_are_log_lines_but_never_otlp_records(format: telemetry::LogFormat) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    let collector = fake_collector::FakeCollector::start().await;
    let logs = LogCapture::default();
    let mut config = telemetry::TelemetryConfig::new("log-targets");
    config.otlp_endpoint = Some(collector.grpc_endpoint());
    config.scheduled_delay = std::time::Duration::from_millis(50);
    config.log_format = format;
    config.ansi = false;
    // The case the exclusion exists for: the exporter's transport logging about the export.
    config.log_filter = "info,h2=trace,tonic=trace,hyper=trace,tower=trace".into();
    let guard = telemetry::init_with_writer(config, logs.clone()).expect("init");

    tracing::info!(target: "h2::codec", "from h2");
    tracing::info!(target: "hyper_util::client", "from hyper_util");
    tracing::info!(target: "opentelemetry_sdk", "from the sdk");
    // The SDK crates' internal events have their package name as target, hyphens included.
    tracing::warn!(target: "opentelemetry-otlp", "from the otlp crate");
    tracing::warn!(target: telemetry::export::EXPORT_LOG_TARGET, "from the exporter");
    // The rule of a `tower=off` directive: a prefix, so `tower_http` is excluded as well; a
    // target that merely contains an excluded one is not.
    tracing::info!(target: "tower_http::trace", "from tower_http");
    tracing::info!(target: "app::h2", "from the app");
    tracing::debug!(target: "app", "below the filter");
    let trace_id = {
        let span = tracing::info_span!("work");
        let _entered = span.enter();
        tracing::info!(target: "app", "inside a span");
        span.context().span().span_context().trace_id().to_string()
    };
    // Nor do its spans become OpenTelemetry spans.
    tracing::info_span!(target: "h2::proto::connection", "transport span").in_scope(|| {});
    // Export traffic while the transport logs at `trace`: its lines must not come back as
    // records of the next export.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    guard.shutdown().await.expect("flush");

    let text = logs.text();
    for message in [
        "from h2",
        "from hyper_util",
        "from the sdk",
        "from the otlp crate",
        "from the exporter",
        "from tower_http",
        "from the app",
        "inside a span",
    ] {
        assert!(text.contains(message), "{message}: not logged\n{text}");
    }
    assert!(!text.contains("below the filter"), "{text}");
    // Targets this test does not log itself: real events of the export's connection.
    assert!(
        text.contains("h2::proto") || text.contains("tonic::transport"),
        "the export's own transport logged nothing at trace: the test exercised no real transport events"
    );

    // Records are grouped by scope (the event's target) for export: compare them sorted.
    let mut records = collector.logs();
    records.sort_by(|a, b| a.body.cmp(&b.body));
    let bodies: Vec<&str> = records.iter().map(|r| r.body.as_str()).collect();
    assert_eq!(
        bodies,
        ["from the app", "inside a span"],
        "OTLP log records"
    );
    assert!(
        records[0].trace_id.is_empty(),
        "outside a span, no trace id"
    );
    assert_eq!(
        records[1].trace_id, trace_id,
        "the record carries its span's trace id"
    );

    let spans: Vec<String> = collector.spans().into_iter().map(|s| s.name).collect();
    assert!(spans.iter().any(|n| n == "work"), "{spans:?}");
    assert!(!spans.iter().any(|n| n == "transport span"), "{spans:?}");
}
