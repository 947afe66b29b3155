//! `faultline fault set|list|clear|kinds`: inject, inspect and remove faults through each
//! service's admin API (`/admin/faults`, CONTRACT.md).
//!
//! The admin listeners are found at `--host` on the CONTRACT ports (9080–9082), or at
//! `FAULTLINE_<SERVICE>_ADMIN_URL` when set. The bearer token comes from
//! `FAULTLINE_ADMIN_TOKEN`, else from the file `faultline up` writes (`.faultline/admin-token`).
//! Each change is also written as a Grafana annotation when Grafana answers at `GRAFANA_URL`
//! (default `http://127.0.0.1:3000`), so dashboards show when a fault started and ended.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chaos::{FaultKind, FaultSpec};
use clap::{Args, Subcommand};
use http::{Method, StatusCode};
use serde_json::Value;
use servicekit::client::{HttpClient, HttpResponse};

use crate::serve::Service;
use crate::status::admin_port;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Where the admin APIs are and how to authenticate (shared by `fault` and `drill`).
#[derive(Args, Clone, Debug)]
pub struct AdminArgs {
    /// Host of the admin listeners (ports 9080–9082); `FAULTLINE_<SERVICE>_ADMIN_URL`
    /// overrides one service's base URL.
    #[arg(
        long,
        env = "FAULTLINE_ADMIN_HOST",
        default_value = "127.0.0.1",
        global = true
    )]
    pub host: String,
    /// The state directory of `faultline up` (holds `admin-token`, and drill state).
    #[arg(
        long,
        env = "FAULTLINE_DIR",
        default_value = ".faultline",
        global = true
    )]
    pub dir: PathBuf,
}

/// `faultline fault …`.
#[derive(Args, Debug)]
pub struct FaultArgs {
    #[command(subcommand)]
    command: FaultCommand,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand, Debug)]
enum FaultCommand {
    /// Inject a fault into one service, e.g.
    /// `faultline fault set orders db.slow_query --ms 800 --probability 0.3 --for 5m`.
    Set(SetArgs),
    /// List the active faults of every service.
    List {
        /// Print JSON (one object per service) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove one fault by id, or every fault with --all.
    Clear(ClearArgs),
    /// Describe every fault kind, its parameters and the services that run it.
    Kinds,
}

/// Arguments of `fault set`.
#[derive(Args, Debug)]
struct SetArgs {
    /// The service to inject into.
    #[arg(value_enum)]
    service: Service,
    /// The fault kind (see `faultline fault kinds`).
    #[arg(value_parser = parse_kind)]
    kind: FaultKind,
    /// Milliseconds: latency, slow query, hold time, CPU burn, blocking call, clock skew
    /// (may be negative for skew).
    #[arg(long, allow_negative_numbers = true)]
    ms: Option<i64>,
    /// Uniform jitter around --ms, in milliseconds.
    #[arg(long)]
    jitter_ms: Option<u64>,
    /// HTTP status for http.error / dependency.error.
    #[arg(long)]
    status: Option<u16>,
    /// Bytes leaked per request (runtime.memory_leak).
    #[arg(long)]
    bytes: Option<u64>,
    /// Cap on all bytes leaked by the fault (runtime.memory_leak; default 64 MiB).
    #[arg(long)]
    max_bytes: Option<u64>,
    /// Pool connections to hold (db.pool_exhaustion; default all).
    #[arg(long)]
    connections: Option<u32>,
    /// Inbound route to match: a template such as `/api/orders/{id}` or `POST /api/orders`.
    #[arg(long)]
    route: Option<String>,
    /// The dependency (orders, fulfillment, queue), table or SKU the fault acts on.
    #[arg(long)]
    target: Option<String>,
    /// Chance (0 < p ≤ 1) that the fault acts on one request, statement or message; for
    /// queue.poison, the fraction of poison messages.
    #[arg(long, value_parser = parse_probability)]
    probability: Option<f64>,
    /// How long the fault lasts (e.g. 90s, 5m; default 10m, at least 1s, at most 24h).
    #[arg(long = "for", value_parser = parse_lifetime)]
    duration: Option<Duration>,
    /// Teaching mode: mark the fault in the telemetry (span event, faultline_faults_active).
    #[arg(long)]
    reveal: bool,
}

/// Arguments of `fault clear`.
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["id", "all"]))]
struct ClearArgs {
    /// The fault id (from `fault set` or `fault list`).
    id: Option<String>,
    /// Remove every fault (of --service, or of every service).
    #[arg(long)]
    all: bool,
    /// Only this service.
    #[arg(long, value_enum)]
    service: Option<Service>,
}

/// A probability: a finite number above 0 and at most 1 (JSON cannot carry NaN or infinity,
/// so they are refused here rather than silently becoming the default).
fn parse_probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if p.is_finite() && p > 0.0 && p <= 1.0 => Ok(p),
        Ok(_) => Err("must be above 0 and at most 1 (e.g. 0.3)".to_owned()),
        Err(e) => Err(format!("{e} (e.g. 0.3)")),
    }
}

/// A fault's lifetime: whole seconds from 1 s to 24 h (no fault lives forever).
fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let d = crate::parse_duration(s)?;
    if d < Duration::from_secs(1) || d > chaos::spec::MAX_TTL {
        return Err("must be between 1s and 24h (e.g. 90s, 5m, 2h)".to_owned());
    }
    if d.subsec_nanos() != 0 {
        return Err("must be whole seconds (e.g. 90s, 5m)".to_owned());
    }
    Ok(d)
}

fn parse_kind(s: &str) -> Result<FaultKind, String> {
    s.parse::<FaultKind>().map_err(|e| e.to_string())
}

/// A service whose admin listener did not answer (refused, timed out): the context of
/// [`AdminApi`]'s errors in that case, so that callers can tell it from a refusal.
#[derive(Debug)]
pub struct Unreachable {
    /// The service.
    pub service: Service,
    /// Its admin base URL.
    pub url: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is not reachable at {} (is `faultline up` running?)",
            self.service.name(),
            self.url
        )
    }
}

/// A service that refused the admin token (401), with what to do about it (which depends on
/// where the token came from: [`TokenSource::hint`]).
#[derive(Debug)]
pub struct TokenRefused {
    /// The service.
    pub service: Service,
    /// What to do.
    pub hint: String,
}

impl std::fmt::Display for TokenRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} refused the admin token (401): {}",
            self.service.name(),
            self.hint
        )
    }
}

impl std::error::Error for TokenRefused {}

/// Where [`AdminApi`]'s token came from.
#[derive(Clone, Debug)]
enum TokenSource {
    /// `FAULTLINE_ADMIN_TOKEN`.
    Env,
    /// The `admin-token` file `faultline up` writes.
    File(PathBuf),
    /// Nowhere.
    None,
}

impl TokenSource {
    /// What to do when the services refuse the token.
    fn hint(&self) -> String {
        match self {
            Self::Env => "FAULTLINE_ADMIN_TOKEN is not the services' token: unset it to use the \
                          admin-token file of the running `faultline up` (in its --dir)"
                .to_owned(),
            Self::File(path) => format!(
                "the token in {} is not the services' (an earlier lab's?): pass --dir to the \
                 running `faultline up`'s directory, or set FAULTLINE_ADMIN_TOKEN",
                path.display()
            ),
            Self::None => "no token was found: set FAULTLINE_ADMIN_TOKEN or pass --dir to the \
                           directory holding admin-token"
                .to_owned(),
        }
    }
}

/// The one error line for an operation that failed on every service it was tried on:
/// unreachable everywhere, or the token refused everywhere, is said once; other failures are
/// listed, each distinct message once. `consequence` (e.g. "nothing was cleared") ends it.
pub fn failed_everywhere(
    failures: &[(Service, anyhow::Error)],
    consequence: Option<&str>,
) -> anyhow::Error {
    let all = |test: fn(&anyhow::Error) -> bool| failures.iter().all(|(_, e)| test(e));
    let what = if all(|e| e.downcast_ref::<Unreachable>().is_some()) {
        let urls: Vec<&str> = failures
            .iter()
            .filter_map(|(_, e)| e.downcast_ref::<Unreachable>())
            .map(|u| u.url.as_str())
            .collect();
        format!(
            "no service could be reached at {} (is `faultline up` running?)",
            urls.join(", ")
        )
    } else if all(|e| e.downcast_ref::<TokenRefused>().is_some()) {
        let hint = failures
            .iter()
            .find_map(|(_, e)| e.downcast_ref::<TokenRefused>())
            .map(|refused| refused.hint.clone())
            .unwrap_or_default();
        format!("every service refused the admin token (401): {hint}")
    } else {
        let mut messages: Vec<String> = Vec::new();
        for (_, e) in failures {
            let message = format!("{e:#}");
            if !messages.contains(&message) {
                messages.push(message);
            }
        }
        messages.join("; ")
    };
    match consequence {
        Some(consequence) => anyhow::anyhow!("{what}; {consequence}"),
        None => anyhow::anyhow!("{what}"),
    }
}

/// A client for the three admin APIs.
#[derive(Clone, Debug)]
pub struct AdminApi {
    client: HttpClient,
    host: String,
    token: Option<String>,
    token_source: TokenSource,
}

impl AdminApi {
    /// Finds the token (`FAULTLINE_ADMIN_TOKEN`, else `<dir>/admin-token`, else none).
    pub fn new(args: &AdminArgs) -> Self {
        let file = args.dir.join("admin-token");
        let (token, token_source) = match servicekit::env::admin_token() {
            Some(token) => (Some(token), TokenSource::Env),
            None => match std::fs::read_to_string(&file)
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
            {
                Some(token) => (Some(token), TokenSource::File(file)),
                None => (None, TokenSource::None),
            },
        };
        Self {
            client: HttpClient::new(),
            host: args.host.clone(),
            token,
            token_source,
        }
    }

    /// The JSON body when the status is `expected`, else an error carrying the problem's
    /// detail ([`TokenRefused`] for a 401).
    fn ok_json(
        &self,
        service: Service,
        r: &HttpResponse,
        expected: StatusCode,
    ) -> anyhow::Result<Value> {
        if r.status == StatusCode::UNAUTHORIZED {
            return Err(TokenRefused {
                service,
                hint: self.token_source.hint(),
            }
            .into());
        }
        ok_json(service, r, expected)
    }

    /// The admin base URL of `service`.
    pub fn base_url(&self, service: Service) -> String {
        let var = format!(
            "FAULTLINE_{}_ADMIN_URL",
            service.name().to_ascii_uppercase()
        );
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("http://{}:{}", self.host, admin_port(service)))
    }

    async fn call(
        &self,
        method: Method,
        service: Service,
        path: &str,
        body: Option<&FaultSpec>,
    ) -> anyhow::Result<HttpResponse> {
        let url = format!("{}{path}", self.base_url(service));
        let body = body.map(serde_json::to_vec).transpose()?;
        let mut headers = http::HeaderMap::new();
        if let Some(token) = &self.token {
            headers.insert(
                http::header::AUTHORIZATION,
                format!("Bearer {token}")
                    .parse()
                    .context("the admin token contains characters not allowed in a header")?,
            );
        }
        let response = self
            .client
            .request_with_headers(method, &url, body, headers, TIMEOUT)
            .await
            .with_context(|| Unreachable {
                service,
                url: self.base_url(service),
            })?;
        Ok(response)
    }

    /// Sets `spec` on `service`; returns the fault as the service describes it.
    ///
    /// # Errors
    /// The service is unreachable, refuses the token (401), or refuses the spec (400, with
    /// its reason).
    pub async fn set(&self, service: Service, spec: &FaultSpec) -> anyhow::Result<Value> {
        let r = self
            .call(Method::PUT, service, "/admin/faults", Some(spec))
            .await?;
        self.ok_json(service, &r, StatusCode::CREATED)
    }

    /// The active faults of `service`.
    ///
    /// # Errors
    /// The service is unreachable or answers something unexpected.
    pub async fn list(&self, service: Service) -> anyhow::Result<Vec<Value>> {
        let r = self
            .call(Method::GET, service, "/admin/faults", None)
            .await?;
        let body = self.ok_json(service, &r, StatusCode::OK)?;
        Ok(body["faults"].as_array().cloned().unwrap_or_default())
    }

    /// Removes every fault of `service`; returns how many there were.
    ///
    /// # Errors
    /// As [`set`](Self::set).
    pub async fn clear_all(&self, service: Service) -> anyhow::Result<u64> {
        let r = self
            .call(Method::DELETE, service, "/admin/faults", None)
            .await?;
        Ok(self.ok_json(service, &r, StatusCode::OK)?["cleared"]
            .as_u64()
            .unwrap_or(0))
    }

    /// Removes fault `id` from `service`: `Ok(Some(fault))`, or `Ok(None)` if it has no such
    /// fault.
    ///
    /// # Errors
    /// As [`set`](Self::set).
    pub async fn clear(&self, service: Service, id: &str) -> anyhow::Result<Option<Value>> {
        let path = format!("/admin/faults/{}", percent_path(id));
        let r = self.call(Method::DELETE, service, &path, None).await?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(
            self.ok_json(service, &r, StatusCode::OK)?["fault"].clone(),
        ))
    }
}

fn percent_path(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// The JSON body when the status is `expected`, else an error carrying the problem's detail.
fn ok_json(service: Service, r: &HttpResponse, expected: StatusCode) -> anyhow::Result<Value> {
    let body: Value = r.json().unwrap_or(Value::Null);
    if r.status == expected {
        return Ok(body);
    }
    let detail = body["detail"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&r.body).into_owned());
    bail!("{} answered {}: {detail}", service.name(), r.status)
}

/// One line describing a fault's parameters (`ms=800 p=0.3 route=/api/orders`).
pub fn describe_params(fault: &Value) -> String {
    let mut parts = Vec::new();
    for key in [
        "route",
        "target",
        "ms",
        "jitter_ms",
        "status",
        "bytes",
        "max_bytes",
        "connections",
    ] {
        if let Some(v) = fault.get(key).filter(|v| !v.is_null()) {
            let v = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            parts.push(format!("{key}={v}"));
        }
    }
    if let Some(p) = fault["probability"].as_f64()
        && p < 1.0
    {
        parts.push(format!("probability={p:?}"));
    }
    if fault["reveal"].as_bool() == Some(true) {
        parts.push("reveal".into());
    }
    parts.join(" ")
}

/// Writes an annotation to Grafana (`GRAFANA_URL`, default `http://127.0.0.1:3000`; token in
/// `GRAFANA_TOKEN` if Grafana needs one) when it answers; silently does nothing otherwise.
/// Returns whether Grafana took it.
pub async fn annotate(text: &str, tags: &[&str]) -> bool {
    let base = servicekit::env::string("GRAFANA_URL", "http://127.0.0.1:3000");
    let url = format!("{}/api/annotations", base.trim_end_matches('/'));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let body = serde_json::json!({ "time": now_ms, "tags": tags, "text": text });
    let mut headers = http::HeaderMap::new();
    if let Some(token) = std::env::var("GRAFANA_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    match HttpClient::new()
        .request_with_headers(
            Method::POST,
            &url,
            serde_json::to_vec(&body).ok(),
            headers,
            Duration::from_secs(1),
        )
        .await
    {
        Ok(r) => r.status.is_success(),
        Err(_) => false,
    }
}

pub async fn run(args: FaultArgs) -> anyhow::Result<ExitCode> {
    let api = AdminApi::new(&args.admin);
    match args.command {
        FaultCommand::Kinds => {
            print_kinds();
            Ok(ExitCode::SUCCESS)
        }
        FaultCommand::Set(set) => {
            let service = set.service;
            let spec = FaultSpec {
                kind: Some(set.kind),
                service: Some(service.name().to_owned()),
                route: set.route,
                target: set.target,
                ms: set.ms,
                jitter_ms: set.jitter_ms,
                status: set.status,
                bytes: set.bytes,
                max_bytes: set.max_bytes,
                connections: set.connections,
                probability: set.probability,
                ttl_seconds: set.duration.map(|d| d.as_secs()),
                reveal: set.reveal,
            };
            let fault = api.set(service, &spec).await?;
            let id = fault["id"].as_str().unwrap_or("?");
            let expires = fault["expires_at"].as_str().unwrap_or("?");
            let ttl = Duration::from_secs(fault["ttl_seconds"].as_u64().unwrap_or(0));
            println!(
                "set {id} on {}: {} {} — ends in {} ({expires}); clear it with `faultline fault clear {id}`",
                service.name(),
                set.kind,
                describe_params(&fault),
                humantime::format_duration(ttl)
            );
            annotate(
                &format!(
                    "fault {id} set on {}: {} {}",
                    service.name(),
                    set.kind,
                    describe_params(&fault)
                ),
                &["faultline", "fault", service.name(), set.kind.name()],
            )
            .await;
            Ok(ExitCode::SUCCESS)
        }
        FaultCommand::List { json } => list(&api, json, &args.admin.dir).await,
        FaultCommand::Clear(clear) => {
            let services: Vec<Service> = match clear.service {
                Some(s) => vec![s],
                None => Service::ALL.to_vec(),
            };
            if clear.all {
                let mut total = 0;
                let mut failures = Vec::new();
                for service in &services {
                    match api.clear_all(*service).await {
                        Ok(n) => total += n,
                        Err(e) => failures.push((*service, e)),
                    }
                }
                if failures.len() == services.len() {
                    return Err(failed_everywhere(&failures, Some("nothing was cleared")));
                }
                for (_, e) in &failures {
                    eprintln!("warning: {e:#}");
                }
                println!("cleared {total} fault(s)");
                annotate(
                    &format!("{total} fault(s) cleared"),
                    &["faultline", "fault", "cleared"],
                )
                .await;
                return Ok(ExitCode::SUCCESS);
            }
            let id = clear.id.unwrap_or_default();
            let mut failures = Vec::new();
            for service in &services {
                match api.clear(*service, &id).await {
                    Ok(Some(fault)) => {
                        let kind = fault["kind"].as_str().unwrap_or("?");
                        println!("cleared {id} on {}: {kind}", service.name());
                        annotate(
                            &format!("fault {id} cleared on {}: {kind}", service.name()),
                            &["faultline", "fault", service.name(), kind],
                        )
                        .await;
                        return Ok(ExitCode::SUCCESS);
                    }
                    Ok(None) => {}
                    Err(e) => failures.push((*service, e)),
                }
            }
            if failures.len() == services.len() {
                return Err(failed_everywhere(
                    &failures,
                    Some(&format!("fault {id:?} was not cleared")),
                ));
            }
            if !failures.is_empty() {
                let names: Vec<&str> = failures.iter().map(|(s, _)| s.name()).collect();
                bail!(
                    "no service that answered has a fault {id:?}, and {} could not be asked: {}",
                    names.join(", "),
                    failed_everywhere(&failures, None)
                );
            }
            bail!("no service has a fault {id:?} (it may have expired; see `faultline fault list`)")
        }
    }
}

/// `fault list`: every service's active faults. While a drill runs (in `dir`), the faults it
/// set are listed without their kind and parameters, which are its answer.
async fn list(api: &AdminApi, json: bool, dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let hidden = crate::drill::hidden_faults(dir);
    let is_hidden = |service: Service, fault: &Value| {
        hidden
            .iter()
            .any(|(s, id)| s == service.name() && fault["id"].as_str() == Some(id.as_str()))
    };
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut out = serde_json::Map::new();
    let mut hidden_count = 0;
    for service in Service::ALL {
        match api.list(service).await {
            Ok(faults) => {
                let faults: Vec<Value> = faults
                    .into_iter()
                    .map(|f| {
                        if is_hidden(service, &f) {
                            hidden_count += 1;
                            serde_json::json!({
                                "id": f["id"],
                                "hidden_by_drill": true,
                                "expires_in_seconds": f["expires_in_seconds"],
                            })
                        } else {
                            f
                        }
                    })
                    .collect();
                out.insert(service.name().into(), Value::Array(faults.clone()));
                rows.extend(faults.into_iter().map(|f| (service, f)));
            }
            Err(e) => failures.push((service, e)),
        }
    }
    if failures.len() == Service::ALL.len() {
        return Err(failed_everywhere(&failures, None));
    }
    for (_, e) in &failures {
        eprintln!("warning: {e:#}");
    }
    if json {
        println!("{}", Value::Object(out));
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no active faults");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<12} {:<11} {:<26} {:>9} {:>7}  parameters",
        "service", "id", "kind", "ends in", "acted"
    );
    for (service, f) in rows {
        let left = Duration::from_secs(f["expires_in_seconds"].as_u64().unwrap_or(0));
        let hidden = f["hidden_by_drill"] == true;
        println!(
            "{:<12} {:<11} {:<26} {:>9} {:>7}  {}",
            service.name(),
            f["id"].as_str().unwrap_or("?"),
            if hidden {
                "(hidden: the drill's)"
            } else {
                f["kind"].as_str().unwrap_or("?")
            },
            humantime::format_duration(left).to_string(),
            if hidden {
                "-".to_owned()
            } else {
                f["occurrences"].as_u64().unwrap_or(0).to_string()
            },
            if hidden {
                String::new()
            } else {
                describe_params(&f)
            }
        );
    }
    if hidden_count > 0 {
        println!(
            "\n{hidden_count} fault(s) set by the running drill are hidden: find them in the \
             telemetry (`faultline drill hint` helps), or give up with `faultline drill reveal`."
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_kinds() {
    let services: [(Service, &[FaultKind]); 3] = [
        (Service::Gateway, gateway::FAULT_KINDS),
        (Service::Orders, orders::FAULT_KINDS),
        (Service::Fulfillment, fulfillment::FAULT_KINDS),
    ];
    println!(
        "{:<26} {:<32} {:<38} what it does",
        "kind", "services", "parameters"
    );
    for kind in FaultKind::ALL {
        let runs_in: Vec<_> = services
            .iter()
            .filter(|(_, kinds)| kinds.contains(&kind))
            .map(|(s, _)| s.name())
            .collect();
        let params: Vec<String> = kind
            .params()
            .iter()
            .map(|p| {
                if kind.required().contains(p) {
                    format!("--{}", p.name().replace('_', "-"))
                } else {
                    format!("[--{}]", p.name().replace('_', "-"))
                }
            })
            .collect();
        println!(
            "{:<26} {:<32} {:<38} {}",
            kind.name(),
            runs_in.join(","),
            params.join(" "),
            kind.summary()
        );
    }
    println!(
        "\nEvery kind also takes [--probability P] [--for DURATION] [--reveal]; see `faultline fault set --help`."
    );
}
