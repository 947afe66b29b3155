//! `faultline drill …`: graded incident drills.
//!
//! A drill is a scenario file (`scenarios/*.toml`, described in `scenarios/README.md`): the
//! symptom as a user would report it, the faults to inject, the answer (a service and a cause
//! from [`Cause`]), hints from vague to specific, and the evidence — which dashboard panel,
//! trace search and log query show the cause.
//!
//! `drill start` sets the scenario's faults through the admin APIs ([`AdminApi`]) and prints
//! only the symptom and where to start looking: nothing that names the fault. The drill's state
//! (scenario, start time, hints used, attempts) lives in `<state dir>/drill.json`, so every
//! later command — `hint`, `answer`, `reveal`, `status`, `stop` — works from a fresh process.
//!
//! Scenarios are read from `--scenarios DIR` (env `FAULTLINE_SCENARIOS`). Without either, from
//! `./scenarios` when that directory exists, else from the copies embedded in the binary, so
//! `faultline drill list` works anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use chaos::{FaultKind, FaultSpec};
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::fault::{AdminApi, AdminArgs, annotate, describe_params};
use crate::serve::Service;

/// The state file, under the state directory.
const STATE_FILE: &str = "drill.json";
/// The scenario directory used when neither `--scenarios` nor `FAULTLINE_SCENARIOS` is given.
const DEFAULT_SCENARIOS: &str = "scenarios";

/// The scenarios compiled into the binary (the fallback when there is no `./scenarios`). A
/// unit test checks that this list and the `scenarios/` directory hold the same files.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "account-page-missing-shipments.toml",
        include_str!("../../../scenarios/account-page-missing-shipments.toml"),
    ),
    (
        "account-page-slow-degraded.toml",
        include_str!("../../../scenarios/account-page-slow-degraded.toml"),
    ),
    (
        "account-page-slow.toml",
        include_str!("../../../scenarios/account-page-slow.toml"),
    ),
    (
        "checkout-failing.toml",
        include_str!("../../../scenarios/checkout-failing.toml"),
    ),
    (
        "checkout-orders-unreachable.toml",
        include_str!("../../../scenarios/checkout-orders-unreachable.toml"),
    ),
    (
        "checkout-slow-inventory.toml",
        include_str!("../../../scenarios/checkout-slow-inventory.toml"),
    ),
    (
        "checkout-slower-when-busy.toml",
        include_str!("../../../scenarios/checkout-slower-when-busy.toml"),
    ),
    (
        "checkout-sluggish.toml",
        include_str!("../../../scenarios/checkout-sluggish.toml"),
    ),
    (
        "checkout-try-again.toml",
        include_str!("../../../scenarios/checkout-try-again.toml"),
    ),
    (
        "everything-stuck-orders.toml",
        include_str!("../../../scenarios/everything-stuck-orders.toml"),
    ),
    (
        "fulfilment-before-order.toml",
        include_str!("../../../scenarios/fulfilment-before-order.toml"),
    ),
    (
        "fulfilment-lagging.toml",
        include_str!("../../../scenarios/fulfilment-lagging.toml"),
    ),
    (
        "orders-ending-failed.toml",
        include_str!("../../../scenarios/orders-ending-failed.toml"),
    ),
    (
        "orders-memory-climbing.toml",
        include_str!("../../../scenarios/orders-memory-climbing.toml"),
    ),
    (
        "orders-never-fulfilled.toml",
        include_str!("../../../scenarios/orders-never-fulfilled.toml"),
    ),
    (
        "orders-not-fulfilled-outbox.toml",
        include_str!("../../../scenarios/orders-not-fulfilled-outbox.toml"),
    ),
    (
        "shop-jerky.toml",
        include_str!("../../../scenarios/shop-jerky.toml"),
    ),
    (
        "status-page-spins.toml",
        include_str!("../../../scenarios/status-page-spins.toml"),
    ),
    (
        "status-updates-lag.toml",
        include_str!("../../../scenarios/status-updates-lag.toml"),
    ),
    (
        "traces-end-at-gateway.toml",
        include_str!("../../../scenarios/traces-end-at-gateway.toml"),
    ),
];

// ---------------------------------------------------------------------------------------------
// The scenario format
// ---------------------------------------------------------------------------------------------

/// One scenario file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short, unique, the file's name without `.toml` (`checkout-slow-inventory`).
    pub id: String,
    /// A neutral title, shown by `drill list` (never naming the cause).
    pub title: String,
    /// How hard it is to find.
    pub difficulty: Difficulty,
    /// The report as a user would make it; `{start}` becomes the start time (`10:42 UTC`).
    pub symptom: String,
    /// Neutral starting points (dashboards, searches), never naming the cause.
    pub where_to_look: Vec<String>,
    /// Hints, from vague to specific.
    pub hints: Vec<String>,
    /// The right answer, and what to learn from it.
    pub answer: Answer,
    /// The faults that cause the symptom (blind: `reveal` stays off).
    #[serde(rename = "fault")]
    pub faults: Vec<FaultSpec>,
    /// Harmless faults that make a second, misleading signal.
    #[serde(default, rename = "distractor", skip_serializing_if = "Vec::is_empty")]
    pub distractors: Vec<FaultSpec>,
    /// Where the cause (and any distractor) shows in the telemetry.
    pub evidence: Vec<Evidence>,
}

/// How hard a scenario is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Difficulty {
    /// One dashboard panel gives it away.
    Easy,
    /// Needs a trace or a second signal.
    Medium,
    /// Needs reasoning across signals, or has a distractor.
    Hard,
}

impl fmt::Display for Difficulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Difficulty::Easy => "easy",
            Difficulty::Medium => "medium",
            Difficulty::Hard => "hard",
        })
    }
}

/// A scenario's answer.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The service where the cause lies.
    pub service: String,
    /// The cause.
    pub cause: Cause,
    /// What happened, in a few sentences.
    pub explanation: String,
    /// How one would fix it for real.
    pub fix: String,
    /// Why the distractor's signal is harmless (required when the scenario has distractors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distractor: Option<String>,
}

/// The fixed list of causes an answer chooses from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Cause {
    /// Database statements are slow.
    SlowQuery,
    /// Transactions fight over the same rows.
    LockContention,
    /// The database connection pool has no free connection.
    PoolExhaustion,
    /// The service's calls to a dependency are slow before they reach it.
    DependencyLatency,
    /// The service's calls to a dependency fail before they reach it.
    DependencyErrors,
    /// The service itself answers slowly.
    ServiceLatency,
    /// The service answers requests with server errors.
    HttpErrors,
    /// The service accepts requests and never answers them.
    HungRequests,
    /// The queue consumer stopped taking messages.
    ConsumerStall,
    /// Each message takes too long to process.
    SlowConsumer,
    /// Some messages fail on every delivery and end as dead letters.
    PoisonMessages,
    /// Messages cannot be published to the queue.
    PublishFailure,
    /// CPU-heavy work on the request path.
    CpuSaturation,
    /// A blocking call on an async worker thread.
    BlockingCall,
    /// A shared lock held across an await.
    LockAcrossAwait,
    /// Memory grows with requests and is never freed.
    MemoryLeak,
    /// Trace context is lost on one hop.
    BrokenPropagation,
    /// One service's clock is off.
    ClockSkew,
}

impl Cause {
    /// The name an answer uses (`slow_query`).
    pub fn name(self) -> &'static str {
        match self {
            Cause::SlowQuery => "slow_query",
            Cause::LockContention => "lock_contention",
            Cause::PoolExhaustion => "pool_exhaustion",
            Cause::DependencyLatency => "dependency_latency",
            Cause::DependencyErrors => "dependency_errors",
            Cause::ServiceLatency => "service_latency",
            Cause::HttpErrors => "http_errors",
            Cause::HungRequests => "hung_requests",
            Cause::ConsumerStall => "consumer_stall",
            Cause::SlowConsumer => "slow_consumer",
            Cause::PoisonMessages => "poison_messages",
            Cause::PublishFailure => "publish_failure",
            Cause::CpuSaturation => "cpu_saturation",
            Cause::BlockingCall => "blocking_call",
            Cause::LockAcrossAwait => "lock_across_await",
            Cause::MemoryLeak => "memory_leak",
            Cause::BrokenPropagation => "broken_propagation",
            Cause::ClockSkew => "clock_skew",
        }
    }

    /// What the cause means, in one line.
    pub fn summary(self) -> &'static str {
        match self {
            Cause::SlowQuery => "database statements take long inside the database",
            Cause::LockContention => {
                "transactions fight over the same rows (optimistic conflicts, lock waits)"
            }
            Cause::PoolExhaustion => {
                "the database connection pool has no free connection; requests wait for one"
            }
            Cause::DependencyLatency => {
                "this service's calls to a dependency are slow on the way (the dependency itself is fast)"
            }
            Cause::DependencyErrors => {
                "this service's calls to a dependency fail before the dependency sees them"
            }
            Cause::ServiceLatency => {
                "the service itself answers slowly, before doing any of its own work"
            }
            Cause::HttpErrors => "the service answers requests with server errors (5xx)",
            Cause::HungRequests => "the service accepts requests and never answers them",
            Cause::ConsumerStall => "the queue consumer stopped taking messages",
            Cause::SlowConsumer => "processing each message takes too long; the queue backs up",
            Cause::PoisonMessages => "some messages fail on every delivery and end as dead letters",
            Cause::PublishFailure => "messages cannot be published to the queue",
            Cause::CpuSaturation => "CPU-heavy work on the request path",
            Cause::BlockingCall => {
                "a blocking call on an async worker thread stalls every request on that thread"
            }
            Cause::LockAcrossAwait => "a shared lock held across an await serialises requests",
            Cause::MemoryLeak => "memory grows with every request and is never given back",
            Cause::BrokenPropagation => "trace context is lost on one hop, so traces break in two",
            Cause::ClockSkew => "one service's clock is off, so its spans sit at the wrong time",
        }
    }

    /// Every cause, in the order above.
    pub fn all() -> &'static [Cause] {
        Cause::value_variants()
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One piece of evidence: where a signal shows the cause, what it looks like, and a check a
/// test can run against the telemetry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// metric, trace or log.
    pub signal: Signal,
    /// Whether it shows the cause (default) or the distractor.
    #[serde(default, skip_serializing_if = "About::is_cause")]
    pub about: About,
    /// Where to look, for a human: the panel, the Jaeger search, the log query.
    #[serde(rename = "where")]
    pub location: String,
    /// The dashboard uid, when the evidence is on a dashboard panel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
    /// The panel title on that dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panel: Option<String>,
    /// What it looks like.
    pub shows: String,
    /// The machine-checkable form (see `scenarios/README.md`).
    pub check: Check,
}

/// The three signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// A Prometheus metric (a dashboard panel).
    Metric,
    /// A trace (Jaeger).
    Trace,
    /// A log line (Loki, or the log files).
    Log,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Metric => "metric",
            Signal::Trace => "trace",
            Signal::Log => "log",
        })
    }
}

/// Which fault a piece of evidence is about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum About {
    /// The real cause.
    #[default]
    Cause,
    /// The harmless second signal.
    Distractor,
}

impl About {
    fn is_cause(&self) -> bool {
        *self == About::Cause
    }
}

/// The machine-checkable part of a piece of evidence. Which fields apply depends on the
/// signal (`scenarios/README.md` has the vocabulary); the lint refuses the others.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// The service whose telemetry holds the signal.
    pub service: String,
    /// metric: the metric name (a histogram's base name for `min_mean`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// metric: labels every counted series must have (`"*"`: any non-empty value, `"~x"`:
    /// contains `x`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// metric: the matching series together grew by at least this much during the drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_increase: Option<f64>,
    /// metric: … and by at most this much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
    /// metric: their sum is at least this at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_value: Option<f64>,
    /// metric: … and at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value: Option<f64>,
    /// metric (histogram): the mean of what was observed during the drill is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_mean: Option<f64>,
    /// metric (histogram): … and at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mean: Option<f64>,
    /// trace: the span name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<String>,
    /// trace: the span kind (server, client, producer, consumer, internal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// trace: the span lasts at least this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duration_ms: Option<u64>,
    /// trace: the span's time not covered by its children is at least this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_self_ms: Option<u64>,
    /// trace: the span status (error, ok, unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// trace: the span has no parent (true) or has one (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<bool>,
    /// trace: the span has no child span (true: the call never arrived anywhere that traces
    /// it) or has one (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<bool>,
    /// trace: the span starts at least this long before its parent does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_before_parent_ms: Option<u64>,
    /// trace: attributes the span must have (same patterns as `labels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// log: the level (ERROR, WARN, INFO, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// log: the message contains this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// log: fields the line must have (same patterns as `labels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    /// trace, log: at least this many spans or lines match (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_count: Option<u64>,
}

/// Parses one scenario file's text.
fn parse_scenario(text: &str) -> Result<Scenario, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// Where the scenarios came from.
#[derive(Clone, Debug)]
enum Source {
    Dir(PathBuf),
    Embedded,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Dir(dir) => write!(f, "{}", dir.display()),
            Source::Embedded => f.write_str("the scenarios built into faultline"),
        }
    }
}

/// The scenarios, sorted by id, with the file each came from.
struct Catalogue {
    source: Source,
    scenarios: Vec<(String, Scenario)>,
}

impl Catalogue {
    /// Loads from `dir` when given (it must exist), else from `./scenarios` if it exists, else
    /// the embedded copies.
    fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        match dir {
            Some(dir) => Self::from_dir(dir),
            None if Path::new(DEFAULT_SCENARIOS).is_dir() => {
                Self::from_dir(Path::new(DEFAULT_SCENARIOS))
            }
            None => Self::embedded(),
        }
    }

    fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the scenario directory {}", dir.display()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        let mut scenarios = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let scenario = parse_scenario(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a valid scenario: {}",
                    file.display(),
                    one_line(&e)
                )
            })?;
            scenarios.push((name, scenario));
        }
        if scenarios.is_empty() {
            bail!("{} holds no scenario (*.toml)", dir.display());
        }
        Self::sorted(Source::Dir(dir.to_owned()), scenarios)
    }

    fn embedded() -> anyhow::Result<Self> {
        let mut scenarios = Vec::new();
        for (name, text) in EMBEDDED {
            let scenario = parse_scenario(text).map_err(|e| {
                anyhow::anyhow!("the built-in scenario {name} is invalid: {}", one_line(&e))
            })?;
            scenarios.push(((*name).to_owned(), scenario));
        }
        Self::sorted(Source::Embedded, scenarios)
    }

    fn sorted(source: Source, mut scenarios: Vec<(String, Scenario)>) -> anyhow::Result<Self> {
        scenarios.sort_by(|a, b| a.1.id.cmp(&b.1.id));
        for pair in scenarios.windows(2) {
            if pair[0].1.id == pair[1].1.id {
                bail!(
                    "two scenarios in {source} have the id {:?} ({} and {})",
                    pair[0].1.id,
                    pair[0].0,
                    pair[1].0
                );
            }
        }
        Ok(Self { source, scenarios })
    }

    fn get(&self, id: &str) -> anyhow::Result<&Scenario> {
        self.scenarios
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.id == id)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no scenario {id:?} in {} (see `faultline drill list`)",
                    self.source
                )
            })
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------------
// Lint: what makes a scenario acceptable
// ---------------------------------------------------------------------------------------------

/// Each service's fault registry with its default configuration: the kinds it runs, its
/// routes, and the targets each kind may name (what the running service will accept).
fn registry(service: Service) -> chaos::Faults {
    match service {
        Service::Gateway => gateway::Config::default().faults,
        Service::Orders => orders::Config::defaults().faults,
        Service::Fulfillment => fulfillment::fault_registry("http://127.0.0.1:8081"),
    }
}

fn parse_service(name: &str) -> Option<Service> {
    Service::ALL.into_iter().find(|s| s.name() == name)
}

/// Dashboard uid → panel titles, read from `dashboards/*.json`.
pub type Dashboards = BTreeMap<String, BTreeSet<String>>;

/// Reads every dashboard's uid and panel titles (rows' nested panels included).
fn read_dashboards(dir: &Path) -> anyhow::Result<Dashboards> {
    let mut out = Dashboards::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let dashboard: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let uid = dashboard["uid"].as_str().unwrap_or_default().to_owned();
        let mut titles = BTreeSet::new();
        let mut stack: Vec<&serde_json::Value> = dashboard["panels"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        while let Some(panel) = stack.pop() {
            stack.extend(panel["panels"].as_array().into_iter().flatten());
            if let Some(title) = panel["title"].as_str() {
                titles.insert(title.to_owned());
            }
        }
        out.insert(uid, titles);
    }
    Ok(out)
}

/// Words a blind text must not contain: every fault kind's name, every cause's name, and their
/// spelled-out forms (`slow query`, `memory leak`).
fn forbidden_words() -> Vec<String> {
    let mut words = BTreeSet::new();
    for kind in FaultKind::ALL {
        words.insert(kind.name().to_owned());
        let (_, tail) = kind.name().split_once('.').unwrap_or(("", kind.name()));
        if tail.contains('_') {
            words.insert(tail.to_owned());
            words.insert(tail.replace('_', " "));
        }
    }
    for cause in Cause::all() {
        words.insert(cause.name().to_owned());
        words.insert(cause.name().replace('_', " "));
    }
    words.into_iter().collect()
}

/// Everything wrong with the scenarios; empty when all is well. `file` is the scenario's file
/// name; `repo`, when given, is where `dashboards/` and `docs/runbooks/` are checked.
fn lint(scenarios: &[(String, Scenario)], repo: Option<&Path>) -> Vec<String> {
    let mut problems = Vec::new();
    let dashboards = repo.map(|r| read_dashboards(&r.join("dashboards")));
    let runbook_index = repo
        .map(|r| std::fs::read_to_string(r.join("docs/runbooks/README.md")).unwrap_or_default());
    let forbidden = forbidden_words();
    let mut ids = BTreeSet::new();
    for (file, s) in scenarios {
        let mut p = |msg: String| problems.push(format!("{file}: {msg}"));
        if !ids.insert(s.id.clone()) {
            p(format!("the id {:?} is used twice", s.id));
        }
        if s.id.is_empty()
            || !s
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            p(format!(
                "the id {:?} must be lowercase letters, digits and -",
                s.id
            ));
        }
        if file.strip_suffix(".toml") != Some(s.id.as_str()) {
            p(format!("the file must be named {}.toml", s.id));
        }
        for (what, text) in [("title", &s.title), ("symptom", &s.symptom)] {
            if text.trim().is_empty() {
                p(format!("{what} is empty"));
            }
        }
        if !s.symptom.contains("{start}") {
            p("the symptom should say since when, with {start}".into());
        }
        if s.where_to_look.is_empty() || s.where_to_look.iter().any(|w| w.trim().is_empty()) {
            p("where_to_look needs at least one non-empty entry".into());
        }
        if s.hints.is_empty() || s.hints.iter().any(|h| h.trim().is_empty()) {
            p("hints need at least one non-empty entry".into());
        }
        // Blindness: what `list` and `start` print must not give the answer away.
        let blind: Vec<(&str, &String)> = [("title", &s.title), ("symptom", &s.symptom)]
            .into_iter()
            .chain(s.where_to_look.iter().map(|w| ("where_to_look", w)))
            .collect();
        for (what, text) in blind {
            let lower = text.to_lowercase();
            for word in &forbidden {
                if lower.contains(word.as_str()) {
                    p(format!(
                        "{what} names a fault kind or cause ({word:?}): {text:?}"
                    ));
                }
            }
        }
        if parse_service(&s.answer.service).is_none() {
            p(format!(
                "answer.service {:?} is not gateway, orders or fulfillment",
                s.answer.service
            ));
        }
        for (what, text) in [
            ("answer.explanation", &s.answer.explanation),
            ("answer.fix", &s.answer.fix),
        ] {
            if text.trim().is_empty() {
                p(format!("{what} is empty"));
            }
        }
        if s.faults.is_empty() {
            p("there is no [[fault]]".into());
        }
        let specs = s
            .faults
            .iter()
            .map(|f| ("fault", f))
            .chain(s.distractors.iter().map(|f| ("distractor", f)));
        for (what, spec) in specs {
            let kind = spec.kind.map_or("?", |k| k.name());
            let Some(service) = spec.service.as_deref() else {
                p(format!("a [[{what}]] ({kind}) has no service"));
                continue;
            };
            let Some(svc) = parse_service(service) else {
                p(format!(
                    "a [[{what}]] ({kind}) names an unknown service {service:?}"
                ));
                continue;
            };
            if let Err(e) = registry(svc).check(spec) {
                p(format!("[[{what}]] {kind} on {service}: {e}"));
            }
            if spec.reveal {
                p(format!(
                    "[[{what}]] {kind}: drills are blind; remove reveal"
                ));
            }
            if spec.ttl_seconds.is_some() {
                p(format!(
                    "[[{what}]] {kind}: ttl_seconds is set by `drill start --for`; remove it"
                ));
            }
        }
        if !s.distractors.is_empty()
            && s.answer
                .distractor
                .as_deref()
                .is_none_or(|d| d.trim().is_empty())
        {
            p(
                "a scenario with [[distractor]] needs answer.distractor (why it is harmless)"
                    .into(),
            );
        }
        if s.distractors.is_empty() && s.answer.distractor.is_some() {
            p("answer.distractor without any [[distractor]]".into());
        }
        if !s.evidence.iter().any(|e| e.about == About::Cause) {
            p("no [[evidence]] about the cause".into());
        }
        if !s.distractors.is_empty() && !s.evidence.iter().any(|e| e.about == About::Distractor) {
            p("no [[evidence]] with about = \"distractor\" shows the distractor".into());
        }
        for (i, e) in s.evidence.iter().enumerate() {
            let n = i + 1;
            for problem in lint_check(e) {
                p(format!("evidence #{n} ({}): {problem}", e.signal));
            }
            if e.location.trim().is_empty() || e.shows.trim().is_empty() {
                p(format!("evidence #{n}: where and shows must not be empty"));
            }
            if e.signal == Signal::Metric && (e.dashboard.is_none() || e.panel.is_none()) {
                p(format!(
                    "evidence #{n}: metric evidence names its dashboard (uid) and panel (title)"
                ));
            }
            if e.panel.is_some() != e.dashboard.is_some() {
                p(format!("evidence #{n}: dashboard and panel go together"));
            }
            if let (Some(Ok(dashboards)), Some(uid), Some(panel)) =
                (&dashboards, &e.dashboard, &e.panel)
            {
                match dashboards.get(uid) {
                    None => p(format!("evidence #{n}: no dashboard with uid {uid:?}")),
                    Some(titles) if !titles.contains(panel) => p(format!(
                        "evidence #{n}: dashboard {uid} has no panel titled {panel:?}"
                    )),
                    Some(_) => {}
                }
            }
        }
        if let Some(repo) = repo {
            let page = format!("docs/runbooks/scenarios/{}.md", s.id);
            match std::fs::read_to_string(repo.join(&page)) {
                Err(_) => p(format!("no runbook page {page}")),
                Ok(text) => {
                    let answer = format!("`{}` / `{}`", s.answer.service, s.answer.cause);
                    if !text.contains(&answer) {
                        p(format!("{page} does not give the answer {answer}"));
                    }
                }
            }
            let link = format!("scenarios/{}.md", s.id);
            if runbook_index
                .as_deref()
                .is_some_and(|index| !index.contains(&link))
            {
                p(format!("docs/runbooks/README.md does not link {link}"));
            }
        }
    }
    if let Some(Err(e)) = dashboards {
        problems.push(format!("dashboards: {e:#}"));
    }
    problems
}

/// What is wrong with one evidence's check.
fn lint_check(e: &Evidence) -> Vec<String> {
    let c = &e.check;
    let mut out = Vec::new();
    if parse_service(&c.service).is_none() {
        out.push(format!("check.service {:?} is not a service", c.service));
    }
    let metric_fields = [
        ("metric", c.metric.is_some()),
        ("labels", !c.labels.is_empty()),
        ("min_increase", c.min_increase.is_some()),
        ("max_increase", c.max_increase.is_some()),
        ("min_value", c.min_value.is_some()),
        ("max_value", c.max_value.is_some()),
        ("min_mean", c.min_mean.is_some()),
        ("max_mean", c.max_mean.is_some()),
    ];
    let trace_fields = [
        ("span", c.span.is_some()),
        ("kind", c.kind.is_some()),
        ("min_duration_ms", c.min_duration_ms.is_some()),
        ("min_self_ms", c.min_self_ms.is_some()),
        ("status", c.status.is_some()),
        ("root", c.root.is_some()),
        ("leaf", c.leaf.is_some()),
        (
            "starts_before_parent_ms",
            c.starts_before_parent_ms.is_some(),
        ),
        ("attributes", !c.attributes.is_empty()),
    ];
    let log_fields = [
        ("level", c.level.is_some()),
        ("contains", c.contains.is_some()),
        ("fields", !c.fields.is_empty()),
    ];
    let others: Vec<&(&str, bool)> = match e.signal {
        Signal::Metric => trace_fields.iter().chain(&log_fields).collect(),
        Signal::Trace => metric_fields.iter().chain(&log_fields).collect(),
        Signal::Log => metric_fields.iter().chain(&trace_fields).collect(),
    };
    for (name, present) in others {
        if *present {
            out.push(format!(
                "check.{name} does not apply to {} checks",
                e.signal
            ));
        }
    }
    if e.signal == Signal::Metric && c.min_count.is_some() {
        out.push("check.min_count does not apply to metric checks".into());
    }
    match e.signal {
        Signal::Metric => {
            if c.metric.is_none() {
                out.push("a metric check needs check.metric".into());
            }
            let conditions = [
                c.min_increase,
                c.max_increase,
                c.min_value,
                c.max_value,
                c.min_mean,
                c.max_mean,
            ];
            if conditions.iter().all(Option::is_none) {
                out.push(
                    "a metric check needs a condition: min_increase, max_increase, min_value, max_value, min_mean or max_mean".into(),
                );
            }
        }
        Signal::Trace => {
            if c.span.is_none() {
                out.push("a trace check needs check.span (the span name)".into());
            }
            if let Some(kind) = &c.kind
                && !["server", "client", "producer", "consumer", "internal"]
                    .contains(&kind.as_str())
            {
                out.push(format!("check.kind {kind:?} is not a span kind"));
            }
            if let Some(status) = &c.status
                && !["error", "ok", "unset"].contains(&status.as_str())
            {
                out.push(format!("check.status {status:?} is not error, ok or unset"));
            }
        }
        Signal::Log => {
            if c.contains.is_none() {
                out.push("a log check needs check.contains".into());
            }
            if let Some(level) = &c.level
                && !["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level.as_str())
            {
                out.push(format!(
                    "check.level {level:?} is not ERROR, WARN, INFO, DEBUG or TRACE"
                ));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/// A running drill, as kept in `<state dir>/drill.json`.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct DrillState {
    /// The scenario (a copy: later commands need no scenario directory).
    scenario: Scenario,
    /// Unix seconds.
    started_at: u64,
    /// Unix seconds when the faults end on their own.
    ends_at: u64,
    /// Picked with `--random` (then `status` does not name it).
    random: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    hints_used: usize,
    attempts: Vec<Attempt>,
    /// Unix seconds of the first right answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    solved_at: Option<u64>,
    /// Hints used and attempts made up to the first right answer: the grade. What is done
    /// after solving (exploring, answering again) does not change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    solved_with: Option<(usize, usize)>,
    revealed: bool,
    /// `(service, fault id)` of every fault the drill set.
    faults: Vec<(String, String)>,
}

impl DrillState {
    /// Hints used and attempts made: up to the first right answer once solved, else so far.
    fn grade(&self) -> (usize, usize) {
        self.solved_with
            .unwrap_or((self.hints_used, self.attempts.len()))
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
struct Attempt {
    service: String,
    cause: Cause,
    at: u64,
    right: bool,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `10:42 UTC`.
fn hh_mm_utc(unix: u64) -> String {
    let day = unix % 86_400;
    format!("{:02}:{:02} UTC", day / 3600, day % 3600 / 60)
}

/// `4m 12s`.
fn elapsed(from: u64, to: u64) -> String {
    let secs = to.saturating_sub(from);
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// The `(service, fault id)` of the faults a running drill keeps hidden from `fault list`: the
/// ones it set, while it is neither solved nor revealed. Empty with no drill or a damaged
/// state file.
pub(crate) fn hidden_faults(dir: &Path) -> Vec<(String, String)> {
    match load_state(dir) {
        Ok(Some(state)) if state.solved_at.is_none() && !state.revealed => state.faults,
        _ => Vec::new(),
    }
}

fn load_state(dir: &Path) -> anyhow::Result<Option<DrillState>> {
    let path = state_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).with_context(|| {
            format!(
                "{} is damaged; `faultline drill stop` clears it",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn running(dir: &Path) -> anyhow::Result<DrillState> {
    load_state(dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no drill is running (state dir {}); start one with `faultline drill start --random`",
            dir.display()
        )
    })
}

/// Writes the state atomically (a temporary file, then a rename).
fn save_state(dir: &Path, state: &DrillState) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let path = state_path(dir);
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let text = serde_json::to_string_pretty(state)?;
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------------------------

/// `faultline drill …`.
#[derive(Args, Debug)]
#[command(
    after_help = "A drill: `drill start --random` injects a hidden fault and prints only \
the symptom; find the cause with the dashboards, traces and logs; `drill answer <service> \
<cause>` grades you. `drill hint` helps (counted), `drill reveal` gives up, `drill stop` clears \
everything."
)]
pub struct DrillArgs {
    #[command(subcommand)]
    command: DrillCommand,
    #[command(flatten)]
    admin: AdminArgs,
    /// The scenario directory (default: ./scenarios if it exists, else the scenarios built
    /// into faultline).
    #[arg(long, env = "FAULTLINE_SCENARIOS", global = true)]
    scenarios: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum DrillCommand {
    /// List the scenarios: id, difficulty and title (no answers).
    List,
    /// Start a drill: inject its faults (blind) and print the symptom and where to look.
    Start(StartArgs),
    /// Show the next hint (hints are counted in the grade).
    Hint,
    /// Answer: the service where the cause lies, and the cause (see `faultline drill causes`).
    Answer(AnswerArgs),
    /// Give up: show the answer, the faults and the evidence.
    Reveal,
    /// End the drill: clear every fault on every service and forget the drill.
    Stop,
    /// Show the running drill: since when, hints used, attempts.
    Status,
    /// List the causes an answer chooses from.
    Causes,
    /// Check every scenario file (for scenario authors): format, faults, blindness, and the
    /// dashboards and runbooks next to the scenario directory.
    Validate,
}

/// Arguments of `drill start`.
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["id", "random"]))]
struct StartArgs {
    /// The scenario id (see `faultline drill list`).
    id: Option<String>,
    /// Pick a scenario at random (its name is not shown).
    #[arg(long)]
    random: bool,
    /// Seed of the random pick, to repeat it.
    #[arg(long, requires = "random")]
    seed: Option<u64>,
    /// How long the faults last unless the drill is stopped first (e.g. 15m, 1h).
    #[arg(long = "for", default_value = "30m", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Start even if a drill is running or faults are set by hand (they are cleared first).
    #[arg(long)]
    force: bool,
}

/// Arguments of `drill answer`.
#[derive(Args, Debug)]
#[command(after_help = causes_help())]
struct AnswerArgs {
    /// The service where the cause lies.
    #[arg(value_enum)]
    service: Service,
    /// The cause (one of the names below).
    #[arg(value_enum, hide_possible_values = true)]
    cause: Cause,
}

fn causes_help() -> String {
    let mut out = String::from("Causes:\n");
    for cause in Cause::all() {
        out.push_str(&format!("  {:<20} {}\n", cause.name(), cause.summary()));
    }
    out
}

pub async fn run(args: DrillArgs) -> anyhow::Result<ExitCode> {
    let dir = args.admin.dir.clone();
    match args.command {
        DrillCommand::List => {
            let catalogue = Catalogue::load(args.scenarios.as_deref())?;
            println!("{:<34} {:<7} title", "id", "level");
            for (_, s) in &catalogue.scenarios {
                println!("{:<34} {:<7} {}", s.id, s.difficulty.to_string(), s.title);
            }
            println!(
                "\n{} scenarios from {}. Start one with `faultline drill start <id>`, or a surprise with `faultline drill start --random`.",
                catalogue.scenarios.len(),
                catalogue.source
            );
            Ok(ExitCode::SUCCESS)
        }
        DrillCommand::Causes => {
            print!("{}", causes_help());
            Ok(ExitCode::SUCCESS)
        }
        DrillCommand::Validate => {
            let catalogue = Catalogue::load(args.scenarios.as_deref())?;
            let repo = match &catalogue.source {
                Source::Dir(dir) => {
                    let parent = dir
                        .canonicalize()
                        .ok()
                        .and_then(|d| d.parent().map(Path::to_owned));
                    parent.filter(|p| p.join("dashboards").is_dir())
                }
                Source::Embedded => None,
            };
            let problems = lint(&catalogue.scenarios, repo.as_deref());
            if problems.is_empty() {
                println!(
                    "{} scenarios in {} are valid{}",
                    catalogue.scenarios.len(),
                    catalogue.source,
                    if repo.is_some() {
                        " (dashboards and runbooks checked)"
                    } else {
                        ""
                    }
                );
                return Ok(ExitCode::SUCCESS);
            }
            for problem in &problems {
                eprintln!("{problem}");
            }
            bail!("{} problem(s) in {}", problems.len(), catalogue.source)
        }
        DrillCommand::Start(start_args) => {
            start(&args.admin, args.scenarios.as_deref(), start_args).await
        }
        DrillCommand::Hint => {
            let mut state = running(&dir)?;
            let total = state.scenario.hints.len();
            if state.hints_used >= total {
                println!(
                    "No more hints ({total} of {total} used). `faultline drill reveal` gives up and shows the answer."
                );
                return Ok(ExitCode::SUCCESS);
            }
            let hint = state.scenario.hints[state.hints_used]
                .replace("{start}", &hh_mm_utc(state.started_at));
            state.hints_used += 1;
            save_state(&dir, &state)?;
            println!("Hint {} of {total}: {hint}", state.hints_used);
            Ok(ExitCode::SUCCESS)
        }
        DrillCommand::Answer(answer) => {
            let mut state = running(&dir)?;
            let now = now_unix();
            let right_service = state.scenario.answer.service == answer.service.name();
            let right_cause = state.scenario.answer.cause == answer.cause;
            let right = right_service && right_cause;
            state.attempts.push(Attempt {
                service: answer.service.name().to_owned(),
                cause: answer.cause,
                at: now,
                right,
            });
            let first_solve = right && state.solved_at.is_none() && !state.revealed;
            if first_solve {
                state.solved_at = Some(now);
                state.solved_with = Some((state.hints_used, state.attempts.len()));
            }
            save_state(&dir, &state)?;
            print_grade(
                &state,
                answer.service,
                answer.cause,
                right_service,
                right_cause,
                now,
            );
            Ok(ExitCode::SUCCESS)
        }
        DrillCommand::Reveal => {
            let mut state = running(&dir)?;
            state.revealed = true;
            save_state(&dir, &state)?;
            let s = &state.scenario;
            println!(
                "The answer: {} / {} — {}",
                s.answer.service,
                s.answer.cause,
                s.answer.cause.summary()
            );
            println!("\nWhat happened: {}", s.answer.explanation);
            println!("\nThe fix: {}", s.answer.fix);
            println!("\nFaults injected:");
            for f in &s.faults {
                println!("  {}", describe_spec(f));
            }
            if !s.distractors.is_empty() {
                println!("Distractors (harmless, but visible):");
                for f in &s.distractors {
                    println!("  {}", describe_spec(f));
                }
                if let Some(note) = &s.answer.distractor {
                    println!("  {note}");
                }
            }
            print_evidence(s, true);
            println!(
                "\nScenario {} ({}). Runbook: docs/runbooks/scenarios/{}.md. `faultline drill stop` clears the faults.",
                s.id, s.title, s.id
            );
            Ok(ExitCode::SUCCESS)
        }
        DrillCommand::Stop => stop(&args.admin).await,
        DrillCommand::Status => status(&args.admin).await,
    }
}

fn describe_spec(spec: &FaultSpec) -> String {
    let value = serde_json::to_value(spec).unwrap_or_default();
    format!(
        "{:<12} {:<26} {}",
        spec.service.as_deref().unwrap_or("?"),
        spec.kind.map_or("?", |k| k.name()),
        describe_params(&value)
    )
}

/// The evidence as a path: dashboards first, then traces, then logs (the cause's before the
/// distractor's).
fn print_evidence(s: &Scenario, with_distractors: bool) {
    println!("\nThe path through the telemetry:");
    let mut path: Vec<&Evidence> = s
        .evidence
        .iter()
        .filter(|e| with_distractors || e.about == About::Cause)
        .collect();
    let rank = |e: &Evidence| {
        let signal = match e.signal {
            Signal::Metric => 0,
            Signal::Trace => 1,
            Signal::Log => 2,
        };
        (e.about == About::Distractor, signal)
    };
    path.sort_by_key(|e| rank(e));
    for (i, e) in path.iter().enumerate() {
        let tag = if e.about == About::Distractor {
            " (the distractor)"
        } else {
            ""
        };
        println!("  {}. {}{tag}: {}", i + 1, e.signal, e.location);
        println!("     {}", e.shows);
    }
}

fn print_grade(
    state: &DrillState,
    service: Service,
    cause: Cause,
    right_service: bool,
    right_cause: bool,
    now: u64,
) {
    let s = &state.scenario;
    let attempts = state.attempts.len();
    let took = elapsed(state.started_at, now);
    let hints = format!(
        "{} of {} hint{}",
        state.hints_used,
        s.hints.len(),
        if s.hints.len() == 1 { "" } else { "s" }
    );
    if right_service && right_cause {
        let note = if state.revealed {
            " (after `drill reveal`: not counted as solved)"
        } else if state.solved_at.is_some_and(|t| t < now) {
            " (already solved earlier)"
        } else {
            ""
        };
        println!(
            "Right: {} / {}{note}. Time: {took} since the start; {hints} used; attempt {attempts}.",
            service.name(),
            cause
        );
        println!("\nWhat happened: {}", s.answer.explanation);
        println!("\nThe fix: {}", s.answer.fix);
        print_evidence(s, false);
        if let Some(note) = &s.answer.distractor {
            println!("\nThe other signal was a distractor: {note}");
        }
        println!(
            "\nRunbook: docs/runbooks/scenarios/{}.md. `faultline drill stop` clears the faults.",
            s.id
        );
    } else {
        let verdict = match (right_service, right_cause) {
            (true, false) => format!(
                "the service is right ({}), the cause is not {cause}",
                service.name()
            ),
            (false, true) => format!(
                "the cause is right ({cause}), but it does not lie in {}",
                service.name()
            ),
            _ => format!(
                "neither the service ({}) nor the cause ({cause}) is right",
                service.name()
            ),
        };
        println!(
            "Wrong: {verdict}. Time: {took} since the start; {hints} used; attempt {attempts}."
        );
        println!(
            "Keep looking, `faultline drill hint` for a hint, or `faultline drill reveal` to give up."
        );
    }
}

async fn start(
    admin: &AdminArgs,
    scenarios: Option<&Path>,
    args: StartArgs,
) -> anyhow::Result<ExitCode> {
    let dir = &admin.dir;
    let catalogue = Catalogue::load(scenarios)?;
    let (scenario, seed) = if args.random {
        use rand::SeedableRng as _;
        use rand::seq::IndexedRandom as _;
        let seed = args.seed.unwrap_or_else(rand::random);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (_, s) = catalogue
            .scenarios
            .choose(&mut rng)
            .context("there is no scenario to choose from")?;
        (s.clone(), Some(seed))
    } else {
        let id = args.id.as_deref().unwrap_or_default();
        (catalogue.get(id)?.clone(), None)
    };
    let api = AdminApi::new(admin);
    let now = now_unix();
    if let Some(previous) = load_state(dir)? {
        let over = previous.ends_at <= now;
        if !args.force && !over {
            bail!(
                "a drill is already running (started {}, {} ago); answer it, end it with `faultline drill stop`, or start anyway with --force",
                hh_mm_utc(previous.started_at),
                elapsed(previous.started_at, now)
            );
        }
        // Its faults (and any other) go first, so that two drills never mix.
        for service in Service::ALL {
            api.clear_all(service).await?;
        }
        std::fs::remove_file(state_path(dir)).ok();
    }
    // Faults set by hand would mix with the drill's (and look like part of it).
    let mut others = 0;
    for service in Service::ALL {
        // An unreachable service fails below, when its fault is set.
        others += api.list(service).await.map_or(0, |faults| faults.len());
    }
    if others > 0 {
        if !args.force {
            bail!(
                "{others} fault(s) are already set (see `faultline fault list`) and would mix with the drill's; clear them with `faultline fault clear --all`, or pass --force to clear them now"
            );
        }
        for service in Service::ALL {
            api.clear_all(service).await?;
        }
    }
    let ttl = args.duration.as_secs().max(1);
    let mut set: Vec<(String, String)> = Vec::new();
    for spec in scenario.faults.iter().chain(&scenario.distractors) {
        let mut spec = spec.clone();
        spec.ttl_seconds = Some(ttl);
        spec.reveal = false;
        let service_name = spec.service.clone().unwrap_or_default();
        let Some(service) = parse_service(&service_name) else {
            rollback(&api, &set).await;
            bail!("the scenario names an unknown service {service_name:?}");
        };
        match api.set(service, &spec).await {
            Ok(fault) => {
                let id = fault["id"].as_str().unwrap_or_default().to_owned();
                set.push((service_name, id));
            }
            Err(e) => {
                rollback(&api, &set).await;
                return Err(e.context("the drill could not start; nothing was left behind"));
            }
        }
    }
    let state = DrillState {
        scenario: scenario.clone(),
        started_at: now,
        ends_at: now + ttl,
        random: args.random,
        seed,
        hints_used: 0,
        attempts: Vec::new(),
        solved_at: None,
        solved_with: None,
        revealed: false,
        faults: set.clone(),
    };
    if let Err(e) = save_state(dir, &state) {
        rollback(&api, &set).await;
        return Err(e);
    }
    annotate("drill started", &["faultline", "drill"]).await;

    let which = match seed {
        Some(seed) => format!("a random scenario (seed {seed})"),
        None => format!(
            "{} ({}, {})",
            scenario.id, scenario.title, scenario.difficulty
        ),
    };
    println!(
        "Drill started at {}: {which}. Its faults end on their own in {}.",
        hh_mm_utc(now),
        humantime::format_duration(Duration::from_secs(ttl))
    );
    print_brief(&scenario, now);
    println!(
        "\nThe services need traffic: `faultline up` sends some; more with `faultline load --rps 20 --duration 5m`."
    );
    println!(
        "Without Grafana and Jaeger (native run): each service's /metrics (127.0.0.1:9080-9082) and its JSON logs in .faultline/logs/ hold the same signals."
    );
    println!("\nThen:");
    println!("  faultline drill hint                       the next hint (counted)");
    println!(
        "  faultline drill answer <service> <cause>   your answer, graded (causes: `faultline drill causes`)"
    );
    println!("  faultline drill status                     time so far, hints, attempts");
    println!("  faultline drill reveal                     give up and see the answer");
    println!("  faultline drill stop                       clear the faults and end the drill");
    Ok(ExitCode::SUCCESS)
}

/// The symptom and where to look: all a blind drill shows.
fn print_brief(s: &Scenario, started_at: u64) {
    println!(
        "\nSymptom: {}",
        s.symptom.replace("{start}", &hh_mm_utc(started_at))
    );
    println!("\nWhere to look:");
    for w in &s.where_to_look {
        println!("  - {w}");
    }
}

/// Removes the faults a failed start had already set.
async fn rollback(api: &AdminApi, set: &[(String, String)]) {
    for (service, id) in set {
        if let Some(service) = parse_service(service)
            && let Err(e) = api.clear(service, id).await
        {
            eprintln!(
                "warning: could not remove fault {id} from {}: {e:#}",
                service.name()
            );
        }
    }
}

async fn stop(admin: &AdminArgs) -> anyhow::Result<ExitCode> {
    let dir = &admin.dir;
    // A damaged state file must not prevent stopping.
    let state = load_state(dir).ok().flatten();
    let api = AdminApi::new(admin);
    let mut cleared = 0;
    let mut failures = Vec::new();
    for service in Service::ALL {
        match api.clear_all(service).await {
            Ok(n) => cleared += n,
            Err(e) => failures.push((service, e)),
        }
    }
    let none_cleared = failures.len() == Service::ALL.len();
    let cleared_note = if none_cleared {
        String::new()
    } else {
        format!(" Cleared {cleared} fault(s).")
    };
    match std::fs::remove_file(state_path(dir)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot remove {}", state_path(dir).display()));
        }
    }
    annotate("drill stopped", &["faultline", "drill"]).await;
    match &state {
        Some(state) => {
            let solved = match state.solved_at {
                Some(at) => format!("solved in {}", elapsed(state.started_at, at)),
                None if state.revealed => "revealed".to_owned(),
                None => "not solved".to_owned(),
            };
            let (hints, attempts) = state.grade();
            println!(
                "Drill stopped after {} ({solved}; {hints} hint(s), {attempts} attempt(s)).{cleared_note}",
                elapsed(state.started_at, now_unix()),
            );
        }
        None if none_cleared => {}
        None => println!("No drill was running.{cleared_note}"),
    }
    if none_cleared {
        return Err(crate::fault::failed_everywhere(
            &failures,
            Some("faults may remain until they expire"),
        ));
    }
    for (service, e) in &failures {
        eprintln!(
            "warning: the faults of {} were not cleared ({e:#}); they end on their own",
            service.name()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(admin: &AdminArgs) -> anyhow::Result<ExitCode> {
    let Some(state) = load_state(&admin.dir)? else {
        println!("No drill is running. `faultline drill list` shows the scenarios.");
        return Ok(ExitCode::SUCCESS);
    };
    let now = now_unix();
    let s = &state.scenario;
    let which = if state.random {
        "a random scenario".to_owned()
    } else {
        format!("{} ({})", s.id, s.title)
    };
    println!(
        "Drill running: {which}, started {} ({} ago).",
        hh_mm_utc(state.started_at),
        elapsed(state.started_at, now)
    );
    if state.ends_at > now {
        println!(
            "Its faults end on their own at {} (in {}).",
            hh_mm_utc(state.ends_at),
            elapsed(now, state.ends_at)
        );
    } else {
        println!(
            "Its faults ended at {}; `faultline drill stop` ends the drill.",
            hh_mm_utc(state.ends_at)
        );
    }
    print_brief(s, state.started_at);
    let outcome = match state.solved_at {
        Some(at) => format!("solved after {}", elapsed(state.started_at, at)),
        None if state.revealed => "revealed".into(),
        None => "not solved yet".into(),
    };
    let (hints, attempts) = state.grade();
    println!(
        "\nHints used: {hints} of {}. Attempts: {attempts} ({outcome}).",
        s.hints.len(),
    );
    let api = AdminApi::new(admin);
    let mut active = 0;
    let mut reached = true;
    for service in Service::ALL {
        match api.list(service).await {
            Ok(faults) => {
                active += state
                    .faults
                    .iter()
                    .filter(|(svc, id)| {
                        svc == service.name()
                            && faults.iter().any(|f| f["id"].as_str() == Some(id.as_str()))
                    })
                    .count();
            }
            Err(_) => reached = false,
        }
    }
    if reached {
        println!(
            "Drill faults still active: {active} of {}.",
            state.faults.len()
        );
    } else {
        println!("Some services could not be reached (is `faultline up` running?).");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn every_scenario_is_valid() {
        let catalogue = Catalogue::from_dir(&repo().join("scenarios")).unwrap();
        assert!(
            catalogue.scenarios.len() >= 12,
            "at least 12 scenarios, found {}",
            catalogue.scenarios.len()
        );
        let problems = lint(&catalogue.scenarios, Some(&repo()));
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        let with_distractors = catalogue
            .scenarios
            .iter()
            .filter(|(_, s)| !s.distractors.is_empty())
            .count();
        assert!(
            with_distractors >= 4,
            "{with_distractors} scenarios with distractors"
        );
    }

    #[test]
    fn the_embedded_scenarios_are_the_directory() {
        let mut on_disk: Vec<(String, String)> = std::fs::read_dir(repo().join("scenarios"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        on_disk.sort();
        let mut embedded: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        embedded.sort();
        let names = |v: &[(String, String)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&embedded),
            names(&on_disk),
            "EMBEDDED in drill.rs must list every scenarios/*.toml"
        );
        assert_eq!(embedded, on_disk);
        Catalogue::embedded().unwrap();
    }

    #[test]
    fn lint_catches_what_would_spoil_a_drill() {
        let catalogue = Catalogue::from_dir(&repo().join("scenarios")).unwrap();
        let (file, good) = catalogue.scenarios[0].clone();
        let mut bad = good.clone();
        bad.symptom = format!("{} since {{start}}: a slow query", bad.symptom);
        bad.faults[0].reveal = true;
        bad.answer.service = "payments".into();
        bad.hints.clear();
        bad.evidence[0].check.status = Some("error".into());
        let problems = lint(&[(file, bad)], None).join("\n");
        for needle in [
            "names a fault kind or cause",
            "remove reveal",
            "answer.service",
            "hints need",
        ] {
            assert!(problems.contains(needle), "{needle}: {problems}");
        }
    }

    #[test]
    fn every_cause_has_a_snake_case_name_that_parses() {
        for cause in Cause::all() {
            assert_eq!(
                Cause::from_str(cause.name(), false).unwrap(),
                *cause,
                "{cause}"
            );
            let json = serde_json::to_string(cause).unwrap();
            assert_eq!(json, format!("\"{}\"", cause.name()));
        }
    }

    #[test]
    fn times_are_shown_as_utc_clock_times() {
        assert_eq!(hh_mm_utc(0), "00:00 UTC");
        assert_eq!(hh_mm_utc(86_400 + 10 * 3600 + 42 * 60 + 59), "10:42 UTC");
    }
}
