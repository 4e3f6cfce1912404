//! Worker processes (the real `orgadmin-worker` binary) against one database
//! and a real SMTP server: replicas split the queue; a worker killed mid-batch
//! loses no mail.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orgadmin_tests::*;

both_backends!(replicas_send_each_mail_once, killed_worker_loses_no_mail);

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(app: &TestApp, sink: &SmtpSink, lease_ms: u32) -> Worker {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().and_then(|p| p.parent()).unwrap().join("orgadmin-worker");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --bins` first (scripts/test does)",
        binary.display()
    );
    let child = Command::new(binary)
        .current_dir(&app.dir)
        .env("DATABASE_URL", &app.database_url)
        .env("SMTP_URL", sink.url())
        // The test server's CPR keys: mail content is encrypted with them.
        .env("ORGADMIN_CPR_LOOKUP_KEY", "07".repeat(32))
        .env("ORGADMIN_CPR_ENCRYPTION_KEY", "09".repeat(32))
        .env("ORGADMIN_MAIL_POLL_INTERVAL_MS", "50")
        .env("ORGADMIN_MAIL_LEASE_MS", lease_ms.to_string())
        .env("ORGADMIN_MAIL_POOL_SIZE", "4")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start orgadmin-worker");
    Worker(child)
}

/// Creates `n` CPR users (each queues an activation mail); returns their e-mails.
async fn queue_mails(app: &TestApp, n: usize) -> HashSet<String> {
    let fixture = app.org_with_admin_limits(Some(n as i32 + 10), None).await;
    let mut emails = HashSet::new();
    emails.insert(fixture.admin.email.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..8 {
        let users = app.users();
        let token = fixture.admin_token.clone();
        let org = fixture.org.id.clone();
        tasks.spawn(async move {
            let mut users = users;
            let mut made = Vec::new();
            for i in (chunk..n).step_by(8) {
                let request = new_user(&org, &format!("Masse{i}"), &[]);
                made.push(request.email.clone());
                users.create_user(req(&token, request)).await.expect("queue a mail");
            }
            made
        });
    }
    while let Some(made) = tasks.join_next().await {
        emails.extend(made.unwrap());
    }
    emails
}

async fn wait_for_all(sink: &SmtpSink, expected: &HashSet<String>, timeout: Duration) -> Vec<ReceivedMail> {
    let started = Instant::now();
    loop {
        let received = sink.received();
        let reached: HashSet<&String> = received.iter().flat_map(|m| m.to.iter()).collect();
        if expected.iter().all(|e| reached.contains(e)) {
            return received;
        }
        assert!(
            started.elapsed() < timeout,
            "only {} of {} recipients reached",
            reached.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn replicas_send_each_mail_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let sink = SmtpSink::start(0);
    // PostgreSQL: two replicas claiming with SKIP LOCKED. SQLite: one worker,
    // as the embedded default runs it.
    let (n, replicas) = match backend {
        Backend::Postgres => (1000, 2),
        Backend::Sqlite => (300, 1),
    };
    let expected = queue_mails(&app, n).await;
    let workers: Vec<Worker> = (0..replicas).map(|_| spawn_worker(&app, &sink, 60_000)).collect();
    let received = wait_for_all(&sink, &expected, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received_after = sink.received();
    drop(workers);
    assert_eq!(received.len(), received_after.len(), "nothing more arrived late");
    let ids: HashSet<_> = received_after.iter().map(|m| m.message_id.clone()).collect();
    // Plus the administrator's activation and welcome mails.
    assert_eq!(received_after.len(), n + 2, "each mail exactly once");
    assert_eq!(ids.len(), n + 2, "distinct Message-IDs");
    let (pending, sent, failed) = app.domain.outbox_counts().await.unwrap();
    assert_eq!((pending, sent, failed), (0, n as u64 + 2, 0));
    app.finish().await;
}

async fn killed_worker_loses_no_mail(backend: Backend) {
    let app = TestApp::start(backend).await;
    // A slow SMTP server keeps a batch in flight when the worker dies.
    let sink = SmtpSink::start(25);
    let n = 120;
    let expected = queue_mails(&app, n).await;
    let mut first = spawn_worker(&app, &sink, 1500);
    let started = Instant::now();
    while sink.received().len() < 15 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the first worker sent nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.0.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
    let _ = first.0.wait();
    let before_restart = sink.received().len();
    assert!(before_restart < n + 2, "killed mid-queue");
    let _second = spawn_worker(&app, &sink, 1500);
    let received = wait_for_all(&sink, &expected, Duration::from_secs(90)).await;
    // Every recipient got its mail; a mail sent twice (in flight at the kill)
    // carries the same Message-ID both times.
    let mut by_id: HashMap<String, Vec<&ReceivedMail>> = HashMap::new();
    for mail in &received {
        by_id.entry(mail.message_id.clone()).or_default().push(mail);
    }
    assert_eq!(by_id.len(), n + 2, "one Message-ID per queued mail");
    for (id, copies) in &by_id {
        assert!(
            copies
                .windows(2)
                .all(|w| w[0].to == w[1].to && w[0].subject == w[1].subject),
            "duplicates of {id} are the same mail"
        );
    }
    let duplicates = received.len() - by_id.len();
    assert!(duplicates <= 16, "at most the in-flight batch is resent: {duplicates}");
    let (pending, _, failed) = app.domain.outbox_counts().await.unwrap();
    assert_eq!((pending, failed), (0, 0));
    app.finish().await;
}
