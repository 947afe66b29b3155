//! [`Extractor`] and [`Injector`] adapters for the carriers this crate
//! propagates through: HTTP headers, NATS message headers and plain string
//! maps (for example outbox rows).
//!
//! Every extractor implements [`Extractor::get_all`] so the strict
//! propagators can see repeated headers, and every carrier matches names
//! without regard to ASCII case. No adapter panics on odd input: values that
//! cannot be represented are skipped.

use std::collections::BTreeMap;

use opentelemetry::propagation::{Extractor, Injector};

/// Reads propagation fields from an [`http::HeaderMap`].
///
/// Header names are case-insensitive (the map stores them lowercase).
/// [`get_all`](Extractor::get_all) returns every value of a repeated header in
/// order; values that are not UTF-8 are skipped.
#[derive(Debug, Clone, Copy)]
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl HeaderExtractor<'_> {
    /// Every value of `key`. The propagation headers are looked up by a prebuilt
    /// [`http::HeaderName`] (no parsing of the name on every request); other names are parsed.
    fn values(&self, key: &str) -> http::header::GetAll<'_, http::HeaderValue> {
        static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
        static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
        static BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");
        match key {
            "traceparent" => self.0.get_all(&TRACEPARENT),
            "tracestate" => self.0.get_all(&TRACESTATE),
            "baggage" => self.0.get_all(&BAGGAGE),
            _ => self.0.get_all(key),
        }
    }
}

impl Extractor for HeaderExtractor<'_> {
    /// The first UTF-8 value of `key`.
    fn get(&self, key: &str) -> Option<&str> {
        self.values(key)
            .iter()
            .find_map(|value| std::str::from_utf8(value.as_bytes()).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }

    /// Every UTF-8 value of `key`, in order; `None` if there is none.
    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let mut values = self.values(key).iter().peekable();
        values.peek()?;
        let values: Vec<&str> = values
            .filter_map(|value| std::str::from_utf8(value.as_bytes()).ok())
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

/// Writes propagation fields into an [`http::HeaderMap`].
///
/// [`set`](Injector::set) replaces every existing value of the header. A name
/// or value that is not a legal HTTP header (for example one containing a
/// newline) is skipped instead of panicking.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let Ok(name) = http::HeaderName::from_bytes(key.as_bytes()) else {
            return;
        };
        let Ok(value) = http::HeaderValue::from_str(&value) else {
            return;
        };
        self.0.insert(name, value);
    }
}

/// Reads propagation fields from NATS message headers
/// ([`async_nats::HeaderMap`]).
///
/// NATS header names are case-sensitive to `async-nats`, but propagation
/// fields are not: `Traceparent`, `TRACEPARENT` and `traceparent` all match.
/// When the same field is present under several spellings, all their values
/// are returned, spellings in byte order and each spelling's values in order.
#[cfg(feature = "nats")]
#[derive(Debug, Clone, Copy)]
pub struct NatsHeaderExtractor<'a>(pub &'a async_nats::HeaderMap);

#[cfg(feature = "nats")]
impl NatsHeaderExtractor<'_> {
    /// The spellings of `key` present in the map, in byte order, with their
    /// values.
    fn matching(&self, key: &str) -> Vec<(&str, &[async_nats::HeaderValue])> {
        let mut matches: Vec<(&str, &[async_nats::HeaderValue])> = self
            .0
            .iter()
            .map(|(name, values)| (AsRef::<str>::as_ref(name), values.as_slice()))
            .filter(|(name, _)| name.eq_ignore_ascii_case(key))
            .collect();
        matches.sort_unstable_by_key(|(name, _)| *name);
        matches
    }
}

#[cfg(feature = "nats")]
impl Extractor for NatsHeaderExtractor<'_> {
    /// The first value of the first spelling of `key`.
    fn get(&self, key: &str) -> Option<&str> {
        self.matching(key)
            .into_iter()
            .flat_map(|(_, values)| values.iter())
            .map(async_nats::HeaderValue::as_str)
            .next()
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .map(|(name, _)| AsRef::<str>::as_ref(name))
            .collect()
    }

    /// Every value of every spelling of `key`; `None` if there is none.
    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .matching(key)
            .into_iter()
            .flat_map(|(_, values)| values.iter())
            .map(async_nats::HeaderValue::as_str)
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

/// Writes propagation fields into NATS message headers
/// ([`async_nats::HeaderMap`]).
///
/// [`set`](Injector::set) writes the lowercase name and removes every
/// existing value whose name differs from it only in case, so a message never
/// carries both `Traceparent` and `traceparent`. A name or value `async-nats`
/// would reject (control characters, `:`, newlines) is skipped instead of
/// panicking.
#[cfg(feature = "nats")]
#[derive(Debug)]
pub struct NatsHeaderInjector<'a>(pub &'a mut async_nats::HeaderMap);

#[cfg(feature = "nats")]
impl Injector for NatsHeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let lowercase = key.to_ascii_lowercase();
        let Ok(name) = lowercase.parse::<async_nats::HeaderName>() else {
            return;
        };
        let Ok(value) = value.parse::<async_nats::HeaderValue>() else {
            return;
        };

        let has_other_spelling = self.0.iter().any(|(existing, _)| {
            let existing: &str = existing.as_ref();
            existing != lowercase && existing.eq_ignore_ascii_case(&lowercase)
        });
        if has_other_spelling {
            // async-nats has no `remove`, so rebuild the map without the
            // other spellings, keeping every other header and value order.
            let mut rebuilt = async_nats::HeaderMap::new();
            for (existing, values) in self.0.iter() {
                let existing_str: &str = existing.as_ref();
                if existing_str.eq_ignore_ascii_case(&lowercase) {
                    continue;
                }
                for existing_value in values {
                    rebuilt.append(existing.clone(), existing_value.clone());
                }
            }
            *self.0 = rebuilt;
        }
        self.0.insert(name, value);
    }
}

/// Reads propagation fields from a string map, such as the columns of an
/// outbox row.
///
/// Keys match without regard to ASCII case. When several keys differ only in
/// case, [`get_all`](Extractor::get_all) returns all their values in key
/// order.
#[derive(Debug, Clone, Copy)]
pub struct MapExtractor<'a>(pub &'a BTreeMap<String, String>);

impl Extractor for MapExtractor<'_> {
    /// The value of the first key (in map order) equal to `key` ignoring
    /// case.
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    /// The values of every key equal to `key` ignoring case; `None` if there
    /// is none.
    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .0
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

/// Writes propagation fields into a string map, such as the columns of an
/// outbox row.
///
/// [`set`](Injector::set) stores the lowercase key and removes any key that
/// differs from it only in case.
#[derive(Debug)]
pub struct MapInjector<'a>(pub &'a mut BTreeMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let lowercase = key.to_ascii_lowercase();
        self.0
            .retain(|existing, _| !existing.eq_ignore_ascii_case(&lowercase));
        self.0.insert(lowercase, value);
    }
}
