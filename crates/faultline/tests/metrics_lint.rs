//! Each service's `/metrics` passes `promtool check metrics` (Prometheus' own linter: naming,
//! units, `_total` on counters, help text) with nothing to report, after real traffic has
//! created every kind of series.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use fake_collector::FakeCollector;
use servicekit::client::HttpClient;
use support::start_stack;

/// `promtool`, or `None` with a note; under CI (`FAULTLINE_REQUIRE_EXTERNAL_TESTS`) it must exist.
fn promtool() -> Option<String> {
    if let Ok(p) = std::env::var("PROMTOOL")
        && !p.is_empty()
    {
        return Some(p);
    }
    match Command::new("promtool").arg("--version").output() {
        Ok(o) if o.status.success() => Some("promtool".to_owned()),
        _ if std::env::var_os("FAULTLINE_REQUIRE_EXTERNAL_TESTS").is_some() => {
            panic!("promtool is required under CI (install Debian's `prometheus` package)")
        }
        _ => {
            eprintln!("note: promtool not found; skipping the metrics lint");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_services_metrics_pass_promtool_check_metrics() {
    let Some(promtool) = promtool() else { return };
    let collector = FakeCollector::start().await;
    let mut stack = start_stack(&collector, None, "/readyz").await;
    let client = HttpClient::new();
    // Traffic that creates server, client, database, messaging and error series.
    let placed = client
        .send_json(
            http::Method::POST,
            &format!("{}/api/orders", stack.gateway),
            &serde_json::json!({"user_id": "u-lint", "items": [{"sku": "sku-2", "quantity": 1}]}),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(placed.status, 202);
    for path in [
        "/api/users/u-lint/summary",
        "/api/orders/not-a-uuid",
        "/nowhere",
    ] {
        client
            .get(&format!("{}{path}", stack.gateway), Duration::from_secs(5))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    for (service, admin) in &stack.admin {
        let body = client
            .get(&format!("{admin}/metrics"), Duration::from_secs(5))
            .await
            .unwrap()
            .body;
        assert!(!body.is_empty(), "{service} serves metrics");
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        child.stdin.take().unwrap().write_all(&body).unwrap();
        let out = child.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "promtool check metrics on {service}:\n{report}"
        );
    }
    stack.stop().await;
}

/// The contract's counters without labels are exported at 0 from the start, so that `rate()`
/// and `increase()` read 0 rather than "no data" before their first event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_without_labels_are_exported_at_zero_from_the_start() {
    let collector = FakeCollector::start().await;
    let mut stack = start_stack(&collector, None, "/readyz").await;
    let client = HttpClient::new();
    for (service, counter) in [
        ("gateway", "gateway_rate_limited_requests_total"),
        ("orders", "orders_stock_conflicts_total"),
        ("fulfillment", "fulfillment_dead_letters_total"),
    ] {
        let body = client
            .get(
                &format!("{}/metrics", stack.admin[service]),
                Duration::from_secs(5),
            )
            .await
            .unwrap()
            .body;
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.lines().any(|l| l == format!("{counter} 0")),
            "{service} exports `{counter} 0`:\n{body}"
        );
        assert!(
            body.contains(&format!("# TYPE {counter} counter")),
            "{service}: {counter} is a counter"
        );
    }
    stack.stop().await;
}
