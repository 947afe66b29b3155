//! The `orders.placed` event, as the orders service publishes it through its outbox:
//!
//! ```json
//! {"order_id": "5f0c…", "user_id": "u-1", "items": [{"sku": "sku-1", "quantity": 2}],
//!  "placed_at": "2025-01-31T09:08:07Z"}
//! ```
//!
//! A payload that does not parse, or breaks a rule below, can never be processed: it is a
//! *poison message*, and the worker dead-letters it at once instead of retrying it.

use serde::{Deserialize, Serialize};

/// One placed order. Unknown fields are ignored, so orders may add some without breaking us.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct OrderPlaced {
    /// The order's id (a UUID). Used in the status URL, so it must be [`valid_id`].
    pub order_id: String,
    /// Who placed it.
    pub user_id: String,
    /// What to ship; at least one line.
    pub items: Vec<Item>,
    /// When it was placed (RFC 3339); informational.
    #[serde(default)]
    pub placed_at: Option<String>,
}

/// One order line.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Item {
    /// The stock keeping unit.
    pub sku: String,
    /// How many; at least 1.
    pub quantity: u32,
}

/// Why a payload is poison.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidEvent {
    /// Not JSON, or not the event's shape.
    #[error("the payload is not an orders.placed event: {0}")]
    Malformed(String),
    /// JSON of the right shape with a value that breaks a rule.
    #[error("the orders.placed event is invalid: {0}")]
    Invalid(String),
}

impl OrderPlaced {
    /// Parses and checks a message payload.
    ///
    /// # Errors
    /// [`InvalidEvent`] saying what is wrong.
    pub fn parse(payload: &[u8]) -> Result<Self, InvalidEvent> {
        let event: OrderPlaced =
            serde_json::from_slice(payload).map_err(|e| InvalidEvent::Malformed(e.to_string()))?;
        if !valid_id(&event.order_id) {
            return Err(InvalidEvent::Invalid(format!(
                "order_id {:?} must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'",
                event.order_id
            )));
        }
        if !valid_id(&event.user_id) {
            return Err(InvalidEvent::Invalid(format!(
                "user_id {:?} must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'",
                event.user_id
            )));
        }
        if event.items.is_empty() {
            return Err(InvalidEvent::Invalid(
                "an order needs at least one item".to_owned(),
            ));
        }
        if let Some(item) = event
            .items
            .iter()
            .find(|i| i.quantity == 0 || i.sku.is_empty())
        {
            return Err(InvalidEvent::Invalid(format!(
                "item {:?} needs a sku and a quantity of at least 1",
                item.sku
            )));
        }
        Ok(event)
    }

    /// The order id of a payload that is not a valid event but still names an order, so that
    /// orders can be told the order failed.
    pub fn order_id_of(payload: &[u8]) -> Option<String> {
        #[derive(Deserialize)]
        struct JustTheId {
            order_id: String,
        }
        serde_json::from_slice::<JustTheId>(payload)
            .ok()
            .map(|e| e.order_id)
            .filter(|id| valid_id(id))
    }
}

/// An id as used in paths: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_event_parses() {
        let event = OrderPlaced::parse(
            br#"{"order_id":"0b9e6a3c-8a52-4a53-9a1e-5d2f4b1c2d3e","user_id":"u-1","items":[{"sku":"sku-1","quantity":2}],"placed_at":"2025-01-31T09:08:07Z","extra":1}"#,
        )
        .unwrap();
        assert_eq!(event.user_id, "u-1");
        assert_eq!(
            event.items,
            vec![Item {
                sku: "sku-1".into(),
                quantity: 2
            }]
        );
    }

    #[test]
    fn poison_payloads_are_rejected_with_a_reason() {
        for payload in [
            &b"not json"[..],
            br#"{"order_id":"o-1"}"#,
            br#"{"order_id":"o/1","user_id":"u-1","items":[{"sku":"a","quantity":1}]}"#,
            br#"{"order_id":"o-1","user_id":"u-1","items":[]}"#,
            br#"{"order_id":"o-1","user_id":"u-1","items":[{"sku":"a","quantity":0}]}"#,
            br#"{"order_id":"o-1","user_id":"u-1","items":[{"sku":"a","quantity":-1}]}"#,
        ] {
            assert!(OrderPlaced::parse(payload).is_err(), "{payload:?}");
        }
        assert_eq!(
            OrderPlaced::order_id_of(br#"{"order_id":"o-1","items":"x"}"#).as_deref(),
            Some("o-1")
        );
        assert_eq!(OrderPlaced::order_id_of(b"{"), None);
    }

    #[test]
    fn ids_are_short_and_path_safe() {
        assert!(valid_id("u-1"));
        assert!(valid_id(&"a".repeat(64)));
        assert!(!valid_id(&"a".repeat(65)));
        assert!(!valid_id(""));
        assert!(!valid_id("a b"));
        assert!(!valid_id("../x"));
    }
}
