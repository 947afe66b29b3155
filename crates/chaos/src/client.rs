//! Outbound faults: a tower layer for an HTTP client that acts on calls to one dependency —
//! `dependency.latency`, `dependency.error` and `telemetry.drop_context`.
//!
//! Put it *below* the telemetry CLIENT layer (nearer the transport), so the client span sees
//! the slow or failed call just as it would see a slow or failing dependency, and so that
//! dropping the trace context removes the headers the CLIENT layer has just injected:
//!
//! ```ignore
//! ServiceBuilder::new()
//!     .layer(telemetry::http::ClientLayer::new())
//!     .layer(tower::timeout::TimeoutLayer::new(timeout))
//!     .layer(chaos::client::OutboundLayer::new(faults).dependency("orders", "http://127.0.0.1:8081"))
//!     .service(hyper_client)
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use tower::{BoxError, Layer, Service};

use crate::kind::FaultKind;
use crate::registry::{Faults, target_matches};

/// The W3C propagation headers `telemetry.drop_context` removes.
const PROPAGATION_HEADERS: [&str; 3] = ["traceparent", "tracestate", "baggage"];

/// The layer: the service's faults and the names of its dependencies.
#[derive(Clone, Debug)]
pub struct OutboundLayer {
    faults: Faults,
    /// `(host:port, name)` of each named dependency.
    names: Arc<Vec<(String, String)>>,
}

impl OutboundLayer {
    /// A layer with no named dependency yet (targets then match `host:port` only).
    pub fn new(faults: Faults) -> Self {
        Self {
            faults,
            names: Arc::new(Vec::new()),
        }
    }

    /// Names the dependency at `base_url` (`http://127.0.0.1:8081` → `orders`), so that a
    /// fault's `target` can say `orders`.
    pub fn dependency(mut self, name: &str, base_url: &str) -> Self {
        if let Ok(uri) = base_url.parse::<http::Uri>()
            && let Some(authority) = uri.authority()
        {
            Arc::make_mut(&mut self.names)
                .push((authority_with_port(&uri, authority), name.into()));
        }
        self
    }
}

/// The `host:port` of a base URL (`http://127.0.0.1:8081/` → `127.0.0.1:8081`; the scheme's
/// port when none is written), as outbound faults match it; `None` for a URL without a host.
pub fn authority(base_url: &str) -> Option<String> {
    let uri = base_url.parse::<http::Uri>().ok()?;
    let authority = uri.authority()?;
    Some(authority_with_port(&uri, authority))
}

fn authority_with_port(uri: &http::Uri, authority: &http::uri::Authority) -> String {
    let port = authority
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    format!("{}:{port}", authority.host())
}

impl<S> Layer<S> for OutboundLayer {
    type Service = Outbound<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Outbound {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`OutboundLayer`]. Its responses carry either the dependency's body or,
/// for an injected error status, a small problem+json body.
#[derive(Clone, Debug)]
pub struct Outbound<S> {
    inner: S,
    layer: OutboundLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<Request<B>> for Outbound<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<Either<RB, Full<Bytes>>>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone is ready only after poll_ready; swap so the ready one is used.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let faults = self.layer.faults.clone();
        if faults.is_empty() {
            return Box::pin(async move {
                let response = inner.call(request).await.map_err(Into::into)?;
                Ok(response.map(Either::Left))
            });
        }
        let authority = request
            .uri()
            .authority()
            .map(|a| authority_with_port(request.uri(), a))
            .unwrap_or_default();
        let name = self
            .layer
            .names
            .iter()
            .find(|(a, _)| *a == authority)
            .map(|(_, n)| n.clone());
        let names: Vec<&str> = [Some(authority.as_str()), name.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let matches = |spec: &crate::ValidSpec| target_matches(spec, &names);

        if let Some(hit) = faults.roll(FaultKind::TelemetryDropContext, matches) {
            hit.acted();
            for h in PROPAGATION_HEADERS {
                request.headers_mut().remove(h);
            }
        }
        let latency = faults
            .roll(FaultKind::DependencyLatency, matches)
            .map(|hit| {
                hit.acted();
                hit.spec().jittered_duration()
            });
        let error = faults.roll(FaultKind::DependencyError, matches).map(|hit| {
            hit.acted();
            hit.spec().status
        });
        Box::pin(async move {
            if let Some(delay) = latency {
                tokio::time::sleep(delay).await;
            }
            match error {
                Some(Some(status)) => {
                    let status =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                    let body = format!(
                        r#"{{"type":"about:blank","title":"{}","status":{}}}"#,
                        status.canonical_reason().unwrap_or("Error"),
                        status.as_u16()
                    );
                    let mut response = Response::new(Either::Right(Full::from(body)));
                    *response.status_mut() = status;
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/problem+json"),
                    );
                    Ok(response)
                }
                Some(None) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused",
                )) as BoxError),
                None => {
                    let response = inner.call(request).await.map_err(Into::into)?;
                    Ok(response.map(Either::Left))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::time::{Duration, Instant};
    use tower::ServiceExt;

    /// A dependency that echoes whether it received a traceparent.
    fn echo() -> impl Service<
        Request<()>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(|r: Request<()>| async move {
            let seen = r.headers().contains_key("traceparent");
            Ok::<_, Infallible>(Response::new(Full::from(seen.to_string())))
        })
    }

    fn request(url: &str) -> Request<()> {
        Request::get(url)
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(())
            .unwrap()
    }

    async fn body(r: Response<Either<Full<Bytes>, Full<Bytes>>>) -> String {
        use http_body_util::BodyExt;
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn faults_act_only_on_their_target() {
        let faults = Faults::new("gateway", &FaultKind::ALL);
        let layer = OutboundLayer::new(faults.clone())
            .dependency("orders", "http://127.0.0.1:8081")
            .dependency("fulfillment", "http://127.0.0.1:8082/");
        let svc = layer.layer(echo());
        let set = |json: &str| faults.set(&serde_json::from_str(json).unwrap()).unwrap();

        set(r#"{"kind":"telemetry.drop_context","target":"orders"}"#);
        let r = svc
            .clone()
            .oneshot(request("http://127.0.0.1:8081/x"))
            .await
            .unwrap();
        assert_eq!(body(r).await, "false", "orders lost the context");
        let r = svc
            .clone()
            .oneshot(request("http://127.0.0.1:8082/x"))
            .await
            .unwrap();
        assert_eq!(body(r).await, "true", "fulfillment kept it");

        set(r#"{"kind":"dependency.error","target":"fulfillment","status":502}"#);
        let r = svc
            .clone()
            .oneshot(request("http://127.0.0.1:8082/x"))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);

        set(r#"{"kind":"dependency.error","target":"127.0.0.1:9999"}"#);
        let e = svc
            .clone()
            .oneshot(request("http://127.0.0.1:9999/x"))
            .await
            .unwrap_err();
        assert_eq!(
            telemetry::http::client::error_class(e.as_ref()),
            "connection_refused"
        );

        set(r#"{"kind":"dependency.latency","target":"orders","ms":100}"#);
        let start = Instant::now();
        svc.clone()
            .oneshot(request("http://127.0.0.1:8081/x"))
            .await
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(100));
        let start = Instant::now();
        svc.oneshot(request("http://localhost:7000/x"))
            .await
            .unwrap();
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}
