//! Test support: a real server on 127.0.0.1:0 over a fresh database (a SQLite
//! file or a new PostgreSQL database), real migrations, real gRPC clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use orgadmin_domain::{CprVault, Domain, persistence};
use orgadmin_proto::v1 as pb;
use orgadmin_proto::v1::auth_service_client::AuthServiceClient;
use orgadmin_proto::v1::organisation_service_client::OrganisationServiceClient;
use orgadmin_proto::v1::user_service_client::UserServiceClient;
use sea_orm::{ConnectionTrait, Database, Statement};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const OPERATOR_TOKEN: &str = "oat_test-operator-token-0123456789abcdefghijklmnopq";
pub const TEST_DB_PREFIX: &str = "orgadmin_t_";

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
    dir: PathBuf,
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

impl TestApp {
    pub async fn start(backend: Backend) -> Self {
        let dir = fresh_dir();
        let (database_url, pg_database) = fresh_database(backend, &dir).await;
        let db = persistence::connect(&database_url, 10).await.expect("connect");
        persistence::migrate(&db).await.expect("migrate");
        let domain = Domain::new(db, test_vault(), &[OPERATOR_TOKEN.to_owned()]);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(orgadmin_service::serve(domain.clone(), listener, async move {
            let _ = stopped.await;
        }));
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
        }
    }

    pub fn orgs(&self) -> OrganisationServiceClient<Channel> {
        OrganisationServiceClient::new(self.channel.clone())
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    /// Stops the server and drops a PostgreSQL test database.
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
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

    /// A fingerprint of every table's content that any write changes: row
    /// counts, summed versions and revocations. Equal before and after a call
    /// means the call changed nothing.
    pub async fn fingerprint(&self) -> Vec<i64> {
        let queries = [
            "SELECT COUNT(*) FROM organisations",
            "SELECT CAST(COALESCE(SUM(version), 0) AS BIGINT) FROM organisations",
            "SELECT COUNT(*) FROM units",
            "SELECT COUNT(*) FROM users",
            "SELECT CAST(COALESCE(SUM(version), 0) AS BIGINT) FROM users",
            "SELECT COUNT(*) FROM user_roles",
            "SELECT COUNT(*) FROM history_events",
            "SELECT COUNT(*) FROM api_tokens",
            "SELECT COUNT(revoked_at) FROM api_tokens",
        ];
        let db = self.domain.db();
        let mut out = Vec::new();
        for sql in queries {
            let row = db
                .query_one_raw(Statement::from_string(db.get_database_backend(), sql.to_owned()))
                .await
                .expect("fingerprint query")
                .expect("one row");
            out.push(row.try_get_by_index::<i64>(0).expect("integer"));
        }
        out
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
        let admin = self
            .users()
            .create_user(req(OPERATOR_TOKEN, new_user(&org.id, "Admin", &[])))
            .await
            .expect("operator creates the first administrator")
            .into_inner()
            .user
            .expect("user");
        let admin_token = self.token_for(OPERATOR_TOKEN, &admin.id).await;
        OrgFixture {
            org,
            admin,
            admin_token,
        }
    }

    pub async fn token_for(&self, granter: &str, user_id: &str) -> String {
        self.auth()
            .create_api_token(req(
                granter,
                pb::CreateApiTokenRequest {
                    user_id: user_id.to_owned(),
                    name: "test".into(),
                    expire_time: None,
                },
            ))
            .await
            .expect("create api token")
            .into_inner()
            .secret
    }

    /// Creates a user with `roles` (by the fixture's administrator) and gives
    /// them a token.
    pub async fn member(&self, fixture: &OrgFixture, first: &str, roles: &[pb::Role]) -> (pb::User, String) {
        let user = self
            .users()
            .create_user(req(&fixture.admin_token, new_user(&fixture.org.id, first, roles)))
            .await
            .expect("create member")
            .into_inner()
            .user
            .expect("user");
        let token = self.token_for(&fixture.admin_token, &user.id).await;
        (user, token)
    }
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
