//! One order is one trace: the SERVER span of `POST /orders`, a database CLIENT span for every
//! statement of its transaction, and — published later by the outbox relay, from another task —
//! the PRODUCER span `publish orders.placed`, a child of the request's span through the trace
//! context stored in the outbox row. Exported over OTLP to an in-process collector.
//!
//! This binary initialises telemetry (global subscriber and recorder): one test only.

mod support;

use std::time::Duration;

use fake_collector::{FakeCollector, Span, SpanKind, by_trace};
use http::StatusCode;
use support::{Options, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_and_the_publish_of_its_event_are_one_trace() {
    let collector = FakeCollector::start().await;
    let mut config = telemetry::TelemetryConfig::new("orders");
    config.otlp_endpoint = Some(collector.grpc_endpoint());
    config.scheduled_delay = Duration::from_millis(50);
    let guard = telemetry::init(config).expect("telemetry");

    let service = start(Options {
        metrics: guard.metrics().cloned(),
        ..Options::default()
    })
    .await;
    let placed = service.post_order("u-trace", &[("sku-2", 1)]).await;
    assert_eq!(placed.status, StatusCode::CREATED);
    let trace_id = placed.headers["x-trace-id"].to_str().unwrap().to_owned();

    let spans = collector
        .wait_for_spans(
            |spans| {
                by_trace(spans, &trace_id)
                    .iter()
                    .any(|s| s.name == "publish orders.placed")
            },
            Duration::from_secs(20),
        )
        .await;
    let trace: Vec<&Span> = by_trace(&spans, &trace_id);
    let one = |name: &str| -> &Span {
        let found: Vec<&&Span> = trace.iter().filter(|s| s.name == name).collect();
        assert_eq!(
            found.len(),
            1,
            "one {name:?} span in the trace: {:#?}",
            trace.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        found[0]
    };

    let server = one("POST /orders");
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(server.service_name, "orders");

    for (name, table) in [
        ("SELECT inventory", "inventory"),
        ("UPDATE inventory", "inventory"),
        ("INSERT orders", "orders"),
        ("INSERT outbox", "outbox"),
    ] {
        let span = one(name);
        assert_eq!(span.kind, SpanKind::Client, "{name}");
        assert_eq!(
            span.parent_span_id, server.span_id,
            "{name} is a child of the request"
        );
        assert_eq!(
            span.attr_str("db.system.name").as_deref(),
            Some("sqlite"),
            "{name}"
        );
        assert_eq!(
            span.attr_str("db.collection.name").as_deref(),
            Some(table),
            "{name}"
        );
        let query = span.attr_str("db.query.text").unwrap_or_default();
        assert!(
            query.contains("$1") && !query.contains("u-trace") && !query.contains("sku-2"),
            "{name}: parameterised text only: {query}"
        );
    }

    let publish = one("publish orders.placed");
    assert_eq!(publish.kind, SpanKind::Producer);
    assert_eq!(
        publish.parent_span_id, server.span_id,
        "the relay's publish continues the request's trace from the outbox row"
    );

    service.stop().await;
    guard.shutdown().await.expect("flush");
}
