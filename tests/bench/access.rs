//! Authorisation cost at scale (BENCHMARKS.md, issue 13), one process on
//! PostgreSQL over real gRPC (the in-process server, `TestApp`):
//!
//! An organisation with `ACCESS_USERS` (10,000) users spread over
//! `ACCESS_UNITS` (1,000) units six levels deep, and `ACCESS_LEVELS` (5,000)
//! admin levels held on units. Then `ListUsers` (a page of 50) is called
//! back to back by
//!
//! 1. the organisation administrator (no scope: the baseline), and
//! 2. a level 3 administrator holding the level on a unit two levels down
//!    (its subtree: about a tenth of the units and users),
//!
//! alternating `ACCESS_RUNS` rounds of `ACCESS_CALLS` calls each; medians of
//! the rounds' p50 and p99. The rights check's share is (scoped − baseline)
//! / scoped: what resolving and applying the scope adds to the call.
//!
//! `CARGO_TARGET_DIR=/work/target-bench cargo bench -p orgadmin-tests --bench access`
//! (`ACCESS_ANALYZE=0`: without ANALYZE after the setup, as the first
//! measurement of 2026-12-03 ran)

use std::time::Instant;

use orgadmin_proto::v1 as pb;
use orgadmin_tests::bench::{env, median, run_on_all_cores};
use orgadmin_tests::*;

/// The server runs in this process: it allocates as the service binary
/// does (glibc's malloc took ~17% of this process's CPU in IssueCertificate).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    run_on_all_cores(run());
}

/// `calls` ListUsers back to back as `token`: (p50, p99) in ms.
async fn list_round(app: &TestApp, token: &str, org: &str, calls: u64) -> (f64, f64, usize) {
    let mut users = app.users();
    let mut latencies = Vec::with_capacity(calls as usize);
    let mut seen = 0;
    for _ in 0..calls {
        let started = Instant::now();
        let page = users
            .list_users(req(
                token,
                pb::ListUsersRequest {
                    organisation_id: org.to_owned(),
                    page_size: 50,
                    ..Default::default()
                },
            ))
            .await
            .expect("list users")
            .into_inner();
        latencies.push(started.elapsed());
        seen = page.users.len();
    }
    latencies.sort();
    let p = |q: f64| {
        latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1].as_secs_f64() * 1000.0
    };
    (p(0.50), p(0.99), seen)
}

/// Runs `make` for `0..n` with `concurrency` in flight.
async fn in_parallel<F, T>(n: usize, concurrency: usize, make: impl Fn(usize) -> F) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut out = Vec::with_capacity(n);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0;
    while next < n || !tasks.is_empty() {
        while next < n && tasks.len() < concurrency {
            tasks.spawn(make(next));
            next += 1;
        }
        if let Some(done) = tasks.join_next().await {
            out.push(done.unwrap());
        }
    }
    out
}

async fn run() {
    let users = env("ACCESS_USERS", 10_000) as usize;
    let units = env("ACCESS_UNITS", 1_000) as usize;
    let levels = env("ACCESS_LEVELS", 5_000) as usize;
    let runs = env("ACCESS_RUNS", 5);
    let calls = env("ACCESS_CALLS", 200);
    let app = TestApp::start(Backend::Postgres).await;
    // A licence for every user (the default is 50).
    let fixture = app.org_with_admin_limits(Some(users as i32 + 100), None).await;
    let org = fixture.org.id.clone();
    let setup = Instant::now();

    // Units six levels deep: a 4-ary tree under one root (1, 4, 16, 64,
    // 256 and the rest on the sixth level for 1,000 units).
    let mut unit_ids: Vec<String> = Vec::with_capacity(units);
    let mut depth_of: Vec<usize> = Vec::with_capacity(units);
    let mut parent_of: Vec<Option<usize>> = Vec::with_capacity(units);
    for i in 0..units {
        let parent = (i > 0).then(|| (i - 1) / 4);
        let depth = parent.map_or(0, |p| depth_of[p] + 1);
        let unit = app
            .unit(
                &fixture,
                &format!("Enhed {i}"),
                parent.map_or("", |p| unit_ids[p].as_str()),
            )
            .await;
        unit_ids.push(unit.id);
        depth_of.push(depth);
        parent_of.push(parent);
    }
    let deepest = depth_of.iter().max().copied().unwrap_or(0) + 1;
    eprintln!("{units} units, {deepest} levels deep, in {:.0?}", setup.elapsed());

    // Users, spread over the units round robin, made by CreateUser.
    let admin = fixture.admin_token.clone();
    let user_ids: Vec<String> = in_parallel(users, 16, |i| {
        let (mut client, admin, org) = (app.users(), admin.clone(), org.clone());
        let unit_id = unit_ids[i % units].clone();
        async move {
            client
                .create_user(req(
                    &admin,
                    pb::CreateUserRequest {
                        unit_id,
                        cpr: String::new(),
                        birth_date: "1980-01-01".into(),
                        ..new_user(&org, &format!("Bruger{i}"), &[])
                    },
                ))
                .await
                .expect("create user")
                .into_inner()
                .user
                .expect("user")
                .id
        }
    })
    .await;
    eprintln!("{users} users in {:.0?}", setup.elapsed());

    // Admin levels held on units, by GrantAdminLevel (one per user at most).
    in_parallel(levels.min(users), 8, |i| {
        let (mut access, admin) = (app.access(), admin.clone());
        let (user_id, unit_id) = (user_ids[i].clone(), unit_ids[(i * 7) % units].clone());
        async move {
            access
                .grant_admin_level(req(
                    &admin,
                    pb::GrantAdminLevelRequest {
                        user_id,
                        level: 3 + (i % 2) as i32,
                        unit_id,
                    },
                ))
                .await
                .expect("grant level")
        }
    })
    .await;
    eprintln!("{levels} levels in {:.0?}", setup.elapsed());

    // The scoped administrator: level 3 on a unit two levels down.
    let scope_unit = (0..units).find(|&u| depth_of[u] == 2).expect("a unit two levels down");
    let subtree: Vec<usize> = (0..units)
        .filter(|&u| {
            let mut at = Some(u);
            while let Some(a) = at {
                if a == scope_unit {
                    return true;
                }
                at = parent_of[a];
            }
            false
        })
        .collect();
    let (scoped, scoped_token) = app.member_in(&fixture, "Scoped", &unit_ids[scope_unit]).await;
    app.grant_level(&admin, &scoped.id, 3, &unit_ids[scope_unit])
        .await
        .expect("grant the scoped level");
    eprintln!(
        "scoped administrator: level 3 on a unit whose subtree holds {} units",
        subtree.len()
    );

    // Statistics as a running system has them: autovacuum analyses a table
    // once enough rows changed, at a moment of its own. A table filled a
    // second ago has none, and its plans are not the steady state (with no
    // statistics the scoped list took a bitmap scan of every user).
    // `ACCESS_ANALYZE=0` measures the fresh tables instead.
    if env("ACCESS_ANALYZE", 1) == 1 {
        use sea_orm::ConnectionTrait;
        app.domain.db().execute_unprepared("ANALYZE").await.expect("analyze");
        eprintln!("tables analysed");
    }
    let (mut base50, mut base99, mut scoped50, mut scoped99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Warm both paths (connections, plans).
    list_round(&app, &admin, &org, 20).await;
    list_round(&app, &scoped_token, &org, 20).await;
    for run in 0..runs {
        let (b50, b99, b_seen) = list_round(&app, &admin, &org, calls).await;
        let (s50, s99, s_seen) = list_round(&app, &scoped_token, &org, calls).await;
        eprintln!(
            "run {run}: organisation administrator p50 {b50:.2} ms p99 {b99:.2} ms ({b_seen} per page); level 3 on a subtree p50 {s50:.2} ms p99 {s99:.2} ms ({s_seen} per page)"
        );
        base50.push(b50);
        base99.push(b99);
        scoped50.push(s50);
        scoped99.push(s99);
    }
    let (b50, b99, s50, s99) = (
        median(&mut base50),
        median(&mut base99),
        median(&mut scoped50),
        median(&mut scoped99),
    );
    println!();
    println!(
        "| `ListUsers`, page of 50, {users} users, {units} units {deepest} deep, {levels} levels; {runs} rounds of {calls} calls, medians | p50 | p99 | goal |"
    );
    println!("| --- | ---: | ---: | --- |");
    println!("| organisation administrator (baseline) | {b50:.2} ms | {b99:.2} ms | |");
    println!(
        "| level 3 on a unit two levels down ({} units below) | {s50:.2} ms | {s99:.2} ms | p99 < 20 ms |",
        subtree.len()
    );
    println!(
        "| the scope's share of the scoped call (p50) | {:.0}% | {:.0}% | < 20% |",
        ((s50 - b50) / s50 * 100.0).max(0.0),
        ((s99 - b99) / s99 * 100.0).max(0.0)
    );
    app.finish().await;
}
