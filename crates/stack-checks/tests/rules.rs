//! The Prometheus alerting and recording rules under `deploy/prometheus/rules/` and their unit
//! tests under `deploy/prometheus/tests/`.
//!
//! With promtool (Debian's `prometheus` package; `PROMTOOL` overrides the lookup): every rules
//! file passes `promtool check rules`, and every `*.test.yml` passes `promtool test rules`, which
//! proves that each alert fires on the series it is meant for and stays silent on healthy ones.
//! Without a tool, in plain Rust: every alert carries the annotations an on-call person needs,
//! its `runbook_url` points at a page that exists in `docs/runbooks/`, and every alert is shown
//! both firing and silent by at least one unit test (an alert nobody tested is an alert nobody
//! knows works).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

/// One rules file (`groups:`), as Prometheus reads it.
#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    alert: Option<String>,
    record: Option<String>,
    expr: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// One promtool unit-test file; only what these checks need.
#[derive(Debug, Deserialize)]
struct UnitTestFile {
    rule_files: Vec<String>,
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
struct TestGroup {
    #[serde(default)]
    alert_rule_test: Vec<AlertRuleTest>,
}

#[derive(Debug, Deserialize)]
struct AlertRuleTest {
    alertname: String,
    /// Absent means "no alert expected", as for promtool.
    #[serde(default)]
    exp_alerts: Vec<serde_norway::Value>,
}

/// An alerting rule and where it is defined.
struct Alert {
    /// `deploy/prometheus/rules/<file> › group <name>`, for messages.
    source: String,
    group: String,
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn rules_dir() -> PathBuf {
    support::repo().join("deploy/prometheus/rules")
}

fn tests_dir() -> PathBuf {
    support::repo().join("deploy/prometheus/tests")
}

/// The files in `dir` whose names end with `suffix`, sorted; fails if there are none.
fn files_ending_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with(suffix))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *{suffix} files in {}", dir.display());
    files
}

fn rule_files() -> Vec<PathBuf> {
    let files = files_ending_with(&rules_dir(), ".yml");
    // Prometheus configs load `rules/*.yml`; a `.yaml` file would silently not be loaded.
    let yaml = std::fs::read_dir(rules_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect::<Vec<_>>();
    assert!(
        yaml.is_empty(),
        "{yaml:?}: name rules files *.yml, the pattern the Prometheus configs load"
    );
    files
}

fn unit_test_files() -> Vec<PathBuf> {
    files_ending_with(&tests_dir(), ".test.yml")
}

/// `path` relative to the repository root, for messages.
fn shown(path: &Path) -> String {
    path.strip_prefix(support::repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", shown(path)))
}

/// Every alerting rule in every rules file. A rule that is neither `alert` nor `record`, or
/// has an empty expression, fails here.
fn alerts() -> Vec<Alert> {
    let mut out = Vec::new();
    for file in rule_files() {
        let name = shown(&file);
        let parsed: RuleFile = serde_norway::from_str(&read(&file))
            .unwrap_or_else(|e| panic!("{name} is not a Prometheus rules file: {e}"));
        for group in parsed.groups {
            for rule in group.rules {
                assert!(
                    !rule.expr.trim().is_empty(),
                    "{name} › group {}: a rule with an empty expr",
                    group.name
                );
                match (rule.alert, rule.record) {
                    (Some(alert), None) => out.push(Alert {
                        source: format!("{name} › group {}", group.name),
                        group: group.name.clone(),
                        name: alert,
                        labels: rule.labels,
                        annotations: rule.annotations,
                    }),
                    (None, Some(_)) => {}
                    (alert, record) => panic!(
                        "{name} › group {}: a rule is either `alert` or `record` (alert {alert:?}, record {record:?})",
                        group.name
                    ),
                }
            }
        }
    }
    assert!(
        !out.is_empty(),
        "no alerting rules in deploy/prometheus/rules/"
    );
    out
}

/// The workspace's `repository` URL from the root `Cargo.toml`.
fn repository_url() -> String {
    let manifest = read(&support::repo().join("Cargo.toml"));
    manifest
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == "repository").then(|| value.trim().trim_matches('"').to_owned())
        })
        .expect("the root Cargo.toml sets `repository` under [workspace.package]")
}

/// `OrdersOutboxBacklog` → `orders-outbox-backlog`.
fn kebab(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs promtool with `args` in `dir`; `Err` carries everything it printed.
fn promtool(promtool: &Path, dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(printed)
    } else {
        Err(format!(
            "`promtool {}` in {} failed ({}):\n{printed}",
            args.join(" "),
            shown(dir),
            output.status
        ))
    }
}

#[test]
fn promtool_accepts_every_rules_file() {
    let Some(tool) = support::tool("promtool", "PROMTOOL") else {
        return;
    };
    let dir = rules_dir();
    let mut failures = Vec::new();
    for file in rule_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        match promtool(&tool, &dir, &["check", "rules", &name]) {
            Ok(printed) => assert!(
                printed.contains("SUCCESS"),
                "promtool check rules {name} printed no SUCCESS:\n{printed}"
            ),
            Err(failure) => failures.push(failure),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_promtool_unit_test_passes() {
    let Some(tool) = support::tool("promtool", "PROMTOOL") else {
        return;
    };
    // From the tests' own directory, so that their `rule_files: [../rules/…]` resolve whatever
    // promtool version resolves them against (the test file's directory or the working one).
    let dir = tests_dir();
    let mut failures = Vec::new();
    for file in unit_test_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        match promtool(&tool, &dir, &["test", "rules", &name]) {
            Ok(printed) => assert!(
                printed.contains("SUCCESS") && !printed.contains("FAILED"),
                "promtool test rules {name} did not report SUCCESS:\n{printed}"
            ),
            Err(failure) => failures.push(failure),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_alert_has_a_summary_a_description_and_a_runbook_that_exists() {
    let repo = support::repo();
    let prefix = format!("{}/blob/main/", repository_url().trim_end_matches('/'));
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for alert in alerts() {
        let at = format!("{} › alert {}", alert.source, alert.name);
        if !names.insert(alert.name.clone()) {
            problems.push(format!(
                "{at}: the name is used twice; each alert has one runbook"
            ));
        }
        for key in ["summary", "description", "runbook_url"] {
            if alert
                .annotations
                .get(key)
                .is_none_or(|v| v.trim().is_empty())
            {
                problems.push(format!("{at}: no `{key}` annotation"));
            }
        }
        if let Some(description) = alert.annotations.get("description")
            && !description.contains("{{")
        {
            problems.push(format!(
                "{at}: the description says nothing about this firing: use {{{{ $value }}}}, \
                 {{{{ $labels.… }}}} or a query in it"
            ));
        }
        let Some(url) = alert.annotations.get("runbook_url") else {
            continue;
        };
        let expected = format!("{prefix}docs/runbooks/{}.md", kebab(&alert.name));
        if url != &expected {
            problems.push(format!(
                "{at}: runbook_url is {url:?}, expected {expected:?}"
            ));
        }
        match url.strip_prefix(&prefix) {
            Some(path) if repo.join(path).is_file() => {}
            Some(path) => problems.push(format!(
                "{at}: runbook_url points at {path}, which does not exist in the repository"
            )),
            None => problems.push(format!(
                "{at}: runbook_url {url:?} is not a page of this repository ({prefix}…)"
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn every_alert_has_a_severity_and_every_slo_alert_names_its_slo() {
    let mut problems = Vec::new();
    for alert in alerts() {
        let at = format!("{} › alert {}", alert.source, alert.name);
        match alert.labels.get("severity").map(String::as_str) {
            Some("page" | "ticket") => {}
            other => problems.push(format!(
                "{at}: severity is {other:?}, expected \"page\" or \"ticket\""
            )),
        }
        if alert.group.starts_with("slo-") {
            match alert.labels.get("slo").map(String::as_str) {
                Some("orders-availability" | "orders-latency") => {}
                other => problems.push(format!(
                    "{at}: slo is {other:?}, expected \"orders-availability\" or \"orders-latency\""
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_alert_is_shown_firing_and_silent_by_a_unit_test() {
    let rules = rule_files();
    let mut firing: BTreeSet<String> = BTreeSet::new();
    let mut silent: BTreeSet<String> = BTreeSet::new();
    let mut loaded: BTreeSet<PathBuf> = BTreeSet::new();
    let mut problems = Vec::new();
    for file in unit_test_files() {
        let name = shown(&file);
        let parsed: UnitTestFile = serde_norway::from_str(&read(&file))
            .unwrap_or_else(|e| panic!("{name} is not a promtool unit-test file: {e}"));
        for rule_file in &parsed.rule_files {
            let path = file.parent().unwrap().join(rule_file);
            match path.canonicalize() {
                Ok(path) => {
                    loaded.insert(path);
                }
                Err(e) => problems.push(format!("{name}: rule_files entry {rule_file}: {e}")),
            }
        }
        for test in parsed.tests.iter().flat_map(|g| &g.alert_rule_test) {
            if test.exp_alerts.is_empty() {
                silent.insert(test.alertname.clone());
            } else {
                firing.insert(test.alertname.clone());
            }
        }
    }
    for file in &rules {
        if !loaded.contains(&file.canonicalize().unwrap()) {
            problems.push(format!(
                "{} is loaded by no unit-test file's rule_files",
                shown(file)
            ));
        }
    }
    let names: BTreeSet<String> = alerts().into_iter().map(|a| a.name).collect();
    for name in &names {
        if !firing.contains(name) {
            problems.push(format!(
                "{name}: no alert_rule_test expects it to fire (non-empty exp_alerts)"
            ));
        }
        if !silent.contains(name) {
            problems.push(format!(
                "{name}: no alert_rule_test expects it to stay silent (exp_alerts: [])"
            ));
        }
    }
    for tested in firing.union(&silent) {
        if !names.contains(tested) {
            problems.push(format!(
                "the unit tests check an alert {tested:?} that no rules file defines"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_runbook_index_lists_every_page_and_every_page_belongs_to_an_alert() {
    let dir = support::repo().join("docs/runbooks");
    let index = read(&dir.join("README.md"));
    let expected: BTreeSet<String> = alerts()
        .iter()
        .map(|a| format!("{}.md", kebab(&a.name)))
        .collect();
    let mut problems = Vec::new();
    for page in &expected {
        if !index.contains(&format!("]({page})")) {
            problems.push(format!("docs/runbooks/README.md does not link {page}"));
        }
    }
    for file in files_ending_with(&dir, ".md") {
        let page = file.file_name().unwrap().to_string_lossy().into_owned();
        if page != "README.md" && !expected.contains(&page) {
            problems.push(format!(
                "docs/runbooks/{page} is the runbook of no alert: remove it or link it from an alert"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn kebab_case_of_alert_names() {
    assert_eq!(kebab("OrdersOutboxBacklog"), "orders-outbox-backlog");
    assert_eq!(
        kebab("OrdersAvailabilityFastBurn"),
        "orders-availability-fast-burn"
    );
    assert_eq!(kebab("FaultlineTargetDown"), "faultline-target-down");
}
