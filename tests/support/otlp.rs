//! A real OTLP/gRPC receiver for the telemetry test: a tonic server on the
//! OpenTelemetry collector's trace and metrics services (the generated code
//! of `opentelemetry-proto`), keeping what it is sent.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
pub use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
pub use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumberValue;
pub use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
pub use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::{Request, Response, Status};

/// A span as received, with its process's resource attributes.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service_name: String,
    pub resource: Vec<KeyValue>,
    pub span: Span,
}

/// A metric as received, with the service that sent it.
#[derive(Debug, Clone)]
pub struct ReceivedMetric {
    pub service_name: String,
    pub metric: Metric,
}

#[derive(Default)]
struct Received {
    span_count: u64,
    spans: Vec<ReceivedSpan>,
    metrics: Vec<ReceivedMetric>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Received>>);

fn service_name(resource: &[KeyValue]) -> String {
    resource
        .iter()
        .find(|kv| kv.key == "service.name")
        .map(|kv| text(kv.value.as_ref()))
        .unwrap_or_default()
}

/// The text of an attribute value (numbers and booleans written out).
pub fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// The value of `key` among `attributes`, as text.
pub fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.as_ref()))
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = self.0.lock().unwrap();
        let request = request.into_inner();
        received.span_count += request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum::<u64>();
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.spans.push(ReceivedSpan {
                        service_name: service_name(&resource),
                        resource: resource.clone(),
                        span,
                    });
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut received = self.0.lock().unwrap();
        for resource_metrics in request.into_inner().resource_metrics {
            let resource = resource_metrics.resource.map(|r| r.attributes).unwrap_or_default();
            for scope in resource_metrics.scope_metrics {
                for metric in scope.metrics {
                    received.metrics.push(ReceivedMetric {
                        service_name: service_name(&resource),
                        metric,
                    });
                }
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

/// The receiver; stops when dropped.
pub struct OtlpReceiver {
    pub endpoint: String,
    collector: Collector,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0", false).await
    }

    /// A receiver on `listen` that keeps only the number of spans (for a
    /// benchmark that sends millions).
    pub async fn start_counting(listen: &str) -> Self {
        Self::start_on(listen, true).await
    }

    /// A receiver that speaks TLS only, as a managed collector does, under
    /// a certificate for `localhost` from a CA of its own: (the receiver,
    /// its endpoint `https://localhost:…`, the CA's PEM).
    pub async fn start_tls() -> (Self, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test collector CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let identity = tonic::transport::Identity::from_pem(leaf.pem(), key.serialize_pem());
        let mut receiver = Self::start_serving("127.0.0.1:0", false, Some(identity)).await;
        receiver.endpoint = receiver.endpoint.replace("http://127.0.0.1", "https://localhost");
        (receiver, ca.pem())
    }

    async fn start_on(listen: &str, count_only: bool) -> Self {
        Self::start_serving(listen, count_only, None).await
    }

    async fn start_serving(listen: &str, count_only: bool, tls: Option<tonic::transport::Identity>) -> Self {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let collector = Collector::default();
        let mut builder = tonic::transport::Server::builder();
        if let Some(identity) = tls {
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .unwrap();
        }
        let server = tokio::spawn({
            let collector = collector.clone();
            async move {
                // A benchmark's sink counts spans; the test's keeps them.
                let counter = count_only.then(|| counting::TraceCounter(collector.clone()));
                let keeper = (!count_only).then(|| TraceServiceServer::new(collector.clone()));
                let _ = builder
                    .add_optional_service(counter)
                    .add_optional_service(keeper)
                    .add_service(MetricsServiceServer::new(collector))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await;
            }
        });
        Self {
            endpoint,
            collector,
            server,
        }
    }

    /// How many spans arrived, kept or not.
    pub fn span_count(&self) -> u64 {
        self.collector.0.lock().unwrap().span_count
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collector.0.lock().unwrap().spans.clone()
    }

    pub fn metrics(&self) -> Vec<ReceivedMetric> {
        self.collector.0.lock().unwrap().metrics.clone()
    }
}

/// The benchmark's trace receiver: it only counts spans. The benchmark runs
/// it on the cores the measured server uses (a real collector runs on other
/// machines), so it reads each span's length and skips its bytes instead of
/// decoding every attribute the way the full receiver above does.
mod counting {
    use std::task::{Context, Poll};

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    use tonic::codegen::{Body, BoxFuture, StdError, http};

    use super::Collector;

    /// `ExportTraceServiceRequest` with only the fields that lead to the
    /// spans; prost skips the others (resources, scopes) unread.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CountedRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<CountedResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CountedResourceSpans {
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<CountedScopeSpans>,
    }

    /// Each span stays an opaque slice of the request's buffer.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CountedScopeSpans {
        #[prost(bytes = "bytes", repeated, tag = "2")]
        pub spans: Vec<prost::bytes::Bytes>,
    }

    #[derive(Clone)]
    pub struct TraceCounter(pub Collector);

    impl tonic::server::NamedService for TraceCounter {
        const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    }

    struct Export(Collector);

    impl tonic::server::UnaryService<CountedRequest> for Export {
        type Response = ExportTraceServiceResponse;
        type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;

        fn call(&mut self, request: tonic::Request<CountedRequest>) -> Self::Future {
            let spans: u64 = request
                .get_ref()
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len() as u64)
                .sum();
            self.0.0.lock().unwrap().span_count += spans;
            Box::pin(async {
                Ok(tonic::Response::new(ExportTraceServiceResponse {
                    partial_success: None,
                }))
            })
        }
    }

    impl<B> tonic::codegen::Service<http::Request<B>> for TraceCounter
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<B>) -> Self::Future {
            let collector = self.0.clone();
            Box::pin(async move {
                if request.uri().path() != "/opentelemetry.proto.collector.trace.v1.TraceService/Export" {
                    return Ok(tonic::Status::unimplemented("only Export").into_http());
                }
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(Export(collector), request).await)
            })
        }
    }
}
