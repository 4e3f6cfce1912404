//! Certificate benchmark (BENCHMARKS.md, issue 10), one run on PostgreSQL:
//!
//! 1. `IssueCertificate` (P-256 CSRs made in-process with rcgen) over real
//!    gRPC at a fixed concurrency, beside, in the same run and interleaved,
//!    (a) bare CSR check + sign in this process on every core and (b) the raw
//!    SQL transaction writing the same rows (UPDATE of the ORDERED row +
//!    INSERT of its history event); then a paced phase at half the measured
//!    rate for latency. All of it again with `CERT_STORED` certificates
//!    already stored.
//! 2. `SearchCertificates` by subject text and by expiry range over them.
//! 3. A CRL of `CERT_REVOKED` revoked certificates: time to sign, size,
//!    `GET /crl` fetches per second (wrk), and how soon a revocation made
//!    over gRPC shows in the CRL served over HTTP.
//!
//! The orders are inserted with SQL (a copy of one order made over gRPC, each
//! with its own pickup token, whose SHA-256 the row keeps as the domain does),
//! so no mail is read per order; the pickup is the holder's own call with
//! their session token, as in production.
//!
//! `CARGO_TARGET_DIR=/work/target-bench cargo bench -p orgadmin-tests --bench certificates`
//! (CERT_ISSUES: issues per measured run, 3000; CERT_RUNS: runs of each
//! side, 3; CERT_CONCURRENCY: 32; CERT_POOL: database connections of the
//! server and of the raw side, 20; CERT_PACED_SECS: 10; CERT_STORED:
//! 1000000; CERT_REVOKED: 100000; CERT_SEARCHES: calls per search kind, 300;
//! CERT_TRIGRAM=0: the search without the trigram index; CERT_HOLD_SECS:
//! seconds to keep the database after the search, for plans by hand.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use orgadmin_domain::ca::{CertificateAuthority, LeafProfile, SubjectAttribute, random_serial};
use orgadmin_domain::model::now_millis;
use orgadmin_domain::persistence;
use orgadmin_domain::services::certificates::check_csr;
use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement, TransactionTrait, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The server runs in this process: it allocates as the service binary
/// does (glibc's malloc took ~17% of this process's CPU in IssueCertificate).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const YEAR_MS: i64 = 365 * 24 * 60 * 60 * 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
const SURNAMES: [&str; 10] = [
    "Jensen",
    "Nielsen",
    "Hansen",
    "Pedersen",
    "Andersen",
    "Christensen",
    "Larsen",
    "Sørensen",
    "Rasmussen",
    "Jørgensen",
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

struct Settings {
    issues: usize,
    runs: usize,
    concurrency: usize,
    pool: u32,
    paced_secs: u64,
    stored: usize,
    revoked: usize,
    searches: usize,
}

/// What one stage of the benchmark shares.
struct Bench {
    app: TestApp,
    settings: Settings,
    org: String,
    session: String,
    /// The order copied for every further order.
    template: String,
    csrs: Arc<Vec<String>>,
    /// A DER certificate as the server issues it (for the raw side's rows).
    der: Vec<u8>,
    /// The raw side's own pool, as large as the server's.
    raw_db: DatabaseConnection,
    orders_made: AtomicUsize,
    /// (certificate id, serial) of certificates issued over gRPC.
    issued: std::sync::Mutex<Vec<(String, String)>>,
}

/// Latencies of one run and its rate.
struct Run {
    rate: f64,
    latencies: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn run() {
    let settings = Settings {
        issues: env("CERT_ISSUES", 3000),
        runs: env("CERT_RUNS", 3),
        concurrency: env("CERT_CONCURRENCY", 32),
        pool: env("CERT_POOL", 20) as u32,
        paced_secs: env("CERT_PACED_SECS", 10) as u64,
        stored: env("CERT_STORED", 1_000_000),
        revoked: env("CERT_REVOKED", 100_000),
        searches: env("CERT_SEARCHES", 300),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let app = TestApp::start_limited(
        Backend::Postgres,
        orgadmin_domain::DomainSettings::default(),
        settings.pool,
        1024,
    )
    .await;
    let fixture = app.org_with_admin().await;
    let raw_db = persistence::connect(&app.database_url, settings.pool)
        .await
        .expect("raw pool");

    // P-256 keys and CSRs, made once; each issue uses the next one.
    let started = Instant::now();
    let csrs: Vec<String> = (0..settings.issues.clamp(1, 2000)).map(|_| new_csr()).collect();
    eprintln!("{} CSRs in {:.1} s", csrs.len(), started.elapsed().as_secs_f64());

    // One order the way an administrator makes it; the holder is the
    // administrator, who picks up with their own session.
    let template = app
        .certs()
        .order_certificate(req(
            &fixture.admin_token,
            pb::OrderCertificateRequest {
                organisation_id: fixture.org.id.clone(),
                kind: pb::CertificateKind::Employee as i32,
                holder_id: fixture.admin.id.clone(),
                usages: vec![pb::CertificateUsage::Authentication as i32],
                ..Default::default()
            },
        ))
        .await
        .expect("order")
        .into_inner()
        .certificate
        .expect("certificate");
    let token = app.mailed_token("certificate_pickup", &fixture.admin.email).await;
    // The template stays ORDERED; a second order gives a real DER.
    let bench = Bench {
        app,
        settings,
        org: fixture.org.id.clone(),
        session: fixture.admin_token.clone(),
        template: template.id.clone(),
        csrs: Arc::new(csrs),
        der: Vec::new(),
        raw_db,
        orders_made: AtomicUsize::new(0),
        issued: std::sync::Mutex::new(Vec::new()),
    };
    let first = bench.insert_orders(1).await;
    let issued = bench
        .app
        .certs()
        .issue_certificate(req(
            &bench.session,
            pb::IssueCertificateRequest {
                token: first[0].clone(),
                csr_pem: bench.csrs[0].clone(),
            },
        ))
        .await
        .expect("issue")
        .into_inner();
    let der = pem_body(&issued.certificate_pem);
    let bench = Bench { der, ..bench };
    drop(token);
    eprintln!("issued certificate: {} bytes DER", bench.der.len());

    // Warm-up of every side (connections, caches), not counted.
    bench.grpc_issue(200).await;
    bench.raw_issue(200).await;
    bare_issue(&bench.csrs, 200, cores);

    let mut report = Vec::new();
    let empty = bench.issue_stage("empty table", cores).await;
    report.push(empty.table.clone());
    let crl_small = bench.crl_fetches("CRL of the empty table").await;

    // The inventory: CERT_STORED issued certificates, in one statement.
    let load = bench.bulk_load().await;
    let full = bench
        .issue_stage(&format!("{} stored", bench.settings.stored), cores)
        .await;
    report.push(full.table.clone());
    let search = bench.search_stage().await;
    // CERT_HOLD_SECS keeps the database this long after the search, to
    // look at plans by hand (psql on the printed URL).
    let hold = env("CERT_HOLD_SECS", 0) as u64;
    if hold > 0 {
        eprintln!("{search}\nholding {} for {hold} s", bench.app.database_url);
        tokio::time::sleep(Duration::from_secs(hold)).await;
    }
    let crl = bench.crl_stage().await;

    println!();
    println!(
        "Issue: P-256 CSRs, {} issues per run, {} runs each side, interleaved; concurrency {}; \
         {} database connections (server and raw side each); {} cores. Medians of the runs.",
        bench.settings.issues, bench.settings.runs, bench.settings.concurrency, bench.settings.pool, cores
    );
    println!();
    for table in report {
        println!("{table}");
    }
    println!(
        "| 1M stored vs. empty (IssueCertificate) | {:.0}% of the empty-table rate |",
        100.0 * full.grpc / empty.grpc
    );
    println!();
    println!("{load}");
    println!();
    println!("{search}");
    println!();
    println!("{crl_small}");
    println!("{crl}");
    bench.app.finish().await;
}

/// A new P-256 key and a PEM CSR for it.
fn new_csr() -> String {
    let key = rcgen::KeyPair::generate().expect("P-256 key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Anything I like");
    params.serialize_request(&key).expect("CSR").pem().expect("CSR PEM")
}

fn pem_body(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).expect("base64")
}

/// (a) CSR check and signing alone, on `threads` threads: what the CA
/// itself can do on this machine.
fn bare_issue(csrs: &Arc<Vec<String>>, n: usize, threads: usize) -> f64 {
    let ca = test_ca();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (ca, csrs, next) = (ca.clone(), csrs.clone(), next.clone());
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    sign_one(&ca, &csrs[i % csrs.len()]);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn sign_one(ca: &CertificateAuthority, csr_pem: &str) -> Vec<u8> {
    let csr = check_csr(csr_pem).expect("CSR");
    let now = now_millis();
    let id = uuid::Uuid::now_v7();
    ca.issue(
        &LeafProfile {
            subject: vec![
                (SubjectAttribute::Country, "DK".into()),
                (SubjectAttribute::OrganizationIdentifier, "NTRDK-12345678".into()),
                (SubjectAttribute::Organization, "Værksted 1 ApS".into()),
                (SubjectAttribute::SerialNumber, format!("UI:DK-E:G:{id}")),
                (SubjectAttribute::GivenName, "Admin".into()),
                (SubjectAttribute::Surname, "Sørensen".into()),
                (SubjectAttribute::CommonName, "Admin Sørensen".into()),
            ],
            email: None,
            key_usages: vec![rcgen::KeyUsagePurpose::DigitalSignature],
            extended_key_usages: vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
            not_before: now - 5 * 60 * 1000,
            not_after: now + 3 * YEAR_MS,
            serial: random_serial(),
        },
        &csr.public_key_der,
    )
    .expect("sign")
}

/// Makes the request of the i-th call of one kind of search.
type MakeSearch = Box<dyn Fn(usize) -> pb::SearchCertificatesRequest>;

/// One issue stage's medians and its markdown table.
struct Stage {
    grpc: f64,
    table: String,
}

impl Bench {
    async fn sql(&self, sql: &str) {
        self.app.domain.db().execute_unprepared(sql).await.expect(sql);
    }

    async fn number(&self, sql: &str) -> i64 {
        self.app.count(sql).await
    }

    /// `n` new ORDERED copies of the template, each with its own pickup
    /// token; returns the tokens.
    async fn insert_orders(&self, n: usize) -> Vec<String> {
        let batch = self.orders_made.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("oat_bench-{batch}-");
        self.sql(&format!(
            "INSERT INTO certificates (id, organisation_id, kind, state, holder_id, contact_id, label, usages, email, \
             pickup_token_hash, pickup_expires_at, version, created_at, updated_at) \
             SELECT {uuid}, organisation_id, kind, 'ORDERED', holder_id, contact_id, label, usages, email, \
             encode(sha256(convert_to('{prefix}' || g, 'UTF8')), 'hex'), pickup_expires_at, 1, created_at, updated_at \
             FROM certificates, generate_series(1, {n}) g WHERE id = '{template}'",
            uuid = uuid7_sql(
                "(extract(epoch from clock_timestamp()) * 1000)::bigint",
                "'o{batch}-' || g"
            ),
            template = self.template
        ))
        .await;
        (1..=n).map(|g| format!("{prefix}{g}")).collect()
    }

    /// IssueCertificate over gRPC, `n` calls at the set concurrency.
    async fn grpc_issue(&self, n: usize) -> Run {
        let tokens = Arc::new(self.insert_orders(n).await);
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..self.settings.concurrency)
            .map(|_| {
                let (tokens, next, csrs) = (tokens.clone(), next.clone(), self.csrs.clone());
                let (mut client, session) = (self.app.certs(), self.session.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut issued = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= tokens.len() {
                            return (latencies, issued);
                        }
                        let call = Instant::now();
                        let reply = client
                            .issue_certificate(req(
                                &session,
                                pb::IssueCertificateRequest {
                                    token: tokens[i].clone(),
                                    csr_pem: csrs[i % csrs.len()].clone(),
                                },
                            ))
                            .await
                            .expect("IssueCertificate")
                            .into_inner();
                        latencies.push(call.elapsed());
                        if i % 97 == 0 {
                            let c = reply.certificate.expect("certificate");
                            issued.push((c.id, c.serial));
                        }
                    }
                })
            })
            .collect();
        let mut latencies = Vec::with_capacity(n);
        for task in tasks {
            let (l, issued) = task.await.unwrap();
            latencies.extend(l);
            self.issued.lock().unwrap().extend(issued);
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        latencies.sort();
        Run { rate, latencies }
    }

    /// IssueCertificate at a fixed `rate` for the paced seconds, open loop:
    /// each call's latency counts from when it was due, so a stall shows.
    async fn paced_issue(&self, rate: f64) -> Run {
        let n = ((rate * self.settings.paced_secs as f64) as usize).max(1);
        let tokens = self.insert_orders(n).await;
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for (i, token) in tokens.into_iter().enumerate() {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            let (mut client, session, csr) = (
                self.app.certs(),
                self.session.clone(),
                self.csrs[i % self.csrs.len()].clone(),
            );
            tasks.push(tokio::spawn(async move {
                client
                    .issue_certificate(req(&session, pb::IssueCertificateRequest { token, csr_pem: csr }))
                    .await
                    .expect("IssueCertificate");
                due.elapsed()
            }));
        }
        let mut latencies = Vec::with_capacity(n);
        for task in tasks {
            latencies.push(task.await.unwrap());
        }
        let achieved = n as f64 / started.elapsed().as_secs_f64();
        latencies.sort();
        Run {
            rate: achieved,
            latencies,
        }
    }

    /// (b) The rows an issue writes, raw: UPDATE of the ORDERED row found by
    /// its token hash, INSERT of the history event, one transaction each,
    /// at the same concurrency on a pool as large as the server's.
    async fn raw_issue(&self, n: usize) -> Run {
        let tokens = Arc::new(self.insert_orders(n).await);
        let next = Arc::new(AtomicUsize::new(0));
        let der = Arc::new(self.der.clone());
        let started = Instant::now();
        let tasks: Vec<_> = (0..self.settings.concurrency)
            .map(|_| {
                let (tokens, next, der, db) = (tokens.clone(), next.clone(), der.clone(), self.raw_db.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= tokens.len() {
                            return latencies;
                        }
                        let call = Instant::now();
                        raw_transaction(&db, &tokens[i], &der).await;
                        latencies.push(call.elapsed());
                    }
                })
            })
            .collect();
        let mut latencies = Vec::with_capacity(n);
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        latencies.sort();
        Run { rate, latencies }
    }

    async fn issue_stage(&self, label: &str, cores: usize) -> Stage {
        let n = self.settings.issues;
        let (mut grpc, mut bare, mut raw) = (Vec::new(), Vec::new(), Vec::new());
        let mut grpc_p99 = Vec::new();
        for run in 0..self.settings.runs {
            let g = self.grpc_issue(n).await;
            grpc_p99.push(percentile(&g.latencies, 0.99).as_secs_f64());
            grpc.push(g.rate);
            let csrs = self.csrs.clone();
            bare.push(
                tokio::task::spawn_blocking(move || bare_issue(&csrs, n, cores))
                    .await
                    .unwrap(),
            );
            raw.push(self.raw_issue(n).await.rate);
            eprintln!(
                "{label} run {run}: grpc {:.0}/s, bare {:.0}/s, raw {:.0}/s",
                grpc[run], bare[run], raw[run]
            );
        }
        let (grpc_median, bare_median, raw_median) = (median(&mut grpc), median(&mut bare), median(&mut raw));
        let paced = self.paced_issue(grpc_median / 2.0).await;
        let smaller = bare_median.min(raw_median);
        let table = format!(
            "| IssueCertificate, {label} | per second (median of {runs}; runs) |\n\
             | --- | ---: |\n\
             | over gRPC, concurrency {c} | **{grpc_median:.0}** ({grpc_runs}); p99 of the closed loop {p99:.1} ms |\n\
             | (a) bare CSR check + sign, {cores} threads | {bare_median:.0} ({bare_runs}) |\n\
             | (b) raw SQL transaction (UPDATE + history INSERT), concurrency {c} | {raw_median:.0} ({raw_runs}) |\n\
             | gRPC / smaller of (a) and (b) | **{ratio:.0}%** |\n\
             | paced at half the gRPC rate: {paced_rate:.0}/s for {secs} s | p50 {p50}, p99 **{p99p}**, max {max} |\n",
            runs = self.settings.runs,
            c = self.settings.concurrency,
            grpc_runs = list(&grpc),
            bare_runs = list(&bare),
            raw_runs = list(&raw),
            p99 = median(&mut grpc_p99) * 1000.0,
            ratio = 100.0 * grpc_median / smaller,
            paced_rate = paced.rate,
            secs = self.settings.paced_secs,
            p50 = ms(percentile(&paced.latencies, 0.5)),
            p99p = ms(percentile(&paced.latencies, 0.99)),
            max = ms(percentile(&paced.latencies, 1.0)),
        );
        Stage {
            grpc: grpc_median,
            table,
        }
    }

    /// CERT_STORED issued certificates of the organisation, in one
    /// INSERT … SELECT: time-ordered ids, notAfter spread over the next
    /// three years, subjects in the OCES3 shape with ten common surnames and
    /// 10,000 given names, distinct serials. The trigram index (if the
    /// schema has it) is dropped for the load and built again after, as a
    /// bulk load is done.
    async fn bulk_load(&self) -> String {
        let n = self.settings.stored;
        let now = now_millis();
        let spacing = (3 * YEAR_MS) / n.max(1) as i64;
        let org_name: String = self
            .app
            .domain
            .db()
            .query_one_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                format!("SELECT name || '|' || cvr FROM organisations WHERE id = '{}'", self.org),
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index(0)
            .unwrap();
        let (name, cvr) = org_name.split_once('|').unwrap();
        let trigram: Option<String> = self
            .app
            .domain
            .db()
            .query_one_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'certificates_search_text_trgm'".to_owned(),
            ))
            .await
            .unwrap()
            .map(|row| row.try_get_by_index(0).unwrap());
        let surnames = SURNAMES.map(|s| format!("'{s}'")).join(",");
        let subject = format!(
            "'C=DK, organizationIdentifier=NTRDK-{cvr}, O={name}, serialNumber=UI:DK-E:G:' || md5('h' || g)::uuid \
             || ', GN=Navn' || lpad((g % 10000)::text, 4, '0') || ', SN=' || (ARRAY[{surnames}])[g % 10 + 1] \
             || ', CN=Navn' || lpad((g % 10000)::text, 4, '0') || ' ' || (ARRAY[{surnames}])[g % 10 + 1]"
        );
        let created = format!("({now} - ({n} - g)::bigint * {spacing})");
        let der = hex::encode(&self.der);
        let started = Instant::now();
        if trigram.is_some() {
            self.sql("DROP INDEX certificates_search_text_trgm").await;
        }
        self.sql(&format!(
            "INSERT INTO certificates (id, organisation_id, kind, state, holder_id, contact_id, usages, serial, subject, \
             search_text, key_algorithm, not_before, not_after, der, version, created_at, updated_at) \
             SELECT {uuid}, organisation_id, kind, 'ISSUED', holder_id, contact_id, usages, '4' || substr(md5('s' || g), 2), s.subject, \
             lower(s.subject), 'ECDSA P-256', {created} - 300000, {created} + {validity}, '\\x{der}'::bytea, 2, \
             {created}, {created} \
             FROM certificates, generate_series(1, {n}) g, LATERAL (SELECT {subject} AS subject) s \
             WHERE id = '{template}'",
            uuid = uuid7_sql(&created, "'c' || g"),
            validity = 3 * YEAR_MS,
            template = self.template,
        ))
        .await;
        let inserted = started.elapsed();
        // CERT_TRIGRAM=0 leaves it out, to see the search without it.
        let trigram = trigram.filter(|_| env("CERT_TRIGRAM", 1) != 0);
        if let Some(definition) = &trigram {
            self.sql("SET maintenance_work_mem = '512MB'").await;
            self.sql(definition).await;
        }
        let indexed = started.elapsed() - inserted;
        self.vacuum().await;
        let count = self.number("SELECT COUNT(*) FROM certificates").await;
        let size = self.number("SELECT pg_total_relation_size('certificates')").await;
        format!(
            "| Inventory | |\n| --- | ---: |\n\
             | certificates stored | {count} |\n\
             | bulk INSERT … SELECT of {n} | {:.1} s |\n\
             | trigram index built after it | {} |\n\
             | table with its indexes | {:.0} MB |",
            inserted.as_secs_f64(),
            if trigram.is_some() {
                format!("{:.1} s", indexed.as_secs_f64())
            } else {
                "none (not in the schema, or CERT_TRIGRAM=0)".to_owned()
            },
            size as f64 / 1e6
        )
    }

    /// What autovacuum does on a running system, which this machine's
    /// PostgreSQL has switched off (`autovacuum = off` in its
    /// `/etc/postgresql/*/main/conf.d/90-ci.conf`): statistics, and
    /// the visibility map that lets index-only scans skip the table. The
    /// certificates table is vacuumed after 1% of its rows changed
    /// (migration 73), so after the bulk load and again after an issue
    /// stage's ~18,000 new certificates.
    async fn vacuum(&self) {
        self.sql("VACUUM ANALYZE certificates").await;
    }

    async fn search_stage(&self) -> String {
        self.vacuum().await;
        let now = now_millis();
        let n = self.settings.searches;
        let mut client = self.app.certs();
        let mut rows = Vec::new();
        let mut kinds: Vec<(String, MakeSearch)> = Vec::new();
        let org = self.org.clone();
        let base = move || pb::SearchCertificatesRequest {
            organisation_id: org.clone(),
            ..Default::default()
        };
        {
            let base = base.clone();
            kinds.push((
                "subject text, a common surname (1 in 10 match)".into(),
                Box::new(move |i| pb::SearchCertificatesRequest {
                    subject_text: SURNAMES[i % SURNAMES.len()].to_lowercase(),
                    ..base()
                }),
            ));
        }
        {
            let base = base.clone();
            kinds.push((
                "subject text, a given name (1 in 10,000 match)".into(),
                Box::new(move |i| pb::SearchCertificatesRequest {
                    subject_text: format!("Navn{:04}", (i * 7919) % 10000),
                    ..base()
                }),
            ));
        }
        {
            let base = base.clone();
            kinds.push((
                "subject text, a whole name (1 in 10,000 match)".into(),
                Box::new(move |i| {
                    let g = (i * 7919) % 10000;
                    pb::SearchCertificatesRequest {
                        subject_text: format!("navn{g:04} {}", SURNAMES[g % 10]),
                        ..base()
                    }
                }),
            ));
        }
        // The holder-id pieces come from the stored rows themselves.
        let pieces: Vec<String> = self
            .app
            .domain
            .db()
            .query_all_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                format!(
                    "SELECT substr(search_text, strpos(search_text, 'ui:dk-e:g:') + 10, 13) FROM certificates \
                     TABLESAMPLE SYSTEM (1) REPEATABLE (7) WHERE search_text LIKE '%navn%' LIMIT {n}"
                ),
            ))
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.try_get_by_index(0).unwrap())
            .collect();
        let pieces = Arc::new(pieces);
        {
            let base = base.clone();
            let pieces = pieces.clone();
            kinds.push((
                "subject text, part of one holder's id (1 match)".into(),
                Box::new(move |i| pb::SearchCertificatesRequest {
                    subject_text: pieces[i % pieces.len()].clone(),
                    ..base()
                }),
            ));
        }
        for (label, days) in [("expiry range, one day", 1), ("expiry range, 30 days", 30)] {
            let base = base.clone();
            kinds.push((
                label.into(),
                Box::new(move |i| {
                    let from = now + ((i as i64 * 7919) % (3 * 365 - days)) * DAY_MS;
                    pb::SearchCertificatesRequest {
                        expire_time_from: Some(timestamp(from)),
                        expire_time_to: Some(timestamp(from + days * DAY_MS)),
                        ..base()
                    }
                }),
            ));
        }
        for (label, make) in &kinds {
            let mut latencies = Vec::with_capacity(n);
            let mut found = Vec::with_capacity(n);
            for i in 0..n {
                let call = Instant::now();
                let page = client
                    .search_certificates(req(&self.session, make(i)))
                    .await
                    .expect("SearchCertificates")
                    .into_inner();
                latencies.push(call.elapsed());
                found.push(page.certificates.len() as f64);
            }
            latencies.sort();
            rows.push(format!(
                "| {label} | {} | {} | **{}** | {:.0} |",
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.95)),
                ms(percentile(&latencies, 0.99)),
                median(&mut found)
            ));
        }
        let plans = self.plans(&pieces[0]).await;
        format!(
            "| SearchCertificates over {} certificates, {n} sequential calls each, page 50 | p50 | p95 | p99 | rows (median) |\n\
             | --- | ---: | ---: | ---: | ---: |\n{}\n\n{plans}",
            self.number(&format!(
                "SELECT COUNT(*) FROM certificates WHERE organisation_id = '{}'",
                self.org
            ))
            .await,
            rows.join("\n")
        )
    }

    /// The plans PostgreSQL chose for the search statements (the shape
    /// sea-orm sends), as EXPLAIN ANALYZE shows them.
    async fn plans(&self, piece: &str) -> String {
        let now = now_millis();
        let mut out = String::from("Plans (EXPLAIN ANALYZE, first lines):\n");
        for (label, condition) in [
            ("common surname", "search_text LIKE '%jensen%'".to_owned()),
            ("given name", "search_text LIKE '%navn0042%'".to_owned()),
            ("whole name", "search_text LIKE '%navn0042 hansen%'".to_owned()),
            ("holder id piece", format!("search_text LIKE '%{piece}%'")),
            (
                "expiry, one day",
                format!(
                    "not_after >= {} AND not_after < {}",
                    now + 400 * DAY_MS,
                    now + 401 * DAY_MS
                ),
            ),
            (
                "expiry, 30 days",
                format!(
                    "not_after >= {} AND not_after < {}",
                    now + 400 * DAY_MS,
                    now + 430 * DAY_MS
                ),
            ),
        ] {
            // The shape the search uses: by expiry when it has an expiry
            // bound; newest first otherwise, the page's ids first.
            let org = &self.org;
            let sql = if label.starts_with("expiry") {
                format!(
                    "EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM certificates WHERE organisation_id = '{org}' \
                     AND {condition} ORDER BY not_after, id LIMIT 51"
                )
            } else {
                format!(
                    "EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM certificates WHERE id IN (SELECT id FROM certificates \
                     WHERE organisation_id = '{org}' AND {condition} ORDER BY id DESC LIMIT 51) ORDER BY id DESC LIMIT 51"
                )
            };
            let lines: Vec<String> = self
                .app
                .domain
                .db()
                .query_all_raw(Statement::from_string(DatabaseBackend::Postgres, sql))
                .await
                .unwrap()
                .into_iter()
                .map(|row| row.try_get_by_index::<String>(0).unwrap())
                .collect();
            out.push_str(&format!("- {label}:\n"));
            for line in lines.iter().filter(|l| {
                ["Scan", "Index Cond", "Heap Fetches", "Execution Time"]
                    .iter()
                    .any(|word| l.contains(word))
            }) {
                out.push_str(&format!("      {}\n", line.trim_end()));
            }
        }
        out
    }

    /// `GET /crl` from the cached copy, with wrk (2 threads, 32 connections,
    /// 5 s): whole downloads, then revalidations of the current copy
    /// (`If-None-Match` with its ETag: 304, no body).
    async fn crl_fetches(&self, label: &str) -> String {
        let whole = self.wrk(label, None).await;
        let (head, _) = http_get(self.app.http_addr, "/crl").await;
        let etag = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("etag").then(|| value.trim().to_owned())
            })
            .expect("an ETag on GET /crl");
        let revalidated = self.wrk(&format!("{label}, revalidated"), Some(&etag)).await;
        format!("{whole}\n{revalidated}")
    }

    async fn wrk(&self, label: &str, if_none_match: Option<&str>) -> String {
        let crl = self.app.domain.current_crl().await.expect("CRL");
        let url = format!("http://{}/crl", self.app.http_addr);
        // One fetch first: the cache holds the CRL from then on.
        let (head, body) = http_get(self.app.http_addr, "/crl").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut args = vec!["-t2".to_owned(), "-c32".to_owned(), "-d5s".to_owned()];
        if let Some(etag) = if_none_match {
            args.extend(["-H".to_owned(), format!("If-None-Match: {etag}")]);
        }
        args.push(url);
        let output = tokio::process::Command::new("wrk").args(&args).output().await;
        match output {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let field = |name: &str| {
                    text.lines()
                        .find(|l| l.trim_start().starts_with(name))
                        .map(|l| l.trim_start()[name.len()..].trim().to_owned())
                        .unwrap_or_default()
                };
                let non2xx = field("Non-2xx or 3xx responses:");
                format!(
                    "| GET /crl, {label}: {} entries, {} bytes DER | **{}** fetches/s ({}/s){} |",
                    crl.revoked_count,
                    body.len(),
                    field("Requests/sec:"),
                    field("Transfer/sec:"),
                    if non2xx.is_empty() {
                        String::new()
                    } else {
                        format!(", {non2xx} errors")
                    }
                )
            }
            _ => format!("| GET /crl, {label} | not measured: wrk is not installed (apt-get install wrk) |"),
        }
    }

    async fn crl_stage(&self) -> String {
        let n = self.settings.revoked;
        let started = Instant::now();
        self.sql(&format!(
            "UPDATE certificates SET state = 'REVOKED', revoked_at = created_at + 1000, \
             revocation_reason = 'KEY_COMPROMISED' WHERE id IN (SELECT id FROM certificates \
             WHERE organisation_id = '{}' AND state = 'ISSUED' ORDER BY id LIMIT {n})",
            self.org
        ))
        .await;
        let revoke_sql = started.elapsed();
        eprintln!(
            "{n} revoked by SQL in {:.1} s; publishing the CRL",
            revoke_sql.as_secs_f64()
        );
        let mut signs = Vec::new();
        let mut size = 0;
        let mut entries = 0;
        for _ in 0..3 {
            let started = Instant::now();
            let crl = self.app.domain.publish_crl(now_millis()).await.expect("publish CRL");
            signs.push(started.elapsed().as_secs_f64());
            size = crl.der.len();
            entries = crl.revoked_count;
        }
        let fetches = self.crl_fetches(&format!("{entries} revoked")).await;

        // A revocation over gRPC, then /crl polled until the serial shows.
        let victims: Vec<(String, String)> = self.issued.lock().unwrap().iter().take(5).cloned().collect();
        let mut visible = Vec::new();
        let mut rpc = Vec::new();
        for (id, serial) in &victims {
            let wanted = hex::decode(serial).unwrap();
            let started = Instant::now();
            self.app
                .certs()
                .revoke_certificate(req(
                    &self.session,
                    pb::RevokeCertificateRequest {
                        certificate_id: id.clone(),
                        reason: pb::RevocationReason::KeyCompromised as i32,
                        ..Default::default()
                    },
                ))
                .await
                .expect("RevokeCertificate");
            rpc.push(started.elapsed().as_secs_f64());
            loop {
                let (_, body) = http_get(self.app.http_addr, "/crl").await;
                if body.windows(wanted.len()).any(|w| w == wanted.as_slice()) {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "revocation not in the CRL after 30 s"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            visible.push(started.elapsed().as_secs_f64());
        }
        let worst = visible.iter().copied().fold(0.0, f64::max);
        format!(
            "{fetches}\n\n| CRL of {entries} revoked certificates | value |\n| --- | ---: |\n\
             | revoking {n} by SQL (setup) | {:.1} s |\n\
             | publish_crl: read, sign, store (median of 3; runs) | **{:.2} s** ({}) |\n\
             | CRL size (DER) | {:.2} MB = {:.0} bytes per entry |\n\
             | RevokeCertificate over gRPC (it re-signs the CRL), median of {} | {:.2} s |\n\
             | revocation → serial in `GET /crl`, median / worst of {} | **{:.2} s / {:.2} s** |",
            revoke_sql.as_secs_f64(),
            median(&mut signs.clone()),
            list(&signs.iter().map(|s| s * 1000.0).collect::<Vec<_>>()) + " ms",
            size as f64 / 1e6,
            size as f64 / entries.max(1) as f64,
            rpc.len(),
            median(&mut rpc),
            visible.len(),
            median(&mut visible.clone()),
            worst
        )
    }
}

/// One raw issue transaction.
async fn raw_transaction(db: &DatabaseConnection, token: &str, der: &[u8]) {
    let now = now_millis();
    let serial = hex::encode(random_serial());
    let subject = format!(
        "C=DK, organizationIdentifier=NTRDK-12345678, O=Værksted 1 ApS, serialNumber=UI:DK-E:G:{}, GN=Admin, SN=Sørensen, CN=Admin Sørensen",
        uuid::Uuid::now_v7()
    );
    let hash = orgadmin_domain::secrets::token_hash(token);
    let txn = db.begin().await.expect("begin");
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "UPDATE certificates SET state = 'ISSUED', serial = $1, subject = $2, search_text = $3, \
             key_algorithm = 'ECDSA P-256', not_before = $4, not_after = $5, der = $6, version = version + 1, \
             updated_at = $7 WHERE pickup_token_hash = $8 AND state = 'ORDERED' RETURNING id, organisation_id",
            [
                Value::from(serial.clone()),
                Value::from(subject.clone()),
                Value::from(subject.to_lowercase()),
                Value::from(now - 300_000),
                Value::from(now + 3 * YEAR_MS),
                Value::from(der.to_vec()),
                Value::from(now),
                Value::from(hash),
            ],
        ))
        .await
        .expect("UPDATE")
        .expect("the ORDERED row");
    let id: uuid::Uuid = row.try_get_by_index(0).unwrap();
    let org: uuid::Uuid = row.try_get_by_index(1).unwrap();
    let changes = format!(
        r#"[{{"field":"state","before":"ORDERED","after":"ISSUED"}},{{"field":"serial","before":"","after":"{serial}"}},{{"field":"subject","before":"","after":"{subject}"}},{{"field":"key_algorithm","before":"","after":"ECDSA P-256"}},{{"field":"not_after","before":"","after":"{}"}}]"#,
        now + 3 * YEAR_MS
    );
    txn.execute_raw(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        "INSERT INTO history_events (id, organisation_id, subject_kind, subject_id, occurred_at, actor, actor_name, \
         actor_email, activity, changes) VALUES ($1, $2, 'CERTIFICATE', $3, $4, $5, 'Admin Sørensen', \
         'admin@firma.dk', 'CERTIFICATE_ISSUED', $6)",
        [
            Value::from(uuid::Uuid::now_v7()),
            Value::from(org),
            Value::from(id),
            Value::from(now),
            Value::from(format!("user:{org}")),
            Value::from(changes),
        ],
    ))
    .await
    .expect("INSERT history");
    txn.commit().await.expect("commit");
}

/// A SQL expression of a UUIDv7 for the millisecond `millis` (SQL) with
/// random bits from md5(`seed`).
fn uuid7_sql(millis: &str, seed: &str) -> String {
    format!(
        "(lpad(to_hex({millis}), 12, '0') || '7' || substr(md5({seed}), 1, 3) || '8' || substr(md5({seed}), 4, 15))::uuid"
    )
}

fn timestamp(at: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.div_euclid(1000),
        nanos: (at.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn list(values: &[f64]) -> String {
    values.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", ")
}

/// A GET over plain HTTP/1.1 (a new connection), as a relying party
/// fetches a CRL: the head and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: orgadmin\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    (head, response[split + 4..].to_vec())
}
