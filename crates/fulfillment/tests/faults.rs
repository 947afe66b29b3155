//! Faults injected into the running service through its admin API (real HTTP, bearer token),
//! each asserted by its effect in the telemetry — spans at an in-process OTLP collector and
//! `/metrics` — and then cleared, after which behaviour is normal again.
//!
//! One test binary with one telemetry setup (a global tracer, subscriber and recorder,
//! exporting to one fake collector) on one shared runtime. The tests take turns: the metrics
//! are process-wide (`fulfillment_queue_pending_messages` is one gauge), so each test reads
//! them while its own service is the only one running, and asserts on differences.

mod support;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use fake_collector::{FakeCollector, Span, SpanKind, StatusCode, children};
use serde_json::Value;
use support::{FakeOrders, Options, Service, eventually, new_id, start_service};

const TOKEN: &str = "test-admin-token";
const WAIT: Duration = Duration::from_secs(20);

struct Env {
    runtime: tokio::runtime::Runtime,
    collector: FakeCollector,
    metrics: telemetry::MetricsHandle,
    _telemetry: telemetry::TelemetryGuard,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let (collector, guard) = runtime.block_on(async {
            let collector = FakeCollector::start().await;
            let mut config = telemetry::TelemetryConfig::new("fulfillment");
            config.otlp_endpoint = Some(collector.grpc_endpoint());
            config.scheduled_delay = Duration::from_millis(50);
            let guard = telemetry::init_with_writer(config, std::io::sink).expect("telemetry init");
            (collector, guard)
        });
        let metrics = guard.metrics().expect("the recorder is installed").clone();
        Env {
            runtime,
            collector,
            metrics,
            _telemetry: guard,
        }
    })
}

/// Runs one test on the shared runtime, one test at a time.
fn run(test: impl Future<Output = ()>) {
    static TURN: Mutex<()> = Mutex::new(());
    let env = env();
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    env.collector.clear();
    env.runtime.block_on(test);
}

/// Cancels a service's shutdown token when dropped: a failed test's service stops too, so it
/// cannot disturb the next test's metrics.
struct StopOnDrop(fulfillment::CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The service with the admin token and its metrics on `/metrics`.
async fn service(mut options: Options) -> (Service, StopOnDrop) {
    options.metrics = Some(env().metrics.clone());
    options.admin_token = Some(TOKEN.to_owned());
    let service = start_service(options).await;
    let guard = StopOnDrop(service.shutdown.clone());
    (service, guard)
}

/// `PUT /admin/faults` with the token; panics unless 201. Returns the fault's id.
async fn set_fault(service: &Service, spec: &str) -> String {
    let (status, fault) = service
        .admin_send("PUT", "/admin/faults", Some(TOKEN), Some(spec))
        .await;
    assert_eq!(status, 201, "{spec}: {fault}");
    fault["id"].as_str().expect("an id").to_owned()
}

/// `DELETE /admin/faults/{id}` with the token; panics unless 200.
async fn clear_fault(service: &Service, id: &str) {
    let (status, body) = service
        .admin_send("DELETE", &format!("/admin/faults/{id}"), Some(TOKEN), None)
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The faults `GET /admin/faults` lists.
async fn listed_faults(service: &Service) -> Vec<Value> {
    let (status, body) = service.admin_send("GET", "/admin/faults", None, None).await;
    assert_eq!(status, 200, "{body}");
    body["faults"].as_array().cloned().expect("a faults array")
}

/// `/metrics` over HTTP.
async fn scrape(service: &Service) -> String {
    let (status, body) = service.admin_get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The sum of the samples of `name` whose labels contain every one of `labels`
/// (`key="value"`); 0 when there are none.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let wanted = metric == name
                && labels
                    .iter()
                    .all(|l| label_text.split(',').any(|have| have == *l));
            wanted.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// The labels of `messaging_process_duration_seconds` for a successful processing.
const PROCESSED_OK: &[&str] = &[
    "messaging_destination_name=\"orders.placed\"",
    "error_type=\"\"",
];

/// `(count, sum)` of the successful processing durations.
fn process_durations(text: &str) -> (f64, f64) {
    (
        metric(
            text,
            "messaging_process_duration_seconds_count",
            PROCESSED_OK,
        ),
        metric(text, "messaging_process_duration_seconds_sum", PROCESSED_OK),
    )
}

/// The CONSUMER spans of message `message_id`, in delivery order.
fn consumer_spans<'a>(spans: &'a [Span], message_id: &str) -> Vec<&'a Span> {
    let mut found: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.name == "process orders.placed"
                && s.attr_str("messaging.message.id").as_deref() == Some(message_id)
        })
        .collect();
    found.sort_by_key(|s| s.attr("faultline.delivery_count").and_then(|v| v.as_i64()));
    found
}

/// The single child of `parent` named `name`.
fn child<'a>(spans: &'a [Span], parent: &Span, name: &str) -> &'a Span {
    let found: Vec<&Span> = children(spans, parent)
        .into_iter()
        .filter(|s| s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one {name:?} under {:?}", parent.name);
    found[0]
}

/// Publishes one order per id (message id `m-{order}`, user `user`).
async fn publish_orders(service: &Service, order_ids: &[String], user: &str) {
    for order_id in order_ids {
        service
            .publish_order(&format!("m-{order_id}"), order_id, user)
            .await;
    }
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|_| new_id()).collect()
}

async fn all_reported(orders: &FakeOrders, order_ids: &[String], status: &str) {
    eventually(
        &format!("every order to be reported {status}"),
        WAIT,
        || async { order_ids.iter().all(|id| orders.accepted(id, status) >= 1) },
    )
    .await;
}

/// Waits until every message of `order_ids` has `deliveries` CONSUMER spans at the collector.
async fn wait_for_consumers(order_ids: &[String], deliveries: usize) -> Vec<Span> {
    env()
        .collector
        .wait_for_spans(
            |spans| {
                order_ids
                    .iter()
                    .all(|id| consumer_spans(spans, &format!("m-{id}")).len() >= deliveries)
            },
            WAIT,
        )
        .await
}

#[test]
fn consumer_stall_builds_a_backlog_that_drains_once_cleared() {
    run(async {
        let orders = FakeOrders::start().await;
        let (service, _guard) = service(Options::new(orders.url())).await;
        // The pool is consuming.
        let warm_up = ids(1);
        publish_orders(&service, &warm_up, "u-stall").await;
        all_reported(&orders, &warm_up, "fulfilled").await;

        let id = set_fault(&service, r#"{"kind":"queue.consumer_stall"}"#).await;
        // A receive call already waiting when the fault arrived may still return a message:
        // let it run out (1 s) before publishing.
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let stalled = ids(6);
        publish_orders(&service, &stalled, "u-stall").await;

        eventually("the pending gauge to show the backlog", WAIT, || async {
            metric(
                &scrape(&service).await,
                "fulfillment_queue_pending_messages",
                &[],
            ) == 6.0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let spans = env().collector.spans();
        for order_id in &stalled {
            assert!(
                consumer_spans(&spans, &format!("m-{order_id}")).is_empty(),
                "a stalled consumer processed {order_id}"
            );
            assert_eq!(orders.accepted(order_id, "fulfilled"), 0);
        }
        assert_eq!(service.queue.pending().await.unwrap(), 6);
        let listed = listed_faults(&service).await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["occurrences"], 1, "one stall, however long");

        clear_fault(&service, &id).await;
        all_reported(&orders, &stalled, "fulfilled").await;
        service.drained().await;
        let spans = wait_for_consumers(&stalled, 1).await;
        for order_id in &stalled {
            let consumer = consumer_spans(&spans, &format!("m-{order_id}"));
            assert_eq!(consumer.len(), 1, "{order_id}");
            assert_ne!(consumer[0].status, StatusCode::Error);
        }
        eventually("the pending gauge to return to 0", WAIT, || async {
            let text = scrape(&service).await;
            text.lines()
                .any(|l| l == "fulfillment_queue_pending_messages 0")
        })
        .await;
        service.stop().await;
    });
}

#[test]
fn slow_consumer_slows_each_message_inside_its_consumer_span_until_cleared() {
    const MS: u64 = 700;
    let slow = Duration::from_millis(MS);
    run(async {
        let orders = FakeOrders::start().await;
        let (service, _guard) = service(Options::new(orders.url())).await;
        let before = process_durations(&scrape(&service).await);

        let id = set_fault(
            &service,
            &format!(r#"{{"kind":"queue.slow_consumer","ms":{MS}}}"#),
        )
        .await;
        let delayed = ids(4);
        publish_orders(&service, &delayed, "u-slow").await;
        all_reported(&orders, &delayed, "fulfilled").await;
        let spans = wait_for_consumers(&delayed, 1).await;
        for order_id in &delayed {
            let consumer = consumer_spans(&spans, &format!("m-{order_id}"))[0];
            assert_eq!(consumer.kind, SpanKind::Consumer);
            assert!(
                consumer.duration() >= slow,
                "{order_id}: CONSUMER span {:?}",
                consumer.duration()
            );
            let payment = child(&spans, consumer, "payment");
            assert!(
                payment.duration() >= slow,
                "{order_id}: payment {:?}",
                payment.duration()
            );
        }
        let during = process_durations(&scrape(&service).await);
        let (count, sum) = (during.0 - before.0, during.1 - before.1);
        assert_eq!(count, 4.0, "four messages processed");
        assert!(
            sum / count >= slow.as_secs_f64(),
            "mean processing {:.3} s",
            sum / count
        );
        assert_eq!(listed_faults(&service).await[0]["occurrences"], 4);

        clear_fault(&service, &id).await;
        let normal = ids(4);
        publish_orders(&service, &normal, "u-slow").await;
        all_reported(&orders, &normal, "fulfilled").await;
        let spans = wait_for_consumers(&normal, 1).await;
        for order_id in &normal {
            let consumer = consumer_spans(&spans, &format!("m-{order_id}"))[0];
            assert!(
                consumer.duration() < slow,
                "{order_id}: CONSUMER span {:?} after the fault was cleared",
                consumer.duration()
            );
        }
        let after = process_durations(&scrape(&service).await);
        let (count, sum) = (after.0 - during.0, after.1 - during.1);
        assert_eq!(count, 4.0);
        assert!(
            sum / count < slow.as_secs_f64(),
            "mean {:.3} s",
            sum / count
        );
        service.stop().await;
    });
}

#[test]
fn poison_orders_fail_every_delivery_and_are_dead_lettered_while_the_rest_ship() {
    run(async {
        let orders = FakeOrders::start().await;
        let mut options = Options::new(orders.url());
        options.max_deliveries = 3;
        let (service, _guard) = service(options).await;
        let dead_before = metric(&scrape(&service).await, fulfillment::DEAD_LETTERS, &[]);

        let id = set_fault(&service, r#"{"kind":"queue.poison","probability":0.5}"#).await;
        let order_ids = ids(16);
        publish_orders(&service, &order_ids, "u-poison").await;
        eventually("every order to end fulfilled or failed", WAIT, || async {
            order_ids
                .iter()
                .all(|id| orders.accepted(id, "fulfilled") + orders.accepted(id, "failed") == 1)
        })
        .await;
        let failed: HashSet<&String> = order_ids
            .iter()
            .filter(|id| orders.accepted(id, "failed") == 1)
            .collect();
        let shipped = order_ids.len() - failed.len();
        // Half of them, give or take (all or none: 2 in 65,536).
        assert!(
            !failed.is_empty() && shipped > 0,
            "{} poison of {}",
            failed.len(),
            order_ids.len()
        );

        // Each poison order: three deliveries, each failing in its payment step, then the
        // dead letters; the others: one delivery, acked.
        let poison: Vec<String> = failed.iter().map(|s| (*s).clone()).collect();
        let spans = wait_for_consumers(&poison, 3).await;
        for order_id in &order_ids {
            let consumers = consumer_spans(&spans, &format!("m-{order_id}"));
            if failed.contains(order_id) {
                assert_eq!(consumers.len(), 3, "{order_id}: one span per delivery");
                for consumer in &consumers {
                    assert_eq!(consumer.status, StatusCode::Error, "{order_id}");
                    assert_eq!(consumer.attr_str("error.type").as_deref(), Some("retry"));
                    let payment = child(&spans, consumer, "payment");
                    assert_eq!(payment.status, StatusCode::Error);
                    assert_eq!(
                        payment.attr_str("error.type").as_deref(),
                        Some("payment_failed")
                    );
                    assert!(
                        children(&spans, consumer)
                            .iter()
                            .all(|s| s.name != "shipment")
                    );
                }
                assert_eq!(
                    consumers[2].attr_str("faultline.outcome").as_deref(),
                    Some("dead_lettered")
                );
            } else {
                assert_eq!(consumers.len(), 1, "{order_id}: delivered once");
                assert_ne!(consumers[0].status, StatusCode::Error);
                assert_eq!(
                    consumers[0].attr_str("faultline.outcome").as_deref(),
                    Some("acked")
                );
            }
        }
        let poison_trace = &consumer_spans(&spans, &format!("m-{}", poison[0]))[0].trace_id;
        env()
            .collector
            .wait_for_logs(
                |logs| {
                    logs.iter().any(|l| {
                        l.trace_id == *poison_trace
                            && l.severity_number >= 17
                            && l.body.contains("payment failed")
                    })
                },
                WAIT,
            )
            .await;

        let dead_letters = failed.len() as f64;
        eventually("the dead-letter counter to rise", WAIT, || async {
            metric(&scrape(&service).await, fulfillment::DEAD_LETTERS, &[])
                == dead_before + dead_letters
        })
        .await;
        assert_eq!(
            service.queue.dead_letters().await.unwrap(),
            failed.len() as u64
        );
        assert_eq!(service.shipments("u-poison").await.len(), shipped);

        clear_fault(&service, &id).await;
        let healthy = ids(6);
        publish_orders(&service, &healthy, "u-poison").await;
        all_reported(&orders, &healthy, "fulfilled").await;
        service.drained().await;
        let spans = wait_for_consumers(&healthy, 1).await;
        for order_id in &healthy {
            let consumers = consumer_spans(&spans, &format!("m-{order_id}"));
            assert_eq!(consumers.len(), 1);
            assert_ne!(consumers[0].status, StatusCode::Error);
        }
        assert_eq!(
            metric(&scrape(&service).await, fulfillment::DEAD_LETTERS, &[]),
            dead_before + dead_letters,
            "no dead letters once cleared"
        );
        service.stop().await;
    });
}

#[test]
fn dependency_error_on_orders_fails_the_status_report_until_cleared() {
    run(async {
        let orders = FakeOrders::start().await;
        let (service, _guard) = service(Options::new(orders.url())).await;
        let failed_calls = |text: &str| {
            metric(
                text,
                "http_client_request_duration_seconds_count",
                &[
                    "http_request_method=\"PUT\"",
                    "http_response_status_code=\"503\"",
                ],
            )
        };
        let failed_before = failed_calls(&scrape(&service).await);

        let id = set_fault(
            &service,
            r#"{"kind":"dependency.error","target":"orders","status":503}"#,
        )
        .await;
        let order = ids(1);
        publish_orders(&service, &order, "u-deperr").await;
        let spans = wait_for_consumers(&order, 1).await;
        let first = consumer_spans(&spans, &format!("m-{}", order[0]))[0];
        assert_eq!(first.status, StatusCode::Error);
        assert_eq!(
            first.attr_str("faultline.outcome").as_deref(),
            Some("will_retry")
        );
        // The report was tried four times (1 + 3 retries), each CLIENT span failing with 503.
        let puts: Vec<&Span> = children(&spans, first)
            .into_iter()
            .filter(|s| s.name == "PUT")
            .collect();
        assert_eq!(puts.len(), 4, "{puts:?}");
        for put in &puts {
            assert_eq!(put.kind, SpanKind::Client);
            assert_eq!(put.status, StatusCode::Error);
            assert_eq!(put.attr_str("error.type").as_deref(), Some("503"));
            assert_eq!(
                put.attr_str("http.response.status_code").as_deref(),
                Some("503")
            );
        }
        assert!(failed_calls(&scrape(&service).await) - failed_before >= 4.0);
        assert!(
            orders.reports().is_empty(),
            "no call reached orders: {:?}",
            orders.reports()
        );

        clear_fault(&service, &id).await;
        all_reported(&orders, &order, "fulfilled").await;
        service.drained().await;
        let message = format!("m-{}", order[0]);
        let spans = env()
            .collector
            .wait_for_spans(
                |spans| {
                    consumer_spans(spans, &message)
                        .last()
                        .is_some_and(|s| s.status != StatusCode::Error)
                },
                WAIT,
            )
            .await;
        let last = *consumer_spans(&spans, &message).last().unwrap();
        let put = child(&spans, last, "PUT");
        assert_ne!(put.status, StatusCode::Error);
        assert_eq!(
            put.attr_str("http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(orders.reports().len(), 1, "{:?}", orders.reports());
        service.stop().await;
    });
}

#[test]
fn dependency_latency_on_orders_lengthens_the_status_report_client_span() {
    const MS: u64 = 600;
    let slow = Duration::from_millis(MS);
    run(async {
        let orders = FakeOrders::start().await;
        let (service, _guard) = service(Options::new(orders.url())).await;

        let id = set_fault(
            &service,
            &format!(r#"{{"kind":"dependency.latency","target":"orders","ms":{MS}}}"#),
        )
        .await;
        let delayed = ids(2);
        publish_orders(&service, &delayed, "u-deplat").await;
        all_reported(&orders, &delayed, "fulfilled").await;
        let spans = wait_for_consumers(&delayed, 1).await;
        for order_id in &delayed {
            let consumer = consumer_spans(&spans, &format!("m-{order_id}"))[0];
            let put = child(&spans, consumer, "PUT");
            assert_ne!(put.status, StatusCode::Error);
            assert!(
                put.duration() >= slow,
                "{order_id}: PUT {:?}",
                put.duration()
            );
            assert!(consumer.duration() >= slow);
        }

        clear_fault(&service, &id).await;
        let normal = ids(2);
        publish_orders(&service, &normal, "u-deplat").await;
        all_reported(&orders, &normal, "fulfilled").await;
        let spans = wait_for_consumers(&normal, 1).await;
        for order_id in &normal {
            let consumer = consumer_spans(&spans, &format!("m-{order_id}"))[0];
            let put = child(&spans, consumer, "PUT");
            assert!(
                put.duration() < slow,
                "{order_id}: PUT {:?} after the fault was cleared",
                put.duration()
            );
        }
        service.stop().await;
    });
}

#[test]
fn drop_context_on_orders_breaks_the_trace_in_two_until_cleared() {
    run(async {
        let orders = FakeOrders::start_on("127.0.0.1:0".parse().unwrap(), true).await;
        let (service, _guard) = service(Options::new(orders.url())).await;
        let server_span = |spans: &[Span], order_id: &str| -> Option<Span> {
            spans
                .iter()
                .find(|s| {
                    s.name == "PUT /orders/{id}/status"
                        && s.attr_str("url.path").as_deref()
                            == Some(&format!("/orders/{order_id}/status"))
                })
                .cloned()
        };

        let id = set_fault(
            &service,
            r#"{"kind":"telemetry.drop_context","target":"orders"}"#,
        )
        .await;
        let broken = ids(1);
        publish_orders(&service, &broken, "u-ctx").await;
        all_reported(&orders, &broken, "fulfilled").await;
        let report = orders.reports().into_iter().next().unwrap();
        assert_eq!(report.traceparent, None, "the hop dropped the context");
        let spans = env()
            .collector
            .wait_for_spans(
                |s| {
                    !consumer_spans(s, &format!("m-{}", broken[0])).is_empty()
                        && server_span(s, &broken[0]).is_some()
                },
                WAIT,
            )
            .await;
        let consumer = consumer_spans(&spans, &format!("m-{}", broken[0]))[0];
        let put = child(&spans, consumer, "PUT");
        let server = server_span(&spans, &broken[0]).unwrap();
        assert!(server.is_root(), "orders started a trace of its own");
        assert_ne!(server.trace_id, consumer.trace_id);
        assert!(children(&spans, put).is_empty());

        clear_fault(&service, &id).await;
        let joined = ids(1);
        publish_orders(&service, &joined, "u-ctx").await;
        all_reported(&orders, &joined, "fulfilled").await;
        let spans = env()
            .collector
            .wait_for_spans(
                |s| {
                    !consumer_spans(s, &format!("m-{}", joined[0])).is_empty()
                        && server_span(s, &joined[0]).is_some()
                },
                WAIT,
            )
            .await;
        let consumer = consumer_spans(&spans, &format!("m-{}", joined[0]))[0];
        let put = child(&spans, consumer, "PUT");
        let server = server_span(&spans, &joined[0]).unwrap();
        assert_eq!(server.trace_id, consumer.trace_id, "one trace again");
        assert_eq!(server.parent_span_id, put.span_id);
        let report = orders
            .reports()
            .into_iter()
            .find(|r| r.order_id == joined[0])
            .unwrap();
        let traceparent = report.traceparent.expect("traceparent sent again");
        assert!(traceparent.contains(&consumer.trace_id), "{traceparent}");
        service.stop().await;
    });
}

#[test]
fn fault_changes_need_the_token_and_invalid_specs_are_refused_with_the_reason() {
    run(async {
        let orders = FakeOrders::start().await;
        let (service, _guard) = service(Options::new(orders.url())).await;
        let stall = r#"{"kind":"queue.consumer_stall"}"#;

        for token in [None, Some("wrong")] {
            let (status, problem) = service
                .admin_send("PUT", "/admin/faults", token, Some(stall))
                .await;
            assert_eq!(status, 401, "{problem}");
            assert!(
                problem["detail"].as_str().unwrap().contains("Bearer"),
                "{problem}"
            );
        }
        for (spec, reason) in [
            (r#"{"kind":"queue.slow_consumer"}"#, "needs \"ms\""),
            (
                r#"{"kind":"db.slow_query","ms":5}"#,
                "does not act in fulfillment",
            ),
            (
                r#"{"kind":"queue.poison","probability":2}"#,
                "probability must be",
            ),
            (
                r#"{"kind":"queue.consumer_stall","ms":5}"#,
                "does not take \"ms\"",
            ),
            ("{not json", "invalid fault spec"),
        ] {
            let (status, problem) = service
                .admin_send("PUT", "/admin/faults", Some(TOKEN), Some(spec))
                .await;
            assert_eq!(status, 400, "{spec}: {problem}");
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.contains(reason), "{spec}: {detail}");
        }
        assert!(listed_faults(&service).await.is_empty(), "nothing changed");
        // ...and the worker consumes as before.
        let order = ids(1);
        publish_orders(&service, &order, "u-auth").await;
        all_reported(&orders, &order, "fulfilled").await;

        let id = set_fault(&service, stall).await;
        // A blind fault (no `reveal`) is not counted by the gauge run_expiry registered.
        let text = scrape(&service).await;
        assert!(
            text.lines()
                .any(|l| l == "faultline_faults_active{kind=\"queue.consumer_stall\"} 0"),
            "{text}"
        );
        let (status, _) = service
            .admin_send("DELETE", &format!("/admin/faults/{id}"), None, None)
            .await;
        assert_eq!(status, 401);
        let (status, _) = service
            .admin_send("DELETE", "/admin/faults", None, None)
            .await;
        assert_eq!(status, 401);
        assert_eq!(listed_faults(&service).await.len(), 1, "still set");
        let (status, cleared) = service
            .admin_send("DELETE", "/admin/faults", Some(TOKEN), None)
            .await;
        assert_eq!((status, cleared["cleared"].as_u64()), (200, Some(1)));
        assert!(listed_faults(&service).await.is_empty());
        service.stop().await;
    });
}

#[test]
fn messages_the_queue_dead_letters_while_receiving_are_counted_too() {
    run(async {
        let orders = FakeOrders::start().await;
        let dir = tempfile::tempdir().unwrap();
        let queue_url = support::queue_url(&dir);
        // A consumer that crashed on the message twice: both leases ran out unsettled.
        let crashed = support::queue_handle(&queue_url, Duration::from_millis(200)).await;
        crashed
            .publish(
                "orders.placed",
                "m-crasher",
                &support::order_payload(&new_id(), "u-crasher"),
                &Default::default(),
            )
            .await
            .unwrap();
        for _ in 0..2 {
            let leased = crashed.receive(1, Duration::from_secs(2)).await.unwrap();
            assert_eq!(leased.len(), 1);
            drop(leased);
        }
        let before = metric(&env().metrics.render(), fulfillment::DEAD_LETTERS, &[]);

        let mut options = Options::new(orders.url());
        options.max_deliveries = 2;
        options.metrics = Some(env().metrics.clone());
        let service = support::start_service_in(dir, options).await;
        let _guard = StopOnDrop(service.shutdown.clone());
        eventually("the queue to dead-letter the message", WAIT, || async {
            service.queue.dead_letters().await.unwrap() == 1
        })
        .await;
        eventually("the counter to count it", WAIT, || async {
            metric(&scrape(&service).await, fulfillment::DEAD_LETTERS, &[]) == before + 1.0
        })
        .await;
        assert!(orders.reports().is_empty());
        service.stop().await;
    });
}
