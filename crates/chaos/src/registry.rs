//! The runtime fault registry of one service: set, list, clear, expire, and look up the fault
//! (if any) that acts at a given point.
//!
//! Lookups are on every request's path, so the common case — no fault at all — is one atomic
//! load. Expired faults stop acting at once (every lookup skips them) and are removed, with
//! whatever they hold (leaked memory), by the next change or by [`Faults::run_expiry`].

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

use crate::kind::FaultKind;
use crate::spec::{FaultSpec, SpecError, ValidSpec};

/// The gauge of revealed active faults, labelled by `kind` (teaching mode only).
pub const FAULTS_ACTIVE: &str = "faultline_faults_active";

/// One service's faults. Cheap to clone; clones share the registry.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    supported: Vec<FaultKind>,
    /// The inbound routes (`METHOD /template`) a `route` may name; empty: not checked.
    routes: Vec<String>,
    /// The values a `target` may take, per kind; a kind absent here: not checked.
    targets: Vec<(FaultKind, Vec<String>)>,
    entries: RwLock<Vec<Arc<Entry>>>,
    /// Number of entries (expired or not): the lock-free "nothing to do" check.
    count: AtomicUsize,
    /// The clock skew in effect (ms), read by the span exporter hook on every span.
    clock_skew_ms: AtomicI64,
    generation: watch::Sender<u64>,
    lock: Arc<crate::runtime::SharedLock>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("service", &self.inner.service)
            .field("active", &self.inner.count.load(Ordering::Relaxed))
            .finish()
    }
}

/// One active fault.
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) spec: ValidSpec,
    created_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    expires: Instant,
    occurrences: AtomicU64,
    pub(crate) leak: Mutex<crate::runtime::Leak>,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        now >= self.expires
    }
}

/// A fault as `GET /admin/faults` shows it: its id, its (validated) spec, and its lifetime.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fault {
    /// Short id, unique within the service (`f-1a2b3c4d`).
    pub id: String,
    /// The validated spec, defaults filled in.
    #[serde(flatten)]
    pub spec: ValidSpec,
    /// When it was set (RFC 3339, UTC).
    pub created_at: String,
    /// When it ends on its own (RFC 3339, UTC).
    pub expires_at: String,
    /// Seconds left.
    pub expires_in_seconds: u64,
    /// How many times it has acted so far.
    pub occurrences: u64,
}

/// A fault that acts here, now: what a hook gets back from [`Faults::roll`].
#[derive(Clone)]
pub struct Hit {
    entry: Arc<Entry>,
}

impl std::fmt::Debug for Hit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hit")
            .field("id", &self.entry.id)
            .field("kind", &self.entry.spec.kind)
            .finish()
    }
}

impl Hit {
    /// The fault's validated spec (its parameters).
    pub fn spec(&self) -> &ValidSpec {
        &self.entry.spec
    }

    /// The fault's id.
    pub fn id(&self) -> &str {
        &self.entry.id
    }

    /// Records that the fault acted once: counts the occurrence and, in teaching mode only
    /// (`reveal`), adds a `faultline.fault` event to the current span naming the fault.
    pub fn acted(&self) {
        self.entry.occurrences.fetch_add(1, Ordering::Relaxed);
        if self.entry.spec.reveal {
            // WARN: the level telemetry records as span events (and it is worth a look).
            tracing::warn!(
                fault.id = %self.entry.id,
                fault.kind = %self.entry.spec.kind,
                "faultline.fault"
            );
        }
    }

    pub(crate) fn entry(&self) -> &Entry {
        &self.entry
    }
}

impl Faults {
    /// An empty registry for `service`, which can run the `supported` kinds (anything else is
    /// refused with 400). Touches no global state: [`run_expiry`](Self::run_expiry) registers
    /// the metrics, so the registry may be built before the metrics recorder is installed.
    pub fn new(service: impl Into<String>, supported: &[FaultKind]) -> Self {
        let (generation, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                service: service.into(),
                supported: supported.to_vec(),
                routes: Vec::new(),
                targets: Vec::new(),
                entries: RwLock::new(Vec::new()),
                count: AtomicUsize::new(0),
                clock_skew_ms: AtomicI64::new(0),
                generation,
                lock: Arc::new(crate::runtime::SharedLock::default()),
            }),
        }
    }

    /// Declares the service's inbound routes as `METHOD /template` (`GET /api/orders/{id}`), so
    /// that a spec whose `route` matches none is refused (400) instead of never acting. Call
    /// while building the registry, before it is cloned.
    ///
    /// # Panics
    /// When the registry has already been cloned.
    pub fn with_routes(mut self, routes: &[&str]) -> Self {
        self.inner_mut().routes = routes.iter().map(|r| (*r).to_owned()).collect();
        self
    }

    /// Declares what `target` may name for `kinds` (dependency names, tables, hops), so that
    /// a spec with any other target is refused (400). Matching is case-insensitive. Call while
    /// building the registry, before it is cloned.
    ///
    /// # Panics
    /// When the registry has already been cloned.
    pub fn with_targets(mut self, kinds: &[FaultKind], targets: &[&str]) -> Self {
        let targets: Vec<String> = targets.iter().map(|t| (*t).to_owned()).collect();
        let inner = self.inner_mut();
        for kind in kinds {
            inner.targets.retain(|(k, _)| k != kind);
            inner.targets.push((*kind, targets.clone()));
        }
        self
    }

    /// Declares the service's outgoing HTTP dependencies as `(name, base URL)`: the faults that
    /// act on outgoing calls (`dependency.latency`, `dependency.error`,
    /// `telemetry.drop_context`) may then target each by its name or by the `host:port` of its
    /// URL, and nothing else. Call while building the registry, before it is cloned.
    ///
    /// # Panics
    /// When the registry has already been cloned.
    pub fn with_dependencies(self, dependencies: &[(&str, &str)]) -> Self {
        let mut targets: Vec<String> = dependencies.iter().map(|(n, _)| (*n).to_owned()).collect();
        targets.extend(
            dependencies
                .iter()
                .filter_map(|(_, url)| crate::client::authority(url)),
        );
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        self.with_targets(
            &[
                FaultKind::DependencyLatency,
                FaultKind::DependencyError,
                FaultKind::TelemetryDropContext,
            ],
            &targets,
        )
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner).expect("declare routes and targets before cloning Faults")
    }

    /// Validates `spec` for this service: [`FaultSpec::validate`], then its `route` against the
    /// declared routes and its `target` against the declared targets.
    ///
    /// # Errors
    /// A [`SpecError`] naming the problem and what would be accepted.
    pub fn check(&self, spec: &FaultSpec) -> Result<ValidSpec, SpecError> {
        let valid = spec.validate(&self.inner.service, &self.inner.supported)?;
        let service = &self.inner.service;
        if let Some(route) = &valid.route
            && !self.inner.routes.is_empty()
            && !self
                .inner
                .routes
                .iter()
                .any(|declared| route_names(route, declared))
        {
            return Err(SpecError(format!(
                "{service} has no route {route:?}; its routes: {} (a template alone matches every method)",
                self.inner.routes.join(", ")
            )));
        }
        if let Some(target) = &valid.target
            && let Some((_, allowed)) = self.inner.targets.iter().find(|(k, _)| *k == valid.kind)
            && !allowed.iter().any(|a| a.eq_ignore_ascii_case(target))
        {
            return Err(SpecError(format!(
                "{} in {service} cannot target {target:?}; it can target: {}",
                valid.kind,
                allowed.join(", ")
            )));
        }
        Ok(valid)
    }

    /// The service this registry belongs to.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The kinds this service runs.
    pub fn supported(&self) -> &[FaultKind] {
        &self.inner.supported
    }

    /// Validates `spec` and adds it.
    ///
    /// # Errors
    /// The [`SpecError`] of [`FaultSpec::validate`]; nothing changes then.
    pub fn set(&self, spec: &FaultSpec) -> Result<Fault, SpecError> {
        let spec = self.check(spec)?;
        let ttl = Duration::from_secs(spec.ttl_seconds);
        let now = OffsetDateTime::now_utc();
        let entry = Arc::new(Entry {
            id: format!("f-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            created_at: now,
            expires_at: now + ttl,
            expires: Instant::now() + ttl,
            occurrences: AtomicU64::new(0),
            leak: Mutex::new(crate::runtime::Leak::default()),
            spec,
        });
        let fault = describe(&entry, Instant::now());
        {
            let mut entries = self.write();
            entries.retain(|e| !e.expired(Instant::now()));
            entries.push(entry);
        }
        let level_info = fault.spec.reveal;
        if level_info {
            tracing::info!(fault.id = %fault.id, fault.kind = %fault.spec.kind, "fault injected");
        } else {
            tracing::debug!(fault.id = %fault.id, "fault injected");
        }
        self.changed();
        Ok(fault)
    }

    /// Every active fault, oldest first.
    pub fn list(&self) -> Vec<Fault> {
        let now = Instant::now();
        self.read()
            .iter()
            .filter(|e| !e.expired(now))
            .map(|e| describe(e, now))
            .collect()
    }

    /// Removes the fault `id`; returns it if it existed.
    pub fn clear(&self, id: &str) -> Option<Fault> {
        let removed = {
            let mut entries = self.write();
            let position = entries.iter().position(|e| e.id == id)?;
            entries.remove(position)
        };
        self.changed();
        Some(describe(&removed, Instant::now()))
    }

    /// Removes every fault; returns how many were active.
    pub fn clear_all(&self) -> usize {
        let now = Instant::now();
        let removed: Vec<_> = std::mem::take(&mut *self.write());
        self.changed();
        removed.iter().filter(|e| !e.expired(now)).count()
    }

    /// Whether any fault (possibly expired but not yet swept) is registered: one atomic load.
    pub fn is_empty(&self) -> bool {
        self.inner.count.load(Ordering::Relaxed) == 0
    }

    /// The first active fault of `kind` that `matches`, ignoring its probability: for faults
    /// that act continuously (a stalled consumer, a held pool) rather than per occurrence.
    pub fn find(&self, kind: FaultKind, matches: impl Fn(&ValidSpec) -> bool) -> Option<Hit> {
        if self.is_empty() {
            return None;
        }
        let now = Instant::now();
        self.read()
            .iter()
            .find(|e| e.spec.kind == kind && !e.expired(now) && matches(&e.spec))
            .map(|e| Hit { entry: e.clone() })
    }

    /// Like [`find`](Self::find), then draws against the fault's probability: `Some` when the
    /// fault acts on this occurrence. Call [`Hit::acted`] when it has.
    pub fn roll(&self, kind: FaultKind, matches: impl Fn(&ValidSpec) -> bool) -> Option<Hit> {
        let hit = self.find(kind, matches)?;
        let p = hit.spec().probability;
        (p >= 1.0 || fastrand::f64() < p).then_some(hit)
    }

    /// For per-item faults such as `queue.poison`: whether the item `key` (a message or order
    /// id) is one of the affected fraction. The same key always gets the same answer for the
    /// same fault, so a poison message fails on every delivery.
    pub fn affects(&self, kind: FaultKind, key: &str) -> Option<Hit> {
        let hit = self.find(kind, |_| true)?;
        let p = hit.spec().probability;
        let fraction = stable_fraction(hit.id(), key);
        (p >= 1.0 || fraction < p).then_some(hit)
    }

    /// The clock skew in effect in milliseconds (0: none). One atomic load.
    pub fn clock_skew_ms(&self) -> i64 {
        self.inner.clock_skew_ms.load(Ordering::Relaxed)
    }

    /// The span hook that makes `telemetry.clock_skew` act: while the fault is set, every
    /// exported span of this process (and its events) is shifted by the fault's `ms`, as if
    /// the host's clock were off. Give it to
    /// [`TelemetryConfig::span_hook`](telemetry::TelemetryConfig) before `telemetry::init`.
    pub fn clock_skew_hook(&self) -> telemetry::export::SpanHook {
        let faults = self.clone();
        telemetry::export::SpanHook::new(move |span| {
            let skew = faults.clock_skew_ms();
            if skew == 0 {
                return;
            }
            let shift = |t: std::time::SystemTime| {
                let d = Duration::from_millis(skew.unsigned_abs());
                if skew > 0 {
                    t.checked_add(d).unwrap_or(t)
                } else {
                    t.checked_sub(d).unwrap_or(t)
                }
            };
            span.start_time = shift(span.start_time);
            span.end_time = shift(span.end_time);
            for event in span.events.events.iter_mut() {
                event.timestamp = shift(event.timestamp);
            }
        })
    }

    /// A receiver that changes whenever a fault is set, cleared or expires; hooks that act
    /// continuously (background tasks) wait on it.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Removes expired faults (releasing what they hold) until `stop` completes; logs each
    /// expiry. Spawn it once per service, after the metrics recorder is installed: it first
    /// describes `faultline_faults_active` and sets it to 0 for each supported kind.
    pub async fn run_expiry(self, stop: impl std::future::Future<Output = ()>) {
        metrics::describe_gauge!(
            FAULTS_ACTIVE,
            "Faults currently injected in teaching mode (--reveal), by kind; blind faults are not counted."
        );
        self.publish_gauge(&self.read());
        let mut changes = self.subscribe();
        tokio::pin!(stop);
        loop {
            let next = {
                let entries = self.read();
                entries.iter().map(|e| e.expires).min()
            };
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut stop => return,
                _ = changes.changed() => continue,
                () = sleep => self.sweep(),
            }
        }
    }

    /// Removes expired faults now.
    pub fn sweep(&self) {
        let now = Instant::now();
        let expired: Vec<_> = {
            let mut entries = self.write();
            let (expired, live): (Vec<_>, Vec<_>) = entries.drain(..).partition(|e| e.expired(now));
            *entries = live;
            expired
        };
        if expired.is_empty() {
            return;
        }
        for e in &expired {
            if e.spec.reveal {
                tracing::info!(fault.id = %e.id, fault.kind = %e.spec.kind, "fault expired");
            } else {
                tracing::debug!(fault.id = %e.id, "fault expired");
            }
        }
        self.changed();
    }

    pub(crate) fn shared_lock(&self) -> &Arc<crate::runtime::SharedLock> {
        &self.inner.lock
    }

    fn changed(&self) {
        let entries = self.read();
        self.inner.count.store(entries.len(), Ordering::Relaxed);
        let skew = entries
            .iter()
            .filter(|e| e.spec.kind == FaultKind::TelemetryClockSkew)
            .filter_map(|e| e.spec.ms)
            .next_back()
            .unwrap_or(0);
        self.inner.clock_skew_ms.store(skew, Ordering::Relaxed);
        self.publish_gauge(&entries);
        drop(entries);
        self.inner.generation.send_modify(|g| *g += 1);
    }

    fn publish_gauge(&self, entries: &[Arc<Entry>]) {
        for kind in &self.inner.supported {
            let revealed = entries
                .iter()
                .filter(|e| e.spec.kind == *kind && e.spec.reveal)
                .count();
            metrics::gauge!(FAULTS_ACTIVE, "kind" => kind.name()).set(revealed as f64);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Entry>>> {
        self.inner.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Entry>>> {
        self.inner
            .entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }
}

fn describe(entry: &Entry, now: Instant) -> Fault {
    Fault {
        id: entry.id.clone(),
        spec: entry.spec.clone(),
        created_at: rfc3339(entry.created_at),
        expires_at: rfc3339(entry.expires_at),
        expires_in_seconds: entry.expires.saturating_duration_since(now).as_secs(),
        occurrences: entry.occurrences.load(Ordering::Relaxed),
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// A number in [0, 1) fixed by `(salt, key)` (FNV-1a and a mixer; no need for a keyed hash).
fn stable_fraction(salt: &str, key: &str) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in salt.bytes().chain([0]).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's high bits barely move between similar keys: finish with splitmix64's mixer.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a spec's `route` (`/template` or `METHOD /template`) names the declared route
/// `METHOD /template`.
fn route_names(route: &str, declared: &str) -> bool {
    let Some((method, template)) = declared.split_once(' ') else {
        return route == declared;
    };
    match route.split_once(' ') {
        Some((m, r)) => m.eq_ignore_ascii_case(method) && r == template,
        None => route == template,
    }
}

/// Whether a spec's `route` matches an inbound request: absent matches everything; otherwise
/// the route template (`/api/orders/{id}`) or `METHOD template`, compared exactly
/// (the method case-insensitively).
pub fn route_matches(spec: &ValidSpec, method: &str, route: &str) -> bool {
    match spec.route.as_deref() {
        None => true,
        Some(wanted) => match wanted.split_once(' ') {
            Some((m, r)) => m.eq_ignore_ascii_case(method) && r == route,
            None => wanted == route,
        },
    }
}

/// Whether a spec's `target` matches a name: absent matches everything; otherwise an exact,
/// case-insensitive comparison with any of `names` (a dependency's logical name and its
/// `host:port`, say).
pub fn target_matches(spec: &ValidSpec, names: &[&str]) -> bool {
    match spec.target.as_deref() {
        None => true,
        Some(wanted) => names.iter().any(|n| n.eq_ignore_ascii_case(wanted)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults() -> Faults {
        Faults::new("orders", &FaultKind::ALL)
    }

    fn spec(json: &str) -> FaultSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn set_list_clear() {
        let f = faults();
        assert!(f.is_empty());
        let a = f
            .set(&spec(r#"{"kind":"http.error","status":503}"#))
            .unwrap();
        let b = f.set(&spec(r#"{"kind":"db.slow_query","ms":5}"#)).unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(f.list().len(), 2);
        assert!(f.find(FaultKind::HttpError, |_| true).is_some());
        assert_eq!(f.clear(&a.id).unwrap().id, a.id);
        assert!(f.clear(&a.id).is_none());
        assert!(f.find(FaultKind::HttpError, |_| true).is_none());
        assert_eq!(f.clear_all(), 1);
        assert!(f.is_empty());
    }

    #[test]
    fn invalid_specs_change_nothing() {
        let f = faults();
        f.set(&spec(r#"{"kind":"http.error"}"#)).unwrap();
        assert!(f.set(&spec(r#"{"kind":"http.latency"}"#)).is_err());
        assert_eq!(f.list().len(), 1);
    }

    #[tokio::test]
    async fn expired_faults_stop_acting_and_are_swept() {
        let f = faults();
        let mut s = spec(r#"{"kind":"http.error"}"#);
        s.ttl_seconds = Some(1);
        f.set(&s).unwrap();
        assert!(f.roll(FaultKind::HttpError, |_| true).is_some());
        let expiry = tokio::spawn(f.clone().run_expiry(std::future::pending()));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(f.roll(FaultKind::HttpError, |_| true).is_none());
        assert!(f.list().is_empty());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(f.is_empty(), "the expiry task removed it");
        expiry.abort();
    }

    #[test]
    fn probability_is_honoured_roughly() {
        let f = faults();
        f.set(&spec(r#"{"kind":"http.error","probability":0.3}"#))
            .unwrap();
        let hits = (0..10_000)
            .filter(|_| f.roll(FaultKind::HttpError, |_| true).is_some())
            .count();
        assert!((2_500..3_500).contains(&hits), "{hits}");
    }

    #[test]
    fn poison_is_stable_per_key_and_covers_the_fraction() {
        let f = faults();
        f.set(&spec(r#"{"kind":"queue.poison","probability":0.25}"#))
            .unwrap();
        let keys: Vec<String> = (0..4000).map(|i| format!("order-{i}")).collect();
        let first: Vec<bool> = keys
            .iter()
            .map(|k| f.affects(FaultKind::QueuePoison, k).is_some())
            .collect();
        let again: Vec<bool> = keys
            .iter()
            .map(|k| f.affects(FaultKind::QueuePoison, k).is_some())
            .collect();
        assert_eq!(first, again);
        let poisoned = first.iter().filter(|p| **p).count();
        assert!((800..1200).contains(&poisoned), "{poisoned}");
    }

    #[test]
    fn clock_skew_follows_the_registry() {
        let f = faults();
        assert_eq!(f.clock_skew_ms(), 0);
        let s = f
            .set(&spec(r#"{"kind":"telemetry.clock_skew","ms":-2500}"#))
            .unwrap();
        assert_eq!(f.clock_skew_ms(), -2500);
        f.clear(&s.id);
        assert_eq!(f.clock_skew_ms(), 0);
    }

    #[test]
    fn route_and_target_matching() {
        let f = faults();
        let hit = |json: &str| {
            f.clear_all();
            f.set(&spec(json)).unwrap();
            f.find(FaultKind::ALL[0], |_| true);
        };
        hit(r#"{"kind":"http.latency","ms":1}"#);
        let v = f.list()[0].spec.clone();
        assert!(route_matches(&v, "GET", "/anything"));
        let mut v2 = v.clone();
        v2.route = Some("POST /api/orders".into());
        assert!(route_matches(&v2, "post", "/api/orders"));
        assert!(!route_matches(&v2, "GET", "/api/orders"));
        v2.route = Some("/api/orders/{id}".into());
        assert!(route_matches(&v2, "GET", "/api/orders/{id}"));
        assert!(!route_matches(&v2, "GET", "/api/orders"));
        v2.target = Some("Orders".into());
        assert!(target_matches(&v2, &["orders", "127.0.0.1:8081"]));
        assert!(!target_matches(&v2, &["fulfillment"]));
    }

    #[test]
    fn routes_and_targets_are_checked_when_declared() {
        let f = Faults::new("gateway", &FaultKind::ALL)
            .with_routes(&["POST /api/orders", "GET /api/orders/{id}"])
            .with_targets(
                &[FaultKind::DependencyError, FaultKind::DependencyLatency],
                &["orders", "fulfillment"],
            );
        for ok in [
            r#"{"kind":"http.error","route":"POST /api/orders"}"#,
            r#"{"kind":"http.error","route":"post /api/orders"}"#,
            r#"{"kind":"http.error","route":"/api/orders/{id}"}"#,
            r#"{"kind":"dependency.error","target":"Orders"}"#,
            r#"{"kind":"telemetry.drop_context","target":"anything"}"#,
        ] {
            f.set(&spec(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, needle) in [
            (
                r#"{"kind":"http.error","route":"/api/nope"}"#,
                "has no route",
            ),
            (
                r#"{"kind":"http.error","route":"GET /api/orders"}"#,
                "its routes: POST /api/orders",
            ),
            (
                r#"{"kind":"dependency.error","target":"ordres"}"#,
                "can target: orders, fulfillment",
            ),
        ] {
            let e = f.set(&spec(bad)).unwrap_err();
            assert!(e.0.contains(needle), "{bad}: {e}");
        }
        assert_eq!(f.list().len(), 5);
    }
}
