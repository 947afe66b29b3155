//! A live OTLP/gRPC receiver that counts and discards.
//!
//! It accepts `TraceService/Export` and `LogsService/Export` like any collector (tonic decodes
//! every request in full), counts the spans and log records, and keeps nothing, so its memory
//! stays flat for any length of run — unlike `fake-collector`, which stores everything for tests
//! to query. The counts are served as JSON on a separate HTTP port (`GET /stats`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::routing::get;
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

#[derive(Clone)]
struct Receiver(Arc<Counts>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.spans.fetch_add(spans as u64, Ordering::Relaxed);
        self.0.trace_requests.fetch_add(1, Ordering::Relaxed);
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
        let logs: usize = request
            .get_ref()
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        self.0.logs.fetch_add(logs as u64, Ordering::Relaxed);
        self.0.log_requests.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves OTLP/gRPC on `grpc` and `GET /stats` on `stats` until `stop` resolves.
///
/// # Errors
/// When a server fails.
pub async fn serve(
    grpc: TcpListener,
    stats: TcpListener,
    counts: Arc<Counts>,
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

    let receiver = Receiver(counts.clone());
    let grpc_server = tonic::transport::Server::builder()
        .add_service(
            TraceServiceServer::new(receiver.clone()).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(LogsServiceServer::new(receiver).max_decoding_message_size(MAX_REQUEST_BYTES))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc),
            until(stop_rx.clone()),
        );
    let app = axum::Router::new().route(
        "/stats",
        get(move || {
            let counts = counts.clone();
            async move { Json(counts.to_json()) }
        }),
    );
    let stats_server = axum::serve(stats, app).with_graceful_shutdown(until(stop_rx));
    let (g, s) = tokio::join!(grpc_server, stats_server.into_future());
    g?;
    s?;
    Ok(())
}
