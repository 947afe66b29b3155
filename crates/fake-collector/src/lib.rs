//! An in-process OTLP collector for tests.
//!
//! [`FakeCollector::start`] binds two real receivers on `127.0.0.1:0`:
//!
//! * an OTLP/gRPC server (tonic, built from the `opentelemetry-proto` service
//!   definitions) serving `TraceService/Export` and `LogsService/Export`, at
//!   [`FakeCollector::grpc_endpoint`];
//! * an OTLP/HTTP protobuf server (axum) serving `POST /v1/traces` and
//!   `POST /v1/logs`, at [`FakeCollector::http_endpoint`].
//!
//! Point an exporter at one of them, then assert on what arrived with
//! [`FakeCollector::spans`], [`FakeCollector::logs`] or, since exporters batch
//! in the background, [`FakeCollector::wait_for_spans`] /
//! [`FakeCollector::wait_for_logs`]. Received data is flattened into [`Span`]
//! and [`LogRecord`] (ids as lowercase hex, attributes as [`AttrValue`]s).
//!
//! [`FakeCollector::set_behaviour`] makes the collector refuse or hang, for
//! outage tests. The servers stop when the last clone of the handle is dropped.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! let collector = fake_collector::FakeCollector::start().await;
//! // ... configure the OTLP exporter with collector.grpc_endpoint() ...
//! let spans = collector
//!     .wait_for_spans(|s| fake_collector::find(s, "GET /users").is_some(), Duration::from_secs(5))
//!     .await;
//! let span = fake_collector::find(&spans, "GET /users").unwrap();
//! assert_eq!(span.attr_str("http.response.status_code").as_deref(), Some("200"));
//! # }
//! ```

#![warn(missing_docs)]

mod model;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode as HttpStatus, header};
use axum::response::{IntoResponse, Response};
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
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use model::{
    AttrValue, Event, Link, LogRecord, Span, SpanKind, StatusCode, by_trace, children, find,
    find_all, find_log,
};

/// Largest request body either receiver accepts (64 MiB).
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// Interval at which `wait_for_*` re-checks its predicate.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How the collector answers export calls. Set with
/// [`FakeCollector::set_behaviour`]; the default is [`Behaviour::Accept`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// Store the data and answer success.
    #[default]
    Accept,
    /// Drop the data and answer gRPC `UNAVAILABLE` / HTTP `503 Service
    /// Unavailable` (both retryable per the OTLP spec).
    Reject,
    /// Hold the call open without answering until the behaviour changes (the
    /// call is then handled per the new behaviour) or the collector is dropped
    /// (answered as `Reject`). For exporter-timeout tests.
    Hang,
}

/// State shared between the handles and the two servers.
struct Shared {
    spans: Mutex<Vec<Span>>,
    logs: Mutex<Vec<LogRecord>>,
    export_requests: AtomicUsize,
    /// Closed (sender dropped) once the collector is dropped.
    behaviour: watch::Receiver<Behaviour>,
}

/// Why an export call was not accepted.
enum Refusal {
    Rejected,
    ShuttingDown,
}

impl Refusal {
    fn message(&self) -> &'static str {
        match self {
            Refusal::Rejected => "fake-collector: rejecting exports (Behaviour::Reject)",
            Refusal::ShuttingDown => "fake-collector: shutting down",
        }
    }
}

impl Shared {
    /// Counts the call, then waits out [`Behaviour::Hang`] and decides.
    async fn admit(&self) -> Result<(), Refusal> {
        self.export_requests.fetch_add(1, Ordering::SeqCst);
        let mut rx = self.behaviour.clone();
        let behaviour = match rx.wait_for(|b| *b != Behaviour::Hang).await {
            Ok(b) => *b,
            Err(_) => return Err(Refusal::ShuttingDown),
        };
        match behaviour {
            Behaviour::Accept => Ok(()),
            Behaviour::Reject | Behaviour::Hang => Err(Refusal::Rejected),
        }
    }

    fn store_traces(&self, request: &ExportTraceServiceRequest) {
        let spans = model::spans_from(request);
        lock(&self.spans).extend(spans);
    }

    fn store_logs(&self, request: &ExportLogsServiceRequest) {
        let logs = model::logs_from(request);
        lock(&self.logs).extend(logs);
    }
}

/// Locks, ignoring poisoning (a panicking test thread must not hide data).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Owned by the handles only: dropping it stops the servers.
struct Inner {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    behaviour: watch::Sender<Behaviour>,
    shutdown: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ask both servers to close their connections gracefully, then stop
        // them accepting (aborting drops the listeners). Hanging calls are
        // released when `behaviour` (the watch sender) is dropped right after.
        for tx in self.shutdown.drain(..) {
            let _ = tx.send(());
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Handle to a running fake OTLP collector. Cheap to clone; all clones see the
/// same data, and the servers stop when the last clone is dropped.
#[derive(Clone)]
pub struct FakeCollector {
    shared: Arc<Shared>,
    inner: Arc<Inner>,
}

impl fmt::Debug for FakeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeCollector")
            .field("grpc", &self.inner.grpc_addr)
            .field("http", &self.inner.http_addr)
            .field("behaviour", &*self.inner.behaviour.borrow())
            .field("export_requests", &self.export_requests())
            .field("spans", &lock(&self.shared.spans).len())
            .field("logs", &lock(&self.shared.logs).len())
            .finish()
    }
}

impl FakeCollector {
    /// Binds both receivers on `127.0.0.1:0` and starts serving them on the
    /// current tokio runtime (so it must be called inside one). The sockets
    /// are listening when this returns.
    ///
    /// # Panics
    /// If a listener cannot be bound.
    pub async fn start() -> FakeCollector {
        let grpc_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake-collector: bind gRPC listener");
        let http_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake-collector: bind HTTP listener");
        let grpc_addr = grpc_listener.local_addr().expect("gRPC local_addr");
        let http_addr = http_listener.local_addr().expect("HTTP local_addr");

        let (behaviour_tx, behaviour_rx) = watch::channel(Behaviour::Accept);
        let shared = Arc::new(Shared {
            spans: Mutex::new(Vec::new()),
            logs: Mutex::new(Vec::new()),
            export_requests: AtomicUsize::new(0),
            behaviour: behaviour_rx,
        });

        let (grpc_stop, grpc_stopped) = oneshot::channel::<()>();
        let (http_stop, http_stopped) = oneshot::channel::<()>();
        let grpc_task = tokio::spawn(serve_grpc(grpc_listener, shared.clone(), grpc_stopped));
        let http_task = tokio::spawn(serve_http(http_listener, shared.clone(), http_stopped));

        FakeCollector {
            shared,
            inner: Arc::new(Inner {
                grpc_addr,
                http_addr,
                behaviour: behaviour_tx,
                shutdown: vec![grpc_stop, http_stop],
                tasks: vec![grpc_task, http_task],
            }),
        }
    }

    /// The OTLP/gRPC endpoint, `http://127.0.0.1:PORT`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.inner.grpc_addr)
    }

    /// The OTLP/HTTP base endpoint, `http://127.0.0.1:PORT`; the signal paths
    /// are `/v1/traces` and `/v1/logs` under it. This is the form for
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, where the exporter appends the path; an
    /// endpoint given programmatically (`with_endpoint`) is used as-is, so pass
    /// [`http_traces_endpoint`](Self::http_traces_endpoint) /
    /// [`http_logs_endpoint`](Self::http_logs_endpoint) there instead.
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.inner.http_addr)
    }

    /// The full OTLP/HTTP traces URL, `http://127.0.0.1:PORT/v1/traces`.
    pub fn http_traces_endpoint(&self) -> String {
        format!("{}/v1/traces", self.http_endpoint())
    }

    /// The full OTLP/HTTP logs URL, `http://127.0.0.1:PORT/v1/logs`.
    pub fn http_logs_endpoint(&self) -> String {
        format!("{}/v1/logs", self.http_endpoint())
    }

    /// Every span accepted so far (over both protocols), flattened, in arrival
    /// order.
    pub fn spans(&self) -> Vec<Span> {
        lock(&self.shared.spans).clone()
    }

    /// Every log record accepted so far (over both protocols), flattened, in
    /// arrival order.
    pub fn logs(&self) -> Vec<LogRecord> {
        lock(&self.shared.logs).clone()
    }

    /// Number of export calls received (traces + logs, both protocols),
    /// including ones refused or held by [`Behaviour::Reject`] /
    /// [`Behaviour::Hang`]; calls whose body could not be decoded are not
    /// counted.
    pub fn export_requests(&self) -> usize {
        self.shared.export_requests.load(Ordering::SeqCst)
    }

    /// Forgets all received spans and log records and resets
    /// [`export_requests`](Self::export_requests) to zero.
    pub fn clear(&self) {
        lock(&self.shared.spans).clear();
        lock(&self.shared.logs).clear();
        self.shared.export_requests.store(0, Ordering::SeqCst);
    }

    /// Changes how subsequent (and currently hanging) export calls are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.inner.behaviour.send_replace(behaviour);
    }

    /// Polls [`spans`](Self::spans) every 20 ms until `pred` holds, and
    /// returns the spans it held for.
    ///
    /// # Panics
    /// After `timeout`, with a message listing every span received.
    pub async fn wait_for_spans(
        &self,
        pred: impl Fn(&[Span]) -> bool,
        timeout: Duration,
    ) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            if Instant::now() >= deadline {
                panic!(
                    "fake-collector: timed out after {timeout:?} waiting for spans; \
                     {} span(s) received in {} export call(s):\n{}",
                    spans.len(),
                    self.export_requests(),
                    model::describe_spans(&spans)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Polls [`logs`](Self::logs) every 20 ms until `pred` holds, and returns
    /// the records it held for.
    ///
    /// # Panics
    /// After `timeout`, with a message listing every log record received.
    pub async fn wait_for_logs(
        &self,
        pred: impl Fn(&[LogRecord]) -> bool,
        timeout: Duration,
    ) -> Vec<LogRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if pred(&logs) {
                return logs;
            }
            if Instant::now() >= deadline {
                panic!(
                    "fake-collector: timed out after {timeout:?} waiting for logs; \
                     {} log record(s) received in {} export call(s):\n{}",
                    logs.len(),
                    self.export_requests(),
                    model::describe_logs(&logs)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

// ---------------------------------------------------------------------------
// gRPC receiver.

/// The tonic service implementation for both signals.
#[derive(Clone)]
struct GrpcReceiver(Arc<Shared>);

fn grpc_refusal(r: Refusal) -> tonic::Status {
    tonic::Status::unavailable(r.message())
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.admit().await.map_err(grpc_refusal)?;
        self.0.store_traces(request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl LogsService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.admit().await.map_err(grpc_refusal)?;
        self.0.store_logs(request.get_ref());
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

async fn serve_grpc(listener: TcpListener, shared: Arc<Shared>, stop: oneshot::Receiver<()>) {
    let receiver = GrpcReceiver(shared);
    let result = tonic::transport::Server::builder()
        .add_service(
            TraceServiceServer::new(receiver.clone()).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(LogsServiceServer::new(receiver).max_decoding_message_size(MAX_REQUEST_BYTES))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = stop.await;
            },
        )
        .await;
    if let Err(e) = result {
        eprintln!("fake-collector: gRPC server stopped: {e}");
    }
}

// ---------------------------------------------------------------------------
// HTTP/protobuf receiver.

const PROTOBUF: &str = "application/x-protobuf";

async fn serve_http(listener: TcpListener, shared: Arc<Shared>, stop: oneshot::Receiver<()>) {
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(http_traces))
        .route("/v1/logs", axum::routing::post(http_logs))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(shared);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = stop.await;
        })
        .await;
    if let Err(e) = result {
        eprintln!("fake-collector: HTTP server stopped: {e}");
    }
}

async fn http_traces(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle_http(&shared, &headers, &body, Shared::store_traces, || {
        ExportTraceServiceResponse {
            partial_success: None,
        }
    })
    .await
}

async fn http_logs(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle_http(&shared, &headers, &body, Shared::store_logs, || {
        ExportLogsServiceResponse {
            partial_success: None,
        }
    })
    .await
}

/// Decodes `body` as `Req`, applies the behaviour, stores, and answers with
/// the protobuf-encoded `Resp` (or a protobuf `google.rpc.Status` on error,
/// as the OTLP/HTTP spec asks).
async fn handle_http<Req, Resp>(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    store: fn(&Shared, &Req),
    response: impl FnOnce() -> Resp,
) -> Response
where
    Req: Message + Default,
    Resp: Message,
{
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        if !ct.starts_with(PROTOBUF) && !ct.starts_with("application/protobuf") {
            return http_error(
                HttpStatus::UNSUPPORTED_MEDIA_TYPE,
                &format!("fake-collector: only {PROTOBUF} is supported, got {ct:?}"),
            );
        }
    }
    if let Some(ce) = headers.get(header::CONTENT_ENCODING) {
        let ce = ce.to_str().unwrap_or_default();
        if !ce.eq_ignore_ascii_case("identity") {
            return http_error(
                HttpStatus::UNSUPPORTED_MEDIA_TYPE,
                &format!("fake-collector: content-encoding {ce:?} is not supported"),
            );
        }
    }
    let request = match Req::decode(body) {
        Ok(r) => r,
        Err(e) => {
            return http_error(
                HttpStatus::BAD_REQUEST,
                &format!("fake-collector: cannot decode request body: {e}"),
            );
        }
    };
    if let Err(r) = shared.admit().await {
        return http_error(HttpStatus::SERVICE_UNAVAILABLE, r.message());
    }
    store(shared, &request);
    protobuf_response(HttpStatus::OK, response().encode_to_vec())
}

fn protobuf_response(status: HttpStatus, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, PROTOBUF)], body).into_response()
}

/// An error response whose body is a protobuf `google.rpc.Status`.
fn http_error(status: HttpStatus, message: &str) -> Response {
    // gRPC codes: 3 INVALID_ARGUMENT, 14 UNAVAILABLE.
    let code = if status == HttpStatus::SERVICE_UNAVAILABLE {
        14
    } else {
        3
    };
    protobuf_response(status, encode_rpc_status(code, message))
}

/// Hand-encodes `google.rpc.Status { code = 1: int32, message = 2: string }`.
fn encode_rpc_status(code: u64, message: &str) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut out = Vec::with_capacity(message.len() + 8);
    out.push(0x08); // field 1, varint
    varint(code, &mut out);
    out.push(0x12); // field 2, length-delimited
    varint(message.len() as u64, &mut out);
    out.extend_from_slice(message.as_bytes());
    out
}

/// Binds `127.0.0.1:0` and accepts TCP connections without ever reading or writing: the worst
/// kind of outage, a collector (or any dependency) that hangs instead of refusing. Connections
/// are held until the runtime shuts down. Must be called inside a tokio runtime.
pub async fn black_hole() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_status_encoding() {
        assert_eq!(
            encode_rpc_status(14, "ab"),
            vec![0x08, 14, 0x12, 2, b'a', b'b']
        );
        let long = "x".repeat(200);
        let enc = encode_rpc_status(3, &long);
        assert_eq!(&enc[..5], &[0x08, 3, 0x12, 0xc8, 0x01]);
        assert_eq!(enc.len(), 5 + 200);
    }
}
