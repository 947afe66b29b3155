//! `faultline up` as a user runs it: on the fixed native ports, stopped with Ctrl-C.
//!
//! A terminal sends Ctrl-C's SIGINT to its whole foreground process group. This test does the
//! same to the group it starts `up` in, and checks that the services heard it from `up` (their
//! stdin closing), one after another against the flow of an order: gateway, fulfillment, orders;
//! and that a second Ctrl-C kills what still runs.

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

/// The tests here share the fixed native ports: one at a time.
static PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn up_refuses_to_start_beside_whatever_holds_a_native_port() {
    let _ports = PORTS.lock().await;
    // As a running lab (or `faultline serve orders`) would: its readiness endpoint answers.
    let holder = std::net::TcpListener::bind(("127.0.0.1", 9081))
        .expect("port 9081 is free (no `faultline up` may run beside these tests)");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let run = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["up", "--no-load", "--dir"])
        .arg(&state)
        .stdin(Stdio::null())
        .env("OTEL_SDK_DISABLED", "true")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("up gave up within 20 s")
        .unwrap();
    drop(holder);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("9081 (orders)") && stderr.contains("already in use"),
        "{stderr}"
    );
    assert!(!stdout.contains("ready"), "{stdout}");
    assert!(
        !state.join("admin-token").exists(),
        "nothing written before the check"
    );
}

/// `faultline up` (with `args`), running and ready by its own account.
struct Up {
    child: tokio::process::Child,
    /// Its process group (its own, as a shell gives a job).
    group: u32,
    state: std::path::PathBuf,
    log: std::path::PathBuf,
    collector: FakeCollector,
    _tmp: tempfile::TempDir,
}

impl Up {
    async fn start(args: &[&str]) -> Self {
        let busy: Vec<u16> = NATIVE_PORTS
            .into_iter()
            .filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_err())
            .collect();
        assert!(
            busy.is_empty(),
            "port(s) {busy:?} on 127.0.0.1 are in use — is a `faultline up` running? This test \
             starts the services on their fixed native ports 8080-8082 and 9080-9082; stop \
             whatever holds them"
        );
        let collector = FakeCollector::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let log = tmp.path().join("up.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut up = Command::new(env!("CARGO_BIN_EXE_faultline"));
        up.arg("up")
            .args(args)
            .arg("--dir")
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.grpc_endpoint())
            .env_remove("OTEL_SDK_DISABLED")
            .env_remove("RUST_LOG")
            .env_remove("LOG_FORMAT")
            .env_remove("FAULTLINE_ADMIN_TOKEN")
            // A process group of its own, as a shell gives a job: Ctrl-C is sent to all of it.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = up.spawn().expect("spawn faultline up");
        let group = child.id().expect("up is running");
        // Ready by its own account: it prints its banner once it has seen every service ready.
        for _ in 0..600 {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "faultline up exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("Press Ctrl-C to stop.")
            {
                return Self {
                    child,
                    group,
                    state,
                    log,
                    collector,
                    _tmp: tmp,
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "faultline up printed no banner within 60 s:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Ctrl-C, the way a terminal sends it: to every process of the foreground group.
    fn ctrl_c(&self) {
        let sent = std::process::Command::new("kill")
            .args(["-INT", "--", &format!("-{}", self.group)])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits (at most `limit`) for `up` to exit; its exit status.
    async fn exited_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "faultline up did not exit within {limit:?}:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
            })
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_services_one_by_one_against_the_flow_of_an_order() {
    let _ports = PORTS.lock().await;
    let mut up = Up::start(&["--no-load"]).await;
    let client = HttpClient::new();
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

    up.ctrl_c();
    let status = up.exited_within(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "faultline up exited with {status}:\n{}",
        std::fs::read_to_string(&up.log).unwrap_or_default()
    );

    // `up`'s own polls for readiness are not exported as the load's CLIENT spans.
    let polls: Vec<String> = up
        .collector
        .spans()
        .iter()
        .filter(|s| s.service_name == "faultline-load")
        .filter_map(|s| s.attr_str("url.full"))
        .filter(|url| url.contains("/readyz"))
        .collect();
    assert!(polls.is_empty(), "{polls:?}");

    // Each service was told by `up` (its stdin closing), not by the terminal's signal, and
    // was told only once the one before it in the stop order had exited.
    let mut previous: Option<(&str, String)> = None;
    for service in ["gateway", "fulfillment", "orders"] {
        let lines = log_lines(&up.state, service);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_kills_what_still_runs() {
    let _ports = PORTS.lock().await;
    // The built-in load, against a gateway that never answers: after Ctrl-C, `up` waits for
    // the load's requests in flight (their timeout is 10 s) before it stops the services.
    let mut up = Up::start(&[]).await;
    let set = std::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["fault", "set", "gateway", "http.hang", "--dir"])
        .arg(&up.state)
        .env_remove("FAULTLINE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    // A few requests hang (5 per second).
    tokio::time::sleep(Duration::from_secs(1)).await;
    up.ctrl_c();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        up.child.try_wait().unwrap().is_none(),
        "up should still be waiting for the hung requests"
    );
    up.ctrl_c();
    // Killed at once: well before the 10 s the hung requests would take.
    let status = up.exited_within(Duration::from_secs(5)).await;
    assert_eq!(
        status.code(),
        Some(130),
        "128 + SIGINT, as a shell reports it"
    );
    let output = std::fs::read_to_string(&up.log).unwrap();
    assert!(
        output.contains("Second signal (SIGINT): killing the services"),
        "{output}"
    );
    // No service outlives it (each was killed; none is left on its port).
    for port in NATIVE_PORTS {
        let mut free = false;
        for _ in 0..50 {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                free = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(free, "port {port} still held after up exited");
    }
}
