//! Process plumbing both binaries share: structured logs, OpenTelemetry traces
//! and metrics (R-OPS-3), and the shutdown signal.
//!
//! Logs are text by default, JSON with `ORGADMIN_LOG_FORMAT=json`; the level
//! comes from `RUST_LOG` (default `info`). Log fields never carry a CPR
//! number, a token or a password.
//!
//! Traces and metrics leave over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or the `_TRACES_`/`_METRICS_` variant) is set; the OpenTelemetry SDK reads
//! the other standard variables itself (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`(`_ARG`), `OTEL_BSP_*`,
//! `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_EXPORTER_OTLP_HEADERS` …);
//! `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none` and
//! `OTEL_METRICS_EXPORTER=none` turn them off. Without an endpoint nothing
//! of this is built and a call pays for no span.
//!
//! What a span holds is chosen, not inherited: RPC spans name the method and
//! the status code; domain spans are `#[instrument(skip_all)]`, so no
//! argument (a CPR number, a token, a code) is ever recorded; sea-orm's
//! statement spans carry the SQL text with `$1` placeholders, never values.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithTonicConfig as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The name of the server span each RPC gets (its `otel.name` says which).
pub const RPC_SPAN_NAME: &str = "rpc";

static TRACES_ON: AtomicBool = AtomicBool::new(false);
static METRICS_ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: callers skip building spans nobody reads.
pub fn traces_enabled() -> bool {
    TRACES_ON.load(Ordering::Relaxed)
}

/// Whether metrics are exported: callers skip measurements nobody reads
/// (and the queries behind the outbox gauges).
pub fn metrics_enabled() -> bool {
    METRICS_ON.load(Ordering::Relaxed)
}

/// The exporters of this process; `shutdown` flushes what is buffered.
#[must_use = "call shutdown() before the process exits, or the last spans are lost"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Exports what is still buffered and stops the exporters.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "could not flush the last spans");
        }
        if let Some(provider) = self.meter_provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "could not flush the last metrics");
        }
    }
}

/// Where OTLP goes, read from the standard variables.
struct OtlpChoice {
    traces: bool,
    metrics: bool,
}

impl OtlpChoice {
    fn from_env() -> Self {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        let is = |name: &str, value: &str| std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value));
        if is("OTEL_SDK_DISABLED", "true") {
            return Self {
                traces: false,
                metrics: false,
            };
        }
        let any = set("OTEL_EXPORTER_OTLP_ENDPOINT");
        Self {
            traces: (any || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) && !is("OTEL_TRACES_EXPORTER", "none"),
            metrics: (any || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")) && !is("OTEL_METRICS_EXPORTER", "none"),
        }
    }
}

/// The TLS settings for an `https://` endpoint of `signal` (or one without
/// a scheme, which the exporter takes for https) (`TRACES` or
/// `METRICS`): the public web roots, plus the CA in the PEM file that
/// `OTEL_EXPORTER_OTLP_[signal_]CERTIFICATE` names (a collector inside the
/// cluster usually has a private CA). The exporter's own default for https
/// trusts no root at all, so every export failed its handshake. `None` for
/// a plain `http://` endpoint.
fn otlp_tls(signal: &str) -> Result<Option<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig>, String> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
    let first_set = |names: [String; 2]| {
        names.into_iter().find_map(|name| {
            std::env::var(&name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| (name, v))
        })
    };
    let endpoint = first_set([
        format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"),
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
    ]);
    let Some((_, url)) = endpoint else {
        return Ok(None);
    };
    // As the exporter reads it: an endpoint without a scheme is https
    // unless OTEL_EXPORTER_OTLP_[signal_]INSECURE is true.
    let https = match url.trim().split_once("://") {
        Some((scheme, _)) if !scheme.contains(['/', '?', '#']) => scheme.eq_ignore_ascii_case("https"),
        _ => !first_set([
            format!("OTEL_EXPORTER_OTLP_{signal}_INSECURE"),
            "OTEL_EXPORTER_OTLP_INSECURE".to_owned(),
        ])
        .is_some_and(|(_, insecure)| insecure.trim().eq_ignore_ascii_case("true")),
    };
    if !https {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new().with_webpki_roots();
    if let Some((name, path)) = first_set([
        format!("OTEL_EXPORTER_OTLP_{signal}_CERTIFICATE"),
        "OTEL_EXPORTER_OTLP_CERTIFICATE".to_owned(),
    ]) {
        let pem = std::fs::read(path.trim()).map_err(|e| format!("{name}: cannot read {path}: {e}"))?;
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    Ok(Some(tls))
}

/// The spans the log layer keeps: not sea-orm's statement spans and not the
/// RPC server span. Both exist for traces; the log layer would format every
/// field of theirs (JSON: parse and write again on each record) for lines
/// that are almost never written, and without traces neither span is built,
/// so logs read the same with traces on and off. A callsite's answer never
/// changes, so it is given once per callsite and cached (a `filter_fn`
/// would be asked again on every span and event).
struct LoggedSpans;

impl LoggedSpans {
    fn allows(meta: &tracing::Metadata<'_>) -> bool {
        !(meta.is_span() && (meta.target().starts_with("sea_orm") || meta.name() == RPC_SPAN_NAME))
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for LoggedSpans {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: &Context<'_, S>) -> bool {
        Self::allows(meta)
    }

    fn callsite_enabled(&self, meta: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        if Self::allows(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
}

/// The spans worth exporting: orgadmin's own (domain spans are DEBUG, so a
/// log at INFO does not carry them) and sea-orm's statement spans. Other
/// crates' events stay in the log.
fn exported_spans() -> Targets {
    Targets::new()
        .with_target("orgadmin_domain", LevelFilter::DEBUG)
        .with_target("orgadmin_service", LevelFilter::INFO)
        .with_target("orgadmin_worker", LevelFilter::INFO)
        .with_target("sea_orm", LevelFilter::INFO)
}

fn resource(default_service_name: &'static str) -> opentelemetry_sdk::Resource {
    // The SDK's detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
    // the binary's name is the service name only when neither gives one.
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let builder = opentelemetry_sdk::Resource::builder();
    if named_by_env {
        builder.build()
    } else {
        builder.with_service_name(default_service_name).build()
    }
}

/// Logs, and traces and metrics when an OTLP endpoint is configured. Must run
/// inside the Tokio runtime (the OTLP exporter is a tonic client). A second
/// call (tests start several servers in one process) keeps the first
/// subscriber.
pub fn init(log_format: &str, service_name: &'static str) -> Result<Telemetry, String> {
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let log_filter = log_filter.and(LoggedSpans);
    let log = tracing_subscriber::fmt::layer().with_target(true);
    let log = if log_format == "json" {
        log.json().flatten_event(true).boxed()
    } else {
        log.boxed()
    }
    .with_filter(log_filter);

    let choice = OtlpChoice::from_env();
    let resource = resource(service_name);
    let tracer_provider = if choice.traces {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(tls) = otlp_tls("TRACES")? {
            exporter = exporter.with_tls_config(tls);
        }
        let exporter = exporter.build().map_err(|e| format!("OTLP trace exporter: {e}"))?;
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.clone())
                .build(),
        )
    } else {
        None
    };
    let meter_provider = if choice.metrics {
        let mut exporter = opentelemetry_otlp::MetricExporter::builder().with_tonic();
        if let Some(tls) = otlp_tls("METRICS")? {
            exporter = exporter.with_tls_config(tls);
        }
        let exporter = exporter.build().map_err(|e| format!("OTLP metric exporter: {e}"))?;
        Some(
            SdkMeterProvider::builder()
                .with_periodic_exporter(exporter)
                .with_resource(resource)
                .build(),
        )
    } else {
        None
    };

    // The layers as a list, not `.with(Option<Layer>)`: an absent layer
    // (`None`) answers "always interested" to every callsite, so with
    // traces off the registry would still build every INFO span (sea-orm's
    // statement spans) for no layer at all.
    let mut layers: Vec<Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>> = vec![log.boxed()];
    if let Some(provider) = &tracer_provider {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(service_name))
                .with_threads(false)
                // code.file.path, code.line.number and code.module.name on every
                // span cost more than they tell: the span's name and target
                // already say where it comes from.
                .with_location(false)
                // Both of these run on every poll of every instrumented
                // future (a call polls its spans dozens of times): one
                // reads the clock for busy/idle attributes nobody asked
                // for, the other attaches the span's OpenTelemetry context
                // to the thread, which only OpenTelemetry-native
                // instrumentation would read (there is none; the trace
                // context handed to queued work is taken from the span).
                .with_tracked_inactivity(false)
                .with_context_activation(false)
                .with_filter(exported_spans())
                .boxed(),
        );
    }
    if tracing_subscriber::registry().with(layers).try_init().is_ok() {
        if let Some(provider) = &tracer_provider {
            opentelemetry::global::set_tracer_provider(provider.clone());
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            TRACES_ON.store(true, Ordering::Relaxed);
        }
        if let Some(provider) = &meter_provider {
            opentelemetry::global::set_meter_provider(provider.clone());
            METRICS_ON.store(true, Ordering::Relaxed);
        }
    }
    Ok(Telemetry {
        tracer_provider,
        meter_provider,
    })
}

/// The W3C `traceparent` of the current span, to store with work queued for
/// later (an outbox mail, an import job), so the worker's span joins the
/// request's trace. None while traces are off.
pub fn current_traceparent() -> Option<String> {
    if !traces_enabled() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span a `traceparent` (and optional
/// `tracestate`) names: an incoming request's, or the one stored with queued
/// work. A missing or malformed header leaves `span` a root.
pub fn adopt_remote_parent(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    if !traces_enabled() {
        return;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".into(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".into(), state.to_owned());
    }
    let parent = TraceContextPropagator::new().extract(&carrier);
    use opentelemetry::trace::TraceContextExt as _;
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Resolves on SIGTERM or SIGINT. The SIGTERM handler is installed when
/// this is called, not when it is first awaited: a SIGTERM between the two
/// (the worker answers health before its loop first polls the stop) would
/// otherwise kill the process with the default action, mid-work.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no SIGTERM handler; stopping on SIGINT only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
