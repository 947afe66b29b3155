//! Durable publish/consume for Faultline: an embedded SQLite queue and NATS JetStream behind one
//! API, with OpenTelemetry PRODUCER/CONSUMER spans and messaging metrics.
//!
//! The backend is chosen by URL ([`QueueConfig::url`]), never by code:
//!
//! | URL | backend | notes |
//! |---|---|---|
//! | `sqlite://PATH` | embedded queue in one SQLite file (WAL) | several processes on one machine may share the file |
//! | `nats://HOST:PORT` | NATS JetStream | stream + durable pull consumer, created idempotently |
//!
//! Both give the same semantics:
//!
//! * **at-least-once delivery**: a [`Delivery`] received with [`Queue::receive`] is *leased* for
//!   [`QueueConfig::ack_wait`]; if it is not settled in time (the consumer crashed or stalled) it
//!   becomes visible again and is redelivered with a higher
//!   [`delivery_count`](ReceivedMessage::delivery_count). Handlers must be idempotent.
//! * **dedup on publish**: publishing the same `message_id` twice stores one message
//!   (JetStream `Nats-Msg-Id` within the stream's duplicate window, 2 minutes by default;
//!   SQLite: while the message is stored, plus [`SQLITE_DEDUP_WINDOW`] after it is acked).
//! * **retries and dead letters**: [`Queue::process`] runs a handler and settles the delivery:
//!   `Ok` acks, [`ProcessError::Retry`] redelivers after a delay until
//!   [`QueueConfig::max_deliveries`] is reached, [`ProcessError::Fatal`] dead-letters at once.
//!   Dead letters are kept on [`dead_letter_subject`]`(subject)` (`"{subject}.dlq"`), readable but
//!   not consumed. A message delivered `max_deliveries` times without ever being settled (a
//!   consumer that crashes on it) is dead-lettered too, instead of being delivered again.
//!
//! # Telemetry
//!
//! Spans follow the OpenTelemetry [messaging span conventions]:
//!
//! * [`Queue::publish`] opens a PRODUCER span `"publish {subject}"` whose parent is the context
//!   carried in the caller's W3C header map (for example an outbox row), and injects the PRODUCER
//!   span's context (`traceparent`, `tracestate`, `baggage`) into the message headers.
//! * [`Queue::process`] opens a CONSUMER span `"process {subject}"` that is a child of the PRODUCER
//!   span (same trace) and also carries a span link to it (the *creation context*). The handler
//!   runs inside it, so its logs and spans belong to the trace.
//!
//! Attributes: `messaging.system` ([`Queue::system`]), `messaging.destination.name`,
//! `messaging.operation.type` (`send` / `process`), `messaging.operation.name` (`publish` /
//! `process`), `messaging.message.id`, `messaging.message.body.size` (bytes), on the consumer
//! `messaging.consumer.group.name` ([`QueueConfig::consumer`]) plus the custom
//! `faultline.delivery_count` and `faultline.outcome` (`acked`, `will_retry`, `dead_lettered`).
//! Failures set `otel.status_code=ERROR` and `error.type`.
//!
//! Metrics (Prometheus spelling of the [messaging metric conventions]), every series with the
//! labels `messaging_system` and `messaging_destination_name`:
//!
//! * [`SENT_MESSAGES`] `messaging_client_sent_messages_total` (counter, messages), plus
//!   `error_type` (`""` on success);
//! * [`CONSUMED_MESSAGES`] `messaging_client_consumed_messages_total` (counter, messages): one per
//!   delivery handed to [`Queue::process`];
//! * [`PROCESS_DURATION`] `messaging_process_duration_seconds` (histogram, seconds), plus
//!   `error_type` (`""` on success, `retry` / `fatal` for handler errors, or a
//!   [`QueueError::error_type`] when settling failed).
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), queue::QueueError> {
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use queue::{ProcessError, Queue, QueueConfig};
//!
//! let queue = Queue::connect(QueueConfig::new("sqlite://.faultline/queue.db")).await?;
//! queue.publish("orders.placed", "order-1", b"{}", &BTreeMap::new()).await?;
//!
//! for delivery in queue.receive(10, Duration::from_secs(1)).await? {
//!     let outcome = queue
//!         .process(delivery, Duration::from_secs(1), |message| async move {
//!             if message.payload.is_empty() {
//!                 return Err(ProcessError::Fatal("empty payload".into()));
//!             }
//!             Ok(())
//!         })
//!         .await?;
//!     println!("{outcome:?}");
//! }
//! # Ok(()) }
//! ```
//!
//! [messaging span conventions]: https://opentelemetry.io/docs/specs/semconv/messaging/messaging-spans/
//! [messaging metric conventions]: https://opentelemetry.io/docs/specs/semconv/messaging/messaging-metrics/

#![warn(missing_docs)]

mod nats;
mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use opentelemetry::trace::TraceContextExt;
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use sqlite::SQLITE_DEDUP_WINDOW;

/// `messaging.client.sent.messages` (counter, messages) with `messaging_system`,
/// `messaging_destination_name` and `error_type` (`""` on success).
pub const SENT_MESSAGES: &str = "messaging_client_sent_messages_total";
/// `messaging.client.consumed.messages` (counter, messages) with `messaging_system` and
/// `messaging_destination_name`.
pub const CONSUMED_MESSAGES: &str = "messaging_client_consumed_messages_total";
/// `messaging.process.duration` (histogram, seconds) with `messaging_system`,
/// `messaging_destination_name` and `error_type` (`""` on success).
pub const PROCESS_DURATION: &str = telemetry::metrics::MESSAGING_PROCESS_DURATION;

/// Where a [`Queue`] lives and how its consumer behaves. Build it with [`QueueConfig::new`] and
/// adjust the fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// `sqlite://PATH` (embedded queue; the file and its directory are created if missing) or
    /// `nats://HOST:PORT` (NATS JetStream). Credentials in the URL are never echoed in errors.
    pub url: String,
    /// JetStream stream name. Default `ORDERS`. The stream is created (file storage, limits
    /// retention) with subjects `["{first token of subject}.>"]`, e.g. `orders.>`, so the
    /// dead-letter subject stays inside it. Not used by the SQLite backend.
    pub stream: String,
    /// Durable consumer name (JetStream durable pull consumer; `messaging.consumer.group.name`).
    /// Default `fulfillment`. Every [`Queue`] with the same name shares the work.
    pub consumer: String,
    /// The subject [`Queue::receive`] consumes. Default `orders.placed`. Must be a literal
    /// subject (dot-separated tokens, no `*` or `>` wildcards, no whitespace).
    pub subject: String,
    /// After this many failed deliveries a message is dead-lettered. Default 5, minimum 1.
    pub max_deliveries: u32,
    /// Visibility timeout: a received delivery that is not settled within this time becomes
    /// visible again and is redelivered. Default 30 s. SQLite keeps millisecond precision.
    pub ack_wait: Duration,
}

impl QueueConfig {
    /// The defaults for `url`: stream `ORDERS`, consumer `fulfillment`, subject
    /// `orders.placed`, 5 deliveries, 30 s ack wait.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: "ORDERS".to_owned(),
            consumer: "fulfillment".to_owned(),
            subject: "orders.placed".to_owned(),
            max_deliveries: 5,
            ack_wait: Duration::from_secs(30),
        }
    }

    fn validate(&self) -> Result<(), QueueError> {
        let invalid = |reason: String| Err(QueueError::InvalidConfig(reason));
        if let Err(reason) = validate_subject(&self.subject) {
            return invalid(format!("subject {:?}: {reason}", self.subject));
        }
        if let Err(reason) = validate_name(&self.stream) {
            return invalid(format!("stream {:?}: {reason}", self.stream));
        }
        if let Err(reason) = validate_name(&self.consumer) {
            return invalid(format!("consumer {:?}: {reason}", self.consumer));
        }
        if self.max_deliveries == 0 {
            return invalid("max_deliveries must be at least 1".to_owned());
        }
        if self.ack_wait < Duration::from_millis(1) {
            return invalid("ack_wait must be at least 1 ms".to_owned());
        }
        Ok(())
    }
}

/// The dead-letter subject of `subject`: `"{subject}.dlq"` (`orders.placed` →
/// `orders.placed.dlq`).
pub fn dead_letter_subject(subject: &str) -> String {
    format!("{subject}.dlq")
}

/// Why a [`Queue`] operation failed. Every message names what failed and, where it can, what to
/// do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The URL is neither `sqlite://…` nor `nats://…`.
    #[error(
        "invalid queue URL {url:?}: {reason} (expected sqlite://PATH for the embedded queue or nats://HOST:PORT for NATS JetStream)"
    )]
    InvalidUrl {
        /// The URL, credentials redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A [`QueueConfig`] field or a subject passed to [`Queue::publish`] is invalid.
    #[error("invalid queue configuration: {0}")]
    InvalidConfig(String),
    /// The backend could not be reached (NATS down, SQLite file not openable).
    #[error("cannot connect to the queue at {url}: {reason}")]
    Connect {
        /// The URL, credentials redacted.
        url: String,
        /// The cause, with a hint.
        reason: String,
    },
    /// Connected, but the tables / stream / consumer could not be created or checked.
    #[error("cannot set up the queue at {url}: {reason}")]
    Setup {
        /// The URL, credentials redacted.
        url: String,
        /// The cause, with a hint.
        reason: String,
    },
    /// A message could not be stored. Nothing was published; publishing again with the same
    /// `message_id` is safe.
    #[error("cannot publish message {message_id:?} to {subject}: {reason}")]
    Publish {
        /// The subject published to.
        subject: String,
        /// The message id.
        message_id: String,
        /// The cause.
        reason: String,
        /// Low-cardinality class (see [`QueueError::error_type`]).
        error_type: &'static str,
    },
    /// Receiving failed (connection lost, database locked longer than the busy timeout).
    #[error("cannot receive from {subject}: {reason}")]
    Receive {
        /// The subject consumed.
        subject: String,
        /// The cause.
        reason: String,
    },
    /// Acking, nacking or dead-lettering failed. The delivery was not settled, so it will be
    /// redelivered after [`QueueConfig::ack_wait`].
    #[error(
        "cannot {action} message {message_id:?} on {subject}: {reason}; it will be redelivered after the ack wait"
    )]
    Settle {
        /// `ack`, `nack` or `dead-letter`.
        action: &'static str,
        /// The subject consumed.
        subject: String,
        /// The message id.
        message_id: String,
        /// The cause.
        reason: String,
    },
    /// (SQLite) The delivery's lease ran out ([`QueueConfig::ack_wait`]) and the message was
    /// leased again or dead-lettered before this consumer tried to nack or dead-letter it; the
    /// newer state was kept. Raise `ack_wait` above the longest processing time.
    #[error(
        "the lease on message {message_id:?} ({subject}) expired before it was settled (processing took longer than the ack wait of {ack_wait:?}); it was left to its newer delivery"
    )]
    LeaseExpired {
        /// The subject consumed.
        subject: String,
        /// The message id.
        message_id: String,
        /// The configured ack wait.
        ack_wait: Duration,
    },
    /// A status query ([`Queue::ready`], [`Queue::pending`], [`Queue::dead_letters`]) failed.
    #[error("queue {operation} check failed at {url}: {reason}")]
    Unavailable {
        /// `ready`, `pending` or `dead_letters`.
        operation: &'static str,
        /// The URL, credentials redacted.
        url: String,
        /// The cause.
        reason: String,
    },
    /// A [`Delivery`] was given to a [`Queue`] of another backend than the one it came from.
    #[error("this delivery was received from a {from} queue and cannot be settled by a {to} queue")]
    ForeignDelivery {
        /// The backend the delivery came from.
        from: &'static str,
        /// The backend asked to settle it.
        to: &'static str,
    },
}

impl QueueError {
    /// A short, low-cardinality class of the error for `error.type` attributes and
    /// `error_type` metric labels: `invalid_url`, `invalid_config`, `connect`, `setup`,
    /// `receive`, `settle`, `lease_expired`, `unavailable`, `foreign_delivery`, or for publish
    /// failures `timeout`, `stream_not_found`, `payload_too_large`, `database_busy`,
    /// `connection_closed`, `_OTHER`.
    pub fn error_type(&self) -> &'static str {
        match self {
            QueueError::InvalidUrl { .. } => "invalid_url",
            QueueError::InvalidConfig(_) => "invalid_config",
            QueueError::Connect { .. } => "connect",
            QueueError::Setup { .. } => "setup",
            QueueError::Publish { error_type, .. } => error_type,
            QueueError::Receive { .. } => "receive",
            QueueError::Settle { .. } => "settle",
            QueueError::LeaseExpired { .. } => "lease_expired",
            QueueError::Unavailable { .. } => "unavailable",
            QueueError::ForeignDelivery { .. } => "foreign_delivery",
        }
    }
}

/// What a [`Queue::process`] handler reports when it fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// A transient failure (a dependency is down, a timeout): redeliver after the retry delay,
    /// or dead-letter if the message has been delivered [`QueueConfig::max_deliveries`] times.
    #[error("retryable processing error: {0}")]
    Retry(String),
    /// The message can never be processed (malformed, refers to nothing): dead-letter it now.
    #[error("fatal processing error: {0}")]
    Fatal(String),
}

impl ProcessError {
    fn error_type(&self) -> &'static str {
        match self {
            ProcessError::Retry(_) => "retry",
            ProcessError::Fatal(_) => "fatal",
        }
    }

    fn reason(&self) -> &str {
        match self {
            ProcessError::Retry(r) | ProcessError::Fatal(r) => r,
        }
    }
}

/// How [`Queue::process`] settled a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The handler succeeded; the message is acknowledged and will not be delivered again.
    Acked,
    /// The handler asked for a retry; the message is redelivered after the retry delay.
    WillRetry,
    /// The message was moved to the dead-letter subject ([`dead_letter_subject`]).
    DeadLettered,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Acked => "acked",
            Outcome::WillRetry => "will_retry",
            Outcome::DeadLettered => "dead_lettered",
        }
    }
}

/// A message as handed to a [`Queue::process`] handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The id it was published with (the dedup key). On NATS, a message published without
    /// `Nats-Msg-Id` by another client gets `"{stream}:{stream sequence}"`.
    pub message_id: String,
    /// The subject it was published to.
    pub subject: String,
    /// The body, as published.
    pub payload: Vec<u8>,
    /// The message headers with lowercase names: the W3C `traceparent`, `tracestate` and
    /// `baggage` of the PRODUCER span, plus any `faultline-*` headers. NATS-internal `nats-*`
    /// headers are left out.
    pub headers: BTreeMap<String, String>,
    /// 1 on the first delivery, 2 on the first redelivery, and so on.
    pub delivery_count: u32,
}

/// One received message and the token needed to settle it. Pass it to [`Queue::process`]. A
/// delivery dropped without being processed is redelivered after [`QueueConfig::ack_wait`].
pub struct Delivery {
    message: ReceivedMessage,
    token: Token,
}

enum Token {
    Sqlite(sqlite::Lease),
    Nats(Box<async_nats::jetstream::Message>),
}

impl Token {
    fn backend(&self) -> &'static str {
        match self {
            Token::Sqlite(_) => SQLITE_SYSTEM,
            Token::Nats(_) => NATS_SYSTEM,
        }
    }
}

impl Delivery {
    /// The message (id, subject, payload, headers, delivery count).
    pub fn message(&self) -> &ReceivedMessage {
        &self.message
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("backend", &self.token.backend())
            .finish()
    }
}

const SQLITE_SYSTEM: &str = "sqlite";
const NATS_SYSTEM: &str = "nats";

/// A connection to the queue. Cheap to clone; clones share the connection (pool).
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    config: QueueConfig,
    /// The URL with credentials redacted, for errors.
    display_url: String,
    dead_letter_subject: String,
    backend: Backend,
}

enum Backend {
    Sqlite(sqlite::SqliteBackend),
    Nats(Box<nats::NatsBackend>),
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("system", &self.system())
            .field("url", &self.inner.display_url)
            .field("stream", &self.inner.config.stream)
            .field("consumer", &self.inner.config.consumer)
            .field("subject", &self.inner.config.subject)
            .finish()
    }
}

impl Queue {
    /// Connects to the queue named by `config.url` and creates what it needs, idempotently
    /// (safe to call from several processes at once):
    ///
    /// * SQLite: the file (and its directory) if missing, WAL journal mode, a 5 s busy timeout,
    ///   the `queue_messages` table and indexes.
    /// * NATS: the JetStream stream `config.stream` (if missing; subjects
    ///   `["{first token of subject}.>"]`, file storage) and the durable pull consumer
    ///   `config.consumer` filtered on `config.subject` (explicit ack, `ack_wait`, `max_deliver`
    ///   a little above `max_deliveries` so that this crate dead-letters, not the server). An
    ///   existing consumer is updated to this configuration.
    ///
    /// # Errors
    /// [`QueueError::InvalidUrl`] / [`QueueError::InvalidConfig`] for a bad configuration,
    /// [`QueueError::Connect`] when the server or file cannot be reached (the message names the
    /// URL), [`QueueError::Setup`] when JetStream is disabled, the stream exists without the
    /// needed subjects, or the schema cannot be created.
    pub async fn connect(config: QueueConfig) -> Result<Queue, QueueError> {
        describe_metrics();
        config.validate()?;
        let display_url = redact_url(&config.url);
        let backend = if strip_scheme(&config.url, "sqlite:").is_some() {
            Backend::Sqlite(sqlite::SqliteBackend::connect(&config.url, &display_url).await?)
        } else if strip_scheme(&config.url, "nats://").is_some() {
            Backend::Nats(Box::new(
                nats::NatsBackend::connect(&config, &display_url).await?,
            ))
        } else {
            return Err(QueueError::InvalidUrl {
                url: display_url,
                reason: "unknown scheme".to_owned(),
            });
        };
        let dead_letter_subject = dead_letter_subject(&config.subject);
        Ok(Queue {
            inner: Arc::new(Inner {
                config,
                display_url,
                dead_letter_subject,
                backend,
            }),
        })
    }

    /// The `messaging.system` value: `"sqlite"` (a custom value for the embedded queue) or
    /// `"nats"`.
    pub fn system(&self) -> &'static str {
        match self.inner.backend {
            Backend::Sqlite(_) => SQLITE_SYSTEM,
            Backend::Nats(_) => NATS_SYSTEM,
        }
    }

    /// The configuration this queue was connected with.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// How many messages [`receive`](Self::receive) calls on this handle (and its clones) have
    /// dead-lettered because they had been delivered [`QueueConfig::max_deliveries`] times
    /// without ever being settled (their consumer crashed or stalled each time), since
    /// [`connect`](Self::connect). Dead letters decided by [`process`](Self::process) are not
    /// included (the caller sees those as [`Outcome::DeadLettered`]).
    pub fn unsettled_dead_letters(&self) -> u64 {
        match &self.inner.backend {
            Backend::Sqlite(b) => b.exhausted(),
            Backend::Nats(b) => b.exhausted(),
        }
    }

    /// A cheap health check for `/readyz`: SQLite runs `SELECT 1`; NATS checks the connection
    /// is up and reads the consumer's info (one round trip, at most 2 s).
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] saying what is wrong.
    pub async fn ready(&self) -> Result<(), QueueError> {
        let result = match &self.inner.backend {
            Backend::Sqlite(b) => b.ready().await,
            Backend::Nats(b) => b.ready().await,
        };
        result.map_err(|reason| self.unavailable("ready", reason))
    }

    /// Publishes one message to `subject`.
    ///
    /// Opens a PRODUCER span `"publish {subject}"` whose parent is the context carried in
    /// `parent_headers` (a W3C map as written by `telemetry::propagation::inject_map`, e.g. from
    /// an outbox row); when that map holds no valid `traceparent` the span is a child of the
    /// current span instead. The PRODUCER span's context is injected into the message headers
    /// (if the span is not recorded, for instance with tracing off, the parent context is passed
    /// through unchanged so the trace still continues).
    ///
    /// Deduplicates on `message_id`: publishing the same id again (a relay retrying after a
    /// crash) stores nothing new and returns `Ok` (JetStream `Nats-Msg-Id`; SQLite unique
    /// constraint, see [`SQLITE_DEDUP_WINDOW`]).
    ///
    /// Records [`SENT_MESSAGES`] with `error_type` `""` or the failure's class.
    ///
    /// # Errors
    /// [`QueueError::InvalidConfig`] for an invalid subject (empty token, wildcard, whitespace)
    /// or empty `message_id`; [`QueueError::Publish`] when the message could not be stored (on
    /// NATS: no stream covers the subject, no ack within the timeout, payload too large).
    pub async fn publish(
        &self,
        subject: &str,
        message_id: &str,
        payload: &[u8],
        parent_headers: &BTreeMap<String, String>,
    ) -> Result<(), QueueError> {
        self.publish_or_refuse(subject, message_id, payload, parent_headers, None)
            .await
    }

    /// For fault injection: a publish that the broker refuses with `refusal` (built as the
    /// backend would build it, e.g. SQLite's "database is locked"). Nothing is stored, and the
    /// telemetry is exactly that of a real refusal through [`publish`](Self::publish): the
    /// PRODUCER span in the caller's trace, ending with status Error and the refusal's
    /// `error.type`, and [`SENT_MESSAGES`] with that `error_type`. `within` runs inside the
    /// PRODUCER span (to mark it, say).
    ///
    /// # Errors
    /// Always: `refusal`.
    pub async fn publish_refused(
        &self,
        subject: &str,
        message_id: &str,
        payload: &[u8],
        parent_headers: &BTreeMap<String, String>,
        refusal: QueueError,
        within: impl FnOnce() + Send,
    ) -> Result<(), QueueError> {
        self.publish_or_refuse(
            subject,
            message_id,
            payload,
            parent_headers,
            Some((refusal, Box::new(within))),
        )
        .await
    }

    async fn publish_or_refuse(
        &self,
        subject: &str,
        message_id: &str,
        payload: &[u8],
        parent_headers: &BTreeMap<String, String>,
        refusal: Option<(QueueError, Box<dyn FnOnce() + Send + '_>)>,
    ) -> Result<(), QueueError> {
        let system = self.system();
        let name = format!("publish {subject}");
        let span = tracing::info_span!(
            target: "queue",
            "publish",
            otel.name = name.as_str(),
            otel.kind = "producer",
            messaging.system = system,
            messaging.destination.name = subject,
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            messaging.message.id = message_id,
            messaging.message.body.size = payload.len() as i64,
            faultline.duplicate = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
            error.type = Empty,
        );
        let parent = telemetry::propagation::extract_map(parent_headers);
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent.clone());
        }
        let span_cx = span.context();
        let cx = if span_cx.span().span_context().is_valid() {
            span_cx
        } else {
            parent
        };

        let result = async {
            if let Some((refusal, within)) = refusal {
                within();
                return Err(refusal);
            }
            if let Err(reason) = validate_subject(subject) {
                return Err(QueueError::InvalidConfig(format!(
                    "cannot publish to subject {subject:?}: {reason}"
                )));
            }
            if message_id.is_empty() {
                return Err(QueueError::InvalidConfig(
                    "message_id must not be empty (it is the dedup key)".to_owned(),
                ));
            }
            let duplicate = match &self.inner.backend {
                Backend::Sqlite(b) => {
                    let headers = telemetry::propagation::inject_map(&cx);
                    b.publish(subject, message_id, payload, &headers).await?
                }
                Backend::Nats(b) => {
                    let mut headers = async_nats::HeaderMap::new();
                    telemetry::propagation::inject_nats(&cx, &mut headers);
                    b.publish(subject, message_id, payload, headers).await?
                }
            };
            Span::current().record("faultline.duplicate", duplicate);
            if duplicate {
                tracing::debug!(target: "queue", message_id, subject, "duplicate publish ignored");
            }
            Ok(())
        }
        .instrument(span.clone())
        .await;

        let error_type = match &result {
            Ok(()) => "",
            Err(e) => {
                record_error(&span, e.error_type(), &e.to_string());
                e.error_type()
            }
        };
        metrics::counter!(
            SENT_MESSAGES,
            vec![
                metrics::Label::from_static_parts("messaging_system", system),
                metrics::Label::new("messaging_destination_name", subject.to_owned()),
                metrics::Label::from_static_parts("error_type", error_type),
            ]
        )
        .increment(1);
        result
    }

    /// Receives up to `max` deliveries of [`QueueConfig::subject`], waiting at most `wait` for
    /// the first one (then returning whatever else is immediately available). Returns an empty
    /// vector when nothing arrived in time or `max` is 0. Each delivery is leased for
    /// [`QueueConfig::ack_wait`]: settle it with [`Queue::process`] before then, or it is
    /// delivered again.
    ///
    /// The SQLite backend polls the file (every 25 ms, backing off to 250 ms, waking at once on
    /// a publish through the same [`Queue`]); NATS waits on a pull request.
    ///
    /// Messages already delivered [`QueueConfig::max_deliveries`] times without being settled
    /// are dead-lettered here instead of being returned.
    ///
    /// Cancelling the returned future (e.g. in a `select!` at shutdown) loses nothing, but a
    /// message leased at that instant stays invisible until its ack wait runs out.
    ///
    /// # Errors
    /// [`QueueError::Receive`] when the backend fails.
    pub async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let config = &self.inner.config;
        let deliveries = match &self.inner.backend {
            Backend::Sqlite(b) => {
                b.receive(config, &self.inner.dead_letter_subject, max, wait)
                    .await
            }
            Backend::Nats(b) => {
                b.receive(config, &self.inner.dead_letter_subject, max, wait)
                    .await
            }
        };
        deliveries.map_err(|reason| QueueError::Receive {
            subject: config.subject.clone(),
            reason,
        })
    }

    /// Runs `handler` for one delivery and settles it.
    ///
    /// The handler runs inside a CONSUMER span `"process {subject}"` whose parent is the context
    /// in the message headers (the PRODUCER span, so processing is part of the producer's
    /// trace) and which links to that same creation context; the handler future is
    /// instrumented with the span, so its logs and child spans belong to it. Records
    /// [`CONSUMED_MESSAGES`] and [`PROCESS_DURATION`] (handler plus settlement, seconds).
    ///
    /// Settlement:
    /// * `Ok(())` → ack → [`Outcome::Acked`];
    /// * `Err(ProcessError::Retry)` → if `delivery_count >= max_deliveries`, dead-letter →
    ///   [`Outcome::DeadLettered`]; otherwise nack so that it is redelivered after
    ///   `retry_delay` → [`Outcome::WillRetry`];
    /// * `Err(ProcessError::Fatal)` → dead-letter → [`Outcome::DeadLettered`].
    ///
    /// If the handler panics the delivery is not settled and is redelivered after
    /// [`QueueConfig::ack_wait`] (and dead-lettered once it has been delivered
    /// `max_deliveries` times).
    ///
    /// # Errors
    /// [`QueueError::Settle`] when the ack/nack/dead-letter could not be written (the message is
    /// then redelivered after the ack wait), [`QueueError::LeaseExpired`] (SQLite) when the
    /// lease ran out and another delivery took over, [`QueueError::ForeignDelivery`] for a
    /// delivery from another backend.
    pub async fn process<F, Fut>(
        &self,
        delivery: Delivery,
        retry_delay: Duration,
        handler: F,
    ) -> Result<Outcome, QueueError>
    where
        F: FnOnce(ReceivedMessage) -> Fut,
        Fut: Future<Output = Result<(), ProcessError>>,
    {
        let start = Instant::now();
        let system = self.system();
        let Delivery { message, token } = delivery;
        let name = format!("process {}", message.subject);
        let span = tracing::info_span!(
            target: "queue",
            "process",
            otel.name = name.as_str(),
            otel.kind = "consumer",
            messaging.system = system,
            messaging.destination.name = message.subject.as_str(),
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.message.id = message.message_id.as_str(),
            messaging.message.body.size = message.payload.len() as i64,
            messaging.consumer.group.name = self.inner.config.consumer.as_str(),
            faultline.delivery_count = i64::from(message.delivery_count),
            faultline.outcome = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
            error.type = Empty,
        );
        let creation = telemetry::propagation::extract_map(&message.headers);
        let creation_span_context = creation.span().span_context().clone();
        if creation_span_context.is_valid() {
            let _ = span.set_parent(creation);
            span.add_link(creation_span_context);
        }

        let subject = message.subject.clone();
        let result = handler(message.clone()).instrument(span.clone()).await;
        let settled = self
            .settle(&message, token, retry_delay, &result)
            .instrument(span.clone())
            .await;

        let error_type = match (&result, &settled) {
            (_, Err(e)) => {
                record_error(&span, e.error_type(), &e.to_string());
                e.error_type()
            }
            (Err(e), Ok(_)) => {
                record_error(&span, e.error_type(), e.reason());
                e.error_type()
            }
            (Ok(()), Ok(_)) => "",
        };
        if let Ok(outcome) = &settled {
            span.record("faultline.outcome", outcome.as_str());
        }

        let destination = metrics::Label::new("messaging_destination_name", subject);
        let system_label = metrics::Label::from_static_parts("messaging_system", system);
        metrics::counter!(
            CONSUMED_MESSAGES,
            vec![system_label.clone(), destination.clone()]
        )
        .increment(1);
        metrics::histogram!(
            PROCESS_DURATION,
            vec![
                system_label,
                destination,
                metrics::Label::from_static_parts("error_type", error_type),
            ]
        )
        .record(start.elapsed().as_secs_f64());
        settled
    }

    /// Acks, nacks or dead-letters according to the handler's result; runs inside the
    /// CONSUMER span.
    async fn settle(
        &self,
        message: &ReceivedMessage,
        token: Token,
        retry_delay: Duration,
        result: &Result<(), ProcessError>,
    ) -> Result<Outcome, QueueError> {
        let config = &self.inner.config;
        let dlq = self.inner.dead_letter_subject.as_str();
        let (outcome, reason) = match result {
            Ok(()) => (Outcome::Acked, None),
            Err(e @ ProcessError::Retry(_)) if message.delivery_count >= config.max_deliveries => {
                (Outcome::DeadLettered, Some(e))
            }
            Err(ProcessError::Retry(_)) => (Outcome::WillRetry, None),
            Err(e @ ProcessError::Fatal(_)) => (Outcome::DeadLettered, Some(e)),
        };
        let action = match outcome {
            Outcome::Acked => "ack",
            Outcome::WillRetry => "nack",
            Outcome::DeadLettered => "dead-letter",
        };
        let settle_error = |reason: String| QueueError::Settle {
            action,
            subject: message.subject.clone(),
            message_id: message.message_id.clone(),
            reason,
        };
        let lease_expired = || QueueError::LeaseExpired {
            subject: message.subject.clone(),
            message_id: message.message_id.clone(),
            ack_wait: config.ack_wait,
        };

        match (&self.inner.backend, token) {
            (Backend::Sqlite(b), Token::Sqlite(lease)) => {
                let applied = match outcome {
                    Outcome::Acked => b.ack(&lease).await.map(|_| true),
                    Outcome::WillRetry => b.nack(&lease, &message.subject, retry_delay).await,
                    Outcome::DeadLettered => {
                        let reason = reason.map(|e| e.to_string()).unwrap_or_default();
                        b.dead_letter(&lease, &message.subject, dlq, &reason).await
                    }
                }
                .map_err(settle_error)?;
                if !applied {
                    return Err(lease_expired());
                }
            }
            (Backend::Nats(b), Token::Nats(msg)) => {
                match outcome {
                    Outcome::Acked => b.ack(&msg).await,
                    Outcome::WillRetry => b.nack(&msg, retry_delay).await,
                    Outcome::DeadLettered => {
                        let reason = reason.map(|e| e.to_string()).unwrap_or_default();
                        b.dead_letter(&msg, message, dlq, &reason).await
                    }
                }
                .map_err(settle_error)?;
            }
            (_, token) => {
                return Err(QueueError::ForeignDelivery {
                    from: token.backend(),
                    to: self.system(),
                });
            }
        }

        match (outcome, result) {
            (Outcome::Acked, _) => {
                tracing::debug!(target: "queue", message_id = message.message_id.as_str(), "message processed and acked");
            }
            (Outcome::WillRetry, Err(e)) => {
                tracing::warn!(
                    target: "queue",
                    message_id = message.message_id.as_str(),
                    delivery_count = message.delivery_count,
                    max_deliveries = config.max_deliveries,
                    retry_delay_ms = retry_delay.as_millis() as u64,
                    error = e.reason(),
                    "message processing failed; it will be redelivered after the retry delay"
                );
            }
            (Outcome::DeadLettered, Err(e)) => {
                tracing::error!(
                    target: "queue",
                    message_id = message.message_id.as_str(),
                    delivery_count = message.delivery_count,
                    max_deliveries = config.max_deliveries,
                    dead_letter_subject = dlq,
                    error = e.reason(),
                    error_type = e.error_type(),
                    "message dead-lettered"
                );
            }
            _ => {}
        }
        Ok(outcome)
    }

    /// The number of messages on [`QueueConfig::subject`] not yet acknowledged: waiting, in
    /// flight (leased) and waiting for a retry. Dead letters are not included. On NATS this is
    /// the consumer's `num_pending + num_ack_pending`.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the backend cannot be queried.
    pub async fn pending(&self) -> Result<u64, QueueError> {
        let result = match &self.inner.backend {
            Backend::Sqlite(b) => b.count(&self.inner.config.subject).await,
            Backend::Nats(b) => b.pending().await,
        };
        result.map_err(|reason| self.unavailable("pending", reason))
    }

    /// The number of messages stored on the dead-letter subject
    /// ([`dead_letter_subject`]`(subject)`). On NATS this counts the messages the stream holds
    /// on that subject; on SQLite the dead letters not acknowledged by a consumer of the
    /// dead-letter subject.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the backend cannot be queried.
    pub async fn dead_letters(&self) -> Result<u64, QueueError> {
        let result = match &self.inner.backend {
            Backend::Sqlite(b) => b.count(&self.inner.dead_letter_subject).await,
            Backend::Nats(b) => b.count_subject(&self.inner.dead_letter_subject).await,
        };
        result.map_err(|reason| self.unavailable("dead_letters", reason))
    }

    fn unavailable(&self, operation: &'static str, reason: String) -> QueueError {
        QueueError::Unavailable {
            operation,
            url: self.inner.display_url.clone(),
            reason,
        }
    }
}

/// Marks `span` as failed.
fn record_error(span: &Span, error_type: &str, description: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", description);
    span.record("error.type", error_type);
}

/// Registers the metric descriptions once (the recorder may be installed later, in which case
/// they are simply not shown).
fn describe_metrics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        metrics::describe_counter!(
            SENT_MESSAGES,
            metrics::Unit::Count,
            "Messages published to the queue; error_type is set on failed publishes."
        );
        metrics::describe_counter!(
            CONSUMED_MESSAGES,
            metrics::Unit::Count,
            "Messages delivered to a queue consumer for processing."
        );
        metrics::describe_histogram!(
            PROCESS_DURATION,
            metrics::Unit::Seconds,
            "Duration of processing one queue message, including its settlement."
        );
    });
}

/// `url` without its scheme, if it has `scheme` (compared without regard to case).
fn strip_scheme<'a>(url: &'a str, scheme: &str) -> Option<&'a str> {
    let head = url.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &url[scheme.len()..])
}

/// `url` with any `user:password@` replaced by `***@`.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end + 3], &rest[at..]),
        None => url.to_owned(),
    }
}

/// A literal NATS subject: non-empty dot-separated tokens, no wildcards, no whitespace or
/// control characters.
fn validate_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("must not be empty".to_owned());
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err("has an empty token (leading, trailing or double dot)".to_owned());
        }
        if token == "*" || token == ">" || token.contains(['*', '>']) {
            return Err("must not contain the wildcards `*` or `>`".to_owned());
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace or control characters".to_owned());
        }
    }
    Ok(())
}

/// A JetStream stream or consumer name: non-empty, none of `. * > / \`, whitespace or control
/// characters.
fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name
        .chars()
        .any(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() || c.is_control())
    {
        return Err(
            "must not contain `.`, `*`, `>`, `/`, `\\`, whitespace or control characters"
                .to_owned(),
        );
    }
    Ok(())
}

/// Whether the subject `pattern` (with `*` / `>` wildcards) matches the literal `subject`.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pattern_tokens = pattern.split('.');
    let mut subject_tokens = subject.split('.');
    loop {
        match (pattern_tokens.next(), subject_tokens.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Milliseconds since the Unix epoch (wall clock: shared between processes).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `d` in whole milliseconds, saturating.
fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults() {
        let c = QueueConfig::new("sqlite://x.db");
        assert_eq!(c.stream, "ORDERS");
        assert_eq!(c.consumer, "fulfillment");
        assert_eq!(c.subject, "orders.placed");
        assert_eq!(c.max_deliveries, 5);
        assert_eq!(c.ack_wait, Duration::from_secs(30));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn dead_letter_subject_appends_dlq() {
        assert_eq!(dead_letter_subject("orders.placed"), "orders.placed.dlq");
    }

    #[test]
    fn subjects_are_validated() {
        assert!(validate_subject("orders.placed").is_ok());
        assert!(validate_subject("").is_err());
        assert!(validate_subject("orders..placed").is_err());
        assert!(validate_subject("orders.*").is_err());
        assert!(validate_subject("orders.>").is_err());
        assert!(validate_subject("orders placed").is_err());
        assert!(validate_name("ORDERS").is_ok());
        assert!(validate_name("a.b").is_err());
        let mut c = QueueConfig::new("sqlite://x.db");
        c.max_deliveries = 0;
        assert!(matches!(c.validate(), Err(QueueError::InvalidConfig(_))));
    }

    #[test]
    fn wildcard_matching() {
        assert!(subject_matches("orders.>", "orders.placed"));
        assert!(subject_matches("orders.>", "orders.placed.dlq"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(subject_matches("orders.*", "orders.placed"));
        assert!(!subject_matches("orders.*", "orders.placed.dlq"));
        assert!(subject_matches("orders.placed", "orders.placed"));
        assert!(!subject_matches("orders.placed", "orders.placed.dlq"));
    }

    #[test]
    fn urls_are_redacted_and_schemes_matched() {
        assert_eq!(
            redact_url("nats://user:secret@host:4222"),
            "nats://***@host:4222"
        );
        assert_eq!(redact_url("nats://host:4222"), "nats://host:4222");
        assert_eq!(redact_url("sqlite://a/b@c.db"), "sqlite://a/b@c.db");
        assert_eq!(strip_scheme("SQLITE://x", "sqlite:"), Some("//x"));
        assert_eq!(strip_scheme("nats://h", "sqlite:"), None);
    }
}
