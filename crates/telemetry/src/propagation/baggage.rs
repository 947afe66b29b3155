//! Strict W3C Baggage propagation.
//!
//! Specification: <https://www.w3.org/TR/baggage/>.

use std::sync::LazyLock;

use opentelemetry::Context;
use opentelemetry::baggage::{Baggage, BaggageExt, BaggageMetadata};
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// Name of the W3C `baggage` header.
pub const BAGGAGE_HEADER: &str = "baggage";

/// The most list members propagated, on extraction and on injection.
pub const MAX_BAGGAGE_MEMBERS: usize = 64;

/// The most bytes of baggage propagated: the list members as they appear in
/// the header plus one `,` between each two.
pub const MAX_BAGGAGE_BYTES: usize = 8192;

/// Bytes of a value that must be percent-encoded on injection: everything
/// that is not a `baggage-octet` (controls, space, `"`, `,`, `;`, `\`, and all
/// non-ASCII, which `utf8_percent_encode` always encodes), plus `%` itself so
/// decoding is unambiguous, plus `=` so that receivers which wrongly split
/// the member on every `=` still read the whole value.
const VALUE_ENCODE_SET: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b',')
    .add(b';')
    .add(b'\\')
    .add(b'%')
    .add(b'=');

static FIELDS: LazyLock<[String; 1]> = LazyLock::new(|| [BAGGAGE_HEADER.to_owned()]);

/// A [`TextMapPropagator`] for W3C Baggage that drops what the specification
/// does not allow, one list member at a time.
///
/// Extraction reads every `baggage` value through [`Extractor::get_all`] and
/// treats them as one list joined with `,`. Each member must be
/// `key OWS "=" OWS value *(OWS ";" OWS property)`, where the key is an
/// RFC 7230 token, the value is made of `baggage-octet`s and is
/// percent-decoded, and each property is `key` or `key OWS "=" OWS value`.
/// A member that breaks the grammar, or whose value has a malformed `%`
/// escape, is dropped; the others are kept. Percent-decoded bytes that are
/// not UTF-8 become U+FFFD, as the specification requires. Properties are
/// kept, without their optional whitespace and without decoding, as the
/// member's [`BaggageMetadata`] (for example `k1=v1;k2`). Empty members
/// (`a=1,,b=2`) are ignored.
///
/// Limits: members are kept in order while at most [`MAX_BAGGAGE_MEMBERS`]
/// members and at most [`MAX_BAGGAGE_BYTES`] bytes (each kept member's text
/// as it appears in the header, without surrounding whitespace, plus one
/// byte per separating `,`) have been taken; the first member that would
/// exceed either limit and all members after it are dropped whole. A member
/// is never cut short. When a key repeats, the later value wins (that is how
/// [`Baggage`] stores entries). If no member survives, the context is returned
/// unchanged.
///
/// Injection writes one `baggage` header with the context's entries in key
/// order, values percent-encoded, under the same two limits (entries that do
/// not fit are dropped whole). An entry whose metadata is not a valid
/// property list is dropped rather than sent malformed. Nothing is written
/// when there is nothing to send.
///
/// Specification: <https://www.w3.org/TR/baggage/>.
#[derive(Debug, Clone, Copy, Default)]
pub struct StrictBaggagePropagator {
    _private: (),
}

impl StrictBaggagePropagator {
    /// Creates the propagator. It has no configuration.
    pub const fn new() -> Self {
        Self { _private: () }
    }
}

impl TextMapPropagator for StrictBaggagePropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        if let Some(header) = format_baggage(cx.baggage()) {
            injector.set(BAGGAGE_HEADER, header);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let Some(values) = extractor.get_all(BAGGAGE_HEADER) else {
            return cx.clone();
        };
        let baggage = parse_baggage_values(values.iter().copied());
        if baggage.is_empty() {
            cx.clone()
        } else {
            cx.with_baggage(baggage)
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(FIELDS.as_slice())
    }
}

/// One list member that passed validation.
struct Member {
    key: String,
    value: String,
    metadata: String,
}

/// Running totals for the two propagation limits.
#[derive(Default)]
struct Budget {
    members: usize,
    bytes: usize,
}

impl Budget {
    /// Accounts for one more member of `len` bytes, or returns `false` (and
    /// changes nothing) if it would break a limit.
    fn take(&mut self, len: usize) -> bool {
        let separator = usize::from(self.members > 0);
        let bytes = self.bytes + separator + len;
        if self.members == MAX_BAGGAGE_MEMBERS || bytes > MAX_BAGGAGE_BYTES {
            return false;
        }
        self.members += 1;
        self.bytes = bytes;
        true
    }
}

/// Parses `baggage` header values, joined as one `,`-separated list, into a
/// [`Baggage`], applying the member and byte limits.
fn parse_baggage_values<'a>(values: impl IntoIterator<Item = &'a str>) -> Baggage {
    let mut baggage = Baggage::new();
    let mut budget = Budget::default();
    let members = values
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(trim_ows)
        .filter(|member| !member.is_empty());

    for text in members {
        let Some(member) = parse_member(text) else {
            continue;
        };
        if !budget.take(text.len()) {
            break;
        }
        // The limits above are at least as tight as the ones `Baggage`
        // enforces (key + decoded value + metadata never exceeds the header
        // text), so this insert is never refused for size.
        baggage.insert_with_metadata(
            member.key,
            member.value,
            BaggageMetadata::from(member.metadata),
        );
    }
    baggage
}

/// Parses one list member (already trimmed of surrounding whitespace).
fn parse_member(text: &str) -> Option<Member> {
    let mut parts = text.split(';');
    let key_value = parts.next()?;
    let (key, value) = key_value.split_once('=')?;
    let (key, value) = (trim_ows(key), trim_ows(value));
    if !is_token(key) || !value.bytes().all(is_baggage_octet) {
        return None;
    }
    let value = percent_decode_strict(value)?;
    let metadata = normalize_properties(parts)?;
    Some(Member {
        key: key.to_owned(),
        value,
        metadata,
    })
}

/// Validates properties (`key` or `key OWS "=" OWS value`) and joins them
/// with `;` without their optional whitespace. `None` if any is invalid,
/// including an empty one (`a=1;` or `a=1;;p`).
fn normalize_properties<'a>(properties: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut normalized = String::new();
    for property in properties {
        let property = trim_ows(property);
        let (key, value) = match property.split_once('=') {
            Some((key, value)) => (trim_ows(key), Some(trim_ows(value))),
            None => (property, None),
        };
        if !is_token(key) {
            return None;
        }
        if !normalized.is_empty() {
            normalized.push(';');
        }
        normalized.push_str(key);
        if let Some(value) = value {
            if !value.bytes().all(is_baggage_octet) {
                return None;
            }
            normalized.push('=');
            normalized.push_str(value);
        }
    }
    Some(normalized)
}

/// Serialises `baggage` as a header value under the limits, or `None` if
/// nothing can be sent.
fn format_baggage(baggage: &Baggage) -> Option<String> {
    if baggage.is_empty() {
        return None;
    }
    let mut entries: Vec<_> = baggage.iter().collect();
    entries.sort_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));

    let mut header = String::new();
    let mut budget = Budget::default();
    for (key, (value, metadata)) in entries {
        let key = key.as_str();
        if !is_token(key) {
            continue;
        }
        let metadata = metadata.as_str();
        let properties = if metadata.is_empty() {
            String::new()
        } else {
            match normalize_properties(metadata.split(';')) {
                Some(properties) => properties,
                None => continue,
            }
        };

        let mut member = String::with_capacity(key.len() + 1 + value.as_str().len());
        member.push_str(key);
        member.push('=');
        member.extend(utf8_percent_encode(value.as_str(), VALUE_ENCODE_SET));
        if !properties.is_empty() {
            member.push(';');
            member.push_str(&properties);
        }

        if !budget.take(member.len()) {
            break;
        }
        if !header.is_empty() {
            header.push(',');
        }
        header.push_str(&member);
    }
    (!header.is_empty()).then_some(header)
}

/// Strips optional whitespace (`*( SP / HTAB )`) from both ends.
fn trim_ows(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}

/// RFC 7230 `token`: one or more `tchar`.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// `baggage-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E`.
fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// Decodes `%XX` escapes (either case of hex digit). A `%` not followed by
/// two hex digits makes the whole value invalid (`None`). Decoded bytes that
/// are not UTF-8 are replaced with U+FFFD, as
/// <https://www.w3.org/TR/baggage/#value> requires.
fn percent_decode_strict(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let high = hex_value(*bytes.get(i + 1)?)?;
            let low = hex_value(*bytes.get(i + 2)?)?;
            decoded.push((high << 4) | low);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&decoded).into_owned())
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
