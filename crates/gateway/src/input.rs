//! What a client may send, and the checks made before any downstream service is called.
//!
//! The gateway is the edge: a request it lets through costs orders a database transaction, so
//! everything that can be refused cheaply is refused here, with a message that names the field
//! and says what would be accepted. Parsing happens in two steps:
//!
//! 1. serde reads the body into loose types ([`PlaceOrderBody`]): wrong JSON types and missing
//!    fields are rejected by the extractor (422; malformed JSON is 400);
//! 2. [`PlaceOrderBody::validate`] applies the rules (lengths, characters, ranges) and produces a
//!    [`PlaceOrder`], the only form that is ever sent on.
//!
//! Quantities are read as `i64` rather than `u32` so that `0` and `-1` reach step 2 and get the
//! same clear message ("must be from 1 to 1000") instead of a serde type error.

use serde::{Deserialize, Serialize};

/// Most items one order may carry.
pub const MAX_ITEMS: usize = 20;
/// Largest quantity of one item.
pub const MAX_QUANTITY: i64 = 1000;
/// Longest user id or SKU.
pub const MAX_ID_LEN: usize = 64;

/// A rule the input breaks: the field (a JSON path such as `items[2].quantity`) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct Invalid {
    /// Where, as a JSON path.
    pub field: String,
    /// What is wrong and what is accepted.
    pub reason: String,
}

/// The body of `POST /api/orders` as received. Unknown members are ignored (clients may send
/// more than we need; that is not an error).
#[derive(Debug, Deserialize)]
pub struct PlaceOrderBody {
    /// Who orders.
    pub user_id: String,
    /// What they order.
    pub items: Vec<ItemBody>,
}

/// One line of [`PlaceOrderBody`].
#[derive(Debug, Deserialize)]
pub struct ItemBody {
    /// The product.
    pub sku: String,
    /// How many; checked by [`PlaceOrderBody::validate`].
    pub quantity: i64,
}

/// A valid order, in the form orders' `POST /orders` expects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlaceOrder {
    /// Who orders (a valid [`check_id`]).
    pub user_id: String,
    /// 1 to [`MAX_ITEMS`] lines.
    pub items: Vec<Item>,
}

/// One line of a valid order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Item {
    /// The product (a valid [`check_id`]).
    pub sku: String,
    /// 1 to [`MAX_QUANTITY`].
    pub quantity: u32,
}

impl PlaceOrderBody {
    /// Applies the rules; the first broken one is the error.
    ///
    /// # Errors
    /// [`Invalid`] naming the field.
    pub fn validate(self) -> Result<PlaceOrder, Invalid> {
        check_id("user_id", &self.user_id)?;
        if self.items.is_empty() || self.items.len() > MAX_ITEMS {
            return Err(Invalid {
                field: "items".into(),
                reason: format!(
                    "must hold 1 to {MAX_ITEMS} entries; it holds {}",
                    self.items.len()
                ),
            });
        }
        let mut items = Vec::with_capacity(self.items.len());
        for (i, item) in self.items.into_iter().enumerate() {
            check_id(&format!("items[{i}].sku"), &item.sku)?;
            let quantity = u32::try_from(item.quantity)
                .ok()
                .filter(|q| (1..=MAX_QUANTITY).contains(&i64::from(*q)))
                .ok_or_else(|| Invalid {
                    field: format!("items[{i}].quantity"),
                    reason: format!(
                        "must be a whole number from 1 to {MAX_QUANTITY}; it is {}",
                        item.quantity
                    ),
                })?;
            items.push(Item {
                sku: item.sku,
                quantity,
            });
        }
        Ok(PlaceOrder {
            user_id: self.user_id,
            items,
        })
    }
}

/// A user id or SKU: 1 to [`MAX_ID_LEN`] characters from `A-Z a-z 0-9 _ -`. Such an id is also
/// safe to put in a URL path unescaped, which is how it travels to orders and fulfillment.
///
/// # Errors
/// [`Invalid`] naming `field`.
pub fn check_id(field: &str, value: &str) -> Result<(), Invalid> {
    let fail = |reason: String| Invalid {
        field: field.to_owned(),
        reason,
    };
    let len = value.chars().count();
    if len == 0 || len > MAX_ID_LEN {
        return Err(fail(format!(
            "must be 1 to {MAX_ID_LEN} characters long; it is {len}"
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(fail(format!(
            "may contain only letters, digits, `_` and `-`; it contains {c:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> PlaceOrderBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_valid_order_is_kept_as_sent_minus_unknown_members() {
        let order = body(
            r#"{"user_id":"u-1","items":[{"sku":"sku_1","quantity":2,"gift":true}],"note":"x"}"#,
        )
        .validate()
        .unwrap();
        assert_eq!(
            serde_json::to_value(&order).unwrap(),
            serde_json::json!({"user_id":"u-1","items":[{"sku":"sku_1","quantity":2}]})
        );
    }

    #[test]
    fn each_broken_rule_names_its_field() {
        let many: Vec<String> = (0..21)
            .map(|_| r#"{"sku":"s","quantity":1}"#.to_owned())
            .collect();
        let many = format!(r#"{{"user_id":"u","items":[{}]}}"#, many.join(","));
        let long = "x".repeat(65);
        let cases = [
            (
                r#"{"user_id":"","items":[{"sku":"s","quantity":1}]}"#.to_owned(),
                "user_id",
            ),
            (
                format!(r#"{{"user_id":"{long}","items":[{{"sku":"s","quantity":1}}]}}"#),
                "user_id",
            ),
            (
                r#"{"user_id":"u 1","items":[{"sku":"s","quantity":1}]}"#.to_owned(),
                "user_id",
            ),
            (r#"{"user_id":"u","items":[]}"#.to_owned(), "items"),
            (many, "items"),
            (
                r#"{"user_id":"u","items":[{"sku":"a/b","quantity":1}]}"#.to_owned(),
                "items[0].sku",
            ),
            (
                r#"{"user_id":"u","items":[{"sku":"s","quantity":1},{"sku":"s","quantity":0}]}"#
                    .to_owned(),
                "items[1].quantity",
            ),
            (
                r#"{"user_id":"u","items":[{"sku":"s","quantity":-3}]}"#.to_owned(),
                "items[0].quantity",
            ),
            (
                r#"{"user_id":"u","items":[{"sku":"s","quantity":1001}]}"#.to_owned(),
                "items[0].quantity",
            ),
        ];
        for (json, field) in cases {
            let err = body(&json).validate().unwrap_err();
            assert_eq!(err.field, field, "{json}");
            assert!(!err.reason.is_empty());
        }
    }

    #[test]
    fn boundaries_are_inclusive() {
        let long = "x".repeat(64);
        let json =
            format!(r#"{{"user_id":"{long}","items":[{{"sku":"{long}","quantity":1000}}]}}"#);
        assert!(body(&json).validate().is_ok());
    }
}
