//! The SERVER span, the RED metrics and the request/trace id headers of every inbound request.
//!
//! Per request, [`ServerService`]:
//! 1. extracts the caller's context (`traceparent`, `tracestate`, `baggage`) with the global
//!    propagator: an invalid header starts a new trace, it never fails the request;
//! 2. opens a SERVER span `"{METHOD} {http.route}"` with the semantic-convention attributes
//!    (`http.request.method`, `http.route`, `url.path`, `url.scheme`, `server.address`,
//!    `network.protocol.version`, `user_agent.original`), child of that context, and runs the
//!    handler inside it;
//! 3. keeps the caller's `x-request-id` (or creates one) and adds it and `x-trace-id` to the
//!    response;
//! 4. records `http.response.status_code`, marks the span Error on 5xx only (a 4xx is the
//!    client's fault, not the server's: semantic conventions), and sets `error.type`;
//! 5. records `http_server_request_duration_seconds` and `http_server_active_requests`.
//!
//! The route is the *template* (`/orders/{id}`), read from axum's `MatchedPath` (or an
//! [`HttpRoute`] extension set by another router); a request that matched nothing gets
//! [`UNMATCHED_ROUTE`], never its raw path.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use opentelemetry::trace::TraceContextExt;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    UNMATCHED_ROUTE, X_REQUEST_ID, X_TRACE_ID, method_for_span_name, method_label,
    protocol_version, status_str,
};
use crate::metrics::{HTTP_SERVER_ACTIVE_REQUESTS, HTTP_SERVER_REQUEST_DURATION};

/// The route template of a request, as a request extension. Routers other than axum (or axum
/// code that rewrites paths) can insert it before [`ServerService`] runs; it takes precedence
/// over axum's `MatchedPath`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRoute(pub Cow<'static, str>);

/// A [`Layer`] producing [`ServerService`]. Add it with axum's `Router::layer` so that the
/// matched route is known when it runs.
#[derive(Clone, Debug, Default)]
pub struct ServerLayer {
    handles: Arc<MetricHandles>,
}

impl ServerLayer {
    /// The layer, using the global propagator and the global `metrics` recorder. Install the
    /// recorder before the first request: the layer keeps the metric handles it gets then.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerService {
            inner,
            handles: self.handles.clone(),
        }
    }
}

/// Instruments one inbound HTTP request; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct ServerService<S> {
    inner: S,
    handles: Arc<MetricHandles>,
}

/// The RED metrics' handles, looked up in the recorder once per label set instead of on every
/// request (a lookup hashes and compares every label: ~4k instructions per request).
#[derive(Debug, Default)]
struct MetricHandles {
    /// Per route: (method, status code, error type) and its duration histogram.
    durations: RwLock<HashMap<String, Vec<DurationSeries>>>,
    /// Per method.
    active: RwLock<Vec<(&'static str, metrics::Gauge)>>,
}

#[derive(Debug)]
struct DurationSeries {
    method: &'static str,
    status: &'static str,
    error_type: &'static str,
    histogram: metrics::Histogram,
}

impl MetricHandles {
    /// Records `http_server_request_duration_seconds`. Every series carries the same four
    /// labels (`http_response_status_code` and `error_type` are empty when they do not apply,
    /// which Prometheus treats as absent) so strict OpenMetrics parsers accept the family.
    fn record_duration(
        &self,
        method: &'static str,
        route: &str,
        status: &'static str,
        error_type: &'static str,
        seconds: f64,
    ) {
        let matches = |s: &DurationSeries| {
            s.method == method && s.status == status && s.error_type == error_type
        };
        if let Ok(map) = self.durations.read()
            && let Some(series) = map.get(route).and_then(|v| v.iter().find(|s| matches(s)))
        {
            series.histogram.record(seconds);
            return;
        }
        let histogram = metrics::histogram!(
            HTTP_SERVER_REQUEST_DURATION,
            "http_request_method" => method,
            "http_route" => route.to_owned(),
            "http_response_status_code" => status,
            "error_type" => error_type,
        );
        histogram.record(seconds);
        if let Ok(mut map) = self.durations.write() {
            let per_route = map.entry(route.to_owned()).or_default();
            if !per_route.iter().any(matches) {
                per_route.push(DurationSeries {
                    method,
                    status,
                    error_type,
                    histogram,
                });
            }
        }
    }

    /// The `http_server_active_requests` gauge of `method`.
    fn active(&self, method: &'static str) -> metrics::Gauge {
        if let Ok(gauges) = self.active.read()
            && let Some((_, gauge)) = gauges.iter().find(|(m, _)| *m == method)
        {
            return gauge.clone();
        }
        let gauge = metrics::gauge!(HTTP_SERVER_ACTIVE_REQUESTS, "http_request_method" => method);
        if let Ok(mut gauges) = self.active.write()
            && !gauges.iter().any(|(m, _)| *m == method)
        {
            gauges.push((method, gauge.clone()));
        }
        gauge
    }
}

fn route_of<B>(req: &Request<B>) -> Cow<'static, str> {
    if let Some(HttpRoute(route)) = req.extensions().get::<HttpRoute>() {
        return route.clone();
    }
    #[cfg(feature = "axum")]
    if let Some(matched) = req.extensions().get::<axum::extract::MatchedPath>() {
        return Cow::Owned(matched.as_str().to_owned());
    }
    Cow::Borrowed(UNMATCHED_ROUTE)
}

/// A request id we are willing to echo: visible ASCII, at most 128 bytes. Anything else is
/// replaced, so a hostile header cannot bloat or corrupt our logs.
fn acceptable_request_id(value: &HeaderValue) -> bool {
    let b = value.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

impl<S, B, RB> Service<Request<B>> for ServerService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let method = method_label(req.method());
        let route = route_of(&req);
        let parent = crate::propagation::extract_http(req.headers());

        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
            .unwrap_or_default();
        let (server_address, server_port) = split_host(host);
        // Both recorded as `&str`: a `%` (Display) field is formatted into a new `String` by
        // the OpenTelemetry layer, through `core::fmt` (~700 instructions each).
        let span_name = span_name(method, &route);
        let span = tracing::info_span!(
            target: "telemetry::http",
            "HTTP request",
            otel.name = span_name.as_str(),
            otel.kind = "server",
            http.request.method = method,
            http.route = &*route,
            url.path = req.uri().path(),
            url.scheme = req.uri().scheme_str().unwrap_or("http"),
            server.address = (!server_address.is_empty()).then_some(server_address),
            server.port = server_port.map(i64::from),
            network.protocol.version = protocol_version(req.version()),
            user_agent.original = req
                .headers()
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        );
        // `http.response.status_code`, `error.type` and the status are set on the
        // OpenTelemetry span directly when the response is known (`finish_span`): recording
        // them as `tracing` fields would run every layer's `on_record` (~1.3k instructions
        // per request) for attributes only the OpenTelemetry layer reads.
        // Must happen before the span is entered or its context is read (tracing-opentelemetry).
        let _ = span.set_parent(parent);
        let trace_id = {
            let cx = span.context();
            let id = cx.span().span_context().trace_id();
            (id != opentelemetry::trace::TraceId::INVALID).then(|| trace_id_header(id))
        };

        let request_id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) if acceptable_request_id(v) => v.clone(),
            _ => {
                let v = HeaderValue::try_from(uuid::Uuid::new_v4().to_string())
                    .expect("a UUID is a valid header value");
                req.headers_mut().insert(X_REQUEST_ID.clone(), v.clone());
                v
            }
        };

        let active = ActiveRequest::start(self.handles.active(method));
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
                route,
                trace_id,
                request_id,
                handles: self.handles.clone(),
                _active: active,
            }),
        }
    }
}

/// `"{METHOD} {route}"`, the name of a SERVER span (semantic conventions).
fn span_name(method: &'static str, route: &str) -> String {
    let method = method_for_span_name(method);
    let mut name = String::with_capacity(method.len() + 1 + route.len());
    name.push_str(method);
    name.push(' ');
    name.push_str(route);
    name
}

fn split_host(host: &str) -> (&str, Option<u16>) {
    // `[::1]:8080`, `example.com:80`, `example.com`
    if let Some(rest) = host.strip_prefix('[')
        && let Some((addr, tail)) = rest.split_once(']')
    {
        return (addr, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (host, None),
    }
}

/// Increments `http_server_active_requests` now and decrements it when dropped, so a request
/// cancelled mid-way (client went away) is not counted as active for ever.
struct ActiveRequest(metrics::Gauge);

impl ActiveRequest {
    fn start(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

struct State {
    span: Span,
    start: Instant,
    method: &'static str,
    route: Cow<'static, str>,
    trace_id: Option<HeaderValue>,
    request_id: HeaderValue,
    handles: Arc<MetricHandles>,
    _active: ActiveRequest,
}

pin_project! {
    /// The response future of [`ServerService`]: polls the handler inside the span, then
    /// finishes the span and the metrics.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        state: Option<State>,
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(state) = this.state.as_mut() else {
            return this.inner.poll(cx);
        };
        // One enter for polling the handler and, once it is done, for finishing the span
        // (entering costs the OpenTelemetry layer a context switch each time).
        let entered = state.span.enter();
        let result = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        let elapsed = state.start.elapsed().as_secs_f64();
        let route = std::mem::take(&mut state.route);
        let result = match result {
            Ok(mut response) => {
                let status = response.status();
                let code = status.as_u16();
                let status_text = status_str(status);
                let error_type = status.is_server_error().then_some(status_text);
                finish_span(&state.span, Some(code), error_type);
                let headers = response.headers_mut();
                headers.insert(X_REQUEST_ID.clone(), state.request_id.clone());
                if let Some(id) = state.trace_id.take() {
                    headers.insert(X_TRACE_ID.clone(), id);
                }
                state.handles.record_duration(
                    state.method,
                    &route,
                    status_text,
                    error_type.unwrap_or_default(),
                    elapsed,
                );
                if error_type.is_some() {
                    tracing::error!(
                        target: "telemetry::http",
                        status_code = code,
                        duration_s = elapsed,
                        "request failed with a server error"
                    );
                } else {
                    tracing::debug!(
                        target: "telemetry::http",
                        status_code = code,
                        duration_s = elapsed,
                        "request completed"
                    );
                }
                Ok(response)
            }
            Err(e) => {
                finish_span(&state.span, None, Some("_OTHER"));
                state
                    .handles
                    .record_duration(state.method, &route, "", "_OTHER", elapsed);
                tracing::error!(target: "telemetry::http", duration_s = elapsed, "request failed in the service stack");
                Err(e)
            }
        };
        drop(entered);
        // Ends the span (after leaving it) and the active-request count.
        *this.state = None;
        Poll::Ready(result)
    }
}

/// Sets `http.response.status_code` (when there is a response) and, for a server error,
/// `error.type` and the Error status on the OpenTelemetry span of `span`.
fn finish_span(span: &Span, status_code: Option<u16>, error_type: Option<&'static str>) {
    if let Some(code) = status_code {
        span.set_attribute("http.response.status_code", i64::from(code));
    }
    if let Some(error_type) = error_type {
        span.set_attribute("error.type", error_type);
        span.set_status(opentelemetry::trace::Status::error(""));
    }
}

/// The `x-trace-id` value: the trace id as 32 lowercase hex digits.
fn trace_id_header(id: opentelemetry::trace::TraceId) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 32];
    for (i, b) in id.to_bytes().iter().enumerate() {
        hex[2 * i] = HEX[usize::from(b >> 4)];
        hex[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    HeaderValue::from_bytes(&hex).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_headers_split_into_address_and_port() {
        assert_eq!(split_host("example.com:8080"), ("example.com", Some(8080)));
        assert_eq!(split_host("example.com"), ("example.com", None));
        assert_eq!(split_host("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host("::1"), ("::1", None));
        assert_eq!(split_host(""), ("", None));
    }

    #[test]
    fn the_trace_id_header_is_the_lowercase_hex_id() {
        let id =
            opentelemetry::trace::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(trace_id_header(id), id.to_string().as_str());
    }

    #[test]
    fn only_sane_request_ids_are_echoed() {
        assert!(acceptable_request_id(&HeaderValue::from_static("abc-123")));
        assert!(!acceptable_request_id(&HeaderValue::from_static("")));
        assert!(!acceptable_request_id(&HeaderValue::from_static("a b")));
        let long = "x".repeat(129);
        assert!(!acceptable_request_id(
            &HeaderValue::try_from(long).unwrap()
        ));
    }
}
