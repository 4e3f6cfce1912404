//! Test support: a real server on 127.0.0.1:0 over a fresh database (a SQLite
//! file or a new PostgreSQL database), real migrations, real gRPC clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use orgadmin_domain::{CprVault, Domain, DomainSettings, persistence};
use orgadmin_proto::v1 as pb;
use orgadmin_proto::v1::access_service_client::AccessServiceClient;
use orgadmin_proto::v1::auth_service_client::AuthServiceClient;
use orgadmin_proto::v1::certificate_service_client::CertificateServiceClient;
use orgadmin_proto::v1::import_service_client::ImportServiceClient;
use orgadmin_proto::v1::notification_service_client::NotificationServiceClient;
use orgadmin_proto::v1::organisation_service_client::OrganisationServiceClient;
use orgadmin_proto::v1::user_service_client::UserServiceClient;
use sea_orm::{ConnectionTrait, Database, Statement};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

pub mod bench;
mod binaries;
pub mod browser;
mod catalog;
pub mod otlp;
pub use binaries::built_binary;
pub use catalog::{Fingerprint, TableDump, dump_database, fingerprint_of};

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const OPERATOR_TOKEN: &str = "oat_test-operator-token-0123456789abcdefghijklmnopq";
pub const TEST_DB_PREFIX: &str = "orgadmin_t_";
/// A retry policy for tests that record failures by hand: five attempts,
/// 1 ms apart, and no minimum age.
pub const RETRY: orgadmin_domain::services::outbox::MailRetry = orgadmin_domain::services::outbox::MailRetry {
    max_attempts: 5,
    base_delay_ms: 1,
    retry_for_ms: 0,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub domain: Domain,
    pub database_url: String,
    pub backend: Backend,
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pg_database: Option<String>,
    pub dir: PathBuf,
    /// Where `GET /crl` and `/ca.pem` are served.
    pub http_addr: SocketAddr,
    http: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// One CA for the whole test run: generating is cheap, but certificates from
/// every test then verify against one `ca.pem`.
pub fn test_ca() -> std::sync::Arc<orgadmin_domain::ca::CertificateAuthority> {
    static CA: std::sync::OnceLock<std::sync::Arc<orgadmin_domain::ca::CertificateAuthority>> =
        std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let (key, certificate) = orgadmin_domain::ca::CertificateAuthority::generate("orgadmin test CA").expect("CA");
        std::sync::Arc::new(
            orgadmin_domain::ca::CertificateAuthority::from_pem(
                &key,
                &certificate,
                "",
                "http://127.0.0.1/crl",
                "http://127.0.0.1/ocsp",
            )
            .expect("CA from PEM"),
        )
    })
    .clone()
}

pub fn test_vault() -> CprVault {
    CprVault::new([7; 32], [9; 32])
}

/// A fresh, empty directory under the system temp dir.
pub fn fresh_dir() -> PathBuf {
    let dir = std::env::temp_dir()
        .join("orgadmin-tests")
        .join(uuid::Uuid::now_v7().simple().to_string());
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Creates a new database and returns its URL.
pub async fn fresh_database(backend: Backend, dir: &std::path::Path) -> (String, Option<String>) {
    match backend {
        Backend::Sqlite => (format!("sqlite://{}/orgadmin.db?mode=rwc", dir.display()), None),
        Backend::Postgres => {
            let name = format!("{TEST_DB_PREFIX}{}", uuid::Uuid::now_v7().simple());
            let admin = Database::connect(PG_ADMIN_URL)
                .await
                .expect("PostgreSQL at 127.0.0.1:5432 (user postgres) must be running for the postgres tests");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            admin.close().await.ok();
            (format!("postgres://postgres@127.0.0.1:5432/{name}"), Some(name))
        }
    }
}

/// A database with every migration applied, copied from one migrated once
/// per test process: 64 migrations per test were a second or more of each
/// PostgreSQL test, and the rights matrix alone makes two dozen databases.
/// On PostgreSQL the copy is `CREATE DATABASE … TEMPLATE`, on SQLite a file
/// copy of a `VACUUM INTO` snapshot. The migrations themselves still run on
/// an empty database in the smoke test (the binaries migrate at start).
pub async fn fresh_migrated_database(backend: Backend, dir: &std::path::Path) -> (String, Option<String>) {
    static TEMPLATES: [tokio::sync::OnceCell<String>; 2] =
        [tokio::sync::OnceCell::const_new(), tokio::sync::OnceCell::const_new()];
    let slot = match backend {
        Backend::Sqlite => 0,
        Backend::Postgres => 1,
    };
    let template = TEMPLATES[slot]
        .get_or_init(|| async move {
            let dir = fresh_dir();
            let (url, name) = fresh_database(backend, &dir).await;
            if let Some(name) = &name {
                drop_earlier_templates(name).await;
            }
            let db = persistence::connect(&url, 1).await.expect("connect template");
            persistence::migrate(&db).await.expect("migrate template");
            let template = match name {
                Some(name) => name,
                None => {
                    let file = dir.join("template.db");
                    db.execute_unprepared(&format!("VACUUM INTO '{}'", file.display()))
                        .await
                        .expect("snapshot the migrated template");
                    file.display().to_string()
                }
            };
            db.close().await.expect("close template");
            template
        })
        .await;
    match backend {
        Backend::Sqlite => {
            std::fs::copy(template, dir.join("orgadmin.db")).expect("copy the migrated template");
            (format!("sqlite://{}/orgadmin.db?mode=rwc", dir.display()), None)
        }
        Backend::Postgres => {
            let name = format!("{TEST_DB_PREFIX}{}", uuid::Uuid::now_v7().simple());
            let admin = Database::connect(PG_ADMIN_URL)
                .await
                .expect("PostgreSQL admin connection");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
                .await
                .expect("create test database from the template");
            // Tests never crash the PostgreSQL server, and a commit that
            // waits for its WAL flush is most of a small write's time: not
            // waiting changes nothing a test can see (a committed write is
            // visible at once either way), only what a server crash keeps.
            admin
                .execute_unprepared(&format!("ALTER DATABASE {name} SET synchronous_commit = off"))
                .await
                .expect("relax commit durability for the test database");
            admin.close().await.ok();
            (format!("postgres://postgres@127.0.0.1:5432/{name}"), Some(name))
        }
    }
}

/// What marks a test database as a migrated template (the start of its
/// comment; the rest names the process that made it).
const TEMPLATE_COMMENT: &str = "orgadmin test template";

/// Marks `own` as this process's template, and drops the templates that
/// test processes which have ended left (nothing async runs when a process
/// ends). A template of a process still running stays: dropped between two
/// of its copies, that process's next test failed (two test runs at once,
/// say a clean-clone CI run beside a developer's).
async fn drop_earlier_templates(own: &str) {
    let Ok(admin) = Database::connect(PG_ADMIN_URL).await else {
        return;
    };
    let _ = admin
        .execute_unprepared(&format!(
            "COMMENT ON DATABASE {own} IS '{TEMPLATE_COMMENT} pid={}'",
            std::process::id()
        ))
        .await;
    let earlier = admin
        .query_all_raw(Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            format!(
                "SELECT CAST(datname AS TEXT), COALESCE(shobj_description(oid, 'pg_database'), '') FROM pg_database \
                 WHERE shobj_description(oid, 'pg_database') LIKE '{TEMPLATE_COMMENT}%' AND datname <> '{own}'"
            ),
        ))
        .await
        .unwrap_or_default();
    for row in earlier {
        let (Ok(name), Ok(comment)) = (row.try_get_by_index::<String>(0), row.try_get_by_index::<String>(1)) else {
            continue;
        };
        if template_maker_runs(&comment) {
            continue;
        }
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\""))
            .await;
    }
    let _ = admin.close().await;
}

/// Whether the test process a template's comment names is still running
/// on this machine (templates made before the comment named one: no).
fn template_maker_runs(comment: &str) -> bool {
    comment
        .rsplit_once("pid=")
        .and_then(|(_, pid)| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}

impl TestApp {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, DomainSettings::default()).await
    }

    pub async fn start_with(backend: Backend, settings: DomainSettings) -> Self {
        Self::start_limited(backend, settings, 10, 256).await
    }

    /// A server with `pool_size` database connections (PostgreSQL; SQLite
    /// always has one) and at most `max_in_flight` calls at once.
    pub async fn start_limited(
        backend: Backend,
        settings: DomainSettings,
        pool_size: u32,
        max_in_flight: usize,
    ) -> Self {
        Self::start_full(backend, settings, pool_size, max_in_flight, Some(test_ca())).await
    }

    /// A server with the certificate authority `ca`.
    pub async fn start_with_ca(
        backend: Backend,
        ca: std::sync::Arc<orgadmin_domain::ca::CertificateAuthority>,
    ) -> Self {
        Self::start_full(backend, DomainSettings::default(), 10, 256, Some(ca)).await
    }

    /// A server that was given no certificate authority.
    pub async fn start_without_ca(backend: Backend) -> Self {
        Self::start_full(backend, DomainSettings::default(), 10, 256, None).await
    }

    async fn start_full(
        backend: Backend,
        settings: DomainSettings,
        pool_size: u32,
        max_in_flight: usize,
        ca: Option<std::sync::Arc<orgadmin_domain::ca::CertificateAuthority>>,
    ) -> Self {
        let dir = fresh_dir();
        let (database_url, pg_database) = fresh_migrated_database(backend, &dir).await;
        let db = persistence::connect(&database_url, pool_size).await.expect("connect");
        // Nothing left to apply: this checks the copy is at the latest migration.
        persistence::migrate(&db).await.expect("migrate");
        let domain = Domain::new(db, test_vault(), &[OPERATOR_TOKEN.to_owned()])
            .with_settings(settings)
            .with_ca(ca);
        let http_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let http_addr = http_listener.local_addr().expect("http addr");
        let http = tokio::spawn(orgadmin_service::serve_certificate_http(
            domain.clone(),
            http_listener,
            std::future::pending(),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(orgadmin_service::serve(
            domain.clone(),
            listener,
            max_in_flight,
            async move {
                let _ = stopped.await;
            },
        ));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect to test server");
        Self {
            addr,
            domain,
            database_url,
            backend,
            channel,
            stop: Some(stop),
            server: Some(server),
            pg_database,
            dir,
            http_addr,
            http: Some(http),
        }
    }

    pub fn orgs(&self) -> OrganisationServiceClient<Channel> {
        OrganisationServiceClient::new(self.channel.clone())
    }

    pub fn certs(&self) -> CertificateServiceClient<Channel> {
        CertificateServiceClient::new(self.channel.clone())
    }

    /// The connection the clients share, for a call made by hand.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    pub fn access(&self) -> AccessServiceClient<Channel> {
        AccessServiceClient::new(self.channel.clone())
    }

    pub fn health(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channel.clone())
    }

    pub fn notes(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.channel.clone())
    }

    /// Rolls the schema back to before the migration `name` (and every one
    /// after it), as a database from before that upgrade; `Migrator::up`
    /// applies them again.
    pub async fn undo_migrations_from(&self, name: &str) {
        use orgadmin_migrations::{Migrator, MigratorTrait};
        let migrations = Migrator::migrations();
        let position = migrations
            .iter()
            .position(|m| m.name() == name)
            .unwrap_or_else(|| panic!("no migration {name}"));
        Migrator::down(self.domain.db(), Some((migrations.len() - position) as u32))
            .await
            .unwrap_or_else(|e| panic!("down to before {name}: {e}"));
    }

    /// The one number a query returns (`SELECT COUNT(*) ...`), read straight
    /// from the test database.
    pub async fn count(&self, sql: &str) -> i64 {
        let db = self.domain.db();
        db.query_one_raw(Statement::from_string(db.get_database_backend(), sql.to_owned()))
            .await
            .expect("count query")
            .expect("a row")
            .try_get_by_index::<i64>(0)
            .expect("a count")
    }

    /// Waits (up to 10 s) until a statement of this test's database (other
    /// tests' waits must not count) that mentions `table` waits on a lock.
    /// PostgreSQL only.
    pub async fn until_waiting_on_a_lock(&self, table: &str) {
        let waiting = format!(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND datname = current_database() AND query ILIKE '%{table}%'"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.count(&waiting).await == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "nothing waited on a lock over {table} within 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The person of `session` asks to become anonymous; the request's id.
    pub async fn ask_anonymity(&self, session: &str) -> String {
        self.users()
            .request_anonymity(req(
                session,
                pb::RequestAnonymityRequest {
                    reason: "beskyttet adresse".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .anonymity_request
            .unwrap()
            .id
    }

    /// Approves the anonymity request `id` as `token`.
    pub async fn approve_anonymity(&self, token: &str, id: &str) -> Result<pb::DecideAnonymityRequestResponse, Status> {
        self.users()
            .decide_anonymity_request(req(
                token,
                pb::DecideAnonymityRequestRequest {
                    id: id.to_owned(),
                    approve: true,
                    note: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// A write in progress: another session's transaction that has run
    /// `statements` and not committed, holding their locks until
    /// [`InProgress::commit`]. For tests of what waits on it (PostgreSQL:
    /// SQLite has one writer at a time, so nothing interleaves there).
    pub async fn in_progress(&self, statements: &[String]) -> InProgress {
        use sea_orm::TransactionTrait;
        let connection = Database::connect(&self.database_url).await.unwrap();
        let txn = connection.begin().await.unwrap();
        for statement in statements {
            txn.execute_unprepared(statement)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        InProgress { connection, txn }
    }

    /// Runs one statement with bound values, written with PostgreSQL's
    /// placeholders `$1`, `$2`, … (each once, in order; `?` on SQLite): for
    /// rows the API no longer writes, such as data from before a rule.
    pub async fn execute_bound(&self, sql: &str, values: Vec<sea_orm::Value>) {
        let db = self.domain.db();
        let backend = db.get_database_backend();
        let mut sql = sql.to_owned();
        if backend != sea_orm::DbBackend::Postgres {
            for n in (1..=values.len()).rev() {
                sql = sql.replace(&format!("${n}"), "?");
            }
        }
        db.execute_raw(Statement::from_sql_and_values(backend, &sql, values))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The row of `select … WHERE <key> =` for the one key `id`, bound as a
    /// value (a UUID is text on PostgreSQL and bytes on SQLite, so it cannot
    /// be written into the SQL).
    pub async fn row_where(&self, select_where_key_is: &str, id: uuid::Uuid) -> sea_orm::QueryResult {
        let db = self.domain.db();
        let backend = db.get_database_backend();
        let placeholder = if backend == sea_orm::DbBackend::Postgres {
            "$1"
        } else {
            "?"
        };
        db.query_one_raw(Statement::from_sql_and_values(
            backend,
            format!("{select_where_key_is} {placeholder}"),
            [id.into()],
        ))
        .await
        .expect("a query by key")
        .expect("a row")
    }

    /// The organisation's licences in use, as the API reports them.
    pub async fn licences_used(&self, token: &str, org: &str) -> i32 {
        self.orgs()
            .get_organisation(req(token, pb::GetOrganisationRequest { id: org.to_owned() }))
            .await
            .unwrap()
            .into_inner()
            .organisation
            .unwrap()
            .licences_used
    }

    pub fn imports(&self) -> ImportServiceClient<Channel> {
        ImportServiceClient::new(self.channel.clone())
    }

    /// Uploads `file` as an import (spec first, then pieces of at most
    /// `piece` bytes) the way a client streams it.
    pub async fn upload_import(
        &self,
        token: &str,
        spec: pb::ImportSpec,
        file: &[u8],
        piece: usize,
    ) -> Result<pb::ImportJob, Status> {
        let mut messages = vec![pb::CreateImportRequest {
            part: Some(pb::create_import_request::Part::Spec(spec)),
        }];
        messages.extend(file.chunks(piece.max(1)).map(|c| pb::CreateImportRequest {
            part: Some(pb::create_import_request::Part::Chunk(c.to_vec())),
        }));
        self.stream_import(token, messages).await
    }

    /// CreateImport with exactly these messages.
    pub async fn stream_import(
        &self,
        token: &str,
        messages: Vec<pb::CreateImportRequest>,
    ) -> Result<pb::ImportJob, Status> {
        let mut request = Request::new(tokio_stream::iter(messages));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        self.imports()
            .create_import(request)
            .await
            .map(|r| r.into_inner().job.expect("job"))
    }

    /// Runs every queued import to its end in this process, as the worker
    /// would (the worker binary's own runs are in workers.rs).
    pub async fn run_imports(&self) {
        while let Some(id) = self
            .domain
            .claim_import("test-worker")
            .await
            .expect("claim import")
            .map(|c| c.id)
        {
            self.domain
                .run_import(id, "test-worker", &|| false)
                .await
                .expect("run import");
        }
    }

    /// The job as its requester reads it.
    pub async fn import_job(&self, token: &str, id: &str) -> pb::ImportJob {
        self.imports()
            .get_import(req(token, pb::GetImportRequest { id: id.to_owned() }))
            .await
            .expect("get import")
            .into_inner()
            .job
            .expect("job")
    }

    /// Every row error of a job, all pages.
    pub async fn import_errors(&self, token: &str, id: &str) -> Vec<pb::ImportRowError> {
        let mut errors = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .imports()
                .list_import_errors(req(
                    token,
                    pb::ListImportErrorsRequest {
                        id: id.to_owned(),
                        page_size: 7,
                        page_token,
                    },
                ))
                .await
                .expect("list import errors")
                .into_inner();
            errors.extend(page.errors);
            if page.next_page_token.is_empty() {
                return errors;
            }
            page_token = page.next_page_token;
        }
    }

    /// Stops the server and drops a PostgreSQL test database. First checks
    /// the invariant every scenario must keep: each organisation's licence
    /// counter equals its number of standing users (R-ORG-4).
    pub async fn finish(mut self) {
        assert_eq!(
            self.licence_counter_drift().await,
            Vec::<String>::new(),
            "organisations whose licences_used differs from their standing users"
        );
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        if let Some(http) = self.http.take() {
            http.abort();
        }
        let _ = self.domain.db().clone().close().await;
        if let Some(name) = self.pg_database.take()
            && let Ok(admin) = Database::connect(PG_ADMIN_URL).await
        {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            let _ = admin.close().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Organisations (name: counter vs. count) whose licence counter disagrees
    /// with a count of their seat holders: ACTIVE and PENDING_ACTIVATION users
    /// and timed deactivations (R-ORG-4).
    pub async fn licence_counter_drift(&self) -> Vec<String> {
        let db = self.domain.db();
        let sql = "SELECT o.name, o.licences_used, o.licence_count, \
                   (SELECT COUNT(*) FROM users u WHERE u.organisation_id = o.id \
                    AND (u.state IN ('ACTIVE', 'PENDING_ACTIVATION') \
                    OR (u.state = 'DEACTIVATED' AND u.deactivated_until IS NOT NULL))) FROM organisations o";
        let rows = db
            .query_all_raw(Statement::from_string(db.get_database_backend(), sql.to_owned()))
            .await
            .expect("licence counter query");
        rows.into_iter()
            .filter_map(|row| {
                let name: String = row.try_get_by_index(0).unwrap();
                let counter: i64 = row.try_get_by_index(1).unwrap();
                let limit: i32 = row.try_get_by_index(2).unwrap();
                let count: i64 = row.try_get_by_index(3).unwrap();
                if counter > i64::from(limit) {
                    return Some(format!("{name}: {counter} licences used of {limit}"));
                }
                (counter != count).then(|| format!("{name}: {counter} vs {count}"))
            })
            .collect()
    }

    /// A fingerprint of every value of every table, tables and columns read
    /// from the database's catalog (so a table added later is covered without
    /// being listed). Equal before and after a call means the call changed
    /// nothing; on a difference, the map names the tables that changed.
    pub async fn fingerprint(&self) -> Fingerprint {
        catalog::fingerprint_database(self.domain.db()).await
    }

    /// Every row of every table, each value as bytes (see `catalog`).
    pub async fn dump(&self) -> Vec<TableDump> {
        dump_database(self.domain.db()).await
    }

    /// Waits (up to 30 s) until no mail is pending, and returns the (sent,
    /// failed) counts: every mail queued so far has then been handed to the
    /// SMTP server or given up on, so what did not arrive never will.
    pub async fn wait_outbox_drained(&self) -> (u64, u64) {
        let started = std::time::Instant::now();
        loop {
            let (pending, sent, failed) = self.domain.outbox_counts().await.expect("outbox counts");
            if pending == 0 {
                return (sent, failed);
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "{pending} mail(s) still pending after 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// A password that meets the policy (15+ characters, not common).
pub const TEST_PASSWORD: &str = "blåbærgrød med fløde 7";

/// A timestamp `ms` milliseconds from now.
/// The full name of every orgadmin service the server declares, from the
/// descriptor set it serves by reflection: lists of services in tests come
/// from here, so a new service cannot be left out of them.
pub fn declared_services() -> Vec<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let services: Vec<String> = set
        .file
        .iter()
        .flat_map(|file| {
            file.service
                .iter()
                .map(move |s| format!("{}.{}", file.package(), s.name()))
        })
        .collect();
    assert!(
        services.len() >= 7,
        "the descriptor set declares the services: {services:?}"
    );
    services
}

pub fn in_ms(ms: i64) -> prost_types::Timestamp {
    let at = chrono::Utc::now().timestamp_millis() + ms;
    prost_types::Timestamp {
        seconds: at / 1000,
        nanos: ((at % 1000) * 1_000_000) as i32,
    }
}

/// Wraps a message with `authorization: Bearer <token>` (none for `""`).
pub fn req<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if !token.is_empty() {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().expect("header"));
    }
    request
}

/// `request` made as the user `owner_id` names, through a share of their
/// resources (R-ACC-5): the `x-orgadmin-act-as` header. The value is sent
/// as given, so a test may send one that is no user id.
pub fn acting_as<T>(owner_id: &str, mut request: Request<T>) -> Request<T> {
    request
        .metadata_mut()
        .insert("x-orgadmin-act-as", owner_id.parse().expect("header"));
    request
}

static SEQUENCE: AtomicU32 = AtomicU32::new(1);

pub fn next_number() -> u32 {
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

/// A valid CVR number (modulus 11), different on each call.
pub fn unique_cvr() -> String {
    loop {
        let n = 10_000_000 + (next_number() * 7919 + std::process::id()) % 89_999_999;
        let s = format!("{n:08}");
        if orgadmin_domain::validate::cvr(&s).is_ok() {
            return s;
        }
    }
}

/// A valid CPR number (a real date), different on each call.
pub fn unique_cpr() -> String {
    let n = next_number();
    format!(
        "{:02}{:02}85{:04}",
        1 + n % 28,
        1 + (n / 28) % 12,
        1000 + (n * 37) % 3000
    )
}

pub fn unique_email(prefix: &str) -> String {
    format!("{prefix}.{}@firma.dk", next_number())
}

pub fn new_user(org: &str, first: &str, roles: &[pb::Role]) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        organisation_id: org.to_owned(),
        first_name: first.to_owned(),
        surname: "Jørgensen".into(),
        email: unique_email(&first.to_lowercase()),
        cpr: unique_cpr(),
        roles: roles.iter().map(|r| *r as i32).collect(),
        language: pb::Language::Da as i32,
        ..Default::default()
    }
}

/// An organisation with its first administrator (organisation and user
/// administration) and that administrator's API token.
pub struct OrgFixture {
    pub org: pb::Organisation,
    pub admin: pb::User,
    pub admin_token: String,
}

impl TestApp {
    pub async fn create_org(&self, licence_count: Option<i32>, max_administrators: Option<i32>) -> pb::Organisation {
        self.orgs()
            .create_organisation(req(
                OPERATOR_TOKEN,
                pb::CreateOrganisationRequest {
                    name: format!("Værksted {} ApS", next_number()),
                    cvr: unique_cvr(),
                    licence_count,
                    max_administrators,
                    ..Default::default()
                },
            ))
            .await
            .expect("create organisation")
            .into_inner()
            .organisation
            .expect("organisation")
    }

    pub async fn org_with_admin(&self) -> OrgFixture {
        self.org_with_admin_limits(None, None).await
    }

    pub async fn org_with_admin_limits(
        &self,
        licence_count: Option<i32>,
        max_administrators: Option<i32>,
    ) -> OrgFixture {
        let org = self.create_org(licence_count, max_administrators).await;
        let (admin, admin_token) = self
            .create_and_activate(OPERATOR_TOKEN, new_user(&org.id, "Admin", &[]))
            .await;
        OrgFixture {
            org,
            admin,
            admin_token,
        }
    }

    /// The token of the newest activation link mailed to `email`, read from
    /// the outbox the way the worker reads it (decrypted with the test vault).
    pub async fn activation_link_token(&self, email: &str) -> String {
        // A worker running beside the test may have sent the mail and
        // dropped its content already (it keeps no copy): then a new link
        // is mailed, by the system, and read before it goes.
        for _ in 0..20 {
            if let Some(token) = self.try_mailed_token("activation", email).await {
                return token;
            }
            let db = self.domain.db();
            let backend = db.get_database_backend();
            let sql = match backend {
                sea_orm::DatabaseBackend::Postgres => "SELECT id FROM users WHERE email = $1",
                _ => "SELECT id FROM users WHERE email = ?",
            };
            let row = db
                .query_one_raw(Statement::from_sql_and_values(backend, sql, [email.into()]))
                .await
                .expect("user query")
                .expect("the user of the mail");
            let id: uuid::Uuid = row.try_get_by_index(0).expect("user id");
            self.domain
                .send_activation(&orgadmin_domain::Caller::system("test-fixture"), id, None)
                .await
                .expect("mail a new activation link");
        }
        panic!("the activation mail to {email} was always sent before it could be read");
    }

    /// The text of each queued mail of `kind` to `to` (content not yet sent).
    pub async fn mail_texts(&self, kind: &str, to: &str) -> Vec<String> {
        self.mail_parts(kind, to, "text").await
    }

    /// The subjects of the outbox mails of `kind` to `to`.
    pub async fn mail_subjects(&self, kind: &str, to: &str) -> Vec<String> {
        self.mail_parts(kind, to, "subject").await
    }

    /// `part` (`text`, `subject`, `html`) of the outbox mails of `kind` to `to`.
    async fn mail_parts(&self, kind: &str, to: &str, part: &str) -> Vec<String> {
        let db = self.domain.db();
        let backend = db.get_database_backend();
        let sql = match backend {
            sea_orm::DatabaseBackend::Postgres => "SELECT payload FROM outbox_mails WHERE kind = $1 AND recipient = $2",
            _ => "SELECT payload FROM outbox_mails WHERE kind = ? AND recipient = ?",
        };
        db.query_all_raw(Statement::from_sql_and_values(backend, sql, [kind.into(), to.into()]))
            .await
            .unwrap()
            .iter()
            .map(|row| {
                let sealed: String = row.try_get_by_index(0).unwrap();
                let json = test_vault().decrypt(&sealed).expect("outbox payload decrypts");
                let mail: serde_json::Value = serde_json::from_str(&json).unwrap();
                mail[part].as_str().unwrap().to_owned()
            })
            .collect()
    }

    /// The `token=` of the newest mail of `kind` to `email` in the outbox.
    pub async fn mailed_token(&self, kind: &str, email: &str) -> String {
        self.try_mailed_token(kind, email)
            .await
            .unwrap_or_else(|| panic!("the {kind} mail to {email} was sent and its content dropped"))
    }

    /// [`Self::mailed_token`], or `None` when a worker already sent the mail
    /// (a sent mail's content is dropped).
    pub async fn try_mailed_token(&self, kind: &str, email: &str) -> Option<String> {
        let db = self.domain.db();
        let backend = db.get_database_backend();
        let sql = match backend {
            sea_orm::DatabaseBackend::Postgres => {
                "SELECT payload FROM outbox_mails WHERE kind = $1 AND recipient = $2 ORDER BY id DESC LIMIT 1"
            }
            _ => "SELECT payload FROM outbox_mails WHERE kind = ? AND recipient = ? ORDER BY id DESC LIMIT 1",
        };
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [kind.into(), email.into()],
            ))
            .await
            .expect("outbox query")
            .unwrap_or_else(|| panic!("no {kind} mail to {email} in the outbox"));
        let sealed: String = row.try_get_by_index(0).expect("payload");
        if sealed.is_empty() {
            return None;
        }
        let json = test_vault().decrypt(&sealed).expect("outbox payload decrypts");
        let mail: serde_json::Value = serde_json::from_str(&json).expect("payload is JSON");
        let text = mail["text"].as_str().expect("text body");
        let start = text.find("token=").expect("the mail holds a link with a token") + "token=".len();
        Some(
            text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect(),
        )
    }

    /// One request over plain HTTP/1.1 to the HTTP port (CRL, pages): the
    /// answer's head and body.
    pub async fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (String, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.http_addr)
            .await
            .expect("connect to the HTTP port");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.expect("send the head");
        stream.write_all(body).await.expect("send the body");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read the answer");
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP head");
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        (head, response[split + 4..].to_vec())
    }

    /// A user's history events of one activity, as `token` reads them.
    pub async fn history_of(&self, token: &str, user_id: &str, activity: pb::HistoryActivity) -> Vec<pb::HistoryEvent> {
        self.users()
            .list_user_history(req(
                token,
                pb::ListUserHistoryRequest {
                    user_id: user_id.to_owned(),
                    activities: vec![activity as i32],
                    ..Default::default()
                },
            ))
            .await
            .expect("list user history")
            .into_inner()
            .events
    }

    /// The organisation's settings, as its administrator reads them.
    pub async fn settings(&self, fixture: &OrgFixture) -> pb::OrganisationSettings {
        self.orgs()
            .get_organisation_settings(req(
                &fixture.admin_token,
                pb::GetOrganisationSettingsRequest {
                    organisation_id: fixture.org.id.clone(),
                },
            ))
            .await
            .expect("read settings")
            .into_inner()
            .settings
            .expect("settings")
    }

    /// The parked (FAILED) mails as the operator lists them, waiting up to
    /// ten seconds for the first.
    pub async fn parked_mails(&self) -> Vec<pb::OutboxMail> {
        for _ in 0..200 {
            let failed = self
                .notes()
                .list_failed_mails(req(OPERATOR_TOKEN, pb::ListFailedMailsRequest::default()))
                .await
                .expect("list failed mails")
                .into_inner()
                .mails;
            if !failed.is_empty() {
                return failed;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Vec::new()
    }

    /// Lets the hold on every e-mail change asked by someone else pass
    /// (`email_change_hold_ms`), as if its days had gone by.
    pub async fn pass_email_change_holds(&self) {
        self.execute_bound(
            "UPDATE activation_secrets SET usable_from = $1 WHERE kind = 'EMAIL'",
            vec![0i64.into()],
        )
        .await;
    }

    /// `DeleteUser` of `id` by `token`, without an etag.
    pub async fn delete_user(&self, token: &str, id: &str) -> Result<pb::DeleteUserResponse, Status> {
        self.users()
            .delete_user(req(
                token,
                pb::DeleteUserRequest {
                    id: id.to_owned(),
                    ..Default::default()
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// `WhoAmI` with `token`.
    pub async fn who_am_i(&self, token: &str) -> Result<pb::WhoAmIResponse, Status> {
        self.auth()
            .who_am_i(req(token, pb::WhoAmIRequest {}))
            .await
            .map(|r| r.into_inner())
    }

    /// The organisation opens itself to join requests, and someone
    /// outside asks to join it as `first_name` with `email` (a confirmation
    /// mail goes to that address).
    pub async fn ask_to_join(&self, fixture: &OrgFixture, first_name: &str, email: &str) {
        self.change_settings(fixture, "join_requests_allowed", |s| s.join_requests_allowed = true)
            .await;
        self.access()
            .request_to_join(req(
                "",
                pb::RequestToJoinRequest {
                    organisation_cvr: fixture.org.cvr.clone(),
                    first_name: first_name.to_owned(),
                    surname: "Nielsen".into(),
                    email: email.to_owned(),
                    birth_date: "1990-05-17".into(),
                    language: pb::Language::Da as i32,
                    reason: "Jeg er ny på lageret i Vejle".into(),
                },
            ))
            .await
            .expect("a request to join");
    }

    /// The organisation's administrator changes one settings field
    /// (`path`, as in the update mask) with `change`; returns the result.
    pub async fn change_settings(
        &self,
        fixture: &OrgFixture,
        path: &str,
        change: impl FnOnce(&mut pb::OrganisationSettings),
    ) -> pb::OrganisationSettings {
        let mut settings = self.settings(fixture).await;
        change(&mut settings);
        self.orgs()
            .update_organisation_settings(req(
                &fixture.admin_token,
                pb::UpdateOrganisationSettingsRequest {
                    settings: Some(settings),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec![path.to_owned()],
                    }),
                },
            ))
            .await
            .unwrap_or_else(|e| panic!("change {path}: {e:?}"))
            .into_inner()
            .settings
            .expect("settings")
    }

    /// The organisation's administrator turns the second-factor requirement on.
    pub async fn require_second_factor(&self, fixture: &OrgFixture) {
        let updated = self
            .change_settings(fixture, "second_factor_required", |s| s.second_factor_required = true)
            .await;
        assert!(updated.second_factor_required);
    }

    /// The six digits of the newest login-code mail to `email`, read from
    /// the outbox (no worker runs beside the test that asks).
    pub async fn mailed_login_code(&self, email: &str) -> String {
        let db = self.domain.db();
        let backend = db.get_database_backend();
        let sql = match backend {
            sea_orm::DatabaseBackend::Postgres => {
                "SELECT payload FROM outbox_mails WHERE kind = 'login_code' AND recipient = $1 ORDER BY id DESC LIMIT 1"
            }
            _ => {
                "SELECT payload FROM outbox_mails WHERE kind = 'login_code' AND recipient = ? ORDER BY id DESC LIMIT 1"
            }
        };
        let row = db
            .query_one_raw(Statement::from_sql_and_values(backend, sql, [email.into()]))
            .await
            .expect("outbox query")
            .unwrap_or_else(|| panic!("no login code mail to {email} in the outbox"));
        let sealed: String = row.try_get_by_index(0).expect("payload");
        let json = test_vault().decrypt(&sealed).expect("outbox payload decrypts");
        let mail: serde_json::Value = serde_json::from_str(&json).expect("payload is JSON");
        mail["text"]
            .as_str()
            .expect("text body")
            .lines()
            .map(str::trim)
            .find(|line| line.len() == 6 && line.bytes().all(|b| b.is_ascii_digit()))
            .expect("the mail holds a six-digit code")
            .to_owned()
    }

    /// The person behind a CPR user activates with the link mailed to them;
    /// returns the reply with their session token.
    pub async fn activate_by_link(&self, email: &str, cpr: &str) -> pb::ActivateUserResponse {
        self.activate_by_link_with_password(email, cpr, "").await
    }

    /// `activate_by_link`, also setting a password (empty: none).
    pub async fn activate_by_link_with_password(
        &self,
        email: &str,
        cpr: &str,
        password: &str,
    ) -> pb::ActivateUserResponse {
        let token = self.activation_link_token(email).await;
        self.users()
            .activate_user(req(
                "",
                pb::ActivateUserRequest {
                    token,
                    cpr: cpr.to_owned(),
                    password: password.to_owned(),
                    ..Default::default()
                },
            ))
            .await
            .expect("activate with the mailed link")
            .into_inner()
    }

    /// A member of the fixture's organisation who activated with
    /// `TEST_PASSWORD`; returns the user and their e-mail address (their
    /// login id).
    pub async fn member_with_password(
        &self,
        fixture: &OrgFixture,
        first: &str,
        roles: &[pb::Role],
    ) -> (pb::User, String) {
        self.member_with_password_from(&fixture.admin_token, new_user(&fixture.org.id, first, roles))
            .await
    }

    /// [`Self::member_with_password`] for a request of the caller's making.
    pub async fn member_with_password_from(&self, creator: &str, request: pb::CreateUserRequest) -> (pb::User, String) {
        let (email, cpr) = (request.email.clone(), request.cpr.clone());
        self.users()
            .create_user(req(creator, request))
            .await
            .expect("create user");
        let activated = self.activate_by_link_with_password(&email, &cpr, TEST_PASSWORD).await;
        (activated.user.expect("user"), email)
    }

    /// `token` creates a user; the user as created.
    pub async fn created_user(&self, token: &str, request: pb::CreateUserRequest) -> pb::User {
        self.users()
            .create_user(req(token, request))
            .await
            .expect("create user")
            .into_inner()
            .user
            .expect("user")
    }

    /// A user as `token` reads them now (with their current etag).
    pub async fn user(&self, token: &str, id: &str) -> pb::User {
        self.users()
            .get_user(req(token, pb::GetUserRequest { id: id.to_owned() }))
            .await
            .expect("get user")
            .into_inner()
            .user
            .expect("user")
    }

    /// `RequestPasswordReset` for a login id (the same answer for any).
    pub async fn request_password_reset(&self, login_id: &str) {
        self.auth()
            .request_password_reset(req(
                "",
                pb::RequestPasswordResetRequest {
                    login_id: login_id.to_owned(),
                    ..Default::default()
                },
            ))
            .await
            .expect("the same answer for every login id");
    }

    /// `Login` with a login id and password.
    pub async fn login(&self, login_id: &str, password: &str) -> Result<pb::LoginResponse, Status> {
        self.auth()
            .login(req(
                "",
                pb::LoginRequest {
                    login_id: login_id.to_owned(),
                    password: password.to_owned(),
                    ..Default::default()
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// `creator` creates a CPR user, who then activates with their own link:
    /// the user (ACTIVE) and their session token, the only way a test gets a
    /// credential for a person (R-AUTH-1).
    pub async fn create_and_activate(&self, creator: &str, request: pb::CreateUserRequest) -> (pb::User, String) {
        let (email, cpr) = (request.email.clone(), request.cpr.clone());
        assert!(!cpr.is_empty(), "create_and_activate needs a CPR user");
        self.users()
            .create_user(req(creator, request))
            .await
            .expect("create user")
            .into_inner()
            .user
            .expect("user");
        let activated = self.activate_by_link(&email, &cpr).await;
        (activated.user.expect("user"), activated.session_token)
    }

    /// A service account ("Lønsystem Integration") that `token` (a user
    /// administrator's) makes in the organisation, as created.
    pub async fn service_account(&self, token: &str, organisation_id: &str) -> pb::CreateUserResponse {
        self.users()
            .create_user(req(
                token,
                pb::CreateUserRequest {
                    organisation_id: organisation_id.to_owned(),
                    first_name: "Lønsystem".into(),
                    surname: "Integration".into(),
                    email: unique_email("loen-api"),
                    service_account: true,
                    ..Default::default()
                },
            ))
            .await
            .expect("a service account")
            .into_inner()
    }

    /// An API token of the caller's own (`session` is the caller's token).
    pub async fn own_api_token(&self, session: &str, user_id: &str) -> String {
        self.auth()
            .create_api_token(req(
                session,
                pb::CreateApiTokenRequest {
                    user_id: user_id.to_owned(),
                    name: "test".into(),
                    expire_time: None,
                    ..Default::default()
                },
            ))
            .await
            .expect("create own api token")
            .into_inner()
            .secret
    }

    /// Creates a user with `roles` (by the fixture's administrator), who
    /// activates and so holds a session token.
    pub async fn member(&self, fixture: &OrgFixture, first: &str, roles: &[pb::Role]) -> (pb::User, String) {
        self.create_and_activate(&fixture.admin_token, new_user(&fixture.org.id, first, roles))
            .await
    }

    /// A plain member placed in `unit_id`, activated, with their session.
    pub async fn member_in(&self, fixture: &OrgFixture, first: &str, unit_id: &str) -> (pb::User, String) {
        let request = pb::CreateUserRequest {
            unit_id: unit_id.to_owned(),
            ..new_user(&fixture.org.id, first, &[])
        };
        self.create_and_activate(&fixture.admin_token, request).await
    }

    /// A department of the fixture's organisation, below `parent_id` ("" for
    /// a top unit).
    pub async fn unit(&self, fixture: &OrgFixture, name: &str, parent_id: &str) -> pb::Unit {
        self.orgs()
            .create_unit(req(
                &fixture.admin_token,
                pb::CreateUnitRequest {
                    organisation_id: fixture.org.id.clone(),
                    parent_id: parent_id.to_owned(),
                    kind: pb::UnitKind::Department as i32,
                    name: name.to_owned(),
                    ..Default::default()
                },
            ))
            .await
            .expect("create unit")
            .into_inner()
            .unit
            .expect("unit")
    }

    /// `granter` gives `user_id` admin level `level` on `unit_id` ("" for the
    /// organisation).
    pub async fn grant_level(
        &self,
        granter: &str,
        user_id: &str,
        level: i32,
        unit_id: &str,
    ) -> Result<pb::AdminLevel, Status> {
        self.access()
            .grant_admin_level(req(
                granter,
                pb::GrantAdminLevelRequest {
                    user_id: user_id.to_owned(),
                    level,
                    unit_id: unit_id.to_owned(),
                },
            ))
            .await
            .map(|r| r.into_inner().admin_level.expect("admin level"))
    }
}

/// What a history event changed `field` to, if it changed it.
pub fn changed_to<'a>(event: &'a pb::HistoryEvent, field: &str) -> Option<&'a str> {
    event
        .changes
        .iter()
        .find(|c| c.field == field)
        .map(|c| c.after.as_str())
}

/// The `ErrorInfo.reason` of a status, if any.
pub fn reason(status: &Status) -> String {
    use tonic_types::StatusExt;
    status.get_details_error_info().map(|i| i.reason).unwrap_or_default()
}

/// The fields named by a status's `BadRequest` violations.
pub fn bad_fields(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

/// Runs one scenario on one backend.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::Backend::Postgres).await
                }
            }
        )*
    };
}

/// A received mail, as the SMTP sink decoded it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub message_id: String,
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The real SMTP server of the tests (aiosmtpd, `support/smtp_sink.py`).
pub struct SmtpSink {
    pub port: u16,
    pub dir: PathBuf,
    delay_ms: u32,
    /// Records only Message-ID and recipients (no MIME parsing): for the
    /// benchmark, where the sink's own CPU must not be what is measured.
    light: bool,
    /// Offers no SMTPUTF8 (aiosmtpd's own default; its controller's is to
    /// offer it), as many relays still do.
    ascii_only: bool,
    child: Option<std::process::Child>,
}

impl SmtpSink {
    pub fn start(delay_ms: u32) -> Self {
        Self::start_with(delay_ms, false)
    }

    /// A sink that records Message-ID and recipients only (see `light`).
    pub fn start_light(delay_ms: u32) -> Self {
        Self::start_with(delay_ms, true)
    }

    /// A sink that offers no SMTPUTF8 (see `ascii_only`).
    pub fn start_without_smtputf8() -> Self {
        let mut sink = Self::start_with(0, false);
        sink.ascii_only = true;
        sink.pause();
        sink.resume();
        sink
    }

    fn start_with(delay_ms: u32, light: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut sink = Self {
            port,
            dir: fresh_dir(),
            delay_ms,
            light,
            ascii_only: false,
            child: None,
        };
        sink.resume();
        sink
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port.
    pub fn resume(&mut self) {
        use std::io::BufRead;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("support/smtp_sink.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .arg(self.port.to_string())
            .arg(&self.dir)
            .arg(self.delay_ms.to_string())
            .args(self.light.then_some("light"))
            .env("SINK_SMTPUTF8", if self.ascii_only { "0" } else { "1" })
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd) runs the SMTP sink");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "SMTP sink did not start");
        self.child = Some(child);
    }

    /// Takes the server down (connections refused until `resume`).
    pub fn pause(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn received(&self) -> Vec<ReceivedMail> {
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|path| {
                let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                ReceivedMail {
                    message_id: s("message_id"),
                    to: v["to"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_str().unwrap().to_owned())
                        .collect(),
                    subject: s("subject"),
                    text: s("text"),
                    html: s("html"),
                }
            })
            .collect()
    }

    /// The six-digit codes of the login-code mails `to` received, oldest
    /// first (no other mail has a line of six digits alone).
    pub fn login_codes(&self, to: &str) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t == to))
            .filter_map(|m| {
                m.text
                    .lines()
                    .map(str::trim)
                    .find(|line| line.len() == 6 && line.bytes().all(|b| b.is_ascii_digit()))
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Waits for the `nth` (from 1) login code mailed to `to`.
    pub async fn wait_for_login_code(&self, to: &str, nth: usize) -> String {
        for _ in 0..200 {
            if let Some(code) = self.login_codes(to).get(nth - 1) {
                return code.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("login code {nth} to {to} did not arrive within 10 s");
    }

    /// Waits for a mail to `to` whose text contains `needle`.
    pub async fn wait_for_mail_with(&self, to: &str, needle: &str) -> ReceivedMail {
        for _ in 0..200 {
            if let Some(mail) = self
                .received()
                .into_iter()
                .find(|m| m.to.iter().any(|t| t == to) && m.text.contains(needle))
            {
                return mail;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no mail to {to} with {needle:?} arrived within 10 s");
    }

    /// Waits until `count` mails reached `to`, and returns them.
    pub async fn wait_for(&self, to: &str, count: usize) -> Vec<ReceivedMail> {
        for _ in 0..200 {
            let mails: Vec<_> = self
                .received()
                .into_iter()
                .filter(|m| m.to.iter().any(|t| t == to))
                .collect();
            if mails.len() >= count {
                return mails;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{count} mail(s) to {to} did not arrive within 10 s");
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.pause();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The token of an activation link in a mail's text.
pub fn link_token(mail: &ReceivedMail) -> String {
    let start = mail.text.find("token=").expect("activation link in the mail") + "token=".len();
    mail.text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

/// A worker running in this process against `app`'s database.
pub struct TestWorker {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestWorker {
    pub fn start(app: &TestApp, config: orgadmin_domain::Config) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let domain = app.domain.clone();
        let task = tokio::spawn(async move {
            orgadmin_worker::run(domain, &config, async move {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// A worker configuration for tests: mail to `smtp_url`, quick polls and retries.
pub fn worker_config(app: &TestApp, smtp_url: &str) -> orgadmin_domain::Config {
    orgadmin_domain::Config {
        smtp_url: smtp_url.to_owned(),
        data_dir: app.dir.join("data"),
        mail_poll_interval_ms: 50,
        mail_retry_base_ms: 100,
        mail_max_attempts: 50,
        reactivation_schedule: "* * * * * *".into(),
        ..orgadmin_domain::Config::default()
    }
}

/// A PKCS#10 CSR (PEM) for a P-256 key, made once per test run by the real
/// `openssl req`; any number of certificates may be issued over its key.
pub fn p256_csr() -> String {
    static CSR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CSR.get_or_init(new_p256_csr).clone()
}

/// A CSR over another key than [`p256_csr`]'s: a renewal is over a new key.
pub fn p256_renewal_csr() -> String {
    static CSR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CSR.get_or_init(new_p256_csr).clone()
}

/// A CSR for a new P-256 key, made by the real `openssl req`.
fn new_p256_csr() -> String {
    {
        let dir = fresh_dir();
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "holder.key",
                "-subj",
                "/CN=x",
                "-out",
                "holder.csr",
            ])
            .current_dir(&dir)
            .output()
            .expect("openssl must be installed");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(dir.join("holder.csr")).expect("the CSR openssl wrote")
    }
}

/// See [`TestApp::in_progress`].
pub struct InProgress {
    connection: sea_orm::DatabaseConnection,
    txn: sea_orm::DatabaseTransaction,
}

impl InProgress {
    /// One more statement of the write, still not committed.
    pub async fn run(&self, statement: &str) {
        self.txn
            .execute_unprepared(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }

    /// Ends the write: what waited on it goes on.
    pub async fn commit(self) {
        self.txn.commit().await.unwrap();
        self.connection.close().await.unwrap();
    }
}
