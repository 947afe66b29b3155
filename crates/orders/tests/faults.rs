//! Each database, queue and telemetry fault of the orders service, injected into the running
//! service through its admin API (with the token; without it 401, an invalid spec 400 with the
//! reason, and neither changes anything) and found the way an engineer would find it: in the
//! exported spans (an in-process OTLP collector) and in `/metrics`. Clearing the fault — or
//! letting it expire — brings normal behaviour back.
//!
//! This binary initialises telemetry once (global subscriber and recorder), on one runtime that
//! all its tests share, and runs its tests one at a time so that each can read the process-wide
//! metrics as its own.

mod support;

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fake_collector::{FakeCollector, Span, SpanKind, StatusCode as SpanStatus, by_trace};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use servicekit::client::HttpResponse;
use sqlx::Row;
use support::{Options, PgDatabase, TestService, start};

const TOKEN: &str = "test-admin-token";
/// `db.slow_query`'s `ms` in these tests.
const SLOW_MS: u64 = 300;

/// What the whole binary shares: the collector the service exports to, and `/metrics`.
struct Telemetry {
    collector: FakeCollector,
    metrics: telemetry::MetricsHandle,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Runs one test on the shared runtime, after the previous one has finished.
fn run(test: impl Future<Output = ()>) {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    runtime().block_on(async {
        let _one_at_a_time = SERIAL.lock().await;
        test.await;
    });
}

static TELEMETRY: tokio::sync::OnceCell<Telemetry> = tokio::sync::OnceCell::const_new();

async fn telemetry() -> &'static Telemetry {
    TELEMETRY
        .get_or_init(|| async {
            let collector = FakeCollector::start().await;
            let mut config = telemetry::TelemetryConfig::new("orders");
            config.otlp_endpoint = Some(collector.grpc_endpoint());
            config.scheduled_delay = Duration::from_millis(50);
            let guard = telemetry::init(config).expect("telemetry");
            let metrics = guard.metrics().cloned().expect("a metrics recorder");
            // Lives as long as the process (the runtime is never shut down either).
            Box::leak(Box::new(guard));
            Telemetry { collector, metrics }
        })
        .await
}

async fn start_service(options: Options) -> TestService {
    let t = telemetry().await;
    start(Options {
        metrics: Some(t.metrics.clone()),
        admin_token: Some(TOKEN.to_owned()),
        ..options
    })
    .await
}

/// One request to the admin API; `token` goes into `Authorization: Bearer`.
async fn admin(
    service: &TestService,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> HttpResponse {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    service
        .client
        .request_with_headers(
            method,
            &format!("{}{path}", service.admin),
            body.map(|b| serde_json::to_vec(b).unwrap()),
            headers,
            support::TIMEOUT,
        )
        .await
        .expect("the admin API answers")
}

async fn listed_faults(service: &TestService) -> Vec<Value> {
    let listed = admin(service, Method::GET, "/admin/faults", None, None).await;
    assert_eq!(listed.status, StatusCode::OK);
    let listed: Value = listed.json().unwrap();
    listed["faults"].as_array().cloned().unwrap_or_default()
}

/// Sets `spec` as an operator would, after checking on the way that a PUT without the token
/// (or with a wrong one) gets 401 and that `invalid` gets 400 naming `reason`, neither of them
/// changing anything. Returns the new fault's id.
async fn set_fault(service: &TestService, spec: Value, invalid: Value, reason: &str) -> String {
    let before = listed_faults(service).await;
    for token in [None, Some("not-the-token")] {
        let refused = admin(service, Method::PUT, "/admin/faults", token, Some(&spec)).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "token {token:?}");
        assert_eq!(refused.headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    let refused = admin(
        service,
        Method::PUT,
        "/admin/faults",
        Some(TOKEN),
        Some(&invalid),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{invalid}");
    assert_eq!(
        refused.headers[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let problem: Value = refused.json().unwrap();
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(reason), "{invalid}: {problem}");
    assert_eq!(
        listed_faults(service).await,
        before,
        "refused PUTs change nothing"
    );

    let set = admin(
        service,
        Method::PUT,
        "/admin/faults",
        Some(TOKEN),
        Some(&spec),
    )
    .await;
    assert_eq!(
        set.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&set.body)
    );
    let fault: Value = set.json().unwrap();
    assert_eq!(fault["kind"], spec["kind"]);
    assert_eq!(fault["service"], "orders");
    fault["id"].as_str().unwrap().to_owned()
}

async fn clear_fault(service: &TestService, id: &str) {
    let path = format!("/admin/faults/{id}");
    let refused = admin(service, Method::DELETE, &path, None, None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let cleared = admin(service, Method::DELETE, &path, Some(TOKEN), None).await;
    assert_eq!(cleared.status, StatusCode::OK);
    assert!(listed_faults(service).await.is_empty());
}

/// How many times the listed fault `id` has acted.
async fn occurrences(service: &TestService, id: &str) -> u64 {
    listed_faults(service)
        .await
        .iter()
        .find(|f| f["id"] == id)
        .and_then(|f| f["occurrences"].as_u64())
        .expect("the fault is listed")
}

/// Places an order of one `sku`; returns its trace id and order id (`None` unless 201).
async fn place(
    service: &TestService,
    user: &str,
    sku: &str,
) -> (StatusCode, String, Option<String>) {
    let placed = service.post_order(user, &[(sku, 1)]).await;
    let trace_id = placed.headers["x-trace-id"].to_str().unwrap().to_owned();
    let order_id = (placed.status == StatusCode::CREATED).then(|| {
        let body: Value = placed.json().unwrap();
        body["order_id"].as_str().unwrap().to_owned()
    });
    (placed.status, trace_id, order_id)
}

/// The spans of `trace_id`, once they include every name in `names`.
async fn trace_with(trace_id: &str, names: &[&str]) -> Vec<Span> {
    let t = telemetry().await;
    let spans = t
        .collector
        .wait_for_spans(
            |spans| {
                let trace = by_trace(spans, trace_id);
                names.iter().all(|n| trace.iter().any(|s| s.name == *n))
            },
            Duration::from_secs(20),
        )
        .await;
    by_trace(&spans, trace_id).into_iter().cloned().collect()
}

fn one<'a>(trace: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = trace.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "one {name:?} span: {:?}",
        trace.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

fn ms(span: &Span) -> u64 {
    span.duration().as_millis() as u64
}

/// A blind fault leaves no trace of itself: no span, attribute, event or exported log line names
/// it; only its effects show.
async fn assert_nothing_names(kind: &str) {
    let t = telemetry().await;
    for span in t.collector.spans() {
        assert!(!span.name.contains(kind), "span {span:?}");
        for (key, value) in &span.attributes {
            assert!(
                !key.starts_with("fault.") && !value.to_string().contains(kind),
                "span {:?} attribute {key}={value}",
                span.name
            );
        }
        for event in &span.events {
            assert!(
                !event.name.contains("fault"),
                "span {:?}: {event:?}",
                span.name
            );
        }
    }
    for log in t.collector.logs() {
        assert!(
            !log.body.contains(kind) && !log.body.contains("fault"),
            "log {log:?}"
        );
    }
}

/// The sum of the samples of `name` whose labels include every one of `labels`, or `None` if
/// there is no such sample.
fn metric(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = TELEMETRY
        .get()
        .expect("telemetry initialised")
        .metrics
        .render();
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        if series_name == name
            && labels
                .iter()
                .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
            && let Ok(value) = value.parse::<f64>()
        {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

async fn outbox_row(service: &TestService, order_id: &str) -> (String, String, i64) {
    let row = sqlx::query("SELECT id, headers, attempts FROM outbox WHERE payload LIKE $1")
        .bind(format!("%{order_id}%"))
        .fetch_one(&service.db)
        .await
        .expect("the order's outbox row");
    (row.get(0), row.get(1), row.get(2))
}

// --- db.slow_query -------------------------------------------------------------------------

/// With `db.slow_query` on the `inventory` table, the order's statements on that table — and
/// only those — last at least `ms` inside their CLIENT spans; cleared, they are fast again.
async fn slow_query_makes_the_statements_on_its_table_slow(database_url: Option<String>) {
    telemetry().await;
    let service = start_service(Options {
        database_url,
        ..Options::default()
    })
    .await;
    let system = if service.database_url.starts_with("postgres") {
        "postgresql"
    } else {
        "sqlite"
    };
    let id = set_fault(
        &service,
        json!({"kind": "db.slow_query", "ms": SLOW_MS, "target": "inventory"}),
        json!({"kind": "db.slow_query", "target": "inventory"}),
        "db.slow_query needs \"ms\"",
    )
    .await;

    let (status, trace_id, _) = place(&service, "u-slow", "sku-4").await;
    assert_eq!(status, StatusCode::CREATED);
    let trace = trace_with(&trace_id, &["POST /orders", "INSERT outbox"]).await;
    let server = one(&trace, "POST /orders");
    for name in ["SELECT inventory", "UPDATE inventory"] {
        let span = one(&trace, name);
        assert_eq!(span.kind, SpanKind::Client, "{name}");
        assert_eq!(span.parent_span_id, server.span_id, "{name}");
        assert_eq!(span.attr_str("db.system.name").as_deref(), Some(system));
        assert_eq!(span.status, SpanStatus::Unset, "{name}");
        assert!(
            ms(span) >= SLOW_MS,
            "{name} lasts at least {SLOW_MS} ms: {} ms",
            ms(span)
        );
    }
    for name in ["INSERT orders", "INSERT outbox"] {
        assert!(
            ms(one(&trace, name)) < SLOW_MS,
            "{name} is on another table: {} ms",
            ms(one(&trace, name))
        );
    }
    assert!(ms(server) >= 2 * SLOW_MS, "{} ms", ms(server));
    assert_eq!(
        occurrences(&service, &id).await,
        2,
        "one read and one update"
    );
    assert_nothing_names("db.slow_query").await;

    clear_fault(&service, &id).await;
    let (status, trace_id, _) = place(&service, "u-slow", "sku-4").await;
    assert_eq!(status, StatusCode::CREATED);
    let trace = trace_with(&trace_id, &["POST /orders", "INSERT outbox"]).await;
    for name in ["SELECT inventory", "UPDATE inventory"] {
        let took = ms(one(&trace, name));
        assert!(took < SLOW_MS, "{name} is fast again: {took} ms");
    }
    service.stop().await;
}

#[test]
fn db_slow_query_on_sqlite_slows_the_statements_on_its_table_until_cleared() {
    run(slow_query_makes_the_statements_on_its_table_slow(None));
}

#[test]
fn db_slow_query_on_postgres_slows_the_statements_on_its_table_until_cleared() {
    let Some(server) = support::postgres_url() else {
        return;
    };
    run(async move {
        let pg = PgDatabase::create(&server).await;
        let url = pg.url.clone();
        pg.run(slow_query_makes_the_statements_on_its_table_slow(Some(url)))
            .await;
    });
}

// --- db.lock_contention --------------------------------------------------------------------

/// A competing transaction keeps taking the `sku-5` row: orders of `sku-5` meet optimistic
/// conflicts (the counter rises, the UPDATE spans fail with SQLite's busy code or wait for the
/// lock); cleared, orders go through without a conflict and the row is left alone.
#[test]
fn db_lock_contention_makes_orders_of_the_hot_sku_conflict_until_cleared() {
    run(async {
        telemetry().await;
        let service = start_service(Options::default()).await;
        let version = |service: &TestService| {
            let db = service.db.clone();
            async move {
                sqlx::query("SELECT version FROM inventory WHERE sku = 'sku-5'")
                    .fetch_one(&db)
                    .await
                    .unwrap()
                    .get::<i64, _>(0)
            }
        };
        let untouched = version(&service).await;
        let id = set_fault(
            &service,
            json!({"kind": "db.lock_contention", "target": "sku-5", "ms": 200}),
            json!({"kind": "db.lock_contention", "target": "sku-5", "status": 500}),
            "db.lock_contention does not take \"status\"",
        )
        .await;
        service
            .eventually("the competing transaction takes the row", || async {
                version(&service).await > untouched
            })
            .await;

        let conflicts = || metric("orders_stock_conflicts_total", &[]).unwrap_or(0.0);
        let before = conflicts();
        // Orders arriving now and then, as customers do: most meet the row taken (the
        // competitor holds it 200 ms of every 220).
        let mut traces = Vec::new();
        for n in 0..6 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let (status, trace_id, _) = place(&service, &format!("u-hot-{n}"), "sku-5").await;
            assert!(
                status == StatusCode::CREATED || status == StatusCode::SERVICE_UNAVAILABLE,
                "{status}"
            );
            traces.push(trace_id);
        }
        let during = conflicts() - before;
        assert!(
            during >= 3.0,
            "orders of the hot SKU conflict: {during} conflicts in 6 orders"
        );
        // Each conflict is visible in its order's trace: a statement that failed with SQLite's
        // lock error (the transaction was then retried).
        let mut failed_statements = 0;
        for trace_id in &traces {
            let trace = trace_with(trace_id, &["POST /orders"]).await;
            failed_statements += trace
                .iter()
                .filter(|s| s.attr("db.system.name").is_some() && s.status == SpanStatus::Error)
                .inspect(|s| {
                    let code = s.attr_str("error.type").unwrap_or_default();
                    assert!(
                        ["5", "517", "261", "6"].contains(&code.as_str()),
                        "{}: a lock error, not {code:?}",
                        s.name
                    );
                })
                .count();
        }
        assert_eq!(
            failed_statements as f64, during,
            "one failed statement per conflict"
        );
        assert!(occurrences(&service, &id).await >= 1);
        assert_nothing_names("db.lock_contention").await;

        clear_fault(&service, &id).await;
        // The round in progress ends at once; wait until the competitor has let go of the row
        // (its version stops moving), however slow this machine is right now.
        let mut after_clear = version(&service).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = version(&service).await;
            if now == after_clear {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the competitor never stopped"
            );
            after_clear = now;
        }
        let before = conflicts();
        for n in 0..4 {
            // Spaced as during the fault, so the outbox relay's own writes are done.
            tokio::time::sleep(Duration::from_millis(150)).await;
            let (status, _, _) = place(&service, &format!("u-calm-{n}"), "sku-5").await;
            assert_eq!(status, StatusCode::CREATED);
        }
        // SQLite allows one writer: an order can still, rarely, meet the relay's write and
        // retry. What must stop is the competitor's steady share.
        let after = conflicts() - before;
        assert!(
            after <= 1.0 && after < during,
            "conflicts stop once cleared: {after} in 4 orders (during the fault: {during} in 6)"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            version(&service).await,
            after_clear + 4,
            "only our four orders changed the row"
        );
        service.stop().await;
    });
}

// --- db.pool_exhaustion --------------------------------------------------------------------

/// Every pool connection is taken and held: the pool gauges show it, a request waits the full
/// acquire timeout and gets 503, and the wait shows in `db_client_connection_wait_time_seconds`
/// and in the SERVER span; cleared, the connections come back and orders go through.
#[test]
fn db_pool_exhaustion_makes_requests_wait_for_the_pool_until_cleared() {
    run(async {
        telemetry().await;
        let service = start_service(Options {
            db_pool_size: 3,
            ..Options::default()
        })
        .await;
        let pool = [("db_client_connection_pool_name", "orders")];
        let used = || {
            metric(
                "db_client_connections",
                &[pool[0], ("db_client_connection_state", "used")],
            )
        };
        let idle = || {
            metric(
                "db_client_connections",
                &[pool[0], ("db_client_connection_state", "idle")],
            )
        };
        assert_eq!(metric("db_client_connection_max", &pool), Some(3.0));

        let id = set_fault(
            &service,
            json!({"kind": "db.pool_exhaustion"}),
            json!({"kind": "db.pool_exhaustion", "connections": 0}),
            "connections must be 1 to 1000",
        )
        .await;
        service
            .eventually("every connection is held", || async {
                used() == Some(3.0) && idle() == Some(0.0)
            })
            .await;

        let wait_sum =
            || metric("db_client_connection_wait_time_seconds_sum", &pool).unwrap_or(0.0);
        let wait_count =
            || metric("db_client_connection_wait_time_seconds_count", &pool).unwrap_or(0.0);
        let (sum_before, count_before) = (wait_sum(), wait_count());
        let started = Instant::now();
        let (status, trace_id, _) = place(&service, "u-pool", "sku-6").await;
        let took = started.elapsed();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(took >= Duration::from_millis(4900), "waited {took:?}");
        assert!(wait_count() > count_before);
        assert!(
            wait_sum() - sum_before >= 4.9,
            "the wait is recorded: {} s",
            wait_sum() - sum_before
        );
        let trace = trace_with(&trace_id, &["POST /orders"]).await;
        let server = one(&trace, "POST /orders");
        assert_eq!(
            server
                .attr("http.response.status_code")
                .and_then(|v| v.as_i64()),
            Some(503)
        );
        assert!(ms(server) >= 4900, "{} ms", ms(server));
        assert_eq!(occurrences(&service, &id).await, 1);
        assert_nothing_names("db.pool_exhaustion").await;

        clear_fault(&service, &id).await;
        service
            .eventually("the connections are back", || async {
                used() == Some(0.0) && idle().is_some_and(|n| n >= 1.0)
            })
            .await;
        let started = Instant::now();
        let (status, trace_id, _) = place(&service, "u-pool", "sku-6").await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(started.elapsed() < Duration::from_secs(2));
        let trace = trace_with(&trace_id, &["POST /orders", "INSERT outbox"]).await;
        assert!(ms(one(&trace, "POST /orders")) < 2000);
        service.stop().await;
    });
}

// --- queue.publish_failure -----------------------------------------------------------------

/// The relay cannot publish: its PRODUCER span fails (Error, `error.type`), the rows stay in
/// the outbox and `orders_outbox_pending_messages` rises, the relay warns; cleared, the outbox
/// drains and each event is published in its order's trace.
#[test]
fn queue_publish_failure_backs_the_outbox_up_until_cleared() {
    run(async {
        let t = telemetry().await;
        let service = start_service(Options::default()).await;
        let refused = || {
            metric(
                "messaging_client_sent_messages_total",
                &[("error_type", "database_busy")],
            )
            .unwrap_or(0.0)
        };
        let refused_before = refused();
        let id = set_fault(
            &service,
            json!({"kind": "queue.publish_failure"}),
            json!({"kind": "queue.publish_failure", "ms": 5}),
            "queue.publish_failure does not take \"ms\"",
        )
        .await;

        let mut orders = Vec::new();
        for n in 0..2 {
            let (status, trace_id, order_id) =
                place(&service, &format!("u-pub-{n}"), "sku-7").await;
            assert_eq!(status, StatusCode::CREATED);
            orders.push((trace_id, order_id.unwrap()));
        }
        let (first_trace, first_order) = &orders[0];
        let spans = t
            .collector
            .wait_for_spans(
                |spans| {
                    by_trace(spans, first_trace)
                        .iter()
                        .any(|s| s.name == "publish orders.placed" && s.status == SpanStatus::Error)
                },
                Duration::from_secs(20),
            )
            .await;
        let trace = by_trace(&spans, first_trace);
        let server = trace.iter().find(|s| s.name == "POST /orders").unwrap();
        let publish = trace
            .iter()
            .find(|s| s.name == "publish orders.placed")
            .unwrap();
        assert_eq!(publish.kind, SpanKind::Producer);
        assert_eq!(publish.status, SpanStatus::Error);
        assert_eq!(publish.parent_span_id, server.span_id);
        assert_eq!(
            publish.attr_str("error.type").as_deref(),
            Some("database_busy")
        );
        assert_eq!(
            publish.attr_str("messaging.destination.name").as_deref(),
            Some("orders.placed")
        );
        assert!(
            publish.status_message.contains("database is locked"),
            "{}",
            publish.status_message
        );
        service
            .eventually("the pending gauge shows both events", || async {
                metric("orders_outbox_pending_messages", &[]) == Some(2.0)
            })
            .await;
        assert_eq!(service.unsent().await, 2, "both rows stay in the outbox");
        let (_, _, attempts) = outbox_row(&service, first_order).await;
        assert!(attempts >= 1, "the failed attempts are counted: {attempts}");
        assert!(refused() - refused_before >= 1.0);
        t.collector
            .wait_for_logs(
                |logs| {
                    logs.iter().any(|l| {
                        l.severity_text.eq_ignore_ascii_case("warn")
                            && l.body.contains("cannot publish outbox rows")
                    })
                },
                Duration::from_secs(10),
            )
            .await;
        assert!(occurrences(&service, &id).await >= 1);
        assert_nothing_names("queue.publish_failure").await;

        clear_fault(&service, &id).await;
        service
            .eventually("the outbox drains", || async {
                service.unsent().await == 0
                    && metric("orders_outbox_pending_messages", &[]) == Some(0.0)
            })
            .await;
        for (trace_id, _) in &orders {
            let spans = t
                .collector
                .wait_for_spans(
                    |spans| {
                        by_trace(spans, trace_id).iter().any(|s| {
                            s.name == "publish orders.placed" && s.status == SpanStatus::Unset
                        })
                    },
                    Duration::from_secs(20),
                )
                .await;
            let trace = by_trace(&spans, trace_id);
            let server = trace.iter().find(|s| s.name == "POST /orders").unwrap();
            let published = trace
                .iter()
                .find(|s| s.name == "publish orders.placed" && s.status == SpanStatus::Unset)
                .unwrap();
            assert_eq!(published.parent_span_id, server.span_id);
        }
        service.stop().await;
    });
}

// --- telemetry.drop_context ----------------------------------------------------------------

/// The queue hop stops propagating: the outbox row carries no trace context, so the relay's
/// publish starts a new trace (the trace breaks in two); cleared, the publish is back in the
/// order's trace.
#[test]
fn telemetry_drop_context_on_the_queue_hop_breaks_the_trace_until_cleared() {
    run(async {
        let t = telemetry().await;
        let service = start_service(Options::default()).await;
        let id = set_fault(
            &service,
            json!({"kind": "telemetry.drop_context", "target": "queue"}),
            json!({"kind": "telemetry.drop_context", "target": "queue", "ms": 10}),
            "telemetry.drop_context does not take \"ms\"",
        )
        .await;

        let (status, trace_id, order_id) = place(&service, "u-ctx", "sku-8").await;
        assert_eq!(status, StatusCode::CREATED);
        let (row_id, headers, _) = outbox_row(&service, &order_id.unwrap()).await;
        assert_eq!(headers, "{}", "no trace context stored with the row");
        let spans = t
            .collector
            .wait_for_spans(
                |spans| {
                    spans.iter().any(|s| {
                        s.name == "publish orders.placed"
                            && s.attr_str("messaging.message.id").as_deref() == Some(&row_id)
                    })
                },
                Duration::from_secs(20),
            )
            .await;
        let publish = spans
            .iter()
            .find(|s| {
                s.name == "publish orders.placed"
                    && s.attr_str("messaging.message.id").as_deref() == Some(&row_id)
            })
            .unwrap();
        assert!(publish.is_root(), "the publish starts a trace of its own");
        assert_ne!(publish.trace_id, trace_id, "the trace is broken in two");
        assert!(
            by_trace(&spans, &trace_id)
                .iter()
                .all(|s| s.name != "publish orders.placed"),
            "the order's trace ends at the outbox"
        );
        let server = spans
            .iter()
            .find(|s| s.trace_id == trace_id && s.name == "POST /orders")
            .expect("the order's own trace is intact up to the outbox");
        assert_eq!(server.kind, SpanKind::Server);
        assert_eq!(occurrences(&service, &id).await, 1);
        assert_nothing_names("telemetry.drop_context").await;

        clear_fault(&service, &id).await;
        let (status, trace_id, order_id) = place(&service, "u-ctx", "sku-8").await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, headers, _) = outbox_row(&service, &order_id.unwrap()).await;
        assert!(headers.contains(&trace_id), "{headers}");
        let trace = trace_with(&trace_id, &["POST /orders", "publish orders.placed"]).await;
        assert_eq!(
            one(&trace, "publish orders.placed").parent_span_id,
            one(&trace, "POST /orders").span_id,
            "one trace again"
        );
        service.stop().await;
    });
}

// --- expiry --------------------------------------------------------------------------------

/// A fault set with `ttl_seconds: 1` acts, then stops on its own: no longer listed, and the
/// statements are fast again without anyone clearing it.
#[test]
fn an_expired_fault_stops_on_its_own() {
    run(async {
        telemetry().await;
        let service = start_service(Options::default()).await;
        let id = set_fault(
            &service,
            json!({"kind": "db.slow_query", "ms": SLOW_MS, "target": "inventory", "ttl_seconds": 1}),
            json!({"kind": "db.slow_query", "ms": SLOW_MS, "ttl_seconds": 0}),
            "no fault lives forever",
        )
        .await;
        let set_at = Instant::now();
        let listed = listed_faults(&service).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["id"], id.as_str());
        assert!(listed[0]["expires_in_seconds"].as_u64().unwrap() <= 1);

        let placing_at = set_at.elapsed();
        let (status, trace_id, _) = place(&service, "u-ttl", "sku-9").await;
        assert_eq!(status, StatusCode::CREATED);
        if placing_at < Duration::from_millis(500) {
            // Still alive when the order read its stock.
            let trace = trace_with(&trace_id, &["POST /orders", "INSERT outbox"]).await;
            assert!(ms(one(&trace, "SELECT inventory")) >= SLOW_MS);
        }

        service
            .eventually("the fault is gone from the list", || async {
                listed_faults(&service).await.is_empty()
            })
            .await;
        assert!(set_at.elapsed() >= Duration::from_secs(1));
        let (status, trace_id, _) = place(&service, "u-ttl", "sku-9").await;
        assert_eq!(status, StatusCode::CREATED);
        let trace = trace_with(&trace_id, &["POST /orders", "INSERT outbox"]).await;
        for name in ["SELECT inventory", "UPDATE inventory"] {
            let took = ms(one(&trace, name));
            assert!(took < SLOW_MS, "{name} is fast after expiry: {took} ms");
        }
        let gone = admin(
            &service,
            Method::DELETE,
            &format!("/admin/faults/{id}"),
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND, "nothing left to clear");
        service.stop().await;
    });
}
