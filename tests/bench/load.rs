//! A small gRPC load client for `scripts/bench` (see BENCHMARKS.md).
//!
//! Talks to an already running `orgadmin-service` over real HTTP/2 on
//! loopback. Sets up its own organisation (operator token, a licence count
//! of 1,000,000), first administrator, that administrator's API token and a
//! plain user to read back, then runs its phases. Configured by environment
//! (`cargo bench` passes `--bench`, so arguments are ignored):
//!
//! - `BENCH_ADDR` (required): `host:port` of the server.
//! - `BENCH_OPERATOR_TOKEN` (required): an operator bearer token of that server.
//! - `BENCH_CONCURRENCY` (32): concurrent callers in the closed-loop phases.
//! - `BENCH_CONNECTIONS` (4): HTTP/2 connections the callers share.
//! - `BENCH_SECONDS` (10): measured seconds per phase.
//! - `BENCH_WARMUP` (2): unmeasured seconds before each phase.
//! - `BENCH_RATE` (2000): calls/s of the `fixed` phase.
//! - `BENCH_PHASES` (`health,get,create,fixed`): the phases, in order:
//!   `health` (grpc.health.v1 Check), `get` (GetUser), `create` (CreateUser),
//!   all closed loop; `create:<n>` (CreateUser spread over n organisations);
//!   `fixed` or `fixed:<calls/s>` (GetUser paced open loop).
//! - `BENCH_SERVER_PID` (none): the server's pid, to sample its VmRSS and
//!   VmHWM from /proc.
//!
//! Output: human-readable lines, plus tab-separated machine lines starting
//! with `SETUP`, `RESULT`, `CPU`, `LAG` (paced phases: the pacer's lag p99
//! and max, ms) or `RSS` that `scripts/bench` turns into a table.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use orgadmin_proto::v1 as pb;
use orgadmin_proto::v1::auth_service_client::AuthServiceClient;
use orgadmin_proto::v1::organisation_service_client::OrganisationServiceClient;
use orgadmin_proto::v1::user_service_client::UserServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Settings {
    addr: String,
    operator_token: String,
    concurrency: usize,
    connections: usize,
    seconds: f64,
    warmup: f64,
    rate: f64,
    phases: Vec<String>,
    server_pid: Option<u32>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        _ => default,
    }
}

impl Settings {
    fn from_env() -> Self {
        let addr = std::env::var("BENCH_ADDR").expect("set BENCH_ADDR=host:port of a running orgadmin-service");
        let operator_token = std::env::var("BENCH_OPERATOR_TOKEN").expect("set BENCH_OPERATOR_TOKEN");
        let phases = env_or("BENCH_PHASES", "health,get,create,fixed".to_owned())
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        Self {
            addr,
            operator_token,
            concurrency: env_or("BENCH_CONCURRENCY", 32usize).max(1),
            connections: env_or("BENCH_CONNECTIONS", 4usize).max(1),
            seconds: env_or("BENCH_SECONDS", 10.0f64),
            warmup: env_or("BENCH_WARMUP", 2.0f64),
            rate: env_or("BENCH_RATE", 2000.0f64),
            phases,
            server_pid: std::env::var("BENCH_SERVER_PID")
                .ok()
                .and_then(|p| p.trim().parse().ok()),
        }
    }
}

fn req<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("header"));
    request
}

/// A valid CVR number derived from `seed` (the domain's own modulus-11 rule decides).
fn cvr(seed: u64) -> String {
    let mut n = 10_000_000 + seed % 89_999_999;
    loop {
        let candidate = format!("{n:08}");
        if orgadmin_domain::validate::cvr(&candidate).is_ok() {
            return candidate;
        }
        n = if n >= 99_999_999 { 10_000_000 } else { n + 1 };
    }
}

/// One run's unique tag, so repeated runs against one database never collide.
fn run_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

fn new_user(org: &str, email: String, roles: &[pb::Role]) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        organisation_id: org.to_owned(),
        first_name: "Bench".into(),
        surname: "Jørgensen".into(),
        email,
        birth_date: "1990-01-01".into(),
        roles: roles.iter().map(|r| *r as i32).collect(),
        language: pb::Language::Da as i32,
        ..Default::default()
    }
}

struct Fixture {
    org_id: String,
    admin_token: String,
    target_user_id: String,
}

/// Organisation (operator token, big licence count), its first administrator,
/// that administrator's API token, and one plain user to read back.
async fn setup(channel: &Channel, operator: &str, tag: &str) -> AnyResult<Fixture> {
    let seed = u64::from_str_radix(&tag[..8], 16).unwrap_or(1);
    let org = OrganisationServiceClient::new(channel.clone())
        .create_organisation(req(
            operator,
            pb::CreateOrganisationRequest {
                name: format!("Bench {tag} ApS"),
                cvr: cvr(seed),
                licence_count: Some(1_000_000),
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .organisation
        .ok_or("no organisation in response")?;
    let mut users = UserServiceClient::new(channel.clone());
    // The administrator's credential comes from their own activation (the
    // operator cannot mint one for them): the birth-date code the create
    // returns, then a session, then their own API token.
    let created = users
        .create_user(req(operator, new_user(&org.id, format!("admin.{tag}@bench.dk"), &[])))
        .await?
        .into_inner();
    let admin = created.user.ok_or("no user in response")?;
    let session = users
        .activate_user(req(
            "",
            pb::ActivateUserRequest {
                code: created.activation_code,
                birth_date: "1990-01-01".into(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .session_token;
    let admin_token = AuthServiceClient::new(channel.clone())
        .create_api_token(req(
            &session,
            pb::CreateApiTokenRequest {
                user_id: admin.id.clone(),
                name: "bench".into(),
                expire_time: None,
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .secret;
    let target = users
        .create_user(req(
            &admin_token,
            new_user(&org.id, format!("target.{tag}@bench.dk"), &[pb::Role::User]),
        ))
        .await?
        .into_inner()
        .user
        .ok_or("no user in response")?;
    Ok(Fixture {
        org_id: org.id,
        admin_token,
        target_user_id: target.id,
    })
}

#[derive(Default)]
struct Stats {
    /// Latencies (µs) of successful calls completed in the measured window.
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    window: Duration,
    /// CPU clock ticks (1/100 s) used in the measured window by the server
    /// and by all PostgreSQL processes.
    cpu: Option<(u64, u64)>,
    /// Paced phases: calls that ended successfully inside the window, when
    /// that differs from the calls sent in it (`latencies_us`).
    served: Option<usize>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Calls that ended, successfully, inside the measured window.
    fn served(&self) -> usize {
        self.served.unwrap_or(self.latencies_us.len())
    }

    fn rate(&self) -> f64 {
        self.served() as f64 / self.window.as_secs_f64()
    }

    fn percentile_ms(&mut self, p: f64) -> f64 {
        percentile_ms(&mut self.latencies_us, p)
    }
}

/// The p-th percentile (nearest rank) of microsecond values, in ms.
fn percentile_ms(values_us: &mut [u32], p: f64) -> f64 {
    if values_us.is_empty() {
        return f64::NAN;
    }
    values_us.sort_unstable();
    let rank = ((p / 100.0) * values_us.len() as f64).ceil() as usize;
    let i = rank.clamp(1, values_us.len()) - 1;
    f64::from(values_us[i]) / 1000.0
}

/// `concurrency` callers, each calling again as soon as its call returns,
/// for `warmup + seconds`; only calls that end in the last `seconds` count.
async fn closed_loop<F, Fut>(s: &Settings, channels: &[Channel], call: F) -> Stats
where
    F: Fn(Channel, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(s.warmup);
    let end = measure_from + Duration::from_secs_f64(s.seconds);
    let cpu = cpu_window(s.server_pid, measure_from, end);
    let sequence = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..s.concurrency {
        let channel = channels[task % channels.len()].clone();
        let call = call.clone();
        let sequence = sequence.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let result = call(channel.clone(), sequence.fetch_add(1, Ordering::Relaxed)).await;
                let done = Instant::now();
                if done < measure_from || done > end {
                    continue;
                }
                match result {
                    Ok(()) => stats
                        .latencies_us
                        .push((done - sent).as_micros().min(u128::from(u32::MAX)) as u32),
                    Err(status) => {
                        stats.errors += 1;
                        if stats.first_error.is_none() {
                            stats.first_error = Some(format!("{:?}: {}", status.code(), status.message()));
                        }
                    }
                }
            }
            stats
        }));
    }
    let mut total = Stats {
        window: Duration::from_secs_f64(s.seconds),
        ..Default::default()
    };
    for task in tasks {
        total.merge(task.await.expect("caller task"));
    }
    total.cpu = cpu.await.ok().flatten();
    total
}

/// How late the pacer got calls out: for each measured call, the time from
/// its scheduled send to the moment its task started sending it.
#[derive(Default)]
struct PacerLag {
    lag_us: Vec<u32>,
}

impl PacerLag {
    fn percentile_ms(&mut self, p: f64) -> f64 {
        percentile_ms(&mut self.lag_us, p)
    }
}

/// Open-loop pacing: call number i is due at start + i/rate (to the 1 ms
/// resolution of the tokio timer), whether or not earlier calls have
/// returned. Latency counts from the call's due time, not from when its task
/// got to run: a pacer or runtime that falls behind shows in the latency (as
/// it would for a client that really sent at that rate), and the lag itself
/// is returned.
async fn fixed_rate<F, Fut>(s: &Settings, rate: f64, channels: &[Channel], call: F) -> (Stats, PacerLag)
where
    F: Fn(Channel, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let measure_from = start + Duration::from_secs_f64(s.warmup);
    let end = measure_from + Duration::from_secs_f64(s.seconds);
    let cpu = cpu_window(s.server_pid, measure_from.into_std(), end.into_std());
    type Outcome = (bool, Instant, u32, Result<u32, String>);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let micros = |d: Duration| d.as_micros().min(u128::from(u32::MAX)) as u32;
    let mut i: u64 = 0;
    loop {
        let due = start + interval * u32::try_from(i).expect("call count");
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due).await;
        let measured = due >= measure_from;
        let channel = channels[(i as usize) % channels.len()].clone();
        let call = call.clone();
        let tx = tx.clone();
        let due = due.into_std();
        tokio::spawn(async move {
            let lag = micros(Instant::now().saturating_duration_since(due));
            let result = call(channel, i).await;
            let latency = micros(due.elapsed());
            let _ = tx.send((
                measured,
                Instant::now(),
                lag,
                result
                    .map(|()| latency)
                    .map_err(|st| format!("{:?}: {}", st.code(), st.message())),
            ));
        });
        i += 1;
    }
    drop(tx);
    let mut stats = Stats {
        window: Duration::from_secs_f64(s.seconds),
        ..Default::default()
    };
    let mut lag = PacerLag::default();
    let (from, to) = (measure_from.into_std(), end.into_std());
    let mut served = 0;
    while let Some((measured, done, lag_us, result)) = rx.recv().await {
        if result.is_ok() && done >= from && done <= to {
            served += 1;
        }
        if !measured {
            continue;
        }
        lag.lag_us.push(lag_us);
        match result {
            Ok(us) => stats.latencies_us.push(us),
            Err(e) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(e);
            }
        }
    }
    stats.cpu = cpu.await.ok().flatten();
    stats.served = Some(served);
    (stats, lag)
}

fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process and of its waited-for children (cutime +
/// cstime), in clock ticks. The PostgreSQL postmaster's children times keep
/// the CPU of backends that have exited.
fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    fields.get(11..15)?.iter().map(|f| f.parse::<u64>().ok()).sum()
}

/// CPU ticks of every process named `postgres` (postmaster and backends).
fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .filter_map(proc_ticks)
        .sum()
}

/// Server and PostgreSQL CPU ticks between `from` and `to`.
fn cpu_window(pid: Option<u32>, from: Instant, to: Instant) -> tokio::task::JoinHandle<Option<(u64, u64)>> {
    tokio::spawn(async move {
        let pid = pid?;
        tokio::time::sleep_until(from.into()).await;
        let (server0, pg0) = (proc_ticks(pid)?, postgres_ticks());
        tokio::time::sleep_until(to.into()).await;
        let (server1, pg1) = (proc_ticks(pid)?, postgres_ticks());
        Some((server1.saturating_sub(server0), pg1.saturating_sub(pg0)))
    })
}

/// Samples the server's VmRSS every 100 ms until stopped; returns the peak.
fn rss_sampler(pid: Option<u32>) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = tokio::spawn(async move {
        let mut peak = 0;
        let Some(pid) = pid else { return 0 };
        while !flag.load(Ordering::Relaxed) {
            peak = peak.max(proc_status_kb(pid, "VmRSS:").unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        peak
    });
    (stop, handle)
}

fn report(name: &str, stats: &mut Stats, extra: &str) {
    let (p50, p99) = (stats.percentile_ms(50.0), stats.percentile_ms(99.0));
    println!(
        "{name:<10} {:>9.0} calls/s  p50 {p50:>7.3} ms  p99 {p99:>7.3} ms  ({} calls, {} errors){extra}",
        stats.rate(),
        stats.served(),
        stats.errors
    );
    if let Some(e) = &stats.first_error {
        println!("{name:<10} first error: {e}");
    }
    println!(
        "RESULT\t{name}\t{:.1}\t{p50:.3}\t{p99:.3}\t{}\t{}",
        stats.rate(),
        stats.errors,
        stats.latencies_us.len()
    );
    if let Some((server, pg)) = stats.cpu {
        // Clock ticks are 1/100 s on Linux.
        let calls = stats.served().max(1) as f64;
        let secs = stats.window.as_secs_f64();
        let per_call = |ticks: u64| ticks as f64 * 10_000.0 / calls;
        let cores = |ticks: u64| ticks as f64 / 100.0 / secs;
        println!(
            "{name:<10} CPU per call: server {:.0} µs, PostgreSQL {:.0} µs (server {:.2} cores, PostgreSQL {:.2} cores)",
            per_call(server),
            per_call(pg),
            cores(server),
            cores(pg)
        );
        println!(
            "CPU\t{name}\t{:.0}\t{:.0}\t{:.2}\t{:.2}",
            per_call(server),
            per_call(pg),
            cores(server),
            cores(pg)
        );
    }
}

fn report_rss(label: &str, pid: Option<u32>, kb: Option<u64>) {
    if pid.is_none() {
        return;
    }
    let kb = kb.unwrap_or(0);
    println!("server {label:<22} {:>7.1} MB", kb as f64 / 1024.0);
    println!("RSS\t{label}\t{kb}");
}

#[tokio::main]
async fn main() -> AnyResult<()> {
    let s = Settings::from_env();
    let url = format!("http://{}", s.addr);
    let mut channels = Vec::new();
    for _ in 0..s.connections {
        channels.push(Endpoint::from_shared(url.clone())?.tcp_nodelay(true).connect().await?);
    }
    println!(
        "orgadmin load client: {} callers over {} HTTP/2 connection(s), {}s (+{}s warm-up) per phase",
        s.concurrency, s.connections, s.seconds, s.warmup
    );
    report_rss(
        "rss_start_kb",
        s.server_pid,
        s.server_pid.and_then(|p| proc_status_kb(p, "VmRSS:")),
    );

    let tag = run_tag();
    let fixture = setup(&channels[0], &s.operator_token, &tag).await?;
    println!("SETUP\t{}\t{}", fixture.org_id, fixture.target_user_id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    report_rss(
        "rss_idle_kb",
        s.server_pid,
        s.server_pid.and_then(|p| proc_status_kb(p, "VmRSS:")),
    );

    let token: Arc<str> = fixture.admin_token.clone().into();
    let target: Arc<str> = fixture.target_user_id.clone().into();
    let org: Arc<str> = fixture.org_id.clone().into();
    let get = {
        let (token, target) = (token.clone(), target.clone());
        move |channel: Channel, _seq: u64| {
            let (token, target) = (token.clone(), target.clone());
            async move {
                let user = UserServiceClient::new(channel)
                    .get_user(req(&token, pb::GetUserRequest { id: target.to_string() }))
                    .await?
                    .into_inner()
                    .user;
                if user.is_none() {
                    return Err(Status::internal("GetUser answered without a user"));
                }
                Ok(())
            }
        }
    };

    for (phase_no, phase) in s.phases.iter().enumerate() {
        let (stop, sampler) = rss_sampler(s.server_pid);
        match phase.as_str() {
            "health" => {
                let mut stats = closed_loop(&s, &channels, |channel: Channel, _seq: u64| async move {
                    HealthClient::new(channel)
                        .check(HealthCheckRequest { service: String::new() })
                        .await
                        .map(|_| ())
                })
                .await;
                report("health", &mut stats, "");
            }
            "get" => {
                let mut stats = closed_loop(&s, &channels, get.clone()).await;
                report("get", &mut stats, "");
            }
            fixed if fixed == "fixed" || fixed.starts_with("fixed:") => {
                let rate = match fixed.strip_prefix("fixed:") {
                    Some(r) => r.parse().unwrap_or_else(|_| panic!("phase {fixed:?}: not a rate")),
                    None => s.rate,
                };
                let (mut stats, mut lag) = fixed_rate(&s, rate, &channels, get.clone()).await;
                let name = format!("get_fixed_{rate}");
                let (lag_p99, lag_max) = (lag.percentile_ms(99.0), lag.percentile_ms(100.0));
                report(
                    &name,
                    &mut stats,
                    &format!(
                        " at {rate} calls/s offered, latency from each call's due time; \
                         pacer lag p99 {lag_p99:.3} ms, max {lag_max:.3} ms"
                    ),
                );
                println!("LAG\t{name}\t{lag_p99:.3}\t{lag_max:.3}");
            }
            create if create == "create" || create.starts_with("create:") => {
                // `create:<n>`: the callers spread their calls over n
                // organisations (each with its own administrator), to show
                // what the per-organisation lock costs.
                let orgs: usize = match create.strip_prefix("create:") {
                    Some(n) => n.parse().unwrap_or_else(|_| panic!("phase {create:?}: not a number")),
                    None => 1,
                };
                let mut targets: Vec<(Arc<str>, Arc<str>)> = vec![(token.clone(), org.clone())];
                while targets.len() < orgs.max(1) {
                    let more = setup(&channels[0], &s.operator_token, &run_tag()).await?;
                    targets.push((more.admin_token.into(), more.org_id.into()));
                }
                let targets = Arc::new(targets);
                let tag = tag.clone();
                let mut stats = closed_loop(&s, &channels, move |channel: Channel, seq: u64| {
                    let (token, org) = targets[(seq as usize) % targets.len()].clone();
                    let email = format!("u.{tag}.{phase_no}.{seq}@bench.dk");
                    async move {
                        UserServiceClient::new(channel)
                            .create_user(req(&token, new_user(&org, email, &[pb::Role::User])))
                            .await
                            .map(|_| ())
                    }
                })
                .await;
                let name = if orgs > 1 {
                    format!("create_{orgs}orgs")
                } else {
                    "create".to_owned()
                };
                report(&name, &mut stats, "");
            }
            other => panic!("unknown phase {other:?} (health, get, create, create:<orgs>, fixed, fixed:<calls/s>)"),
        }
        stop.store(true, Ordering::Relaxed);
        let peak = sampler.await.unwrap_or(0);
        report_rss(
            &format!("rss_peak_{}_kb", phase.replace(':', "_")),
            s.server_pid,
            Some(peak),
        );
    }
    report_rss(
        "hwm_kb",
        s.server_pid,
        s.server_pid.and_then(|p| proc_status_kb(p, "VmHWM:")),
    );
    Ok(())
}
