//! Strict parsing of the W3C `tracestate` header.
//!
//! Specification: <https://www.w3.org/TR/trace-context-2/#tracestate-header>.

use opentelemetry::trace::TraceState;

/// The most list members a `tracestate` may carry. A header with more is
/// dropped whole.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// Longest simple key: `lcalpha 0*255(...)`.
const MAX_SIMPLE_KEY_LEN: usize = 256;
/// Longest tenant id of a multi-tenant key: `(lcalpha / DIGIT) 0*240(...)`.
const MAX_TENANT_LEN: usize = 241;
/// Longest system id of a multi-tenant key: `lcalpha 0*13(...)`.
const MAX_SYSTEM_LEN: usize = 14;
/// Longest value: `0*255(chr) nblk-chr`.
const MAX_VALUE_LEN: usize = 256;

/// Why a `tracestate` was dropped by [`parse_tracestate`].
///
/// A `tracestate` is all or nothing: one bad member empties the whole trace
/// state. It never invalidates the accompanying `traceparent`.
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
    /// A key breaks the simple-key or multi-tenant-key grammar.
    #[error("tracestate key {0:?} is invalid")]
    Key(String),
    /// A value is empty, too long, contains a character outside 0x20-0x7E,
    /// a `,` or `=`, or ends in a space.
    #[error("tracestate value {0:?} is invalid")]
    Value(String),
    /// The same key appears twice.
    #[error("tracestate key {0:?} appears more than once")]
    DuplicateKey(String),
    /// The members are valid per the specification but
    /// `opentelemetry::trace::TraceState` refused to hold them (its own key
    /// check is narrower; for example it rejects 14-character system ids).
    #[error("opentelemetry refused the trace state: {0}")]
    Rejected(String),
}

/// Parses one `tracestate` value strictly.
///
/// List members are separated by `,`; spaces and tabs around members are
/// ignored, as are empty members. Every member must be `key=value` where
/// * key is a simple key `lcalpha 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/")`
///   or a multi-tenant key `tenant@system`, tenant being
///   `(lcalpha / DIGIT) 0*240(...)` and system `lcalpha 0*13(...)`;
/// * value is 1 to 256 printable ASCII characters (0x20-0x7E) other than
///   `,` and `=`, not ending in a space.
///
/// All members are kept in order; there is no length-based truncation.
///
/// Specification: <https://www.w3.org/TR/trace-context-2/#tracestate-header>.
///
/// # Errors
///
/// Any invalid member, a duplicate key, or more than
/// [`MAX_TRACESTATE_MEMBERS`] members is an error; callers must then use an
/// empty trace state. See [`TracestateError`].
pub fn parse_tracestate(value: &str) -> Result<TraceState, TracestateError> {
    parse_tracestate_values(std::iter::once(value))
}

/// Parses several `tracestate` header values as if they had been joined with
/// `,` (which is what HTTP means by a repeated header).
pub(crate) fn parse_tracestate_values<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<TraceState, TracestateError> {
    let mut members: Vec<(&str, &str)> = Vec::new();
    let raw_members = values
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(|member| member.trim_matches([' ', '\t']))
        .filter(|member| !member.is_empty());

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
        if members.iter().any(|(seen, _)| *seen == key) {
            return Err(TracestateError::DuplicateKey(key.to_owned()));
        }
        members.push((key, value));
    }

    TraceState::from_key_value(members).map_err(|err| TracestateError::Rejected(err.to_string()))
}

/// `lcalpha / DIGIT / "_" / "-" / "*" / "/"`: the characters allowed after the
/// first one in every part of a key.
fn is_key_char(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'_' | b'-' | b'*' | b'/')
}

/// Checks a key against the simple-key and multi-tenant-key grammars.
fn is_valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    match key.split_once('@') {
        None => {
            matches!(bytes.first(), Some(first) if first.is_ascii_lowercase())
                && bytes.len() <= MAX_SIMPLE_KEY_LEN
                && bytes[1..].iter().all(|&b| is_key_char(b))
        }
        Some((tenant, system)) => {
            let (tenant, system) = (tenant.as_bytes(), system.as_bytes());
            let tenant_ok = matches!(tenant.first(), Some(first) if first.is_ascii_lowercase() || first.is_ascii_digit())
                && tenant.len() <= MAX_TENANT_LEN
                && tenant[1..].iter().all(|&b| is_key_char(b));
            // `is_key_char` excludes '@', so a second '@' fails here.
            let system_ok = matches!(system.first(), Some(first) if first.is_ascii_lowercase())
                && system.len() <= MAX_SYSTEM_LEN
                && system[1..].iter().all(|&b| is_key_char(b));
            tenant_ok && system_ok
        }
    }
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
            ("a0_-*/", true),
            ("0a", false),
            ("_a", false),
            ("A", false),
            ("", false),
            ("0@a", true),
            ("t@0a", false),
            ("t@", false),
            ("@s", false),
            ("t@s@x", false),
            ("t@S", false),
        ];
        for (key, ok) in rows {
            assert_eq!(is_valid_key(key), *ok, "key {key:?}");
        }
        assert!(is_valid_key(&"a".repeat(256)));
        assert!(!is_valid_key(&"a".repeat(257)));
        assert!(is_valid_key(&format!("{}@s", "t".repeat(241))));
        assert!(!is_valid_key(&format!("{}@s", "t".repeat(242))));
        assert!(is_valid_key(&format!("t@{}", "s".repeat(14))));
        assert!(!is_valid_key(&format!("t@{}", "s".repeat(15))));
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
