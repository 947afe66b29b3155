//! `faultline up` as a user runs it: on the fixed native ports, stopped with Ctrl-C.
//!
//! A terminal sends Ctrl-C's SIGINT to its whole foreground process group. This test does the
//! same to the group it starts `up` in, and checks that the services heard it from `up` (their
//! stdin closing), one after another against the flow of an order: gateway, fulfillment, orders.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fake_collector::FakeCollector;
use servicekit::client::HttpClient;
use tokio::process::Command;

const NATIVE_PORTS: [u16; 6] = [8080, 8081, 8082, 9080, 9081, 9082];
const STDIN_CLOSED: &str = "parent process went away (stdin closed), shutting down";

/// The JSON lines of a service's log in `up`'s state directory.
fn log_lines(dir: &Path, service: &str) -> Vec<serde_json::Value> {
    let path = dir.join("logs").join(format!("{service}.log"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn timestamp(line: &serde_json::Value) -> &str {
    line["timestamp"]
        .as_str()
        .expect("every line has a timestamp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_services_one_by_one_against_the_flow_of_an_order() {
    let busy: Vec<u16> = NATIVE_PORTS
        .into_iter()
        .filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_err())
        .collect();
    assert!(
        busy.is_empty(),
        "port(s) {busy:?} on 127.0.0.1 are in use — is a `faultline up` running? This test starts \
         the services on their fixed native ports 8080-8082 and 9080-9082; stop whatever holds them"
    );
    let collector = FakeCollector::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let out = std::fs::File::create(tmp.path().join("up.log")).unwrap();
    let mut up = Command::new(env!("CARGO_BIN_EXE_faultline"));
    up.args(["up", "--no-load", "--dir"])
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.grpc_endpoint())
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("RUST_LOG")
        .env_remove("LOG_FORMAT")
        // A process group of its own, as a shell gives a job: Ctrl-C is sent to all of it.
        .process_group(0)
        .kill_on_drop(true);
    let mut up = up.spawn().expect("spawn faultline up");
    let group = up.id().expect("up is running");

    let client = HttpClient::new();
    for port in [9080, 9081, 9082] {
        let url = format!("http://127.0.0.1:{port}/readyz");
        let mut ready = false;
        for _ in 0..600 {
            if let Some(status) = up.try_wait().unwrap() {
                panic!(
                    "faultline up exited ({status}):\n{}",
                    std::fs::read_to_string(tmp.path().join("up.log")).unwrap_or_default()
                );
            }
            if matches!(client.get(&url, Duration::from_secs(1)).await, Ok(r) if r.status == 200) {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "{url} never answered 200");
    }
    // Ready by its own account too (it prints its banner once it has seen them all ready).
    let up_log = tmp.path().join("up.log");
    for _ in 0..600 {
        if std::fs::read_to_string(&up_log)
            .unwrap_or_default()
            .contains("Press Ctrl-C to stop.")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Some work in flight across all three, as when a user presses Ctrl-C mid-load.
    let order = client
        .send_json(
            http::Method::POST,
            "http://127.0.0.1:8080/api/orders",
            &serde_json::json!({"user_id": "u-1", "items": [{"sku": "sku-1", "quantity": 1}]}),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        order.status,
        202,
        "{}",
        String::from_utf8_lossy(&order.body)
    );

    // Ctrl-C, the way a terminal sends it: to every process of the foreground group.
    let sent = std::process::Command::new("kill")
        .args(["-INT", "--", &format!("-{group}")])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(60), up.wait())
        .await
        .expect("faultline up did not exit within 60 s of Ctrl-C")
        .unwrap();
    assert!(
        status.success(),
        "faultline up exited with {status}:\n{}",
        std::fs::read_to_string(&up_log).unwrap_or_default()
    );

    // Each service was told by `up` (its stdin closing), not by the terminal's signal, and
    // was told only once the one before it in the stop order had exited.
    let mut previous: Option<(&str, String)> = None;
    for service in ["gateway", "fulfillment", "orders"] {
        let lines = log_lines(&state, service);
        let reasons: Vec<&str> = lines
            .iter()
            .filter_map(|l| l["message"].as_str())
            .filter(|m| m.ends_with("shutting down"))
            .collect();
        assert_eq!(reasons, [STDIN_CLOSED], "{service}'s reasons to stop");
        let told = lines
            .iter()
            .find(|l| l["message"] == STDIN_CLOSED)
            .map(timestamp)
            .unwrap();
        if let Some((before, last)) = &previous {
            assert!(
                told > last.as_str(),
                "{service} was told to stop at {told}, before {before} had finished ({last})"
            );
        }
        let last = lines.last().map(timestamp).unwrap().to_owned();
        previous = Some((service, last));
    }
}
