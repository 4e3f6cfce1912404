//! A bound on the calls the orgadmin services work on at once, shared by all
//! connections. A call over the bound is refused at once with
//! RESOURCE_EXHAUSTED instead of queueing: without it, offered load past
//! capacity piled up waiting for database connections (measured: 1.4 GB of
//! memory and throughput falling to a third at 1.5x capacity). Clients retry
//! with back-off; health and reflection stay outside the bound, so probes
//! still answer while the service sheds.
//!
//! Every call of the orgadmin services passes here, so this is also where a
//! call gets its server span (joined to the caller's W3C `traceparent`) and
//! its `rpc.server.duration` measurement, shed calls included.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use orgadmin_domain::{metrics, telemetry};
use prost::Message as _;
use tracing::Instrument;

use tokio::sync::Semaphore;
use tonic::server::NamedService;

/// How long a request's message may take to arrive, read before the call
/// takes a place: a client that sent its headers and then nothing (or a
/// byte a minute) held a place for ever, and 256 of them shut the service
/// to everyone, before any token was checked.
const REQUEST_READ_LIMIT: Duration = Duration::from_secs(30);

/// The largest request body read ahead: one message (the services refuse
/// larger ones) and its five-byte gRPC frame header.
const REQUEST_READ_BYTES: usize = crate::server::MAX_MESSAGE_BYTES + 5;

/// The request bytes read ahead at once, over all calls, in KiB: what
/// bounds the memory of bodies read before a call takes its place (the
/// in-flight bound did, when bodies were read after it). A call's message
/// is usually under a KiB; import files stream and are not read ahead.
const READ_AHEAD_BUDGET_KIB: usize = 64 * 1024;

static READ_AHEAD_BUDGET: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(READ_AHEAD_BUDGET_KIB)));

/// The permits of the whole server: one per call worked on, and of those
/// at most a quarter held by calls that stream their answer.
#[derive(Clone)]
pub struct InFlight {
    calls: Arc<Semaphore>,
    streams: Arc<Semaphore>,
}

impl InFlight {
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            calls: Arc::new(Semaphore::new(limit)),
            streams: Arc::new(Semaphore::new((limit / 4).max(1))),
        }
    }

    pub fn wrap<S>(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            permits: self.calls.clone(),
            stream_permits: self.streams.clone(),
        }
    }
}

/// One service behind the shared bound.
#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
    stream_permits: Arc<Semaphore>,
}

impl<S: NamedService> NamedService for Shed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower_service::Service<http::Request<tonic::body::Body>> for Shed<S>
where
    S: tower_service::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
        + NamedService
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let started = Instant::now();
        // A call made as another user must name its method to the handler,
        // which alone decides whether it may be made so (`acting`).
        if request.headers().contains_key(crate::acting::ACT_AS_HEADER) {
            let method = crate::acting::CalledMethod(request.uri().path().to_owned());
            request.extensions_mut().insert(method);
        }
        let service = S::NAME;
        let method = if telemetry::traces_enabled() || telemetry::metrics_enabled() {
            declared_method(request.uri().path())
        } else {
            ""
        };
        let span = rpc_span(&request, service, method);
        // The inner service was made ready by `poll_ready`; the clone left
        // behind is the one the next call readies.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let permits = self.permits.clone();
        let stream_permits = self.stream_permits.clone();
        let (streams_in, streams_out) = streaming(request.uri().path());
        Box::pin(
            async move {
                let span = tracing::Span::current();
                // A call with one request message is read whole first; an
                // upload (client streaming) authenticates before its first
                // message and limits its own pauses (`imports`).
                let mut read_ahead_bytes = None;
                if !streams_in {
                    let (parts, body) = request.into_parts();
                    let body = match read_ahead(body).await {
                        Ok((body, held)) => {
                            read_ahead_bytes = held;
                            body
                        }
                        Err(status) => {
                            if status.code() == tonic::Code::ResourceExhausted {
                                metrics::rpc_shed(service, method);
                            }
                            let refused = status.into_http();
                            finish(&span, service, method, &refused, started);
                            return Ok(refused);
                        }
                    };
                    request = http::Request::from_parts(parts, body);
                }
                // A streamed answer (an export, a report, a watch) works
                // while its body is sent, long after its headers: it holds
                // its places until the body ends or the client goes. Before,
                // it gave them back with the headers, so any number of
                // exports ran outside the bound. Streams may take only a
                // quarter of the places, so long watches cannot shut out
                // every other call.
                let stream_permit = if streams_out {
                    match stream_permits.try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => return Ok(shed(&span, service, method, started)),
                    }
                } else {
                    None
                };
                let Ok(permit) = permits.try_acquire_owned() else {
                    return Ok(shed(&span, service, method, started));
                };
                let response = inner.call(request).await;
                drop(read_ahead_bytes);
                let response = response?;
                finish(&span, service, method, &response, started);
                Ok(match stream_permit {
                    Some(stream_permit) => {
                        response.map(|body| tonic::body::Body::new(HoldingBody::new(body, [permit, stream_permit])))
                    }
                    None => response,
                })
            }
            .instrument(span),
        )
    }
}

/// A call refused because the in-flight bound is reached.
fn shed(
    span: &tracing::Span,
    service: &'static str,
    method: &'static str,
    started: Instant,
) -> http::Response<tonic::body::Body> {
    tracing::debug!("shedding a call: the in-flight bound is reached");
    let refused = crate::error::overloaded().into_http();
    metrics::rpc_shed(service, method);
    finish(span, service, method, &refused, started);
    refused
}

/// A response body that holds its call's places until it ends or is
/// dropped (the client went away).
struct HoldingBody {
    inner: tonic::body::Body,
    held: Option<[tokio::sync::OwnedSemaphorePermit; 2]>,
}

impl HoldingBody {
    fn new(inner: tonic::body::Body, held: [tokio::sync::OwnedSemaphorePermit; 2]) -> Self {
        Self {
            inner,
            held: Some(held),
        }
    }
}

impl http_body::Body for HoldingBody {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        // The trailers end a gRPC answer: the client may call again as soon
        // as it has them, so the places go back with them, not after.
        let ended = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers(),
            Poll::Pending => false,
        };
        if ended {
            self.held = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The whole request body, read within `REQUEST_READ_LIMIT` and
/// `REQUEST_READ_BYTES`, as a body the service reads again, with its share
/// of `READ_AHEAD_BUDGET` (held until the call ends). The budget spent, the
/// call is refused as overloaded.
async fn read_ahead(
    mut body: tonic::body::Body,
) -> Result<(tonic::body::Body, Option<tokio::sync::OwnedSemaphorePermit>), tonic::Status> {
    let deadline = tokio::time::Instant::now() + REQUEST_READ_LIMIT;
    let mut read: Vec<u8> = Vec::new();
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(tonic::Status::deadline_exceeded(format!(
                    "the request did not arrive within {} s of its headers",
                    REQUEST_READ_LIMIT.as_secs()
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(status))) => {
                return Err(tonic::Status::cancelled(format!(
                    "the request could not be read: {}",
                    status.message()
                )));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if read.len() + data.len() > REQUEST_READ_BYTES {
            // As tonic answers a message over its limit.
            return Err(tonic::Status::out_of_range(format!(
                "the request is larger than {REQUEST_READ_BYTES} bytes"
            )));
        }
        let kib = u32::try_from(data.len().div_ceil(1024)).unwrap_or(u32::MAX);
        if kib > 0 {
            let Ok(share) = READ_AHEAD_BUDGET.clone().try_acquire_many_owned(kib) else {
                return Err(crate::error::overloaded());
            };
            match &mut held {
                Some(held) => held.merge(share),
                None => held = Some(share),
            }
        }
        read.extend_from_slice(&data);
    }
    Ok((
        tonic::body::Body::new(http_body_util::Full::new(tonic::codegen::Bytes::from(read))),
        held,
    ))
}

/// The methods the proto declares, by request path: their names and
/// whether the client streams its messages, and the server its answers.
static DECLARED: LazyLock<HashMap<String, (String, bool, bool)>> = LazyLock::new(|| {
    let set = prost_types::FileDescriptorSet::decode(orgadmin_proto::v1::FILE_DESCRIPTOR_SET)
        .expect("the compiled-in descriptor set decodes");
    let mut methods = HashMap::new();
    for file in set.file {
        let package = file.package();
        for service in &file.service {
            for method in &service.method {
                methods.insert(
                    format!("/{package}.{}/{}", service.name(), method.name()),
                    (
                        method.name().to_owned(),
                        method.client_streaming(),
                        method.server_streaming(),
                    ),
                );
            }
        }
    }
    methods
});

/// The name of the method a request path calls, when the proto declares it;
/// `_OTHER` (the semantic conventions' word) for any other path. Spans and
/// metrics name only declared methods, so a caller cannot mint new metric
/// series with made-up paths, and naming a call allocates nothing.
fn declared_method(path: &str) -> &'static str {
    DECLARED.get(path).map_or("_OTHER", |(name, _, _)| name.as_str())
}

/// Whether the method at `path` takes a stream of request messages, and
/// whether it answers with a stream.
fn streaming(path: &str) -> (bool, bool) {
    DECLARED
        .get(path)
        .map_or((false, false), |(_, client, server)| (*client, *server))
}

/// The call's server span, child of the caller's span when the request
/// carries `traceparent`. A disabled span while traces are off.
fn rpc_span<B>(request: &http::Request<B>, service: &str, method: &str) -> tracing::Span {
    if !telemetry::traces_enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        telemetry::RPC_SPAN_NAME,
        otel.name = format!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    telemetry::adopt_remote_parent(&span, header("traceparent"), header("tracestate"));
    span
}

/// Records the outcome on the span and in `rpc.server.duration`. A unary
/// error is a trailers-only response (grpc-status in the headers); a
/// response without it in the headers started streaming and counts as OK.
fn finish<B>(
    span: &tracing::Span,
    service: &'static str,
    method: &'static str,
    response: &http::Response<B>,
    started: Instant,
) {
    let code: i64 = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    span.record("rpc.grpc.status_code", code);
    // The server-side error codes of the RPC conventions: the caller's
    // mistakes (INVALID_ARGUMENT, NOT_FOUND, ...) are not the server's.
    if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
        span.record("otel.status_code", "ERROR");
    }
    metrics::rpc_finished(service, method, code, started.elapsed());
}

#[cfg(test)]
mod tests {
    use super::declared_method;

    #[test]
    fn only_declared_methods_are_named() {
        assert_eq!(declared_method("/orgadmin.v1.UserService/GetUser"), "GetUser");
        assert_eq!(
            declared_method("/orgadmin.v1.ImportService/CreateImport"),
            "CreateImport"
        );
        assert_eq!(declared_method("/orgadmin.v1.UserService/MadeUp"), "_OTHER");
        assert_eq!(declared_method("/orgadmin.v1.UserService/GetUser/extra"), "_OTHER");
        assert_eq!(declared_method("GetUser"), "_OTHER");
    }
}
