//! An HTTP client for service-to-service calls: hyper-util's pooled client behind the telemetry
//! CLIENT layer (span, context injection, duration metric) and a timeout on every call.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::{ServiceBuilder, ServiceExt};

/// Why a call produced no response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No complete response within the timeout.
    #[error("{method} {url}: no response within {timeout:?}")]
    Timeout {
        /// The method.
        method: Method,
        /// The URL called.
        url: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The connection failed or broke (`error_type` is the span's `error.type`).
    #[error("{method} {url}: {error_type}: {message}")]
    Transport {
        /// The method.
        method: Method,
        /// The URL called.
        url: String,
        /// A short class such as `connection_refused`.
        error_type: &'static str,
        /// The underlying error.
        message: String,
    },
    /// The request could not be built (a bad URL, for instance).
    #[error("invalid request to {url}: {message}")]
    Invalid {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
}

impl ClientError {
    /// Whether the call may have reached the server (a timeout) or surely did not.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Timeout { .. })
    }
}

/// A response with its body read.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl HttpResponse {
    /// The body parsed as JSON.
    ///
    /// # Errors
    /// The `serde_json` error when the body is not the expected JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// A cheap-to-clone instrumented HTTP/1.1 client (connections are pooled and shared by clones).
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    faults: chaos::client::OutboundLayer,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A client with a connection pool (idle connections kept 30 s).
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            inner,
            faults: chaos::client::OutboundLayer::new(chaos::Faults::new("client", &[])),
        }
    }

    /// Lets the service's outbound faults (`dependency.latency`, `dependency.error`,
    /// `telemetry.drop_context`) act on this client's calls; name each dependency with
    /// [`OutboundLayer::dependency`](chaos::client::OutboundLayer::dependency) so a fault can
    /// target it by name. The faults act below the CLIENT span, as a real slow or failing
    /// dependency would.
    pub fn with_faults(mut self, faults: chaos::client::OutboundLayer) -> Self {
        self.faults = faults;
        self
    }

    /// Sends `method url` with an optional JSON body; the whole exchange (headers and body)
    /// must finish within `timeout`.
    ///
    /// # Errors
    /// [`ClientError`] when no complete response arrived. Any HTTP status is a response, not an
    /// error.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        json_body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<HttpResponse, ClientError> {
        self.request_with_headers(method, url, json_body, HeaderMap::new(), timeout)
            .await
    }

    /// As [`request`](Self::request), with extra request `headers` (an `Authorization`, say).
    ///
    /// # Errors
    /// As [`request`](Self::request).
    pub async fn request_with_headers(
        &self,
        method: Method,
        url: &str,
        json_body: Option<Vec<u8>>,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Result<HttpResponse, ClientError> {
        let mut builder = Request::builder().method(method.clone()).uri(url);
        if json_body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(h) = builder.headers_mut() {
            h.extend(headers);
        }
        let request = builder
            .body(Full::from(json_body.unwrap_or_default()))
            .map_err(|e| ClientError::Invalid {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        let service = ServiceBuilder::new()
            .layer(telemetry::http::ClientLayer::new())
            .layer(tower::timeout::TimeoutLayer::new(timeout))
            .layer(self.faults.clone())
            .service(self.inner.clone());
        let exchange = async {
            let response = service.oneshot(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, tower::BoxError>(HttpResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(ClientError::Timeout {
                method,
                url: url.to_owned(),
                timeout,
            }),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => {
                let error_type = telemetry::http::client::error_class(e.as_ref());
                if error_type == "timeout" {
                    Err(ClientError::Timeout {
                        method,
                        url: url.to_owned(),
                        timeout,
                    })
                } else {
                    Err(ClientError::Transport {
                        method,
                        url: url.to_owned(),
                        error_type,
                        message: e.to_string(),
                    })
                }
            }
        }
    }

    /// `GET url`.
    ///
    /// # Errors
    /// As [`request`](Self::request).
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<HttpResponse, ClientError> {
        self.request(Method::GET, url, None, timeout).await
    }

    /// `method url` with `body` serialised as JSON.
    ///
    /// # Errors
    /// As [`request`](Self::request).
    pub async fn send_json<T: Serialize>(
        &self,
        method: Method,
        url: &str,
        body: &T,
        timeout: Duration,
    ) -> Result<HttpResponse, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Invalid {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
        self.request(method, url, Some(bytes), timeout).await
    }
}
