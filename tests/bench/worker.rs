//! Worker benchmarks (BENCHMARKS.md), on PostgreSQL, each beside its baseline
//! in one run:
//! - outbox drain to a local SMTP sink with k pooled connections against one
//!   connection (the sink waits 20 ms per message, as a relay would), and the
//!   plain mails/s into an undelayed sink;
//! - timed reactivation of 100,000 due users with history, against a raw
//!   set-based UPDATE of the same rows.
//!
//! `cargo bench -p orgadmin-tests --bench worker` (needs PostgreSQL and aiosmtpd).

use std::time::Instant;

use orgadmin_domain::model::now_millis;
use orgadmin_tests::*;
use sea_orm::ConnectionTrait;

/// The server runs in this process: it allocates as the service binary
/// does (glibc's malloc took ~17% of this process's CPU in IssueCertificate).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RUNS: usize = 3;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

async fn queue_mails(app: &TestApp, n: usize) {
    let fixture = app.org_with_admin_limits(Some(n as i32 + 10), None).await;
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..8 {
        let mut users = app.users();
        let token = fixture.admin_token.clone();
        let org = fixture.org.id.clone();
        tasks.spawn(async move {
            for i in (chunk..n.saturating_sub(1)).step_by(8) {
                users
                    .create_user(req(&token, new_user(&org, &format!("B{i}"), &[])))
                    .await
                    .expect("queue");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Mails per second for one drain of `n` queued mails with `k` connections.
async fn drain_rate(n: usize, k: u32, delay_ms: u32) -> f64 {
    let app = TestApp::start(Backend::Postgres).await;
    let sink = SmtpSink::start_light(delay_ms);
    queue_mails(&app, n).await;
    let config = orgadmin_domain::Config {
        mail_pool_size: k,
        ..worker_config(&app, &sink.url())
    };
    let outbox = orgadmin_worker::mail::Outbox::from_config(app.domain.clone(), &config, "bench".into()).unwrap();
    let started = Instant::now();
    let mut sent = 0;
    loop {
        let claimed = outbox.drain_once(u64::from(k) * 8).await.unwrap();
        if claimed == 0 {
            break;
        }
        sent += claimed;
    }
    let elapsed = started.elapsed();
    let (pending, delivered, failed) = app.domain.outbox_counts().await.unwrap();
    assert_eq!((pending, failed), (0, 0));
    assert_eq!(delivered as usize, sent);
    let ids: std::collections::HashSet<String> = sink.received().into_iter().map(|m| m.message_id).collect();
    assert_eq!(ids.len(), sent, "the sink holds every mail, once");
    app.finish().await;
    sent as f64 / elapsed.as_secs_f64()
}

async fn seed_due_users(app: &TestApp, n: usize) {
    let db = app.domain.db();
    let org = app.create_org(Some(1_000_000), None).await;
    let past = now_millis() - 60_000;
    db.execute_unprepared(&format!(
        "INSERT INTO users (id, organisation_id, state, first_name, surname, email, language, external_ids, \
         identification_means, signing_right, anonymous, deactivated_until, activated_at, version, created_at, updated_at) \
         SELECT gen_random_uuid(), '{org}', 'DEACTIVATED', 'Bench', 'User', 'bench' || g || '@firma.dk', 'da', '[]', '[]', \
         false, false, {past}, {past}, 1, {past}, {past} FROM generate_series(1, {n}) AS g",
        org = org.id
    ))
    .await
    .unwrap();
    db.execute_unprepared("ANALYZE users").await.unwrap();
    recount_licences(app).await;
}

/// Puts the benchmark's users back to due, and the licence counter with
/// them (raw SQL bypasses the domain, which keeps the counter).
async fn redeactivate(app: &TestApp) {
    let past = now_millis() - 60_000;
    let db = app.domain.db();
    db.execute_unprepared(&format!(
        "UPDATE users SET state = 'DEACTIVATED', deactivated_until = {past} WHERE first_name = 'Bench'"
    ))
    .await
    .unwrap();
    recount_licences(app).await;
}

/// The licence counter as R-ORG-4 defines it (standing users and timed
/// deactivations hold a seat), for rows written by raw SQL.
async fn recount_licences(app: &TestApp) {
    app.domain
        .db()
        .execute_unprepared(
            "UPDATE organisations SET licences_used = (SELECT COUNT(*) FROM users \
             WHERE users.organisation_id = organisations.id AND (users.state IN ('ACTIVE', 'PENDING_ACTIVATION') \
             OR (users.state = 'DEACTIVATED' AND users.deactivated_until IS NOT NULL)))",
        )
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    // --- outbox drain ---------------------------------------------------------
    let (n_delayed, delay) = (240, 20);
    let mut one = Vec::new();
    let mut four = Vec::new();
    for _ in 0..RUNS {
        one.push(drain_rate(n_delayed, 1, delay).await);
        four.push(drain_rate(n_delayed, 4, delay).await);
    }
    let (r1, r4) = (median(one.clone()), median(four.clone()));
    let mut plain = Vec::new();
    for _ in 0..RUNS {
        plain.push(drain_rate(1000, 4, 0).await);
    }
    println!("## Outbox drain (PostgreSQL, aiosmtpd sink on loopback, median of {RUNS} runs)");
    println!("| case | mails | mails/s (median) | runs |");
    println!("| --- | --- | --- | --- |");
    println!("| 1 connection, sink 20 ms/mail | {n_delayed} | {r1:.1} | {one:.1?} |");
    println!("| 4 pooled connections, sink 20 ms/mail | {n_delayed} | {r4:.1} | {four:.1?} |");
    println!(
        "| 4 pooled connections, undelayed sink | 1000 | {:.1} | {plain:.1?} |",
        median(plain.clone())
    );
    println!(
        "\nratio 4 connections / (4 × 1 connection) = {:.2} (goal ≥ 0.80)\n",
        r4 / (4.0 * r1)
    );

    // --- timed reactivation -----------------------------------------------------
    let n = 100_000;
    let app = TestApp::start(Backend::Postgres).await;
    seed_due_users(&app, n).await;
    let mut sweep = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let done = app.domain.reactivate_due_users(now_millis(), 1000).await.unwrap();
        sweep.push(started.elapsed().as_secs_f64());
        assert_eq!(done as usize, n);
        redeactivate(&app).await;
        let started = Instant::now();
        let result = app
            .domain
            .db()
            .execute_unprepared(&format!(
                "UPDATE users SET state = CASE WHEN activated_at IS NULL THEN 'PENDING_ACTIVATION' ELSE 'ACTIVE' END, \
                 deactivated_until = NULL, version = version + 1, updated_at = {now} \
                 WHERE state = 'DEACTIVATED' AND deactivated_until <= {now}",
                now = now_millis()
            ))
            .await
            .unwrap();
        raw.push(started.elapsed().as_secs_f64());
        assert_eq!(result.rows_affected() as usize, n);
        redeactivate(&app).await;
    }
    let history = app
        .domain
        .db()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT COUNT(*) FROM history_events WHERE activity = 'USER_REACTIVATED'".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(history as usize, n * RUNS, "one history row per user per sweep");
    app.finish().await;
    let (s, r) = (median(sweep.clone()), median(raw.clone()));
    println!("## Timed reactivation of {n} due users (PostgreSQL, median of {RUNS} runs)");
    println!("| case | seconds (median) | users/s | runs (s) |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| sweep: batches of 1000 in 2 lanes, UPDATE + history INSERT + licence counters per batch | {s:.2} | {:.0} | {sweep:.2?} |",
        n as f64 / s
    );
    println!(
        "| baseline: one raw set-based UPDATE, no history | {r:.2} | {:.0} | {raw:.2?} |",
        n as f64 / r
    );
    println!("\nsweep / raw = {:.1}× the time (goal: sweep < 10 s)", s / r);
}
