//! The gateway's configuration: where it listens, where its two downstream services are, and
//! the numbers behind its resilience (rate, concurrency, timeouts, body size), and the fault
//! registry its admin API fills.
//!
//! [`Config::default`] is what a laptop needs; [`Config::from_env`] starts from it and applies
//! the environment, failing with an error that names the variable when a value is unusable.

use std::net::SocketAddr;
use std::time::Duration;

use servicekit::env::{self, EnvError};

/// The fault kinds that act in the gateway: the inbound HTTP and runtime faults (on its
/// routes), the dependency faults and the dropped trace context (on its calls to `orders` and
/// `fulfillment`), and the clock skew (on its exported spans; `faultline serve` installs that
/// hook). Database and queue faults act in the services that own them.
pub const FAULT_KINDS: &[chaos::FaultKind] = &[
    chaos::FaultKind::HttpLatency,
    chaos::FaultKind::HttpError,
    chaos::FaultKind::HttpHang,
    chaos::FaultKind::DependencyLatency,
    chaos::FaultKind::DependencyError,
    chaos::FaultKind::RuntimeCpuBurn,
    chaos::FaultKind::RuntimeBlockingCall,
    chaos::FaultKind::RuntimeLockAcrossAwait,
    chaos::FaultKind::RuntimeMemoryLeak,
    chaos::FaultKind::TelemetryDropContext,
    chaos::FaultKind::TelemetryClockSkew,
];

/// The gateway's inbound routes, as `METHOD /template` (what a fault's `route` may name).
pub const ROUTES: &[&str] = &[
    "POST /api/orders",
    "GET /api/orders/{id}",
    "GET /api/users/{id}/summary",
];

/// An empty fault registry for the gateway: [`FAULT_KINDS`], its [`ROUTES`], and the targets
/// of its outgoing hops — `orders` and `fulfillment`, by name or by `host:port` of the given
/// base URLs. A spec naming anything else is refused instead of never acting.
pub fn fault_registry(orders_url: &str, fulfillment_url: &str) -> chaos::Faults {
    chaos::Faults::new("gateway", FAULT_KINDS)
        .with_routes(ROUTES)
        .with_dependencies(&[("orders", orders_url), ("fulfillment", fulfillment_url)])
}

/// Everything [`crate::start`] needs.
///
/// Two configs are equal when their settings are; [`faults`](Self::faults) is compared by
/// service and supported kinds only (the faults it holds are runtime state, not configuration).
#[derive(Clone, Debug)]
pub struct Config {
    /// `LISTEN_ADDR`: the public app listener. Default `127.0.0.1:8080`.
    pub listen_addr: SocketAddr,
    /// `ADMIN_LISTEN_ADDR`: `/metrics`, `/healthz`, `/readyz`. Default `127.0.0.1:9080`.
    pub admin_listen_addr: SocketAddr,
    /// `ORDERS_URL`: base URL of the orders service. Default `http://127.0.0.1:8081`.
    pub orders_url: String,
    /// `FULFILLMENT_URL`: base URL of the fulfillment service. Default `http://127.0.0.1:8082`.
    pub fulfillment_url: String,
    /// `GATEWAY_RATE_LIMIT_RPS`: requests per second admitted on the app listener (all clients
    /// together). Default 500.
    pub rate_limit_rps: u32,
    /// `GATEWAY_RATE_LIMIT_BURST`: how many requests may arrive at once before the rate applies.
    /// Default: the same as the rate (one second's worth).
    pub rate_limit_burst: u32,
    /// `GATEWAY_MAX_CONCURRENT_REQUESTS`: requests handled at the same time; beyond it the
    /// gateway answers 503 at once instead of queueing. Default 256.
    pub max_concurrent_requests: usize,
    /// `GATEWAY_ORDERS_TIMEOUT_MS`: the longest one call to orders may take. Default 2 s.
    pub orders_timeout: Duration,
    /// `GATEWAY_FULFILLMENT_TIMEOUT_MS`: the longest one call to fulfillment may take.
    /// Default 1 s: the summary treats fulfillment as optional, so it waits less for it.
    pub fulfillment_timeout: Duration,
    /// `GATEWAY_MAX_BODY_BYTES`: the largest request body accepted (413 beyond). Default 16 KiB.
    pub max_body_bytes: usize,
    /// The gateway's fault registry ([`FAULT_KINDS`]), filled through `/admin/faults` on the
    /// admin listener. Empty at start; clones share it, so a test or the binary may keep one to
    /// look at or change the faults directly.
    pub faults: chaos::Faults,
    /// `FAULTLINE_ADMIN_TOKEN`: the bearer token every `/admin/faults` mutation needs. Default
    /// none: mutations are open (fine on loopback; `faultline up` always sets one).
    pub admin_token: Option<String>,
}

impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        self.listen_addr == other.listen_addr
            && self.admin_listen_addr == other.admin_listen_addr
            && self.orders_url == other.orders_url
            && self.fulfillment_url == other.fulfillment_url
            && self.rate_limit_rps == other.rate_limit_rps
            && self.rate_limit_burst == other.rate_limit_burst
            && self.max_concurrent_requests == other.max_concurrent_requests
            && self.orders_timeout == other.orders_timeout
            && self.fulfillment_timeout == other.fulfillment_timeout
            && self.max_body_bytes == other.max_body_bytes
            && self.faults.service() == other.faults.service()
            && self.faults.supported() == other.faults.supported()
            && self.admin_token == other.admin_token
    }
}

impl Eq for Config {}

/// The default rate limit, requests per second.
pub const DEFAULT_RATE_LIMIT_RPS: u32 = 500;
/// The default concurrency limit.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 256;
/// The default request body limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen_addr: SocketAddr::from(([127, 0, 0, 1], 9080)),
            orders_url: "http://127.0.0.1:8081".to_owned(),
            fulfillment_url: "http://127.0.0.1:8082".to_owned(),
            rate_limit_rps: DEFAULT_RATE_LIMIT_RPS,
            rate_limit_burst: DEFAULT_RATE_LIMIT_RPS,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            orders_timeout: Duration::from_secs(2),
            fulfillment_timeout: Duration::from_secs(1),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            faults: fault_registry("http://127.0.0.1:8081", "http://127.0.0.1:8082"),
            admin_token: None,
        }
    }
}

impl Config {
    /// The defaults, then the environment variables named on each field.
    ///
    /// # Errors
    /// [`EnvError`] naming the first variable that is set to something unusable.
    pub fn from_env() -> Result<Config, EnvError> {
        let defaults = Config::default();
        let rate_limit_rps = env::positive_u32("GATEWAY_RATE_LIMIT_RPS", defaults.rate_limit_rps)?;
        let orders_url = base_url("ORDERS_URL", &defaults.orders_url)?;
        let fulfillment_url = base_url("FULFILLMENT_URL", &defaults.fulfillment_url)?;
        Ok(Config {
            listen_addr: env::socket_addr("LISTEN_ADDR", "127.0.0.1:8080")?,
            admin_listen_addr: env::socket_addr("ADMIN_LISTEN_ADDR", "127.0.0.1:9080")?,
            faults: fault_registry(&orders_url, &fulfillment_url),
            orders_url,
            fulfillment_url,
            rate_limit_rps,
            // One second's worth of requests by default, so that a steady rate just under the
            // limit is never refused because its requests happen to arrive in clumps.
            rate_limit_burst: env::positive_u32("GATEWAY_RATE_LIMIT_BURST", rate_limit_rps)?,
            max_concurrent_requests: to_usize(
                "GATEWAY_MAX_CONCURRENT_REQUESTS",
                env::positive(
                    "GATEWAY_MAX_CONCURRENT_REQUESTS",
                    defaults.max_concurrent_requests as u64,
                )?,
            )?,
            orders_timeout: env::millis("GATEWAY_ORDERS_TIMEOUT_MS", defaults.orders_timeout)?,
            fulfillment_timeout: env::millis(
                "GATEWAY_FULFILLMENT_TIMEOUT_MS",
                defaults.fulfillment_timeout,
            )?,
            max_body_bytes: to_usize(
                "GATEWAY_MAX_BODY_BYTES",
                env::positive("GATEWAY_MAX_BODY_BYTES", defaults.max_body_bytes as u64)?,
            )?,
            admin_token: env::admin_token(),
        })
    }
}

/// A downstream base URL: `http://host:port`, optionally with a path prefix. The client speaks
/// plain HTTP/1.1 only (services talk inside one network), so `https://` is refused here rather
/// than failing on the first request. A trailing `/` is dropped so paths can be appended.
fn base_url(variable: &str, default: &str) -> Result<String, EnvError> {
    let value = env::string(variable, default);
    let trimmed = value.trim().trim_end_matches('/');
    let usable = trimmed
        .parse::<http::Uri>()
        .ok()
        .is_some_and(|uri| uri.scheme_str() == Some("http") && uri.authority().is_some());
    if usable {
        Ok(trimmed.to_owned())
    } else {
        Err(EnvError {
            variable: variable.to_owned(),
            value,
            expected: "an http:// base URL such as http://127.0.0.1:8081",
        })
    }
}

fn to_usize(variable: &str, n: u64) -> Result<usize, EnvError> {
    usize::try_from(n).map_err(|_| EnvError {
        variable: variable.to_owned(),
        value: n.to_string(),
        expected: "a positive whole number that fits this platform",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_must_be_plain_http_and_lose_their_trailing_slash() {
        // `base_url` reads the environment only through `env::string`, whose default is used
        // when the variable is unset; a variable name nobody sets keeps this test hermetic.
        let unset = "GATEWAY_TEST_SURELY_UNSET_URL";
        assert_eq!(
            base_url(unset, "http://orders:8081/").unwrap(),
            "http://orders:8081"
        );
        assert_eq!(
            base_url(unset, "http://10.0.0.1:80/prefix").unwrap(),
            "http://10.0.0.1:80/prefix"
        );
        for bad in ["https://orders:8081", "orders:8081", "http://", "not a url"] {
            let err = base_url(unset, bad).unwrap_err();
            assert_eq!(err.variable, unset);
            assert!(err.to_string().contains("http://"), "{err}");
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::default();
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin_listen_addr.to_string(), "127.0.0.1:9080");
        assert_eq!(c.orders_url, "http://127.0.0.1:8081");
        assert_eq!(c.fulfillment_url, "http://127.0.0.1:8082");
        assert_eq!(c.rate_limit_rps, 500);
        assert_eq!(c.rate_limit_burst, 500);
        assert_eq!(c.max_concurrent_requests, 256);
        assert_eq!(c.orders_timeout, Duration::from_secs(2));
        assert_eq!(c.fulfillment_timeout, Duration::from_secs(1));
        assert_eq!(c.max_body_bytes, 16 * 1024);
        assert_eq!(c.faults.service(), "gateway");
        assert!(c.faults.is_empty());
        assert_eq!(c.admin_token, None);
    }

    #[test]
    fn the_gateway_runs_its_http_runtime_dependency_and_telemetry_faults_only() {
        use chaos::FaultKind;
        let supported = Config::default().faults.supported().to_vec();
        assert_eq!(supported, FAULT_KINDS);
        assert_eq!(supported.len(), 11);
        for kind in FaultKind::ALL {
            let name = kind.name();
            let expected = !(name.starts_with("db.") || name.starts_with("queue."));
            assert_eq!(supported.contains(&kind), expected, "{name}");
        }
    }
}
