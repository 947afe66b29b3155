//! What every Faultline service shares, so each service's own code is only its domain:
//!
//! - [`admin`]: the admin listener's `GET /metrics`, `GET /healthz` and `GET /readyz`;
//! - [`problem`]: RFC 9457 `application/problem+json` errors carrying the `trace_id`, and a JSON
//!   body extractor whose rejections are such problems;
//! - [`client`]: an HTTP client with the telemetry CLIENT layer and a per-call timeout;
//! - [`server`]: binding the app and admin listeners, shutting both down gracefully on
//!   SIGINT/SIGTERM, and [`server::Running`], what a service's `start` returns;
//! - `db` (feature `sqlx`): the `error.type` of a database error, and a `DATABASE_URL`'s server
//!   address (for spans) and its redacted form (for messages);
//! - [`env`](mod@env): reading the CONTRACT's environment variables with errors that name them.

pub mod admin;
pub mod client;
#[cfg(feature = "sqlx")]
pub mod db;
pub mod env;
pub mod problem;
pub mod server;

/// The trace id of the current span (32 lowercase hex digits), if there is a valid one.
pub use telemetry::current_trace_id;
