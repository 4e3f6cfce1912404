//! R-OPS-3: traces and metrics over OTLP/gRPC, received by a real OTLP
//! receiver (`support/otlp.rs`). The real `orgadmin-service` and
//! `orgadmin-worker` binaries export to it; one CreateUser called with a W3C
//! `traceparent` must show as one trace: the caller's span, the RPC's server
//! span, its database work, and the worker's send of the activation mail the
//! call queued, each with the right parent. No span may carry the CPR number,
//! a token, the mailed link, or what the person's activation sends and gets
//! back (password, session token).

use std::time::{Duration, Instant};

use orgadmin_proto::v1 as pb;
use orgadmin_tests::otlp::{OtlpReceiver, ReceivedSpan, attribute, metric};
use orgadmin_tests::*;
use tonic::Code;

use crate::replicas::spawn_service_with;
use crate::workers::spawn_worker_with;

both_backends!(
    create_user_and_its_mail_are_one_trace,
    spans_and_metrics_reach_a_collector_over_tls
);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until `found` holds for what the receiver has, or fails.
async fn wait_until<T>(what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never received: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every text a span shows a reader: its name, attribute values, event names
/// and event attribute values.
fn visible_texts(span: &ReceivedSpan) -> Vec<String> {
    let mut texts = vec![span.span.name.clone()];
    texts.extend(
        span.span
            .attributes
            .iter()
            .map(|kv| format!("{}={}", kv.key, otlp_text(kv))),
    );
    for event in &span.span.events {
        texts.push(event.name.clone());
        texts.extend(
            event
                .attributes
                .iter()
                .map(|kv| format!("{}={}", kv.key, otlp_text(kv))),
        );
    }
    texts
}

fn otlp_text(kv: &orgadmin_tests::otlp::KeyValue) -> String {
    orgadmin_tests::otlp::text(kv.value.as_ref())
}

fn number(value: Option<orgadmin_tests::otlp::NumberValue>) -> f64 {
    match value {
        Some(orgadmin_tests::otlp::NumberValue::AsInt(i)) => i as f64,
        Some(orgadmin_tests::otlp::NumberValue::AsDouble(d)) => d,
        None => 0.0,
    }
}

/// The data points of a histogram or sum named `name` sent by `service`, as
/// (attributes, count or value).
fn points(receiver: &OtlpReceiver, service: &str, name: &str) -> Vec<(Vec<orgadmin_tests::otlp::KeyValue>, f64)> {
    let mut found = Vec::new();
    for received in receiver.metrics() {
        if received.service_name != service || received.metric.name != name {
            continue;
        }
        match received.metric.data {
            Some(metric::Data::Histogram(h)) => {
                found.extend(h.data_points.into_iter().map(|p| (p.attributes, p.count as f64)));
            }
            Some(metric::Data::Sum(sum)) => {
                found.extend(sum.data_points.into_iter().map(|p| (p.attributes, number(p.value))));
            }
            Some(metric::Data::Gauge(gauge)) => {
                found.extend(gauge.data_points.into_iter().map(|p| (p.attributes, number(p.value))));
            }
            _ => {}
        }
    }
    found
}

async fn create_user_and_its_mail_are_one_trace(backend: Backend) {
    let receiver = OtlpReceiver::start().await;
    let app = TestApp::start(backend).await;
    let sink = SmtpSink::start(0);
    let fixture = app.org_with_admin().await;
    let otlp = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=otel-test"),
    ];
    let (_service, mut users) = spawn_service_with(&app, &otlp).await;
    let worker = spawn_worker_with(&app, &sink, 5000, &otlp);
    worker.started().await;

    // The caller's own span: the RPC must become its child.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let new = new_user(&fixture.org.id, "Traced", &[pb::Role::User]);
    let (cpr, email) = (new.cpr.clone(), new.email.clone());
    let mut request = req(&fixture.admin_token, new);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span_id}-01").parse().unwrap(),
    );
    let created = users.create_user(request).await.expect("create user").into_inner();
    assert!(created.user.is_some());
    // A refused call is measured with its code.
    let missing = users
        .get_user(req(
            &fixture.admin_token,
            pb::GetUserRequest {
                id: uuid::Uuid::now_v7().to_string(),
            },
        ))
        .await;
    assert_code(missing, Code::NotFound);

    let mail = sink.wait_for(&email, 1).await.remove(0);
    let link_token = link_token(&mail);
    // The person activates with the link, the CPR number and a password:
    // a call full of secrets, with a session token in its answer.
    let password = "en lang adgangsfrase kun til sporingen";
    let session_token = users
        .activate_user(req(
            "",
            pb::ActivateUserRequest {
                token: link_token.clone(),
                cpr: cpr.clone(),
                password: password.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("activated with a password")
        .into_inner()
        .session_token;

    let in_trace = |spans: &[ReceivedSpan]| -> Vec<ReceivedSpan> {
        spans
            .iter()
            .filter(|s| hex(&s.span.trace_id) == trace_id)
            .cloned()
            .collect()
    };
    // Both processes export in batches of their own, so the worker's span
    // may arrive before the service's: wait for both.
    let spans = wait_until(
        "the server span and the worker's send span in the caller's trace",
        || {
            let spans = in_trace(&receiver.spans());
            let sent = spans
                .iter()
                .any(|s| s.service_name == "orgadmin-worker" && s.span.name == "outbox.send");
            let served = spans
                .iter()
                .any(|s| s.span.name == "orgadmin.v1.UserService/CreateUser");
            (sent && served).then_some(spans)
        },
    )
    .await;

    // The RPC: a server span, child of the caller's span.
    let rpc = spans
        .iter()
        .find(|s| s.span.name == "orgadmin.v1.UserService/CreateUser")
        .unwrap_or_else(|| panic!("no CreateUser server span in {spans:#?}"));
    assert_eq!(
        rpc.service_name, "orgadmin-service",
        "service.name defaults to the binary"
    );
    assert_eq!(
        attribute(&rpc.resource, "deployment.environment.name").as_deref(),
        Some("otel-test"),
        "OTEL_RESOURCE_ATTRIBUTES is honoured"
    );
    assert_eq!(
        hex(&rpc.span.parent_span_id),
        caller_span_id,
        "the RPC span's parent is the caller's"
    );
    assert_eq!(rpc.span.kind, 2, "a server span");
    assert_eq!(attribute(&rpc.span.attributes, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attribute(&rpc.span.attributes, "rpc.method").as_deref(),
        Some("CreateUser")
    );
    assert_eq!(
        attribute(&rpc.span.attributes, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );

    // Its database work is in the trace, under the RPC.
    let span_by_id = |id: &[u8]| spans.iter().find(|s| s.span.span_id == id);
    let descends_from_rpc = |span: &ReceivedSpan| {
        let mut current = span;
        for _ in 0..32 {
            if current.span.span_id == rpc.span.span_id {
                return true;
            }
            match span_by_id(&current.span.parent_span_id) {
                Some(parent) => current = parent,
                None => return false,
            }
        }
        false
    };
    for name in ["create_user", "sea_orm.begin", "sea_orm.commit"] {
        let db = spans
            .iter()
            .find(|s| s.span.name == name && s.service_name == "orgadmin-service")
            .unwrap_or_else(|| panic!("no {name} span of the service in the RPC's trace"));
        assert!(descends_from_rpc(db), "{name} is not under the RPC span");
    }
    assert!(
        spans.iter().any(|s| s.span.name == "sea_orm.execute"
            && attribute(&s.span.attributes, "db.operation").as_deref() == Some("INSERT")),
        "the user's INSERT has a span"
    );

    // The worker's send: a child of the span that queued the mail, inside
    // the RPC.
    let send = spans
        .iter()
        .find(|s| s.service_name == "orgadmin-worker" && s.span.name == "outbox.send")
        .unwrap();
    let queued_by = span_by_id(&send.span.parent_span_id)
        .unwrap_or_else(|| panic!("the send span's parent is not a span of the service: {send:#?}"));
    assert_eq!(queued_by.service_name, "orgadmin-service");
    assert!(
        descends_from_rpc(send),
        "the mail send is not under the CreateUser span"
    );
    assert_eq!(
        attribute(&send.span.attributes, "mail.kind").as_deref(),
        Some("activation")
    );

    // Nothing secret in any span of either process, the activation's
    // included.
    wait_until("the ActivateUser server span", || {
        receiver
            .spans()
            .iter()
            .any(|s| s.span.name == "orgadmin.v1.UserService/ActivateUser")
            .then_some(())
    })
    .await;
    let cpr_digits: String = cpr.chars().filter(char::is_ascii_digit).collect();
    let password = password.to_owned();
    for span in receiver.spans() {
        for text in visible_texts(&span) {
            for secret in [
                &cpr,
                &cpr_digits,
                &fixture.admin_token,
                &link_token,
                &email,
                &password,
                &session_token,
            ] {
                assert!(
                    !text.contains(secret.as_str()),
                    "span {} of {} shows a secret: {text}",
                    span.span.name,
                    span.service_name
                );
            }
        }
    }

    // Metrics: the RPC by method and code, the mail delivered, the pool.
    wait_until(
        "rpc.server.duration for CreateUser (OK) and GetUser (NOT_FOUND)",
        || {
            let calls = points(&receiver, "orgadmin-service", "rpc.server.duration");
            let has = |method: &str, code: &str| {
                calls.iter().any(|(attrs, count)| {
                    attribute(attrs, "rpc.method").as_deref() == Some(method)
                        && attribute(attrs, "rpc.grpc.status_code").as_deref() == Some(code)
                        && attribute(attrs, "rpc.service").as_deref() == Some("orgadmin.v1.UserService")
                        && *count >= 1.0
                })
            };
            (has("CreateUser", "0") && has("GetUser", "5")).then_some(())
        },
    )
    .await;
    wait_until("db.client.connection.wait_time from the service", || {
        (!points(&receiver, "orgadmin-service", "db.client.connection.wait_time").is_empty()).then_some(())
    })
    .await;
    wait_until("orgadmin.mail.deliveries{outcome=sent} from the worker", || {
        points(&receiver, "orgadmin-worker", "orgadmin.mail.deliveries")
            .iter()
            .any(|(attrs, value)| attribute(attrs, "outcome").as_deref() == Some("sent") && *value >= 1.0)
            .then_some(())
    })
    .await;
    wait_until("orgadmin.outbox.depth from the worker", || {
        (!points(&receiver, "orgadmin-worker", "orgadmin.outbox.depth").is_empty()).then_some(())
    })
    .await;
    app.finish().await;
}

/// A collector reached over `https://` (a managed one, or one inside the
/// cluster under a private CA named by `OTEL_EXPORTER_OTLP_CERTIFICATE`)
/// gets spans and metrics. Before, the exporter had no TLS: an https
/// endpoint stopped the service at start, and every pod of the chart
/// crash-looped.
async fn spans_and_metrics_reach_a_collector_over_tls(backend: Backend) {
    let (receiver, ca_pem) = OtlpReceiver::start_tls().await;
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let dir = fresh_dir();
    let ca_file = dir.join("collector-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let otlp = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.to_str().unwrap()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
    ];
    assert!(
        receiver.endpoint.starts_with("https://localhost:"),
        "{}",
        receiver.endpoint
    );
    let (_service, mut users) = spawn_service_with(&app, &otlp).await;
    users
        .get_user(req(
            &fixture.admin_token,
            pb::GetUserRequest {
                id: fixture.admin.id.clone(),
            },
        ))
        .await
        .expect("get user");
    wait_until("the GetUser span over TLS", || {
        receiver
            .spans()
            .iter()
            .any(|s| s.service_name == "orgadmin-service" && s.span.name == "orgadmin.v1.UserService/GetUser")
            .then_some(())
    })
    .await;
    wait_until("an RPC metric over TLS", || {
        (!points(&receiver, "orgadmin-service", "rpc.server.duration").is_empty()).then_some(())
    })
    .await;
    // An endpoint without a scheme is https to the exporter (unless
    // OTEL_EXPORTER_OTLP_INSECURE is true): it gets the same roots and CA.
    let bare = receiver.endpoint.trim_start_matches("https://").to_owned();
    let bare_otlp = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", bare.as_str()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.to_str().unwrap()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "orgadmin-bare-endpoint"),
    ];
    let (_bare_service, mut bare_users) = spawn_service_with(&app, &bare_otlp).await;
    bare_users
        .get_user(req(
            &fixture.admin_token,
            pb::GetUserRequest {
                id: fixture.admin.id.clone(),
            },
        ))
        .await
        .expect("get user");
    wait_until("a span over TLS from an endpoint without a scheme", || {
        receiver
            .spans()
            .iter()
            .any(|s| s.service_name == "orgadmin-bare-endpoint")
            .then_some(())
    })
    .await;
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}
