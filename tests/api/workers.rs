//! Worker processes (the real `orgadmin-worker` binary) against one database
//! and a real SMTP server: replicas split the queue (each sends a share); a
//! worker killed mid-batch loses no mail.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orgadmin_domain::model::now_millis;
use orgadmin_tests::*;
use sea_orm::{ConnectionTrait, Statement};

both_backends!(
    replicas_send_each_mail_once,
    killed_worker_loses_no_mail,
    a_relay_that_stops_answering_stalls_nothing,
    a_claim_that_outlived_its_lease_records_nothing,
    a_slow_relay_costs_no_attempts,
    a_relay_refusing_our_sender_parks_no_mail,
    killed_import_worker_resumes_without_doubles,
    two_workers_share_the_import_queue,
    a_mail_this_worker_cannot_read_waits,
);

/// A worker process; its log (JSON lines) is read for its start and its id.
pub(crate) struct Worker {
    pub(crate) child: Child,
    /// The worker's id (the `claimed_by` of the mails it claims), once started.
    started: std::sync::mpsc::Receiver<String>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Worker {
    /// Waits for the worker's "worker started" line; returns its id.
    pub(crate) async fn started(&self) -> String {
        let started = Instant::now();
        loop {
            match self.started.try_recv() {
                Ok(id) => return id,
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(e) => panic!("the worker ended before it started: {e}"),
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the worker did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[track_caller]
    pub(crate) fn assert_alive(&mut self) {
        let exited = self.child.try_wait().expect("worker status");
        assert!(exited.is_none(), "a worker died: {exited:?}");
    }
}

fn spawn_worker(app: &TestApp, sink: &SmtpSink, lease_ms: u32) -> Worker {
    spawn_worker_with(app, sink, lease_ms, &[])
}

/// `spawn_worker` with further environment (a sweep schedule, ...).
pub(crate) fn spawn_worker_with(app: &TestApp, sink: &SmtpSink, lease_ms: u32, env: &[(&str, &str)]) -> Worker {
    let mut command = Command::new(built_binary("orgadmin-worker"));
    command
        .current_dir(&app.dir)
        .env("DATABASE_URL", &app.database_url)
        .env("SMTP_URL", sink.url())
        // The test server's CPR keys: mail content is encrypted with them.
        .env("ORGADMIN_CPR_LOOKUP_KEY", "07".repeat(32))
        .env("ORGADMIN_CPR_ENCRYPTION_KEY", "09".repeat(32))
        .env("ORGADMIN_MAIL_POLL_INTERVAL_MS", "50")
        .env("ORGADMIN_MAIL_LEASE_MS", lease_ms.to_string())
        .env("ORGADMIN_MAIL_POOL_SIZE", "4")
        .env("ORGADMIN_IMPORT_POLL_INTERVAL_MS", "50")
        .env("ORGADMIN_IMPORT_LEASE_MS", lease_ms.to_string())
        // Small batches of every kind, so a job is caught mid-way.
        .env("ORGADMIN_IMPORT_BATCH_SIZE", "50")
        .env("ORGADMIN_IMPORT_CREATE_BATCH_SIZE", "50")
        .env("RUST_LOG", "warn,orgadmin_worker=info")
        .env("ORGADMIN_LOG_FORMAT", "json")
        // Several workers run side by side: each its own health port.
        .env("ORGADMIN_WORKER_HEALTH_LISTEN", "127.0.0.1:0")
        // The caller's environment last: it may replace any of the above.
        .envs(env.iter().copied())
        .stdout(Stdio::piped());
    let mut child = command.spawn().expect("start orgadmin-worker");
    let stdout = child.stdout.take().expect("worker stdout");
    let (tx, started) = std::sync::mpsc::channel();
    // Reads the log to its end (a full pipe would stall the worker).
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["message"] == "worker started"
                && let Some(id) = event["worker"].as_str()
            {
                let _ = tx.send(id.to_owned());
            }
        }
    });
    Worker { child, started }
}

/// Sent mails per `claimed_by` (the worker that claimed and sent them).
async fn sent_by_worker(app: &TestApp) -> HashMap<String, i64> {
    let db = app.domain.db();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT claimed_by, COUNT(*) FROM outbox_mails WHERE state = 'SENT' GROUP BY claimed_by".to_owned(),
        ))
        .await
        .unwrap();
    rows.into_iter()
        .map(|row| {
            let worker: Option<String> = row.try_get_by_index(0).unwrap();
            (worker.unwrap_or_default(), row.try_get_by_index(1).unwrap())
        })
        .collect()
}

/// Creates `n` CPR users (each queues an activation mail); returns their e-mails.
async fn queue_mails(app: &TestApp, n: usize) -> (OrgFixture, HashSet<String>) {
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
    (fixture, emails)
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
    let (fixture, expected) = queue_mails(&app, n).await;
    let mut workers: Vec<Worker> = (0..replicas).map(|_| spawn_worker(&app, &sink, 60_000)).collect();
    let mut ids = Vec::new();
    for worker in &workers {
        ids.push(worker.started().await);
    }
    wait_for_all(&sink, &expected, Duration::from_secs(120)).await;
    // No duplicate: one more mail, queued after all the others, arrives; and
    // once nothing is pending, every mail the workers will send is in the sink.
    let late = new_user(&fixture.org.id, "Sidst", &[]);
    app.users()
        .create_user(req(&fixture.admin_token, late.clone()))
        .await
        .unwrap();
    sink.wait_for(&late.email, 1).await;
    let (sent, failed) = app.wait_outbox_drained().await;
    assert_eq!((sent, failed), (n as u64 + 3, 0));
    for worker in &mut workers {
        worker.assert_alive();
    }
    let received = sink.received();
    drop(workers);
    let message_ids: HashSet<_> = received.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(received.len(), n + 3, "each mail exactly once");
    assert_eq!(message_ids.len(), n + 3, "distinct Message-IDs");
    // Each replica claimed and sent a share of the queue; nobody else did.
    let shares = sent_by_worker(&app).await;
    assert_eq!(
        shares.keys().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>(),
        "senders: {shares:?}"
    );
    for id in &ids {
        assert!(
            shares[id] as usize >= (n + 3) / (replicas * 5),
            "worker {id} sent too small a share: {shares:?}"
        );
    }
    app.finish().await;
}

async fn killed_worker_loses_no_mail(backend: Backend) {
    let app = TestApp::start(backend).await;
    // A slow SMTP server keeps a batch in flight when the worker dies.
    let sink = SmtpSink::start(25);
    let n = 120;
    let (_, expected) = queue_mails(&app, n).await;
    let mut first = spawn_worker(&app, &sink, 1500);
    let started = Instant::now();
    while sink.received().len() < 15 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the first worker sent nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
    let _ = first.child.wait();
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
    // The worker marks a mail sent after the SMTP server took it: the last
    // marks may trail the last mail's arrival by a moment.
    let settled = Instant::now();
    loop {
        let (pending, _, failed) = app.domain.outbox_counts().await.unwrap();
        if (pending, failed) == (0, 0) {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(10),
            "mails left unmarked: {pending} pending, {failed} failed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.finish().await;
}

/// Waits until `done` holds for the job, up to `timeout`.
pub(crate) async fn wait_for_job(
    app: &TestApp,
    token: &str,
    id: &str,
    timeout: Duration,
    done: impl Fn(&orgadmin_proto::v1::ImportJob) -> bool,
) -> orgadmin_proto::v1::ImportJob {
    let started = Instant::now();
    loop {
        let job = app.import_job(token, id).await;
        if done(&job) {
            return job;
        }
        assert!(started.elapsed() < timeout, "the import did not get there: {job:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// R-BULK-3: a worker killed with SIGKILL mid-job; the next one resumes
/// after the last batch committed: exact counts, nobody twice, complete
/// history. Then the bulk activation mails reach the real SMTP server.
async fn killed_import_worker_resumes_without_doubles(backend: Backend) {
    use orgadmin_proto::v1 as pb;
    let app = TestApp::start(backend).await;
    let sink = SmtpSink::start(0);
    let fixture = app.org_with_admin_limits(Some(100_000), None).await;
    let token = fixture.admin_token.clone();
    let n = 3000;
    let rows = crate::imports::create_rows(n, "kill");
    let job = app
        .upload_import(
            &token,
            crate::imports::spec(&fixture.org.id, pb::ImportKind::Create),
            crate::imports::file(crate::imports::HEADER_DA, &rows).as_bytes(),
            64 * 1024,
        )
        .await
        .unwrap();
    let mut first = spawn_worker(&app, &sink, 1500);
    first.started().await;
    wait_for_job(&app, &token, &job.id, Duration::from_secs(60), |j| j.processed >= 300).await;
    first.child.kill().expect("SIGKILL");
    let _ = first.child.wait();
    let at_kill = app.import_job(&token, &job.id).await;
    assert!(at_kill.processed < n as i64, "killed mid-job: {at_kill:?}");
    assert_eq!(at_kill.state, pb::ImportState::Running as i32);
    let mut second = spawn_worker(&app, &sink, 1500);
    second.started().await;
    let done = wait_for_job(&app, &token, &job.id, Duration::from_secs(180), |j| {
        j.state != pb::ImportState::Running as i32
    })
    .await;
    second.assert_alive();
    assert_eq!(done.state, pb::ImportState::Succeeded as i32, "{done:?}");
    assert_eq!((done.rows, done.applied, done.failed), (n as i64, n as i64, 0));
    let org = &fixture.org.id;
    // The database holds this organisation only.
    let users = app.count("SELECT COUNT(*) FROM users").await;
    let distinct = app.count("SELECT COUNT(DISTINCT email_key) FROM users").await;
    assert_eq!((users, distinct), (n as i64 + 1, n as i64 + 1), "nobody twice");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM history_events WHERE activity = 'USER_CREATED'")
            .await,
        n as i64 + 1,
        "one history event per user"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM import_created_users").await, n as i64);

    // R-BULK-4: the first 40 users' activation, in bulk, by the real worker
    // to the real SMTP server; birth-date users are listed back instead.
    let created: Vec<pb::User> = app
        .users()
        .list_users(req(
            &token,
            pb::ListUsersRequest {
                organisation_id: org.clone(),
                page_size: 41,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .users
        .into_iter()
        .filter(|u| u.id != fixture.admin.id)
        .take(40)
        .collect();
    let sent = app
        .imports()
        .batch_send_activation(req(
            &token,
            pb::BatchSendActivationRequest {
                organisation_id: org.clone(),
                user_ids: created.iter().map(|u| u.id.clone()).collect(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.queued_user_ids.len() + sent.needs_code_user_ids.len(), 40);
    assert!(!sent.queued_user_ids.is_empty() && !sent.needs_code_user_ids.is_empty());
    let expected: HashSet<String> = created
        .iter()
        .filter(|u| sent.queued_user_ids.contains(&u.id))
        .map(|u| u.email.clone())
        .collect();
    wait_for_all(&sink, &expected, Duration::from_secs(60)).await;
    // R-BULK-6: the requester's notice, naming the job, by mail too.
    let started = Instant::now();
    while !sink
        .received()
        .iter()
        .any(|m| m.to.contains(&fixture.admin.email) && m.text.contains(&done.id))
    {
        assert!(started.elapsed() < Duration::from_secs(30), "no import notice mailed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.finish().await;
}

/// Two workers on one database: they split the jobs (each claims some),
/// nobody is created twice, every job ends.
async fn two_workers_share_the_import_queue(backend: Backend) {
    use orgadmin_proto::v1 as pb;
    let app = TestApp::start(backend).await;
    let sink = SmtpSink::start(0);
    let fixture = app.org_with_admin_limits(Some(100_000), None).await;
    let token = fixture.admin_token.clone();
    // Both replicas are up and polling before the first job exists: a
    // replica that started late (a busy machine starts a process slowly)
    // could otherwise find every job already done by the other.
    let mut a = spawn_worker(&app, &sink, 5000);
    let mut b = spawn_worker(&app, &sink, 5000);
    let (id_a, id_b) = (a.started().await, b.started().await);
    let mut jobs = Vec::new();
    for i in 0..4 {
        let rows = crate::imports::create_rows_from(i * 400, 400, &format!("par{i}"));
        let job = app
            .upload_import(
                &token,
                crate::imports::spec(&fixture.org.id, pb::ImportKind::Create),
                crate::imports::file(crate::imports::HEADER_DA, &rows).as_bytes(),
                1 << 20,
            )
            .await;
        match job {
            Ok(job) => jobs.push(job),
            // At most 5 open jobs per organisation: all 4 fit.
            Err(e) => panic!("upload {i}: {e:?}"),
        }
    }
    for job in &jobs {
        let done = wait_for_job(&app, &token, &job.id, Duration::from_secs(120), |j| {
            j.state == pb::ImportState::Succeeded as i32
        })
        .await;
        assert_eq!((done.applied, done.failed), (400, 0));
    }
    a.assert_alive();
    b.assert_alive();
    let db = app.domain.db();
    let claimers: HashSet<String> = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT claimed_by FROM import_jobs".to_owned(),
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.try_get_by_index::<Option<String>>(0).unwrap().unwrap_or_default())
        .collect();
    match backend {
        // Each replica claimed work (SKIP LOCKED): the second one is not idle.
        Backend::Postgres => assert_eq!(claimers, HashSet::from([id_a, id_b])),
        // SQLite has one writer: a replica that just finished a job may win
        // every next claim while the other waits for the lock (the embedded
        // default runs one worker). What holds is that only these two
        // claimed, and nobody twice (below).
        Backend::Sqlite => assert!(
            !claimers.is_empty() && claimers.is_subset(&HashSet::from([id_a, id_b])),
            "claimers: {claimers:?}"
        ),
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users").await,
        app.count("SELECT COUNT(DISTINCT email_key) FROM users").await
    );
    // The database holds this organisation only.
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1601);
    app.finish().await;
}

/// A mail server that accepts connections and then stops answering: every
/// odd connection hears nothing at all, every even one is greeted and
/// answered up to EHLO and then hears nothing (the mail's MAIL FROM, or the
/// QUIT after it, waits forever). Returns its port.
async fn tarpit_relay() -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        for n in 0.. {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            if n % 2 == 0 {
                held.push(tokio::spawn(async move {
                    let _silent = socket;
                    std::future::pending::<()>().await
                }));
                continue;
            }
            held.push(tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 tarpit ESMTP\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.to_ascii_uppercase().starts_with("EHLO") {
                        write.write_all(b"250 tarpit\r\n").await.unwrap();
                    }
                    // Anything else: no answer.
                }
            }));
        }
    });
    port
}

/// Every mail's attempts, state and last error.
async fn mail_attempts(app: &TestApp) -> Vec<(i32, String, Option<String>)> {
    let db = app.domain.db();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT attempts, state, last_error FROM outbox_mails".to_owned(),
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            (
                row.try_get_by_index(0).unwrap(),
                row.try_get_by_index(1).unwrap(),
                row.try_get_by_index(2).unwrap(),
            )
        })
        .collect()
}

/// A relay that accepts connections and then stops answering (a hung
/// process, a half-dead load balancer) must not stall the outbox: each
/// attempt ends before the claim's lease does and is recorded, the mails
/// stay queued for later, and SIGTERM still ends the worker. lettre's own
/// timeout covers only the TCP connect, and its QUIT after a failed send
/// waited for an answer: the loop used to hang on the first mail for good.
async fn a_relay_that_stops_answering_stalls_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let unused = SmtpSink::start(0);
    let (_, expected) = queue_mails(&app, 2).await;
    let relay = format!("smtp://127.0.0.1:{}", tarpit_relay().await);
    let mut worker = spawn_worker_with(
        &app,
        &unused,
        2000,
        &[("SMTP_URL", relay.as_str()), ("ORGADMIN_MAIL_RETRY_BASE_MS", "1")],
    );
    worker.started().await;
    let started = Instant::now();
    let attempts = loop {
        let attempts = mail_attempts(&app).await;
        assert!(attempts.len() >= expected.len(), "a mail per recipient at least");
        if attempts.iter().all(|(n, _, _)| *n >= 3) {
            break attempts;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the outbox stalled on the silent relay: {attempts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (_, state, error) in &attempts {
        assert_eq!(state, "PENDING", "a transient failure: queued for another attempt");
        let error = error.as_deref().unwrap_or_default();
        assert!(error.contains("not delivered within"), "{error}");
    }
    worker.assert_alive();
    let status = crate::operations::stop_with_sigterm(&mut worker.child);
    assert!(status.success(), "worker exit after SIGTERM: {status:?}");
    assert!(unused.received().is_empty());
    app.finish().await;
}

/// A relay that speaks just enough SMTP: it greets, answers EHLO (offering
/// nothing) and QUIT, and every other command with what `answer` makes of
/// it; the message after a 354 it reads to its closing `.`, which `answer`
/// is then given as the command. Returns its port.
async fn scripted_relay<A, F>(answer: A) -> u16
where
    A: Fn(String) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = &'static str> + Send,
{
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 relay ESMTP\r\n").await;
                let mut in_message = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    let command = line.to_ascii_uppercase();
                    let reply = if in_message && line != "." {
                        continue;
                    } else if command.starts_with("EHLO") {
                        "250 relay"
                    } else if command == "QUIT" {
                        "221 bye"
                    } else {
                        answer(line).await
                    };
                    in_message = reply.starts_with("354");
                    if write.write_all(format!("{reply}\r\n").as_bytes()).await.is_err() || command == "QUIT" {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A relay that refuses our sender for good, at MAIL FROM (here a login
/// it wants first; alike a STARTTLS it wants first, a sender address that
/// is not ours, a spent quota) refuses every mail alike: the mails wait
/// and are tried again with back-off, none is parked. Before, each was
/// parked FAILED after one try, and every later one too, until someone
/// noticed and put them back one by one with RetryMail. (A refusal of the
/// recipient, 550 5.1.1, still parks the mail at once:
/// `mail::permanent_rejection_is_parked_and_retried_by_hand`.)
async fn a_relay_refusing_our_sender_parks_no_mail(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, expected) = queue_mails(&app, 2).await;
    let relay = scripted_relay(|command: String| async move {
        if command.to_ascii_uppercase().starts_with("MAIL FROM") {
            "530 5.7.0 Authentication required"
        } else {
            "250 OK"
        }
    })
    .await;
    let config = orgadmin_domain::Config {
        mail_retry_base_ms: 1,
        ..worker_config(&app, &format!("smtp://127.0.0.1:{relay}"))
    };
    let worker = TestWorker::start(&app, config);
    let started = Instant::now();
    let tried = loop {
        let tried = mail_attempts(&app).await;
        assert!(tried.len() >= expected.len(), "a mail per recipient at least");
        assert!(
            tried.iter().all(|(_, state, _)| state == "PENDING"),
            "a refusal of our sender parked a mail: {tried:?}"
        );
        // Tried again: the refusal was recorded as one that may pass.
        if tried.iter().all(|(attempts, _, _)| *attempts >= 2) {
            break tried;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the worker did not try again: {tried:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (_, _, error) in &tried {
        let error = error.as_deref().unwrap_or_default();
        assert!(error.contains("MAIL FROM") && error.contains("530"), "{error}");
    }
    let (_, _, parked) = app.domain.outbox_counts().await.unwrap();
    assert_eq!(parked, 0);
    worker.stop().await;
    app.finish().await;
}

/// A delivered mail whose "sent" mark fails (here: it waits on another
/// session's lock past `lock_timeout`; alike a pool that hands out no
/// connection in time, SQLITE_BUSY, a dropped connection) is marked by a
/// later try while its claim lasts, and is not sent again. Before, the
/// failed mark was only logged: the mail stayed pending and, once the lease
/// ran out, was claimed and sent a second time. PostgreSQL only: the lock
/// is another session's row lock, which SQLite (one writer) cannot hold
/// beside a worker's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_mark_fails_once_is_not_sent_again() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let app = TestApp::start(Backend::Postgres).await;
    let _ = queue_mails(&app, 1).await;
    let queued = app.count("SELECT COUNT(*) FROM outbox_mails").await as usize;
    // The relay takes every mail, but answers the end of each only once
    // the test holds its lock: the marks come after it, whatever the timing.
    let (open, opened) = tokio::sync::watch::channel(false);
    let delivered = Arc::new(AtomicUsize::new(0));
    let relay = {
        let delivered = delivered.clone();
        scripted_relay(move |command: String| {
            let (mut opened, delivered) = (opened.clone(), delivered.clone());
            async move {
                match command.to_ascii_uppercase().as_str() {
                    "DATA" => "354 end with .",
                    "." => {
                        let _ = opened.wait_for(|open| *open).await;
                        delivered.fetch_add(1, Ordering::SeqCst);
                        "250 accepted"
                    }
                    _ => "250 OK",
                }
            }
        })
        .await
    };
    let lease_ms = 4000;
    let pool =
        orgadmin_domain::persistence::connect(&format!("{}?options=-c%20lock_timeout%3D200ms", app.database_url), 2)
            .await
            .unwrap();
    let impatient = orgadmin_domain::Domain::new(pool.clone(), test_vault(), &[OPERATOR_TOKEN.to_owned()]);
    let config = orgadmin_domain::Config {
        mail_lease_ms: lease_ms,
        ..worker_config(&app, &format!("smtp://127.0.0.1:{relay}"))
    };
    let outbox = Arc::new(orgadmin_worker::mail::Outbox::from_config(impatient, &config, "impatient".into()).unwrap());
    let first = {
        let outbox = outbox.clone();
        tokio::spawn(async move { outbox.drain_once(100).await })
    };
    let started = Instant::now();
    while app
        .count("SELECT COUNT(*) FROM outbox_mails WHERE claimed_by = 'impatient'")
        .await
        < queued as i64
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the mails were not claimed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every lease ends by then: the claims were made before this moment.
    let leases_end = now_millis() + lease_ms;
    let holder = app
        .in_progress(&["SELECT id FROM outbox_mails FOR UPDATE".to_owned()])
        .await;
    open.send(true).unwrap();
    app.until_waiting_on_a_lock("outbox_mails").await;
    // Held past `lock_timeout`: the mark waiting on it has failed.
    tokio::time::sleep(Duration::from_millis(600)).await;
    holder.commit().await;
    assert_eq!(first.await.unwrap().unwrap(), queued);
    assert_eq!(delivered.load(Ordering::SeqCst), queued);
    // After the leases, nothing is due again: every mail was marked.
    tokio::time::sleep(Duration::from_millis((leases_end - now_millis()).max(0) as u64 + 100)).await;
    assert_eq!(
        outbox.drain_once(100).await.unwrap(),
        0,
        "a delivered mail was claimed again"
    );
    assert_eq!(delivered.load(Ordering::SeqCst), queued, "each mail delivered once");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox_mails WHERE state = 'SENT'")
            .await,
        queued as i64
    );
    pool.close().await.unwrap();
    app.finish().await;
}

/// A worker whose lease ran out while it sent may finish after another
/// claim took the mail. Its failure then records nothing (no attempt counted
/// twice, no mail parked that the other claim holds or delivered), and it
/// cannot give back a mail it no longer holds; a delivery, whoever made it,
/// is recorded once.
async fn a_claim_that_outlived_its_lease_records_nothing(backend: Backend) {
    use orgadmin_domain::services::outbox::Failure;
    let app = TestApp::start(backend).await;
    let _ = queue_mails(&app, 1).await;
    let domain = &app.domain;
    let stale = domain.claim_due_mails("stale", 100, 30).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let current = domain.claim_due_mails("current", 100, 60_000).await.unwrap();
    let ids = |claims: &[orgadmin_domain::services::outbox::ClaimedMail]| {
        claims.iter().map(|c| c.claim.id).collect::<HashSet<_>>()
    };
    assert_eq!(
        ids(&stale),
        ids(&current),
        "the leases ran out: the same mails, claimed again"
    );
    let stale = stale[0].claim.clone();
    let current = current.into_iter().find(|c| c.claim.id == stale.id).unwrap().claim;

    let recorded = domain
        .mark_mail_failed(&stale, "550 no", Failure::Permanent, &RETRY)
        .await
        .unwrap();
    assert!(!recorded);
    domain.release_mail(&stale).await.unwrap();
    assert_eq!(
        mail_row(&app, current.id).await,
        (0, "PENDING".into(), Some("current".into()))
    );
    assert!(
        domain.claim_due_mails("third", 100, 60_000).await.unwrap().is_empty(),
        "the current claims still hold every mail"
    );

    // The stale worker did deliver it after all: that is recorded.
    domain.mark_mail_sent(&stale).await.unwrap();
    assert_eq!(mail_row(&app, current.id).await.1, "SENT");
    let recorded = domain
        .mark_mail_failed(&current, "421 try later", Failure::Transient, &RETRY)
        .await
        .unwrap();
    assert!(!recorded, "a sent mail is not failed afterwards");
    assert_eq!(mail_row(&app, current.id).await.1, "SENT");

    // A claim given back is claimable at once.
    let _ = queue_mails(&app, 1).await;
    let given = domain.claim_due_mails("giver", 100, 60_000).await.unwrap();
    assert!(!given.is_empty());
    for claimed in &given {
        domain.release_mail(&claimed.claim).await.unwrap();
    }
    let taken = domain.claim_due_mails("taker", 100, 60_000).await.unwrap();
    assert_eq!(ids(&taken), ids(&given));
    app.finish().await;
}

/// A mail's attempts, state and claimer.
async fn mail_row(app: &TestApp, id: uuid::Uuid) -> (i32, String, Option<String>) {
    let row = app
        .row_where("SELECT attempts, state, claimed_by FROM outbox_mails WHERE id =", id)
        .await;
    (
        row.try_get_by_index(0).unwrap(),
        row.try_get_by_index(1).unwrap(),
        row.try_get_by_index(2).unwrap(),
    )
}

/// A relay that is slow but works: mails of a batch that wait for a free
/// connection until too little of their claim is left for a fair try go
/// back unsent (and are claimed again), rather than being tried in a
/// window too short and counted as failed attempts.
async fn a_slow_relay_costs_no_attempts(backend: Backend) {
    let app = TestApp::start(backend).await;
    let sink = SmtpSink::start(300);
    let (_, expected) = queue_mails(&app, 40).await;
    let _worker = spawn_worker(&app, &sink, 2000);
    wait_for_all(&sink, &expected, Duration::from_secs(90)).await;
    let started = Instant::now();
    while app
        .count("SELECT COUNT(*) FROM outbox_mails WHERE state <> 'SENT'")
        .await
        > 0
    {
        assert!(started.elapsed() < Duration::from_secs(30), "mails left unsent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox_mails WHERE attempts > 0 OR last_error IS NOT NULL")
            .await,
        0,
        "a mail was counted as failed although the relay works"
    );
    app.finish().await;
}

/// A mail whose content this worker cannot decrypt (most often a worker
/// started with another key than the service's) waits, its attempts not
/// counted, and is claimed again later: fixing the key delivers it. Before,
/// every such mail was parked as failed on first sight.
async fn a_mail_this_worker_cannot_read_waits(backend: Backend) {
    let app = TestApp::start(backend).await;
    let _ = queue_mails(&app, 1).await;
    let domain = &app.domain;
    let ids: Vec<uuid::Uuid> = domain
        .claim_due_mails("reader", 100, 60_000)
        .await
        .unwrap()
        .iter()
        .map(|c| c.claim.id)
        .collect();
    assert!(!ids.is_empty());
    // Claimed above, so only the mail made unreadable is due again.
    let unreadable = ids[0];
    app.execute_bound(
        "UPDATE outbox_mails SET payload = 'not what the key sealed', claimed_by = NULL, lease_until = NULL WHERE id = $1",
        vec![unreadable.into()],
    )
    .await;
    let started = now_millis();
    let claimed = domain.claim_due_mails("wrong-key", 100, 60_000).await.unwrap();
    assert!(
        claimed.iter().all(|c| c.claim.id != unreadable),
        "an unreadable mail is not handed out"
    );
    let (attempts, state, claimed_by) = mail_row(&app, unreadable).await;
    assert_eq!((attempts, state.as_str(), claimed_by), (0, "PENDING", None));
    let row = app
        .row_where(
            "SELECT next_attempt_at, last_error FROM outbox_mails WHERE id =",
            unreadable,
        )
        .await;
    let next: i64 = row.try_get_by_index(0).unwrap();
    let error: Option<String> = row.try_get_by_index(1).unwrap();
    assert!(next >= started + 4 * 60 * 1000, "it waits minutes, not a poll");
    assert!(error.unwrap_or_default().contains("payload unreadable"));
    let (_, _, failed) = domain.outbox_counts().await.unwrap();
    assert_eq!(failed, 0, "nothing parked");
    app.finish().await;
}
