//! A live OTLP receiver that counts and discards.
//!
//! It accepts `TraceService/Export` and `LogsService/Export` over gRPC like any collector,
//! counts the spans and log records, and keeps nothing, so its memory stays flat for any length
//! of run — unlike `fake-collector`, which stores everything for tests to query. The counts are
//! served as JSON on a separate HTTP port (`GET /stats`), which also takes OTLP/HTTP with binary
//! protobuf bodies (`POST /v1/traces`, `POST /v1/logs`,
//! [OTLP/HTTP](https://opentelemetry.io/docs/specs/otlp/#otlphttp)), counted alike, to compare
//! the two export protocols.
//!
//! How much of each request it reads is [`Decode`]: by default only the protobuf framing down to
//! each span or log record, which it counts without decoding ([`Decode::Count`]), so that the
//! receiver, which shares a core with the load tools in `bench/`, takes as little of that core
//! as it can; or every request in full into `opentelemetry-proto`'s messages, as a collector
//! does ([`Decode::Full`]).
//!
//! Optionally ([`SpanDump`], which needs [`Decode::Full`]) it also appends one JSON line per
//! span (ids, parent, service, name, kind, start, end, status) to a file, for [`crate::hops`]
//! to break traces down per hop.

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

/// How much of each export request the receiver reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Decode {
    /// Walk each request's protobuf framing down to its spans or log records and count them,
    /// without decoding them (each is taken as an undecoded slice of the request). A malformed
    /// request is still refused where its framing is broken.
    Count,
    /// Decode every request in full into `opentelemetry-proto`'s messages, as a collector does.
    Full,
}

/// Export requests read only as far as their spans or log records ([`Decode::Count`]).
///
/// `ExportTraceServiceRequest` and `ExportLogsServiceRequest` have the same shape down to the
/// items (field numbers from
/// [opentelemetry-proto](https://github.com/open-telemetry/opentelemetry-proto/tree/main/opentelemetry/proto)):
/// the request's resources are field 1 (`resource_spans`, `resource_logs`), a resource's scopes
/// field 2 (`scope_spans`, `scope_logs`), a scope's items field 2 (`spans`, `log_records`).
/// Every other field (resources, scopes, schema URLs) is skipped by prost unread.
mod framing {
    /// An export request: its resources.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(message, repeated, tag = "1")]
        pub resources: Vec<Resource>,
    }

    /// A `ResourceSpans` or `ResourceLogs`: its scopes.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "2")]
        pub scopes: Vec<Scope>,
    }

    /// A `ScopeSpans` or `ScopeLogs`: its items, each an undecoded slice of the request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Scope {
        #[prost(bytes = "bytes", repeated, tag = "2")]
        pub items: Vec<bytes::Bytes>,
    }

    impl Request {
        /// How many spans or log records the request carries.
        pub fn items(&self) -> u64 {
            self.resources
                .iter()
                .flat_map(|r| &r.scopes)
                .map(|s| s.items.len() as u64)
                .sum()
        }
    }
}

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
struct Receiver {
    counts: Arc<Counts>,
    dump: Option<Arc<SpanDump>>,
    decode: Decode,
}

impl Receiver {
    fn count_spans(&self, spans: u64) {
        self.counts.spans.fetch_add(spans, Ordering::Relaxed);
        self.counts.trace_requests.fetch_add(1, Ordering::Relaxed);
    }

    fn count_logs(&self, logs: u64) {
        self.counts.logs.fetch_add(logs, Ordering::Relaxed);
        self.counts.log_requests.fetch_add(1, Ordering::Relaxed);
    }

    fn traces(&self, request: &ExportTraceServiceRequest) {
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.count_spans(spans as u64);
        if let Some(dump) = &self.dump {
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
        self.count_logs(logs as u64);
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
    let read = match receiver.decode {
        Decode::Count => {
            framing::Request::decode(body).map(|request| receiver.count_spans(request.items()))
        }
        Decode::Full => {
            ExportTraceServiceRequest::decode(body).map(|request| receiver.traces(&request))
        }
    };
    protobuf_response(read.map(|()| {
        ExportTraceServiceResponse {
            partial_success: None,
        }
        .encode_to_vec()
    }))
}

async fn http_logs(State(receiver): State<Receiver>, body: bytes::Bytes) -> Response {
    let read = match receiver.decode {
        Decode::Count => {
            framing::Request::decode(body).map(|request| receiver.count_logs(request.items()))
        }
        Decode::Full => {
            ExportLogsServiceRequest::decode(body).map(|request| receiver.logs(&request))
        }
    };
    protobuf_response(read.map(|()| {
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

/// A signal the receiver counts over gRPC without decoding it ([`Decode::Count`]).
trait Signal: Send + Sync + 'static {
    /// The gRPC service's full name, as in
    /// [OTLP/gRPC](https://opentelemetry.io/docs/specs/otlp/#otlpgrpc).
    const SERVICE: &'static str;
    /// What `Export` answers.
    type Response: prost::Message + Default + 'static;
    /// Counts one request carrying `items` spans or log records.
    fn count(receiver: &Receiver, items: u64);
}

struct Traces;
struct Logs;

impl Signal for Traces {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    type Response = ExportTraceServiceResponse;
    fn count(receiver: &Receiver, items: u64) {
        receiver.count_spans(items);
    }
}

impl Signal for Logs {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    type Response = ExportLogsServiceResponse;
    fn count(receiver: &Receiver, items: u64) {
        receiver.count_logs(items);
    }
}

/// The gRPC service of signal `S` ([`Decode::Count`]): `Export` reads the request's framing
/// only (tonic's server with prost's codec, on [`framing::Request`]), counts its items and
/// answers an empty (full success) response; any other method is `UNIMPLEMENTED`.
struct Counting<S>(Receiver, std::marker::PhantomData<S>);

impl<S> Counting<S> {
    fn new(receiver: Receiver) -> Self {
        Self(receiver, std::marker::PhantomData)
    }
}

impl<S> Clone for Counting<S> {
    fn clone(&self) -> Self {
        Self::new(self.0.clone())
    }
}

impl<S: Signal> tonic::server::NamedService for Counting<S> {
    const NAME: &'static str = S::SERVICE;
}

impl<S: Signal> tonic::server::UnaryService<framing::Request> for Counting<S> {
    type Response = S::Response;
    type Future = std::future::Ready<Result<tonic::Response<S::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<framing::Request>) -> Self::Future {
        S::count(&self.0, request.get_ref().items());
        std::future::ready(Ok(tonic::Response::new(S::Response::default())))
    }
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for Counting<S>
where
    S: Signal,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let export = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(S::SERVICE))
            == Some("/Export");
        let service = self.clone();
        Box::pin(async move {
            if !export {
                return Ok(tonic::Status::unimplemented("only Export is served").into_http());
            }
            let codec = tonic_prost::ProstCodec::<S::Response, framing::Request>::default();
            let mut grpc = tonic::server::Grpc::new(codec)
                .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
            Ok(grpc.unary(service, request).await)
        })
    }
}

/// Serves OTLP/gRPC on `grpc`, and `GET /stats` and OTLP/HTTP (`POST /v1/traces`,
/// `POST /v1/logs`, binary protobuf) on `stats`, until `stop` resolves, reading each request as
/// `decode` says; with `dump`, also writes every span to it.
///
/// # Errors
/// When a server fails, or when `dump` is given with [`Decode::Count`] (a span dump needs every
/// span decoded).
pub async fn serve(
    grpc: TcpListener,
    stats: TcpListener,
    counts: Arc<Counts>,
    decode: Decode,
    dump: Option<SpanDump>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        dump.is_none() || decode == Decode::Full,
        "a span dump needs every request decoded in full"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        stop.await;
        let _ = stop_tx.send(true);
    });
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    };

    let receiver = Receiver {
        counts: counts.clone(),
        dump: dump.map(Arc::new),
        decode,
    };
    let mut builder = tonic::transport::Server::builder();
    let router = match decode {
        Decode::Count => builder
            .add_service(Counting::<Traces>::new(receiver.clone()))
            .add_service(Counting::<Logs>::new(receiver.clone())),
        Decode::Full => builder
            .add_service(
                TraceServiceServer::new(receiver.clone())
                    .max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .add_service(
                LogsServiceServer::new(receiver.clone())
                    .max_decoding_message_size(MAX_REQUEST_BYTES),
            ),
    };
    let grpc_server = router.serve_with_incoming_shutdown(
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
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
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

    fn attribute(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    /// A resource and a scope with attributes, as an SDK sends them: what the counting read has
    /// to skip.
    fn resource() -> Option<Resource> {
        Some(Resource {
            attributes: vec![attribute("service.name", "bench"), attribute("a", "b")],
            ..Default::default()
        })
    }

    fn scope() -> Option<InstrumentationScope> {
        Some(InstrumentationScope {
            name: "telemetry".into(),
            version: "1".into(),
            attributes: vec![attribute("scope", "x")],
            ..Default::default()
        })
    }

    fn span(n: u8) -> Span {
        Span {
            trace_id: vec![n; 16],
            span_id: vec![n; 8],
            name: format!("GET /route/{n}"),
            kind: 2,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![
                attribute("http.request.method", "GET"),
                attribute("url.path", "/"),
            ],
            ..Default::default()
        }
    }

    /// 2 resources: 2 + 3 spans in the first (two scopes), 4 in the second; an empty scope too.
    fn traces() -> ExportTraceServiceRequest {
        let scope_spans = |spans: Vec<Span>| ScopeSpans {
            scope: scope(),
            spans,
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: resource(),
                    scope_spans: vec![
                        scope_spans(vec![span(1), span(2)]),
                        scope_spans(vec![span(3), span(4), span(5)]),
                    ],
                    schema_url: "s".into(),
                },
                ResourceSpans {
                    resource: resource(),
                    scope_spans: vec![
                        scope_spans(vec![]),
                        scope_spans((6..10).map(span).collect()),
                    ],
                    schema_url: String::new(),
                },
            ],
        }
    }

    /// 1 resource, 3 log records.
    fn logs() -> ExportLogsServiceRequest {
        let record = |n: u8| LogRecord {
            time_unix_nano: 1,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!("request {n}"))),
            }),
            attributes: vec![attribute("k", "v")],
            trace_id: vec![n; 16],
            span_id: vec![n; 8],
            ..Default::default()
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource(),
                scope_logs: vec![ScopeLogs {
                    scope: scope(),
                    log_records: vec![record(1), record(2), record(3)],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    /// A receiver on ephemeral ports: (gRPC address, stats address, counts, stop, server task).
    async fn start(
        decode: Decode,
    ) -> (
        std::net::SocketAddr,
        std::net::SocketAddr,
        Arc<Counts>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stats = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, stats_addr) = (grpc.local_addr().unwrap(), stats.local_addr().unwrap());
        let counts = Arc::new(Counts::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(grpc, stats, counts.clone(), decode, None, async {
            let _ = stop_rx.await;
        }));
        (grpc_addr, stats_addr, counts, stop_tx, server)
    }

    #[tokio::test]
    async fn grpc_exports_are_counted_the_same_decoded_or_not() {
        for decode in [Decode::Count, Decode::Full] {
            let (grpc, _, counts, stop, server) = start(decode).await;
            let endpoint = format!("http://{grpc}");
            let mut trace_client = TraceServiceClient::connect(endpoint.clone()).await.unwrap();
            let mut logs_client = LogsServiceClient::connect(endpoint).await.unwrap();
            for _ in 0..2 {
                let answer = trace_client.export(traces()).await.unwrap().into_inner();
                assert_eq!(answer.partial_success, None, "{decode:?}");
            }
            logs_client.export(logs()).await.unwrap();
            assert_eq!(
                counts.to_json(),
                serde_json::json!({"spans": 18, "logs": 3, "trace_requests": 2, "log_requests": 1}),
                "{decode:?}"
            );
            stop.send(()).unwrap();
            server.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn otlp_http_requests_are_counted_like_grpc_ones_decoded_or_not() {
        for decode in [Decode::Count, Decode::Full] {
            let (_, addr, counts, stop, server) = start(decode).await;
            let (status, body) = post(addr, "/v1/traces", traces().encode_to_vec()).await;
            assert_eq!(status, 200, "{decode:?}");
            assert!(ExportTraceServiceResponse::decode(body.as_slice()).is_ok());
            let (status, body) = post(addr, "/v1/logs", logs().encode_to_vec()).await;
            assert_eq!(status, 200, "{decode:?}");
            assert!(ExportLogsServiceResponse::decode(body.as_slice()).is_ok());

            // Not protobuf, or a request cut short inside a span: refused, nothing counted.
            let (status, body) = post(addr, "/v1/traces", vec![0xff; 7]).await;
            assert_eq!(
                status,
                400,
                "{decode:?}: {}",
                String::from_utf8_lossy(&body)
            );
            let mut cut = traces().encode_to_vec();
            cut.truncate(cut.len() - 3);
            let (status, _) = post(addr, "/v1/traces", cut).await;
            assert_eq!(status, 400, "{decode:?}");

            assert_eq!(
                counts.to_json(),
                serde_json::json!({"spans": 9, "logs": 3, "trace_requests": 1, "log_requests": 1}),
                "{decode:?}"
            );
            stop.send(()).unwrap();
            server.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_span_dump_needs_full_decoding() {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stats = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dir = std::env::temp_dir().join(format!("overhead-dump-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dump = SpanDump::create(&dir.join("spans.jsonl")).unwrap();
        let refused = serve(
            grpc,
            stats,
            Arc::new(Counts::default()),
            Decode::Count,
            Some(dump),
            std::future::ready(()),
        )
        .await;
        assert!(refused.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
