//! THE data test: every PromQL expression in every dashboard panel and every rule returns data
//! from a real Prometheus that has scraped `faultline up` under load.
//!
//! It starts `faultline up --rps 20` (the three services on their fixed native ports and the
//! load generator), then Debian's `prometheus` on a free loopback port with a copy of
//! `deploy/prometheus/native.yml` and the rules next to it, and queries `/api/v1/query` until
//! every panel expression and recording rule returns at least one non-NaN sample (or a deadline
//! passes). Alert expressions are empty while all is well, so they only have to evaluate without
//! an error — and Prometheus must report every rule healthy. Grafana's variables are replaced
//! the way Grafana would: `$__rate_interval` → `1m`, `$__interval` → `15s`, `$__range` → `5m`,
//! template variables → `.+`.
//!
//! Only the metrics that exist solely in docker compose are exempt from returning data (see
//! [`COMPOSE_ONLY`]); their expressions must still evaluate without an error.

mod support;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use servicekit::client::HttpClient;

/// The native ports `faultline up` binds: apps 8080-8082, admin listeners 9080-9082.
const NATIVE_PORTS: [u16; 6] = [8080, 8081, 8082, 9080, 9081, 9082];

/// Metric-name prefixes that exist only in docker compose, with the reason. An expression that
/// mentions one need not return data here; it must still evaluate without an error.
const COMPOSE_ONLY: &[(&str, &str)] = &[
    (
        "traces_span_metrics_",
        "span metrics (with exemplars) come from the OpenTelemetry Collector's spanmetrics connector, which runs only in docker compose",
    ),
    (
        "otelcol_",
        "the OpenTelemetry Collector's own metrics; the collector runs only in docker compose",
    ),
];

/// Grafana's built-in variables, as this test replaces them (longest names first).
const GRAFANA_VARIABLES: &[(&str, &str)] = &[
    ("__rate_interval_ms", "60000"),
    ("__rate_interval", "1m"),
    ("__interval_ms", "15000"),
    ("__interval", "15s"),
    ("__range_ms", "300000"),
    ("__range_s", "300"),
    ("__range", "5m"),
];

/// How long to wait, after Prometheus is up, for every expression to return data.
const DATA_DEADLINE: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Panel,
    Recording,
    Alert,
}

#[derive(Debug)]
struct Expression {
    /// Where it comes from, for the failure message.
    source: String,
    /// The query as sent (variables replaced).
    query: String,
    kind: Kind,
    /// Why it may return nothing here, if it may.
    exempt: Option<&'static str>,
}

// ---------------------------------------------------------------------------------------------
// Collecting the expressions
// ---------------------------------------------------------------------------------------------

/// Replaces `$name`, `${name}`, `${name:format}` and `[[name]]`: Grafana's built-ins by the
/// values above, the dashboard's template variables by `.+`. Any other `$name` is an error.
fn substitute(expr: &str, template_vars: &BTreeSet<String>) -> Result<String, String> {
    let lookup = |name: &str| -> Option<String> {
        GRAFANA_VARIABLES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
            .or_else(|| template_vars.contains(name).then(|| ".+".to_owned()))
    };
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(pos) = rest.find(['$', '[']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(inner) = tail.strip_prefix("${") {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {expr:?}"))?;
            let name = inner[..end].split(':').next().unwrap_or_default();
            out.push_str(
                &lookup(name).ok_or_else(|| format!("unknown variable ${{{name}}} in {expr:?}"))?,
            );
            rest = &inner[end + 1..];
        } else if let Some(inner) = tail.strip_prefix("[[") {
            match inner.find("]]") {
                Some(end) if inner[..end].chars().all(is_ident) && end > 0 => {
                    let name = &inner[..end];
                    out.push_str(
                        &lookup(name)
                            .ok_or_else(|| format!("unknown variable [[{name}]] in {expr:?}"))?,
                    );
                    rest = &inner[end + 2..];
                }
                _ => {
                    out.push('[');
                    rest = &tail[1..];
                }
            }
        } else if let Some(inner) = tail.strip_prefix('$') {
            let len = inner.find(|c: char| !is_ident(c)).unwrap_or(inner.len());
            if len == 0 {
                // A regular-expression anchor such as `=~"foo$"`.
                out.push('$');
                rest = inner;
            } else {
                let name = &inner[..len];
                out.push_str(
                    &lookup(name).ok_or_else(|| format!("unknown variable ${name} in {expr:?}"))?,
                );
                rest = &inner[len..];
            }
        } else {
            out.push('[');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn exemption(query: &str) -> Option<&'static str> {
    COMPOSE_ONLY
        .iter()
        .find(|(prefix, _)| query.contains(prefix))
        .map(|(_, reason)| *reason)
}

/// Every PromQL expression in every Prometheus panel query of every dashboard.
fn dashboard_expressions(repo: &Path) -> Vec<Expression> {
    let dir = repo.join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let name = format!("dashboards/{}", file.file_name().unwrap().to_string_lossy());
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let template_vars: BTreeSet<String> = dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str().map(str::to_owned))
            .collect();
        let mut stack: Vec<&Value> = dashboard["panels"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        while let Some(panel) = stack.pop() {
            stack.extend(panel["panels"].as_array().into_iter().flatten());
            let panel_type = panel["datasource"]["type"].as_str();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let target_type = target["datasource"]["type"].as_str().or(panel_type);
                if target_type != Some("prometheus") || target["hide"] == true {
                    continue;
                }
                let expr = target["expr"].as_str().unwrap_or_default();
                let source = format!(
                    "{name} › panel \"{}\" › query {}",
                    panel["title"].as_str().unwrap_or("(untitled)"),
                    target["refId"].as_str().unwrap_or("?")
                );
                let query =
                    substitute(expr, &template_vars).unwrap_or_else(|e| panic!("{source}: {e}"));
                out.push(Expression {
                    exempt: exemption(&query),
                    source,
                    query,
                    kind: Kind::Panel,
                });
            }
        }
    }
    out.sort_by(|a, b| a.source.cmp(&b.source));
    out
}

/// Every rule's expression in `deploy/prometheus/rules/*.y{a,}ml`, and the number of rules.
fn rule_expressions(rules_dir: &Path) -> Vec<Expression> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(rules_dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let name = format!(
            "deploy/prometheus/rules/{}",
            file.file_name().unwrap().to_string_lossy()
        );
        let doc: Value = serde_norway::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for group in doc["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                let expr = rule["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: a rule without a string expr: {rule}"));
                let (kind, rule_name) = match (rule["record"].as_str(), rule["alert"].as_str()) {
                    (Some(record), None) => (Kind::Recording, record),
                    (None, Some(alert)) => (Kind::Alert, alert),
                    _ => panic!("{name}: a rule is either `record` or `alert`: {rule}"),
                };
                out.push(Expression {
                    source: format!(
                        "{name} › group {} › {} {rule_name}",
                        group["name"].as_str().unwrap_or("?"),
                        if kind == Kind::Alert {
                            "alert"
                        } else {
                            "record"
                        }
                    ),
                    exempt: exemption(expr),
                    query: expr.trim().to_owned(),
                    kind,
                });
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A child process stopped (signal, then a bounded wait, then SIGKILL) when dropped, so a
/// failing test leaves nothing running.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
    signal: &'static str,
}

impl Process {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Panics with the log if the process has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); its output:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// Sends the signal, waits up to 20 s, then kills. Returns whether it stopped by itself.
    fn stop(&mut self) -> bool {
        if self.child.try_wait().ok().flatten().is_some() {
            return true;
        }
        let _ = Command::new("kill")
            .arg(format!("-{}", self.signal))
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(name: &'static str, mut cmd: Command, log: PathBuf, signal: &'static str) -> Process {
    let out = File::create(&log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
    Process {
        name,
        child,
        log,
        signal,
    }
}

/// The `faultline` binary: `FAULTLINE_BIN`, or built now (`cargo build -p faultline` in this
/// test's profile, which is quick when `cargo test --workspace` has just built it).
fn faultline_binary(repo: &Path) -> PathBuf {
    if let Some(bin) = std::env::var_os("FAULTLINE_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "-p",
        "faultline",
        "--bin",
        "faultline",
        "--message-format=json-render-diagnostics",
    ]);
    if !cfg!(debug_assertions) {
        // `cargo test --release` built the release binary already.
        build.arg("--release");
    }
    let output = build
        .current_dir(repo)
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build -p faultline");
    assert!(
        output.status.success(),
        "cargo build -p faultline failed (set FAULTLINE_BIN to use a built binary)"
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "faultline")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo build reported no faultline executable")
}

/// A multi-line expression, indented under its `expr:` label.
fn indent(query: &str) -> String {
    query.replace('\n', "\n          ")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn port_in_use(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_err()
}

// ---------------------------------------------------------------------------------------------
// Talking to Prometheus
// ---------------------------------------------------------------------------------------------

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            write!(out, "%{b:02X}").unwrap();
        }
    }
    out
}

async fn get_json(client: &HttpClient, url: &str) -> Result<Value, String> {
    let response = client
        .get(url, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = response.json().map_err(|e| {
        format!(
            "HTTP {}: not JSON ({e}): {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        )
    })?;
    if body["status"] != "success" {
        return Err(format!(
            "{}: {}",
            body["errorType"].as_str().unwrap_or("error"),
            body["error"].as_str().unwrap_or("(no message)")
        ));
    }
    Ok(body["data"].clone())
}

/// What an instant query returned.
enum Outcome {
    /// At least one sample that is a number.
    Data,
    /// Series, but every value is NaN (e.g. a quantile over a window without requests).
    OnlyNaN(usize),
    Empty,
    /// Prometheus refused or failed the query.
    Error(String),
}

async fn evaluate(client: &HttpClient, base: &str, query: &str) -> Outcome {
    let url = format!("{base}/api/v1/query?query={}", url_encode(query));
    let data = match get_json(client, &url).await {
        Ok(data) => data,
        Err(e) => return Outcome::Error(e),
    };
    let values: Vec<String> = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["value"][1].as_str().unwrap_or_default().to_owned())
            .collect(),
        Some("scalar") | Some("string") => {
            vec![data["result"][1].as_str().unwrap_or_default().to_owned()]
        }
        Some("matrix") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                s["values"].as_array()?.last()?[1]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect(),
        other => return Outcome::Error(format!("unexpected resultType {other:?}")),
    };
    if values.is_empty() {
        Outcome::Empty
    } else if values.iter().all(|v| v == "NaN") {
        Outcome::OnlyNaN(values.len())
    } else {
        Outcome::Data
    }
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(()) => return,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_and_rule_expression_returns_data_from_a_real_prometheus() {
    let Some(prometheus_bin) = support::tool("prometheus", "PROMETHEUS") else {
        return;
    };
    let started = Instant::now();
    let repo = support::repo();
    let native_config = repo.join("deploy/prometheus/native.yml");
    assert!(
        native_config.is_file(),
        "{} is missing: the Prometheus config for a native `faultline up`",
        native_config.display()
    );
    let rules_dir = repo.join("deploy/prometheus/rules");

    // Everything to check, before anything starts: a bad variable fails here.
    let mut expressions = dashboard_expressions(&repo);
    let panel_count = expressions.len();
    expressions.extend(rule_expressions(&rules_dir));
    assert!(panel_count > 0, "no Prometheus queries in dashboards/");
    for (prefix, _) in COMPOSE_ONLY {
        assert!(
            expressions.iter().any(|e| e.query.contains(prefix)),
            "the exemption for {prefix:?} matches no expression any more: remove it from COMPOSE_ONLY"
        );
    }

    let busy: Vec<u16> = NATIVE_PORTS
        .into_iter()
        .filter(|p| port_in_use(*p))
        .collect();
    assert!(
        busy.is_empty(),
        "port(s) {busy:?} on 127.0.0.1 are in use — is a `faultline up` running? This test starts \
         the services on their fixed native ports 8080-8082 and 9080-9082; stop whatever holds them"
    );

    let binary = faultline_binary(&repo);
    let tmp = tempfile::tempdir().unwrap();
    let client = HttpClient::new();

    // The services and their load.
    let mut up_cmd = Command::new(&binary);
    up_cmd
        .args(["up", "--rps", "20", "--dir"])
        .arg(tmp.path().join("state"))
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("RUST_LOG");
    let mut up = spawn("faultline up", up_cmd, tmp.path().join("up.log"), "INT");
    for port in [9080, 9081, 9082] {
        let url = format!("http://127.0.0.1:{port}/readyz");
        wait_until(
            &format!("{url} answering 200"),
            Duration::from_secs(60),
            || {
                up.assert_running();
                let client = client.clone();
                let url = url.clone();
                async move {
                    match client.get(&url, Duration::from_secs(2)).await {
                        Ok(r) if r.status == 200 => Ok(()),
                        Ok(r) => Err(format!("HTTP {}", r.status)),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await;
    }

    // Prometheus with native.yml and the rules next to it (rule_files resolve relative to the
    // config file).
    let prom_dir = tmp.path().join("prometheus");
    std::fs::create_dir_all(prom_dir.join("rules")).unwrap();
    std::fs::copy(&native_config, prom_dir.join("native.yml")).unwrap();
    let mut rule_files = 0;
    for entry in std::fs::read_dir(&rules_dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(
                &path,
                prom_dir.join("rules").join(path.file_name().unwrap()),
            )
            .unwrap();
            rule_files += 1;
        }
    }
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut prom_cmd = Command::new(&prometheus_bin);
    prom_cmd
        .arg(format!(
            "--config.file={}",
            prom_dir.join("native.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--enable-feature=exemplar-storage")
        .current_dir(&prom_dir);
    let mut prometheus = spawn(
        "prometheus",
        prom_cmd,
        tmp.path().join("prometheus.log"),
        "TERM",
    );
    wait_until("Prometheus ready", Duration::from_secs(30), || {
        prometheus.assert_running();
        let client = client.clone();
        let url = format!("{base}/-/ready");
        async move {
            match client.get(&url, Duration::from_secs(2)).await {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status)),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    let scraping_since = Instant::now();

    // native.yml scrapes the three services, and they are up.
    wait_until(
        "every native target scraped and up",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            let url = format!("{base}/api/v1/targets?state=active");
            async move {
                let data = get_json(&client, &url).await?;
                let mut up_jobs = BTreeSet::new();
                for target in data["activeTargets"].as_array().into_iter().flatten() {
                    if target["health"] == "up" {
                        up_jobs.insert(target["labels"]["job"].as_str().unwrap_or("").to_owned());
                    }
                }
                let missing: Vec<_> = ["gateway", "orders", "fulfillment"]
                    .into_iter()
                    .filter(|j| !up_jobs.contains(*j))
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("jobs not up yet: {missing:?} (up: {up_jobs:?})"))
                }
            }
        },
    )
    .await;

    // Every rule file loaded.
    let rules_in_files = expressions.iter().filter(|e| e.kind != Kind::Panel).count();
    let loaded = get_json(&client, &format!("{base}/api/v1/rules"))
        .await
        .unwrap();
    let loaded_rules: usize = loaded["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| g["rules"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        loaded_rules, rules_in_files,
        "Prometheus loaded {loaded_rules} rules from native.yml's rule_files, the {rule_files} files in deploy/prometheus/rules/ hold {rules_in_files}"
    );

    // A query Prometheus rejects fails at once; one without data may be waiting for its first
    // samples, so it is retried until the deadline.
    let mut errors = Vec::new();
    for e in &expressions {
        if let Outcome::Error(message) = evaluate(&client, &base, &e.query).await {
            errors.push(format!(
                "{}\n    error: {message}\n    expr: {}",
                e.source,
                indent(&e.query)
            ));
        }
    }
    assert!(
        errors.is_empty(),
        "{} expression(s) do not evaluate on Prometheus 2.42:\n{}",
        errors.len(),
        errors.join("\n")
    );

    let deadline = Instant::now() + DATA_DEADLINE;
    let mut pending: Vec<&Expression> = expressions
        .iter()
        .filter(|e| e.kind != Kind::Alert && e.exempt.is_none())
        .collect();
    let mut rounds = 0;
    let mut report;
    loop {
        rounds += 1;
        prometheus.assert_running();
        up.assert_running();
        report = Vec::new();
        let mut still = Vec::new();
        for e in pending {
            let problem = match evaluate(&client, &base, &e.query).await {
                Outcome::Data => continue,
                Outcome::OnlyNaN(n) => format!("only NaN ({n} series)"),
                Outcome::Empty => "no data".to_owned(),
                Outcome::Error(message) => format!("error: {message}"),
            };
            report.push(format!(
                "{}\n    {problem}\n    expr: {}",
                e.source,
                indent(&e.query)
            ));
            still.push(e);
        }
        // Rules: evaluated at least once, and without an error.
        let rules = get_json(&client, &format!("{base}/api/v1/rules"))
            .await
            .unwrap();
        for group in rules["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                let health = rule["health"].as_str().unwrap_or("unknown");
                if health != "ok" {
                    report.push(format!(
                        "rule {} (group {}): health {health} {}",
                        rule["name"],
                        group["name"],
                        rule["lastError"].as_str().unwrap_or("")
                    ));
                }
            }
        }
        pending = still;
        if report.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let waited = scraping_since.elapsed();

    // Stop everything, and check nothing is left on the native ports.
    let prometheus_stopped = prometheus.stop();
    let up_stopped = up.stop();
    let left: Vec<u16> = NATIVE_PORTS
        .into_iter()
        .filter(|p| port_in_use(*p))
        .collect();

    assert!(
        report.is_empty(),
        "after {:.0} s of scraping `faultline up --rps 20`, {} problem(s) — a panel that shows nothing is a failure:\n{}",
        waited.as_secs_f64(),
        report.len(),
        report.join("\n")
    );
    assert!(
        up_stopped,
        "`faultline up` did not stop within 20 s of SIGINT"
    );
    assert!(
        prometheus_stopped,
        "prometheus did not stop within 20 s of SIGTERM"
    );
    assert!(
        left.is_empty(),
        "port(s) {left:?} still in use after `faultline up` stopped: a service was left behind"
    );

    let count = |kind| expressions.iter().filter(|e| e.kind == kind).count();
    let exempt: Vec<&Expression> = expressions.iter().filter(|e| e.exempt.is_some()).collect();
    eprintln!(
        "checked {} panel, {} recording-rule and {} alert expressions against Prometheus after {:.0} s of scraping ({rounds} round(s)); {:.0} s in all",
        count(Kind::Panel),
        count(Kind::Recording),
        count(Kind::Alert),
        waited.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for e in exempt {
        eprintln!(
            "  exempt from returning data (evaluates without error): {}\n    because {}",
            e.source,
            e.exempt.unwrap()
        );
    }
}

#[test]
fn grafana_variables_are_replaced() {
    let vars = BTreeSet::from(["route".to_owned()]);
    assert_eq!(
        substitute(
            r#"sum(rate(x{r=~"$route"}[$__rate_interval])) / sum(rate(x[${__rate_interval}]))"#,
            &vars
        )
        .unwrap(),
        r#"sum(rate(x{r=~".+"}[1m])) / sum(rate(x[1m]))"#
    );
    assert_eq!(
        substitute(
            r#"increase(x{r=~"[[route]]|a$"}[$__range]) + $__range_s + y[5m]"#,
            &vars
        )
        .unwrap(),
        r#"increase(x{r=~".+|a$"}[5m]) + 300 + y[5m]"#
    );
    assert_eq!(
        substitute("x[$__interval] ${route:regex}", &vars).unwrap(),
        "x[15s] .+"
    );
    assert!(substitute("x{a=\"$nope\"}", &vars).is_err());
}
