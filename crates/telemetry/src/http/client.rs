//! The CLIENT span and duration metric of every outgoing request.
//!
//! Per request, [`ClientService`]:
//! 1. opens a CLIENT span `"{METHOD}"` (child of the current span) with `http.request.method`,
//!    `server.address`, `server.port` and `url.full`;
//! 2. injects that span's context (`traceparent`, `tracestate`, `baggage`) into the request
//!    headers with the global propagator, so the next hop continues the same trace;
//! 3. records `http.response.status_code`; marks the span Error on 4xx and 5xx (for a client
//!    both mean the call failed) and on transport errors, with `error.type` set to the status
//!    code or to a short error class (`connection_refused`, `timeout`, …);
//! 4. records `http_client_request_duration_seconds`.
//!
//! It wraps any `tower::Service<http::Request<B>>`, such as hyper-util's legacy `Client`:
//!
//! ```no_run
//! # async fn f() -> Result<(), tower::BoxError> {
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<hyper::body::Bytes>>();
//! let mut client = ServiceBuilder::new()
//!     .layer(telemetry::http::ClientLayer::new())
//!     .service(client);
//! let request = http::Request::get("http://127.0.0.1:8081/orders/1").body(Full::default())?;
//! let response = client.ready().await?.call(request).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{BoxError, Layer, Service};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{method_label, status_str};
use crate::metrics::HTTP_CLIENT_REQUEST_DURATION;

/// A [`Layer`] producing [`ClientService`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientLayer {
    _private: (),
}

impl ClientLayer {
    /// The layer, using the global propagator and the global `metrics` recorder.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientService { inner }
    }
}

/// Instruments one outgoing HTTP request; see the [module docs](self). Its error type is
/// [`BoxError`] so that transport errors of any inner service can be classified.
#[derive(Clone, Debug)]
pub struct ClientService<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for ClientService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let method = method_label(req.method());
        let uri = req.uri();
        let server_address = uri.host().unwrap_or_default().to_owned();
        let server_port = uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        let span = tracing::info_span!(
            target: "telemetry::http",
            "HTTP client request",
            otel.name = super::method_for_span_name(method),
            otel.kind = "client",
            http.request.method = method,
            server.address = server_address.as_str(),
            server.port = server_port.map(i64::from),
            url.full = %uri,
            http.response.status_code = Empty,
            otel.status_code = Empty,
            error.type = Empty,
        );
        crate::propagation::inject_http(&span.context(), req.headers_mut());
        let future = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        ResponseFuture {
            inner: future,
            state: Some(State {
                span,
                start,
                method,
                server_address,
                server_port,
            }),
        }
    }
}

struct State {
    span: Span,
    start: Instant,
    method: &'static str,
    server_address: String,
    server_port: Option<u16>,
}

pin_project! {
    /// The response future of [`ClientService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        state: Option<State>,
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.state.as_ref().map(|s| s.span.enter());
            match this.inner.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r.map_err(Into::into),
            }
        };
        let Some(state) = this.state.take() else {
            return Poll::Ready(result);
        };
        let elapsed = state.start.elapsed().as_secs_f64();
        match &result {
            Ok(response) => {
                let status = response.status();
                let code = status.as_u16();
                state
                    .span
                    .record("http.response.status_code", i64::from(code));
                let failed = status.is_client_error() || status.is_server_error();
                if failed {
                    state.span.record("otel.status_code", "ERROR");
                    state.span.record("error.type", status.as_str());
                }
                record_duration(
                    state.method,
                    state.server_address,
                    state.server_port,
                    status_str(status),
                    if failed { status_str(status) } else { "" },
                    elapsed,
                );
            }
            Err(error) => {
                let class = error_class(error.as_ref());
                state.span.record("otel.status_code", "ERROR");
                state.span.record("error.type", class);
                state.span.in_scope(|| {
                    tracing::warn!(target: "telemetry::http", error = %error, error_type = class, "HTTP request failed before a response");
                });
                record_duration(
                    state.method,
                    state.server_address,
                    state.server_port,
                    "",
                    class,
                    elapsed,
                );
            }
        }
        Poll::Ready(result)
    }
}

/// Records `http_client_request_duration_seconds` with the same five labels on every series
/// (empty when they do not apply; Prometheus treats an empty label as absent). `server_port`
/// is required by the semantic conventions, and it is what tells two services on one host
/// apart.
fn record_duration(
    method: &'static str,
    server_address: String,
    server_port: Option<u16>,
    status: &'static str,
    error_type: &'static str,
    seconds: f64,
) {
    let labels = vec![
        metrics::Label::from_static_parts("http_request_method", method),
        metrics::Label::new("server_address", server_address),
        metrics::Label::new(
            "server_port",
            server_port.map(|p| p.to_string()).unwrap_or_default(),
        ),
        metrics::Label::from_static_parts("http_response_status_code", status),
        metrics::Label::from_static_parts("error_type", error_type),
    ];
    metrics::histogram!(HTTP_CLIENT_REQUEST_DURATION, labels).record(seconds);
}

/// A low-cardinality `error.type` for a transport error: the kind of the innermost
/// `std::io::Error` in the source chain (`connection_refused`, `timed_out`, …), `timeout` for a
/// tower timeout, `_OTHER` otherwise.
pub fn error_class(error: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if e.is::<tower::timeout::error::Elapsed>() {
            return "timeout";
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return match io.kind() {
                ConnectionRefused => "connection_refused",
                ConnectionReset => "connection_reset",
                ConnectionAborted => "connection_aborted",
                NotConnected => "not_connected",
                AddrNotAvailable => "address_not_available",
                TimedOut => "timeout",
                BrokenPipe => "broken_pipe",
                UnexpectedEof => "unexpected_eof",
                _ => "io_error",
            };
        }
        current = e.source();
    }
    "_OTHER"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(std::io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "client error")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn transport_errors_are_classified_by_their_io_cause() {
        let e = Wrapper(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(error_class(&e), "connection_refused");
        let e: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(error_class(e.as_ref()), "timeout");
        let e: BoxError = "something else".into();
        assert_eq!(error_class(e.as_ref()), "_OTHER");
    }
}
