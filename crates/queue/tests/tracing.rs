//! PRODUCER and CONSUMER spans exported over OTLP to an in-process collector: the producer is a
//! child of the context in the outbox-style header map, the consumer is a child of (and links
//! to) the producer, the handler's spans and logs are inside the consumer span, and the
//! messaging metrics are recorded. Own test binary: it installs the global telemetry.
//!
//! Runs against SQLite always, and against NATS JetStream too when `TEST_NATS_URL` is set.

use std::time::Duration;

use fake_collector::{FakeCollector, LogRecord, Span, SpanKind, StatusCode, find};
use queue::{Outcome, ProcessError, Queue, QueueConfig};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// What one scenario produced, to check against the exported spans.
struct Run {
    subject: String,
    system: &'static str,
    /// `traceparent` the consumer saw on the first message.
    traceparent: String,
    /// `traceparent` of the outer span, as stored in the "outbox row".
    outer_traceparent: String,
}

async fn scenario(queue: &Queue, label: &str) -> Run {
    let subject = queue.config().subject.clone();
    // The request that wrote the outbox row.
    let outer = tracing::info_span!("outer request", otel.name = label, otel.kind = "server");
    let parent_headers = telemetry::propagation::inject_map(&outer.context());
    let outer_traceparent = parent_headers["traceparent"].clone();
    drop(outer);

    // The relay publishes outside any span, with the stored headers.
    queue
        .publish(&subject, &format!("{label}-ok"), b"hello", &parent_headers)
        .await
        .expect("publish");
    queue
        .publish(&subject, &format!("{label}-bad"), b"bad", &parent_headers)
        .await
        .expect("publish");

    let mut deliveries = queue
        .receive(2, Duration::from_secs(5))
        .await
        .expect("receive");
    assert_eq!(deliveries.len(), 2);
    let bad = deliveries.pop().unwrap();
    let good = deliveries.pop().unwrap();
    let traceparent = good.message().headers["traceparent"].clone();

    let outcome = queue
        .process(good, Duration::ZERO, |message| async move {
            tracing::info!(target: "handler", message_id = %message.message_id, "handling the order");
            async {}
                .instrument(tracing::info_span!("handler work"))
                .await;
            Ok(())
        })
        .await
        .expect("process");
    assert_eq!(outcome, Outcome::Acked);
    let outcome = queue
        .process(bad, Duration::ZERO, |_| async {
            Err(ProcessError::Fatal("unknown sku".into()))
        })
        .await
        .expect("process");
    assert_eq!(outcome, Outcome::DeadLettered);

    Run {
        subject,
        system: queue.system(),
        traceparent,
        outer_traceparent,
    }
}

fn attr(span: &Span, key: &str) -> String {
    span.attr_str(key).unwrap_or_else(|| {
        panic!(
            "{} has no attribute {key}: {:?}",
            span.name, span.attributes
        )
    })
}

fn check(run: &Run, label: &str, spans: &[Span], logs: &[LogRecord]) {
    let outer = find(spans, label).unwrap_or_else(|| panic!("no span {label}"));
    let publish_name = format!("publish {}", run.subject);
    let process_name = format!("process {}", run.subject);
    let in_trace = |name: &str| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| s.name == name && s.trace_id == outer.trace_id)
            .collect()
    };

    let producers = in_trace(&publish_name);
    assert_eq!(producers.len(), 2, "{label}: producer spans {producers:#?}");
    for producer in &producers {
        assert_eq!(producer.kind, SpanKind::Producer);
        assert_eq!(
            producer.parent_span_id, outer.span_id,
            "{label}: producer parent"
        );
        assert_eq!(attr(producer, "messaging.system"), run.system);
        assert_eq!(attr(producer, "messaging.destination.name"), run.subject);
        assert_eq!(attr(producer, "messaging.operation.type"), "send");
        assert_eq!(attr(producer, "messaging.operation.name"), "publish");
        assert_eq!(producer.status, StatusCode::Unset);
    }
    let producer_ok = producers
        .iter()
        .find(|s| attr(s, "messaging.message.id") == format!("{label}-ok"))
        .expect("producer of the good message");
    assert_eq!(
        producer_ok
            .attr("messaging.message.body.size")
            .and_then(|v| v.as_i64()),
        Some(5)
    );
    // The message carries the PRODUCER span's context, not the outer one.
    assert_eq!(
        run.traceparent,
        format!("00-{}-{}-01", producer_ok.trace_id, producer_ok.span_id),
        "{label}: message traceparent (outer was {})",
        run.outer_traceparent
    );

    let consumers = in_trace(&process_name);
    assert_eq!(consumers.len(), 2, "{label}: consumer spans {consumers:#?}");
    for consumer in &consumers {
        assert_eq!(consumer.kind, SpanKind::Consumer);
        let producer = producers
            .iter()
            .find(|p| p.span_id == consumer.parent_span_id)
            .unwrap_or_else(|| {
                panic!("{label}: consumer's parent is not a producer: {consumer:#?}")
            });
        assert_eq!(
            attr(producer, "messaging.message.id"),
            attr(consumer, "messaging.message.id")
        );
        assert_eq!(consumer.links.len(), 1, "{label}: {:?}", consumer.links);
        assert_eq!(consumer.links[0].trace_id, producer.trace_id);
        assert_eq!(consumer.links[0].span_id, producer.span_id);
        assert_eq!(attr(consumer, "messaging.system"), run.system);
        assert_eq!(attr(consumer, "messaging.destination.name"), run.subject);
        assert_eq!(attr(consumer, "messaging.operation.type"), "process");
        assert_eq!(attr(consumer, "messaging.operation.name"), "process");
        assert_eq!(
            attr(consumer, "messaging.consumer.group.name"),
            "fulfillment"
        );
        assert_eq!(attr(consumer, "faultline.delivery_count"), "1");
    }
    let consumer_ok = consumers
        .iter()
        .find(|s| attr(s, "messaging.message.id") == format!("{label}-ok"))
        .unwrap();
    assert_eq!(consumer_ok.parent_span_id, producer_ok.span_id);
    assert_eq!(attr(consumer_ok, "faultline.outcome"), "acked");
    assert_eq!(consumer_ok.status, StatusCode::Unset);
    let consumer_bad = consumers
        .iter()
        .find(|s| attr(s, "messaging.message.id") == format!("{label}-bad"))
        .unwrap();
    assert_eq!(consumer_bad.status, StatusCode::Error);
    assert_eq!(attr(consumer_bad, "error.type"), "fatal");
    assert_eq!(attr(consumer_bad, "faultline.outcome"), "dead_lettered");

    // The handler ran inside the consumer span.
    let work = spans
        .iter()
        .find(|s| s.name == "handler work" && s.trace_id == outer.trace_id)
        .unwrap_or_else(|| panic!("{label}: no handler span in the trace"));
    assert_eq!(work.parent_span_id, consumer_ok.span_id);
    let log = logs
        .iter()
        .find(|l| l.body.contains("handling the order") && l.trace_id == outer.trace_id)
        .unwrap_or_else(|| panic!("{label}: no handler log in the trace"));
    assert_eq!(log.span_id, consumer_ok.span_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_consumer_spans_form_one_trace() {
    let collector = FakeCollector::start().await;
    let mut config = telemetry::TelemetryConfig::new("queue-test");
    config.otlp_endpoint = Some(collector.grpc_endpoint());
    config.scheduled_delay = Duration::from_millis(50);
    let guard = telemetry::init_with_writer(config, std::io::sink).expect("telemetry init");

    let dir = tempfile::tempdir().unwrap();
    let sqlite = Queue::connect(QueueConfig::new(format!(
        "sqlite://{}",
        dir.path().join("queue.db").display()
    )))
    .await
    .expect("sqlite queue");
    let mut runs = vec![("sqlite outer", scenario(&sqlite, "sqlite outer").await)];

    let nats = nats_config();
    if let Some(config) = &nats {
        let queue = Queue::connect(config.clone()).await.expect("nats queue");
        runs.push(("nats outer", scenario(&queue, "nats outer").await));
    }

    let metrics = guard.metrics().expect("metrics recorder").render();
    for (_, run) in &runs {
        for needle in [
            format!(
                "messaging_client_sent_messages_total{{messaging_system=\"{}\",messaging_destination_name=\"{}\",error_type=\"\"}} 2",
                run.system, run.subject
            ),
            format!(
                "messaging_client_consumed_messages_total{{messaging_system=\"{}\",messaging_destination_name=\"{}\"}} 2",
                run.system, run.subject
            ),
            format!(
                "messaging_process_duration_seconds_count{{messaging_system=\"{}\",messaging_destination_name=\"{}\",error_type=\"fatal\"}} 1",
                run.system, run.subject
            ),
            format!(
                "messaging_process_duration_seconds_bucket{{messaging_system=\"{}\",messaging_destination_name=\"{}\",error_type=\"\",le=\"0.005\"}}",
                run.system, run.subject
            ),
        ] {
            assert!(metrics.contains(&needle), "missing {needle} in\n{metrics}");
        }
    }

    guard.shutdown().await.expect("telemetry shutdown");
    let spans = collector.spans();
    let logs = collector.logs();
    for (label, run) in &runs {
        check(run, label, &spans, &logs);
    }

    if let Some(config) = nats {
        let client = async_nats::connect(config.url.as_str()).await.unwrap();
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&config.stream)
            .await;
    }
}

/// A unique JetStream configuration when `TEST_NATS_URL` is set (see tests/nats.rs).
fn nats_config() -> Option<QueueConfig> {
    let Ok(url) = std::env::var("TEST_NATS_URL") else {
        if std::env::var_os("FAULTLINE_REQUIRE_EXTERNAL_TESTS").is_some() {
            panic!("FAULTLINE_REQUIRE_EXTERNAL_TESTS is set but TEST_NATS_URL is not");
        }
        eprintln!("note: TEST_NATS_URL is not set; checking the SQLite backend only");
        return None;
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut config = QueueConfig::new(url);
    config.stream = format!("TEST_{id}");
    config.subject = format!("t{id}.placed");
    Some(config)
}
