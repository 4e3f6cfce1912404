//! Import benchmark (BENCHMARKS.md, issue 9): a create import of N rows,
//! uploaded over real gRPC and run to SUCCEEDED by the worker's own functions
//! (in this process), beside a raw load of the same rows (user, role and
//! history row per user) into the same tables in the same run: `COPY` on
//! PostgreSQL, one multi-row-INSERT transaction on SQLite. Also the peak
//! resident memory while the job runs, above what the process held before.
//!
//! `IMPORT_ROWS=100000 IMPORT_BACKEND=postgres cargo bench -p orgadmin-tests --bench import`
//! (IMPORT_BACKEND: postgres or sqlite; IMPORT_BATCH: rows per batch, 1000.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use orgadmin_domain::DomainSettings;
use orgadmin_domain::services::imports::ImportSettings;
use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use sea_orm::ConnectionTrait;

/// The server runs in this process: it allocates as the service binary
/// does (glibc's malloc took ~17% of this process's CPU in IssueCertificate).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HEADER: &str = "user_id;cpr;birth_date;email;first_name;surname;username;phone;unit;language;roles;signing_right;identification_means;external_id;legacy_id";

/// The most licences an organisation may have.
const MAX_LICENCES: i32 = 1_000_000;

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Row `i`: half with a CPR number (a real date, 19xx), half with a birth date.
fn row(i: usize, tag: &str) -> String {
    let email = format!("u{i}.{tag}@firma.dk");
    if i.is_multiple_of(2) {
        let cpr = format!(
            "{:02}{:02}{:02}{:04}",
            1 + i % 28,
            1 + (i / 28) % 12,
            (i / 336) % 100,
            1000 + (i / 33600) % 2000
        );
        format!(";{cpr};;{email};Søren;Ærø;;;;da;;;;;")
    } else {
        format!(";;1990-05-17;{email};Åsa;Sjöberg;;;;sv;;;;;")
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let n: usize = std::env::var("IMPORT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let batch: usize = std::env::var("IMPORT_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ImportSettings::default().create_batch_size);
    let backend = match std::env::var("IMPORT_BACKEND").as_deref() {
        Ok("sqlite") => Backend::Sqlite,
        _ => Backend::Postgres,
    };
    let app = TestApp::start_with(
        backend,
        DomainSettings {
            imports: ImportSettings {
                max_rows: 2_000_000,
                max_file_bytes: 1 << 30,
                create_batch_size: batch,
                ..ImportSettings::default()
            },
            ..DomainSettings::default()
        },
    )
    .await;
    let fixture = app.org_with_admin_limits(Some(MAX_LICENCES), None).await;
    let token = fixture.admin_token.clone();

    let mut file = String::with_capacity(n * 64);
    file.push_str(HEADER);
    file.push_str("\r\n");
    for i in 0..n {
        file.push_str(&row(i, "imp"));
        file.push_str("\r\n");
    }
    let file = file.into_bytes();
    let started = Instant::now();
    let job = app
        .upload_import(
            &token,
            pb::ImportSpec {
                organisation_id: fixture.org.id.clone(),
                kind: pb::ImportKind::Create as i32,
                file_name: "bench.csv".into(),
                ..Default::default()
            },
            &file,
            1 << 20,
        )
        .await
        .expect("upload");
    let upload = started.elapsed();
    let file_bytes = file.len();
    drop(file);

    // Peak RSS while the job runs, sampled every 50 ms.
    let base_kb = rss_kb("VmRSS:");
    let peak = Arc::new(AtomicU64::new(base_kb));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb("VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let started = Instant::now();
    app.run_imports().await;
    let applied_in = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let finished = app.import_job(&token, &job.id).await;
    assert_eq!(finished.state, pb::ImportState::Succeeded as i32, "{finished:?}");
    // The administrator holds one licence: of a file of a million rows, the
    // last fails with LICENCE_LIMIT_REACHED.
    let fits = n.min(MAX_LICENCES as usize - 1) as i64;
    assert_eq!(
        (finished.applied, finished.failed),
        (fits, n as i64 - fits),
        "{finished:?}"
    );

    // The baseline: the same rows, raw, into the same tables.
    let other = app.create_org(Some(MAX_LICENCES), None).await;
    let raw = match backend {
        Backend::Postgres => copy_rows(&app, &other.id, n).await,
        Backend::Sqlite => insert_rows(&app, &other.id, n).await,
    };
    let import_rate = n as f64 / applied_in.as_secs_f64();
    let raw_rate = n as f64 / raw.as_secs_f64();
    println!("| measurement ({backend:?}, {n} rows, batch {batch}) | value |");
    println!("| --- | ---: |");
    println!("| file | {:.1} MB |", file_bytes as f64 / 1e6);
    println!(
        "| upload (CreateImport, 1 MiB chunks) | {:.1} s |",
        upload.as_secs_f64()
    );
    println!(
        "| queued to SUCCEEDED | {:.1} s = {import_rate:.0} rows/s |",
        applied_in.as_secs_f64()
    );
    let baseline = match backend {
        Backend::Postgres => "raw COPY of users, roles, history",
        Backend::Sqlite => "raw multi-row INSERT transaction",
    };
    println!("| {baseline} | {:.1} s = {raw_rate:.0} rows/s |", raw.as_secs_f64());
    println!("| import / raw | **{:.0}%** |", 100.0 * import_rate / raw_rate);
    println!(
        "| RSS before the run / peak while it ran (service and worker in one process) | {} / {} MB |",
        base_kb / 1024,
        peak.load(Ordering::Relaxed) / 1024
    );
    app.finish().await;
}

/// A raw row's user id, e-mail, history event id and history changes.
fn user_values(i: usize) -> (String, String, String, String) {
    let email = format!("raw{i}@firma.dk");
    let changes = format!(r#"[{{"field":"email","before":"","after":"{email}"}}]"#);
    (
        uuid::Uuid::now_v7().to_string(),
        email,
        uuid::Uuid::now_v7().to_string(),
        changes,
    )
}

/// PostgreSQL: `COPY` of the three tables' rows from CSV, one transaction (psql).
async fn copy_rows(app: &TestApp, org: &str, n: usize) -> Duration {
    let now = chrono::Utc::now().timestamp_millis();
    let dir = std::env::temp_dir().join(format!("orgadmin-bench-copy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut users, mut roles, mut history) = (String::new(), String::new(), String::new());
    for i in 0..n {
        let (id, email, event, changes) = user_values(i);
        users.push_str(&format!(
            "{id},{org},PENDING_ACTIVATION,Åsa,Sjöberg,{email},{email},åsa sjöberg {email},1990-05-17,sv,[],[],false,false,false,1,{now},{now}\n"
        ));
        roles.push_str(&format!("{id},USER,{org}\n"));
        history.push_str(&format!(
            "{event},{org},USER,{id},{now},user:bench,Bench Admin,admin@firma.dk,USER_CREATED,\"{}\"\n",
            changes.replace('"', "\"\"")
        ));
    }
    std::fs::write(dir.join("users.csv"), users).unwrap();
    std::fs::write(dir.join("roles.csv"), roles).unwrap();
    std::fs::write(dir.join("history.csv"), history).unwrap();
    let script = format!(
        "\\copy users (id, organisation_id, state, first_name, surname, email, email_key, search_text, birth_date, language, external_ids, identification_means, signing_right, anonymous, email_verified, version, created_at, updated_at) FROM '{d}/users.csv' CSV\n\
         \\copy user_roles (user_id, role, organisation_id) FROM '{d}/roles.csv' CSV\n\
         \\copy history_events (id, organisation_id, subject_kind, subject_id, occurred_at, actor, actor_name, actor_email, activity, changes) FROM '{d}/history.csv' CSV\n\
         UPDATE organisations SET licences_used = licences_used + {n} WHERE id = '{org}';\n",
        d = dir.display()
    );
    std::fs::write(dir.join("copy.sql"), script).unwrap();
    let started = Instant::now();
    let status = std::process::Command::new("psql")
        .arg(&app.database_url)
        .args(["-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(dir.join("copy.sql"))
        .status()
        .expect("psql");
    let elapsed = started.elapsed();
    assert!(status.success(), "COPY failed");
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}

/// SQLite: the same rows as multi-row INSERTs (500 rows a statement) in one
/// transaction.
async fn insert_rows(app: &TestApp, org: &str, n: usize) -> Duration {
    let db = app.domain.db();
    let now = chrono::Utc::now().timestamp_millis();
    let org_blob = format!("X'{}'", org.replace('-', ""));
    let mut statements = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let (mut users, mut roles, mut history) = (Vec::new(), Vec::new(), Vec::new());
        for &i in chunk {
            let (id, email, event, changes) = user_values(i);
            let id_blob = format!("X'{}'", id.replace('-', ""));
            let event_blob = format!("X'{}'", event.replace('-', ""));
            users.push(format!(
                "({id_blob},{org_blob},'PENDING_ACTIVATION','Åsa','Sjöberg','{email}','{email}','åsa sjöberg {email}','1990-05-17','sv','[]','[]',0,0,0,1,{now},{now})"
            ));
            roles.push(format!("({id_blob},'USER',{org_blob})"));
            history.push(format!(
                "({event_blob},{org_blob},'USER',{id_blob},{now},'user:bench','Bench Admin','admin@firma.dk','USER_CREATED','{changes}')"
            ));
        }
        statements.push(format!("INSERT INTO users (id, organisation_id, state, first_name, surname, email, email_key, search_text, birth_date, language, external_ids, identification_means, signing_right, anonymous, email_verified, version, created_at, updated_at) VALUES {}", users.join(",")));
        statements.push(format!(
            "INSERT INTO user_roles (user_id, role, organisation_id) VALUES {}",
            roles.join(",")
        ));
        statements.push(format!("INSERT INTO history_events (id, organisation_id, subject_kind, subject_id, occurred_at, actor, actor_name, actor_email, activity, changes) VALUES {}", history.join(",")));
    }
    let started = Instant::now();
    db.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();
    for statement in &statements {
        db.execute_unprepared(statement).await.unwrap();
    }
    db.execute_unprepared(&format!(
        "UPDATE organisations SET licences_used = licences_used + {n} WHERE id = {org_blob}"
    ))
    .await
    .unwrap();
    db.execute_unprepared("COMMIT").await.unwrap();
    started.elapsed()
}
