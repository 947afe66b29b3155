//! The Grafana dashboards under `dashboards/`: every file is a dashboard Grafana can provision
//! (valid JSON, a fixed unique `uid`, a title), every panel and query names a data source that
//! `deploy/grafana/provisioning/datasources/` provisions (by UID, with the matching type), and
//! every panel that draws data has queries. Whether those queries return data is
//! `promql_data.rs`'s job.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

/// The dashboards the issue asks for, by UID.
const REQUIRED_UIDS: &[&str] = &[
    "faultline-overview",
    "faultline-gateway",
    "faultline-orders",
    "faultline-fulfillment",
    "faultline-telemetry",
];

/// Panel types that show no query results, so have no targets.
const PANELS_WITHOUT_QUERIES: &[&str] = &["row", "text", "alertlist", "dashlist", "news"];

/// The data sources provisioning defines, used only while its file does not exist yet.
const FALLBACK_DATASOURCES: &[(&str, &str)] = &[
    ("prometheus", "prometheus"),
    ("jaeger", "jaeger"),
    ("loki", "loki"),
];

/// Every dashboard file: (path relative to the repository, parsed JSON). A file that is not
/// JSON fails here.
fn dashboards() -> Vec<(String, Value)> {
    let dir = support::repo().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let name = format!(
                "dashboards/{}",
                path.file_name().unwrap().to_string_lossy()
            );
            assert!(
                path.extension().is_some_and(|e| e == "json"),
                "{name}: everything in dashboards/ is provisioned as a dashboard and must be a .json file"
            );
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name} is not valid JSON: {e}"));
            (name, json)
        })
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn panel_name(panel: &Value) -> String {
    format!(
        "panel {} \"{}\"",
        panel["id"],
        panel["title"].as_str().unwrap_or("(untitled)")
    )
}

#[derive(Deserialize)]
struct DatasourcesFile {
    #[serde(default)]
    datasources: Vec<Datasource>,
}

#[derive(Deserialize)]
struct Datasource {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    uid: Option<String>,
}

/// UID → type of every provisioned data source (from
/// `deploy/grafana/provisioning/datasources/*.y{a,}ml`), or the agreed fixed set while that
/// directory does not exist yet.
fn provisioned_datasources() -> BTreeMap<String, String> {
    let dir = support::repo().join("deploy/grafana/provisioning/datasources");
    let files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    if files.is_empty() {
        eprintln!(
            "note: no data source provisioning in {}; checking against the agreed UIDs {:?}",
            dir.display(),
            FALLBACK_DATASOURCES
        );
        return FALLBACK_DATASOURCES
            .iter()
            .map(|(uid, kind)| (uid.to_string(), kind.to_string()))
            .collect();
    }
    let mut out = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed: DatasourcesFile =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for ds in parsed.datasources {
            let uid = ds.uid.unwrap_or_else(|| {
                panic!(
                    "{}: data source {:?} has no fixed uid, so dashboards cannot name it",
                    file.display(),
                    ds.name
                )
            });
            assert!(
                out.insert(uid.clone(), ds.kind).is_none(),
                "{}: uid {uid:?} provisioned twice",
                file.display()
            );
        }
    }
    out
}

#[test]
fn every_dashboard_is_json_with_a_unique_fixed_uid() {
    let mut uids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for (name, dashboard) in dashboards() {
        assert!(dashboard.is_object(), "{name}: not a JSON object");
        let uid = dashboard["uid"].as_str().unwrap_or_default();
        assert!(!uid.trim().is_empty(), "{name}: no fixed `uid`");
        assert!(
            uid.len() <= 40,
            "{name}: uid {uid:?} is longer than Grafana's 40 characters"
        );
        assert!(
            uid.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{name}: uid {uid:?} should be URL-safe ([A-Za-z0-9_-])"
        );
        assert!(
            uids.insert(uid.to_owned()),
            "{name}: uid {uid:?} is used twice"
        );
        let title = dashboard["title"].as_str().unwrap_or_default();
        assert!(!title.trim().is_empty(), "{name}: no title");
        assert!(
            titles.insert(title.to_owned()),
            "{name}: title {title:?} is used twice (Grafana rejects duplicates in one folder)"
        );
        assert!(
            dashboard["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "faultline")),
            "{name}: tags must include \"faultline\" (the dashboards link each other by tag)"
        );
        assert!(
            dashboard["schemaVersion"].as_u64().is_some(),
            "{name}: no schemaVersion"
        );
        assert!(
            dashboard.get("id").is_none_or(Value::is_null),
            "{name}: a provisioned dashboard carries no numeric id (set \"id\": null)"
        );
        let mut ids = BTreeSet::new();
        for panel in panels(&dashboard) {
            let id = panel["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: {} has no numeric id", panel_name(panel)));
            assert!(
                ids.insert(id),
                "{name}: panel id {id} is used twice (Grafana links panels by id)"
            );
            assert!(
                panel["gridPos"].is_object(),
                "{name}: {} has no gridPos",
                panel_name(panel)
            );
        }
    }
    for required in REQUIRED_UIDS {
        assert!(
            uids.contains(*required),
            "no dashboard with uid {required:?} in dashboards/"
        );
    }
}

/// `{"type": …, "uid": …}` → (uid, type); a bare string (the legacy data-source name) or a
/// template variable is not accepted: provisioned UIDs are fixed, so the dashboards name them.
fn datasource_ref(value: &Value, place: &str) -> (String, Option<String>) {
    let uid = value["uid"].as_str().unwrap_or_else(|| {
        panic!("{place}: datasource must be {{\"type\": …, \"uid\": …}}, got {value}")
    });
    assert!(
        !uid.starts_with('$'),
        "{place}: datasource {uid:?} is a variable; name a provisioned uid"
    );
    (uid.to_owned(), value["type"].as_str().map(str::to_owned))
}

fn check_datasource(value: &Value, place: &str, provisioned: &BTreeMap<String, String>) -> String {
    let (uid, kind) = datasource_ref(value, place);
    let Some(provisioned_kind) = provisioned.get(&uid) else {
        panic!(
            "{place}: datasource uid {uid:?} is not provisioned (deploy/grafana/provisioning/datasources/ defines {:?})",
            provisioned.keys().collect::<Vec<_>>()
        );
    };
    if let Some(kind) = kind {
        assert_eq!(
            &kind, provisioned_kind,
            "{place}: datasource uid {uid:?} has type {provisioned_kind:?}, the panel says {kind:?}"
        );
    }
    uid
}

#[test]
fn every_panel_queries_a_provisioned_datasource() {
    let provisioned = provisioned_datasources();
    let mut checked = 0;
    for (name, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            let place = format!("{name}: {}", panel_name(panel));
            let kind = panel["type"].as_str().unwrap_or_default();
            assert!(!kind.is_empty(), "{place}: no panel type");
            let panel_uid = panel
                .get("datasource")
                .filter(|d| !d.is_null())
                .map(|d| check_datasource(d, &place, &provisioned));
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            if PANELS_WITHOUT_QUERIES.contains(&kind) {
                continue;
            }
            assert!(
                !targets.is_empty(),
                "{place}: a {kind} panel with no queries shows nothing"
            );
            for target in &targets {
                let ref_id = target["refId"].as_str().unwrap_or("?");
                let place = format!("{place} query {ref_id}");
                let uid = match target.get("datasource").filter(|d| !d.is_null()) {
                    Some(d) => check_datasource(d, &place, &provisioned),
                    None => panel_uid.clone().unwrap_or_else(|| {
                        panic!("{place}: neither the query nor its panel names a datasource")
                    }),
                };
                if let Some(panel_uid) = &panel_uid {
                    assert_eq!(
                        &uid, panel_uid,
                        "{place}: the query's datasource differs from its panel's (use one per panel)"
                    );
                }
                match provisioned[&uid].as_str() {
                    "prometheus" | "loki" => {
                        let expr = target["expr"].as_str().unwrap_or_default();
                        assert!(!expr.trim().is_empty(), "{place}: empty `expr`");
                    }
                    "jaeger" => {
                        let query_type = target["queryType"].as_str().unwrap_or_default();
                        assert!(
                            !query_type.is_empty(),
                            "{place}: a Jaeger query needs a queryType (search, traceql, …)"
                        );
                    }
                    _ => {}
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no queries at all");
}

#[test]
fn the_overview_has_slos_alerts_and_the_exemplar_panel() {
    let (name, overview) = dashboards()
        .into_iter()
        .find(|(_, d)| d["uid"] == "faultline-overview")
        .expect("the overview dashboard");
    let all = panels(&overview);
    assert!(
        all.iter().any(|p| p["type"] == "alertlist"
            || p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["expr"].as_str().is_some_and(|e| e.contains("ALERTS{")))),
        "{name}: no active-alerts panel"
    );
    let exemplar_panels: Vec<_> = all
        .iter()
        .filter(|p| {
            p["targets"].as_array().into_iter().flatten().any(|t| {
                t["exemplar"] == true
                    && t["expr"].as_str().is_some_and(|e| {
                        e.contains("traces_span_metrics_duration_milliseconds_bucket")
                    })
            })
        })
        .collect();
    assert_eq!(
        exemplar_panels.len(),
        1,
        "{name}: exactly one panel shows span-metric exemplars"
    );
    let description = exemplar_panels[0]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        description.to_lowercase().contains("compose only"),
        "{name}: the exemplar panel's description says it works in compose only"
    );
    let exprs: String = all
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    for slo in [
        r#"http_request_method="POST""#,
        r#"http_route="/api/orders""#,
        r#"le="0.25""#,
        "histogram_quantile(",
    ] {
        assert!(
            exprs.contains(slo),
            "{name}: no query uses {slo} (SLO status of POST /api/orders, latency quantiles)"
        );
    }
    // Data-flow order: gateway's RED panels above orders', orders' above fulfillment's.
    let first_y = |job: &str| {
        all.iter()
            .filter(|p| {
                p["targets"].as_array().into_iter().flatten().any(|t| {
                    t["expr"]
                        .as_str()
                        .is_some_and(|e| e.contains(&format!("job=\"{job}\"")))
                }) && p["title"].as_str().is_some_and(|t| t.starts_with(job))
            })
            .map(|p| p["gridPos"]["y"].as_u64().unwrap())
            .min()
            .unwrap_or_else(|| panic!("{name}: no RED panels for {job}"))
    };
    assert!(
        first_y("gateway") < first_y("orders") && first_y("orders") < first_y("fulfillment"),
        "{name}: RED rows are not in data-flow order (gateway → orders → fulfillment)"
    );
}
