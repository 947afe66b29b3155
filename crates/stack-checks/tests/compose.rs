//! `docker-compose.yml` and the `Dockerfile`, checked without a Docker engine.
//!
//! - The compose file validates against the Compose Specification JSON schema (vendored as
//!   `deploy/schemas/compose-spec.json`), with the real `check-jsonschema` tool.
//! - What the schema cannot say, checked here (no tool needed, always runs): every image is
//!   pinned to an exact version; every dependency waits on a healthcheck that exists (and
//!   every healthcheck that exists is waited on); only the user-facing ports are published,
//!   the admin ports only on 127.0.0.1; every bind-mounted path, env file, build context and
//!   Dockerfile exists, and every config file a command names is mounted; named volumes are
//!   declared; URLs between services name real services and ports; the three services follow
//!   CONTRACT.md; the image is built as the issue asks.
//!
//! check-jsonschema comes from PyPI: `python3 -m venv /tmp/cj && /tmp/cj/bin/pip install
//! check-jsonschema`, then `CHECK_JSONSCHEMA=/tmp/cj/bin/check-jsonschema cargo test -p
//! stack-checks --test compose`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

const COMPOSE_FILE: &str = "docker-compose.yml";
const SCHEMA: &str = "deploy/schemas/compose-spec.json";

/// The three services of CONTRACT.md: (name, app port, admin port).
const FAULTLINE_SERVICES: &[(&str, u16, u16)] = &[
    ("gateway", 8080, 9080),
    ("orders", 8081, 9081),
    ("fulfillment", 8082, 9082),
];

/// The container ports the issue allows to publish besides the admin ports: the gateway's
/// API, Jaeger's UI, Grafana, Prometheus.
const USER_FACING_PORTS: &[u16] = &[8080, 16686, 3000, 9090];

/// Services others may depend on without a healthcheck, because their image cannot run one.
const NO_HEALTHCHECK_POSSIBLE: &[(&str, &str)] = &[(
    "otel-collector",
    "otel/opentelemetry-collector-contrib is FROM scratch: no shell, no wget or curl, and \
     the collector binary has no health subcommand",
)];

fn read(relative: &str) -> String {
    let path = support::repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn compose() -> Value {
    serde_norway::from_str(&read(COMPOSE_FILE))
        .unwrap_or_else(|e| panic!("{COMPOSE_FILE} is not YAML: {e}"))
}

/// The services, by name.
fn services(compose: &Value) -> BTreeMap<String, Value> {
    compose
        .get("services")
        .and_then(Value::as_mapping)
        .expect("services: is a mapping")
        .iter()
        .map(|(name, service)| {
            (
                name.as_str().expect("service names are strings").to_owned(),
                service.clone(),
            )
        })
        .collect()
}

fn service<'a>(services: &'a BTreeMap<String, Value>, name: &str) -> &'a Value {
    services
        .get(name)
        .unwrap_or_else(|| panic!("{COMPOSE_FILE} has no service {name}"))
}

/// The strings of a list, or of a single string.
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .unwrap_or_else(|| panic!("expected a string, found {item:?}"))
                    .to_owned()
            })
            .collect(),
        Some(other) => panic!("expected a string or a list of strings, found {other:?}"),
    }
}

/// A service's environment as a map (both the mapping and the `KEY=value` list forms).
fn environment(service: &Value) -> BTreeMap<String, String> {
    match service.get("environment") {
        None => BTreeMap::new(),
        Some(Value::Mapping(map)) => map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => serde_norway::to_string(other).unwrap().trim().to_owned(),
                };
                (k.as_str().unwrap().to_owned(), value)
            })
            .collect(),
        Some(list) => strings(Some(list))
            .into_iter()
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (item, String::new()),
            })
            .collect(),
    }
}

/// True for a tag that names an exact release: at least `major.minor` in digits (optionally
/// after a `v`), or a dated snapshot (`bookworm-20260803-slim`), so `16.15-alpine`,
/// `v3.13.2`, `0.159.0` pass and `16`, `alpine`, `bookworm-slim`, `stable`, `latest` do not.
fn is_exact_version(tag: &str) -> bool {
    let dated = tag.split('-').any(|part| {
        part.len() == 8 && part.starts_with("20") && part.bytes().all(|b| b.is_ascii_digit())
    });
    if dated {
        return true;
    }
    let tag = tag.strip_prefix('v').unwrap_or(tag);
    let numeric: String = tag
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let parts: Vec<&str> = numeric.split('.').filter(|p| !p.is_empty()).collect();
    parts.len() >= 2 && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit()))
}

/// Why an image reference is not pinned, if it is not: it must carry a digest, or a tag that
/// is an exact version.
fn unpinned(image: &str) -> Option<String> {
    if let Some((_, digest)) = image.split_once("@sha256:") {
        return (digest.len() != 64).then(|| format!("{image}: malformed sha256 digest"));
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => Some(format!("{image}: no tag (means latest)")),
        Some((_, "latest")) => Some(format!("{image}: tag latest")),
        Some((_, tag)) if !is_exact_version(tag) => {
            Some(format!("{image}: tag {tag:?} is not an exact version"))
        }
        Some(_) => None,
    }
}

#[test]
fn exact_versions_are_told_from_floating_tags() {
    for pinned in [
        "postgres:16.15-alpine",
        "prom/prometheus:v3.13.2",
        "otel/opentelemetry-collector-contrib:0.159.0",
        "registry.example:5000/team/app:1.2",
        "debian:bookworm-20260803-slim",
        "busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        assert_eq!(unpinned(pinned), None, "{pinned}");
    }
    for floating in [
        "postgres",
        "postgres:latest",
        "postgres:16",
        "postgres:alpine",
        "debian:bookworm-slim",
        "grafana/grafana:main",
        "registry.example:5000/app",
        "busybox@sha256:abc",
    ] {
        assert!(unpinned(floating).is_some(), "{floating} counted as pinned");
    }
}

#[test]
fn compose_file_validates_against_the_compose_specification_schema() {
    let Some(tool) = support::tool("check-jsonschema", "CHECK_JSONSCHEMA") else {
        return;
    };
    let repo = support::repo();
    let out = Command::new(&tool)
        .arg("--schemafile")
        .arg(repo.join(SCHEMA))
        .arg(repo.join(COMPOSE_FILE))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    assert!(
        out.status.success(),
        "{COMPOSE_FILE} does not validate against {SCHEMA}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_vendored_schema_is_the_shared_one() {
    // The steering repository's shared/ sits beside the clone, here and under CI.
    let shared = support::repo().join("../shared/schemas/compose-spec.json");
    let Ok(expected) = std::fs::read(&shared) else {
        eprintln!("note: {} not found; nothing to compare", shared.display());
        return;
    };
    let vendored = std::fs::read(support::repo().join(SCHEMA)).expect(SCHEMA);
    assert!(
        vendored == expected,
        "{SCHEMA} differs from {}: copy it again",
        shared.display()
    );
    let json: serde_json::Value = serde_json::from_slice(&vendored).expect("schema is JSON");
    assert_eq!(json["title"], "Compose Specification");
}

#[test]
fn every_image_is_pinned_to_an_exact_version() {
    let services = services(&compose());
    let mut problems = Vec::new();
    let mut built = BTreeSet::new();
    for (name, service) in &services {
        let image = service.get("image").and_then(Value::as_str);
        match (image, service.get("build")) {
            (None, _) => problems.push(format!(
                "{name}: no image (the built image needs a name too)"
            )),
            // Built here from the Dockerfile: its base images are checked in the Dockerfile
            // test; the name must not be `latest` (so compose never pulls one instead).
            (Some(image), Some(_)) => {
                if image.ends_with(":latest") || !image.contains(':') {
                    problems.push(format!("{name}: built image {image} is tagged latest"));
                }
                built.insert(image.to_owned());
            }
            (Some(image), None) => {
                if let Some(why) = unpinned(image) {
                    problems.push(format!("{name}: {why}"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "unpinned images:\n{}",
        problems.join("\n")
    );
    assert_eq!(
        built.len(),
        1,
        "the services and the load generator share one image: {built:?}"
    );
}

#[test]
fn every_dependency_waits_on_a_healthcheck_that_exists() {
    let services = services(&compose());
    let has_healthcheck = |name: &str| {
        services
            .get(name)
            .and_then(|s| s.get("healthcheck"))
            .is_some_and(|h| {
                let disabled = h.get("disable").and_then(Value::as_bool) == Some(true);
                let test = strings(h.get("test"));
                !disabled && !test.is_empty() && test[0] != "NONE"
            })
    };
    let mut problems = Vec::new();
    let mut depended_on = BTreeSet::new();
    for (name, service) in &services {
        let Some(depends_on) = service.get("depends_on") else {
            continue;
        };
        let Some(depends_on) = depends_on.as_mapping() else {
            problems.push(format!(
                "{name}: depends_on must be the long form, with a condition for each service"
            ));
            continue;
        };
        for (target, spec) in depends_on {
            let target = target.as_str().unwrap();
            depended_on.insert(target.to_owned());
            if !services.contains_key(target) {
                problems.push(format!(
                    "{name} depends on {target}, which is not a service"
                ));
                continue;
            }
            let condition = spec.get("condition").and_then(Value::as_str);
            match condition {
                Some("service_healthy") if !has_healthcheck(target) => problems.push(format!(
                    "{name} waits for {target} to be healthy, but {target} has no healthcheck"
                )),
                Some("service_healthy") => {}
                Some("service_started") if has_healthcheck(target) => problems.push(format!(
                    "{name} waits only for {target} to start although {target} has a \
                     healthcheck: use service_healthy"
                )),
                Some("service_started") | Some("service_completed_successfully") => {}
                other => problems.push(format!(
                    "{name} -> {target}: condition {other:?} (want service_healthy or service_started)"
                )),
            }
        }
    }
    for target in &depended_on {
        if !has_healthcheck(target) && !NO_HEALTHCHECK_POSSIBLE.iter().any(|(n, _)| n == target) {
            problems.push(format!(
                "{target} is depended on but has no healthcheck (and is not in NO_HEALTHCHECK_POSSIBLE)"
            ));
        }
    }
    for (name, why) in NO_HEALTHCHECK_POSSIBLE {
        assert!(
            services.contains_key(*name) && !has_healthcheck(name),
            "{name} is listed as unable to run a healthcheck ({why}) but has one or is gone"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// One published port: (host address, host port, container port).
fn published_ports(service: &Value) -> Vec<(String, String, u16)> {
    let Some(ports) = service.get("ports").and_then(Value::as_sequence) else {
        return Vec::new();
    };
    ports
        .iter()
        .map(|port| match port {
            Value::String(short) => {
                let spec = short.split('/').next().unwrap();
                let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
                let container: u16 = parts[0]
                    .parse()
                    .unwrap_or_else(|_| panic!("port {short:?}: container port"));
                match parts.as_slice() {
                    [_] => (String::new(), String::new(), container),
                    [_, host] => (String::new(), (*host).to_owned(), container),
                    [_, host, ip] => ((*ip).to_owned(), (*host).to_owned(), container),
                    _ => unreachable!(),
                }
            }
            Value::Mapping(long) => {
                let text = |key: &str| match long.get(key) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => String::new(),
                };
                let container: u16 = text("target").parse().expect("ports: target");
                (text("host_ip"), text("published"), container)
            }
            other => panic!("ports entry {other:?} must be quoted (\"a:b\" can read as a number)"),
        })
        .collect()
}

#[test]
fn only_user_facing_ports_are_published_and_all_on_loopback() {
    let services = services(&compose());
    let admin_ports: Vec<u16> = FAULTLINE_SERVICES
        .iter()
        .map(|(_, _, admin)| *admin)
        .collect();
    let mut problems = Vec::new();
    let mut host_ports = BTreeSet::new();
    let mut published = BTreeSet::new();
    for (name, service) in &services {
        for (ip, host_port, container) in published_ports(service) {
            published.insert(container);
            if !USER_FACING_PORTS.contains(&container) && !admin_ports.contains(&container) {
                problems.push(format!(
                    "{name} publishes {container}, which is not user-facing"
                ));
            }
            // Required for the admin ports (they inject faults). The UIs too, by choice:
            // Grafana runs with anonymous admin, Prometheus with its lifecycle API.
            if ip != "127.0.0.1" {
                let what = if admin_ports.contains(&container) {
                    "admin port"
                } else {
                    "port"
                };
                problems.push(format!(
                    "{name}: {what} {container} is published on {:?}, not 127.0.0.1",
                    if ip.is_empty() {
                        "every interface"
                    } else {
                        ip.as_str()
                    }
                ));
            }
            if host_port.is_empty() || host_port.contains('-') {
                problems.push(format!("{name}: {container} needs one fixed host port"));
            } else if !host_ports.insert(host_port.clone()) {
                problems.push(format!("host port {host_port} is published twice"));
            }
        }
    }
    for wanted in USER_FACING_PORTS.iter().chain(&admin_ports) {
        if !published.contains(wanted) {
            problems.push(format!("port {wanted} is not published"));
        }
    }
    let gateway = published_ports(service(&services, "gateway"));
    assert!(
        gateway.iter().any(|(_, _, c)| *c == 8080),
        "the gateway publishes its API"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A service's volume entries as (source, container path); `source` is either a host path
/// (starts with `.`, `/` or `~`) or a named volume.
fn mounts(service: &Value) -> Vec<(String, String)> {
    let Some(volumes) = service.get("volumes").and_then(Value::as_sequence) else {
        return Vec::new();
    };
    volumes
        .iter()
        .map(|volume| match volume {
            Value::String(short) => {
                let mut parts = short.split(':');
                let source = parts.next().unwrap().to_owned();
                let target = parts
                    .next()
                    .unwrap_or_else(|| panic!("volume {short:?} has no container path"))
                    .to_owned();
                (source, target)
            }
            Value::Mapping(long) => {
                let text = |key: &str| {
                    long.get(key)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                };
                (text("source"), text("target"))
            }
            other => panic!("volumes entry {other:?}"),
        })
        .collect()
}

fn is_host_path(source: &str) -> bool {
    source.starts_with('.') || source.starts_with('/') || source.starts_with('~')
}

/// `relative` (written from the repository root) joined to the root, refusing `..` escapes.
fn in_repo(relative: &str) -> Option<PathBuf> {
    let path = Path::new(relative);
    if path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return None;
    }
    Some(support::repo().join(path))
}

#[test]
fn every_mounted_path_exists_and_every_named_volume_is_declared() {
    let compose = compose();
    let services = services(&compose);
    let declared: BTreeSet<String> = compose
        .get("volumes")
        .and_then(Value::as_mapping)
        .map(|m| m.keys().map(|k| k.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for (name, service) in &services {
        for (source, target) in mounts(service) {
            if !target.starts_with('/') {
                problems.push(format!("{name}: container path {target:?} is not absolute"));
            }
            if is_host_path(&source) {
                match in_repo(&source) {
                    None => problems.push(format!(
                        "{name}: bind mount {source:?} must be a path inside the repository (./...)"
                    )),
                    Some(path) if !path.exists() => {
                        problems.push(format!("{name}: bind mount {source} does not exist"))
                    }
                    Some(_) => {}
                }
            } else {
                used.insert(source.clone());
                if !declared.contains(&source) {
                    problems.push(format!("{name}: named volume {source} is not declared"));
                }
            }
        }
    }
    for volume in declared.difference(&used) {
        problems.push(format!("volume {volume} is declared but never used"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The host file behind `container_path` in `service`, if a bind mount covers it.
fn host_file(service: &Value, container_path: &str) -> Option<PathBuf> {
    mounts(service)
        .into_iter()
        .filter(|(source, _)| is_host_path(source))
        .filter_map(|(source, target)| {
            let rest = container_path.strip_prefix(target.trim_end_matches('/'))?;
            let host = in_repo(&source)?;
            match rest.trim_start_matches('/') {
                _ if !rest.is_empty() && !rest.starts_with('/') => None,
                "" => Some(host),
                inner => Some(host.join(inner)),
            }
        })
        .next()
}

#[test]
fn every_config_file_a_command_names_is_mounted_from_the_repository() {
    let services = services(&compose());
    let mut problems = Vec::new();
    let mut checked = 0;
    for (name, service) in &services {
        for arg in strings(service.get("command")) {
            let value = arg.split_once('=').map_or(arg.as_str(), |(_, v)| v);
            if !value.starts_with("/etc/") {
                continue;
            }
            checked += 1;
            match host_file(service, value) {
                None => problems.push(format!("{name}: {value} is not in any bind mount")),
                Some(path) if !path.is_file() => problems.push(format!(
                    "{name}: {value} is {}, which does not exist",
                    path.display()
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        checked >= 4,
        "expected the collector, Jaeger, Prometheus and Loki to name config files"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn env_files_build_contexts_and_dockerfiles_exist() {
    let services = services(&compose());
    let mut problems = Vec::new();
    for (name, service) in &services {
        match service.get("env_file") {
            None => {}
            Some(Value::Sequence(items)) if items.iter().any(Value::is_mapping) => {
                for item in items {
                    let path = item.get("path").and_then(Value::as_str).unwrap_or_default();
                    let required = item
                        .get("required")
                        .and_then(Value::as_bool)
                        .unwrap_or(true);
                    if required && !in_repo(path).is_some_and(|p| p.is_file()) {
                        problems.push(format!("{name}: env_file {path} does not exist"));
                    }
                }
            }
            files => {
                for path in strings(files) {
                    if !in_repo(&path).is_some_and(|p| p.is_file()) {
                        problems.push(format!("{name}: env_file {path} does not exist"));
                    }
                }
            }
        }
        let Some(build) = service.get("build") else {
            continue;
        };
        let (context, dockerfile) = match build {
            Value::String(context) => (context.clone(), "Dockerfile".to_owned()),
            _ => (
                build
                    .get("context")
                    .and_then(Value::as_str)
                    .unwrap_or(".")
                    .to_owned(),
                build
                    .get("dockerfile")
                    .and_then(Value::as_str)
                    .unwrap_or("Dockerfile")
                    .to_owned(),
            ),
        };
        match in_repo(&context) {
            Some(dir) if dir.is_dir() => {
                if !dir.join(&dockerfile).is_file() {
                    problems.push(format!("{name}: {context}/{dockerfile} does not exist"));
                }
            }
            _ => problems.push(format!(
                "{name}: build context {context} is not a repository directory"
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `(host, port)` of every `scheme://host:port` in `text`.
fn url_authorities(text: &str) -> Vec<(String, u16)> {
    text.split("://")
        .skip(1)
        .filter_map(|rest| {
            let authority = rest.split(['/', '?', '"', ' ']).next()?;
            let authority = authority.rsplit('@').next()?;
            let (host, port) = authority.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

/// The ports each service listens on inside the network, as far as this test knows them.
fn known_ports(services: &BTreeMap<String, Value>) -> BTreeMap<&'static str, Vec<u16>> {
    let mut ports: BTreeMap<&'static str, Vec<u16>> = FAULTLINE_SERVICES
        .iter()
        .map(|(name, app, admin)| (*name, vec![*app, *admin]))
        .collect();
    // From the configs under deploy/ (configs.rs checks those files agree).
    ports.insert("postgres", vec![5432]);
    ports.insert("nats", vec![4222, 8222]);
    ports.insert("otel-collector", vec![4317, 4318, 8888, 8889, 13133]);
    ports.insert("jaeger", vec![4317, 4318, 8888, 13133, 16685, 16686]);
    ports.insert("prometheus", vec![9090]);
    ports.insert("loki", vec![3100]);
    ports.insert("grafana", vec![3000]);
    for name in ports.keys() {
        assert!(
            services.contains_key(*name),
            "{COMPOSE_FILE} has no service {name}"
        );
    }
    ports
}

#[test]
fn urls_between_services_name_real_services_and_ports() {
    let services = services(&compose());
    let ports = known_ports(&services);
    let mut problems = Vec::new();
    let mut seen = 0;
    for (name, service) in &services {
        let mut texts: Vec<String> = environment(service).into_values().collect();
        texts.extend(strings(service.get("command")));
        if let Some(h) = service.get("healthcheck") {
            texts.extend(strings(h.get("test")));
        }
        for text in texts {
            for (host, port) in url_authorities(&text) {
                seen += 1;
                if host == "127.0.0.1" || host == "localhost" {
                    // A probe inside the container: the service's own port.
                    if !ports.get(name.as_str()).is_some_and(|p| p.contains(&port)) {
                        problems.push(format!(
                            "{name}: {text} probes port {port} it does not serve"
                        ));
                    }
                } else if !services.contains_key(&host) {
                    problems.push(format!(
                        "{name}: {text} names {host}, which is not a service"
                    ));
                } else if !ports.get(host.as_str()).is_some_and(|p| p.contains(&port)) {
                    problems.push(format!("{name}: {text}: {host} does not listen on {port}"));
                }
            }
        }
    }
    assert!(seen > 10, "found only {seen} URLs");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_three_services_and_the_load_generator_follow_the_contract() {
    let services = services(&compose());
    let init_sql = read("deploy/postgres/init.sql").to_lowercase();
    let image = service(&services, "gateway").get("image").cloned();
    for (name, app, admin) in FAULTLINE_SERVICES {
        let service = service(&services, name);
        assert_eq!(
            strings(service.get("command")),
            ["serve", name],
            "{name}: command"
        );
        assert_eq!(
            service.get("image").cloned(),
            image,
            "{name}: the shared image"
        );
        let env = environment(service);
        let var = |key: &str| env.get(key).map(String::as_str).unwrap_or("");
        assert_eq!(var("LISTEN_ADDR"), format!("0.0.0.0:{app}"), "{name}");
        assert_eq!(
            var("ADMIN_LISTEN_ADDR"),
            format!("0.0.0.0:{admin}"),
            "{name}"
        );
        assert_eq!(
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "http://otel-collector:4317",
            "{name}"
        );
        assert_eq!(var("FAULTLINE_ENVIRONMENT"), "compose", "{name}");
        assert!(
            var("FAULTLINE_ADMIN_TOKEN").starts_with("${FAULTLINE_ADMIN_TOKEN:-")
                && var("FAULTLINE_ADMIN_TOKEN").len() > "${FAULTLINE_ADMIN_TOKEN:-}".len(),
            "{name}: the admin token comes from .env with a non-empty default"
        );
        if *name != "gateway" {
            let database = var("DATABASE_URL");
            assert!(
                database.starts_with("postgres://") && database.ends_with(&format!("/{name}")),
                "{name}: DATABASE_URL {database:?} is its own PostgreSQL database"
            );
            assert!(
                init_sql.contains(&format!("create database {name};")),
                "deploy/postgres/init.sql creates the {name} database"
            );
            assert_eq!(var("QUEUE_URL"), "nats://nats:4222", "{name}");
        }
        let test = strings(service.get("healthcheck").and_then(|h| h.get("test")));
        assert_eq!(
            test.last().map(String::as_str),
            Some(format!("http://127.0.0.1:{admin}/readyz").as_str()),
            "{name}: the healthcheck asks its own /readyz"
        );
        assert_eq!(
            test.get(1).map(String::as_str),
            Some("curl"),
            "{name}: probed with curl"
        );
    }
    let gateway_env = environment(service(&services, "gateway"));
    assert_eq!(gateway_env["ORDERS_URL"], "http://orders:8081");
    assert_eq!(gateway_env["FULFILLMENT_URL"], "http://fulfillment:8082");
    assert_eq!(
        environment(service(&services, "fulfillment"))["ORDERS_URL"],
        "http://orders:8081"
    );

    let loadgen = service(&services, "loadgen");
    let command = strings(loadgen.get("command"));
    assert_eq!(command.first().map(String::as_str), Some("load"));
    let target = command
        .iter()
        .position(|a| a == "--target")
        .map(|i| &command[i + 1]);
    assert_eq!(target.map(String::as_str), Some("http://gateway:8080"));
    assert_eq!(
        loadgen.get("image").cloned(),
        image,
        "loadgen: the shared image"
    );
    // Its spans are in the same traces as the services': the same environment.
    assert_eq!(
        environment(loadgen)
            .get("FAULTLINE_ENVIRONMENT")
            .map(String::as_str),
        Some("compose"),
        "loadgen"
    );
}

/// The Dockerfile's stages: (FROM line, instructions of the stage).
fn stages(dockerfile: &str) -> Vec<(String, Vec<String>)> {
    // Join continuation lines, drop comments.
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            instructions.push(std::mem::take(&mut current));
        }
    }
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for instruction in instructions {
        if instruction.to_uppercase().starts_with("FROM ") {
            stages.push((instruction, Vec::new()));
        } else if let Some(stage) = stages.last_mut() {
            stage.1.push(instruction);
        }
    }
    stages
}

#[test]
fn the_image_is_multi_stage_with_cached_dependencies_and_a_small_non_root_runtime() {
    let dockerfile = read("Dockerfile");
    let stages = stages(&dockerfile);
    assert!(stages.len() >= 3, "a multi-stage build: {stages:?}");
    let stage_names: Vec<String> = stages
        .iter()
        .filter_map(|(from, _)| from.split_whitespace().nth(3).map(str::to_owned))
        .collect();
    for (from, _) in &stages {
        let base = from.split_whitespace().nth(1).unwrap();
        if stage_names.iter().any(|s| s == base) {
            continue; // FROM an earlier stage
        }
        assert_eq!(unpinned(base), None, "{from}");
    }
    let all: Vec<&String> = stages.iter().flat_map(|(_, s)| s).collect();
    let has = |needle: &str| all.iter().any(|i| i.contains(needle));
    assert!(
        has("cargo install cargo-chef --version "),
        "cargo-chef is installed at a pinned version"
    );
    assert!(has("cargo chef prepare"), "a planner stage");
    assert!(
        has("cargo chef cook --release"),
        "dependencies cooked in their own layer"
    );
    let cook = all
        .iter()
        .position(|i| i.contains("cargo chef cook"))
        .unwrap();
    let copy_all = all.iter().rposition(|i| i.starts_with("COPY . .")).unwrap();
    assert!(
        cook < copy_all,
        "the sources are copied after the dependencies are cooked"
    );

    let (runtime_from, runtime) = stages.last().unwrap();
    assert!(
        runtime_from.contains("debian:bookworm-") && runtime_from.contains("-slim"),
        "the runtime is a pinned Debian bookworm slim image: {runtime_from}"
    );
    let user = runtime
        .iter()
        .rfind(|i| i.starts_with("USER "))
        .expect("the runtime stage sets a USER");
    let user = user["USER ".len()..].split(':').next().unwrap().trim();
    assert!(
        user != "root" && user != "0",
        "the runtime runs as a non-root user, not {user}"
    );
    assert!(
        runtime.iter().any(|i| i == r#"ENTRYPOINT ["faultline"]"#),
        "ENTRYPOINT [\"faultline\"]: {runtime:?}"
    );
    for instruction in runtime {
        assert!(
            !instruction.contains("cargo") && !instruction.contains("rustup"),
            "no build tools in the runtime stage: {instruction}"
        );
        if let Some(packages) = instruction.split("apt-get install").nth(1) {
            let packages: BTreeSet<&str> = packages
                .split("&&")
                .next()
                .unwrap()
                .split_whitespace()
                .filter(|w| !w.starts_with('-'))
                .collect();
            // curl: the compose healthchecks probe /readyz with it.
            let allowed = BTreeSet::from(["ca-certificates", "curl"]);
            assert_eq!(packages, allowed, "runtime packages");
        }
    }
    let copies: Vec<&String> = runtime.iter().filter(|i| i.starts_with("COPY")).collect();
    assert_eq!(
        copies.len(),
        1,
        "the runtime copies only the binary: {copies:?}"
    );
    assert!(copies[0].contains("faultline"), "{}", copies[0]);

    let ignore = read(".dockerignore");
    let ignored: BTreeSet<&str> = ignore
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in ["target", ".faultline", ".git", ".env"] {
        assert!(
            ignored.contains(needed),
            ".dockerignore leaves out {needed}"
        );
    }
}
