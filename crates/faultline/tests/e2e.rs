//! End to end: the real `faultline serve` processes, exporting to an in-process OTLP collector.
//! One `POST /api/orders` becomes a `fulfilled` order, and the collector holds ONE trace with
//! the whole chain — gateway → orders (+ database) → outbox publish → fulfillment process →
//! status call back to orders — with the right parents; every service's log lines for it carry
//! that trace id.

mod support;

use std::time::{Duration, Instant};

use fake_collector::{FakeCollector, Span, SpanKind};
use servicekit::client::HttpClient;
use support::{start_stack, start_stack_with};

fn one<'a>(spans: &'a [Span], what: &str, pred: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| pred(s)).collect();
    assert!(
        !found.is_empty(),
        "no {what} in the trace; spans: {:#?}",
        spans
            .iter()
            .map(|s| (
                &s.service_name,
                &s.name,
                s.kind,
                &s.span_id,
                &s.parent_span_id
            ))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// Whether `ancestor` is `span`'s parent, grandparent, …
fn descends_from(spans: &[Span], span: &Span, ancestor: &Span) -> bool {
    let mut current = span;
    for _ in 0..64 {
        if current.parent_span_id == ancestor.span_id {
            return true;
        }
        match spans.iter().find(|s| s.span_id == current.parent_span_id) {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

async fn an_order_is_one_trace_across_three_services(urls: Option<(String, String, String)>) {
    let collector = FakeCollector::start().await;
    let mut stack = start_stack(&collector, urls, "/readyz").await;
    let client = HttpClient::new();

    let placed = client
        .send_json(
            http::Method::POST,
            &format!("{}/api/orders", stack.gateway),
            &serde_json::json!({"user_id": "u-e2e", "items": [{"sku": "sku-3", "quantity": 2}]}),
            Duration::from_secs(10),
        )
        .await
        .expect("gateway answers");
    assert_eq!(placed.status, 202, "{:?}", placed.body);
    let trace_id = placed.headers["x-trace-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = placed.json().unwrap();
    let order_id = body["order_id"].as_str().unwrap().to_owned();
    assert_eq!(
        placed.headers["location"].to_str().unwrap(),
        format!("/api/orders/{order_id}")
    );

    // The order becomes fulfilled asynchronously.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client
            .get(
                &format!("{}/api/orders/{order_id}", stack.gateway),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let status = r.json::<serde_json::Value>().unwrap()["status"].clone();
        if status == "fulfilled" {
            break;
        }
        assert!(Instant::now() < deadline, "order still {status} after 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let in_trace = |spans: &[Span]| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    };
    let complete = |spans: &[Span]| {
        let t = in_trace(spans);
        t.iter().any(|s| s.name == "PUT /orders/{id}/status")
            && t.iter().any(|s| s.name == "process orders.placed")
            && t.iter().any(|s| s.name == "POST /api/orders")
    };
    let all = collector
        .wait_for_spans(complete, Duration::from_secs(20))
        .await;
    let spans = in_trace(&all);

    let gw_server = one(&spans, "gateway SERVER span", |s| {
        s.service_name == "gateway" && s.kind == SpanKind::Server && s.name == "POST /api/orders"
    });
    assert!(
        gw_server.parent_span_id.is_empty(),
        "the gateway span is the root"
    );
    let gw_client = one(&spans, "gateway CLIENT span", |s| {
        s.service_name == "gateway" && s.kind == SpanKind::Client && s.name == "POST"
    });
    assert_eq!(gw_client.parent_span_id, gw_server.span_id);
    let orders_server = one(&spans, "orders SERVER span", |s| {
        s.service_name == "orders" && s.kind == SpanKind::Server && s.name == "POST /orders"
    });
    assert_eq!(orders_server.parent_span_id, gw_client.span_id);
    let db = one(&spans, "orders database span", |s| {
        s.service_name == "orders"
            && s.kind == SpanKind::Client
            && s.attr_str("db.system.name").is_some()
            && s.name.ends_with(" inventory")
    });
    assert!(descends_from(&spans, db, orders_server));
    assert!(db.attr_str("db.query.text").is_some());
    let publish = one(&spans, "PRODUCER span", |s| {
        s.service_name == "orders"
            && s.kind == SpanKind::Producer
            && s.name == "publish orders.placed"
    });
    assert!(
        descends_from(&spans, publish, orders_server),
        "the outbox relay's publish joins the order's trace"
    );
    let process = one(&spans, "CONSUMER span", |s| {
        s.service_name == "fulfillment"
            && s.kind == SpanKind::Consumer
            && s.name == "process orders.placed"
    });
    assert_eq!(process.parent_span_id, publish.span_id);
    assert!(
        process.links.iter().any(|l| l.span_id == publish.span_id),
        "the consumer links to the creation context"
    );
    let callback = one(&spans, "fulfillment CLIENT span", |s| {
        s.service_name == "fulfillment" && s.kind == SpanKind::Client && s.name == "PUT"
    });
    assert!(descends_from(&spans, callback, process));
    let status_server = one(&spans, "orders status SERVER span", |s| {
        s.service_name == "orders" && s.name == "PUT /orders/{id}/status"
    });
    assert_eq!(status_server.parent_span_id, callback.span_id);

    stack.stop().await;
    for service in ["gateway", "orders", "fulfillment"] {
        let lines = stack.log_lines(service);
        assert!(
            lines.iter().any(|l| l["trace_id"] == trace_id.as_str()),
            "{service} has log lines for trace {trace_id}"
        );
        assert!(
            lines
                .iter()
                .all(|l| l["service"] == service || l.get("service").is_none())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_one_trace_across_three_services_on_the_embedded_defaults() {
    an_order_is_one_trace_across_three_services(None).await;
}

/// The URL of an external service for tests, or `None` (with a note) when it is not
/// configured. Under CI (`FAULTLINE_REQUIRE_EXTERNAL_TESTS`) a missing URL fails the test.
fn external(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var_os("FAULTLINE_REQUIRE_EXTERNAL_TESTS").is_some() => {
            panic!("{var} must be set when FAULTLINE_REQUIRE_EXTERNAL_TESTS is set")
        }
        _ => {
            eprintln!("note: {var} is not set; skipping this test");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_one_trace_across_three_services_on_postgres_and_nats() {
    let (Some(database), Some(nats)) = (external("TEST_DATABASE_URL"), external("TEST_NATS_URL"))
    else {
        return;
    };
    // Fresh databases (one per service, as in compose), and no stream left from an earlier run.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let names = [
        format!("e2e_orders_{run}"),
        format!("e2e_fulfillment_{run}"),
    ];
    let admin = sqlx::PgPool::connect(&database).await.expect("PostgreSQL");
    for name in &names {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
    }
    let base = database.rsplit_once('/').map(|(b, _)| b).unwrap();
    let nats_client = async_nats::connect(&nats).await.expect("NATS");
    let js = async_nats::jetstream::new(nats_client);
    let _ = js.delete_stream("ORDERS").await;

    an_order_is_one_trace_across_three_services(Some((
        format!("{base}/{}", names[0]),
        format!("{base}/{}", names[1]),
        nats,
    )))
    .await;

    let _ = js.delete_stream("ORDERS").await;
    for name in &names {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
    }
}

/// The value of an unlabelled gauge in a Prometheus text body.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn order_status(client: &HttpClient, gateway: &str, id: &str) -> String {
    let r = client
        .get(
            &format!("{gateway}/api/orders/{id}"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    r.json::<serde_json::Value>().unwrap()["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_accepted_while_the_queue_is_down_are_all_fulfilled_once_it_is_back() {
    let collector = FakeCollector::start().await;
    let state = tempfile::tempdir().unwrap();
    // The queue cannot be opened while a plain file sits where its directory should be.
    let blocked = state.path().join("queue");
    std::fs::write(&blocked, "not a directory").unwrap();
    let urls = (
        format!("sqlite://{}/orders.db", state.path().display()),
        format!("sqlite://{}/fulfillment.db", state.path().display()),
        format!("sqlite://{}/queue.db", blocked.display()),
    );
    let mut stack = start_stack(&collector, Some(urls), "/healthz").await;
    let client = HttpClient::new();

    let mut ids = Vec::new();
    for i in 0..5 {
        let r = client
            .send_json(
                http::Method::POST,
                &format!("{}/api/orders", stack.gateway),
                &serde_json::json!({"user_id": "u-outage", "items": [{"sku": format!("sku-{}", i + 1), "quantity": 1}]}),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 202, "orders are accepted while the queue is down");
        ids.push(
            r.json::<serde_json::Value>().unwrap()["order_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // The outbox holds them.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = client
            .get(
                &format!("{}/metrics", stack.admin["orders"]),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        if gauge(&text, "orders_outbox_pending_messages") == Some(5.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "outbox gauge never reached 5:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &ids {
        assert_eq!(order_status(&client, &stack.gateway, id).await, "accepted");
    }

    // The queue comes back.
    std::fs::remove_file(&blocked).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let status = order_status(&client, &stack.gateway, id).await;
            if status == "fulfilled" {
                break;
            }
            assert!(Instant::now() < deadline, "order {id} still {status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let summary = client
        .get(
            &format!("{}/api/users/u-outage/summary", stack.gateway),
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap();
    let shipped: Vec<&str> = summary["shipments"]
        .as_array()
        .expect("shipments")
        .iter()
        .map(|s| s["order_id"].as_str().unwrap())
        .collect();
    let mut unique = shipped.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(shipped.len(), 5, "every order shipped: {summary}");
    assert_eq!(unique.len(), 5, "none shipped twice: {summary}");
    stack.stop().await;
}

async fn shipments(client: &HttpClient, gateway: &str, user: &str) -> Vec<String> {
    let summary = client
        .get(
            &format!("{gateway}/api/users/{user}/summary"),
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap();
    summary["shipments"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["order_id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fulfillment_killed_in_the_middle_of_a_message_redelivers_it_and_ships_exactly_once() {
    let collector = FakeCollector::start().await;
    // Fulfillment's status call goes to a dependency that never answers, so after storing the
    // shipment the worker is stuck mid-message, holding it unacknowledged.
    let hole = format!("http://{}", fake_collector::black_hole().await);
    let mut stack = start_stack_with(
        &collector,
        None,
        "/healthz",
        &[
            ("fulfillment", "ORDERS_URL", hole.as_str()),
            ("fulfillment", "FULFILLMENT_ACK_WAIT_MS", "1500"),
            ("fulfillment", "FULFILLMENT_ORDERS_TIMEOUT_MS", "30000"),
        ],
    )
    .await;
    let client = HttpClient::new();
    let placed = client
        .send_json(
            http::Method::POST,
            &format!("{}/api/orders", stack.gateway),
            &serde_json::json!({"user_id": "u-crash", "items": [{"sku": "sku-7", "quantity": 1}]}),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(placed.status, 202);
    let id = placed.json::<serde_json::Value>().unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Wait until the shipment is stored but the order is not yet reported fulfilled.
    let deadline = Instant::now() + Duration::from_secs(30);
    while shipments(&client, &stack.gateway, "u-crash")
        .await
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the shipment was never stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(order_status(&client, &stack.gateway, &id).await, "accepted");

    // Crash it, and bring it back pointing at the real orders service.
    let orders_url = stack.envs["orders"]
        .iter()
        .find(|(k, _)| k == "LISTEN_ADDR")
        .map(|(_, v)| format!("http://{v}"))
        .unwrap();
    stack
        .kill_and_restart("fulfillment", &[("ORDERS_URL", orders_url.as_str())])
        .await;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = order_status(&client, &stack.gateway, &id).await;
        if status == "fulfilled" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "order still {status} after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        shipments(&client, &stack.gateway, "u-crash").await,
        vec![id.clone()],
        "redelivered and shipped exactly once"
    );
    stack.stop().await;
}

/// A gateway process started as `faultline up` starts it (`--stop-on-stdin-eof`), on its own.
async fn lone_gateway(collector: &FakeCollector) -> (support::Service, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (app, admin) = (support::free_port(), support::free_port());
    let env: Vec<(String, String)> = vec![
        ("LISTEN_ADDR".into(), format!("127.0.0.1:{app}")),
        ("ADMIN_LISTEN_ADDR".into(), format!("127.0.0.1:{admin}")),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            collector.grpc_endpoint(),
        ),
        ("RUST_LOG".into(), "info".into()),
        ("LOG_FORMAT".into(), "json".into()),
    ];
    let mut gateway = support::spawn_service("gateway", &env, dir.path().join("gateway.log"));
    support::wait_for(&mut gateway, &format!("http://127.0.0.1:{admin}/healthz")).await;
    (gateway, dir)
}

/// The shutdown reasons a service logged (`SIGINT received…`, `parent process went away…`).
async fn stop_reasons(mut gateway: support::Service) -> Vec<String> {
    let status = tokio::time::timeout(Duration::from_secs(30), gateway.child.wait())
        .await
        .expect("the gateway stops")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let log = std::fs::read_to_string(&gateway.log).unwrap();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["message"].as_str().map(str::to_owned))
        .filter(|m| m.contains("shutting down"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_and_stdin_eof_together_log_one_reason_to_stop() {
    let collector = FakeCollector::start().await;
    // A service run with `--stop-on-stdin-eof` by a parent that shares its process group (a
    // supervisor other than `up`, which gives each service a group of its own): Ctrl-C in the
    // terminal signals both, and the parent closes the service's stdin as it stops. Either may
    // reach the service first; it logs the first, once. (Three times, as the order varies.)
    for _ in 0..3 {
        let (mut gateway, _dir) = lone_gateway(&collector).await;
        let pid = gateway.child.id().unwrap().to_string();
        let kill = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(kill.success());
        drop(gateway.child.stdin.take());
        let reasons = stop_reasons(gateway).await;
        assert_eq!(
            reasons.len(),
            1,
            "one reason to stop, logged once: {reasons:?}"
        );
    }

    // `faultline up` killed outright: stdin closes, no signal.
    let (mut gateway, _dir) = lone_gateway(&collector).await;
    drop(gateway.child.stdin.take());
    assert_eq!(
        stop_reasons(gateway).await,
        ["parent process went away (stdin closed), shutting down"]
    );
}
