//! The shop's vocabulary: an order request and the rules it must follow, an order and its
//! status, and the `orders.placed` event. No HTTP and no SQL here.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest user id or SKU.
const MAX_ID_LEN: usize = 64;
/// Most distinct items in one order.
const MAX_ITEMS: usize = 20;
/// Largest quantity of one SKU in one order.
const MAX_QUANTITY: i64 = 1_000;

/// The body of `POST /orders`, as sent. [`PlaceOrder::validate`] turns it into a
/// [`NewOrder`].
#[derive(Debug, Deserialize)]
pub(crate) struct PlaceOrder {
    pub(crate) user_id: String,
    pub(crate) items: Vec<Item>,
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Item {
    pub(crate) sku: String,
    /// Signed so that `-1` reaches validation and gets a clear message.
    pub(crate) quantity: i64,
}

/// An order request that follows every rule: ids well-formed, 1–20 distinct SKUs (a SKU listed
/// twice is merged into one line), each quantity 1–1000.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewOrder {
    pub(crate) user_id: String,
    /// In the order first listed.
    pub(crate) items: Vec<Item>,
}

impl PlaceOrder {
    /// Checks the rules. The error is a sentence for the problem's `detail` (422).
    pub(crate) fn validate(self) -> Result<NewOrder, String> {
        check_id("user_id", &self.user_id)?;
        if self.items.is_empty() {
            return Err("items must list at least one item".to_owned());
        }
        let mut merged: Vec<Item> = Vec::with_capacity(self.items.len());
        for (index, item) in self.items.into_iter().enumerate() {
            check_id(&format!("items[{index}].sku"), &item.sku)?;
            if !(1..=MAX_QUANTITY).contains(&item.quantity) {
                return Err(format!(
                    "items[{index}].quantity must be between 1 and {MAX_QUANTITY}, not {}",
                    item.quantity
                ));
            }
            match merged.iter_mut().find(|m| m.sku == item.sku) {
                Some(line) => line.quantity += item.quantity,
                None => merged.push(item),
            }
        }
        if merged.len() > MAX_ITEMS {
            return Err(format!(
                "an order may hold at most {MAX_ITEMS} different SKUs, not {}",
                merged.len()
            ));
        }
        if let Some(line) = merged.iter().find(|m| m.quantity > MAX_QUANTITY) {
            return Err(format!(
                "{} is listed more than once with a total quantity of {}; the most per order is {MAX_QUANTITY}",
                line.sku, line.quantity
            ));
        }
        Ok(NewOrder {
            user_id: self.user_id,
            items: merged,
        })
    }
}

/// A user id or SKU: 1–64 characters from `A-Z a-z 0-9 _ -`.
pub(crate) fn check_id(field: &str, value: &str) -> Result<(), String> {
    let well_formed = !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "{field} must be 1 to {MAX_ID_LEN} characters from A-Z, a-z, 0-9, '_' and '-'"
        ))
    }
}

/// Where an order is in its life: `accepted` when placed, then `fulfilled` or `failed` once
/// fulfillment reports back. The last two are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Accepted,
    Fulfilled,
    Failed,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Fulfilled => "fulfilled",
            Status::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Status> {
        match s {
            "accepted" => Some(Status::Accepted),
            "fulfilled" => Some(Status::Fulfilled),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An order as `GET /orders/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Order {
    pub(crate) order_id: String,
    pub(crate) user_id: String,
    pub(crate) status: Status,
    pub(crate) items: Vec<Item>,
    /// RFC 3339, UTC.
    pub(crate) created_at: String,
    /// RFC 3339, UTC.
    pub(crate) updated_at: String,
}

/// The `orders.placed` event the outbox carries to fulfillment.
#[derive(Debug, Serialize)]
pub(crate) struct OrderPlaced<'a> {
    pub(crate) order_id: &'a str,
    pub(crate) user_id: &'a str,
    pub(crate) items: &'a [Item],
    /// RFC 3339, UTC.
    pub(crate) placed_at: &'a str,
}

/// The subject `orders.placed` events are published on.
pub(crate) const ORDERS_PLACED: &str = "orders.placed";

#[cfg(test)]
mod tests {
    use super::*;

    fn request(user_id: &str, items: &[(&str, i64)]) -> PlaceOrder {
        PlaceOrder {
            user_id: user_id.to_owned(),
            items: items
                .iter()
                .map(|(sku, quantity)| Item {
                    sku: (*sku).to_owned(),
                    quantity: *quantity,
                })
                .collect(),
        }
    }

    #[test]
    fn a_sku_listed_twice_is_merged_into_one_line() {
        let order = request("u-1", &[("sku-1", 2), ("sku-2", 1), ("sku-1", 3)])
            .validate()
            .unwrap();
        assert_eq!(
            order.items,
            vec![
                Item {
                    sku: "sku-1".into(),
                    quantity: 5
                },
                Item {
                    sku: "sku-2".into(),
                    quantity: 1
                }
            ]
        );
    }

    #[test]
    fn rule_breaking_requests_are_refused_with_a_reason() {
        for (req, needle) in [
            (request("", &[("sku-1", 1)]), "user_id"),
            (request("u 1", &[("sku-1", 1)]), "user_id"),
            (request(&"u".repeat(65), &[("sku-1", 1)]), "user_id"),
            (request("u-1", &[]), "at least one"),
            (request("u-1", &[("sku/1", 1)]), "items[0].sku"),
            (request("u-1", &[("sku-1", 0)]), "items[0].quantity"),
            (request("u-1", &[("sku-1", -4)]), "items[0].quantity"),
            (request("u-1", &[("sku-1", 1001)]), "items[0].quantity"),
            (
                request("u-1", &[("sku-1", 600), ("sku-1", 600)]),
                "total quantity",
            ),
        ] {
            let err = req.validate().unwrap_err();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
        let many: Vec<(String, i64)> = (0..21).map(|i| (format!("sku-{i}"), 1)).collect();
        let many: Vec<(&str, i64)> = many.iter().map(|(s, q)| (s.as_str(), *q)).collect();
        assert!(
            request("u-1", &many)
                .validate()
                .unwrap_err()
                .contains("at most 20")
        );
        let twenty = &many[..20];
        assert!(request("u-1", twenty).validate().is_ok());
    }
}
