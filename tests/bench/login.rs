//! Login benchmark (BENCHMARKS.md, issue 12), one process on PostgreSQL:
//!
//! 1. Bare argon2id: `verify_password` of the same PHC string (OWASP's
//!    parameters, as the server stores them) on one OS thread per core, as
//!    fast as it goes; and the same hash into memory each thread keeps (no
//!    page faults per hash, as the server hashes): the most logins the cores
//!    could do. The goal is judged against the faster of the two.
//! 2. `Login` over real gRPC (the in-process server, `TestApp`) at a fixed
//!    concurrency, round robin over users who each set their password at
//!    activation: each call reserves a try, checks the hash on the blocking
//!    pool, and writes the session and its history.
//!    (1) and (2) alternate, `LOGIN_RUNS` times; the table gives medians,
//!    and the goal is judged on the median of each run's own ratio: these
//!    shared cores change speed by a fifth within a minute, so many short
//!    runs side by side say more than a few long ones.
//! 3. While logins saturate the cores, `GetUser` paced at `LOGIN_GET_RATE`
//!    calls/s: its p99, measured from when each call was due (hashing stays
//!    off the async threads, so reads should not wait behind it).
//!
//! Knobs: `LOGIN_SECS` (5) per phase, `LOGIN_RUNS` (8), `LOGIN_CONCURRENCY`
//! (16), `LOGIN_USERS` (16), `LOGIN_GET_RATE` (50) for `LOGIN_GET_SECS` (10).
//! `CARGO_TARGET_DIR=/work/target-bench cargo bench -p orgadmin-tests --bench login`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::password_hash::PasswordVerifier;
use orgadmin_domain::passwords::{Hasher, Password, PasswordSettings};
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

/// How the bare baseline hashes.
#[derive(Clone, Copy)]
enum Bare {
    /// `verify_password`, as a plain user of the crate does: fresh argon2
    /// memory (m_cost KiB, zeroed, page-faulted in) per verification.
    Plain,
    /// `hash_password_into_with_memory` into memory each thread keeps, as
    /// the server does: the fastest these cores hash, the stricter baseline.
    KeptMemory,
}

/// Verifications per second of bare argon2id on one thread per core.
fn bare_argon2(phc: &str, secs: u64, how: Bare) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            let (stop, done, phc) = (stop.clone(), done.clone(), phc.to_owned());
            std::thread::spawn(move || {
                let argon2 = argon2::Argon2::default();
                let parsed = argon2::password_hash::phc::PasswordHash::new(&phc).unwrap();
                let params = argon2::Params::try_from(&parsed).unwrap();
                let kept = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params.clone());
                let (salt, expected) = (parsed.salt.unwrap(), parsed.hash.unwrap());
                let mut memory = vec![argon2::Block::default(); params.block_count()];
                let mut out = vec![0u8; expected.len()];
                while !stop.load(Ordering::Relaxed) {
                    match how {
                        Bare::Plain => {
                            assert!(argon2.verify_password(TEST_PASSWORD.as_bytes(), phc.as_str()).is_ok())
                        }
                        Bare::KeptMemory => {
                            kept.hash_password_into_with_memory(
                                TEST_PASSWORD.as_bytes(),
                                salt.as_ref(),
                                &mut out,
                                &mut memory,
                            )
                            .unwrap();
                            assert_eq!(out, expected.as_bytes());
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Logins per second over gRPC, `concurrency` callers round robin over
/// `logins`, until `stop`.
async fn logins(app: &TestApp, logins: &[String], concurrency: usize, stop: Arc<AtomicBool>) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (mut auth, done, errors, next, stop) =
            (app.auth(), done.clone(), errors.clone(), next.clone(), stop.clone());
        let logins = logins.to_vec();
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize % logins.len();
                let answer = auth
                    .login(req(
                        "",
                        pb::LoginRequest {
                            login_id: logins[i].clone(),
                            password: TEST_PASSWORD.into(),
                            ..Default::default()
                        },
                    ))
                    .await;
                if answer.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    (
        done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        errors.load(Ordering::Relaxed),
    )
}

async fn run() {
    let secs = env("LOGIN_SECS", 5);
    let runs = env("LOGIN_RUNS", 8);
    let concurrency = env("LOGIN_CONCURRENCY", 16) as usize;
    let users = env("LOGIN_USERS", 16);
    let get_rate = env("LOGIN_GET_RATE", 50);
    let get_secs = env("LOGIN_GET_SECS", 10);
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let mut login_ids = Vec::new();
    for i in 0..users {
        let (_, email) = app.member_with_password(&fixture, &format!("Login{i}"), &[]).await;
        login_ids.push(email);
    }
    let phc = Hasher::new(&PasswordSettings::default())
        .unwrap()
        .hash(&Password::new(TEST_PASSWORD))
        .await
        .unwrap();
    eprintln!("{users} users with passwords; PHC {}", &phc[..30]);

    let (mut bare, mut kept, mut grpc) = (Vec::new(), Vec::new(), Vec::new());
    // Login against the faster baseline of the same run: steadier than the
    // ratio of the medians when the machine's speed drifts between runs.
    let mut per_run = Vec::new();
    for run in 0..runs {
        let bare_run = |how| {
            let phc = phc.clone();
            tokio::task::spawn_blocking(move || bare_argon2(&phc, secs, how))
        };
        let b = bare_run(Bare::Plain).await.unwrap();
        let k = bare_run(Bare::KeptMemory).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let timer = tokio::spawn({
            let stop = stop.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                stop.store(true, Ordering::Relaxed);
            }
        });
        let (g, errors) = logins(&app, &login_ids, concurrency, stop).await;
        timer.await.unwrap();
        eprintln!(
            "run {run}: bare argon2id {b:.1}/s, with kept memory {k:.1}/s, Login {g:.1}/s ({errors} errors), ratios {:.2} / {:.2}",
            g / b,
            g / k
        );
        bare.push(b);
        kept.push(k);
        grpc.push(g);
        per_run.push(g / b.max(k));
    }

    // GetUser paced while logins saturate the cores.
    let stop = Arc::new(AtomicBool::new(false));
    let load = logins(&app, &login_ids, concurrency, stop.clone());
    let reads = async {
        let mut latencies = Vec::new();
        let interval = Duration::from_secs_f64(1.0 / get_rate as f64);
        let started = Instant::now();
        let mut users = app.users();
        let mut due = started;
        while started.elapsed() < Duration::from_secs(get_secs) {
            tokio::time::sleep_until(due.into()).await;
            users
                .get_user(req(
                    &fixture.admin_token,
                    pb::GetUserRequest {
                        id: fixture.admin.id.clone(),
                    },
                ))
                .await
                .expect("get user");
            latencies.push(due.elapsed());
            due += interval;
        }
        stop.store(true, Ordering::Relaxed);
        latencies
    };
    let ((logins_during, _), mut latencies) = tokio::join!(load, reads);
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1];

    let (b, k, g) = (median(&mut bare), median(&mut kept), median(&mut grpc));
    println!();
    println!("| {runs} runs of {secs} s, medians | per second | vs plain | vs kept memory | goal |");
    println!("| --- | ---: | ---: | ---: | --- |");
    println!("| bare argon2id `verify_password`, one thread per core | {b:.1} | 1.00 | | |");
    println!(
        "| bare argon2id into kept memory, one thread per core | {k:.1} | {:.2} | 1.00 | |",
        k / b
    );
    println!(
        "| `Login` over gRPC, {concurrency} callers | {g:.1} | {:.2} | **{:.2}** | ≥ 0.90 of the faster baseline |",
        g / b,
        g / k
    );
    println!(
        "| `GetUser` at {get_rate}/s while logins saturate the cores ({logins_during:.1} logins/s) | p50 {:.1} ms, p99 {:.1} ms | | p99 < 10 ms |",
        p(0.50).as_secs_f64() * 1000.0,
        p(0.99).as_secs_f64() * 1000.0
    );
    println!(
        "| `Login` / faster baseline, median of the {runs} runs' own ratios | {:.2} | | | ≥ 0.90 |",
        median(&mut per_run)
    );
    app.finish().await;
}
