//! The per-request pieces of the instrumentation, one at a time (the whole server layer is in
//! `server_layer.rs`).
//!
//! Group `metrics`: one `http_server_request_duration_seconds` record with the four RED labels
//! into the Prometheus recorder of `telemetry::metrics::local_recorder()`, the series already
//! existing (as it does after a service's first request on a route):
//! - `record_red_labels`: as `ServerLayer` recorded it before it kept its handles (it now
//!   looks each label set up once) — method, status code and `error_type` are `&'static str`
//!   labels, the route an owned string (axum's matched path), the label vector moved into the
//!   key;
//! - `record_cached_handle`: what `ServerLayer` does on every request now — the handle of
//!   the label set was looked up once, and the record is the histogram's own work;
//! - `record_red_labels_cloned`: as it recorded it before (status code formatted into a
//!   `String`, owned empty `error_type`, labels cloned from an array), for comparison.
//!
//! Group `logging`, through a `fmt` layer writing to `io::sink()`:
//! - `json_line`: one `info!` with two fields inside an OpenTelemetry context, formatted by
//!   `JsonFormat` (trace and span ids included);
//! - `span_no_span_fields` / `span_default_fields`: creating and closing a span with the eight
//!   fields of a SERVER span, with the JSON layer as `telemetry::init` installs it
//!   (`NoSpanFields`) and with the `fmt` layer's default field formatter (what it did before):
//!   the cost the JSON layer adds to every span.

use std::borrow::Cow;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId};
use telemetry::logging::{JsonFormat, NoSpanFields};
use telemetry::metrics::HTTP_SERVER_REQUEST_DURATION;
use tracing_subscriber::layer::SubscriberExt;

fn metric_record(c: &mut Criterion) {
    let (recorder, handle) = telemetry::metrics::local_recorder();
    metrics::with_local_recorder(&recorder, || {
        let mut group = c.benchmark_group("metrics");
        group.bench_function("record_red_labels", |b| {
            b.iter(|| {
                let route: Cow<'static, str> = Cow::Owned(black_box("/orders/{id}").to_owned());
                let labels = vec![
                    metrics::Label::from_static_parts("http_request_method", "GET"),
                    metrics::Label::new("http_route", route),
                    metrics::Label::from_static_parts("http_response_status_code", "200"),
                    metrics::Label::from_static_parts("error_type", ""),
                ];
                metrics::histogram!(HTTP_SERVER_REQUEST_DURATION, labels).record(black_box(0.0042));
            })
        });
        // What `ServerLayer` does per request: its handle for this label set was looked up once
        // (the first request on the route); recording is the histogram's own work.
        let cached = metrics::histogram!(
            HTTP_SERVER_REQUEST_DURATION,
            "http_request_method" => "GET",
            "http_route" => "/orders/{id}",
            "http_response_status_code" => "200",
            "error_type" => "",
        );
        group.bench_function("record_cached_handle", |b| {
            b.iter(|| cached.record(black_box(0.0042)))
        });
        group.bench_function("record_red_labels_cloned", |b| {
            b.iter(|| {
                let route: Cow<'static, str> = Cow::Owned(black_box("/orders/{id}").to_owned());
                let status = black_box(200u16).to_string();
                let labels = [
                    metrics::Label::from_static_parts("http_request_method", "GET"),
                    metrics::Label::new("http_route", route),
                    metrics::Label::new("http_response_status_code", status),
                    metrics::Label::new("error_type", String::new()),
                ];
                metrics::histogram!(HTTP_SERVER_REQUEST_DURATION, labels.iter())
                    .record(black_box(0.0042));
            })
        });
        group.finish();
    });
    let text = handle.render();
    assert!(
        text.contains("http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/orders/{id}\",http_response_status_code=\"200\",error_type=\"\"}"),
        "the three cases record into one series:\n{text}"
    );
    handle.stop_upkeep();
}

fn server_span() -> tracing::Span {
    tracing::info_span!(
        target: "telemetry::http",
        "HTTP request",
        otel.name = "GET /orders/{id}",
        otel.kind = "server",
        http.request.method = "GET",
        http.route = "/orders/{id}",
        url.path = "/orders/42",
        url.scheme = "http",
        server.address = "orders.internal",
        server.port = 8080_i64,
        network.protocol.version = "1.1",
        user_agent.original = "orders-client/1.0",
    )
}

fn logging(c: &mut Criterion) {
    let mut group = c.benchmark_group("logging");

    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .fmt_fields(NoSpanFields)
            .event_format(JsonFormat::new("bench"))
            .with_writer(std::io::sink),
    );
    tracing::subscriber::with_default(subscriber, || {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            Default::default(),
        );
        let _cx = opentelemetry::Context::new()
            .with_remote_span_context(sc)
            .attach();
        group.bench_function("json_line", |b| {
            b.iter(|| {
                tracing::info!(
                    order_id = black_box("o-17"),
                    items = black_box(2_u64),
                    "order accepted"
                )
            })
        });
        group.bench_function("span_no_span_fields", |b| b.iter(server_span));
    });

    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .event_format(JsonFormat::new("bench"))
            .with_writer(std::io::sink),
    );
    tracing::subscriber::with_default(subscriber, || {
        group.bench_function("span_default_fields", |b| b.iter(server_span));
    });
    group.finish();
}

criterion_group!(benches, metric_record, logging);
criterion_main!(benches);
