//! A stack of real `faultline serve` processes for the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fake_collector::FakeCollector;
use servicekit::client::HttpClient;
use tokio::process::{Child, Command};

/// The admin token every test stack runs with (`FAULTLINE_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub struct Service {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
}

pub struct Stack {
    pub services: Vec<Service>,
    pub gateway: String,
    /// Admin base URL of each service.
    pub admin: BTreeMap<&'static str, String>,
    /// The environment each service was started with (to restart one).
    pub envs: BTreeMap<&'static str, Vec<(String, String)>>,
    pub dir: tempfile::TempDir,
}

pub fn spawn_service(name: &'static str, env: &[(String, String)], log: PathBuf) -> Service {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline"));
    cmd.args(["serve", name, "--stop-on-stdin-eof"])
        .stdin(Stdio::piped())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_SDK_DISABLED");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Service {
        name,
        child: cmd.spawn().expect("spawn faultline serve"),
        log,
    }
}

pub async fn wait_for(service: &mut Service, url: &str) {
    let client = HttpClient::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = service.child.try_wait() {
            panic!(
                "{} exited ({status}):\n{}",
                service.name,
                std::fs::read_to_string(&service.log).unwrap_or_default()
            );
        }
        if let Ok(r) = client.get(url, Duration::from_secs(1)).await
            && r.status == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} not ready:\n{}",
            service.name,
            std::fs::read_to_string(&service.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A port nothing listens on now, for a service this test starts in a moment.
///
/// Taken from 20000–31999, below Linux's ephemeral range (32768–60999 by default): a port the
/// kernel hands out for `bind(0)` is also one it may give an outgoing connection of a test
/// running in parallel before the service binds it ("Address already in use" at start-up).
/// Each call moves on to the next port, from a per-process start, so two calls never return
/// the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % COUNT,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    for _ in 0..COUNT {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::AcqRel) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}–{}", FIRST + COUNT - 1)
}

/// Starts orders, fulfillment and gateway as separate processes; waits for `/readyz` (or only
/// `/healthz` when `ready_path` says so, for a stack whose queue is down on purpose).
pub async fn start_stack(
    collector: &FakeCollector,
    urls: Option<(String, String, String)>,
    ready_path: &str,
) -> Stack {
    start_stack_with(collector, urls, ready_path, &[]).await
}

/// [`start_stack`] with extra environment variables per service (`(service, name, value)`).
pub async fn start_stack_with(
    collector: &FakeCollector,
    urls: Option<(String, String, String)>,
    ready_path: &str,
    overrides: &[(&str, &str, &str)],
) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let ports: BTreeMap<&str, (u16, u16)> = ["gateway", "orders", "fulfillment"]
        .into_iter()
        .map(|s| (s, (free_port(), free_port())))
        .collect();
    let (orders_db, fulfillment_db, queue) = match urls {
        Some(urls) => urls,
        None => (
            format!("sqlite://{}/orders.db", dir.path().display()),
            format!("sqlite://{}/fulfillment.db", dir.path().display()),
            format!("sqlite://{}/queue.db", dir.path().display()),
        ),
    };
    let mut services = Vec::new();
    let mut envs = BTreeMap::new();
    for name in ["orders", "fulfillment", "gateway"] {
        let (app, admin) = ports[name];
        let mut env: Vec<(String, String)> = vec![
            ("LISTEN_ADDR".into(), format!("127.0.0.1:{app}")),
            ("ADMIN_LISTEN_ADDR".into(), format!("127.0.0.1:{admin}")),
            (
                "ORDERS_URL".into(),
                format!("http://127.0.0.1:{}", ports["orders"].0),
            ),
            (
                "FULFILLMENT_URL".into(),
                format!("http://127.0.0.1:{}", ports["fulfillment"].0),
            ),
            (
                "DATABASE_URL".into(),
                if name == "orders" {
                    orders_db.clone()
                } else {
                    fulfillment_db.clone()
                },
            ),
            ("QUEUE_URL".into(), queue.clone()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                collector.grpc_endpoint(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
            ("RUST_LOG".into(), "info".into()),
            ("LOG_FORMAT".into(), "json".into()),
            ("FAULTLINE_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
        ];
        for (service, k, v) in overrides {
            if *service == name {
                env.retain(|(key, _)| key != k);
                env.push((k.to_string(), v.to_string()));
            }
        }
        let log = dir.path().join(format!("{name}.log"));
        services.push(spawn_service(name, &env, log));
        envs.insert(name, env);
    }
    for s in services.iter_mut() {
        let url = format!("http://127.0.0.1:{}{ready_path}", ports[s.name].1);
        wait_for(s, &url).await;
    }
    Stack {
        services,
        gateway: format!("http://127.0.0.1:{}", ports["gateway"].0),
        admin: ports
            .iter()
            .map(|(name, (_, admin))| (*name, format!("http://127.0.0.1:{admin}")))
            .collect(),
        envs,
        dir,
    }
}

impl Stack {
    /// Runs the real `faultline` CLI against this stack (admin URLs, token and state directory
    /// set through the environment; Grafana pointed at a closed port) and returns its output.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_with(args, &[]).await
    }

    /// [`cli`](Self::cli) with extra environment variables (e.g. to drop the token).
    pub async fn cli_with(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline"));
        cmd.args(args)
            .env("FAULTLINE_DIR", self.dir.path())
            .env("FAULTLINE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("GRAFANA_URL", "http://127.0.0.1:9")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (name, url) in &self.admin {
            cmd.env(
                format!("FAULTLINE_{}_ADMIN_URL", name.to_ascii_uppercase()),
                url,
            );
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("the CLI finished within 60 s")
            .expect("run the faultline CLI")
    }

    /// Kills `name` outright (SIGKILL: no graceful anything), then starts it again with its
    /// original environment with `set` applied, and waits for `/healthz`.
    pub async fn kill_and_restart(&mut self, name: &'static str, set: &[(&str, &str)]) {
        let i = self.services.iter().position(|s| s.name == name).unwrap();
        let old = &mut self.services[i];
        old.child.start_kill().unwrap();
        let _ = old.child.wait().await;
        let mut env = self.envs[name].clone();
        for (k, v) in set {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        let log = self.dir.path().join(format!("{name}.log"));
        let mut fresh = spawn_service(name, &env, log);
        wait_for(&mut fresh, &format!("{}/healthz", self.admin[name])).await;
        self.services[i] = fresh;
        self.envs.insert(name, env);
    }

    /// Closes every service's stdin (graceful shutdown, telemetry flushed) and waits.
    pub async fn stop(&mut self) {
        for s in self.services.iter_mut() {
            drop(s.child.stdin.take());
        }
        for s in self.services.iter_mut() {
            let status = tokio::time::timeout(Duration::from_secs(20), s.child.wait())
                .await
                .unwrap_or_else(|_| panic!("{} did not stop within 20 s", s.name))
                .unwrap();
            assert!(status.success(), "{} exited with {status}", s.name);
        }
    }

    pub fn log_lines(&self, name: &str) -> Vec<serde_json::Value> {
        let s = self.services.iter().find(|s| s.name == name).unwrap();
        std::fs::read_to_string(&s.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
