//! Environment variables, read with errors that name the variable and the expected form.

use std::net::SocketAddr;
use std::time::Duration;

/// A variable that is set but unusable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?} is not valid: expected {expected}")]
pub struct EnvError {
    /// The variable.
    pub variable: String,
    /// Its value.
    pub value: String,
    /// What would be accepted.
    pub expected: &'static str,
}

/// The variable's value, or `default` when unset or empty.
pub fn string(variable: &str, default: &str) -> String {
    std::env::var(variable)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// `FAULTLINE_ADMIN_TOKEN`: the bearer token every admin mutation (`PUT`/`DELETE
/// /admin/faults`) must carry; `None` (unset or blank) leaves the admin API open.
pub fn admin_token() -> Option<String> {
    std::env::var("FAULTLINE_ADMIN_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// A socket address such as `127.0.0.1:8080` from `variable`, or `default`.
///
/// # Errors
/// [`EnvError`] when the variable is set to something that is not `host:port` with an IP.
pub fn socket_addr(variable: &str, default: &str) -> Result<SocketAddr, EnvError> {
    let value = string(variable, default);
    value.parse().map_err(|_| EnvError {
        variable: variable.to_owned(),
        value,
        expected: "an IP address and port such as 127.0.0.1:8080",
    })
}

/// A positive whole number from `variable`, or `default`.
///
/// # Errors
/// [`EnvError`] when the variable is set to something else.
pub fn positive(variable: &str, default: u64) -> Result<u64, EnvError> {
    match std::env::var(variable)
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or(EnvError {
                variable: variable.to_owned(),
                value,
                expected: "a positive whole number",
            }),
    }
}

/// A positive whole number that fits a `u32` from `variable`, or `default`.
///
/// # Errors
/// [`EnvError`] when the variable is set to something else.
pub fn positive_u32(variable: &str, default: u32) -> Result<u32, EnvError> {
    let n = positive(variable, u64::from(default))?;
    u32::try_from(n).map_err(|_| EnvError {
        variable: variable.to_owned(),
        value: n.to_string(),
        expected: "a positive whole number below 4294967296",
    })
}

/// A duration of a positive whole number of milliseconds from `variable` (named `…_MS`), or
/// `default`.
///
/// # Errors
/// [`EnvError`] when the variable is set to something else.
pub fn millis(variable: &str, default: Duration) -> Result<Duration, EnvError> {
    let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    positive(variable, default_ms).map(Duration::from_millis)
}
