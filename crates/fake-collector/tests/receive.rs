//! End-to-end tests: real OTLP requests over gRPC (tonic client) and
//! HTTP/protobuf (hyper client) into a running `FakeCollector`.

use std::time::Duration;

use fake_collector::{
    AttrValue, Behaviour, FakeCollector, SpanKind, StatusCode, by_trace, children, find, find_all,
    find_log,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord as ProtoLogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span as ProtoSpan, Status, span, status,
};
use prost::Message;

const TRACE_ID: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
const TRACE_HEX: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ROOT_ID: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
const ROOT_HEX: &str = "00f067aa0ba902b7";
const CHILD_ID: [u8; 8] = [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31];
const CHILD_HEX: &str = "b7ad6b7169203331";

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.to_owned())
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", s(service)),
            kv("deployment.environment.name", s("test")),
        ],
        ..Default::default()
    })
}

fn scope(name: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.to_owned(),
        version: "1.0".to_owned(),
        ..Default::default()
    })
}

/// A root SERVER span with one event and one link, and a CLIENT child.
fn trace_request(service: &str) -> ExportTraceServiceRequest {
    let root = ProtoSpan {
        trace_id: TRACE_ID.to_vec(),
        span_id: ROOT_ID.to_vec(),
        parent_span_id: Vec::new(),
        flags: 0x101,
        trace_state: "vendor=abc".to_owned(),
        name: "GET /users/{id}".to_owned(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_250_000_000,
        attributes: vec![
            kv("http.request.method", s("GET")),
            kv("http.response.status_code", Value::IntValue(500)),
            kv("retry", Value::BoolValue(false)),
            kv("ratio", Value::DoubleValue(0.25)),
            kv(
                "tags",
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(s("a")),
                        },
                        AnyValue {
                            value: Some(s("b")),
                        },
                    ],
                }),
            ),
        ],
        events: vec![span::Event {
            time_unix_nano: 1_100_000_000,
            name: "exception".to_owned(),
            attributes: vec![kv("exception.message", s("boom"))],
            ..Default::default()
        }],
        links: vec![span::Link {
            trace_id: vec![0x11; 16],
            span_id: vec![0x22; 8],
            attributes: vec![kv("link.kind", s("follows"))],
            ..Default::default()
        }],
        status: Some(Status {
            message: "internal error".to_owned(),
            code: status::StatusCode::Error as i32,
        }),
        ..Default::default()
    };
    let child = ProtoSpan {
        trace_id: TRACE_ID.to_vec(),
        span_id: CHILD_ID.to_vec(),
        parent_span_id: ROOT_ID.to_vec(),
        flags: 1,
        name: "SELECT users".to_owned(),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: 1_010_000_000,
        end_time_unix_nano: 1_020_000_000,
        status: Some(Status {
            message: String::new(),
            code: status::StatusCode::Ok as i32,
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans {
                scope: scope("my-scope"),
                spans: vec![root, child],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One record inside the trace, one outside any trace.
fn logs_request(service: &str) -> ExportLogsServiceRequest {
    let in_span = ProtoLogRecord {
        time_unix_nano: 1_200_000_000,
        observed_time_unix_nano: 1_200_000_100,
        severity_number: 17,
        severity_text: "ERROR".to_owned(),
        body: Some(AnyValue {
            value: Some(s("request failed")),
        }),
        attributes: vec![kv("user.id", Value::IntValue(42))],
        trace_id: TRACE_ID.to_vec(),
        span_id: ROOT_ID.to_vec(),
        event_name: "app.failure".to_owned(),
        ..Default::default()
    };
    let outside = ProtoLogRecord {
        severity_number: 9,
        severity_text: "INFO".to_owned(),
        body: Some(AnyValue {
            value: Some(Value::IntValue(7)),
        }),
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(service),
            scope_logs: vec![ScopeLogs {
                scope: scope("log-scope"),
                log_records: vec![in_span, outside],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn assert_spans(spans: &[fake_collector::Span], service: &str) {
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let root = find(spans, "GET /users/{id}").expect("root span");
    assert_eq!(root.service_name, service);
    assert_eq!(
        root.resource.get("deployment.environment.name"),
        Some(&AttrValue::String("test".into()))
    );
    assert_eq!(root.scope_name, "my-scope");
    assert_eq!(root.trace_id, TRACE_HEX);
    assert_eq!(root.span_id, ROOT_HEX);
    assert_eq!(root.parent_span_id, "");
    assert!(root.is_root());
    assert_eq!(root.trace_flags, 0x101);
    assert_eq!(root.trace_state, "vendor=abc");
    assert_eq!(root.kind, SpanKind::Server);
    assert_eq!(root.start_unix_nanos, 1_000_000_000);
    assert_eq!(root.end_unix_nanos, 1_250_000_000);
    assert_eq!(root.duration(), Duration::from_millis(250));
    assert_eq!(
        root.attr("http.request.method"),
        Some(&AttrValue::String("GET".into()))
    );
    assert_eq!(
        root.attr("http.response.status_code"),
        Some(&AttrValue::Int(500))
    );
    assert_eq!(
        root.attr_str("http.response.status_code").as_deref(),
        Some("500")
    );
    assert_eq!(root.attr("retry"), Some(&AttrValue::Bool(false)));
    assert_eq!(root.attr("ratio"), Some(&AttrValue::Double(0.25)));
    assert_eq!(root.attr_str("tags").as_deref(), Some("[a, b]"));
    assert_eq!(root.attr("missing"), None);
    assert_eq!(root.status, StatusCode::Error);
    assert_eq!(root.status_message, "internal error");
    assert_eq!(root.events.len(), 1);
    assert_eq!(root.events[0].name, "exception");
    assert_eq!(root.events[0].time_unix_nanos, 1_100_000_000);
    assert_eq!(
        root.events[0].attributes.get("exception.message"),
        Some(&AttrValue::String("boom".into()))
    );
    assert_eq!(root.links.len(), 1);
    assert_eq!(root.links[0].trace_id, "11".repeat(16));
    assert_eq!(root.links[0].span_id, "22".repeat(8));
    assert_eq!(
        root.links[0].attributes.get("link.kind"),
        Some(&AttrValue::String("follows".into()))
    );

    let child = find(spans, "SELECT users").expect("child span");
    assert_eq!(child.span_id, CHILD_HEX);
    assert_eq!(child.parent_span_id, ROOT_HEX);
    assert_eq!(child.kind, SpanKind::Client);
    assert_eq!(child.status, StatusCode::Ok);
    assert!(child.attributes.is_empty());

    assert_eq!(by_trace(spans, TRACE_HEX).len(), 2);
    assert!(by_trace(spans, "ffff").is_empty());
    let kids = children(spans, root);
    assert_eq!(kids.len(), 1);
    assert_eq!(kids[0].name, "SELECT users");
    assert_eq!(find_all(spans, "SELECT users").len(), 1);
}

fn assert_logs(logs: &[fake_collector::LogRecord], service: &str) {
    assert_eq!(logs.len(), 2, "{logs:#?}");
    let err = find_log(logs, "request failed").expect("error record");
    assert_eq!(err.service_name, service);
    assert_eq!(err.scope_name, "log-scope");
    assert_eq!(err.time_unix_nanos, 1_200_000_000);
    assert_eq!(err.observed_time_unix_nanos, 1_200_000_100);
    assert_eq!(err.severity_number, 17);
    assert_eq!(err.severity_text, "ERROR");
    assert_eq!(err.body, "request failed");
    assert_eq!(err.attr("user.id"), Some(&AttrValue::Int(42)));
    assert_eq!(err.trace_id, TRACE_HEX);
    assert_eq!(err.span_id, ROOT_HEX);
    assert_eq!(err.event_name, "app.failure");

    let info = &logs[1];
    assert_eq!(info.body, "7");
    assert_eq!(info.severity_text, "INFO");
    assert_eq!(info.trace_id, "");
    assert_eq!(info.span_id, "");
    assert_eq!(info.time_unix_nanos, 0);
}

#[tokio::test]
async fn grpc_traces_and_logs_are_flattened() {
    let collector = FakeCollector::start().await;
    assert!(collector.grpc_endpoint().starts_with("http://127.0.0.1:"));

    let mut traces = TraceServiceClient::connect(collector.grpc_endpoint())
        .await
        .unwrap();
    let response = traces.export(trace_request("svc-grpc")).await.unwrap();
    assert_eq!(response.into_inner().partial_success, None);

    let mut logs = LogsServiceClient::connect(collector.grpc_endpoint())
        .await
        .unwrap();
    logs.export(logs_request("svc-grpc")).await.unwrap();

    assert_eq!(collector.export_requests(), 2);
    assert_spans(&collector.spans(), "svc-grpc");
    assert_logs(&collector.logs(), "svc-grpc");

    collector.clear();
    assert!(collector.spans().is_empty());
    assert!(collector.logs().is_empty());
    assert_eq!(collector.export_requests(), 0);
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// POSTs `body` with `content_type`; returns (status, content-type, body).
async fn post(
    client: &HttpClient,
    url: String,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, String, Bytes) {
    let request = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let ct = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, ct, body)
}

#[tokio::test]
async fn http_protobuf_traces_and_logs_are_flattened() {
    let collector = FakeCollector::start().await;
    assert!(collector.http_endpoint().starts_with("http://127.0.0.1:"));
    assert_ne!(collector.http_endpoint(), collector.grpc_endpoint());
    let client = http_client();

    let (status, ct, body) = post(
        &client,
        format!("{}/v1/traces", collector.http_endpoint()),
        "application/x-protobuf",
        trace_request("svc-http").encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/x-protobuf");
    assert_eq!(
        ExportTraceServiceResponse::decode(body).unwrap(),
        ExportTraceServiceResponse::default()
    );

    let (status, ct, body) = post(
        &client,
        format!("{}/v1/logs", collector.http_endpoint()),
        "application/x-protobuf",
        logs_request("svc-http").encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/x-protobuf");
    assert_eq!(
        ExportLogsServiceResponse::decode(body).unwrap(),
        ExportLogsServiceResponse::default()
    );

    assert_eq!(collector.export_requests(), 2);
    assert_spans(&collector.spans(), "svc-http");
    assert_logs(&collector.logs(), "svc-http");
}

#[tokio::test]
async fn http_rejects_bad_requests() {
    let collector = FakeCollector::start().await;
    let client = http_client();
    let url = format!("{}/v1/traces", collector.http_endpoint());

    let (status, _, _) = post(&client, url.clone(), "application/json", b"{}".to_vec()).await;
    assert_eq!(status, 415);
    let (status, _, _) = post(
        &client,
        url,
        "application/x-protobuf",
        vec![0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(collector.export_requests(), 0);
    assert!(collector.spans().is_empty());
}

#[tokio::test]
async fn reject_behaviour_fails_both_protocols() {
    let collector = FakeCollector::start().await;
    collector.set_behaviour(Behaviour::Reject);

    let mut traces = TraceServiceClient::connect(collector.grpc_endpoint())
        .await
        .unwrap();
    let err = traces.export(trace_request("svc")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);

    let mut logs = LogsServiceClient::connect(collector.grpc_endpoint())
        .await
        .unwrap();
    let err = logs.export(logs_request("svc")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);

    let client = http_client();
    let (status, ct, _) = post(
        &client,
        format!("{}/v1/traces", collector.http_endpoint()),
        "application/x-protobuf",
        trace_request("svc").encode_to_vec(),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(ct, "application/x-protobuf");

    assert_eq!(collector.export_requests(), 3);
    assert!(collector.spans().is_empty());
    assert!(collector.logs().is_empty());

    collector.set_behaviour(Behaviour::Accept);
    traces.export(trace_request("svc")).await.unwrap();
    assert_eq!(collector.spans().len(), 2);
    assert_eq!(collector.export_requests(), 4);
}

#[tokio::test]
async fn hang_behaviour_holds_calls_until_changed() {
    let collector = FakeCollector::start().await;
    collector.set_behaviour(Behaviour::Hang);
    let mut traces = TraceServiceClient::connect(collector.grpc_endpoint())
        .await
        .unwrap();

    // A client deadline expires while the collector hangs.
    let mut request = tonic::Request::new(trace_request("svc"));
    request.set_timeout(Duration::from_millis(200));
    let err = traces.export(request).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Cancelled, "{err:?}");
    assert!(collector.spans().is_empty());

    // A held call completes once the behaviour changes.
    let mut client = traces.clone();
    let pending = tokio::spawn(async move { client.export(trace_request("svc")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished());
    collector.set_behaviour(Behaviour::Accept);
    pending.await.unwrap().unwrap();
    assert_eq!(collector.spans().len(), 2);
}

#[tokio::test]
async fn wait_for_sees_late_data() {
    let collector = FakeCollector::start().await;
    let endpoint = collector.grpc_endpoint();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut traces = TraceServiceClient::connect(endpoint.clone()).await.unwrap();
        traces.export(trace_request("late")).await.unwrap();
        let mut logs = LogsServiceClient::connect(endpoint).await.unwrap();
        logs.export(logs_request("late")).await.unwrap();
    });
    let spans = collector
        .wait_for_spans(
            |s| find(s, "SELECT users").is_some(),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].service_name, "late");
    let logs = collector
        .wait_for_logs(|l| l.len() == 2, Duration::from_secs(10))
        .await;
    assert_eq!(logs[0].service_name, "late");
}

#[tokio::test]
#[should_panic(expected = "timed out after 100ms waiting for spans; 2 span(s) received")]
async fn wait_for_spans_panics_listing_what_arrived() {
    let collector = FakeCollector::start().await;
    let mut traces = TraceServiceClient::connect(collector.grpc_endpoint())
        .await
        .unwrap();
    traces.export(trace_request("svc")).await.unwrap();
    collector
        .wait_for_spans(|s| find(s, "never").is_some(), Duration::from_millis(100))
        .await;
}

#[tokio::test]
async fn timeout_message_names_spans_and_ids() {
    let collector = FakeCollector::start().await;
    let mut traces = TraceServiceClient::connect(collector.grpc_endpoint())
        .await
        .unwrap();
    traces.export(trace_request("svc")).await.unwrap();
    let c = collector.clone();
    let panic = tokio::spawn(async move {
        c.wait_for_spans(|_| false, Duration::from_millis(50)).await;
    })
    .await
    .unwrap_err()
    .into_panic();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("\"SELECT users\""), "{message}");
    assert!(
        message.contains(&format!("span={CHILD_HEX} parent={ROOT_HEX}")),
        "{message}"
    );
    assert!(message.contains(&format!("trace={TRACE_HEX}")), "{message}");
}

#[tokio::test]
#[should_panic(expected = "waiting for logs; 0 log record(s) received in 0 export call(s)")]
async fn wait_for_logs_panics_on_timeout() {
    let collector = FakeCollector::start().await;
    collector
        .wait_for_logs(|l| !l.is_empty(), Duration::from_millis(50))
        .await;
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_servers() {
    let collector = FakeCollector::start().await;
    let grpc = collector.grpc_endpoint().replace("http://", "");
    let http = collector.http_endpoint().replace("http://", "");
    let clone = collector.clone();
    drop(collector);
    // A clone keeps the servers running.
    tokio::net::TcpStream::connect(&grpc).await.unwrap();
    tokio::net::TcpStream::connect(&http).await.unwrap();
    drop(clone);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(&grpc).await.is_err());
    assert!(tokio::net::TcpStream::connect(&http).await.is_err());
}

#[tokio::test]
async fn dropping_releases_hanging_calls() {
    let collector = FakeCollector::start().await;
    collector.set_behaviour(Behaviour::Hang);
    let mut traces = TraceServiceClient::connect(collector.grpc_endpoint())
        .await
        .unwrap();
    let pending = tokio::spawn(async move { traces.export(trace_request("svc")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(collector);
    let result = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("hanging call released")
        .unwrap();
    assert!(result.is_err());
}
