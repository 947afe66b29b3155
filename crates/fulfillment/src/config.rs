//! What the fulfillment service needs to start, read from the environment (CONTRACT.md).

use std::net::SocketAddr;
use std::time::Duration;

use servicekit::env::{self, EnvError};

/// The fulfillment service's settings. [`Config::from_env`] reads them; tests build one directly.
#[derive(Clone)]
pub struct Config {
    /// `LISTEN_ADDR`: the app listener (`GET /users/{id}/shipments`). Default `127.0.0.1:8082`.
    pub listen_addr: SocketAddr,
    /// `ADMIN_LISTEN_ADDR`: `/metrics`, `/healthz`, `/readyz`. Default `127.0.0.1:9082`.
    pub admin_listen_addr: SocketAddr,
    /// `DATABASE_URL`: `sqlite://PATH` or `postgres://…`. Default
    /// `sqlite://.faultline/fulfillment.db`.
    pub database_url: String,
    /// `QUEUE_URL`: `sqlite://PATH` (embedded queue) or `nats://HOST:PORT` (JetStream). Default
    /// `sqlite://.faultline/queue.db`.
    pub queue_url: String,
    /// `ORDERS_URL`: where order status is reported. Default `http://127.0.0.1:8081`.
    pub orders_url: String,
    /// `FULFILLMENT_WORKERS`: messages processed at the same time. Default 8.
    pub workers: usize,
    /// `FULFILLMENT_ORDERS_TIMEOUT_MS`: the longest one call to orders may take. Default 2 s.
    pub orders_timeout: Duration,
    /// `FULFILLMENT_MAX_DELIVERIES`: deliveries of one message before it is dead-lettered.
    /// Default 5.
    pub max_deliveries: u32,
    /// `FULFILLMENT_ACK_WAIT_MS`: how long a received message stays leased to this worker
    /// before the queue redelivers it (to this or another instance). Must exceed the longest
    /// processing time. Default 30 s.
    pub ack_wait: Duration,
    /// The service's fault registry (`chaos::Faults::new("fulfillment", FAULT_KINDS)`): the
    /// admin API sets faults in it and the hooks in the worker, the HTTP API and the orders
    /// client read it. Build it before telemetry when `telemetry.clock_skew` should act (its
    /// span hook reads this registry).
    pub faults: chaos::Faults,
    /// `FAULTLINE_ADMIN_TOKEN`: the bearer token `PUT`/`DELETE /admin/faults` need. `None`:
    /// fault changes are open (a local lab only).
    pub admin_token: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen_addr", &self.listen_addr)
            .field("admin_listen_addr", &self.admin_listen_addr)
            .field("database_url", &servicekit::db::redact(&self.database_url))
            .field("queue_url", &servicekit::db::redact(&self.queue_url))
            .field("orders_url", &self.orders_url)
            .field("workers", &self.workers)
            .field("orders_timeout", &self.orders_timeout)
            .field("max_deliveries", &self.max_deliveries)
            .field("ack_wait", &self.ack_wait)
            .field("faults", &self.faults)
            // Never print the token itself.
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Config {
    /// Defaults, then the environment.
    ///
    /// # Errors
    /// [`EnvError`] naming the variable that is set to something unusable.
    pub fn from_env() -> Result<Config, EnvError> {
        let max_deliveries = env::positive_u32("FULFILLMENT_MAX_DELIVERIES", 5)?;
        let orders_url = env::string("ORDERS_URL", "http://127.0.0.1:8081");
        Ok(Config {
            faults: crate::fault_registry(&orders_url),
            listen_addr: env::socket_addr("LISTEN_ADDR", "127.0.0.1:8082")?,
            admin_listen_addr: env::socket_addr("ADMIN_LISTEN_ADDR", "127.0.0.1:9082")?,
            database_url: env::string("DATABASE_URL", "sqlite://.faultline/fulfillment.db"),
            queue_url: env::string("QUEUE_URL", "sqlite://.faultline/queue.db"),
            orders_url,
            workers: usize::try_from(env::positive("FULFILLMENT_WORKERS", 8)?)
                .unwrap_or(usize::MAX),
            orders_timeout: env::millis("FULFILLMENT_ORDERS_TIMEOUT_MS", Duration::from_secs(2))?,
            max_deliveries,
            ack_wait: env::millis("FULFILLMENT_ACK_WAIT_MS", Duration::from_secs(30))?,
            admin_token: env::admin_token(),
        })
    }
}
