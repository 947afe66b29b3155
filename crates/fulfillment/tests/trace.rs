//! One order, one trace: the worker's spans hang from the CONSUMER span, which continues the
//! PRODUCER span's trace, and the status report carries the trace on to orders.
//!
//! Its own test binary because it initialises telemetry (global tracer, subscriber, recorder),
//! exporting to an in-process OTLP collector.

mod support;

use std::time::Duration;

use fake_collector::{FakeCollector, Span, SpanKind, children, find};
use support::{FakeOrders, Options, eventually, new_id, start_service};

fn only<'a>(spans: &'a [Span], parent: &Span, name: &str) -> &'a Span {
    let found: Vec<&Span> = children(spans, parent)
        .into_iter()
        .filter(|s| s.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {name:?} child of {:?} expected; children: {:?}",
        parent.name,
        children(spans, parent)
            .iter()
            .map(|s| &s.name)
            .collect::<Vec<_>>()
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_is_processed_inside_the_producers_trace_and_reported_within_it() {
    let collector = FakeCollector::start().await;
    let mut config = telemetry::TelemetryConfig::new("fulfillment");
    config.otlp_endpoint = Some(collector.grpc_endpoint());
    config.scheduled_delay = Duration::from_millis(50);
    config.export_logs = false;
    let guard = telemetry::init(config).expect("telemetry init");

    let orders = FakeOrders::start_on("127.0.0.1:0".parse().unwrap(), true).await;
    let service = start_service(Options::new(orders.url())).await;
    let order_id = new_id();
    service
        .publish_order("m-traced", &order_id, "u-traced")
        .await;
    eventually(
        "orders to hear 'fulfilled'",
        Duration::from_secs(20),
        || async { orders.accepted(&order_id, "fulfilled") == 1 },
    )
    .await;

    let spans = collector
        .wait_for_spans(
            |s| {
                find(s, "PUT /orders/{id}/status").is_some()
                    && find(s, "process orders.placed").is_some()
            },
            Duration::from_secs(10),
        )
        .await;

    let producer = find(&spans, "publish orders.placed").expect("PRODUCER span");
    assert_eq!(producer.kind, SpanKind::Producer);
    let consumer = only(&spans, producer, "process orders.placed");
    assert_eq!(consumer.kind, SpanKind::Consumer);

    let payment = only(&spans, consumer, "payment");
    assert_eq!(payment.kind, SpanKind::Internal);
    let shipment = only(&spans, consumer, "shipment");
    assert_eq!(shipment.kind, SpanKind::Internal);
    let insert = only(&spans, shipment, "INSERT shipments");
    assert_eq!(insert.kind, SpanKind::Client);
    assert_eq!(insert.attr_str("db.system.name").as_deref(), Some("sqlite"));

    // The status report: a CLIENT span under the CONSUMER span, continued by orders' SERVER
    // span (the traceparent went over the wire).
    let put = only(&spans, consumer, "PUT");
    assert_eq!(put.kind, SpanKind::Client);
    let server = only(&spans, put, "PUT /orders/{id}/status");
    assert_eq!(server.kind, SpanKind::Server);
    let report = &orders.reports()[0];
    let traceparent = report.traceparent.as_deref().expect("traceparent sent");
    assert!(traceparent.contains(&producer.trace_id), "{traceparent}");

    // Nothing of this order's processing started a trace of its own.
    let roots: Vec<&str> = spans
        .iter()
        .filter(|s| s.is_root())
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(roots, ["publish orders.placed"], "{roots:?}");

    service.stop().await;
    guard.shutdown().await.expect("flush");
}
