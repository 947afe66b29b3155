//! The orders database: one sqlx [`AnyPool`] that is SQLite or PostgreSQL depending on
//! `DATABASE_URL`, the embedded migrations, the seed stock, and [`Database::run`], the one
//! place every statement passes through to get its database CLIENT span and duration metric.
//!
//! The store's statements go through [`Database::run_in`] (in a transaction) or
//! [`Database::run_pooled`] (on a connection of their own): there a `db.slow_query` fault makes
//! the *database* spend the fault's time, on the statement's own connection and inside its span
//! — `pg_sleep` on PostgreSQL, a calibrated busy query on SQLite — as a slow plan or a cold cache
//! would. Taking a connection from the pool is timed ([`CONNECTION_WAIT_TIME`]) and the pool's
//! use is published as the semantic-convention connection metrics ([`CONNECTIONS`],
//! [`CONNECTION_MAX`]).
//!
//! The same SQL runs on both backends: `$1` placeholders (SQLite reads `$N` as "parameter N"),
//! `ON CONFLICT … DO NOTHING`, and only the column types sqlx's `Any` driver can move (integers
//! and text). The one backend-specific statement, `SELECT … FOR UPDATE`, lives in
//! [`crate::store`].

use std::borrow::Cow;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use chaos::{FaultKind, Faults, Hit};
use servicekit::db::{postgres_server, redact};
use sqlx::any::{Any, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::pool::{PoolConnection, PoolConnectionMetadata};
use sqlx::{AnyConnection, AnyPool, Connection as _};
use sqlx::{Row, SqlSafeStr};
use telemetry::db::{DbOperation, DbServer};
use tokio::sync::OnceCell;

/// How long a request waits for a free connection before it fails (with 503): long enough to
/// ride out a burst, short enough that an exhausted pool is visible as errors, not as hangs.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The SKUs a fresh database is seeded with (CONTRACT.md): `sku-1` … `sku-10`.
const SEED_SKUS: u32 = 10;
/// Stock of each seeded SKU.
const SEED_STOCK: i64 = 10_000;

/// Gauge `db.client.connection.count`: the pool's connections by `db_client_connection_state`
/// (`idle`, `used`). Exposed without the `_count` suffix, which Prometheus reserves for
/// histograms and summaries (`promtool check metrics` refuses it on a gauge).
pub(crate) const CONNECTIONS: &str = "db_client_connections";
/// Gauge `db.client.connection.max`: the most connections the pool opens.
pub(crate) const CONNECTION_MAX: &str = "db_client_connection_max";
/// Histogram `db.client.connection.wait_time` (seconds): how long taking a connection from the
/// pool took, for a transaction or a statement (also when it timed out).
pub(crate) const CONNECTION_WAIT_TIME: &str = "db_client_connection_wait_time_seconds";
/// `db.client.connection.pool.name` of the service's one pool.
const POOL_NAME: &str = "orders";
/// How often the pool gauges are refreshed when nothing else refreshes them.
const POOL_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// `db.slow_query` on PostgreSQL: the server sleeps (`pg_sleep` returns `void`, which sqlx's
/// `Any` driver cannot decode; selecting from it returns an integer instead).
const PG_SLEEP: &str = "SELECT 1 FROM pg_sleep($1)";
/// `db.slow_query` on SQLite, which has no sleep function: a query that counts to `$1`.
const SQLITE_BUSY_QUERY: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $1) SELECT count(*) FROM c";
/// Iterations of the first busy query, which measures how fast this machine counts.
const BUSY_CALIBRATION_ITERATIONS: i64 = 200_000;
/// The longest single busy query: the stall is a series of these until its time is up, so that
/// a mis-calibration overshoots by at most this much.
const BUSY_CHUNK: Duration = Duration::from_millis(100);

/// Which database `DATABASE_URL` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// `db.system.name` (OpenTelemetry semantic conventions).
    pub(crate) fn system(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }
}

/// Why the database could not be opened or prepared.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// `DATABASE_URL` is neither `sqlite:` nor `postgres:`.
    #[error(
        "DATABASE_URL={0:?} is not supported: use sqlite://PATH or postgres://USER@HOST:PORT/DB"
    )]
    UnsupportedUrl(String),
    /// The SQLite file's directory could not be created.
    #[error("cannot create the directory {path} for the SQLite database: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The first connection failed.
    #[error(
        "cannot connect to the database at {url}: {source}; is it running and is DATABASE_URL right?"
    )]
    Connect {
        /// The URL, without its password.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// Applying the schema failed.
    #[error("cannot apply the database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A statement failed while preparing the database (seeding, journal mode).
    #[error("cannot prepare the database: {0}")]
    Query(#[from] sqlx::Error),
}

/// The connection pool plus what every span needs to know about the server, and the faults
/// that act on its statements.
pub(crate) struct Database {
    pool: AnyPool,
    backend: Backend,
    server: DbServer,
    /// The URL the pool connects with (for a separate connection: [`Database::connect_other`]).
    url: String,
    faults: Faults,
    /// SQLite busy-query iterations per millisecond, measured at the first slow query.
    busy_rate: OnceCell<f64>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &redact(&self.url))
            .field("backend", &self.backend)
            .field("pool_size", &self.pool.size())
            .finish_non_exhaustive()
    }
}

/// `db.operation.name`, `db.collection.name` and the parameterised text of one statement; the
/// system is filled in per backend by [`Database::run`].
pub(crate) const fn statement(
    operation: &'static str,
    collection: &'static str,
    query: &'static str,
) -> DbOperation {
    DbOperation::new("sqlite", operation, collection, query)
}

const SELECT_READY: DbOperation =
    statement("SELECT", "inventory", "SELECT sku FROM inventory LIMIT 1");
const COUNT_INVENTORY: DbOperation =
    statement("SELECT", "inventory", "SELECT COUNT(*) FROM inventory");
const SEED_INVENTORY: DbOperation = statement(
    "INSERT",
    "inventory",
    "INSERT INTO inventory (sku, stock, version) VALUES ($1, $2, 0) ON CONFLICT (sku) DO NOTHING",
);
const MIGRATE: DbOperation = statement(
    "MIGRATE",
    "_sqlx_migrations",
    "-- embedded migrations (crates/orders/migrations)",
);
const JOURNAL_MODE: DbOperation = statement("PRAGMA", "journal_mode", "PRAGMA journal_mode = WAL");
/// Per-connection settings: wait up to 5 s for another connection's write lock instead of
/// answering "database is locked" at once; enforce foreign keys; and with WAL, fsync at
/// checkpoints rather than at every commit (`synchronous = NORMAL`: an application crash loses
/// nothing, a power cut may lose the last commits — the usual trade for a local lab).
const SQLITE_CONNECTION_PRAGMAS: [(DbOperation, &str); 3] = [
    (
        statement("PRAGMA", "busy_timeout", "PRAGMA busy_timeout = 5000"),
        "PRAGMA busy_timeout = 5000",
    ),
    (
        statement("PRAGMA", "foreign_keys", "PRAGMA foreign_keys = ON"),
        "PRAGMA foreign_keys = ON",
    ),
    (
        statement("PRAGMA", "synchronous", "PRAGMA synchronous = NORMAL"),
        "PRAGMA synchronous = NORMAL",
    ),
];

impl Database {
    /// Opens a pool of `pool_size` connections to `url`. For SQLite, creates the file and its
    /// directory if missing and switches the file to WAL (readers never wait for the writer).
    pub(crate) async fn connect(url: &str, pool_size: u32) -> Result<Self, DatabaseError> {
        sqlx::any::install_default_drivers();
        let (backend, url, server) = if is_scheme(url, "sqlite:") {
            (
                Backend::Sqlite,
                prepare_sqlite_url(url)?,
                DbServer::default(),
            )
        } else if is_scheme(url, "postgres:") || is_scheme(url, "postgresql:") {
            (Backend::Postgres, url.to_owned(), postgres_server(url))
        } else {
            return Err(DatabaseError::UnsupportedUrl(redact(url)));
        };

        let mut options = AnyPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if backend == Backend::Sqlite {
            options = options.after_connect(sqlite_after_connect);
        }
        let pool = options
            .connect(&url)
            .await
            .map_err(|source| DatabaseError::Connect {
                url: redact(&url),
                source,
            })?;
        let database = Self {
            pool,
            backend,
            server,
            url,
            faults: Faults::new("orders", &[]),
            busy_rate: OnceCell::new(),
        };
        if backend == Backend::Sqlite {
            // Once per file, not per connection: WAL is persistent, and switching needs an
            // exclusive lock that the busy timeout does not wait for.
            database
                .run(
                    &JOURNAL_MODE,
                    sqlx::query(JOURNAL_MODE.query).execute(&database.pool),
                )
                .await?;
        }
        Ok(database)
    }

    /// Applies the embedded migrations that have not been applied yet. sqlx records each in
    /// `_sqlx_migrations` (with a checksum: editing an applied migration is an error) and, on
    /// PostgreSQL, holds an advisory lock so that two instances starting together do not race.
    pub(crate) async fn migrate(&self) -> Result<(), DatabaseError> {
        let sql = match self.backend {
            Backend::Sqlite => include_str!("../migrations/sqlite/0001_init.sql"),
            Backend::Postgres => include_str!("../migrations/postgres/0001_init.sql"),
        };
        let migrator = Migrator::with_migrations(vec![Migration::new(
            1,
            Cow::Borrowed("init"),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )]);
        self.run(&MIGRATE, migrator.run(&self.pool)).await?;
        Ok(())
    }

    /// Seeds `sku-1` … `sku-10` with 10,000 each when the inventory is empty. Safe to run from
    /// two instances at once (`ON CONFLICT DO NOTHING`).
    pub(crate) async fn seed(&self) -> Result<(), DatabaseError> {
        let count: i64 = self
            .run(
                &COUNT_INVENTORY,
                sqlx::query(COUNT_INVENTORY.query).fetch_one(&self.pool),
            )
            .await?
            .try_get(0)?;
        if count > 0 {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for n in 1..=SEED_SKUS {
            self.run(
                &SEED_INVENTORY,
                sqlx::query(SEED_INVENTORY.query)
                    .bind(format!("sku-{n}"))
                    .bind(SEED_STOCK)
                    .execute(&mut *tx),
            )
            .await?;
        }
        tx.commit().await?;
        tracing::info!(
            skus = SEED_SKUS,
            stock = SEED_STOCK,
            "seeded an empty inventory"
        );
        Ok(())
    }

    /// Whether the database answers and has its schema (for `/readyz`).
    pub(crate) async fn ready(&self) -> Result<(), String> {
        self.run(
            &SELECT_READY,
            sqlx::query(SELECT_READY.query).fetch_optional(&self.pool),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// Runs one database call inside its CLIENT span (`telemetry::db`), with this backend's
    /// `db.system.name` and server address.
    pub(crate) async fn run<F, T, E>(&self, operation: &DbOperation, call: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: std::fmt::Display + DbErrorType,
    {
        telemetry::db::instrument_with(
            &operation.on(self.backend.system()),
            &self.server,
            |e: &E| e.db_error_type(),
            call,
        )
        .await
    }

    /// Runs one statement of a transaction on `conn` (`&mut *tx`) inside its CLIENT span. A
    /// `db.slow_query` fault on the statement's table (`db.collection.name`) first makes the
    /// database spend the fault's time on that same connection, inside the span.
    ///
    /// # Errors
    /// The statement's error, or the stalling query's.
    pub(crate) async fn run_in<'c, F, Fut, T>(
        &self,
        operation: &DbOperation,
        conn: &'c mut AnyConnection,
        call: F,
    ) -> Result<T, sqlx::Error>
    where
        F: FnOnce(&'c mut AnyConnection) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let collection = operation.collection;
        self.run(operation, async move {
            if let Some(hit) = self.slow_query(collection) {
                self.stall(&mut *conn, &hit).await?;
            }
            call(conn).await
        })
        .await
    }

    /// Runs one statement on a connection taken from the pool (`call` gets it and gives it
    /// back by dropping it), inside its CLIENT span; the wait for the connection is part of
    /// the span, as it is for a query on the pool itself. `db.slow_query` acts as in
    /// [`run_in`](Self::run_in).
    ///
    /// # Errors
    /// `PoolTimedOut` when no connection came free in time; the statement's error.
    pub(crate) async fn run_pooled<F, Fut, T>(
        &self,
        operation: &DbOperation,
        call: F,
    ) -> Result<T, sqlx::Error>
    where
        F: FnOnce(PoolConnection<Any>) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let collection = operation.collection;
        self.run(operation, async move {
            let mut conn = self.acquire().await?;
            if let Some(hit) = self.slow_query(collection) {
                self.stall(&mut conn, &hit).await?;
            }
            call(conn).await
        })
        .await
    }

    /// Takes a connection from the pool (waiting at most 5 s), recording the wait in
    /// [`CONNECTION_WAIT_TIME`] and refreshing the pool gauges.
    ///
    /// # Errors
    /// `PoolTimedOut` when no connection came free in time; a failed new connection.
    pub(crate) async fn acquire(&self) -> Result<PoolConnection<Any>, sqlx::Error> {
        let start = Instant::now();
        let conn = self.pool.acquire().await;
        metrics::histogram!(CONNECTION_WAIT_TIME, "db_client_connection_pool_name" => POOL_NAME)
            .record(start.elapsed().as_secs_f64());
        self.report_pool_usage();
        conn
    }

    /// Sets the pool gauges: connections idle and in use, and the maximum.
    pub(crate) fn report_pool_usage(&self) {
        let open = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle())
            .unwrap_or(open)
            .min(open);
        for (state, n) in [("idle", idle), ("used", open - idle)] {
            metrics::gauge!(
                CONNECTIONS,
                "db_client_connection_pool_name" => POOL_NAME,
                "db_client_connection_state" => state
            )
            .set(f64::from(n));
        }
        metrics::gauge!(CONNECTION_MAX, "db_client_connection_pool_name" => POOL_NAME)
            .set(f64::from(self.max_connections()));
    }

    /// Refreshes the pool gauges every second until `stop` completes.
    pub(crate) async fn report_pool_usage_until(&self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            self.report_pool_usage();
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(POOL_REPORT_INTERVAL) => {}
            }
        }
    }

    /// The pool's maximum number of connections (`DB_POOL_SIZE`).
    pub(crate) fn max_connections(&self) -> u32 {
        self.pool.options().get_max_connections()
    }

    /// A connection of its own to the same database, outside the pool (another client, as far
    /// as the service is concerned), with the pool's SQLite settings. No span, no metric.
    ///
    /// # Errors
    /// The connection cannot be opened.
    pub(crate) async fn connect_other(&self) -> Result<AnyConnection, sqlx::Error> {
        let mut conn = AnyConnection::connect(&self.url).await?;
        if self.backend == Backend::Sqlite {
            for (_, sql) in SQLITE_CONNECTION_PRAGMAS {
                sqlx::query(sql).execute(&mut conn).await?;
            }
        }
        Ok(conn)
    }

    /// Uses `faults` (the service's registry) for the faults that act on statements.
    pub(crate) fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The `db.slow_query` fault that acts on this statement on `collection`, if any (drawn
    /// against its probability: each statement is one occurrence).
    fn slow_query(&self, collection: &str) -> Option<Hit> {
        self.faults.roll(FaultKind::DbSlowQuery, |spec| {
            chaos::target_matches(spec, &[collection])
        })
    }

    /// Makes the database itself take `hit`'s time on `conn` before the statement runs.
    async fn stall(&self, conn: &mut AnyConnection, hit: &Hit) -> Result<(), sqlx::Error> {
        hit.acted();
        let duration = hit.spec().duration();
        match self.backend {
            Backend::Postgres => {
                sqlx::query(PG_SLEEP)
                    .bind(duration.as_secs_f64())
                    .execute(&mut *conn)
                    .await?;
            }
            Backend::Sqlite => {
                let deadline = Instant::now() + duration;
                let rate = *self
                    .busy_rate
                    .get_or_try_init(|| calibrate_busy_query(&mut *conn))
                    .await?;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    let chunk = left.min(BUSY_CHUNK).as_secs_f64() * 1000.0;
                    let iterations = (rate * chunk).ceil().max(1.0) as i64;
                    sqlx::query(SQLITE_BUSY_QUERY)
                        .bind(iterations)
                        .fetch_one(&mut *conn)
                        .await?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection (waits for those in use to come back).
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How many iterations of [`SQLITE_BUSY_QUERY`] this machine runs per millisecond.
async fn calibrate_busy_query(conn: &mut AnyConnection) -> Result<f64, sqlx::Error> {
    let start = Instant::now();
    sqlx::query(SQLITE_BUSY_QUERY)
        .bind(BUSY_CALIBRATION_ITERATIONS)
        .fetch_one(&mut *conn)
        .await?;
    let ms = (start.elapsed().as_secs_f64() * 1000.0).max(0.001);
    let rate = BUSY_CALIBRATION_ITERATIONS as f64 / ms;
    tracing::debug!(iterations_per_ms = rate, "calibrated the SQLite busy query");
    Ok(rate)
}

/// Runs on every new SQLite connection before the pool hands it out.
fn sqlite_after_connect(
    conn: &mut AnyConnection,
    _meta: PoolConnectionMetadata,
) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        for (operation, sql) in SQLITE_CONNECTION_PRAGMAS {
            telemetry::db::instrument(&operation, sqlx::query(sql).execute(&mut *conn)).await?;
        }
        Ok(())
    })
}

fn is_scheme(url: &str, scheme: &str) -> bool {
    url.get(..scheme.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
}

/// Creates the SQLite file's directory and asks sqlx to create the file (`mode=rwc`) unless
/// the URL says otherwise.
fn prepare_sqlite_url(url: &str) -> Result<String, DatabaseError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let in_memory = path.is_empty() || path == ":memory:" || query.contains("mode=memory");
    if !in_memory
        && let Some(dir) = Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| DatabaseError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if !params.iter().any(|p| p.starts_with("mode=")) {
        params.push("mode=rwc");
    }
    Ok(format!("sqlite://{path}?{}", params.join("&")))
}

/// The `error.type` of a failed database call: the database's own code where there is one
/// (see [`servicekit::db::sqlx_error_type`]).
pub(crate) trait DbErrorType {
    fn db_error_type(&self) -> String;
}

impl DbErrorType for sqlx::Error {
    fn db_error_type(&self) -> String {
        servicekit::db::sqlx_error_type(self)
    }
}

impl DbErrorType for sqlx::migrate::MigrateError {
    fn db_error_type(&self) -> String {
        match self {
            sqlx::migrate::MigrateError::Execute(e) => servicekit::db::sqlx_error_type(e),
            _ => "migration_error".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode_and_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a/b/orders.db");
        let url = prepare_sqlite_url(&format!("sqlite://{}", file.display())).unwrap();
        assert_eq!(url, format!("sqlite://{}?mode=rwc", file.display()));
        assert!(dir.path().join("a/b").is_dir());
        let url = prepare_sqlite_url(&format!("sqlite:{}?mode=ro", file.display())).unwrap();
        assert!(url.ends_with("?mode=ro"), "{url}");
    }
}
