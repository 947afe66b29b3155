//! HTTP instrumentation as [tower] layers, for axum routers and hyper-util clients.
//!
//! - [`ServerLayer`]: one SERVER span per request, named `"{METHOD} {http.route}"`, continuing
//!   the caller's trace; the RED metrics; `x-request-id` kept or created; `x-trace-id` on every
//!   response.
//! - [`ClientLayer`]: one CLIENT span per outgoing request, named `"{METHOD}"`, whose context
//!   is injected into the request headers; the client duration metric.
//!
//! Both follow the stable [HTTP semantic conventions] for span names, attributes, status and
//! metrics. Each span is made in exactly one place: [`server`] or [`client`].
//!
//! [HTTP semantic conventions]: https://opentelemetry.io/docs/specs/semconv/http/
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use telemetry::http::ServerLayer;
//!
//! let app: Router = Router::new()
//!     .route("/orders/{id}", get(|| async { "ok" }))
//!     // `Router::layer` (not a wrapper around the router) so the layer sees the matched route.
//!     .layer(ServerLayer::new());
//! ```

pub mod client;
pub mod server;

use http::Method;
use http::header::HeaderName;

pub use client::{ClientLayer, ClientService};
pub use server::{HttpRoute, ServerLayer, ServerService};

/// The `http.route` of every request that matched no route. One value for all of them, so a
/// scan of random paths cannot create unbounded metric series or span names.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// `x-request-id`: kept when the caller sent a valid one, created (UUID v4) otherwise, and
/// echoed on the response.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `x-trace-id`: the trace id (32 lowercase hex digits) the request joined, on every response,
/// so a user holding a response can open its trace.
pub static X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");

/// The `http.request.method` value: the method if it is one of the nine standard methods,
/// `_OTHER` otherwise (semantic conventions: keeps span names and metric labels bounded).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

/// The span-name form of the method: `HTTP` for non-standard methods, as the conventions say.
pub(crate) fn method_for_span_name(label: &'static str) -> &'static str {
    if label == "_OTHER" { "HTTP" } else { label }
}

/// The three digits of every status code, built at compile time, so that a status code label
/// or attribute is a `&'static str` and costs no allocation per request.
static STATUS_DIGITS: [[u8; 3]; 1000] = {
    let mut table = [[0u8; 3]; 1000];
    let mut i = 0;
    while i < 1000 {
        table[i] = [
            b'0' + (i / 100) as u8,
            b'0' + (i / 10 % 10) as u8,
            b'0' + (i % 10) as u8,
        ];
        i += 1;
    }
    table
};

/// A status code as text (`"200"`), without allocating. (`StatusCode::as_str` borrows from
/// the code, which a metric label cannot keep.)
pub(crate) fn status_str(status: http::StatusCode) -> &'static str {
    // `StatusCode` is always 100..=999.
    std::str::from_utf8(&STATUS_DIGITS[usize::from(status.as_u16()) % 1000]).unwrap_or("")
}

/// `network.protocol.version` for a request's HTTP version.
pub(crate) fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_their_three_digits() {
        for code in [100, 200, 202, 404, 429, 500, 503, 999] {
            let status = http::StatusCode::from_u16(code).unwrap();
            assert_eq!(status_str(status), status.as_str());
        }
    }

    #[test]
    fn unknown_methods_are_reported_as_other() {
        let m = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_label(&m), "_OTHER");
        assert_eq!(method_for_span_name(method_label(&m)), "HTTP");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
    }
}
