//! The service's configuration, read from the environment (CONTRACT.md "Environment").

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use servicekit::env::{self, EnvError};

/// How placing an order reserves stock (`LOCKING`).
///
/// Both keep stock correct; they differ in what contention looks like, which is the point of
/// having both in a debugging lab.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Locking {
    /// Read the row's `version`, then update only if it is unchanged (compare-and-swap). No lock
    /// is held while deciding; a concurrent change makes the update hit zero rows, the
    /// transaction is retried with backoff and `orders_stock_conflicts_total` counts it.
    #[default]
    Optimistic,
    /// Lock the row before reading it (`SELECT … FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE`
    /// on SQLite). Nobody retries; instead transactions queue behind the lock, which shows up as
    /// slow database spans rather than conflicts.
    Pessimistic,
}

impl Locking {
    /// The `LOCKING` spelling: `optimistic` or `pessimistic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Locking::Optimistic => "optimistic",
            Locking::Pessimistic => "pessimistic",
        }
    }
}

impl fmt::Display for Locking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Locking {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "optimistic" => Ok(Locking::Optimistic),
            "pessimistic" => Ok(Locking::Pessimistic),
            _ => Err(()),
        }
    }
}

/// Everything [`start`](crate::start) needs.
#[derive(Clone)]
pub struct Config {
    /// The app listener (`LISTEN_ADDR`, default `127.0.0.1:8081`); port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// The admin listener (`ADMIN_LISTEN_ADDR`, default `127.0.0.1:9081`).
    pub admin_listen_addr: SocketAddr,
    /// `sqlite://PATH` or `postgres://…` (`DATABASE_URL`, default
    /// `sqlite://.faultline/orders.db`).
    pub database_url: String,
    /// `sqlite://PATH` or `nats://HOST:PORT` (`QUEUE_URL`, default
    /// `sqlite://.faultline/queue.db`).
    pub queue_url: String,
    /// Optimistic or pessimistic stock reservation (`LOCKING`, default `optimistic`).
    pub locking: Locking,
    /// How many times an order is retried after an optimistic-locking conflict before the
    /// client gets 503 (`MAX_CONFLICT_RETRIES`, default 10).
    pub max_conflict_retries: u32,
    /// Database connections in the pool (`DB_POOL_SIZE`, default 10).
    pub db_pool_size: u32,
    /// The service's fault registry (empty at start; faults are set through the admin API),
    /// supporting [`FAULT_KINDS`](crate::FAULT_KINDS). A clone shares the registry: give one to
    /// the telemetry span hook for `telemetry.clock_skew` before starting.
    pub faults: chaos::Faults,
    /// The bearer token `PUT`/`DELETE /admin/faults` require (`FAULTLINE_ADMIN_TOKEN`); `None`
    /// leaves them open.
    pub admin_token: Option<String>,
}

impl fmt::Debug for Config {
    /// Everything but the admin token's value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen_addr", &self.listen_addr)
            .field("admin_listen_addr", &self.admin_listen_addr)
            .field("database_url", &servicekit::db::redact(&self.database_url))
            .field("queue_url", &servicekit::db::redact(&self.queue_url))
            .field("locking", &self.locking)
            .field("max_conflict_retries", &self.max_conflict_retries)
            .field("db_pool_size", &self.db_pool_size)
            .field("faults", &self.faults)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Config {
    /// The defaults of CONTRACT.md, without reading the environment.
    pub fn defaults() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            admin_listen_addr: SocketAddr::from(([127, 0, 0, 1], 9081)),
            database_url: "sqlite://.faultline/orders.db".to_owned(),
            queue_url: "sqlite://.faultline/queue.db".to_owned(),
            locking: Locking::Optimistic,
            max_conflict_retries: 10,
            db_pool_size: 10,
            faults: crate::fault_registry(),
            admin_token: None,
        }
    }

    /// Reads `LISTEN_ADDR`, `ADMIN_LISTEN_ADDR`, `DATABASE_URL`, `QUEUE_URL`, `LOCKING`,
    /// `MAX_CONFLICT_RETRIES`, `DB_POOL_SIZE` and `FAULTLINE_ADMIN_TOKEN`; unset or empty
    /// variables take the defaults. The fault registry starts empty.
    ///
    /// # Errors
    /// [`EnvError`] naming the first variable that is set to something unusable.
    pub fn from_env() -> Result<Config, EnvError> {
        let defaults = Self::defaults();
        let locking_value = env::string("LOCKING", defaults.locking.as_str());
        let locking = locking_value.parse().map_err(|()| EnvError {
            variable: "LOCKING".to_owned(),
            value: locking_value.clone(),
            expected: "`optimistic` or `pessimistic`",
        })?;
        Ok(Config {
            listen_addr: env::socket_addr("LISTEN_ADDR", "127.0.0.1:8081")?,
            admin_listen_addr: env::socket_addr("ADMIN_LISTEN_ADDR", "127.0.0.1:9081")?,
            database_url: env::string("DATABASE_URL", &defaults.database_url),
            queue_url: env::string("QUEUE_URL", &defaults.queue_url),
            locking,
            max_conflict_retries: bounded_u32(
                "MAX_CONFLICT_RETRIES",
                defaults.max_conflict_retries,
            )?,
            db_pool_size: bounded_u32("DB_POOL_SIZE", defaults.db_pool_size)?,
            faults: defaults.faults,
            admin_token: env::admin_token(),
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::defaults()
    }
}

/// A positive number no larger than 1000 (more retries or connections than that is a typo).
fn bounded_u32(variable: &'static str, default: u32) -> Result<u32, EnvError> {
    let value = env::positive(variable, u64::from(default))?;
    u32::try_from(value)
        .ok()
        .filter(|v| *v <= 1_000)
        .ok_or_else(|| EnvError {
            variable: variable.to_owned(),
            value: value.to_string(),
            expected: "a positive whole number no larger than 1000",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locking_is_parsed_without_regard_to_case() {
        assert_eq!("Pessimistic".parse::<Locking>(), Ok(Locking::Pessimistic));
        assert_eq!(" optimistic ".parse::<Locking>(), Ok(Locking::Optimistic));
        assert!("mutex".parse::<Locking>().is_err());
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::defaults();
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:8081");
        assert_eq!(c.admin_listen_addr.to_string(), "127.0.0.1:9081");
        assert_eq!(c.database_url, "sqlite://.faultline/orders.db");
        assert_eq!(c.queue_url, "sqlite://.faultline/queue.db");
        assert_eq!(c.locking, Locking::Optimistic);
        assert_eq!(c.max_conflict_retries, 10);
        assert!(c.faults.is_empty());
        assert_eq!(c.faults.service(), "orders");
        assert_eq!(c.admin_token, None);
    }

    #[test]
    fn debug_output_hides_the_admin_token() {
        let c = Config {
            admin_token: Some("s3cret".to_owned()),
            ..Config::defaults()
        };
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
