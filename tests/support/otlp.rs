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
    /// Keep only counts (a benchmark's sink), not the spans themselves.
    count_only: bool,
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
        if received.count_only {
            return Ok(Response::new(ExportTraceServiceResponse { partial_success: None }));
        }
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

    async fn start_on(listen: &str, count_only: bool) -> Self {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let collector = Collector::default();
        collector.0.lock().unwrap().count_only = count_only;
        let server = tokio::spawn({
            let collector = collector.clone();
            async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(collector.clone()))
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
