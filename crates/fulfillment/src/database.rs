//! The fulfillment database: connecting (SQLite or PostgreSQL, chosen by `DATABASE_URL`),
//! creating the schema, and the readiness check.
//!
//! Both backends go through one `sqlx::AnyPool`, so every query in [`crate::shipments`] is
//! written once, with `$1` placeholders that SQLite and PostgreSQL both understand. What differs
//! is only here: a SQLite file (and its directory) is created on first start and switched to
//! WAL, so the HTTP readers never wait behind the workers' inserts.

use std::str::FromStr;
use std::time::{Duration, Instant};

use servicekit::db::{postgres_server, redact};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection, SqlSafeStr};
use telemetry::db::DbServer;

/// How long a SQLite writer waits for the lock before failing with "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a query waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The table that records applied migrations. Named after the service (not sqlx's default
/// `_sqlx_migrations`) so that services sharing one PostgreSQL database never read each
/// other's migration history.
const MIGRATIONS_TABLE: &str = "fulfillment_migrations";

/// The schema, oldest first. Never edit a released migration: add a new one.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "shipments",
    include_str!("../migrations/0001_shipments.sql"),
)];

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// `DATABASE_URL` names no supported database.
    #[error(
        "DATABASE_URL={url:?} is not supported: use sqlite://PATH (a file, created if missing) or postgres://USER@HOST:PORT/DB"
    )]
    UnsupportedUrl {
        /// The URL, password redacted.
        url: String,
    },
    /// The database could not be opened or reached.
    #[error(
        "cannot connect to the database at {url}: {source}; check DATABASE_URL and that the database is running"
    )]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The directory of a SQLite file could not be created.
    #[error("cannot create the directory {path} for the SQLite database: {source}")]
    CreateDirectory {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The schema could not be created or is from an incompatible version.
    #[error("cannot migrate the database at {url}: {source}")]
    Migrate {
        /// The URL, password redacted.
        url: String,
        /// The migration error.
        source: sqlx::migrate::MigrateError,
    },
}

/// A connection pool and what the database CLIENT spans say about it.
#[derive(Clone, Debug)]
pub(crate) struct Database {
    pub(crate) pool: AnyPool,
    /// `db.system.name`: `sqlite` or `postgresql`.
    pub(crate) system: &'static str,
    /// `server.address` / `server.port` (none for SQLite).
    pub(crate) server: DbServer,
    /// The URL with the password redacted, for errors.
    url: String,
}

impl Database {
    /// Opens a pool of at most `max_connections`: for SQLite, creates the file and its
    /// directory first.
    pub(crate) async fn connect(url: &str, max_connections: u32) -> Result<Self, DatabaseError> {
        sqlx::any::install_default_drivers();
        let display = redact(url);
        let connect_error = |source| DatabaseError::Connect {
            url: display.clone(),
            source,
        };
        let (system, server, options) = if url.starts_with("sqlite:") {
            let in_memory = prepare_sqlite(url, &display).await?;
            let options = if in_memory {
                // Every pooled connection to `sqlite::memory:` would open its own empty
                // database; one connection that lives forever keeps the data.
                AnyPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
            } else {
                AnyPoolOptions::new().max_connections(max_connections)
            };
            ("sqlite", DbServer::default(), options)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = AnyPoolOptions::new().max_connections(max_connections);
            ("postgresql", postgres_server(url), options)
        } else {
            return Err(DatabaseError::UnsupportedUrl { url: display });
        };
        let pool = options
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(connect_error)?;
        Ok(Self {
            pool,
            system,
            server,
            url: display,
        })
    }

    /// Creates or updates the schema ([`MIGRATIONS`]). Safe to run from several instances at
    /// once (PostgreSQL takes an advisory lock; SQLite serialises writers).
    pub(crate) async fn migrate(&self) -> Result<(), DatabaseError> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        let mut migrator = Migrator::with_migrations(migrations);
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator
            .run(&self.pool)
            .await
            .map_err(|source| DatabaseError::Migrate {
                url: self.url.clone(),
                source,
            })
    }

    /// The `/readyz` check: a pooled connection answers a ping. Deliberately not a traced
    /// query: probes every few seconds would otherwise fill the trace store with one-span
    /// traces.
    pub(crate) async fn ping(&self) -> Result<(), String> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| format!("no connection: {e}"))?;
        conn.ping().await.map_err(|e| format!("ping failed: {e}"))
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the SQLite file and its directory and switches the file to WAL (a setting stored in
/// the file, so it holds for every later connection). Returns whether the URL names an
/// in-memory database instead.
///
/// WAL is switched on one connection before the pool opens because changing the journal mode
/// needs an exclusive lock that SQLite's busy timeout does not wait for: several pooled
/// connections (or processes) doing it at once fail with SQLITE_BUSY. So retry briefly.
async fn prepare_sqlite(url: &str, display: &str) -> Result<bool, DatabaseError> {
    let connect_error = |source| DatabaseError::Connect {
        url: display.to_owned(),
        source,
    };
    let options = SqliteConnectOptions::from_str(url)
        .map_err(connect_error)?
        .create_if_missing(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    let filename = options.get_filename().to_owned();
    let in_memory = url.contains(":memory:")
        || url.contains("mode=memory")
        || filename.to_string_lossy().starts_with("file:");
    if in_memory {
        return Ok(true);
    }
    if let Some(dir) = filename.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| DatabaseError::CreateDirectory {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let options = options.journal_mode(SqliteJournalMode::Wal);
    let started = Instant::now();
    loop {
        match options.connect().await {
            Ok(conn) => {
                let _ = conn.close().await;
                return Ok(false);
            }
            Err(e) if is_busy(&e) && started.elapsed() < SQLITE_BUSY_TIMEOUT => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(connect_error(e)),
        }
    }
}

/// SQLITE_BUSY (5) or SQLITE_LOCKED (6), possibly extended.
fn is_busy(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sqlite_file_and_its_directory_are_created_and_migrated_twice_safely() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/nested/dir/f.db", dir.path().display());
        let db = Database::connect(&url, 2).await.unwrap();
        db.migrate().await.unwrap();
        db.migrate().await.unwrap();
        db.ping().await.unwrap();
        assert!(dir.path().join("nested/dir/f.db").exists());
        db.close().await;
    }

    #[tokio::test]
    async fn an_unknown_scheme_is_rejected_with_a_hint() {
        let err = Database::connect("mysql://x/y", 1).await.unwrap_err();
        assert!(err.to_string().contains("sqlite://PATH"), "{err}");
    }
}
