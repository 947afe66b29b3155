//! A fault spec (what `PUT /admin/faults` takes) and its validation.
//!
//! ```json
//! {"kind":"db.slow_query","service":"orders","ms":800,"probability":0.3,"ttl_seconds":300}
//! ```
//!
//! Unknown fields are refused, and so is every parameter the kind does not take (see
//! [`FaultKind::params`]): a typo never becomes a fault that silently does nothing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::kind::{FaultKind, Param};

/// A fault lives 10 minutes unless told otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// No fault lives longer than a day.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Latencies, holds and stalls: at most 60 s per occurrence.
pub const MAX_MS: u64 = 60_000;
/// CPU burn per request: at most 1 s.
pub const MAX_CPU_BURN_MS: u64 = 1_000;
/// Clock skew: at most one hour either way.
pub const MAX_CLOCK_SKEW_MS: i64 = 3_600_000;
/// Memory leaked by one request: at most 16 MiB.
pub const MAX_LEAK_BYTES_PER_REQUEST: u64 = 16 << 20;
/// Memory leaked by one fault in all: at most 256 MiB (the default cap is 64 MiB).
pub const MAX_LEAK_BYTES: u64 = 256 << 20;
/// The default cap on one memory-leak fault.
pub const DEFAULT_LEAK_CAP: u64 = 64 << 20;

/// What to inject: the JSON body of `PUT /admin/faults`, and a drill's `[[fault]]` table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// The kind (`"db.slow_query"`).
    pub kind: Option<FaultKind>,
    /// The service it targets; when given, it must be the service receiving the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Inbound route to match: a route template (`/api/orders/{id}`) or `METHOD template`
    /// (`POST /api/orders`); absent: every route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The dependency (`orders`, `fulfillment`, `queue`, or `host:port`), table or SKU the
    /// fault acts on, depending on the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Milliseconds (latency, slow query, hold, burn, skew — negative only for skew).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<i64>,
    /// Uniform jitter in milliseconds: the delay is `ms ± jitter_ms` (never below 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    /// HTTP status code for error faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Bytes leaked per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Cap on all bytes leaked by this fault (default 64 MiB, at most 256 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Pool connections to hold (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// The chance (0 < p ≤ 1) that the fault acts on one occurrence (request, statement,
    /// message); for `queue.poison`, the fraction of messages that are poison. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Seconds until the fault ends on its own (default 600, at most 86,400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Teaching mode: mark the fault in the telemetry (a span event where it acts, and the
    /// `faultline_faults_active` gauge). Off by default: a drill leaves no label naming it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reveal: bool,
}

/// Why a spec was refused (the reason goes into the 400 answer as it is).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError(msg.into()))
}

/// A spec that passed validation, with defaults filled in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidSpec {
    /// The kind.
    pub kind: FaultKind,
    /// The service that runs it.
    pub service: String,
    /// Inbound route match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Target match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<i64>,
    /// Jitter in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    /// HTTP status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Bytes per request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Cap on bytes leaked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Connections to hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// Probability, 0 < p ≤ 1.
    pub probability: f64,
    /// Lifetime.
    pub ttl_seconds: u64,
    /// Teaching mode.
    pub reveal: bool,
}

impl ValidSpec {
    /// `ms` as a duration (0 when absent or negative).
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.ms.unwrap_or(0).max(0) as u64)
    }

    /// `ms ± jitter_ms`, drawn uniformly.
    pub fn jittered_duration(&self) -> Duration {
        let ms = self.ms.unwrap_or(0).max(0) as u64;
        let jitter = self.jitter_ms.unwrap_or(0);
        if jitter == 0 {
            return Duration::from_millis(ms);
        }
        let low = ms.saturating_sub(jitter);
        let high = ms.saturating_add(jitter);
        Duration::from_millis(fastrand::u64(low..=high))
    }
}

impl FaultSpec {
    /// Checks the spec for `service` (which supports `supported` kinds) and fills in defaults.
    ///
    /// # Errors
    /// A [`SpecError`] naming the first problem: no or unsupported kind, another service, a
    /// parameter the kind does not take or lacks, a number out of range.
    pub fn validate(&self, service: &str, supported: &[FaultKind]) -> Result<ValidSpec, SpecError> {
        let Some(kind) = self.kind else {
            return err("the spec has no \"kind\" (e.g. \"http.latency\")");
        };
        if let Some(target_service) = &self.service
            && target_service != service
        {
            return err(format!(
                "this is {service}; the spec targets {target_service:?} (send it to that service's admin API)"
            ));
        }
        if !supported.contains(&kind) {
            let names: Vec<_> = supported.iter().map(|k| k.name()).collect();
            return err(format!(
                "{kind} does not act in {service}; {service} supports: {}",
                names.join(", ")
            ));
        }
        let given = [
            (Param::Route, self.route.is_some()),
            (Param::Target, self.target.is_some()),
            (Param::Ms, self.ms.is_some()),
            (Param::JitterMs, self.jitter_ms.is_some()),
            (Param::Status, self.status.is_some()),
            (Param::Bytes, self.bytes.is_some()),
            (Param::MaxBytes, self.max_bytes.is_some()),
            (Param::Connections, self.connections.is_some()),
        ];
        for (param, present) in given {
            if present && !kind.params().contains(&param) {
                let takes: Vec<_> = kind.params().iter().map(|p| p.name()).collect();
                return err(format!(
                    "{kind} does not take {:?} (it takes: {})",
                    param.name(),
                    if takes.is_empty() {
                        "no parameters".to_owned()
                    } else {
                        takes.join(", ")
                    }
                ));
            }
        }
        for param in kind.required() {
            let present = given.iter().any(|(p, present)| p == param && *present);
            if !present {
                return err(format!("{kind} needs {:?}", param.name()));
            }
        }
        for (name, text) in [("route", &self.route), ("target", &self.target)] {
            if let Some(text) = text
                && (text.trim().is_empty() || text.len() > 200)
            {
                return err(format!("{name} must be 1 to 200 characters"));
            }
        }
        if let Some(ms) = self.ms {
            if kind == FaultKind::TelemetryClockSkew {
                if ms == 0 || ms.abs() > MAX_CLOCK_SKEW_MS {
                    return err(format!(
                        "ms must be a non-zero shift within ±{MAX_CLOCK_SKEW_MS} for {kind}, got {ms}"
                    ));
                }
            } else {
                let max = if kind == FaultKind::RuntimeCpuBurn {
                    MAX_CPU_BURN_MS
                } else {
                    MAX_MS
                };
                if ms < 1 || ms as u64 > max {
                    return err(format!("ms must be 1 to {max} for {kind}, got {ms}"));
                }
            }
        }
        if let Some(jitter) = self.jitter_ms
            && jitter > MAX_MS
        {
            return err(format!("jitter_ms must be 0 to {MAX_MS}, got {jitter}"));
        }
        if let Some(status) = self.status {
            let range = if kind == FaultKind::DependencyError {
                500..=599
            } else {
                400..=599
            };
            if !range.contains(&status) {
                return err(format!(
                    "status must be {} to {} for {kind}, got {status}",
                    range.start(),
                    range.end()
                ));
            }
        }
        let mut max_bytes = None;
        if kind == FaultKind::RuntimeMemoryLeak {
            let bytes = self.bytes.unwrap_or(0);
            if bytes == 0 || bytes > MAX_LEAK_BYTES_PER_REQUEST {
                return err(format!(
                    "bytes must be 1 to {MAX_LEAK_BYTES_PER_REQUEST} (16 MiB) per request, got {bytes}"
                ));
            }
            let cap = self.max_bytes.unwrap_or(DEFAULT_LEAK_CAP);
            if cap == 0 || cap > MAX_LEAK_BYTES {
                return err(format!(
                    "max_bytes must be 1 to {MAX_LEAK_BYTES} (256 MiB), got {cap}"
                ));
            }
            if bytes > cap {
                return err(format!(
                    "bytes ({bytes}) is above the fault's cap max_bytes ({cap})"
                ));
            }
            max_bytes = Some(cap);
        }
        if let Some(connections) = self.connections
            && !(1..=1000).contains(&connections)
        {
            return err(format!("connections must be 1 to 1000, got {connections}"));
        }
        let probability = self.probability.unwrap_or(1.0);
        if !(probability > 0.0 && probability <= 1.0) {
            return err(format!(
                "probability must be above 0 and at most 1, got {probability}"
            ));
        }
        let ttl_seconds = self.ttl_seconds.unwrap_or(DEFAULT_TTL.as_secs());
        if ttl_seconds == 0 || ttl_seconds > MAX_TTL.as_secs() {
            return err(format!(
                "ttl_seconds must be 1 to {} (no fault lives forever), got {ttl_seconds}",
                MAX_TTL.as_secs()
            ));
        }
        Ok(ValidSpec {
            kind,
            service: service.to_owned(),
            route: self.route.clone(),
            target: self.target.clone(),
            ms: self.ms,
            jitter_ms: self.jitter_ms,
            status: self.status,
            bytes: self.bytes,
            max_bytes,
            connections: self.connections,
            probability,
            ttl_seconds,
            reveal: self.reveal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<ValidSpec, String> {
        let spec: FaultSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        spec.validate("orders", &FaultKind::ALL)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_filled_in() {
        let v = spec(r#"{"kind":"db.slow_query","ms":800}"#).unwrap();
        assert_eq!(v.probability, 1.0);
        assert_eq!(v.ttl_seconds, 600);
        assert_eq!(v.service, "orders");
        assert!(!v.reveal);
    }

    #[test]
    fn invalid_specs_name_their_problem() {
        for (json, needle) in [
            (r#"{"kind":"db.slow"}"#, "unknown variant"),
            (r#"{"ms":5}"#, "no \"kind\""),
            (r#"{"kind":"db.slow_query"}"#, "needs \"ms\""),
            (r#"{"kind":"db.slow_query","ms":0}"#, "ms must be 1 to"),
            (
                r#"{"kind":"db.slow_query","ms":800,"status":500}"#,
                "does not take \"status\"",
            ),
            (
                r#"{"kind":"http.error","status":200}"#,
                "status must be 400 to 599",
            ),
            (r#"{"kind":"http.error","probability":1.5}"#, "probability"),
            (r#"{"kind":"http.error","probability":0}"#, "probability"),
            (
                r#"{"kind":"http.error","ttl_seconds":0}"#,
                "no fault lives forever",
            ),
            (
                r#"{"kind":"http.error","ttl_seconds":999999}"#,
                "ttl_seconds",
            ),
            (r#"{"kind":"http.error","colour":"red"}"#, "unknown field"),
            (
                r#"{"kind":"http.error","service":"gateway"}"#,
                "this is orders",
            ),
            (
                r#"{"kind":"runtime.memory_leak","bytes":999999999}"#,
                "bytes must be",
            ),
            (
                r#"{"kind":"runtime.memory_leak","bytes":2000,"max_bytes":1000}"#,
                "above the fault's cap",
            ),
            (
                r#"{"kind":"runtime.memory_leak","bytes":1,"max_bytes":999999999999}"#,
                "max_bytes",
            ),
            (r#"{"kind":"telemetry.clock_skew","ms":0}"#, "non-zero"),
            (r#"{"kind":"runtime.cpu_burn","ms":5000}"#, "1 to 1000"),
        ] {
            let e = spec(json).expect_err(json);
            assert!(e.contains(needle), "{json}: {e}");
        }
    }

    #[test]
    fn unsupported_kinds_are_refused_with_the_supported_list() {
        let spec: FaultSpec = serde_json::from_str(r#"{"kind":"db.slow_query","ms":5}"#).unwrap();
        let e = spec
            .validate("gateway", &[FaultKind::HttpError])
            .unwrap_err();
        assert!(e.0.contains("does not act in gateway"), "{e}");
        assert!(e.0.contains("http.error"), "{e}");
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let v = spec(r#"{"kind":"http.latency","ms":100,"jitter_ms":150}"#).unwrap();
        for _ in 0..1000 {
            let d = v.jittered_duration().as_millis();
            assert!(d <= 250, "{d}");
        }
    }

    #[test]
    fn negative_skew_is_allowed() {
        let v = spec(r#"{"kind":"telemetry.clock_skew","ms":-5000}"#).unwrap();
        assert_eq!(v.ms, Some(-5000));
    }
}
