//! Every fault that acts in the gateway, injected into a running gateway through its admin API
//! (real HTTP, bearer token), and seen where an operator would see it: in the exported spans
//! (fake OTLP collector) and in `/metrics`. Each test then clears the fault and checks that
//! normal behaviour is back.
//!
//! Its own test binary because it installs the process-wide telemetry. The telemetry, the fake
//! collector and the fake downstream services live on a runtime of their own that outlives
//! every test (each `#[tokio::test]` has its own runtime, which ends with it); the gateway runs
//! on the test's runtime, so the runtime faults stall the gateway only. Tests run one at a time
//! ([`SERIAL`]): they read process-wide numbers (RED metrics, CPU time, resident memory) and
//! measure durations. CPU time and resident memory are read from `/proc` (Linux).

mod support;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use fake_collector::{FakeCollector, Span, SpanKind, StatusCode as SpanStatus, children};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use servicekit::client::HttpClient;
use support::{Fake, Gateway, Reply, VALID_ORDER, config, sample};

const TOKEN: &str = "t0ken";
const WAIT: Duration = Duration::from_secs(10);
/// How long the fake orders takes to answer `GET /orders/{id}`.
const ORDERS_READ_DELAY: Duration = Duration::from_millis(100);

/// One test at a time (see the module docs).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What every test shares: the runtime the telemetry and the fakes run on, the collector, and
/// the process's metrics recorder.
struct Harness {
    runtime: tokio::runtime::Runtime,
    collector: FakeCollector,
    metrics: telemetry::MetricsHandle,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // Built on a thread of its own: a runtime cannot be started from inside another.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let (collector, guard) = runtime.block_on(async {
                let collector = FakeCollector::start().await;
                let mut cfg = telemetry::TelemetryConfig::new("gateway");
                cfg.otlp_endpoint = Some(collector.grpc_endpoint());
                cfg.scheduled_delay = Duration::from_millis(50);
                let guard = telemetry::init_with_writer(cfg, std::io::sink).expect("telemetry");
                (collector, guard)
            });
            let metrics = guard.metrics().expect("the recorder is installed").clone();
            // Kept for the life of the process: spans are exported until it exits.
            std::mem::forget(guard);
            Harness {
                runtime,
                collector,
                metrics,
            }
        })
        .join()
        .unwrap()
    })
}

/// The gateway under test, its two fake downstream services, and what the fake orders saw.
struct Stack {
    gw: Gateway,
    orders: Fake,
    fulfillment: Fake,
    /// The trace id of each `POST /orders` the fake orders served (its own SERVER span's).
    order_traces: Arc<Mutex<Vec<String>>>,
}

/// Serves `router` as a fake on the harness runtime (so it keeps answering while the gateway's
/// runtime is stalled by a runtime fault).
async fn fake(router: Router) -> Fake {
    harness()
        .runtime
        .spawn(support::fake(router))
        .await
        .unwrap()
}

/// The fake orders is instrumented like the real one (a SERVER span per request, exported to
/// the same collector), so a trace shows both sides of each call.
async fn stack() -> Stack {
    let order_traces = Arc::new(Mutex::new(Vec::new()));
    let traces = order_traces.clone();
    let orders = fake(
        Router::new()
            .route(
                "/orders",
                post(move || {
                    let traces = traces.clone();
                    async move {
                        traces
                            .lock()
                            .unwrap()
                            .push(telemetry::current_trace_id().expect("inside the SERVER span"));
                        let id = uuid::Uuid::new_v4().to_string();
                        (
                            StatusCode::CREATED,
                            axum::Json(json!({"order_id": id, "status": "accepted"})),
                        )
                    }
                }),
            )
            .route(
                "/orders/{id}",
                get(|Path(id): Path<String>| async move {
                    tokio::time::sleep(ORDERS_READ_DELAY).await;
                    axum::Json(json!({"order_id": id, "status": "accepted"}))
                }),
            )
            .route(
                "/users/{id}/orders",
                get(|| async { axum::Json(json!([])) }),
            )
            .layer(telemetry::http::ServerLayer::new()),
    )
    .await;
    let fulfillment = fake(Router::new().route(
        "/users/{id}/shipments",
        get(|| async { axum::Json(json!([{"carrier": "snail"}])) }),
    ))
    .await;
    let mut cfg = config(&orders.url, &fulfillment.url);
    cfg.orders_timeout = Duration::from_secs(2);
    cfg.fulfillment_timeout = Duration::from_secs(1);
    cfg.admin_token = Some(TOKEN.to_owned());
    let gw = support::start_with_metrics(cfg, Some(harness().metrics.clone())).await;
    Stack {
        gw,
        orders,
        fulfillment,
        order_traces,
    }
}

impl Stack {
    /// `PUT /admin/faults` with the token; asserts 201 and returns the fault's id.
    async fn set(&self, spec: Value) -> String {
        let reply = self
            .admin(Method::PUT, "", Some(TOKEN), Some(spec.clone()))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{spec}: {:?}",
            reply.json()
        );
        let fault = reply.json();
        assert_eq!(fault["kind"], spec["kind"]);
        fault["id"].as_str().unwrap().to_owned()
    }

    /// `DELETE /admin/faults/{id}` with the token; asserts it was there.
    async fn clear(&self, id: &str) {
        let reply = self
            .admin(Method::DELETE, &format!("/{id}"), Some(TOKEN), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
        assert_eq!(reply.json()["cleared"], 1);
    }

    /// The faults `GET /admin/faults` lists.
    async fn faults(&self) -> Vec<Value> {
        let reply = self.admin(Method::GET, "", None, None).await;
        assert_eq!(reply.status, StatusCode::OK);
        let body = reply.json();
        assert_eq!(body["service"], "gateway");
        body["faults"].as_array().unwrap().clone()
    }

    async fn admin(
        &self,
        method: Method,
        suffix: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let body = body.map(|b| b.to_string());
        support::admin(
            method,
            &format!("{}/admin/faults{suffix}", self.gw.admin_url),
            token,
            body.as_deref(),
        )
        .await
    }

    async fn get(&self, path: &str) -> Reply {
        support::get(&format!("{}{path}", self.gw.url)).await
    }

    async fn place_order(&self) -> Reply {
        support::post(&format!("{}/api/orders", self.gw.url), VALID_ORDER).await
    }

    /// `GET /metrics` from the admin listener.
    async fn metrics(&self) -> String {
        let reply = support::get(&format!("{}/metrics", self.gw.admin_url)).await;
        assert_eq!(reply.status, StatusCode::OK);
        String::from_utf8(reply.body).unwrap()
    }
}

/// An order id the fake orders knows (any UUID will do).
const ORDER_PATH: &str = "/api/orders/7d444840-9dc0-11d1-b245-5ffdce74fad2";
const ORDER_ROUTE: &str = "GET /api/orders/{id}";
const SUMMARY_PATH: &str = "/api/users/u-1/summary";
const SUMMARY_ROUTE: &str = "GET /api/users/{id}/summary";

/// The gateway's SERVER span named `name` in the trace of `reply` (from its `x-trace-id`), and
/// its CLIENT children. Children end before their parent, so once the parent is exported they
/// have been too.
async fn traced(reply: &Reply, name: &str) -> (Span, Vec<Span>) {
    let trace_id = reply.header("x-trace-id").expect("x-trace-id").to_owned();
    let spans = harness()
        .collector
        .wait_for_spans(
            |spans| {
                spans
                    .iter()
                    .any(|s| s.trace_id == trace_id && s.name == name && s.kind == SpanKind::Server)
            },
            WAIT,
        )
        .await;
    let server = spans
        .iter()
        .find(|s| s.trace_id == trace_id && s.name == name && s.kind == SpanKind::Server)
        .unwrap()
        .clone();
    let clients = children(&spans, &server)
        .into_iter()
        .filter(|s| s.kind == SpanKind::Client)
        .cloned()
        .collect();
    (server, clients)
}

fn status_code(span: &Span) -> Option<i64> {
    span.attr("http.response.status_code")
        .and_then(|v| v.as_i64())
}

fn calls_to<'a>(clients: &'a [Span], fake: &Fake) -> Vec<&'a Span> {
    clients
        .iter()
        .filter(|c| {
            c.attr_str("url.full")
                .is_some_and(|u| u.starts_with(&fake.url))
        })
        .collect()
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// `http_server_request_duration_seconds_count` for one route and status.
fn requests_counted(exposition: &str, route: &str, status: &str) -> f64 {
    sample(
        exposition,
        "http_server_request_duration_seconds_count",
        &[("http_route", route), ("http_response_status_code", status)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn http_latency_delays_the_matched_route_only_until_cleared() {
    let _serial = SERIAL.lock().await;
    let s = stack().await;
    let id = s
        .set(json!({"kind": "http.latency", "route": "/api/orders/{id}", "ms": 400}))
        .await;

    let reply = s.get(ORDER_PATH).await;
    assert_eq!(reply.status, StatusCode::OK);
    let (server, clients) = traced(&reply, ORDER_ROUTE).await;
    assert!(
        server.duration() >= Duration::from_millis(400),
        "{:?}",
        server.duration()
    );
    assert_eq!(status_code(&server), Some(200));
    assert_eq!(server.status, SpanStatus::Unset);
    // The delay is the gateway's own: the call to orders is as fast as ever.
    assert_eq!(clients.len(), 1);
    assert!(
        clients[0].duration() < Duration::from_millis(350),
        "{clients:?}"
    );

    let other = s.get(SUMMARY_PATH).await;
    assert_eq!(other.status, StatusCode::OK);
    let (server, _) = traced(&other, SUMMARY_ROUTE).await;
    assert!(
        server.duration() < Duration::from_millis(300),
        "another route is unaffected: {:?}",
        server.duration()
    );

    s.clear(&id).await;
    let reply = s.get(ORDER_PATH).await;
    let (server, _) = traced(&reply, ORDER_ROUTE).await;
    assert!(
        server.duration() < Duration::from_millis(400),
        "{:?}",
        server.duration()
    );
}

#[tokio::test]
async fn http_error_fails_the_route_with_error_spans_and_5xx_in_the_red_metrics() {
    let _serial = SERIAL.lock().await;
    let s = stack().await;
    let before = requests_counted(&s.metrics().await, "/api/orders/{id}", "503");
    let id = s
        .set(json!({"kind": "http.error", "route": "GET /api/orders/{id}", "status": 503}))
        .await;

    for _ in 0..3 {
        let reply = s.get(ORDER_PATH).await;
        let problem = reply.problem(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            problem["trace_id"].as_str(),
            reply.header("x-trace-id"),
            "{problem}"
        );
        assert!(!reply.json().to_string().contains("fault"), "{problem}");
        let (server, clients) = traced(&reply, ORDER_ROUTE).await;
        assert_eq!(server.status, SpanStatus::Error);
        assert_eq!(status_code(&server), Some(503));
        assert_eq!(server.attr_str("error.type").as_deref(), Some("503"));
        assert!(clients.is_empty(), "the handler never ran: {clients:?}");
    }
    assert_eq!(s.orders.hits.count(), 0, "orders was never called");
    let exposition = s.metrics().await;
    assert_eq!(
        requests_counted(&exposition, "/api/orders/{id}", "503") - before,
        3.0,
        "{exposition}"
    );
    // Another method is another route.
    assert_eq!(s.place_order().await.status, StatusCode::ACCEPTED);

    s.clear(&id).await;
    let reply = s.get(ORDER_PATH).await;
    assert_eq!(reply.status, StatusCode::OK);
    let (server, _) = traced(&reply, ORDER_ROUTE).await;
    assert_eq!(server.status, SpanStatus::Unset);
    assert_eq!(status_code(&server), Some(200));
    let exposition = s.metrics().await;
    assert_eq!(
        requests_counted(&exposition, "/api/orders/{id}", "503") - before,
        3.0
    );
    assert!(requests_counted(&exposition, "/api/orders/{id}", "200") >= 1.0);
}

#[tokio::test]
async fn http_hang_never_answers_until_the_caller_gives_up_or_the_fault_is_cleared() {
    let _serial = SERIAL.lock().await;
    let s = stack().await;
    let id = s
        .set(json!({"kind": "http.hang", "route": "/api/orders/{id}"}))
        .await;
    let url = format!("{}{ORDER_PATH}", s.gw.url);

    // A caller with a deadline gives up.
    let started = Instant::now();
    let error = HttpClient::new()
        .request(Method::GET, &url, None, Duration::from_millis(300))
        .await
        .expect_err("a hung request never answers");
    assert!(error.is_timeout(), "{error}");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A patient caller waits as long as the fault lasts.
    let patient = tokio::spawn({
        let url = url.clone();
        async move { support::get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!patient.is_finished(), "still hanging after 600 ms");
    // Other routes answer meanwhile.
    assert_eq!(s.get(SUMMARY_PATH).await.status, StatusCode::OK);
    assert!(
        !s.orders
            .hits
            .all()
            .iter()
            .any(|h| h.path.starts_with("/orders/")),
        "the hung requests went no further"
    );

    s.clear(&id).await;
    let reply = tokio::time::timeout(Duration::from_secs(3), patient)
        .await
        .expect("answers once the fault is cleared")
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let (server, clients) = traced(&reply, ORDER_ROUTE).await;
    assert!(
        server.duration() >= Duration::from_millis(600),
        "the span covers the hang: {:?}",
        server.duration()
    );
    assert_eq!(clients.len(), 1, "then the request went on as usual");

    let started = Instant::now();
    assert_eq!(s.get(ORDER_PATH).await.status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn dependency_latency_slows_the_calls_to_its_target_only() {
    let _serial = SERIAL.lock().await;
    let s = stack().await;
    let id = s
        .set(json!({"kind": "dependency.latency", "target": "orders", "ms": 400}))
        .await;

    let reply = s.get(SUMMARY_PATH).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["degraded"], false);
    let (server, clients) = traced(&reply, SUMMARY_ROUTE).await;
    assert_eq!(clients.len(), 2, "{clients:#?}");
    let to_orders = calls_to(&clients, &s.orders);
    let to_fulfillment = calls_to(&clients, &s.fulfillment);
    assert!(
        to_orders[0].duration() >= Duration::from_millis(400),
        "{:?}",
        to_orders[0].duration()
    );
    assert_eq!(status_code(to_orders[0]), Some(200));
    assert!(
        to_fulfillment[0].duration() < Duration::from_millis(300),
        "fulfillment is unaffected: {:?}",
        to_fulfillment[0].duration()
    );
    assert!(server.duration() >= Duration::from_millis(400));
    assert_eq!(s.orders.hits.count(), 1, "the call still reached orders");

    s.clear(&id).await;
    let reply = s.get(SUMMARY_PATH).await;
    let (_, clients) = traced(&reply, SUMMARY_ROUTE).await;
    let to_orders = calls_to(&clients, &s.orders);
    assert!(
        to_orders[0].duration() < Duration::from_millis(300),
        "{:?}",
        to_orders[0].duration()
    );
}

#[tokio::test]
async fn dependency_error_on_fulfillment_degrades_the_summary_and_fails_its_client_spans() {
    let _serial = SERIAL.lock().await;
    let s = stack().await;

    // Without a status: the connection is refused (every attempt: reads are retried twice).
    let id = s
        .set(json!({"kind": "dependency.error", "target": "fulfillment"}))
        .await;
    let reply = s.get(SUMMARY_PATH).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["degraded"], true, "{body}");
    assert!(body["shipments"].is_null(), "{body}");
    let (server, clients) = traced(&reply, SUMMARY_ROUTE).await;
    assert_eq!(server.status, SpanStatus::Unset, "degraded, not failed");
    let failed = calls_to(&clients, &s.fulfillment);
    assert_eq!(failed.len(), 3, "{clients:#?}");
    for span in &failed {
        assert_eq!(span.status, SpanStatus::Error);
        assert_eq!(
            span.attr_str("error.type").as_deref(),
            Some("connection_refused")
        );
        assert_eq!(status_code(span), None);
    }
    let to_orders = calls_to(&clients, &s.orders);
    assert_eq!(to_orders.len(), 1);
    assert_eq!(to_orders[0].status, SpanStatus::Unset);
    s.clear(&id).await;

    // With a status: the dependency answers it.
    let id = s
        .set(json!({"kind": "dependency.error", "target": "fulfillment", "status": 502}))
        .await;
    let reply = s.get(SUMMARY_PATH).await;
    assert_eq!(reply.json()["degraded"], true);
    let (_, clients) = traced(&reply, SUMMARY_ROUTE).await;
    let failed = calls_to(&clients, &s.fulfillment);
    assert_eq!(failed.len(), 3, "a 502 is retried too: {clients:#?}");
    for span in &failed {
        assert_eq!(span.status, SpanStatus::Error);
        assert_eq!(status_code(span), Some(502));
        assert_eq!(span.attr_str("error.type").as_deref(), Some("502"));
    }
    assert_eq!(
        s.fulfillment.hits.count(),
        0,
        "no call reached fulfillment while the fault lasted"
    );

    s.clear(&id).await;
    let reply = s.get(SUMMARY_PATH).await;
    let body = reply.json();
    assert_eq!(body["degraded"], false, "{body}");
    assert_eq!(body["shipments"], json!([{"carrier": "snail"}]));
    let (_, clients) = traced(&reply, SUMMARY_ROUTE).await;
    let calls = calls_to(&clients, &s.fulfillment);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].status, SpanStatus::Unset);
    assert_eq!(status_code(calls[0]), Some(200));
    assert_eq!(s.fulfillment.hits.count(), 1);
}

#[tokio::test]
async fn drop_context_to_orders_splits_one_order_into_two_traces() {
    let _serial = SERIAL.lock().await;
    let s = stack().await;
    let id = s
        .set(json!({"kind": "telemetry.drop_context", "target": "orders"}))
        .await;

    let reply = s.place_order().await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let gateway_trace = reply.header("x-trace-id").unwrap().to_owned();
    let (_, clients) = traced(&reply, "POST /api/orders").await;
    assert_eq!(clients.len(), 1, "the gateway still made its CLIENT span");
    let hit = &posted_orders(&s)[0];
    assert!(
        hit.headers.get("traceparent").is_none(),
        "orders received no context: {:?}",
        hit.headers
    );
    let orders_trace = s.order_traces.lock().unwrap()[0].clone();
    assert_ne!(
        orders_trace, gateway_trace,
        "orders started a trace of its own"
    );
    let spans = harness()
        .collector
        .wait_for_spans(
            |spans| {
                spans
                    .iter()
                    .any(|s| s.trace_id == orders_trace && s.name == "POST /orders")
            },
            WAIT,
        )
        .await;
    let orders_span = spans
        .iter()
        .find(|s| s.trace_id == orders_trace && s.name == "POST /orders")
        .unwrap();
    assert!(orders_span.is_root(), "{orders_span:?}");
    assert_eq!(orders_span.kind, SpanKind::Server);
    assert!(
        !spans
            .iter()
            .any(|s| s.trace_id == gateway_trace && s.name == "POST /orders"),
        "the gateway's trace ends at its CLIENT span"
    );
    // Only that hop: the calls to fulfillment keep their context, those to orders do not.
    assert_eq!(s.get(SUMMARY_PATH).await.status, StatusCode::OK);
    let shipments = &s.fulfillment.hits.all()[0];
    assert!(shipments.headers.get("traceparent").is_some());
    let listing = s.orders.hits.all();
    let listing = listing
        .iter()
        .find(|h| h.path == "/users/u-1/orders")
        .unwrap();
    assert!(listing.headers.get("traceparent").is_none());

    s.clear(&id).await;
    let reply = s.place_order().await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let gateway_trace = reply.header("x-trace-id").unwrap().to_owned();
    let (_, clients) = traced(&reply, "POST /api/orders").await;
    let traceparent = posted_orders(&s)[1].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(traceparent.contains(&gateway_trace), "{traceparent}");
    assert_eq!(
        s.order_traces.lock().unwrap()[1],
        gateway_trace,
        "one trace again"
    );
    let spans = harness()
        .collector
        .wait_for_spans(
            |spans| {
                spans
                    .iter()
                    .any(|s| s.trace_id == gateway_trace && s.name == "POST /orders")
            },
            WAIT,
        )
        .await;
    let orders_span = spans
        .iter()
        .find(|s| s.trace_id == gateway_trace && s.name == "POST /orders")
        .unwrap();
    assert_eq!(orders_span.parent_span_id, clients[0].span_id);
}

/// The `POST /orders` the fake orders received, in order.
fn posted_orders(s: &Stack) -> Vec<support::Hit> {
    s.orders
        .hits
        .all()
        .into_iter()
        .filter(|h| h.method == Method::POST && h.path == "/orders")
        .collect()
}

/// The CPU time (user + system) this process has used, from `/proc/self/stat` (Linux; the
/// kernel counts in ticks of 1/100 s), read directly rather than scraped as
/// `process_cpu_seconds_total`, which renders the same figure.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may contain spaces) start at field 3 (`state`);
    // `utime` and `stime` are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_burn_lengthens_the_spans_and_burns_process_cpu() {
    let _serial = SERIAL.lock().await;
    let s = stack().await;
    let five_requests = || async {
        let before = cpu_seconds();
        let mut spans = Vec::new();
        for _ in 0..5 {
            let reply = s.get(ORDER_PATH).await;
            assert_eq!(reply.status, StatusCode::OK);
            spans.push(traced(&reply, ORDER_ROUTE).await);
        }
        (cpu_seconds() - before, spans)
    };
    five_requests().await; // warm-up
    let (normal, _) = five_requests().await;

    let id = s
        .set(json!({"kind": "runtime.cpu_burn", "route": "/api/orders/{id}", "ms": 300}))
        .await;
    let (burnt, spans) = five_requests().await;
    for (server, clients) in &spans {
        assert!(
            server.duration() >= Duration::from_millis(300) + ORDERS_READ_DELAY,
            "{:?}",
            server.duration()
        );
        assert!(
            clients[0].duration() < Duration::from_millis(300),
            "the time is the gateway's own: {:?}",
            clients[0].duration()
        );
    }
    // 1.5 s of burning (wall time: on a busy machine the thread does not have a core all the
    // time, so less CPU), against a few milliseconds for 5 ordinary requests.
    assert!(
        burnt >= 0.3 && burnt >= normal + 0.25,
        "process CPU: {burnt} s with the fault, {normal} s without"
    );

    s.clear(&id).await;
    let (after, spans) = five_requests().await;
    assert!(
        after < burnt / 2.0,
        "{after} s after clearing, {burnt} s with the fault"
    );
    for (server, _) in &spans {
        assert!(
            server.duration() < Duration::from_millis(300),
            "{:?}",
            server.duration()
        );
    }
}

/// `B` (`GET /api/orders/{id}`, waiting 100 ms on orders) is in flight when four `A` requests
/// (the summary, which has the fault) arrive; how long does B take, by its own SERVER span?
/// The requests are sent from the harness runtime, so only the gateway's runtime is stalled.
async fn unrelated_request_under_load(s: &Stack) -> (Span, Vec<Span>, Duration) {
    let rt = &harness().runtime;
    let b_url = format!("{}{ORDER_PATH}", s.gw.url);
    let b = rt.spawn(async move {
        let started = Instant::now();
        let reply = support::get(&b_url).await;
        (reply, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let a: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{}{SUMMARY_PATH}", s.gw.url);
            rt.spawn(async move { support::get(&url).await })
        })
        .collect();
    for a in a {
        assert_eq!(a.await.unwrap().status, StatusCode::OK);
    }
    let (reply, took) = b.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let (server, clients) = traced(&reply, ORDER_ROUTE).await;
    (server, clients, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_call_on_one_route_stalls_an_unrelated_route_of_the_service() {
    let _serial = SERIAL.lock().await;
    let s = stack().await;

    let (server, _, _) = unrelated_request_under_load(&s).await;
    assert!(
        server.duration() < Duration::from_millis(250),
        "baseline: {:?}",
        server.duration()
    );

    let id = s
        .set(
            json!({"kind": "runtime.blocking_call", "route": "/api/users/{id}/summary", "ms": 300}),
        )
        .await;
    let (server, clients, took) = unrelated_request_under_load(&s).await;
    assert!(
        server.duration() >= Duration::from_millis(250),
        "B has no fault, yet waited for a worker: {:?}",
        server.duration()
    );
    assert!(took >= Duration::from_millis(250), "{took:?}");
    // The misleading part: the CLIENT span says orders was slow; orders' own span says not.
    assert_eq!(clients.len(), 1);
    let orders_side = harness()
        .collector
        .spans()
        .into_iter()
        .find(|sp| sp.parent_span_id == clients[0].span_id && sp.kind == SpanKind::Server)
        .expect("the fake orders' SERVER span");
    assert!(
        clients[0].duration() > orders_side.duration() + Duration::from_millis(100),
        "client {} ms, orders {} ms",
        ms(clients[0].duration()),
        ms(orders_side.duration())
    );

    s.clear(&id).await;
    let (server, _, _) = unrelated_request_under_load(&s).await;
    assert!(
        server.duration() < Duration::from_millis(250),
        "after clearing: {:?}",
        server.duration()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_across_await_serialises_the_requests_of_the_route() {
    let _serial = SERIAL.lock().await;
    let s = stack().await;
    const N: usize = 4;
    const HOLD: u64 = 150;

    async fn concurrently(s: &Stack) -> (Vec<Span>, Duration) {
        let started = Instant::now();
        let replies = futures_util::future::join_all((0..N).map(|_| s.get(ORDER_PATH))).await;
        let took = started.elapsed();
        let mut spans = Vec::new();
        for reply in &replies {
            assert_eq!(reply.status, StatusCode::OK);
            spans.push(traced(reply, ORDER_ROUTE).await.0);
        }
        spans.sort_by_key(Span::duration);
        (spans, took)
    }

    let id = s
        .set(json!({"kind": "runtime.lock_across_await", "route": "/api/orders/{id}", "ms": HOLD}))
        .await;
    let (spans, took) = concurrently(&s).await;
    let serial = Duration::from_millis(HOLD * N as u64);
    assert!(took >= serial - Duration::from_millis(20), "{took:?}");
    // The last one in waited for the three before it.
    let longest = spans.last().unwrap().duration();
    assert!(longest >= serial - Duration::from_millis(50), "{longest:?}");
    let shortest = spans[0].duration();
    assert!(shortest >= Duration::from_millis(HOLD), "{shortest:?}");
    assert!(
        longest
            >= shortest + Duration::from_millis(HOLD * (N as u64 - 1)) - Duration::from_millis(50),
        "one after the other: {:?}",
        spans.iter().map(|s| ms(s.duration())).collect::<Vec<_>>()
    );

    s.clear(&id).await;
    let (spans, took) = concurrently(&s).await;
    assert!(
        took < Duration::from_millis(HOLD * 2),
        "together again: {took:?}"
    );
    assert!(spans.last().unwrap().duration() < Duration::from_millis(HOLD * 2));
}

/// The resident set of this process, from `/proc/self/statm` (Linux), in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_leak_grows_resident_memory_up_to_its_cap_and_frees_it_when_cleared() {
    let _serial = SERIAL.lock().await;
    let s = stack().await;
    const MIB: u64 = 1 << 20;
    let rss = |text: &str| {
        sample(text, "process_resident_memory_bytes", &[]).expect("resident memory") as u64
    };
    // Warm up: first-time code paths and buffers are not the leak.
    for _ in 0..3 {
        assert_eq!(s.get(ORDER_PATH).await.status, StatusCode::OK);
    }
    s.metrics().await;

    let before = rss(&s.metrics().await);
    let id = s
        .set(json!({
            "kind": "runtime.memory_leak",
            "route": "/api/orders/{id}",
            "bytes": 4 * MIB,
            "max_bytes": 16 * MIB,
        }))
        .await;
    for _ in 0..8 {
        assert_eq!(s.get(ORDER_PATH).await.status, StatusCode::OK);
    }
    let leaking = rss(&s.metrics().await);
    let grown = leaking.saturating_sub(before);
    // 8 × 4 MiB asked, 16 MiB allowed.
    assert!(
        (14 * MIB..24 * MIB).contains(&grown),
        "resident memory grew by {} MiB",
        grown / MIB
    );
    assert!(resident_bytes() >= before + 14 * MIB);
    let faults = s.faults().await;
    assert_eq!(faults[0]["occurrences"], 8, "{faults:?}");
    assert_eq!(faults[0]["max_bytes"], 16 * MIB);

    s.clear(&id).await;
    let after = rss(&s.metrics().await);
    assert!(
        after + 12 * MIB <= leaking,
        "freed when cleared: {} MiB before, {} MiB leaking, {} MiB after",
        before / MIB,
        leaking / MIB,
        after / MIB
    );
    for _ in 0..4 {
        assert_eq!(s.get(ORDER_PATH).await.status, StatusCode::OK);
    }
    let again = rss(&s.metrics().await);
    assert!(again < after + 4 * MIB, "no more leaking");
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_refuses_invalid_specs_changing_nothing() {
    let _serial = SERIAL.lock().await;
    let s = stack().await;
    let spec = json!({"kind": "http.error", "status": 503});

    for token in [None, Some("wrong")] {
        let reply = s.admin(Method::PUT, "", token, Some(spec.clone())).await;
        let problem = reply.problem(StatusCode::UNAUTHORIZED);
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        assert!(
            problem["detail"].as_str().unwrap().contains("Bearer"),
            "{problem}"
        );
    }
    assert_eq!(
        s.admin(Method::DELETE, "", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );

    for (body, reason) in [
        (
            json!({"kind": "db.slow_query", "ms": 5}),
            "does not act in gateway",
        ),
        (json!({"kind": "http.latency"}), "needs \"ms\""),
        (
            json!({"kind": "http.error", "status": 200}),
            "status must be 400 to 599",
        ),
        (
            json!({"kind": "http.error", "colour": "red"}),
            "unknown field",
        ),
        (json!({"kind": "runtime.cpu_burn", "ms": 5000}), "1 to 1000"),
        (
            json!({"kind": "http.error", "service": "orders"}),
            "this is gateway",
        ),
    ] {
        let reply = s
            .admin(Method::PUT, "", Some(TOKEN), Some(body.clone()))
            .await;
        let problem = reply.problem(StatusCode::BAD_REQUEST);
        assert!(
            problem["detail"].as_str().unwrap().contains(reason),
            "{body}: {problem}"
        );
    }
    let not_json = support::admin(
        Method::PUT,
        &format!("{}/admin/faults", s.gw.admin_url),
        Some(TOKEN),
        Some("{"),
    )
    .await;
    assert!(
        not_json.problem(StatusCode::BAD_REQUEST)["detail"]
            .as_str()
            .unwrap()
            .contains("invalid fault spec")
    );

    assert!(s.faults().await.is_empty(), "nothing was set");
    let reply = s.get(ORDER_PATH).await;
    assert_eq!(reply.status, StatusCode::OK, "nothing changed");
    let (server, _) = traced(&reply, ORDER_ROUTE).await;
    assert_eq!(server.status, SpanStatus::Unset);

    // Reading is open; the supported kinds are the gateway's.
    let listed = s.admin(Method::GET, "", None, None).await.json();
    let supported: Vec<&str> = listed["supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let expected: Vec<&str> = gateway::FAULT_KINDS.iter().map(|k| k.name()).collect();
    assert_eq!(supported, expected);
}

#[tokio::test]
async fn an_expired_fault_stops_on_its_own() {
    let _serial = SERIAL.lock().await;
    let s = stack().await;
    s.set(json!({"kind": "http.error", "route": "/api/orders/{id}", "ttl_seconds": 1}))
        .await;
    let reply = s.get(ORDER_PATH).await;
    reply.problem(StatusCode::INTERNAL_SERVER_ERROR);
    let (server, _) = traced(&reply, ORDER_ROUTE).await;
    assert_eq!(server.status, SpanStatus::Error);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = s.get(ORDER_PATH).await;
    assert_eq!(reply.status, StatusCode::OK);
    let (server, _) = traced(&reply, ORDER_ROUTE).await;
    assert_eq!(server.status, SpanStatus::Unset);
    assert!(s.faults().await.is_empty());
}

#[tokio::test]
async fn reveal_marks_the_span_and_the_gauge_while_a_blind_fault_leaves_neither() {
    let _serial = SERIAL.lock().await;
    let s = stack().await;
    let active = |text: &str| {
        sample(text, "faultline_faults_active", &[("kind", "http.latency")])
            .expect("the gauge is registered for every supported kind")
    };
    let named_in = |span: &Span| {
        span.events.iter().any(|e| e.name.contains("fault"))
            || span
                .attributes
                .iter()
                .any(|(k, v)| k.contains("fault") || v.to_string().contains("fault"))
    };

    let blind = s
        .set(json!({"kind": "http.latency", "route": "/api/orders/{id}", "ms": 50}))
        .await;
    let reply = s.get(ORDER_PATH).await;
    let (server, _) = traced(&reply, ORDER_ROUTE).await;
    assert!(server.duration() >= Duration::from_millis(50), "it acted");
    assert!(!named_in(&server), "{server:#?}");
    let exposition = s.metrics().await;
    assert_eq!(active(&exposition), 0.0);
    assert!(
        !exposition.lines().any(|l| !l.starts_with('#')
            && l.contains("http.latency")
            && !l.starts_with("faultline_faults_active")),
        "no other metric names the fault"
    );
    s.clear(&blind).await;

    let revealed = s
        .set(json!({"kind": "http.latency", "route": "/api/orders/{id}", "ms": 50, "reveal": true}))
        .await;
    assert_eq!(active(&s.metrics().await), 1.0);
    let reply = s.get(ORDER_PATH).await;
    let (server, _) = traced(&reply, ORDER_ROUTE).await;
    let event = server
        .events
        .iter()
        .find(|e| e.name == "faultline.fault")
        .unwrap_or_else(|| panic!("{server:#?}"));
    assert_eq!(
        event
            .attributes
            .get("fault.kind")
            .map(ToString::to_string)
            .as_deref(),
        Some("http.latency")
    );
    assert_eq!(
        event
            .attributes
            .get("fault.id")
            .map(ToString::to_string)
            .as_deref(),
        Some(revealed.as_str())
    );

    s.clear(&revealed).await;
    assert_eq!(active(&s.metrics().await), 0.0);
}
