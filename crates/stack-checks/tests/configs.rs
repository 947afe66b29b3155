//! The configuration files under `deploy/`, checked against the versions pinned in
//! `docker-compose.yml`:
//!
//! - the collector, Jaeger, Loki and Grafana provisioning files parse as YAML;
//! - the collector and Jaeger configs name only components that exist in the pinned release
//!   (the allow-lists below, each entry with the page it was checked against), every pipeline
//!   references only defined components, and every defined component is used;
//! - receivers listen on 0.0.0.0 inside their containers;
//! - the pieces agree: ports, metric names and units between collector, Jaeger, Prometheus,
//!   Loki and Grafana; the span-metric buckets are the HTTP semantic-convention ones;
//! - Grafana's data sources have the fixed UIDs and every `datasourceUid` resolves;
//! - `promtool check config` (Debian's promtool 2.42) accepts both Prometheus configs.
//!
//! promtool comes from Debian's `prometheus` package (PROMTOOL overrides the path).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_norway::{Mapping, Value};

const COLLECTOR_CONFIG: &str = "deploy/otel-collector/config.yaml";
const JAEGER_CONFIG: &str = "deploy/jaeger/config.yaml";
const LOKI_CONFIG: &str = "deploy/loki/config.yaml";
const DATASOURCES: &str = "deploy/grafana/provisioning/datasources/datasources.yaml";
const DASHBOARD_PROVIDERS: &str = "deploy/grafana/provisioning/dashboards/dashboards.yaml";
const PROMETHEUS_COMPOSE: &str = "deploy/prometheus/prometheus.yml";
const PROMETHEUS_NATIVE: &str = "deploy/prometheus/native.yml";

/// The images the allow-lists below were checked against. Bumping an image means checking
/// every component of its config again and updating these.
const COLLECTOR_IMAGE: &str = "otel/opentelemetry-collector-contrib:0.159.0";
const JAEGER_IMAGE: &str = "jaegertracing/jaeger:2.20.0";
const LOKI_IMAGE: &str = "grafana/loki:3.7.6";
const PROMETHEUS_IMAGE: &str = "prom/prometheus:v3.13.2";
const GRAFANA_IMAGE: &str = "grafana/grafana:13.1.0";

/// A component type a config may name: (section, type, where it is documented at the pinned
/// version).
type Known = (&'static str, &'static str, &'static str);

/// Components of otelcol-contrib v0.159.0 that deploy/otel-collector/config.yaml may use.
/// All are in that release's manifest:
/// https://github.com/open-telemetry/opentelemetry-collector-releases/blob/v0.159.0/distributions/otelcol-contrib/manifest.yaml
const COLLECTOR_COMPONENTS: &[Known] = &[
    (
        "receivers",
        "otlp",
        "https://github.com/open-telemetry/opentelemetry-collector/blob/v0.159.0/receiver/otlpreceiver/README.md",
    ),
    (
        "processors",
        "batch",
        "https://github.com/open-telemetry/opentelemetry-collector/blob/v0.159.0/processor/batchprocessor/README.md",
    ),
    (
        "processors",
        "memory_limiter",
        "https://github.com/open-telemetry/opentelemetry-collector/blob/v0.159.0/processor/memorylimiterprocessor/README.md",
    ),
    // metadata.yaml there: `type: otlp_grpc`, `deprecated_type: otlp`.
    (
        "exporters",
        "otlp_grpc",
        "https://github.com/open-telemetry/opentelemetry-collector/blob/v0.159.0/exporter/otlpexporter/README.md",
    ),
    // metadata.yaml there: `type: otlp_http`, `deprecated_type: otlphttp`.
    (
        "exporters",
        "otlp_http",
        "https://github.com/open-telemetry/opentelemetry-collector/blob/v0.159.0/exporter/otlphttpexporter/README.md",
    ),
    (
        "exporters",
        "prometheus",
        "https://github.com/open-telemetry/opentelemetry-collector-contrib/blob/v0.159.0/exporter/prometheusexporter/README.md",
    ),
    // metadata.yaml there: `type: span_metrics`, `deprecated_type: spanmetrics`.
    (
        "connectors",
        "span_metrics",
        "https://github.com/open-telemetry/opentelemetry-collector-contrib/blob/v0.159.0/connector/spanmetricsconnector/README.md",
    ),
    (
        "extensions",
        "health_check",
        "https://github.com/open-telemetry/opentelemetry-collector-contrib/blob/v0.159.0/extension/healthcheckextension/README.md",
    ),
];

/// Names that still work in v0.159.0 but are deprecated aliases (a warning at every start).
const COLLECTOR_DEPRECATED: &[(&str, &str, &str)] = &[
    ("exporters", "otlp", "otlp_grpc"),
    ("exporters", "otlphttp", "otlp_http"),
    ("connectors", "spanmetrics", "span_metrics"),
];

/// Components of Jaeger v2.20.0 (cmd/jaeger/internal/components.go there; it builds on
/// collector v0.155.0) that deploy/jaeger/config.yaml may use.
const JAEGER_COMPONENTS: &[Known] = &[
    (
        "receivers",
        "otlp",
        "https://github.com/open-telemetry/opentelemetry-collector/blob/v0.155.0/receiver/otlpreceiver/README.md",
    ),
    (
        "processors",
        "batch",
        "https://github.com/open-telemetry/opentelemetry-collector/blob/v0.155.0/processor/batchprocessor/README.md",
    ),
    (
        "exporters",
        "jaeger_storage_exporter",
        "https://github.com/jaegertracing/jaeger/tree/v2.20.0/cmd/jaeger/internal/exporters/storageexporter",
    ),
    (
        "extensions",
        "jaeger_storage",
        "https://github.com/jaegertracing/jaeger/tree/v2.20.0/cmd/jaeger/internal/extension/jaegerstorage",
    ),
    (
        "extensions",
        "jaeger_query",
        "https://github.com/jaegertracing/jaeger/tree/v2.20.0/cmd/jaeger/internal/extension/jaegerquery",
    ),
    (
        "extensions",
        "healthcheckv2",
        "https://github.com/open-telemetry/opentelemetry-collector-contrib/blob/v0.155.0/extension/healthcheckv2extension/README.md",
    ),
];

const SECTIONS: &[&str] = &[
    "receivers",
    "processors",
    "exporters",
    "connectors",
    "extensions",
];

/// The HTTP semantic-convention histogram boundaries, in seconds.
const HTTP_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

fn yaml(relative: &str) -> Value {
    let path = support::repo().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{relative} is not YAML: {e}"));
    assert!(value.is_mapping(), "{relative}: the top level is a mapping");
    value
}

/// `value` at a path of keys; panics naming the file and path when absent.
fn at<'a>(file: &str, value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, key| {
        v.get(*key)
            .unwrap_or_else(|| panic!("{file}: no {}", path.join(".")))
    })
}

fn text<'a>(file: &str, value: &'a Value, path: &[&str]) -> &'a str {
    at(file, value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{file}: {} is not a string", path.join(".")))
}

fn mapping(value: Option<&Value>) -> impl Iterator<Item = (&str, &Value)> {
    value
        .and_then(Value::as_mapping)
        .into_iter()
        .flat_map(Mapping::iter)
        .map(|(k, v)| (k.as_str().expect("string keys"), v))
}

fn list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_sequence)
        .map(|items| {
            items
                .iter()
                .map(|i| i.as_str().expect("a list of strings").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The port of `host:port` or `scheme://host:port/...`.
fn port_of(endpoint: &str) -> u16 {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {endpoint:?}"))
}

fn host_of(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// The compose services, by name.
fn compose_services() -> BTreeMap<String, Value> {
    mapping(yaml("docker-compose.yml").get("services"))
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
}

fn image_of(services: &BTreeMap<String, Value>, name: &str) -> String {
    services[name]
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("service {name} has no image"))
        .to_owned()
}

#[test]
fn every_config_parses_as_yaml() {
    for file in [
        COLLECTOR_CONFIG,
        JAEGER_CONFIG,
        LOKI_CONFIG,
        DATASOURCES,
        DASHBOARD_PROVIDERS,
        PROMETHEUS_COMPOSE,
        PROMETHEUS_NATIVE,
    ] {
        yaml(file);
    }
}

#[test]
fn the_allow_lists_are_for_the_pinned_images() {
    let services = compose_services();
    for (service, image) in [
        ("otel-collector", COLLECTOR_IMAGE),
        ("jaeger", JAEGER_IMAGE),
        ("loki", LOKI_IMAGE),
        ("prometheus", PROMETHEUS_IMAGE),
        ("grafana", GRAFANA_IMAGE),
    ] {
        assert_eq!(
            image_of(&services, service),
            image,
            "docker-compose.yml pins another {service} image than the one its config was \
             checked against: check the config's keys and components at the new version, \
             then update this test"
        );
    }
    for (_, _, doc) in COLLECTOR_COMPONENTS {
        assert!(
            doc.contains("/v0.159.0/"),
            "{doc} is not the pinned collector's"
        );
    }
    for (_, _, doc) in JAEGER_COMPONENTS {
        assert!(
            doc.contains("/v2.20.0/") || doc.contains("/v0.155.0/"),
            "{doc} is not the pinned Jaeger's (or the collector release it builds on)"
        );
    }
}

/// A component ID `type[/name]` split into its type.
fn component_type(id: &str) -> &str {
    id.split_once('/').map_or(id, |(t, _)| t)
}

/// Problems with a collector-style config: unknown component types, pipelines naming
/// undefined components, defined components never used.
fn component_problems(file: &str, config: &Value, known: &[Known]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut defined: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for section in SECTIONS {
        for (id, _) in mapping(config.get(*section)) {
            let kind = component_type(id);
            if !known.iter().any(|(s, t, _)| s == section && *t == kind) {
                let hint = COLLECTOR_DEPRECATED
                    .iter()
                    .find(|(s, old, _)| s == section && *old == kind)
                    .map(|(_, _, new)| format!(" (deprecated alias: use {new})"))
                    .unwrap_or_default();
                problems.push(format!(
                    "{file}: {section}.{id}: {kind} is not in the allow-list for the pinned version{hint}"
                ));
            }
            defined.entry(section).or_default().insert(id.to_owned());
        }
    }
    let empty = BTreeSet::new();
    let defined_in = |section: &str| defined.get(section).unwrap_or(&empty);
    let mut used: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut connector_roles: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let service = at(file, config, &["service"]);
    let pipelines: Vec<(&str, &Value)> = mapping(service.get("pipelines")).collect();
    if pipelines.is_empty() {
        problems.push(format!("{file}: no pipelines"));
    }
    for (pipeline, spec) in pipelines {
        let signal = component_type(pipeline);
        if !["traces", "metrics", "logs", "profiles"].contains(&signal) {
            problems.push(format!(
                "{file}: pipeline {pipeline}: unknown signal {signal}"
            ));
        }
        for role in ["receivers", "processors", "exporters"] {
            let ids = list(spec.get(role));
            if role != "processors" && ids.is_empty() {
                problems.push(format!("{file}: pipeline {pipeline} has no {role}"));
            }
            for id in ids {
                let is_connector = role != "processors" && defined_in("connectors").contains(&id);
                if is_connector {
                    let roles = connector_roles.entry(id.clone()).or_default();
                    if role == "exporters" {
                        roles.0 = true;
                    } else {
                        roles.1 = true;
                    }
                    used.entry("connectors").or_default().insert(id);
                } else if defined_in(role).contains(&id) {
                    used.entry(role).or_default().insert(id);
                } else {
                    problems.push(format!(
                        "{file}: pipeline {pipeline} names {role} {id}, which is not defined"
                    ));
                }
            }
        }
    }
    for id in list(service.get("extensions")) {
        if defined_in("extensions").contains(&id) {
            used.entry("extensions").or_default().insert(id);
        } else {
            problems.push(format!(
                "{file}: service.extensions names {id}, which is not defined"
            ));
        }
    }
    for section in SECTIONS {
        for id in defined_in(section) {
            if !used.get(section).is_some_and(|u| u.contains(id)) {
                problems.push(format!("{file}: {section}.{id} is defined but never used"));
            }
        }
    }
    for (id, (as_exporter, as_receiver)) in connector_roles {
        if !(as_exporter && as_receiver) {
            problems.push(format!(
                "{file}: connector {id} must be an exporter of one pipeline and a receiver of another"
            ));
        }
    }
    problems
}

#[test]
fn the_collector_names_only_components_of_the_pinned_release_and_uses_them_all() {
    let problems = component_problems(
        COLLECTOR_CONFIG,
        &yaml(COLLECTOR_CONFIG),
        COLLECTOR_COMPONENTS,
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn jaeger_names_only_components_of_the_pinned_release_and_uses_them_all() {
    let problems = component_problems(JAEGER_CONFIG, &yaml(JAEGER_CONFIG), JAEGER_COMPONENTS);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_component_checks_catch_what_they_should() {
    let config: Value = serde_norway::from_str(
        r#"
receivers: {otlp: {}}
processors: {batch: {}, unused_processor_type: {}}
exporters: {otlp/jaeger: {}, debug: {}}
connectors: {spanmetrics: {}}
service:
  extensions: [health_check]
  pipelines:
    traces: {receivers: [otlp], processors: [batch, memory_limiter], exporters: [otlp/jaeger, spanmetrics]}
    metrics/x: {receivers: [nope], exporters: [debug]}
"#,
    )
    .unwrap();
    let problems = component_problems("example", &config, COLLECTOR_COMPONENTS).join("\n");
    for expected in [
        "exporters.otlp/jaeger: otlp is not in the allow-list for the pinned version (deprecated alias: use otlp_grpc)",
        "connectors.spanmetrics: spanmetrics is not in the allow-list for the pinned version (deprecated alias: use span_metrics)",
        "processors.unused_processor_type: unused_processor_type is not in the allow-list",
        "pipeline traces names processors memory_limiter, which is not defined",
        "pipeline metrics/x names receivers nope, which is not defined",
        "service.extensions names health_check, which is not defined",
        "processors.unused_processor_type is defined but never used",
        "connector spanmetrics must be an exporter of one pipeline and a receiver of another",
    ] {
        assert!(
            problems.contains(expected),
            "missing {expected:?} in:\n{problems}"
        );
    }
}

/// Every `endpoint` (or `host`) a config listens on, by path.
fn listen_addresses(file: &str, config: &Value, paths: &[&[&str]]) -> Vec<(String, String)> {
    paths
        .iter()
        .map(|path| (path.join("."), text(file, config, path).to_owned()))
        .collect()
}

#[test]
fn receivers_listen_on_every_interface_inside_their_containers() {
    let collector = yaml(COLLECTOR_CONFIG);
    let jaeger = yaml(JAEGER_CONFIG);
    let loki = yaml(LOKI_CONFIG);
    let telemetry: &[&str] = &["service", "telemetry", "metrics", "readers"];
    let mut addresses = listen_addresses(
        COLLECTOR_CONFIG,
        &collector,
        &[
            &["receivers", "otlp", "protocols", "grpc", "endpoint"],
            &["receivers", "otlp", "protocols", "http", "endpoint"],
            &["exporters", "prometheus", "endpoint"],
            &["extensions", "health_check", "endpoint"],
        ],
    );
    addresses.extend(listen_addresses(
        JAEGER_CONFIG,
        &jaeger,
        &[
            &["receivers", "otlp", "protocols", "grpc", "endpoint"],
            &["receivers", "otlp", "protocols", "http", "endpoint"],
            &["extensions", "jaeger_query", "http", "endpoint"],
            &["extensions", "jaeger_query", "grpc", "endpoint"],
            &["extensions", "healthcheckv2", "http", "endpoint"],
        ],
    ));
    for (file, config) in [(COLLECTOR_CONFIG, &collector), (JAEGER_CONFIG, &jaeger)] {
        let readers = at(file, config, telemetry)
            .as_sequence()
            .expect("readers list");
        for reader in readers {
            let host = reader
                .get("pull")
                .and_then(|p| p.get("exporter"))
                .and_then(|e| e.get("prometheus"))
                .and_then(|p| p.get("host"))
                .and_then(Value::as_str)
                .expect("a pull prometheus reader with a host");
            addresses.push((format!("{file}: telemetry reader"), format!("{host}:0")));
        }
    }
    addresses.push((
        "loki server.http_listen_address".into(),
        format!(
            "{}:0",
            text(LOKI_CONFIG, &loki, &["server", "http_listen_address"])
        ),
    ));
    let wrong: Vec<String> = addresses
        .iter()
        .filter(|(_, address)| host_of(address) != "0.0.0.0")
        .map(|(path, address)| format!("{path} = {address}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "in a container, localhost is unreachable from the other containers:\n{}",
        wrong.join("\n")
    );
}

/// A Go duration such as `5ms`, `2.5s`, `1m` in seconds.
fn seconds(duration: &str) -> f64 {
    let split = duration
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or_else(|| panic!("{duration:?} has no unit"));
    let (number, unit) = duration.split_at(split);
    let number: f64 = number.parse().unwrap_or_else(|_| panic!("{duration:?}"));
    number
        * match unit {
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => panic!("unit {other:?} in {duration:?}"),
        }
}

/// The span metrics' histogram is in milliseconds (Jaeger's Monitor tab reads its quantiles as
/// milliseconds; see the collector config) but its boundaries are the HTTP semantic-convention
/// ones.
#[test]
fn span_metrics_use_the_http_semantic_convention_buckets_in_milliseconds_with_exemplars() {
    let collector = yaml(COLLECTOR_CONFIG);
    let connector = at(
        COLLECTOR_CONFIG,
        &collector,
        &["connectors", "span_metrics"],
    );
    assert_eq!(
        text(COLLECTOR_CONFIG, connector, &["histogram", "unit"]),
        "ms"
    );
    let buckets: Vec<f64> = at(
        COLLECTOR_CONFIG,
        connector,
        &["histogram", "explicit", "buckets"],
    )
    .as_sequence()
    .expect("buckets list")
    .iter()
    .map(|b| seconds(b.as_str().expect("durations as strings")))
    .collect();
    assert_eq!(buckets.len(), HTTP_DURATION_BUCKETS.len(), "{buckets:?}");
    for (got, want) in buckets.iter().zip(HTTP_DURATION_BUCKETS) {
        assert!(
            (got - want).abs() < 1e-9,
            "bucket {got} s, want {want} s: {buckets:?}"
        );
    }
    assert_eq!(
        at(COLLECTOR_CONFIG, connector, &["exemplars", "enabled"]).as_bool(),
        Some(true)
    );
    assert_eq!(
        text(COLLECTOR_CONFIG, connector, &["namespace"]),
        "traces.span.metrics"
    );
    let dimensions: BTreeSet<&str> = at(COLLECTOR_CONFIG, connector, &["dimensions"])
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| d.get("name").and_then(Value::as_str).unwrap())
        .collect();
    for wanted in [
        "http.request.method",
        "http.response.status_code",
        "http.route",
    ] {
        assert!(
            dimensions.contains(wanted),
            "span metrics dimension {wanted}"
        );
    }
    let exporter = at(COLLECTOR_CONFIG, &collector, &["exporters", "prometheus"]);
    assert_eq!(
        exporter.get("enable_open_metrics").and_then(Value::as_bool),
        Some(true),
        "exemplars are only exposed in OpenMetrics"
    );
    assert_eq!(
        at(
            COLLECTOR_CONFIG,
            exporter,
            &["resource_to_telemetry_conversion", "enabled"]
        )
        .as_bool(),
        Some(true)
    );
}

/// The `host:port` targets of a Prometheus job.
fn targets(prometheus: &Value, job: &str) -> Vec<String> {
    let jobs = prometheus
        .get("scrape_configs")
        .and_then(Value::as_sequence)
        .expect("scrape_configs");
    let job = jobs
        .iter()
        .find(|j| j.get("job_name").and_then(Value::as_str) == Some(job))
        .unwrap_or_else(|| panic!("no scrape job {job}"));
    job.get("static_configs")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .flat_map(|c| list(c.get("targets")))
        .collect()
}

#[test]
fn the_pieces_agree_on_ports_names_and_units() {
    let collector = yaml(COLLECTOR_CONFIG);
    let jaeger = yaml(JAEGER_CONFIG);
    let loki = yaml(LOKI_CONFIG);
    let prometheus = yaml(PROMETHEUS_COMPOSE);
    let native = yaml(PROMETHEUS_NATIVE);
    let services = compose_services();
    let grpc = ["receivers", "otlp", "protocols", "grpc", "endpoint"];

    // Services -> collector -> Jaeger and Loki.
    let collector_grpc = port_of(text(COLLECTOR_CONFIG, &collector, &grpc));
    for name in ["gateway", "orders", "fulfillment", "loadgen"] {
        let endpoint = services[name]
            .get("environment")
            .and_then(|e| e.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{name}: OTEL_EXPORTER_OTLP_ENDPOINT"));
        assert_eq!(host_of(endpoint), "otel-collector", "{name}");
        assert_eq!(
            port_of(endpoint),
            collector_grpc,
            "{name}: the collector's OTLP gRPC port"
        );
    }
    let to_jaeger = text(
        COLLECTOR_CONFIG,
        &collector,
        &["exporters", "otlp_grpc/jaeger", "endpoint"],
    );
    assert_eq!(host_of(to_jaeger), "jaeger");
    assert_eq!(
        port_of(to_jaeger),
        port_of(text(JAEGER_CONFIG, &jaeger, &grpc))
    );
    let to_loki = text(
        COLLECTOR_CONFIG,
        &collector,
        &["exporters", "otlp_http/loki", "endpoint"],
    );
    assert_eq!(host_of(to_loki), "loki");
    let loki_port = at(LOKI_CONFIG, &loki, &["server", "http_listen_port"])
        .as_u64()
        .unwrap();
    assert_eq!(u64::from(port_of(to_loki)), loki_port);
    assert!(
        to_loki.ends_with("/otlp"),
        "Loki's native OTLP endpoint: {to_loki}"
    );

    // Collector and Jaeger -> Prometheus, and Prometheus -> the span metrics.
    let exporter_port = port_of(text(
        COLLECTOR_CONFIG,
        &collector,
        &["exporters", "prometheus", "endpoint"],
    ));
    let reader_port = |file: &str, config: &Value| {
        at(
            file,
            config,
            &["service", "telemetry", "metrics", "readers"],
        )
        .as_sequence()
        .unwrap()[0]
            .get("pull")
            .and_then(|p| p.get("exporter"))
            .and_then(|e| e.get("prometheus"))
            .and_then(|p| p.get("port"))
            .and_then(Value::as_u64)
            .unwrap()
    };
    let collector_targets: BTreeSet<String> =
        targets(&prometheus, "otel-collector").into_iter().collect();
    assert_eq!(
        collector_targets,
        BTreeSet::from([
            format!("otel-collector:{exporter_port}"),
            format!(
                "otel-collector:{}",
                reader_port(COLLECTOR_CONFIG, &collector)
            ),
        ])
    );
    assert_eq!(
        targets(&prometheus, "jaeger"),
        [format!("jaeger:{}", reader_port(JAEGER_CONFIG, &jaeger))]
    );
    let backend = at(
        JAEGER_CONFIG,
        &jaeger,
        &["extensions", "jaeger_storage", "metric_backends"],
    )
    .as_mapping()
    .expect("one metric backend")
    .values()
    .next()
    .unwrap();
    let backend = at(JAEGER_CONFIG, backend, &["prometheus"]);
    assert_eq!(
        text(JAEGER_CONFIG, backend, &["endpoint"]),
        "http://prometheus:9090"
    );
    let namespace = text(
        COLLECTOR_CONFIG,
        &collector,
        &["connectors", "span_metrics", "namespace"],
    );
    assert_eq!(
        text(JAEGER_CONFIG, backend, &["metric_namespace"]),
        namespace.replace('.', "_"),
        "Jaeger's Monitor tab queries the collector's span metric names"
    );
    assert_eq!(
        text(JAEGER_CONFIG, backend, &["latency_unit"]),
        text(
            COLLECTOR_CONFIG,
            &collector,
            &["connectors", "span_metrics", "histogram", "unit"]
        ),
        "Jaeger reads the duration histogram in the unit the collector records it in"
    );
    for key in ["normalize_calls", "normalize_duration"] {
        assert_eq!(
            backend.get(key).and_then(Value::as_bool),
            Some(true),
            "{key}: the prometheus exporter adds _total and the unit to the names"
        );
    }
    let memory = at(
        JAEGER_CONFIG,
        &jaeger,
        &["extensions", "jaeger_storage", "backends"],
    )
    .as_mapping()
    .unwrap()
    .values()
    .filter_map(|b| b.get("memory"))
    .next()
    .expect("a memory trace store");
    assert!(
        memory
            .get("max_traces")
            .and_then(Value::as_u64)
            .is_some_and(|n| n > 0),
        "the memory store is bounded by max_traces"
    );
    let query_storage = at(
        JAEGER_CONFIG,
        &jaeger,
        &["extensions", "jaeger_query", "storage"],
    );
    let exporter_store = text(
        JAEGER_CONFIG,
        &jaeger,
        &["exporters", "jaeger_storage_exporter", "trace_storage"],
    );
    assert_eq!(
        text(JAEGER_CONFIG, query_storage, &["traces"]),
        exporter_store
    );

    // Prometheus -> the services' admin ports, in compose and natively; same jobs.
    for (name, admin) in [("gateway", 9080), ("orders", 9081), ("fulfillment", 9082)] {
        assert_eq!(targets(&prometheus, name), [format!("{name}:{admin}")]);
        assert_eq!(targets(&native, name), [format!("127.0.0.1:{admin}")]);
    }
    for (file, config, interval) in [
        (PROMETHEUS_COMPOSE, &prometheus, "5s"),
        (PROMETHEUS_NATIVE, &native, "2s"),
    ] {
        assert_eq!(
            text(file, config, &["global", "scrape_interval"]),
            interval,
            "{file}"
        );
        assert_eq!(
            list(config.get("rule_files")),
            ["rules/*.yml"],
            "{file}: rules beside it"
        );
        assert_eq!(
            text(
                file,
                config,
                &["storage", "tsdb", "out_of_order_time_window"]
            ),
            "10m",
            "{file}"
        );
    }

    // Grafana -> Prometheus, Jaeger's UI port, Loki.
    let datasources = yaml(DATASOURCES);
    let urls: BTreeMap<&str, &str> = at(DATASOURCES, &datasources, &["datasources"])
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d.get("uid").and_then(Value::as_str).unwrap(),
                d.get("url").and_then(Value::as_str).unwrap(),
            )
        })
        .collect();
    let jaeger_ui = port_of(text(
        JAEGER_CONFIG,
        &jaeger,
        &["extensions", "jaeger_query", "http", "endpoint"],
    ));
    assert_eq!(urls["prometheus"], "http://prometheus:9090");
    assert_eq!(urls["jaeger"], format!("http://jaeger:{jaeger_ui}"));
    assert_eq!(urls["loki"], format!("http://loki:{loki_port}"));
    for url in urls.values() {
        assert!(
            services.contains_key(host_of(url)),
            "{url}: not a compose service"
        );
    }

    // Grafana's dashboard provider reads where compose mounts dashboards/.
    let providers = yaml(DASHBOARD_PROVIDERS);
    let paths: Vec<&str> = at(DASHBOARD_PROVIDERS, &providers, &["providers"])
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| text(DASHBOARD_PROVIDERS, p, &["options", "path"]))
        .collect();
    let grafana_mounts = list(services["grafana"].get("volumes"));
    for path in paths {
        assert!(
            grafana_mounts
                .iter()
                .any(|m| m.starts_with("./dashboards:") && m.split(':').nth(1) == Some(path)),
            "{DASHBOARD_PROVIDERS}: {path} is not where docker-compose.yml mounts ./dashboards ({grafana_mounts:?})"
        );
    }
}

/// Every value of `key` anywhere in `value`.
fn values_of<'a>(value: &'a Value, key: &str, found: &mut Vec<&'a Value>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                if k.as_str() == Some(key) {
                    found.push(v);
                }
                values_of(v, key, found);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|i| values_of(i, key, found)),
        _ => {}
    }
}

/// Every string anywhere in `value`.
fn all_strings<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => found.push(s),
        Value::Mapping(map) => map.values().for_each(|v| all_strings(v, found)),
        Value::Sequence(items) => items.iter().for_each(|i| all_strings(i, found)),
        _ => {}
    }
}

#[test]
fn grafana_data_sources_have_the_fixed_uids_and_every_link_resolves() {
    let datasources = yaml(DATASOURCES);
    let list = at(DATASOURCES, &datasources, &["datasources"])
        .as_sequence()
        .unwrap();
    let by_uid: BTreeMap<&str, &Value> = list
        .iter()
        .map(|d| {
            (
                d.get("uid")
                    .and_then(Value::as_str)
                    .expect("every data source has a uid"),
                d,
            )
        })
        .collect();
    assert_eq!(list.len(), by_uid.len(), "UIDs are unique");
    assert_eq!(
        by_uid.keys().copied().collect::<Vec<_>>(),
        ["jaeger", "loki", "prometheus"],
        "exactly the three fixed UIDs dashboards refer to"
    );
    for uid in ["prometheus", "jaeger", "loki"] {
        assert_eq!(
            text(DATASOURCES, by_uid[uid], &["type"]),
            uid,
            "the {uid} data source's type"
        );
    }

    let mut references = Vec::new();
    values_of(&datasources, "datasourceUid", &mut references);
    assert!(
        references.len() >= 4,
        "exemplars, derived fields, traces to logs and to metrics"
    );
    for reference in references {
        let uid = reference.as_str().expect("datasourceUid is a string");
        assert!(
            by_uid.contains_key(uid),
            "datasourceUid {uid} is not provisioned"
        );
    }

    let prometheus = by_uid["prometheus"];
    let exemplar = &at(
        DATASOURCES,
        prometheus,
        &["jsonData", "exemplarTraceIdDestinations"],
    )
    .as_sequence()
    .unwrap()[0];
    assert_eq!(
        text(DATASOURCES, exemplar, &["name"]),
        "trace_id",
        "the collector's exemplar label"
    );
    assert_eq!(text(DATASOURCES, exemplar, &["datasourceUid"]), "jaeger");

    let loki = by_uid["loki"];
    let field = &at(DATASOURCES, loki, &["jsonData", "derivedFields"])
        .as_sequence()
        .unwrap()[0];
    assert_eq!(
        text(DATASOURCES, field, &["matcherType"]),
        "label",
        "structured metadata"
    );
    assert_eq!(text(DATASOURCES, field, &["matcherRegex"]), "trace_id");
    assert_eq!(text(DATASOURCES, field, &["datasourceUid"]), "jaeger");

    let jaeger = by_uid["jaeger"];
    let to_logs = at(DATASOURCES, jaeger, &["jsonData", "tracesToLogsV2"]);
    assert_eq!(text(DATASOURCES, to_logs, &["datasourceUid"]), "loki");
    let query = text(DATASOURCES, to_logs, &["query"]);
    assert!(
        query.contains(r#"trace_id="$${__trace.traceId}""#),
        "trace to logs filters on the trace_id structured metadata: {query}"
    );
    let to_metrics = at(DATASOURCES, jaeger, &["jsonData", "tracesToMetrics"]);
    assert_eq!(
        text(DATASOURCES, to_metrics, &["datasourceUid"]),
        "prometheus"
    );
    for query in at(DATASOURCES, to_metrics, &["queries"])
        .as_sequence()
        .unwrap()
    {
        let query = text(DATASOURCES, query, &["query"]);
        assert!(query.contains("traces_span_metrics_"), "{query}");
    }

    // Grafana expands $VAR and ${VAR} in provisioning files from its environment, so every
    // Grafana variable must be written $${...} or $$__...; a single $ would become "".
    let mut strings = Vec::new();
    all_strings(&datasources, &mut strings);
    for s in strings {
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' {
                if bytes.get(i + 1) == Some(&b'$') {
                    i += 2;
                    continue;
                }
                panic!(
                    "{DATASOURCES}: unescaped $ in {s:?}: Grafana would expand it from its environment"
                );
            }
            i += 1;
        }
    }
}

#[test]
fn loki_is_a_single_binary_with_tsdb_schema_v13_and_structured_metadata() {
    let loki = yaml(LOKI_CONFIG);
    assert_eq!(
        at(LOKI_CONFIG, &loki, &["auth_enabled"]).as_bool(),
        Some(false)
    );
    let schemas = at(LOKI_CONFIG, &loki, &["schema_config", "configs"])
        .as_sequence()
        .unwrap();
    let newest = schemas.last().expect("a schema period");
    assert_eq!(text(LOKI_CONFIG, newest, &["schema"]), "v13");
    assert_eq!(text(LOKI_CONFIG, newest, &["store"]), "tsdb");
    assert_eq!(text(LOKI_CONFIG, newest, &["object_store"]), "filesystem");
    assert_eq!(
        at(
            LOKI_CONFIG,
            &loki,
            &["limits_config", "allow_structured_metadata"]
        )
        .as_bool(),
        Some(true),
        "OTLP ingestion needs structured metadata"
    );
    let index_labels: Vec<String> = at(
        LOKI_CONFIG,
        &loki,
        &[
            "limits_config",
            "otlp_config",
            "resource_attributes",
            "attributes_config",
        ],
    )
    .as_sequence()
    .unwrap()
    .iter()
    .filter(|c| c.get("action").and_then(Value::as_str) == Some("index_label"))
    .flat_map(|c| list(c.get("attributes")))
    .collect();
    assert!(
        index_labels.iter().any(|l| l == "service.name"),
        "service_name is the stream label Jaeger's trace-to-logs link selects on"
    );
    let path_prefix = text(LOKI_CONFIG, &loki, &["common", "path_prefix"]);
    let services = compose_services();
    let volumes = list(services["loki"].get("volumes"));
    assert!(
        volumes
            .iter()
            .any(|v| v.split(':').nth(1) == Some(path_prefix)),
        "Loki's data ({path_prefix}) is on a volume: {volumes:?}"
    );
}

#[test]
fn promtool_accepts_both_prometheus_configs() {
    let Some(promtool) = support::tool("promtool", "PROMTOOL") else {
        return;
    };
    for file in [PROMETHEUS_COMPOSE, PROMETHEUS_NATIVE] {
        let out = Command::new(&promtool)
            .args(["check", "config"])
            .arg(support::repo().join(file))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
        assert!(
            out.status.success(),
            "promtool check config {file}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
