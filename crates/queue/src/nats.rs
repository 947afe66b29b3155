//! The NATS JetStream backend: a stream holding `{root}.>` and a durable pull consumer filtered
//! on the consumed subject, with explicit acks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::{QueueConfig, QueueError, ReceivedMessage, subject_matches};

/// The server's `max_deliver` is this much above `max_deliveries`, so that this crate (not the
/// server, which would silently stop delivering) dead-letters exhausted messages.
const MAX_DELIVER_HEADROOM: u32 = 3;
/// The longest a readiness check may take.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest dead-letter reason header value.
const MAX_REASON_CHARS: usize = 1024;

pub(crate) struct NatsBackend {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    consumer: consumer::PullConsumer,
    /// Messages this handle's `receive` dead-lettered because they were never settled.
    exhausted: AtomicU64,
}

impl NatsBackend {
    pub(crate) async fn connect(
        config: &QueueConfig,
        display_url: &str,
    ) -> Result<Self, QueueError> {
        let setup_error = |reason: String| QueueError::Setup {
            url: display_url.to_owned(),
            reason,
        };
        let client = async_nats::ConnectOptions::new()
            .name("faultline-queue")
            .connection_timeout(Duration::from_secs(5))
            .connect(config.url.as_str())
            .await
            .map_err(|e| QueueError::Connect {
                url: display_url.to_owned(),
                reason: format!(
                    "{e}; is nats-server running and reachable there, with JetStream enabled (nats-server -js)?"
                ),
            })?;
        let js = jetstream::new(client.clone());

        let root = config.subject.split('.').next().unwrap_or_default();
        let wanted_subjects = vec![format!("{root}.>")];
        let stream = js
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: wanted_subjects.clone(),
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                setup_error(format!(
                    "cannot create or open the JetStream stream {}: {e}; is JetStream enabled on the server (nats-server -js)?",
                    config.stream
                ))
            })?;

        let dead_letter_subject = crate::dead_letter_subject(&config.subject);
        let subjects = &stream.cached_info().config.subjects;
        for needed in [&config.subject, &dead_letter_subject] {
            if !subjects.iter().any(|p| subject_matches(p, needed)) {
                return Err(setup_error(format!(
                    "the existing stream {} has subjects {subjects:?}, which do not include {needed}; add {:?} to it or configure another stream",
                    config.stream, wanted_subjects[0]
                )));
            }
        }

        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(config.consumer.clone()),
                filter_subject: config.subject.clone(),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_deliver: i64::from(config.max_deliveries.saturating_add(MAX_DELIVER_HEADROOM)),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                setup_error(format!(
                    "cannot create or update the durable consumer {} on stream {} (filter {}): {e}",
                    config.consumer, config.stream, config.subject
                ))
            })?;

        Ok(NatsBackend {
            client,
            js,
            stream,
            consumer,
            exhausted: AtomicU64::new(0),
        })
    }

    /// Messages [`receive`](Self::receive) dead-lettered because they were never settled.
    pub(crate) fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    pub(crate) async fn ready(&self) -> Result<(), String> {
        let state = self.client.connection_state();
        if state != async_nats::connection::State::Connected {
            return Err(format!("NATS connection is {state:?}"));
        }
        match tokio::time::timeout(READY_TIMEOUT, self.consumer.get_info()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("JetStream consumer info failed: {e}")),
            Err(_) => Err(format!(
                "JetStream did not answer a consumer info request within {READY_TIMEOUT:?}"
            )),
        }
    }

    /// Publishes and waits for the stream's ack. Returns whether the server reported a
    /// duplicate `Nats-Msg-Id`.
    pub(crate) async fn publish(
        &self,
        subject: &str,
        message_id: &str,
        payload: &[u8],
        headers: async_nats::HeaderMap,
    ) -> Result<bool, QueueError> {
        let publish_error = |error_type: &'static str, reason: String| QueueError::Publish {
            subject: subject.to_owned(),
            message_id: message_id.to_owned(),
            reason,
            error_type,
        };
        let message = jetstream::message::PublishMessage::build()
            .payload(Bytes::copy_from_slice(payload))
            .headers(headers)
            .message_id(message_id);
        let ack = self
            .js
            .send_publish(subject.to_owned(), message)
            .await
            .map_err(|e| publish_error(publish_error_type(e.kind()), publish_reason(&e)))?
            .await
            .map_err(|e| publish_error(publish_error_type(e.kind()), publish_reason(&e)))?;
        Ok(ack.duplicate)
    }

    pub(crate) async fn receive(
        &self,
        config: &QueueConfig,
        dead_letter_subject: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<crate::Delivery>, String> {
        let mut deliveries = Vec::new();
        // What is available right now...
        let mut messages = self.fetch_now(max).await?;
        if messages.is_empty() && !wait.is_zero() {
            // ...else wait for one, then take whatever else arrived with it. Requesting exactly
            // one message means the pull request is complete when it returns, so no message is
            // delivered to a subscription nobody reads any more.
            let mut batch = self
                .consumer
                .batch()
                .max_messages(1)
                .expires(wait)
                .messages()
                .await
                .map_err(|e| format!("pull request failed: {e}"))?;
            if let Some(first) = batch.next().await {
                messages.push(first.map_err(|e| format!("pull request failed: {e}"))?);
                if max > 1 {
                    messages.extend(self.fetch_now(max - 1).await?);
                }
            }
        }

        for message in messages {
            let received = to_received(&message);
            if received.delivery_count > config.max_deliveries {
                // Delivered max_deliveries times and never settled: dead-letter it.
                let reason = format!(
                    "delivered {} times without being acknowledged (each ack wait of {:?} expired)",
                    config.max_deliveries, config.ack_wait
                );
                match self
                    .dead_letter(&message, &received, dead_letter_subject, &reason)
                    .await
                {
                    Ok(()) => {
                        self.exhausted.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            target: "queue",
                            message_id = received.message_id.as_str(),
                            delivery_count = received.delivery_count,
                            dead_letter_subject,
                            "message dead-lettered: its deliveries were never settled"
                        );
                    }
                    Err(e) => tracing::warn!(
                        target: "queue",
                        message_id = received.message_id.as_str(),
                        error = e.as_str(),
                        "could not dead-letter an exhausted message; it will be redelivered"
                    ),
                }
                continue;
            }
            deliveries.push(crate::Delivery {
                message: received,
                token: crate::Token::Nats(Box::new(message)),
            });
        }
        Ok(deliveries)
    }

    /// Up to `max` messages available now (a `no_wait` pull).
    async fn fetch_now(&self, max: usize) -> Result<Vec<jetstream::Message>, String> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max)
            .messages()
            .await
            .map_err(|e| format!("pull request failed: {e}"))?;
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(|e| format!("pull request failed: {e}"))?);
        }
        Ok(messages)
    }

    pub(crate) async fn ack(&self, message: &jetstream::Message) -> Result<(), String> {
        message
            .double_ack()
            .await
            .map_err(|e| format!("the server did not confirm the ack: {e}"))
    }

    pub(crate) async fn nack(
        &self,
        message: &jetstream::Message,
        delay: Duration,
    ) -> Result<(), String> {
        message
            .double_ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| format!("the server did not confirm the nak: {e}"))
    }

    /// Publishes a copy to `dead_letter_subject` (deduplicated on `"{message_id}:dlq"`), then
    /// terminates the original so it is never redelivered.
    pub(crate) async fn dead_letter(
        &self,
        message: &jetstream::Message,
        received: &ReceivedMessage,
        dead_letter_subject: &str,
        reason: &str,
    ) -> Result<(), String> {
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in &received.headers {
            if let Some(value) = header_value(value) {
                headers.insert(name.as_str(), value.as_str());
            }
        }
        headers.insert("faultline-original-subject", received.subject.as_str());
        if let Some(id) = header_value(&received.message_id) {
            headers.insert("faultline-original-message-id", id.as_str());
        }
        headers.insert(
            "faultline-delivery-count",
            received.delivery_count.to_string(),
        );
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        if let Some(reason) = header_value(&reason) {
            headers.insert("faultline-dead-letter-reason", reason.as_str());
        }
        let publish = jetstream::message::PublishMessage::build()
            .payload(Bytes::copy_from_slice(&received.payload))
            .headers(headers)
            .message_id(format!("{}:dlq", received.message_id));
        self.js
            .send_publish(dead_letter_subject.to_owned(), publish)
            .await
            .map_err(|e| format!("cannot publish to {dead_letter_subject}: {e}"))?
            .await
            .map_err(|e| format!("cannot publish to {dead_letter_subject}: {e}"))?;
        message.double_ack_with(AckKind::Term).await.map_err(|e| {
            format!(
                "dead letter stored, but the server did not confirm terminating the original: {e}"
            )
        })
    }

    /// `num_pending + num_ack_pending` of the consumer.
    pub(crate) async fn pending(&self) -> Result<u64, String> {
        let info = self
            .consumer
            .get_info()
            .await
            .map_err(|e| format!("JetStream consumer info failed: {e}"))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// Messages the stream holds on `subject`.
    pub(crate) async fn count_subject(&self, subject: &str) -> Result<u64, String> {
        let mut subjects = self
            .stream
            .info_with_subjects(subject)
            .await
            .map_err(|e| format!("JetStream stream info failed: {e}"))?;
        let mut total = 0u64;
        while let Some(entry) = subjects.next().await {
            let (name, count) = entry.map_err(|e| format!("JetStream stream info failed: {e}"))?;
            if name == subject {
                total += count as u64;
            }
        }
        Ok(total)
    }
}

/// The message as handed to the handler: headers lowercased without `nats-*`, the delivery
/// count from the ack subject.
fn to_received(message: &jetstream::Message) -> ReceivedMessage {
    let info = message.info().ok();
    let mut headers = BTreeMap::new();
    let mut message_id = None;
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            let name = AsRef::<str>::as_ref(name).to_ascii_lowercase();
            let Some(value) = values.first() else {
                continue;
            };
            if name == "nats-msg-id" {
                message_id = Some(value.as_str().to_owned());
            }
            if name.starts_with("nats-") {
                continue;
            }
            headers
                .entry(name)
                .or_insert_with(|| value.as_str().to_owned());
        }
    }
    let message_id = message_id.unwrap_or_else(|| match &info {
        Some(info) => format!("{}:{}", info.stream, info.stream_sequence),
        None => String::new(),
    });
    let delivery_count = info
        .as_ref()
        .map(|i| u32::try_from(i.delivered.max(1)).unwrap_or(u32::MAX))
        .unwrap_or(1);
    ReceivedMessage {
        message_id,
        subject: message.subject.as_str().to_owned(),
        payload: message.payload.to_vec(),
        headers,
        delivery_count,
    }
}

/// `value` made safe for a NATS header: control characters become spaces. `None` if empty.
fn header_value(value: &str) -> Option<String> {
    let cleaned: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let cleaned = cleaned.trim().to_owned();
    (!cleaned.is_empty()).then_some(cleaned)
}

fn publish_error_type(kind: jetstream::context::PublishErrorKind) -> &'static str {
    use jetstream::context::PublishErrorKind::*;
    match kind {
        TimedOut => "timeout",
        StreamNotFound => "stream_not_found",
        MaxPayloadExceeded => "payload_too_large",
        BrokenPipe => "connection_closed",
        _ => "_OTHER",
    }
}

fn publish_reason(e: &jetstream::context::PublishError) -> String {
    use jetstream::context::PublishErrorKind::*;
    match e.kind() {
        StreamNotFound => format!(
            "{e}: no JetStream stream stores this subject (the stream's subjects must include it)"
        ),
        TimedOut => format!("{e}: is the NATS server (with JetStream) reachable?"),
        _ => e.to_string(),
    }
}
