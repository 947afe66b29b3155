//! Strict parsing of the W3C `tracestate` header.
//!
//! Specification: <https://www.w3.org/TR/trace-context-2/#tracestate-header>.

use opentelemetry::trace::TraceState;

/// The most list members a `tracestate` may carry. A header with more is
/// dropped whole.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// Longest key: `(lcalpha / DIGIT) 0*255(keychar)`.
const MAX_KEY_LEN: usize = 256;
/// Longest value: `0*255(chr) nblk-chr`.
const MAX_VALUE_LEN: usize = 256;

/// Why a `tracestate` was dropped by [`parse_tracestate`].
///
/// A syntax error is all or nothing: one malformed member, or too many
/// members, empties the whole trace state. It never invalidates the
/// accompanying `traceparent`. Duplicate keys and keys that
/// `opentelemetry::trace::TraceState` cannot hold are not errors; those
/// members are dropped one by one (see [`parse_tracestate`]).
///
/// Specification: <https://www.w3.org/TR/trace-context-2/#tracestate-header-field-values>.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TracestateError {
    /// More than [`MAX_TRACESTATE_MEMBERS`] non-empty list members.
    #[error("tracestate has more than {MAX_TRACESTATE_MEMBERS} list members")]
    TooManyMembers,
    /// A list member has no `=`.
    #[error("tracestate list member {0:?} is not key=value")]
    Member(String),
    /// A key breaks the key grammar: it is empty, longer than 256
    /// characters, does not start with a lowercase letter or digit, or
    /// contains a character other than `a-z 0-9 _ - * / @`.
    #[error("tracestate key {0:?} is invalid")]
    Key(String),
    /// A value is empty, too long, contains a character outside 0x20-0x7E,
    /// a `,` or `=`, or ends in a space.
    #[error("tracestate value {0:?} is invalid")]
    Value(String),
}

/// Parses one `tracestate` value strictly.
///
/// List members are separated by `,`; spaces and tabs around members are
/// ignored, as are empty members. Every member must be `key=value` where
/// * key follows the Level 2 grammar
///   `(lcalpha / DIGIT) 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@")`,
///   so `foo@`, `foo@@bar` and `1special` are valid keys but `@foo` is not;
/// * value is 1 to 256 printable ASCII characters (0x20-0x7E) other than
///   `,` and `=`, not ending in a space.
///
/// Members are kept in order, with two exceptions the specification allows
/// ("vendors MAY discard" them), neither of which affects the other members:
/// * a key seen before: only its first member is kept;
/// * a member `opentelemetry::trace::TraceState` refuses to hold. Its key
///   check (opentelemetry 0.33) is modelled on the Level 1 multi-tenant
///   grammar and rejects spec-valid keys with more than one `@` (`foo@@bar`,
///   `foo@bar@baz`), more than 13 characters after the `@`
///   (`t@abcdefghijklmn`), or a character other than a lowercase letter or
///   digit right after the `@` (`t@_x`). Such members cannot be stored, so
///   they are dropped; they are not forwarded either.
///
/// There is no length-based truncation.
///
/// Specification: <https://www.w3.org/TR/trace-context-2/#tracestate-header>.
///
/// # Errors
///
/// A member without `=`, an invalid key or value, or more than
/// [`MAX_TRACESTATE_MEMBERS`] non-empty members (duplicates included) is an
/// error; callers must then use an empty trace state. See
/// [`TracestateError`].
pub fn parse_tracestate(value: &str) -> Result<TraceState, TracestateError> {
    parse_tracestate_values(std::iter::once(value))
}

/// Parses several `tracestate` header values as if they had been joined with
/// `,` (which is what HTTP means by a repeated header).
pub(crate) fn parse_tracestate_values<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<TraceState, TracestateError> {
    let raw_members = values
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(|member| member.trim_matches([' ', '\t']))
        .filter(|member| !member.is_empty());

    // Check the syntax of every member first: any error drops the whole
    // trace state, whatever came before it.
    let mut members: Vec<(&str, &str)> = Vec::new();
    for member in raw_members {
        if members.len() == MAX_TRACESTATE_MEMBERS {
            return Err(TracestateError::TooManyMembers);
        }
        let Some((key, value)) = member.split_once('=') else {
            return Err(TracestateError::Member(member.to_owned()));
        };
        if !is_valid_key(key) {
            return Err(TracestateError::Key(key.to_owned()));
        }
        if !is_valid_value(value) {
            return Err(TracestateError::Value(value.to_owned()));
        }
        members.push((key, value));
    }

    // Then drop, one by one, later duplicates and members `TraceState`
    // refuses.
    let mut kept: Vec<(&str, &str)> = Vec::with_capacity(members.len());
    for (key, value) in members {
        let duplicate = kept.iter().any(|(seen, _)| *seen == key);
        if !duplicate && TraceState::from_key_value([(key, value)]).is_ok() {
            kept.push((key, value));
        }
    }

    // Every kept member was accepted on its own and there are at most
    // `MAX_TRACESTATE_MEMBERS` of them, so this cannot fail.
    Ok(TraceState::from_key_value(kept).unwrap_or_default())
}

/// `lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"`: the characters allowed
/// after the first one of a key.
fn is_key_char(byte: u8) -> bool {
    byte.is_ascii_lowercase()
        || byte.is_ascii_digit()
        || matches!(byte, b'_' | b'-' | b'*' | b'/' | b'@')
}

/// Checks a key: `(lcalpha / DIGIT) 0*255(keychar)`.
fn is_valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    matches!(bytes.first(), Some(first) if first.is_ascii_lowercase() || first.is_ascii_digit())
        && bytes.len() <= MAX_KEY_LEN
        && bytes[1..].iter().all(|&b| is_key_char(b))
}

/// Checks a value: `0*255(chr) nblk-chr`, `chr = %x20 / nblk-chr`,
/// `nblk-chr = %x21-2B / %x2D-3C / %x3E-7E`.
fn is_valid_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    let is_chr = |b: u8| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=';
    !bytes.is_empty()
        && bytes.len() <= MAX_VALUE_LEN
        && bytes.iter().all(|&b| is_chr(b))
        && bytes.last() != Some(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_grammar_edges() {
        let rows: &[(&str, bool)] = &[
            ("a", true),
            ("a0_-*/@", true),
            ("0a", true),
            ("1special", true),
            ("_a", false),
            ("-a", false),
            ("*a", false),
            ("/a", false),
            ("A", false),
            ("aB", false),
            ("a.b", false),
            ("a b", false),
            ("", false),
            ("0@a", true),
            ("t@0a", true),
            ("t@", true),
            ("t@@s", true),
            ("t@s@x", true),
            ("t@_x", true),
            ("@s", false),
            ("@", false),
            ("t@S", false),
        ];
        for (key, ok) in rows {
            assert_eq!(is_valid_key(key), *ok, "key {key:?}");
        }
        assert!(is_valid_key(&"a".repeat(256)));
        assert!(!is_valid_key(&"a".repeat(257)));
        assert!(is_valid_key(&format!(
            "{}@{}",
            "t".repeat(241),
            "s".repeat(14)
        )));
        assert!(is_valid_key(&format!("{}@s", "t".repeat(254))));
        assert!(!is_valid_key(&format!("{}@s", "t".repeat(255))));
        assert!(is_valid_key(&format!("t@{}", "s".repeat(254))));
        assert!(!is_valid_key(&format!("t@{}", "s".repeat(255))));
    }

    #[test]
    fn value_grammar_edges() {
        let rows: &[(&str, bool)] = &[
            ("v", true),
            (" v", true),
            ("v v", true),
            ("v ", false),
            ("", false),
            ("a=b", false),
            ("a\u{7f}", false),
            ("a\tb", false),
            ("é", false),
        ];
        for (value, ok) in rows {
            assert_eq!(is_valid_value(value), *ok, "value {value:?}");
        }
        assert!(is_valid_value(&"v".repeat(256)));
        assert!(!is_valid_value(&"v".repeat(257)));
    }
}
