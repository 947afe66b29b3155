//! `faultline fault …` against a stack of real services: set, list, clear, expiry, the token,
//! invalid specs, teaching mode, and the one fault that needs the process's telemetry
//! pipeline (`telemetry.clock_skew`).

mod support;

use std::time::{Duration, SystemTime};

use fake_collector::{FakeCollector, Span};
use servicekit::client::HttpClient;
use support::start_stack;

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A run's stdout and stderr, once checked that it exited 1 with one line on stderr.
fn failed_in_one_line(args: &[&str], out: &std::process::Output) -> (String, String) {
    let (stdout, stderr) = text(out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    (stdout, stderr)
}

async fn metrics(admin: &str) -> String {
    let r = HttpClient::new()
        .get(&format!("{admin}/metrics"), Duration::from_secs(5))
        .await
        .unwrap();
    String::from_utf8(r.body.to_vec()).unwrap()
}

async fn place_order(gateway: &str) -> String {
    let body = serde_json::json!({"user_id": "u-cli", "items": [{"sku": "sku-2", "quantity": 1}]});
    let r = HttpClient::new()
        .send_json(
            http::Method::POST,
            &format!("{gateway}/api/orders"),
            &body,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{:?}", r.body);
    r.json::<serde_json::Value>().unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The gateway's and orders' SERVER spans of the one order placed since the collector was
/// last cleared.
async fn server_spans(collector: &FakeCollector) -> (Span, Span) {
    let find = |spans: &[Span], service: &str, name: &str| {
        spans
            .iter()
            .find(|s| s.service_name == service && s.name == name)
            .cloned()
    };
    let spans = collector
        .wait_for_spans(
            |spans| {
                find(spans, "gateway", "POST /api/orders").is_some()
                    && find(spans, "orders", "POST /orders").is_some()
            },
            Duration::from_secs(20),
        )
        .await;
    (
        find(&spans, "gateway", "POST /api/orders").unwrap(),
        find(&spans, "orders", "POST /orders").unwrap(),
    )
}

#[tokio::test]
async fn set_list_clear_and_expiry_through_the_cli() {
    let collector = FakeCollector::start().await;
    let mut stack = start_stack(&collector, None, "/readyz").await;

    let out = stack
        .cli(&[
            "fault",
            "set",
            "orders",
            "db.slow_query",
            "--ms",
            "50",
            "--probability",
            "0.5",
            "--for",
            "5m",
        ])
        .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("db.slow_query"), "{stdout}");
    let id = stdout
        .split_whitespace()
        .nth(1)
        .expect("`set <id> on …`")
        .to_owned();
    assert!(id.starts_with("f-"), "{stdout}");

    let out = stack.cli(&["fault", "list"]).await;
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(
        stdout.contains(&id) && stdout.contains("orders"),
        "{stdout}"
    );
    assert!(stdout.contains("probability=0.5"), "{stdout}");

    let out = stack.cli(&["fault", "list", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["orders"][0]["id"], id.as_str());
    assert_eq!(listed["orders"][0]["ms"], 50);
    assert_eq!(listed["gateway"].as_array().unwrap().len(), 0);

    let out = stack.cli(&["fault", "clear", &id]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let out = stack.cli(&["fault", "clear", &id]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "clearing twice fails: {:?}",
        text(&out)
    );
    let out = stack.cli(&["fault", "list"]).await;
    assert!(
        text(&out).0.contains("no active faults"),
        "{:?}",
        text(&out)
    );

    // A short-lived fault ends on its own.
    let out = stack
        .cli(&[
            "fault",
            "set",
            "gateway",
            "http.error",
            "--status",
            "503",
            "--for",
            "1s",
        ])
        .await;
    assert!(out.status.success(), "{:?}", text(&out));
    let r = HttpClient::new()
        .get(
            &format!("{}/api/orders/x", stack.gateway),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = HttpClient::new()
        .get(
            &format!("{}/api/orders/x", stack.gateway),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_ne!(r.status, 503, "the expired fault stopped acting");
    let out = stack.cli(&["fault", "list", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["gateway"].as_array().unwrap().len(), 0);

    // --all clears every service.
    for (svc, kind) in [
        ("gateway", "http.latency"),
        ("fulfillment", "queue.slow_consumer"),
    ] {
        let out = stack.cli(&["fault", "set", svc, kind, "--ms", "5"]).await;
        assert!(out.status.success(), "{:?}", text(&out));
    }
    let out = stack.cli(&["fault", "clear", "--all"]).await;
    assert!(
        text(&out).0.contains("cleared 2 fault(s)"),
        "{:?}",
        text(&out)
    );
    stack.stop().await;
}

#[tokio::test]
async fn the_token_and_invalid_specs_are_enforced() {
    let collector = FakeCollector::start().await;
    let mut stack = start_stack(&collector, None, "/readyz").await;

    // No token anywhere: the services refuse (401) and nothing is set.
    let out = stack
        .cli_with(
            &["fault", "set", "orders", "http.error"],
            &[("FAULTLINE_ADMIN_TOKEN", "")],
        )
        .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(stderr.contains("no token was found"), "{stderr}");
    let out = stack
        .cli_with(
            &["fault", "set", "orders", "http.error"],
            &[("FAULTLINE_ADMIN_TOKEN", "wrong")],
        )
        .await;
    let (_, stderr) = text(&out);
    assert!(stderr.contains("401"), "{stderr}");
    // The variable was set, only wrong: the message says so rather than "set it".
    assert!(
        stderr.contains("FAULTLINE_ADMIN_TOKEN is not the services' token"),
        "{stderr}"
    );
    // A stale token file (an earlier lab's) is named.
    std::fs::write(stack.dir.path().join("admin-token"), "stale").unwrap();
    let out = stack
        .cli_with(
            &["fault", "set", "orders", "http.error"],
            &[("FAULTLINE_ADMIN_TOKEN", "")],
        )
        .await;
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("admin-token is not the services'"),
        "{stderr}"
    );

    // Refused by every service: one line that says so, once.
    for args in [
        &["fault", "clear", "--all"][..],
        &["drill", "stop"][..],
        &["fault", "clear", "f-12345678"][..],
    ] {
        let out = stack
            .cli_with(args, &[("FAULTLINE_ADMIN_TOKEN", "wrong")])
            .await;
        let (stdout, stderr) = failed_in_one_line(args, &out);
        assert!(
            stderr.contains("every service refused the admin token (401)"),
            "{args:?}: {stderr}"
        );
        assert!(!stdout.contains("Cleared"), "{args:?}: {stdout}");
    }

    // The token file `faultline up` writes is found in --dir.
    std::fs::write(stack.dir.path().join("admin-token"), support::ADMIN_TOKEN).unwrap();
    let out = stack
        .cli_with(
            &["fault", "set", "orders", "http.error", "--for", "1m"],
            &[("FAULTLINE_ADMIN_TOKEN", "")],
        )
        .await;
    assert!(out.status.success(), "{:?}", text(&out));
    stack.cli(&["fault", "clear", "--all"]).await;

    // Invalid specs: 400 with the reason, exit 1, nothing set.
    for (args, reason) in [
        (
            &["fault", "set", "gateway", "db.slow_query", "--ms", "5"][..],
            "does not act in gateway",
        ),
        (
            &["fault", "set", "orders", "http.latency"][..],
            "needs \"ms\"",
        ),
        (
            &["fault", "set", "orders", "http.error", "--status", "200"][..],
            "status must be",
        ),
        (
            &[
                "fault",
                "set",
                "gateway",
                "runtime.memory_leak",
                "--bytes",
                "999999999",
            ][..],
            "bytes must be",
        ),
        (
            &[
                "fault",
                "set",
                "gateway",
                "http.error",
                "--route",
                "/api/nope",
            ][..],
            "gateway has no route \"/api/nope\"",
        ),
        (
            &[
                "fault",
                "set",
                "gateway",
                "dependency.error",
                "--target",
                "ordres",
            ][..],
            "cannot target \"ordres\"; it can target: orders, fulfillment",
        ),
        (
            &[
                "fault",
                "set",
                "orders",
                "db.slow_query",
                "--ms",
                "5",
                "--target",
                "ordrs",
            ][..],
            "it can target: inventory, orders, outbox",
        ),
        (
            &["fault", "set", "orders", "http.error", "--ms", "5"][..],
            "does not take",
        ),
    ] {
        let out = stack.cli(args).await;
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
    // Usage errors (unknown kind, unknown service) exit 2.
    for args in [
        &["fault", "set", "orders", "db.slow"][..],
        &["fault", "set", "billing", "http.error"][..],
        &["fault", "clear"][..],
        &["fault", "set", "orders", "http.error", "--probability", "2"][..],
        &[
            "fault",
            "set",
            "orders",
            "http.error",
            "--probability",
            "NaN",
        ][..],
        &[
            "fault",
            "set",
            "orders",
            "http.error",
            "--probability",
            "inf",
        ][..],
        &["fault", "set", "orders", "http.error", "--for", "500ms"][..],
        &["fault", "set", "orders", "http.error", "--for", "25h"][..],
    ] {
        let out = stack.cli(args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {:?}", text(&out));
    }
    let out = stack.cli(&["fault", "list", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for svc in ["gateway", "orders", "fulfillment"] {
        assert_eq!(listed[svc].as_array().unwrap().len(), 0, "{svc}: {listed}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn clock_skew_shifts_one_services_spans_and_reveal_marks_it() {
    let collector = FakeCollector::start().await;
    let mut stack = start_stack(&collector, None, "/readyz").await;

    // Blind: the gauge stays 0.
    let out = stack
        .cli(&[
            "fault",
            "set",
            "orders",
            "telemetry.clock_skew",
            "--ms=-120000",
        ])
        .await;
    assert!(out.status.success(), "{:?}", text(&out));
    let m = metrics(&stack.admin["orders"]).await;
    assert!(
        m.contains(r#"faultline_faults_active{kind="telemetry.clock_skew"} 0"#),
        "{m}"
    );

    let before = SystemTime::now();
    let order = place_order(&stack.gateway).await;
    let (gateway, orders) = server_spans(&collector).await;
    assert_eq!(orders.trace_id, gateway.trace_id, "still one trace");
    let skew_ms = (gateway.start_unix_nanos as i128 - orders.start_unix_nanos as i128) / 1_000_000;
    assert!(
        (119_000..=121_000).contains(&skew_ms),
        "orders' span starts ~120 s before its parent: {skew_ms} ms (order {order})"
    );
    let gateway_start = SystemTime::UNIX_EPOCH + Duration::from_nanos(gateway.start_unix_nanos);
    assert!(
        gateway_start >= before - Duration::from_secs(1),
        "the gateway is not skewed"
    );

    // Cleared: orders' spans are back in line.
    stack.cli(&["fault", "clear", "--all"]).await;
    collector.clear();
    place_order(&stack.gateway).await;
    let (gateway, orders) = server_spans(&collector).await;
    assert!(orders.start_unix_nanos >= gateway.start_unix_nanos);

    // Teaching mode: the gauge says which kind is active.
    let out = stack
        .cli(&[
            "fault",
            "set",
            "orders",
            "http.latency",
            "--ms",
            "1",
            "--reveal",
        ])
        .await;
    assert!(out.status.success(), "{:?}", text(&out));
    let m = metrics(&stack.admin["orders"]).await;
    assert!(
        m.contains(r#"faultline_faults_active{kind="http.latency"} 1"#),
        "{m}"
    );
    stack.stop().await;
}

/// A stand-in for Grafana's HTTP API that records the annotations it is sent.
async fn fake_grafana() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use axum::routing::post;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let app = axum::Router::new().route(
        "/api/annotations",
        post({
            let seen = seen.clone();
            move |axum::Json(body): axum::Json<serde_json::Value>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(body);
                    axum::Json(serde_json::json!({"id": 1, "message": "Annotation added"}))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn set_and_clear_are_annotated_in_grafana_when_it_answers() {
    let collector = FakeCollector::start().await;
    let mut stack = start_stack(&collector, None, "/readyz").await;
    let (grafana, seen) = fake_grafana().await;

    let out = stack
        .cli_with(
            &["fault", "set", "orders", "db.slow_query", "--ms", "200"],
            &[("GRAFANA_URL", &grafana)],
        )
        .await;
    assert!(out.status.success(), "{:?}", text(&out));
    let out = stack
        .cli_with(&["fault", "clear", "--all"], &[("GRAFANA_URL", &grafana)])
        .await;
    assert!(out.status.success(), "{:?}", text(&out));

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let tags: Vec<&str> = seen[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(
        tags.contains(&"faultline") && tags.contains(&"db.slow_query"),
        "{tags:?}"
    );
    assert!(
        seen[0]["text"].as_str().unwrap().contains("orders"),
        "{seen:?}"
    );
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(now_ms - seen[0]["time"].as_u64().unwrap() < 60_000);
    assert!(
        seen[1]["text"].as_str().unwrap().contains("cleared"),
        "{seen:?}"
    );

    // Grafana down: the fault is still set, quietly.
    let out = stack
        .cli_with(
            &["fault", "set", "orders", "http.latency", "--ms", "5"],
            &[("GRAFANA_URL", "http://127.0.0.1:9")],
        )
        .await;
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out).1.is_empty(),
        "no noise on stderr: {:?}",
        text(&out)
    );
    stack.stop().await;
}

/// With no service running, each verb that needs them fails with one line saying so (not a
/// warning per service, and not "no such fault").
#[tokio::test]
async fn with_no_service_running_each_admin_verb_fails_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let closed: Vec<(String, String)> = ["GATEWAY", "ORDERS", "FULFILLMENT"]
        .iter()
        .map(|s| {
            (
                format!("FAULTLINE_{s}_ADMIN_URL"),
                format!("http://127.0.0.1:{}", support::free_port()),
            )
        })
        .collect();
    for args in [
        &["fault", "list"][..],
        &["fault", "clear", "--all"][..],
        &["fault", "clear", "f-12345678"][..],
        &["drill", "stop"][..],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
            .args(args)
            .envs(closed.iter().map(|(k, v)| (k, v)))
            .env("FAULTLINE_DIR", dir.path())
            .env("FAULTLINE_ADMIN_TOKEN", "t")
            .env("GRAFANA_URL", "http://127.0.0.1:9")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        let (stdout, stderr) = failed_in_one_line(args, &out);
        assert!(
            stderr.starts_with("error: no service could be reached at http://127.0.0.1:"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("no service has a fault"), "{stderr}");
        assert_eq!(stdout, "", "{args:?}");
    }
}
