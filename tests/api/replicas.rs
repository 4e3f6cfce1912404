//! R-OPS-1: many replicas on one PostgreSQL database, as the Helm chart runs
//! them: two `orgadmin-service` and three `orgadmin-worker` processes (the
//! real binaries). Every mail goes out once, every import row is applied
//! once, each timed reactivation happens once (the sweep runs once per
//! period, whichever worker claims it), and a worker stopped with SIGTERM in
//! the middle of an import hands it over without loss.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orgadmin_proto::v1 as pb;
use orgadmin_proto::v1::user_service_client::UserServiceClient;
use orgadmin_tests::*;
use tonic::transport::Channel;

use crate::workers::{Worker, spawn_worker_with, wait_for_job};

pub(crate) struct Service(pub(crate) Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `orgadmin-service serve` over the test's database, as a replica: the
/// test server's CPR keys and operator token, its own port.
async fn spawn_service(app: &TestApp) -> (Service, UserServiceClient<Channel>) {
    spawn_service_with(app, &[]).await
}

/// `spawn_service` with further environment (OTLP export, ...).
pub(crate) async fn spawn_service_with(app: &TestApp, env: &[(&str, &str)]) -> (Service, UserServiceClient<Channel>) {
    let (service, _, channel) = spawn_service_at(app, env).await;
    (service, UserServiceClient::new(channel))
}

/// `spawn_service_with`: the replica, its address and a channel to it.
pub(crate) async fn spawn_service_at(app: &TestApp, env: &[(&str, &str)]) -> (Service, String, Channel) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let child = Command::new(built_binary("orgadmin-service"))
        .envs(env.iter().copied())
        .arg("serve")
        .current_dir(&app.dir)
        .env("DATABASE_URL", &app.database_url)
        .env("ORGADMIN_CPR_LOOKUP_KEY", "07".repeat(32))
        .env("ORGADMIN_CPR_ENCRYPTION_KEY", "09".repeat(32))
        .env("ORGADMIN_OPERATOR_TOKENS", OPERATOR_TOKEN)
        .env("ORGADMIN_LISTEN", &addr)
        .env("ORGADMIN_CERTIFICATE_HTTP_LISTEN", "")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start orgadmin-service");
    let service = Service(child);
    let started = Instant::now();
    let channel = loop {
        if let Ok(endpoint) = Channel::from_shared(format!("http://{addr}"))
            && let Ok(channel) = endpoint.connect().await
        {
            break channel;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a service replica did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (service, addr, channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_and_three_workers_share_one_database() {
    let app = TestApp::start(Backend::Postgres).await;
    let sink = SmtpSink::start(0);
    let fixture = app.org_with_admin_limits(Some(10_000), None).await;
    let token = fixture.admin_token.clone();
    let (_a, users_a) = spawn_service(&app).await;
    let (_b, users_b) = spawn_service(&app).await;
    let sweep_every_second = [("ORGADMIN_REACTIVATION_SCHEDULE", "* * * * * *")];
    let mut workers: Vec<Worker> = (0..3)
        .map(|_| spawn_worker_with(&app, &sink, 1500, &sweep_every_second))
        .collect();
    let mut worker_ids = Vec::new();
    for worker in &workers {
        worker_ids.push(worker.started().await);
    }

    // 30 users through the two replicas in turn: 30 activation mails.
    let mut created = Vec::new();
    for i in 0..30 {
        let mut client = if i % 2 == 0 { users_a.clone() } else { users_b.clone() };
        let user = client
            .create_user(req(&token, new_user(&fixture.org.id, &format!("Replika{i}"), &[])))
            .await
            .expect("create through a replica")
            .into_inner()
            .user
            .unwrap();
        created.push(user);
    }
    // Ten of them deactivated for two seconds, through the other replica:
    // the sweep brings each back once.
    let back_at = chrono::Utc::now().timestamp_millis() + 2000;
    for (i, user) in created.iter().take(10).enumerate() {
        let mut client = if i % 2 == 0 { users_b.clone() } else { users_a.clone() };
        client
            .deactivate_user(req(
                &token,
                pb::DeactivateUserRequest {
                    id: user.id.clone(),
                    until: Some(in_ms(back_at - chrono::Utc::now().timestamp_millis())),
                    reason: "orlov".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("deactivate through a replica");
    }

    // An import of 1000 rows; the worker that holds it is stopped with
    // SIGTERM mid-job and another one finishes it.
    let n = 1000;
    let rows = crate::imports::create_rows(n, "replika");
    let job = app
        .upload_import(
            &token,
            crate::imports::spec(&fixture.org.id, pb::ImportKind::Create),
            crate::imports::file(crate::imports::HEADER_DA, &rows).as_bytes(),
            64 * 1024,
        )
        .await
        .unwrap();
    wait_for_job(&app, &token, &job.id, Duration::from_secs(120), |j| j.processed >= 200).await;
    let holder = claimed_by(&app, &job.id).await;
    let index = worker_ids
        .iter()
        .position(|id| *id == holder)
        .unwrap_or_else(|| panic!("the import is held by {holder:?}, none of {worker_ids:?}"));
    let mut stopped = workers.remove(index);
    let pid = stopped.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = stopped.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "a clean exit after SIGTERM: {status}");
    let done = wait_for_job(&app, &token, &job.id, Duration::from_secs(180), |j| {
        j.state != pb::ImportState::Running as i32 && j.state != pb::ImportState::Queued as i32
    })
    .await;
    assert_eq!(done.state, pb::ImportState::Succeeded as i32, "{done:?}");
    assert_eq!((done.rows, done.applied, done.failed), (n as i64, n as i64, 0));
    assert_ne!(claimed_by(&app, &job.id).await, holder, "another worker finished it");
    let expected_users = 1 + 30 + n as i64;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users").await,
        expected_users,
        "nobody twice"
    );
    assert_eq!(
        app.count("SELECT COUNT(DISTINCT email_key) FROM users").await,
        expected_users
    );

    // Each deactivated user back once, by the sweep.
    let started = Instant::now();
    loop {
        let back = app
            .count("SELECT COUNT(*) FROM history_events WHERE activity = 'USER_REACTIVATED'")
            .await;
        if back >= 10 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {back} of 10 came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A few more periods pass: nobody comes back twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM history_events WHERE activity = 'USER_REACTIVATED'")
            .await,
        10
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE state = 'DEACTIVATED'")
            .await,
        0
    );
    // The sweep ran every second, each period claimed by one worker (the
    // primary key; which one wins is a race), every claim by one of these
    // workers.
    let claims = claims_by_worker(&app).await;
    assert!(claims.values().sum::<i64>() >= 5, "{claims:?}");
    assert!(
        claims.keys().all(|w| worker_ids.contains(w)),
        "{claims:?} vs {worker_ids:?}"
    );

    // Every mail once at the real SMTP server: each of the 30 users their
    // activation mail; the administrator theirs, the welcome after it and
    // the import's done notice. Imported users get none until asked.
    app.wait_outbox_drained().await;
    let mut per_mail: HashMap<(String, String), usize> = HashMap::new();
    for mail in sink.received() {
        for to in mail.to {
            *per_mail.entry((to.to_lowercase(), mail.subject.clone())).or_default() += 1;
        }
    }
    let twice: Vec<_> = per_mail.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "mails sent more than once: {twice:?}");
    for user in &created {
        let email = user.email.to_lowercase();
        assert_eq!(
            per_mail.keys().filter(|(to, _)| *to == email).count(),
            1,
            "{email}: {per_mail:?}"
        );
    }
    let admin = fixture.admin.email.to_lowercase();
    assert_eq!(
        per_mail.keys().filter(|(to, _)| *to == admin).count(),
        3,
        "{per_mail:?}"
    );
    assert_eq!(per_mail.len(), created.len() + 3);
    for worker in &mut workers {
        worker.assert_alive();
    }
    drop(workers);
    app.finish().await;
}

async fn claimed_by(app: &TestApp, job_id: &str) -> String {
    use sea_orm::{ConnectionTrait, Statement};
    let db = app.domain.db();
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT claimed_by FROM import_jobs WHERE id = '{job_id}'"),
        ))
        .await
        .unwrap()
        .expect("the job");
    row.try_get_by_index::<Option<String>>(0).unwrap().unwrap_or_default()
}

async fn claims_by_worker(app: &TestApp) -> HashMap<String, i64> {
    use sea_orm::{ConnectionTrait, Statement};
    let db = app.domain.db();
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT claimed_by, COUNT(*) FROM sweep_runs WHERE name = 'timed-reactivation' GROUP BY claimed_by".to_owned(),
    ))
    .await
    .unwrap()
    .into_iter()
    .map(|row| (row.try_get_by_index(0).unwrap(), row.try_get_by_index(1).unwrap()))
    .collect()
}
