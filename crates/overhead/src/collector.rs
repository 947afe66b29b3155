//! A live OTLP receiver that counts and discards.
//!
//! It accepts `TraceService/Export` and `LogsService/Export` over gRPC like any collector (tonic
//! decodes every request in full), counts the spans and log records, and keeps nothing, so its
//! memory stays flat for any length of run — unlike `fake-collector`, which stores everything
//! for tests to query. The counts are served as JSON on a separate HTTP port (`GET /stats`),
//! which also takes OTLP/HTTP with binary protobuf bodies (`POST /v1/traces`, `POST /v1/logs`,
//! [OTLP/HTTP](https://opentelemetry.io/docs/specs/otlp/#otlphttp)), decoded in full and
//! counted alike, to compare the two export protocols.
//!
//! Optionally ([`SpanDump`]) it also appends one JSON line per span (ids, parent, service,
//! name, kind, start, end, status) to a file, for [`crate::hops`] to break traces down per hop.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use tokio::net::TcpListener;

/// Export requests can be large (a batch of 512 spans with attributes): accept up to 64 MiB.
const MAX_REQUEST_BYTES: usize = 64 << 20;

/// What has been received so far.
#[derive(Debug, Default)]
pub struct Counts {
    /// Spans in all trace export requests.
    pub spans: AtomicU64,
    /// Log records in all log export requests.
    pub logs: AtomicU64,
    /// Trace export requests.
    pub trace_requests: AtomicU64,
    /// Log export requests.
    pub log_requests: AtomicU64,
}

impl Counts {
    /// The counts as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "spans": self.spans.load(Ordering::Relaxed),
            "logs": self.logs.load(Ordering::Relaxed),
            "trace_requests": self.trace_requests.load(Ordering::Relaxed),
            "log_requests": self.log_requests.load(Ordering::Relaxed),
        })
    }
}

/// Appends every received span to a file as one JSON object per line:
/// `{"trace_id","span_id","parent_span_id","service","name","kind","start_ns","end_ns","error"}`
/// (ids in lowercase hex, `parent_span_id` empty for a root, `kind` as OTLP names it:
/// `server`, `client`, `producer`, `consumer`, `internal`).
pub struct SpanDump(Mutex<std::io::BufWriter<std::fs::File>>);

impl SpanDump {
    /// Creates (truncates) `path`.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn create(path: &std::path::Path) -> std::io::Result<Self> {
        Ok(Self(Mutex::new(std::io::BufWriter::new(
            std::fs::File::create(path)?,
        ))))
    }

    fn write(&self, request: &ExportTraceServiceRequest) {
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for resource in &request.resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => {
                        s.clone()
                    }
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                let line = serde_json::json!({
                    "trace_id": hex(&span.trace_id),
                    "span_id": hex(&span.span_id),
                    "parent_span_id": hex(&span.parent_span_id),
                    "service": service,
                    "name": span.name,
                    "kind": kind_name(span.kind),
                    "start_ns": span.start_time_unix_nano,
                    "end_ns": span.end_time_unix_nano,
                    "error": span.status.as_ref().is_some_and(|s| s.code == 2),
                });
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

#[derive(Clone)]
struct Receiver(Arc<Counts>, Option<Arc<SpanDump>>);

impl Receiver {
    fn traces(&self, request: &ExportTraceServiceRequest) {
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.spans.fetch_add(spans as u64, Ordering::Relaxed);
        self.0.trace_requests.fetch_add(1, Ordering::Relaxed);
        if let Some(dump) = &self.1 {
            dump.write(request);
        }
    }

    fn logs(&self, request: &ExportLogsServiceRequest) {
        let logs: usize = request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        self.0.logs.fetch_add(logs as u64, Ordering::Relaxed);
        self.0.log_requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// The OTLP/HTTP answer: the protobuf response message, or 400 with the decoding error.
fn protobuf_response(decoded: Result<Vec<u8>, prost::DecodeError>) -> Response {
    match decoded {
        Ok(body) => ([(header::CONTENT_TYPE, "application/x-protobuf")], body).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("not an OTLP protobuf body: {e}"),
        )
            .into_response(),
    }
}

async fn http_traces(State(receiver): State<Receiver>, body: bytes::Bytes) -> Response {
    protobuf_response(ExportTraceServiceRequest::decode(body).map(|request| {
        receiver.traces(&request);
        ExportTraceServiceResponse {
            partial_success: None,
        }
        .encode_to_vec()
    }))
}

async fn http_logs(State(receiver): State<Receiver>, body: bytes::Bytes) -> Response {
    protobuf_response(ExportLogsServiceRequest::decode(body).map(|request| {
        receiver.logs(&request);
        ExportLogsServiceResponse {
            partial_success: None,
        }
        .encode_to_vec()
    }))
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces(request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.logs(request.get_ref());
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves OTLP/gRPC on `grpc`, and `GET /stats` and OTLP/HTTP (`POST /v1/traces`,
/// `POST /v1/logs`, binary protobuf) on `stats`, until `stop` resolves; with `dump`, also writes
/// every span to it.
///
/// # Errors
/// When a server fails.
pub async fn serve(
    grpc: TcpListener,
    stats: TcpListener,
    counts: Arc<Counts>,
    dump: Option<SpanDump>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        stop.await;
        let _ = stop_tx.send(true);
    });
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    };

    let receiver = Receiver(counts.clone(), dump.map(Arc::new));
    let grpc_server = tonic::transport::Server::builder()
        .add_service(
            TraceServiceServer::new(receiver.clone()).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            LogsServiceServer::new(receiver.clone()).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc),
            until(stop_rx.clone()),
        );
    let app = axum::Router::new()
        .route(
            "/stats",
            get(move || {
                let counts = counts.clone();
                async move { Json(counts.to_json()) }
            }),
        )
        .route("/v1/traces", post(http_traces))
        .route("/v1/logs", post(http_logs))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(receiver);
    let stats_server = axum::serve(stats, app).with_graceful_shutdown(until(stop_rx));
    let (g, s) = tokio::join!(grpc_server, stats_server.into_future());
    g?;
    s?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    async fn post(addr: std::net::SocketAddr, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let response = sender
            .send_request(
                http::Request::post(path)
                    .header(http::header::HOST, addr.to_string())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(Full::new(bytes::Bytes::from(body)))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
    }

    #[tokio::test]
    async fn otlp_http_requests_are_decoded_and_counted_like_grpc_ones() {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stats = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = stats.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(grpc, stats, counts.clone(), None, async {
            let _ = stop_rx.await;
        }));

        let traces = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default(), Span::default(), Span::default()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let (status, body) = post(addr, "/v1/traces", traces.encode_to_vec()).await;
        assert_eq!(status, 200);
        assert!(ExportTraceServiceResponse::decode(body.as_slice()).is_ok());

        let logs = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(), LogRecord::default()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let (status, _) = post(addr, "/v1/logs", logs.encode_to_vec()).await;
        assert_eq!(status, 200);

        // Not protobuf: refused, and nothing counted.
        let (status, body) = post(addr, "/v1/traces", vec![0xff; 7]).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

        assert_eq!(
            counts.to_json(),
            serde_json::json!({"spans": 3, "logs": 2, "trace_requests": 1, "log_requests": 1})
        );
        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
