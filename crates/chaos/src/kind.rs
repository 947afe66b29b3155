//! The fault catalogue: every kind of fault, where it acts, and which parameters it takes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One kind of fault. The wire and CLI name is the dotted string (`"db.slow_query"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FaultKind {
    /// Inbound HTTP: the service answers `ms` (± `jitter_ms`) later.
    #[serde(rename = "http.latency")]
    HttpLatency,
    /// Inbound HTTP: the service answers with `status` (default 500) instead of handling the
    /// request.
    #[serde(rename = "http.error")]
    HttpError,
    /// Inbound HTTP: the service never answers (until the caller gives up, or the fault ends).
    #[serde(rename = "http.hang")]
    HttpHang,
    /// Outgoing HTTP to one dependency (`target`) takes `ms` (± `jitter_ms`) longer.
    #[serde(rename = "dependency.latency")]
    DependencyLatency,
    /// Outgoing HTTP to one dependency (`target`) fails: with `status` when given, else with a
    /// refused connection.
    #[serde(rename = "dependency.error")]
    DependencyError,
    /// A statement (all, or those on the `target` table) is slow inside the database: `ms`.
    #[serde(rename = "db.slow_query")]
    DbSlowQuery,
    /// A competing transaction keeps taking the hot stock row (`target` SKU, default `sku-1`)
    /// and holds it for `ms`, so optimistic conflicts or lock waits rise.
    #[serde(rename = "db.lock_contention")]
    DbLockContention,
    /// `connections` pool connections (default: all) are taken and held, so requests wait for
    /// the pool.
    #[serde(rename = "db.pool_exhaustion")]
    DbPoolExhaustion,
    /// The queue consumer stops taking messages.
    #[serde(rename = "queue.consumer_stall")]
    QueueConsumerStall,
    /// Processing each message takes `ms` longer.
    #[serde(rename = "queue.slow_consumer")]
    QueueSlowConsumer,
    /// A fraction (`probability`) of messages fail on every delivery until they are
    /// dead-lettered.
    #[serde(rename = "queue.poison")]
    QueuePoison,
    /// The outbox relay cannot publish, so the outbox backs up.
    #[serde(rename = "queue.publish_failure")]
    QueuePublishFailure,
    /// Each matching request burns `ms` of CPU on its async worker thread.
    #[serde(rename = "runtime.cpu_burn")]
    RuntimeCpuBurn,
    /// Each matching request makes a blocking call (`ms`) on its async worker thread, stalling
    /// every other task on that thread.
    #[serde(rename = "runtime.blocking_call")]
    RuntimeBlockingCall,
    /// Each matching request takes one shared `std::sync::Mutex`-style lock and holds it across
    /// an await of `ms`, serialising those requests.
    #[serde(rename = "runtime.lock_across_await")]
    RuntimeLockAcrossAwait,
    /// Each matching request leaks `bytes`, up to `max_bytes` in all; freed when the fault ends.
    #[serde(rename = "runtime.memory_leak")]
    RuntimeMemoryLeak,
    /// One hop (`target` dependency, or every outgoing hop) stops propagating the trace
    /// context, so the trace breaks in two.
    #[serde(rename = "telemetry.drop_context")]
    TelemetryDropContext,
    /// The service's span timestamps are shifted by `ms` (may be negative).
    #[serde(rename = "telemetry.clock_skew")]
    TelemetryClockSkew,
}

/// A parameter a fault spec may carry (see [`crate::FaultSpec`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// `route`: an inbound route template (`/api/orders/{id}`) or `METHOD route`.
    Route,
    /// `target`: a dependency, table, SKU or hop, depending on the kind.
    Target,
    /// `ms`: milliseconds.
    Ms,
    /// `jitter_ms`: milliseconds of uniform jitter around `ms`.
    JitterMs,
    /// `status`: an HTTP status code.
    Status,
    /// `bytes`: bytes per request.
    Bytes,
    /// `max_bytes`: the cap on all bytes leaked.
    MaxBytes,
    /// `connections`: pool connections.
    Connections,
}

impl Param {
    /// The field name in the JSON spec.
    pub fn name(self) -> &'static str {
        match self {
            Param::Route => "route",
            Param::Target => "target",
            Param::Ms => "ms",
            Param::JitterMs => "jitter_ms",
            Param::Status => "status",
            Param::Bytes => "bytes",
            Param::MaxBytes => "max_bytes",
            Param::Connections => "connections",
        }
    }
}

impl FaultKind {
    /// Every kind, in catalogue order.
    pub const ALL: [FaultKind; 18] = [
        FaultKind::HttpLatency,
        FaultKind::HttpError,
        FaultKind::HttpHang,
        FaultKind::DependencyLatency,
        FaultKind::DependencyError,
        FaultKind::DbSlowQuery,
        FaultKind::DbLockContention,
        FaultKind::DbPoolExhaustion,
        FaultKind::QueueConsumerStall,
        FaultKind::QueueSlowConsumer,
        FaultKind::QueuePoison,
        FaultKind::QueuePublishFailure,
        FaultKind::RuntimeCpuBurn,
        FaultKind::RuntimeBlockingCall,
        FaultKind::RuntimeLockAcrossAwait,
        FaultKind::RuntimeMemoryLeak,
        FaultKind::TelemetryDropContext,
        FaultKind::TelemetryClockSkew,
    ];

    /// The dotted name (`"db.slow_query"`).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::HttpLatency => "http.latency",
            FaultKind::HttpError => "http.error",
            FaultKind::HttpHang => "http.hang",
            FaultKind::DependencyLatency => "dependency.latency",
            FaultKind::DependencyError => "dependency.error",
            FaultKind::DbSlowQuery => "db.slow_query",
            FaultKind::DbLockContention => "db.lock_contention",
            FaultKind::DbPoolExhaustion => "db.pool_exhaustion",
            FaultKind::QueueConsumerStall => "queue.consumer_stall",
            FaultKind::QueueSlowConsumer => "queue.slow_consumer",
            FaultKind::QueuePoison => "queue.poison",
            FaultKind::QueuePublishFailure => "queue.publish_failure",
            FaultKind::RuntimeCpuBurn => "runtime.cpu_burn",
            FaultKind::RuntimeBlockingCall => "runtime.blocking_call",
            FaultKind::RuntimeLockAcrossAwait => "runtime.lock_across_await",
            FaultKind::RuntimeMemoryLeak => "runtime.memory_leak",
            FaultKind::TelemetryDropContext => "telemetry.drop_context",
            FaultKind::TelemetryClockSkew => "telemetry.clock_skew",
        }
    }

    /// One line on what the fault does (for `--help` and `fault list`).
    pub fn summary(self) -> &'static str {
        match self {
            FaultKind::HttpLatency => "inbound requests answer ms (± jitter_ms) later",
            FaultKind::HttpError => "inbound requests fail with status (default 500)",
            FaultKind::HttpHang => "inbound requests never answer until the caller gives up",
            FaultKind::DependencyLatency => "calls to the target dependency take ms longer",
            FaultKind::DependencyError => {
                "calls to the target dependency fail (status, or connection refused)"
            }
            FaultKind::DbSlowQuery => {
                "statements (on the target table) run ms longer in the database"
            }
            FaultKind::DbLockContention => {
                "a competing transaction holds the target stock row for ms at a time"
            }
            FaultKind::DbPoolExhaustion => "connections (default all) of the pool are held",
            FaultKind::QueueConsumerStall => "the consumer stops taking messages",
            FaultKind::QueueSlowConsumer => "each message takes ms longer to process",
            FaultKind::QueuePoison => "a fraction of messages fail every attempt (dead letters)",
            FaultKind::QueuePublishFailure => {
                "the outbox relay cannot publish; the outbox backs up"
            }
            FaultKind::RuntimeCpuBurn => "each request burns ms of CPU on its worker thread",
            FaultKind::RuntimeBlockingCall => "each request blocks its async worker thread for ms",
            FaultKind::RuntimeLockAcrossAwait => {
                "each request holds one shared lock across an await of ms"
            }
            FaultKind::RuntimeMemoryLeak => "each request leaks bytes, up to max_bytes",
            FaultKind::TelemetryDropContext => "one hop (target) stops propagating trace context",
            FaultKind::TelemetryClockSkew => "the service's span timestamps shift by ms",
        }
    }

    /// The parameters the kind accepts; every other one is refused.
    pub fn params(self) -> &'static [Param] {
        use Param::*;
        match self {
            FaultKind::HttpLatency => &[Route, Ms, JitterMs],
            FaultKind::HttpError => &[Route, Status],
            FaultKind::HttpHang => &[Route],
            FaultKind::DependencyLatency => &[Target, Ms, JitterMs],
            FaultKind::DependencyError => &[Target, Status],
            FaultKind::DbSlowQuery => &[Target, Ms],
            FaultKind::DbLockContention => &[Target, Ms],
            FaultKind::DbPoolExhaustion => &[Connections],
            FaultKind::QueueConsumerStall => &[],
            FaultKind::QueueSlowConsumer => &[Ms],
            FaultKind::QueuePoison => &[],
            FaultKind::QueuePublishFailure => &[],
            FaultKind::RuntimeCpuBurn => &[Route, Ms],
            FaultKind::RuntimeBlockingCall => &[Route, Ms],
            FaultKind::RuntimeLockAcrossAwait => &[Route, Ms],
            FaultKind::RuntimeMemoryLeak => &[Route, Bytes, MaxBytes],
            FaultKind::TelemetryDropContext => &[Target],
            FaultKind::TelemetryClockSkew => &[Ms],
        }
    }

    /// The parameters that must be given.
    pub fn required(self) -> &'static [Param] {
        use Param::*;
        match self {
            FaultKind::HttpLatency
            | FaultKind::QueueSlowConsumer
            | FaultKind::RuntimeCpuBurn
            | FaultKind::RuntimeBlockingCall
            | FaultKind::RuntimeLockAcrossAwait
            | FaultKind::DbSlowQuery
            | FaultKind::TelemetryClockSkew => &[Ms],
            FaultKind::DependencyLatency => &[Target, Ms],
            FaultKind::DependencyError => &[Target],
            FaultKind::RuntimeMemoryLeak => &[Bytes],
            _ => &[],
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is not a known kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault kind {0:?}; known kinds: {known}", known = known_kinds())]
pub struct UnknownKind(pub String);

fn known_kinds() -> String {
    FaultKind::ALL
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for FaultKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_and_serde() {
        for kind in FaultKind::ALL {
            assert_eq!(kind.name().parse::<FaultKind>().unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            assert_eq!(serde_json::from_str::<FaultKind>(&json).unwrap(), kind);
            for p in kind.required() {
                assert!(kind.params().contains(p), "{kind}: {p:?}");
            }
        }
        let err = "db.slow".parse::<FaultKind>().unwrap_err();
        assert!(err.to_string().contains("db.slow_query"), "{err}");
    }
}
