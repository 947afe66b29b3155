//! Drills, tested as a user meets them: the real `faultline` binary against a real stack of
//! `faultline serve` processes exporting to an in-process OTLP collector.
//!
//! - One **symptom test per scenario** (named after its id): `faultline drill start <id>`,
//!   a few seconds of `faultline load`, then every `[[evidence]]` check of the scenario must
//!   hold in the telemetry — the spans the collector received, each service's `/metrics`
//!   scraped before the start and after the load, and the services' JSON log lines since the
//!   start (the check vocabulary is documented in `scenarios/README.md`). Then the right answer
//!   is graded right, a wrong one wrong, and `drill stop` leaves no fault anywhere.
//! - The CLI's own behaviour: state kept between runs, one drill at a time, hints counted,
//!   answers graded, random drills blind and repeatable, a failed start leaving nothing behind,
//!   usage errors.
//!
//! Each test starts its own stack; at most [`PARALLEL_STACKS`] run at once, so that the load of
//! one does not distort the latencies another measures.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use fake_collector::{FakeCollector, Span, SpanKind, StatusCode};
use serde_json::Value;
use servicekit::client::HttpClient;
use support::{Stack, start_stack_with};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

const TOKEN: &str = "drill-test-token";
const SERVICES: [&str; 3] = ["gateway", "orders", "fulfillment"];
/// Stacks running at once in this test binary.
const PARALLEL_STACKS: usize = 1;
static STACKS: Semaphore = Semaphore::const_new(PARALLEL_STACKS);

/// How long the evidence may take to show under load.
const EVIDENCE_DEADLINE: Duration = Duration::from_secs(40);
/// Load before the drill starts (the first requests warm the stack up).
const WARM_UP: Duration = Duration::from_secs(2);
/// Load before the first look at the evidence.
const FIRST_LOOK: Duration = Duration::from_secs(5);
/// How long after a span ended its children must have arrived (for `leaf`).
const LEAF_SETTLE: Duration = Duration::from_secs(2);
/// Requests per second of the load (a quarter of them checkouts).
const LOAD_RPS: &str = "20";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scenario_ids() -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(repo().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids
}

/// A scenario file as JSON (the test reads it on its own, independently of the CLI's types).
fn scenario(id: &str) -> Value {
    let path = repo().join(format!("scenarios/{id}.toml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every cause name and fault kind name: none may appear in what a blind drill prints.
fn spoilers() -> Vec<String> {
    let mut words: Vec<String> = chaos::FaultKind::ALL
        .iter()
        .map(|k| k.name().to_owned())
        .collect();
    for id in scenario_ids() {
        let cause = scenario(&id)["answer"]["cause"]
            .as_str()
            .unwrap()
            .to_owned();
        words.push(cause.replace('_', " "));
        words.push(cause);
    }
    words.sort();
    words.dedup();
    words
}

// ---------------------------------------------------------------------------------------------
// The lab: a stack, its collector, a state directory, and the CLI pointed at them
// ---------------------------------------------------------------------------------------------

struct Lab {
    collector: FakeCollector,
    stack: Stack,
    state: tempfile::TempDir,
    /// Overrides of the admin URLs the CLI uses (to make one unreachable).
    admin_override: BTreeMap<&'static str, String>,
}

impl Lab {
    async fn start() -> Lab {
        let collector = FakeCollector::start().await;
        let overrides: Vec<(&str, &str, &str)> = SERVICES
            .iter()
            .map(|s| (*s, "FAULTLINE_ADMIN_TOKEN", TOKEN))
            .collect();
        let stack = start_stack_with(&collector, None, "/readyz", &overrides).await;
        Lab {
            collector,
            stack,
            state: tempfile::tempdir().unwrap(),
            admin_override: BTreeMap::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline"));
        cmd.args(args)
            .env("FAULTLINE_DIR", self.state.path())
            .env("FAULTLINE_SCENARIOS", repo().join("scenarios"))
            .env("FAULTLINE_ADMIN_TOKEN", TOKEN)
            // Annotations go nowhere (a closed port), never to a Grafana on this machine.
            .env("GRAFANA_URL", "http://127.0.0.1:9")
            .env_remove("FAULTLINE_ADMIN_HOST")
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                self.collector.grpc_endpoint(),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for service in SERVICES {
            let url = self
                .admin_override
                .get(service)
                .cloned()
                .unwrap_or_else(|| self.stack.admin[service].clone());
            cmd.env(
                format!("FAULTLINE_{}_ADMIN_URL", service.to_ascii_uppercase()),
                url,
            );
        }
        cmd
    }

    /// Runs `faultline <args>` to completion.
    async fn cli(&self, args: &[&str]) -> Run {
        let output = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("faultline {args:?} did not finish within 60 s"))
            .unwrap();
        Run::new(args, output)
    }

    /// `faultline load` against the gateway, until dropped.
    fn load(&self) -> Child {
        self.command(&[
            "load",
            "--rps",
            LOAD_RPS,
            "--duration",
            "120s",
            "--target",
            &self.stack.gateway,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn faultline load")
    }

    /// Every service's `/metrics`.
    async fn scrape(&self) -> BTreeMap<String, Vec<Sample>> {
        let client = HttpClient::new();
        let mut out = BTreeMap::new();
        for service in SERVICES {
            let url = format!("{}/metrics", self.stack.admin[service]);
            let r = client.get(&url, Duration::from_secs(10)).await.unwrap();
            assert_eq!(r.status, 200, "{url}");
            out.insert(
                service.to_owned(),
                parse_exposition(&String::from_utf8_lossy(&r.body)),
            );
        }
        out
    }

    /// The faults each service has now.
    async fn faults(&self) -> BTreeMap<&'static str, Vec<Value>> {
        let client = HttpClient::new();
        let mut out = BTreeMap::new();
        for service in SERVICES {
            let url = format!("{}/admin/faults", self.stack.admin[service]);
            let r = client.get(&url, Duration::from_secs(10)).await.unwrap();
            let body: Value = r.json().unwrap();
            out.insert(
                service,
                body["faults"].as_array().cloned().unwrap_or_default(),
            );
        }
        out
    }

    fn log_counts(&self) -> BTreeMap<String, usize> {
        SERVICES
            .iter()
            .map(|s| (s.to_string(), self.stack.log_lines(s).len()))
            .collect()
    }
}

/// One finished CLI run.
struct Run {
    args: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn new(args: &[&str], output: Output) -> Run {
        Run {
            args: args.join(" "),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "faultline {} failed:\n{self}",
            self.args
        );
        self
    }

    fn exit(self, code: i32) -> Run {
        assert_eq!(
            self.code,
            Some(code),
            "faultline {}: expected exit {code}:\n{self}",
            self.args
        );
        self
    }

    fn says(self, needle: &str) -> Run {
        assert!(
            self.stdout.contains(needle),
            "faultline {}: stdout lacks {needle:?}:\n{self}",
            self.args
        );
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluating evidence checks (the vocabulary of scenarios/README.md)
// ---------------------------------------------------------------------------------------------

/// One sample of the Prometheus text format.
#[derive(Clone, Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name_end, mut labels) = (line.find(['{', ' ']).unwrap_or(line.len()), BTreeMap::new());
        let name = line[..name_end].to_owned();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut key = String::new();
            let mut end = inner.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '}' => {
                        end = i + 1;
                        break;
                    }
                    ',' | ' ' => {}
                    '=' => {
                        // A quoted value with \" \\ \n escapes.
                        let _ = chars.next(); // the opening quote
                        let mut value = String::new();
                        while let Some((_, c)) = chars.next() {
                            match c {
                                '\\' => match chars.next() {
                                    Some((_, 'n')) => value.push('\n'),
                                    Some((_, other)) => value.push(other),
                                    None => break,
                                },
                                '"' => break,
                                other => value.push(other),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    other => key.push(other),
                }
            }
            rest = &inner[end..];
        }
        let Some(value) = rest.split_whitespace().next() else {
            continue;
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// A pattern of `labels`, `attributes` and `fields`: equal; `*` any non-empty; `~x` contains
/// x; `^x` starts with x.
fn matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        !value.is_empty()
    } else if let Some(p) = pattern.strip_prefix('~') {
        value.contains(p)
    } else if let Some(p) = pattern.strip_prefix('^') {
        value.starts_with(p)
    } else {
        value == pattern
    }
}

fn patterns(check: &Value, key: &str) -> Vec<(String, String)> {
    check[key]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

fn sum(samples: &[Sample], name: &str, labels: &[(String, String)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, p)| matches(p, s.labels.get(k).map(String::as_str).unwrap_or_default()))
        })
        .map(|s| s.value)
        .sum()
}

/// What the telemetry holds at one look.
struct Observed<'a> {
    before: &'a BTreeMap<String, Vec<Sample>>,
    after: &'a BTreeMap<String, Vec<Sample>>,
    spans: &'a [Span],
    logs: &'a BTreeMap<String, Vec<Value>>,
}

/// `Ok(what was seen)` when the check holds, `Err(what was seen instead)`.
fn evaluate(signal: &str, check: &Value, seen: &Observed<'_>) -> Result<String, String> {
    let service = check["service"].as_str().unwrap();
    match signal {
        "metric" => evaluate_metric(service, check, seen),
        "trace" => evaluate_trace(service, check, seen.spans),
        "log" => evaluate_log(service, check, &seen.logs[service]),
        other => Err(format!("unknown signal {other}")),
    }
}

fn evaluate_metric(service: &str, check: &Value, seen: &Observed<'_>) -> Result<String, String> {
    let name = check["metric"].as_str().unwrap();
    let labels = patterns(check, "labels");
    let (before, after) = (&seen.before[service], &seen.after[service]);
    let increase = sum(after, name, &labels) - sum(before, name, &labels);
    let value = sum(after, name, &labels);
    let (sum_name, count_name) = (format!("{name}_sum"), format!("{name}_count"));
    let d_sum = sum(after, &sum_name, &labels) - sum(before, &sum_name, &labels);
    let d_count = sum(after, &count_name, &labels) - sum(before, &count_name, &labels);
    let mean = if d_count > 0.0 {
        d_sum / d_count
    } else {
        f64::NAN
    };
    let seen_text = format!(
        "{service} {name}{labels:?}: value {value}, increase {increase}, mean {mean} over {d_count} observations"
    );
    let bound = |key: &str| check[key].as_f64();
    let mut failures = Vec::new();
    if let Some(min) = bound("min_increase")
        && increase < min
    {
        failures.push(format!("increase < {min}"));
    }
    if let Some(max) = bound("max_increase")
        && increase > max
    {
        failures.push(format!("increase > {max}"));
    }
    if let Some(min) = bound("min_value")
        && value < min
    {
        failures.push(format!("value < {min}"));
    }
    if let Some(max) = bound("max_value")
        && value > max
    {
        failures.push(format!("value > {max}"));
    }
    if let Some(min) = bound("min_mean")
        && out_of_bound(mean, |m| m < min)
    {
        failures.push(format!("mean < {min}"));
    }
    if let Some(max) = bound("max_mean")
        && out_of_bound(mean, |m| m > max)
    {
        failures.push(format!("mean > {max}"));
    }
    if failures.is_empty() {
        Ok(seen_text)
    } else {
        Err(format!("{seen_text} — {}", failures.join(", ")))
    }
}

/// A mean that is not a number (nothing observed) fails any bound.
fn out_of_bound(mean: f64, beyond: impl FnOnce(f64) -> bool) -> bool {
    mean.is_nan() || beyond(mean)
}

fn kind_of(name: &str) -> SpanKind {
    match name {
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        "internal" => SpanKind::Internal,
        other => panic!("unknown span kind {other}"),
    }
}

fn status_of(name: &str) -> StatusCode {
    match name {
        "error" => StatusCode::Error,
        "ok" => StatusCode::Ok,
        "unset" => StatusCode::Unset,
        other => panic!("unknown span status {other}"),
    }
}

/// The span's time not covered by its children (clipped to the span).
fn self_time(span: &Span, spans: &[Span]) -> Duration {
    let (start, end) = (
        span.start_unix_nanos,
        span.end_unix_nanos.max(span.start_unix_nanos),
    );
    let mut children: Vec<(u64, u64)> = spans
        .iter()
        .filter(|c| c.trace_id == span.trace_id && c.parent_span_id == span.span_id)
        .map(|c| {
            (
                c.start_unix_nanos.clamp(start, end),
                c.end_unix_nanos.clamp(start, end),
            )
        })
        .filter(|(s, e)| e > s)
        .collect();
    children.sort();
    let mut covered = 0;
    let mut cursor = start;
    for (s, e) in children {
        let s = s.max(cursor);
        if e > s {
            covered += e - s;
            cursor = e;
        }
    }
    Duration::from_nanos((end - start).saturating_sub(covered))
}

fn evaluate_trace(service: &str, check: &Value, spans: &[Span]) -> Result<String, String> {
    let name = check["span"].as_str().unwrap();
    let attributes = patterns(check, "attributes");
    let candidates: Vec<&Span> = spans
        .iter()
        .filter(|s| s.service_name == service && s.name == name)
        .filter(|s| check["kind"].as_str().is_none_or(|k| s.kind == kind_of(k)))
        .filter(|s| {
            check["status"]
                .as_str()
                .is_none_or(|st| s.status == status_of(st))
        })
        .filter(|s| {
            check["root"]
                .as_bool()
                .is_none_or(|root| s.parent_span_id.is_empty() == root)
        })
        .filter(|s| {
            attributes
                .iter()
                .all(|(k, p)| matches(p, &s.attr_str(k).unwrap_or_default()))
        })
        .collect();
    // Whether a span has children is judged only once they have had time to be exported.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let settled = |s: &Span| s.end_unix_nanos + LEAF_SETTLE.as_nanos() as u64 <= now;
    let candidates: Vec<&Span> = match check["leaf"].as_bool() {
        None => candidates,
        Some(leaf) => candidates
            .into_iter()
            .filter(|s| settled(s))
            .filter(|s| {
                let has_child = spans
                    .iter()
                    .any(|c| c.trace_id == s.trace_id && c.parent_span_id == s.span_id);
                has_child != leaf
            })
            .collect(),
    };
    let ms = |key: &str| check[key].as_u64().map(Duration::from_millis);
    let mut longest = Duration::ZERO;
    let mut longest_self = Duration::ZERO;
    let mut earliest_lead: i128 = i128::MIN;
    let matching = candidates
        .iter()
        .filter(|s| {
            let duration = s.duration();
            longest = longest.max(duration);
            let own = self_time(s, spans);
            longest_self = longest_self.max(own);
            let lead = spans
                .iter()
                .find(|p| p.trace_id == s.trace_id && p.span_id == s.parent_span_id)
                .map(|p| i128::from(p.start_unix_nanos) - i128::from(s.start_unix_nanos));
            if let Some(lead) = lead {
                earliest_lead = earliest_lead.max(lead);
            }
            ms("min_duration_ms").is_none_or(|min| duration >= min)
                && ms("min_self_ms").is_none_or(|min| own >= min)
                && ms("starts_before_parent_ms")
                    .is_none_or(|min| lead.is_some_and(|l| l >= min.as_nanos() as i128))
        })
        .count() as u64;
    let want = check["min_count"].as_u64().unwrap_or(1);
    let seen = format!(
        "{matching} of {} {service} spans {name:?} (kind/status/root/leaf/attributes matching) meet the thresholds; longest {longest:?}, longest own time {longest_self:?}, largest lead over the parent {} ms; {} spans received in all",
        candidates.len(),
        if earliest_lead == i128::MIN {
            "n/a".to_owned()
        } else {
            (earliest_lead / 1_000_000).to_string()
        },
        spans.len()
    );
    if matching >= want {
        Ok(seen)
    } else {
        Err(format!("{seen} — wanted {want}"))
    }
}

fn evaluate_log(service: &str, check: &Value, lines: &[Value]) -> Result<String, String> {
    let contains = check["contains"].as_str().unwrap();
    let fields = patterns(check, "fields");
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    let matching = lines
        .iter()
        .filter(|l| check["level"].as_str().is_none_or(|lvl| l["level"] == lvl))
        .filter(|l| l["message"].as_str().is_some_and(|m| m.contains(contains)))
        .filter(|l| {
            fields.iter().all(|(k, p)| {
                let v = l.get(k).map(text).unwrap_or_default();
                matches(p, &v)
            })
        })
        .count() as u64;
    let want = check["min_count"].as_u64().unwrap_or(1);
    let seen = format!(
        "{matching} {service} log lines match {contains:?} (of {} since the start)",
        lines.len()
    );
    if matching >= want {
        Ok(seen)
    } else {
        Err(format!("{seen} — wanted {want}"))
    }
}

/// One line per (service, name, kind, status): how many, and the longest.
fn span_summary(spans: &[Span]) -> String {
    let mut groups: BTreeMap<(String, String, String, String), (usize, Duration)> = BTreeMap::new();
    for s in spans {
        let key = (
            s.service_name.clone(),
            s.name.clone(),
            format!("{:?}", s.kind),
            format!("{:?}", s.status),
        );
        let entry = groups.entry(key).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(s.duration());
    }
    groups
        .into_iter()
        .map(|((service, name, kind, status), (n, longest))| {
            format!("  {service:<12} {name:<32} {kind:<9} {status:<6} {n:>5}  {longest:?}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// The symptom test
// ---------------------------------------------------------------------------------------------

async fn symptom_test(id: &str) {
    let _permit = STACKS.acquire().await.unwrap();
    let scenario = scenario(id);
    let answer_service = scenario["answer"]["service"].as_str().unwrap().to_owned();
    let answer_cause = scenario["answer"]["cause"].as_str().unwrap().to_owned();
    let evidence = scenario["evidence"].as_array().unwrap().clone();
    let lab = Lab::start().await;

    // As a user meets a drill: the shop is already busy when it starts.
    let mut load = lab.load();
    tokio::time::sleep(WARM_UP).await;
    let before = lab.scrape().await;
    let offsets = lab.log_counts();
    lab.collector.clear();
    let load_started = Instant::now();
    let started = lab.cli(&["drill", "start", id]).await.ok().says("Symptom:");
    // Blind: nothing that names the fault or the answer.
    let lower = started.stdout.to_lowercase();
    for word in spoilers() {
        assert!(
            !lower.contains(&word),
            "`drill start` gives away {word:?}:\n{started}"
        );
    }
    let expected = scenario["fault"].as_array().unwrap().len()
        + scenario["distractor"].as_array().map_or(0, Vec::len);
    let set: usize = lab.faults().await.values().map(Vec::len).sum();
    assert_eq!(
        set, expected,
        "the drill's faults (and distractors) are set"
    );

    tokio::time::sleep(FIRST_LOOK).await;
    let report = loop {
        let after = lab.scrape().await;
        let spans = lab.collector.spans();
        let logs: BTreeMap<String, Vec<Value>> = SERVICES
            .iter()
            .map(|s| (s.to_string(), lab.stack.log_lines(s).split_off(offsets[*s])))
            .collect();
        let seen = Observed {
            before: &before,
            after: &after,
            spans: &spans,
            logs: &logs,
        };
        let results: Vec<(String, Result<String, String>)> = evidence
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let signal = e["signal"].as_str().unwrap();
                let label = format!(
                    "#{} {signal}{} — {}",
                    i + 1,
                    if e["about"] == "distractor" {
                        " (distractor)"
                    } else {
                        ""
                    },
                    e["where"].as_str().unwrap_or_default()
                );
                (label, evaluate(signal, &e["check"], &seen))
            })
            .collect();
        let all_hold = results.iter().all(|(_, r)| r.is_ok());
        let report: Vec<String> = results
            .iter()
            .map(|(label, r)| match r {
                Ok(seen) => format!("  ok    {label}\n        {seen}"),
                Err(seen) => format!("  FAIL  {label}\n        {seen}"),
            })
            .collect();
        if all_hold {
            break report;
        }
        if load_started.elapsed() > EVIDENCE_DEADLINE {
            panic!(
                "{id}: the evidence did not all show within {EVIDENCE_DEADLINE:?} of load:\n{}\n\nspans received (service, name, kind, status: count, longest):\n{}",
                report.join("\n"),
                span_summary(&spans)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let _ = load.start_kill();
    let _ = load.wait().await;
    eprintln!(
        "{id}: all evidence seen after {:?} of load:\n{}",
        load_started.elapsed(),
        report.join("\n")
    );

    // Every hint, in order, with its start time filled in; then no more.
    let hints = scenario["hints"].as_array().unwrap().len();
    for n in 1..=hints {
        let hint = lab
            .cli(&["drill", "hint"])
            .await
            .ok()
            .says(&format!("Hint {n} of {hints}:"));
        assert!(!hint.stdout.contains("{start}"), "{hint}");
    }
    lab.cli(&["drill", "hint"]).await.ok().says("No more hints");

    // A wrong cause (same service), then the right answer.
    let wrong_cause = if answer_cause == "slow_query" {
        "memory_leak"
    } else {
        "slow_query"
    };
    lab.cli(&["drill", "answer", &answer_service, wrong_cause])
        .await
        .ok()
        .says("Wrong:")
        .says("the service is right");
    lab.cli(&["drill", "answer", &answer_service, &answer_cause])
        .await
        .ok()
        .says("Right:")
        .says("attempt 2")
        .says("The path through the telemetry");

    lab.cli(&["drill", "stop"]).await.ok().says("Drill stopped");
    for (service, faults) in lab.faults().await {
        assert!(faults.is_empty(), "{service} still has faults: {faults:?}");
    }
    assert!(!lab.state.path().join("drill.json").exists());
}

/// One `#[tokio::test]` per scenario, named after its id.
macro_rules! scenario_tests {
    ($($name:ident => $id:literal),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                symptom_test($id).await;
            }
        )*

        const TESTED: &[&str] = &[$($id),*];
    };
}

scenario_tests! {
    account_page_missing_shipments => "account-page-missing-shipments",
    account_page_slow => "account-page-slow",
    account_page_slow_degraded => "account-page-slow-degraded",
    checkout_failing => "checkout-failing",
    checkout_orders_unreachable => "checkout-orders-unreachable",
    checkout_slow_inventory => "checkout-slow-inventory",
    checkout_slower_when_busy => "checkout-slower-when-busy",
    checkout_sluggish => "checkout-sluggish",
    checkout_try_again => "checkout-try-again",
    everything_stuck_orders => "everything-stuck-orders",
    fulfilment_before_order => "fulfilment-before-order",
    fulfilment_lagging => "fulfilment-lagging",
    orders_ending_failed => "orders-ending-failed",
    orders_memory_climbing => "orders-memory-climbing",
    orders_never_fulfilled => "orders-never-fulfilled",
    orders_not_fulfilled_outbox => "orders-not-fulfilled-outbox",
    shop_jerky => "shop-jerky",
    status_page_spins => "status-page-spins",
    status_updates_lag => "status-updates-lag",
    traces_end_at_gateway => "traces-end-at-gateway",
}

/// The control experiment: the same load on a healthy stack must not show any scenario's
/// evidence — for every scenario, at least one check about the cause fails without its faults
/// (checks that say "this part is fine" hold either way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_stack_shows_no_scenarios_evidence() {
    let _permit = STACKS.acquire().await.unwrap();
    let lab = Lab::start().await;
    let mut load = lab.load();
    tokio::time::sleep(WARM_UP).await;
    let before = lab.scrape().await;
    let offsets = lab.log_counts();
    lab.collector.clear();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = lab.scrape().await;
    let _ = load.start_kill();
    let spans = lab.collector.spans();
    // The load generator's spans and the services' carry one environment.
    let environments: BTreeMap<&str, String> = spans
        .iter()
        .map(|s| {
            (
                s.service_name.as_str(),
                format!("{:?}", s.resource.get("deployment.environment.name")),
            )
        })
        .collect();
    assert!(
        environments.contains_key("faultline-load") && environments.contains_key("gateway"),
        "{environments:?}"
    );
    assert_eq!(
        environments
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        1,
        "{environments:?}"
    );
    let logs: BTreeMap<String, Vec<Value>> = SERVICES
        .iter()
        .map(|s| (s.to_string(), lab.stack.log_lines(s).split_off(offsets[*s])))
        .collect();
    let seen = Observed {
        before: &before,
        after: &after,
        spans: &spans,
        logs: &logs,
    };
    let mut shown_anyway = Vec::new();
    for id in scenario_ids() {
        let scenario = scenario(&id);
        let mut holding = Vec::new();
        let mut any_fails = false;
        for e in scenario["evidence"].as_array().unwrap() {
            if e["about"] == "distractor" {
                continue;
            }
            match evaluate(e["signal"].as_str().unwrap(), &e["check"], &seen) {
                Ok(seen) => holding.push(seen),
                Err(_) => any_fails = true,
            }
        }
        if !any_fails {
            shown_anyway.push(format!("{id}:\n  {}", holding.join("\n  ")));
        }
    }
    assert!(
        shown_anyway.is_empty(),
        "without any fault, these scenarios' evidence all holds (the checks prove nothing):\n{}",
        shown_anyway.join("\n")
    );
}

#[test]
fn every_scenario_has_a_symptom_test() {
    let mut tested: Vec<String> = TESTED.iter().map(|s| s.to_string()).collect();
    tested.sort();
    assert_eq!(
        tested,
        scenario_ids(),
        "scenario_tests! in tests/drills.rs must list every scenarios/*.toml"
    );
    assert!(tested.len() >= 12);
}

// ---------------------------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------------------------

/// A `faultline drill` run that needs no stack.
async fn offline(args: &[&str], cwd: &Path) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .current_dir(cwd)
        .env_remove("FAULTLINE_SCENARIOS")
        .env("FAULTLINE_DIR", cwd.join(".faultline"))
        .env("GRAFANA_URL", "http://127.0.0.1:9")
        .output()
        .await
        .unwrap();
    Run::new(args, output)
}

#[tokio::test]
async fn scenarios_validate_and_list_anywhere() {
    let repo = repo().canonicalize().unwrap();
    offline(&["drill", "validate"], &repo)
        .await
        .ok()
        .says("dashboards and runbooks checked");
    // Far from the repository: the scenarios built into the binary.
    let elsewhere = tempfile::tempdir().unwrap();
    let list = offline(&["drill", "list"], elsewhere.path())
        .await
        .ok()
        .says("built into faultline");
    for id in scenario_ids() {
        assert!(list.stdout.contains(&id), "{id} missing:\n{list}");
    }
    let lower = list.stdout.to_lowercase();
    for word in spoilers() {
        assert!(
            !lower.contains(&word),
            "`drill list` gives away {word:?}:\n{list}"
        );
    }
    offline(&["drill", "causes"], elsewhere.path())
        .await
        .ok()
        .says("lock_across_await");
    offline(&["drill", "status"], elsewhere.path())
        .await
        .ok()
        .says("No drill is running");
    let hint = offline(&["drill", "hint"], elsewhere.path()).await.exit(1);
    assert!(hint.stderr.contains("no drill is running"), "{hint}");
    assert_eq!(hint.stderr.lines().count(), 1, "one clear line:\n{hint}");
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["drill", "start"][..],
        &["drill", "start", "checkout-failing", "--random"],
        &["drill", "start", "--seed", "3"],
        &["drill", "answer", "orders"],
        &["drill", "answer", "payments", "slow_query"],
    ] {
        offline(args, dir.path()).await.exit(2);
    }
    let unknown = offline(&["drill", "answer", "orders", "gremlins"], dir.path())
        .await
        .exit(2);
    for cause in ["slow_query", "pool_exhaustion", "clock_skew"] {
        assert!(
            unknown.stderr.contains(cause),
            "valid causes listed:\n{unknown}"
        );
    }
    let missing = offline(&["drill", "start", "no-such-drill"], dir.path())
        .await
        .exit(1);
    assert!(missing.stderr.contains("drill list"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_state_survives_the_cli_and_answers_are_graded() {
    let _permit = STACKS.acquire().await.unwrap();
    let lab = Lab::start().await;
    lab.cli(&["drill", "start", "checkout-failing"]).await.ok();
    let again = lab
        .cli(&["drill", "start", "orders-never-fulfilled"])
        .await
        .exit(1);
    assert!(again.stderr.contains("already running"), "{again}");
    assert_eq!(again.stderr.lines().count(), 1, "one clear line:\n{again}");

    lab.cli(&["drill", "hint"]).await.ok().says("Hint 1 of 4:");
    lab.cli(&["drill", "hint"]).await.ok().says("Hint 2 of 4:");
    lab.cli(&["drill", "status"])
        .await
        .ok()
        .says("checkout-failing")
        .says("Hints used: 2 of 4. Attempts: 0")
        .says("Drill faults still active: 1 of 1");

    lab.cli(&["drill", "answer", "orders", "slow_query"])
        .await
        .ok()
        .says("Wrong: the service is right (orders), the cause is not slow_query");
    lab.cli(&["drill", "answer", "gateway", "http_errors"])
        .await
        .ok()
        .says("Wrong: the cause is right (http_errors), but it does not lie in gateway");
    lab.cli(&["drill", "answer", "orders", "http_errors"])
        .await
        .ok()
        .says("Right: orders / http_errors")
        .says("2 of 4 hints used; attempt 3")
        .says("What happened:");
    lab.cli(&["drill", "status"])
        .await
        .ok()
        .says("Attempts: 3 (solved after");
    // Exploring after the right answer does not change the grade.
    lab.cli(&["drill", "hint"]).await.ok().says("Hint 3 of 4:");
    lab.cli(&["drill", "answer", "orders", "http_errors"])
        .await
        .ok();
    lab.cli(&["drill", "status"])
        .await
        .ok()
        .says("Hints used: 2 of 4. Attempts: 3 (solved after");

    // --force replaces the drill and its faults.
    lab.cli(&["drill", "start", "orders-never-fulfilled", "--force"])
        .await
        .ok();
    let faults = lab.faults().await;
    assert!(
        faults["orders"].is_empty(),
        "the old drill's fault is gone: {faults:?}"
    );
    assert_eq!(faults["fulfillment"].len(), 1, "{faults:?}");
    // `fault list` does not give the answer away while the drill runs.
    let listed = lab.cli(&["fault", "list"]).await.ok().says("hidden");
    assert!(!listed.stdout.contains("consumer_stall"), "{listed}");
    let listed = lab.cli(&["fault", "list", "--json"]).await.ok();
    assert!(!listed.stdout.contains("consumer_stall"), "{listed}");
    lab.cli(&["drill", "reveal"])
        .await
        .ok()
        .says("The answer: fulfillment / consumer_stall")
        .says("queue.consumer_stall");
    // Revealed: nothing left to hide.
    lab.cli(&["fault", "list"])
        .await
        .ok()
        .says("queue.consumer_stall");
    lab.cli(&["drill", "answer", "fulfillment", "consumer_stall"])
        .await
        .ok()
        .says("not counted as solved");

    lab.cli(&["drill", "stop"])
        .await
        .ok()
        .says("Cleared 1 fault(s)");
    for (service, faults) in lab.faults().await {
        assert!(faults.is_empty(), "{service}: {faults:?}");
    }
    lab.cli(&["drill", "status"])
        .await
        .ok()
        .says("No drill is running");
    lab.cli(&["drill", "stop"])
        .await
        .ok()
        .says("No drill was running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_drills_are_blind_and_repeatable() {
    let _permit = STACKS.acquire().await.unwrap();
    let lab = Lab::start().await;
    let ids = scenario_ids();
    let mut briefs = Vec::new();
    for _ in 0..2 {
        let run = lab
            .cli(&["drill", "start", "--random", "--seed", "42"])
            .await
            .ok()
            .says("a random scenario (seed 42)");
        for id in &ids {
            assert!(
                !run.stdout.contains(id.as_str()),
                "names the scenario:\n{run}"
            );
        }
        let status = lab
            .cli(&["drill", "status"])
            .await
            .ok()
            .says("a random scenario");
        for id in &ids {
            assert!(
                !status.stdout.contains(id.as_str()),
                "names the scenario:\n{status}"
            );
        }
        let brief = run
            .stdout
            .split_once("Where to look:")
            .map(|(_, rest)| rest.split("\n\n").next().unwrap_or_default().to_owned())
            .unwrap();
        briefs.push(brief);
        lab.cli(&["drill", "stop"]).await.ok();
    }
    assert_eq!(
        briefs[0], briefs[1],
        "the same seed picks the same scenario"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_leaves_nothing_behind() {
    let _permit = STACKS.acquire().await.unwrap();
    let mut lab = Lab::start().await;
    // checkout-slow-inventory sets a fault on orders, then its distractor on the gateway,
    // whose admin API is made unreachable here.
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    lab.admin_override.insert("gateway", closed);
    let run = lab
        .cli(&["drill", "start", "checkout-slow-inventory"])
        .await
        .exit(1);
    assert!(run.stderr.contains("gateway is not reachable"), "{run}");
    assert!(run.stderr.contains("nothing was left behind"), "{run}");
    lab.admin_override.clear();
    for (service, faults) in lab.faults().await {
        assert!(faults.is_empty(), "{service}: {faults:?}");
    }
    assert!(!lab.state.path().join("drill.json").exists());
    lab.cli(&["drill", "status"])
        .await
        .ok()
        .says("No drill is running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_set_by_hand_keep_a_drill_from_starting_unless_forced() {
    let _permit = STACKS.acquire().await.unwrap();
    let mut lab = Lab::start().await;
    lab.cli(&["fault", "set", "gateway", "http.latency", "--ms", "5"])
        .await
        .ok();
    let run = lab
        .cli(&["drill", "start", "checkout-failing"])
        .await
        .exit(1);
    assert!(run.stderr.contains("1 fault(s) are already set"), "{run}");
    assert!(!lab.state.path().join("drill.json").exists());
    lab.cli(&["drill", "start", "checkout-failing", "--force"])
        .await
        .ok();
    let faults = lab.faults().await;
    assert!(
        faults
            .iter()
            .all(|(_, f)| f.iter().all(|f| f["kind"] != "http.latency")),
        "the hand-set fault was cleared: {faults:?}"
    );
    lab.cli(&["drill", "stop"]).await.ok();
    lab.stack.stop().await;
}
