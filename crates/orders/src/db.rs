//! The orders database: one sqlx [`AnyPool`] that is SQLite or PostgreSQL depending on
//! `DATABASE_URL`, the embedded migrations, the seed stock, and [`Database::run`], the one
//! place every statement passes through to get its database CLIENT span and duration metric.
//!
//! The same SQL runs on both backends: `$1` placeholders (SQLite reads `$N` as "parameter N"),
//! `ON CONFLICT … DO NOTHING`, and only the column types sqlx's `Any` driver can move (integers
//! and text). The one backend-specific statement, `SELECT … FOR UPDATE`, lives in
//! [`crate::store`].

use std::borrow::Cow;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use servicekit::db::{postgres_server, redact};
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::pool::PoolConnectionMetadata;
use sqlx::{AnyConnection, AnyPool};
use sqlx::{Row, SqlSafeStr};
use telemetry::db::{DbOperation, DbServer};

/// How long a request waits for a free connection before it fails (with 503): long enough to
/// ride out a burst, short enough that an exhausted pool is visible as errors, not as hangs.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The SKUs a fresh database is seeded with (CONTRACT.md): `sku-1` … `sku-10`.
const SEED_SKUS: u32 = 10;
/// Stock of each seeded SKU.
const SEED_STOCK: i64 = 10_000;

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

/// The connection pool plus what every span needs to know about the server.
#[derive(Debug)]
pub(crate) struct Database {
    pool: AnyPool,
    backend: Backend,
    server: DbServer,
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
