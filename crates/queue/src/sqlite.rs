//! The embedded queue: one SQLite file, shareable by several processes on one machine.
//!
//! One table, `queue_messages`; a message is a row. Its state is carried by three columns:
//! `acked_at_ms` (NULL until acked), `visible_at_ms` (when it may next be delivered; a receive
//! sets it to now + ack wait, which is the lease) and `delivery_count` (incremented by every
//! receive, and also the fencing token of a lease). Dead-lettering rewrites `subject` to the
//! dead-letter subject and keeps the row. Acked rows are kept for [`SQLITE_DEDUP_WINDOW`] so
//! that a late duplicate publish is still ignored, then pruned.
//!
//! Every state change is a single `UPDATE` (atomic in SQLite: the write lock is taken before
//! the rows are read), so two consumers never lease the same row. The database runs in WAL
//! mode (readers never block the writer) with a 5 s busy timeout for writers.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::Notify;

use crate::{QueueConfig, QueueError, ReceivedMessage, duration_ms, now_ms};

/// How long the SQLite backend remembers the `message_id` of an *acked* message for dedup
/// (10 minutes; JetStream's default duplicate window is 2 minutes). Messages not yet acked
/// (waiting, in flight, dead-lettered) are deduplicated for as long as they are stored.
pub const SQLITE_DEDUP_WINDOW: Duration = Duration::from_secs(10 * 60);

/// How long a writer waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest poll interval of `receive`.
const POLL_MIN: Duration = Duration::from_millis(25);
const POLL_MAX: Duration = Duration::from_millis(250);
/// Prune acked rows every this many acks (per handle), and at connect.
const PRUNE_EVERY: u64 = 256;
/// Longest dead-letter reason stored.
const MAX_REASON_CHARS: usize = 2048;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS queue_messages (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id          TEXT    NOT NULL UNIQUE,
    subject             TEXT    NOT NULL,
    payload             BLOB    NOT NULL,
    headers             TEXT    NOT NULL DEFAULT '{}',
    delivery_count      INTEGER NOT NULL DEFAULT 0,
    visible_at_ms       INTEGER NOT NULL,
    created_at_ms       INTEGER NOT NULL,
    acked_at_ms         INTEGER,
    original_subject    TEXT,
    dead_lettered_at_ms INTEGER,
    last_error          TEXT
);
CREATE INDEX IF NOT EXISTS queue_messages_due
    ON queue_messages (subject, visible_at_ms) WHERE acked_at_ms IS NULL;
CREATE INDEX IF NOT EXISTS queue_messages_acked
    ON queue_messages (acked_at_ms) WHERE acked_at_ms IS NOT NULL;
"#;

/// The `SET` clause that moves a row to the dead-letter subject. Binds, in order: the
/// dead-letter subject, now (ms), the reason. Like a new message on that subject, it gets a
/// fresh delivery count; the headers gain `faultline-original-subject`,
/// `faultline-original-message-id`, `faultline-delivery-count` and
/// `faultline-dead-letter-reason` (the same as on NATS). `SET` expressions see the row's old
/// values.
macro_rules! dead_letter_set {
    () => {
        "subject = ?1, original_subject = subject, dead_lettered_at_ms = ?2, \
         last_error = ?3, visible_at_ms = ?2, delivery_count = 0, \
         headers = json_set(CASE WHEN json_valid(headers) THEN headers ELSE '{}' END, \
             '$.\"faultline-original-subject\"', subject, \
             '$.\"faultline-original-message-id\"', message_id, \
             '$.\"faultline-delivery-count\"', CAST(delivery_count AS TEXT), \
             '$.\"faultline-dead-letter-reason\"', ?3)"
    };
}

/// The settle token of a SQLite delivery: the row and the delivery count it was leased with.
pub(crate) struct Lease {
    id: i64,
    delivery_count: i64,
}

pub(crate) struct SqliteBackend {
    pool: SqlitePool,
    /// Wakes `receive` calls of this handle when it publishes (other processes are polled).
    published: Notify,
    acks: AtomicU64,
    /// Messages this handle's `receive` dead-lettered because they were never settled.
    exhausted: AtomicU64,
}

impl SqliteBackend {
    pub(crate) async fn connect(url: &str, display_url: &str) -> Result<Self, QueueError> {
        let connect_error = |reason: String| QueueError::Connect {
            url: display_url.to_owned(),
            reason,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| QueueError::InvalidUrl {
                url: display_url.to_owned(),
                reason: e.to_string(),
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);

        let filename = options.get_filename().to_owned();
        if !filename.as_os_str().to_string_lossy().starts_with("file:")
            && let Some(dir) = filename.parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                connect_error(format!(
                    "cannot create the directory {}: {e}",
                    display_path(dir)
                ))
            })?;
        }

        // Switching a new file to WAL needs an exclusive lock that the busy timeout does not
        // wait for, so several processes starting at once may see SQLITE_BUSY: retry briefly.
        let started = Instant::now();
        let pool = loop {
            let attempt = async {
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options.clone())
                    .await?;
                sqlx::raw_sql(SCHEMA).execute(&pool).await?;
                Ok::<_, sqlx::Error>(pool)
            }
            .await;
            match attempt {
                Ok(pool) => break pool,
                Err(e) if is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(connect_error(format!(
                        "{e} (check that {} is a writable path on a local filesystem and, if it exists, a SQLite database)",
                        display_path(&filename)
                    )));
                }
            }
        };

        let backend = SqliteBackend {
            pool,
            published: Notify::new(),
            acks: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
        };
        backend.prune().await;
        Ok(backend)
    }

    /// Messages [`receive`](Self::receive) dead-lettered because they were never settled.
    pub(crate) fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    pub(crate) async fn ready(&self) -> Result<(), String> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Inserts the message unless its `message_id` is already stored. Returns whether it was
    /// a duplicate.
    pub(crate) async fn publish(
        &self,
        subject: &str,
        message_id: &str,
        payload: &[u8],
        headers: &BTreeMap<String, String>,
    ) -> Result<bool, QueueError> {
        let headers = serde_json::to_string(headers).unwrap_or_else(|_| "{}".to_owned());
        let now = now_ms();
        let result = sqlx::query(
            "INSERT INTO queue_messages \
                 (message_id, subject, payload, headers, delivery_count, visible_at_ms, created_at_ms) \
             VALUES (?, ?, ?, ?, 0, ?, ?) \
             ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(message_id)
        .bind(subject)
        .bind(payload)
        .bind(headers)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| QueueError::Publish {
            subject: subject.to_owned(),
            message_id: message_id.to_owned(),
            error_type: if is_busy(&e) {
                "database_busy"
            } else {
                "_OTHER"
            },
            reason: e.to_string(),
        })?;
        let inserted = result.rows_affected() > 0;
        if inserted {
            self.published.notify_waiters();
        }
        Ok(!inserted)
    }

    pub(crate) async fn receive(
        &self,
        config: &QueueConfig,
        dead_letter_subject: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<crate::Delivery>, String> {
        let deadline = Instant::now() + wait;
        let mut poll = POLL_MIN;
        loop {
            let published = self.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();

            let now = now_ms();
            let next_due: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(visible_at_ms) FROM queue_messages \
                 WHERE subject = ? AND acked_at_ms IS NULL",
            )
            .bind(&config.subject)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| e.to_string())?;

            if next_due.is_some_and(|t| t <= now) {
                self.dead_letter_exhausted(config, dead_letter_subject, now)
                    .await?;
                let leased = self.lease(config, max, now).await?;
                if !leased.is_empty() {
                    return Ok(leased);
                }
            }

            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(Vec::new());
            }
            let mut sleep = poll.min(remaining);
            if let Some(due) = next_due.filter(|&t| t > now) {
                sleep = sleep.min(Duration::from_millis((due - now) as u64));
            }
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = published => {}
            }
            poll = (poll * 2).min(POLL_MAX);
        }
    }

    /// Leases up to `max` due messages for `ack_wait`.
    async fn lease(
        &self,
        config: &QueueConfig,
        max: usize,
        now: i64,
    ) -> Result<Vec<crate::Delivery>, String> {
        let rows = sqlx::query(
            "UPDATE queue_messages \
             SET delivery_count = delivery_count + 1, visible_at_ms = ? \
             WHERE id IN ( \
                 SELECT id FROM queue_messages \
                 WHERE subject = ? AND acked_at_ms IS NULL AND visible_at_ms <= ? \
                   AND delivery_count < ? \
                 ORDER BY id LIMIT ?) \
             RETURNING id, message_id, subject, payload, headers, delivery_count",
        )
        .bind(now.saturating_add(duration_ms(config.ack_wait)))
        .bind(&config.subject)
        .bind(now)
        .bind(i64::from(config.max_deliveries))
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| e.to_string())?;

        let mut deliveries = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get("id").map_err(|e| e.to_string())?;
            let delivery_count: i64 = row.try_get("delivery_count").map_err(|e| e.to_string())?;
            let message_id: String = row.try_get("message_id").map_err(|e| e.to_string())?;
            let headers_json: String = row.try_get("headers").map_err(|e| e.to_string())?;
            let headers = serde_json::from_str(&headers_json).unwrap_or_else(|e| {
                tracing::warn!(target: "queue", message_id, error = %e, "message headers are not a JSON object; ignoring them");
                BTreeMap::new()
            });
            deliveries.push(crate::Delivery {
                message: ReceivedMessage {
                    message_id,
                    subject: row.try_get("subject").map_err(|e| e.to_string())?,
                    payload: row.try_get("payload").map_err(|e| e.to_string())?,
                    headers,
                    delivery_count: u32::try_from(delivery_count).unwrap_or(u32::MAX),
                },
                token: crate::Token::Sqlite(Lease { id, delivery_count }),
            });
        }
        // RETURNING order is unspecified: hand them out oldest first.
        deliveries.sort_by_key(|d| match &d.token {
            crate::Token::Sqlite(lease) => lease.id,
            crate::Token::Nats(_) => 0,
        });
        Ok(deliveries)
    }

    /// Dead-letters due messages that were already delivered `max_deliveries` times without
    /// being settled (their consumer crashed or stalled every time).
    async fn dead_letter_exhausted(
        &self,
        config: &QueueConfig,
        dead_letter_subject: &str,
        now: i64,
    ) -> Result<(), String> {
        let reason = format!(
            "delivered {} times without being acknowledged (each lease of {:?} expired)",
            config.max_deliveries, config.ack_wait
        );
        let rows = sqlx::query(concat!(
            "UPDATE queue_messages SET ",
            dead_letter_set!(),
            " WHERE subject = ?4 AND acked_at_ms IS NULL AND visible_at_ms <= ?2 \
               AND delivery_count >= ?5 \
             RETURNING message_id",
        ))
        .bind(dead_letter_subject)
        .bind(now)
        .bind(&reason)
        .bind(&config.subject)
        .bind(i64::from(config.max_deliveries))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        self.exhausted
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        for row in rows {
            let message_id: String = row.try_get("message_id").unwrap_or_default();
            tracing::error!(
                target: "queue",
                message_id,
                delivery_count = config.max_deliveries,
                dead_letter_subject,
                "message dead-lettered: its deliveries were never settled"
            );
        }
        Ok(())
    }

    /// Acks the message, whatever its lease: it was processed, so it must not be delivered
    /// again (even if it was meanwhile re-leased or dead-lettered).
    pub(crate) async fn ack(&self, lease: &Lease) -> Result<(), String> {
        sqlx::query(
            "UPDATE queue_messages SET acked_at_ms = ? WHERE id = ? AND acked_at_ms IS NULL",
        )
        .bind(now_ms())
        .bind(lease.id)
        .execute(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        if self.acks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune().await;
        }
        Ok(())
    }

    /// Makes the message visible again after `delay`. `Ok(false)` if the lease was lost.
    pub(crate) async fn nack(
        &self,
        lease: &Lease,
        subject: &str,
        delay: Duration,
    ) -> Result<bool, String> {
        let result = sqlx::query(
            "UPDATE queue_messages SET visible_at_ms = ? \
             WHERE id = ? AND delivery_count = ? AND subject = ? AND acked_at_ms IS NULL",
        )
        .bind(now_ms().saturating_add(duration_ms(delay)))
        .bind(lease.id)
        .bind(lease.delivery_count)
        .bind(subject)
        .execute(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        Ok(result.rows_affected() > 0)
    }

    /// Moves the message to `dead_letter_subject`. `Ok(false)` if the lease was lost.
    pub(crate) async fn dead_letter(
        &self,
        lease: &Lease,
        subject: &str,
        dead_letter_subject: &str,
        reason: &str,
    ) -> Result<bool, String> {
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        let now = now_ms();
        let result = sqlx::query(concat!(
            "UPDATE queue_messages SET ",
            dead_letter_set!(),
            " WHERE id = ?4 AND delivery_count = ?5 AND subject = ?6 AND acked_at_ms IS NULL",
        ))
        .bind(dead_letter_subject)
        .bind(now)
        .bind(reason)
        .bind(lease.id)
        .bind(lease.delivery_count)
        .bind(subject)
        .execute(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        Ok(result.rows_affected() > 0)
    }

    /// Messages on `subject` not yet acked.
    pub(crate) async fn count(&self, subject: &str) -> Result<u64, String> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM queue_messages WHERE subject = ? AND acked_at_ms IS NULL",
        )
        .bind(subject)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes acked rows older than the dedup window. Best effort.
    async fn prune(&self) {
        let cutoff = now_ms().saturating_sub(duration_ms(SQLITE_DEDUP_WINDOW));
        if let Err(e) = sqlx::query(
            "DELETE FROM queue_messages WHERE acked_at_ms IS NOT NULL AND acked_at_ms < ?",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await
        {
            tracing::debug!(target: "queue", error = %e, "pruning acked queue messages failed; will retry later");
        }
    }
}

/// Whether `e` is SQLITE_BUSY or SQLITE_LOCKED (any extended code).
fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

fn display_path(path: &Path) -> String {
    path.display().to_string()
}
