//! What `telemetry::http::ServerLayer` costs per request, and what W3C header propagation costs.
//!
//! Group `server_layer`: one `GET /orders/42` through an axum `Router` (route `/orders/{id}`,
//! handler returning a short string), called in-process with `ServiceExt::oneshot` on a tokio
//! current-thread runtime. Every request carries `traceparent`, `host` and `user-agent` (no
//! `x-request-id`, so the layer creates one, as it does for requests from `ClientLayer`). The
//! request is built outside the timed section.
//!
//! - `bare`: the router alone.
//! - `instrumented_noop`: with `ServerLayer`, nothing global installed (no-op text-map
//!   propagator, no tracing subscriber, no metrics recorder): the cost of the layer itself.
//! - `instrumented_propagator_only`: as above, plus the global propagator set to
//!   `default_propagator()`, so `traceparent` is really parsed.
//! - `instrumented_full`: plus a global `tracing_subscriber::registry()` with
//!   `tracing_opentelemetry::layer()` (configured as `telemetry::init` does: no inactivity,
//!   thread, location or target attributes, `info` filter) feeding an `SdkTracerProvider` with
//!   the SDK's thread-based `BatchSpanProcessor` and an exporter that discards the spans, and
//!   the Prometheus recorder
//!   from `telemetry::metrics::local_recorder()` installed as the global `metrics` recorder.
//!
//! The globals can only be installed once, so the cases run in that order, each installing
//! what it adds. After `instrumented_full` the bench checks (on stderr) that every request was
//! exported as a span, so a full export queue cannot make the figure look better than it is.
//!
//! Group `propagation`: `extract_http` / `inject_http` of `traceparent` + `tracestate` +
//! `baggage` with `default_propagator()` (strict Trace Context, then strict Baggage) and the
//! crate's `HeaderExtractor` / `HeaderInjector`, called directly (not through the global).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{BatchSize, BenchmarkGroup, Criterion, criterion_group, criterion_main};
use http::header::{HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use telemetry::http::{ServerLayer, X_REQUEST_ID, X_TRACE_ID};
use telemetry::metrics::{HTTP_SERVER_REQUEST_DURATION, MetricsHandle};
use telemetry::propagation::{HeaderExtractor, HeaderInjector, default_propagator};
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
const BAGGAGE: &str = "userId=alice,serverNode=DF%2028,isProduction=false";

/// A span exporter that drops every batch, counting the spans so the bench can check that
/// none were lost before reaching it.
#[derive(Debug, Clone, Default)]
struct DiscardingExporter {
    spans: Arc<AtomicU64>,
}

impl SpanExporter for DiscardingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.spans.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

async fn order() -> &'static str {
    "order 42"
}

fn router() -> Router {
    Router::new().route("/orders/{id}", get(order))
}

fn request() -> Request<Body> {
    Request::builder()
        .method(Method::GET)
        .uri("/orders/42")
        .header(HOST, "orders.internal:8080")
        .header(USER_AGENT, "orders-client/1.0")
        .header("traceparent", TRACEPARENT)
        .body(Body::empty())
        .expect("a valid request")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

/// Sends one request outside the measurement and returns the response headers.
fn probe(rt: &Runtime, app: &Router) -> HeaderMap {
    let response = rt
        .block_on(app.clone().oneshot(request()))
        .expect("the router is infallible");
    assert_eq!(response.status(), StatusCode::OK);
    response.headers().clone()
}

fn bench_requests(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    rt: &Runtime,
    app: &Router,
) {
    group.bench_function(name, |b| {
        b.iter_batched(
            request,
            |req| rt.block_on(app.clone().oneshot(req)),
            BatchSize::SmallInput,
        )
    });
}

/// What `instrumented_full` installs; kept alive until the end of the group.
struct FullPipeline {
    provider: SdkTracerProvider,
    exported_spans: Arc<AtomicU64>,
    metrics: MetricsHandle,
}

/// Installs the global tracing subscriber (OpenTelemetry layer, batch processor, discarding
/// exporter) and the global Prometheus recorder. Once per process.
fn install_full_pipeline() -> FullPipeline {
    let exporter = DiscardingExporter::default();
    let exported_spans = exporter.spans.clone();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("telemetry-bench");
    tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_location(false)
                .with_target(false)
                .with_filter(EnvFilter::new("info")),
        )
        .try_init()
        .expect("no global tracing subscriber yet");

    let (recorder, handle) = telemetry::metrics::local_recorder();
    metrics::set_global_recorder(recorder).expect("no global metrics recorder yet");

    FullPipeline {
        provider,
        exported_spans,
        metrics: handle,
    }
}

/// Number of requests the server-duration histogram has seen, from the Prometheus text.
fn recorded_requests(metrics: &MetricsHandle) -> u64 {
    let count_series = format!("{HTTP_SERVER_REQUEST_DURATION}_count");
    metrics
        .render()
        .lines()
        .filter(|line| line.starts_with(&count_series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn server_layer(c: &mut Criterion) {
    let rt = runtime();
    let bare = router();
    let instrumented = router().layer(ServerLayer::new());

    let mut group = c.benchmark_group("server_layer");

    assert!(probe(&rt, &bare).get(&X_REQUEST_ID).is_none());
    bench_requests(&mut group, "bare", &rt, &bare);

    let headers = probe(&rt, &instrumented);
    assert!(headers.get(&X_REQUEST_ID).is_some());
    assert!(
        headers.get(&X_TRACE_ID).is_none(),
        "no tracing pipeline yet"
    );
    bench_requests(&mut group, "instrumented_noop", &rt, &instrumented);

    opentelemetry::global::set_text_map_propagator(default_propagator());
    probe(&rt, &instrumented);
    bench_requests(
        &mut group,
        "instrumented_propagator_only",
        &rt,
        &instrumented,
    );

    let pipeline = install_full_pipeline();
    // A new layer: a ServerLayer keeps the metric handles it got at its first request, and
    // the one above got them before any recorder was installed.
    let instrumented = router().layer(ServerLayer::new());
    let headers = probe(&rt, &instrumented);
    assert_eq!(
        headers.get(&X_TRACE_ID),
        Some(&HeaderValue::from_static(TRACE_ID)),
        "the request must join the caller's trace"
    );
    bench_requests(&mut group, "instrumented_full", &rt, &instrumented);
    group.finish();

    pipeline
        .provider
        .force_flush()
        .expect("the discarding exporter cannot fail");
    let requests = recorded_requests(&pipeline.metrics);
    let spans = pipeline.exported_spans.load(Ordering::Relaxed);
    eprintln!(
        "instrumented_full: {spans} spans exported for {requests} requests recorded in \
         {HTTP_SERVER_REQUEST_DURATION} ({} lost)",
        requests.saturating_sub(spans)
    );
    assert!(requests > 0, "the metrics recorder saw no request");
    let _ = pipeline.provider.shutdown();
    pipeline.metrics.stop_upkeep();
}

fn propagation(c: &mut Criterion) {
    let propagator = default_propagator();
    let mut incoming = HeaderMap::new();
    incoming.insert("traceparent", HeaderValue::from_static(TRACEPARENT));
    incoming.insert("tracestate", HeaderValue::from_static(TRACESTATE));
    incoming.insert("baggage", HeaderValue::from_static(BAGGAGE));

    let cx = propagator.extract_with_context(&Context::new(), &HeaderExtractor(&incoming));
    assert_eq!(
        cx.span().span_context().trace_id().to_string(),
        TRACE_ID,
        "traceparent must be accepted"
    );
    assert_eq!(cx.span().span_context().trace_state().header(), TRACESTATE);
    assert_eq!(
        cx.baggage().len(),
        3,
        "all baggage members must be accepted"
    );
    let mut outgoing = HeaderMap::new();
    propagator.inject_context(&cx, &mut HeaderInjector(&mut outgoing));
    assert_eq!(outgoing["traceparent"], TRACEPARENT);
    assert_eq!(outgoing["tracestate"], TRACESTATE);
    assert!(outgoing.contains_key("baggage"));

    let mut group = c.benchmark_group("propagation");
    group.bench_function("extract_http", |b| {
        b.iter(|| {
            propagator.extract_with_context(&Context::new(), &HeaderExtractor(black_box(&incoming)))
        })
    });
    group.bench_function("inject_http", |b| {
        b.iter(|| {
            let mut headers = HeaderMap::new();
            propagator.inject_context(black_box(&cx), &mut HeaderInjector(&mut headers));
            headers
        })
    });
    group.finish();
}

criterion_group!(benches, server_layer, propagation);
criterion_main!(benches);
