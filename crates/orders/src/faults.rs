//! The database faults that act continuously, as background tasks started with the service:
//!
//! * `db.lock_contention`: a competing client — a connection of its own, outside the pool —
//!   keeps taking the hot stock row (`target` SKU, default `sku-1`): `BEGIN` (SQLite:
//!   `BEGIN IMMEDIATE`), `UPDATE inventory SET version = version + 1 WHERE sku = $1`, holds the
//!   lock for `ms` (default 250), `COMMIT`, pauses 20 ms, again; each round happens with the
//!   fault's probability. Orders of that SKU then meet optimistic conflicts
//!   (`orders_stock_conflicts_total`) or wait for the lock (long `UPDATE`/`BEGIN` spans).
//! * `db.pool_exhaustion`: `connections` (default: all) connections are taken from the pool and
//!   held while the fault lasts, so requests wait for the pool (and fail with 503 after the 5 s
//!   acquire timeout); `db_client_connections{db_client_connection_state="used"}` and
//!   `db_client_connection_wait_time_seconds` show it. The probability does not apply.
//!
//! Both wait on [`Faults::subscribe`] while no such fault is set, let go as soon as it is
//! cleared or expires, and stop on shutdown. Neither makes a span or a metric of its own: they
//! are the "other client" and the "leak" an engineer has to infer from the effects.

use std::time::Duration;

use chaos::{FaultKind, Faults, Hit};
use servicekit::server::CancellationToken;
use sqlx::{AnyConnection, Connection as _};
use tokio::sync::watch;

use crate::db::{Backend, Database};

/// The SKU `db.lock_contention` takes when the fault names none.
pub(crate) const DEFAULT_CONTENDED_SKU: &str = "sku-1";
/// How long each competing transaction holds the row when the fault gives no `ms`.
pub(crate) const DEFAULT_HOLD: Duration = Duration::from_millis(250);
/// The pause between two competing transactions, in which others may get the row.
const PAUSE_BETWEEN_ROUNDS: Duration = Duration::from_millis(20);
/// The wait before trying again after the competing connection failed.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

const CONTEND: &str = "UPDATE inventory SET version = version + 1 WHERE sku = $1";

/// Runs `db.lock_contention` (see the [module docs](self)) until `shutdown` is cancelled.
pub(crate) async fn lock_contention(db: &Database, faults: &Faults, shutdown: &CancellationToken) {
    let mut changes = faults.subscribe();
    let mut rival: Option<AnyConnection> = None;
    while !shutdown.is_cancelled() {
        let Some(active) = faults.find(FaultKind::DbLockContention, |_| true) else {
            // Idle: the competing client goes away until the next fault.
            if let Some(conn) = rival.take() {
                let _ = conn.close().await;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = changes.changed() => continue,
            }
        };
        let spec = active.spec();
        let hold = if spec.ms.is_some() {
            spec.duration()
        } else {
            DEFAULT_HOLD
        };
        let Some(hit) = faults.roll(FaultKind::DbLockContention, |_| true) else {
            // This round is skipped (probability): the row stays free for as long.
            pause(hold, &mut changes, shutdown).await;
            continue;
        };
        let sku = hit
            .spec()
            .target
            .clone()
            .unwrap_or_else(|| DEFAULT_CONTENDED_SKU.to_owned());
        let conn = match rival.as_mut() {
            Some(conn) => conn,
            None => match db.connect_other().await {
                Ok(conn) => rival.insert(conn),
                Err(e) => {
                    tracing::debug!(error = %e, "lock contention: cannot connect");
                    pause(RETRY_AFTER_ERROR, &mut changes, shutdown).await;
                    continue;
                }
            },
        };
        let round = hold_row(db.backend(), conn, &sku, hold, &hit, &mut changes, shutdown).await;
        if let Err(e) = round {
            tracing::debug!(error = %e, "lock contention: round failed");
            // The connection may be broken: open a fresh one next time.
            rival = None;
            pause(RETRY_AFTER_ERROR, &mut changes, shutdown).await;
            continue;
        }
        pause(PAUSE_BETWEEN_ROUNDS, &mut changes, shutdown).await;
    }
    if let Some(conn) = rival {
        let _ = conn.close().await;
    }
}

/// One competing transaction: takes the row of `sku`, holds it for `hold` (less if the faults
/// change or the service stops), commits.
async fn hold_row(
    backend: Backend,
    conn: &mut AnyConnection,
    sku: &str,
    hold: Duration,
    hit: &Hit,
    changes: &mut watch::Receiver<u64>,
    shutdown: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let mut tx = match backend {
        // SQLite locks the database, not the row; IMMEDIATE takes the write lock at BEGIN.
        Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => conn.begin().await?,
    };
    sqlx::query(CONTEND).bind(sku).execute(&mut *tx).await?;
    hit.acted();
    tokio::select! {
        () = tokio::time::sleep(hold) => {}
        _ = changes.changed() => {}
        // Dropping the transaction rolls it back.
        () = shutdown.cancelled() => return Ok(()),
    }
    tx.commit().await
}

/// Waits `duration`, or less if the faults change or the service stops.
async fn pause(
    duration: Duration,
    changes: &mut watch::Receiver<u64>,
    shutdown: &CancellationToken,
) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        _ = changes.changed() => {}
        () = shutdown.cancelled() => {}
    }
}

/// Runs `db.pool_exhaustion` (see the [module docs](self)) until `shutdown` is cancelled.
pub(crate) async fn pool_exhaustion(db: &Database, faults: &Faults, shutdown: &CancellationToken) {
    let mut changes = faults.subscribe();
    let mut held = Vec::new();
    let mut holding_for: Option<String> = None;
    while !shutdown.is_cancelled() {
        let Some(hit) = faults.find(FaultKind::DbPoolExhaustion, |_| true) else {
            if !held.is_empty() {
                tracing::debug!(connections = held.len(), "pool exhaustion: releasing");
            }
            held.clear();
            holding_for = None;
            db.report_pool_usage();
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = changes.changed() => continue,
            }
        };
        if holding_for.as_deref() != Some(hit.id()) {
            // A new fault (or another one in its place): start over with its count.
            held.clear();
            holding_for = Some(hit.id().to_owned());
            hit.acted();
        }
        let max = db.max_connections();
        let wanted = hit.spec().connections.map_or(max, |c| c.min(max)) as usize;
        held.truncate(wanted);
        if held.len() < wanted {
            // Requests hold connections too: take each as it comes free.
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = changes.changed() => continue,
                conn = db.pool().acquire() => {
                    if let Ok(conn) = conn {
                        held.push(conn);
                        db.report_pool_usage();
                    }
                }
            }
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = changes.changed() => {}
        }
    }
    drop(held);
    db.report_pool_usage();
}
