//! orgadmin's domain: every rule of SPEC.md in one place, plus the
//! persistence it needs. Both binaries (service and worker) call into
//! [`Domain`]; nothing here knows about gRPC.

mod auth_cache;
pub mod ca;
pub mod config;
pub mod email;
pub mod error;
pub mod mail;
pub mod metrics;
pub mod model;
pub mod normalise;
pub mod paging;
pub mod passwords;
pub mod persistence;
pub mod policy;
pub mod rate_limit;
pub mod secrets;
pub mod services;
pub mod telemetry;
pub mod totp;
pub mod validate;

use sea_orm::DatabaseConnection;

pub use config::Config;
pub use error::{DomainError, DomainResult, FieldViolation};
pub use policy::{Caller, Principal};
pub use secrets::CprVault;

/// The domain services over one database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Domain {
    db: DatabaseConnection,
    vault: CprVault,
    /// SHA-256 of each configured operator token, with a stable id for history.
    configured_operators: Vec<(String, uuid::Uuid)>,
    settings: DomainSettings,
    auth_cache: std::sync::Arc<auth_cache::AuthCache>,
    /// The certificate authority; `None` when none is configured.
    ca: Option<std::sync::Arc<ca::CertificateAuthority>>,
    /// argon2id on the blocking pool (R-AUTH-2).
    hasher: std::sync::Arc<passwords::Hasher>,
    /// Sign-in attempts per login id and per peer on this replica.
    attempts: std::sync::Arc<rate_limit::AttemptLimiter>,
    /// The newest CRL this process signed, handed to the HTTP cache so a
    /// revocation made here is served at once (other replicas see it on
    /// their cache's next look at the database).
    crl_signed_here: std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<services::certificates::PublishedCrl>>>>,
    /// Places for sign-in steps that run to their end on their own
    /// ([`Domain::to_the_end`]): their callers may have left, so the
    /// service's in-flight bound no longer counts them.
    sign_ins: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Sign-in steps running to their end at once in one process; more are
/// refused (RESOURCE_EXHAUSTED, retry shortly). Logins are bounded before
/// that by the hashing queue (32 per core).
const SIGN_INS_IN_FLIGHT: u32 = 256;

/// Tunables of the domain rules, from configuration.
#[derive(Clone, Debug)]
pub struct DomainSettings {
    /// The activation link; `{token}` is replaced by the single-use token.
    pub activation_url_template: String,
    /// How long an activation link or code works (MitID Erhverv: 30 days).
    pub activation_ttl_ms: i64,
    /// Wrong CPR numbers or birth dates a link or code survives.
    pub activation_max_attempts: i32,
    /// How long an authenticated token is trusted without asking the
    /// database again (0: always ask). See `auth_cache`.
    pub auth_cache_ttl_ms: i64,
    /// How long a session token (from activation) works.
    pub session_ttl_ms: i64,
    /// A session unused this long ends (idle expiry).
    pub session_idle_ms: i64,
    /// The link of an e-mail verification mail; `{token}` is replaced.
    pub email_verification_url_template: String,
    /// How long an e-mail change asked by someone other than the person
    /// waits before its link works (R-USR-6): the person, told at the
    /// address in force, may withdraw it before the new address takes over
    /// their password resets.
    pub email_change_hold_ms: i64,
    pub join_confirmation_url_template: String,
    /// Limits and pacing of import jobs (R-BULK).
    pub imports: services::imports::ImportSettings,
    /// Validity, pickup and CRL timing of certificates (R-CERT).
    pub certificates: services::certificates::CertificateSettings,
    /// Password hashing and login lockout (R-AUTH-2).
    pub passwords: passwords::PasswordSettings,
    /// Behind a proxy, the request header naming the caller's address
    /// (history of logins); empty: the TCP peer.
    pub trusted_peer_header: String,
}

impl Default for DomainSettings {
    fn default() -> Self {
        Self {
            activation_url_template: "http://localhost:50080/activate?token={token}".into(),
            activation_ttl_ms: 30 * 24 * 60 * 60 * 1000,
            activation_max_attempts: 5,
            auth_cache_ttl_ms: 1000,
            session_ttl_ms: 12 * 60 * 60 * 1000,
            session_idle_ms: 60 * 60 * 1000,
            email_verification_url_template: "http://localhost:8080/verify-email?token={token}".into(),
            email_change_hold_ms: 72 * 60 * 60 * 1000,
            join_confirmation_url_template: "http://localhost:8080/join/confirm?token={token}".into(),
            imports: services::imports::ImportSettings::default(),
            certificates: services::certificates::CertificateSettings::default(),
            passwords: passwords::PasswordSettings::default(),
            trusted_peer_header: String::new(),
        }
    }
}

impl Domain {
    /// Runs `work` to its end even if the caller stops waiting (a gRPC
    /// deadline or a dropped call drops the handler's future at its next
    /// await). For work whose steps must not be cut apart: a sign-in try
    /// taken in one statement must be given back or recorded in a later
    /// one. The caller still gets the answer when it waits.
    ///
    /// Bounded: such steps outlive their callers, so the service's bound on
    /// calls in flight no longer holds them; past `SIGN_INS_IN_FLIGHT` a
    /// step is refused before it starts (RESOURCE_EXHAUSTED).
    pub(crate) async fn to_the_end<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = DomainResult<T>> + Send + 'static,
    ) -> DomainResult<T> {
        use tracing::Instrument;
        let place = self
            .sign_ins
            .clone()
            .try_acquire_owned()
            .map_err(|_| DomainError::RateLimited {
                message: "too many sign-ins are in progress; retry shortly".into(),
                retry_after_ms: 1000,
            })?;
        let work = async move {
            let done = work.await;
            drop(place);
            done
        };
        tokio::spawn(work.instrument(tracing::Span::current()))
            .await
            .map_err(|e| DomainError::Internal(format!("a sign-in step ended early: {e}")))?
    }

    pub fn new(db: DatabaseConnection, vault: CprVault, operator_tokens: &[String]) -> Self {
        let configured_operators = operator_tokens
            .iter()
            .map(|token| {
                let hash = secrets::token_hash(token);
                // A stable id derived from the hash, so history can name the token.
                let id = uuid::Uuid::from_slice(&hex::decode(&hash[..32]).unwrap_or_default()).unwrap_or_default();
                (hash, id)
            })
            .collect();
        Self {
            db,
            vault,
            configured_operators,
            settings: DomainSettings::default(),
            auth_cache: std::sync::Arc::new(auth_cache::AuthCache::new(DomainSettings::default().auth_cache_ttl_ms)),
            ca: None,
            hasher: std::sync::Arc::new(
                passwords::Hasher::new(&passwords::PasswordSettings::default())
                    .expect("the default argon2 parameters are valid"),
            ),
            attempts: Default::default(),
            crl_signed_here: Default::default(),
            sign_ins: std::sync::Arc::new(tokio::sync::Semaphore::new(SIGN_INS_IN_FLIGHT as usize)),
        }
    }

    /// Waits, at most `patience`, for the sign-in steps still running on
    /// their own: at shutdown, so that a try taken is recorded before the
    /// process ends. Returns whether all ended.
    pub async fn finish_sign_ins(&self, patience: std::time::Duration) -> bool {
        tokio::time::timeout(patience, self.sign_ins.acquire_many(SIGN_INS_IN_FLIGHT))
            .await
            .is_ok_and(|all| all.is_ok())
    }

    /// The certificate authority the certificate service issues with.
    pub fn with_ca(mut self, ca: Option<std::sync::Arc<ca::CertificateAuthority>>) -> Self {
        self.ca = ca;
        self
    }

    pub fn certificate_authority(&self) -> Option<&ca::CertificateAuthority> {
        self.ca.as_deref()
    }

    pub fn with_settings(mut self, settings: DomainSettings) -> Self {
        self.auth_cache = std::sync::Arc::new(auth_cache::AuthCache::new(settings.auth_cache_ttl_ms));
        if !self.hasher.hashes_like(&settings.passwords) {
            self.hasher = std::sync::Arc::new(passwords::Hasher::new(&settings.passwords).unwrap_or_else(|e| {
                // Config::validate refuses bad parameters; settings built in code
                // fall back to the defaults rather than take the process down.
                tracing::error!(error = %e, "argon2 parameters refused; using OWASP's");
                passwords::Hasher::new(&passwords::PasswordSettings::default())
                    .expect("the default argon2 parameters are valid")
            }));
        }
        self.settings = settings;
        self
    }

    /// How many password verifications have run in this process.
    pub fn password_verifications(&self) -> u64 {
        self.hasher.verifications()
    }

    pub fn settings(&self) -> &DomainSettings {
        &self.settings
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Whether the database answers a trivial query now: the question of
    /// the service's health probe.
    pub async fn ping_database(&self) -> DomainResult<()> {
        use sea_orm::ConnectionTrait;
        self.db.execute_unprepared("SELECT 1").await?;
        Ok(())
    }

    /// Connects, migrates when asked, and builds the domain from configuration.
    pub async fn from_config(config: &Config, run_migrations: bool) -> Result<Self, String> {
        let vault = config.cpr_vault()?;
        if config.is_embedded() {
            config::create_private_dir(&config.data_dir)?;
        }
        if let Some(file) = config.embedded_database_file() {
            config::protect_sqlite_files(&file)?;
        }
        let db = persistence::connect(&config.effective_database_url(), config.database_max_connections)
            .await
            .map_err(|e| format!("cannot connect to the database: {e}"))?;
        if run_migrations {
            persistence::migrate(&db)
                .await
                .map_err(|e| format!("migrations failed: {e}"))?;
        }
        let ca = ca::CertificateAuthority::from_config(
            &config.ca_source(),
            config.is_embedded().then_some(config.data_dir.as_path()),
        )?;
        if ca.is_none() {
            tracing::warn!(
                "no certificate authority configured (ORGADMIN_CA_KEY_FILE, ORGADMIN_CA_CERTIFICATE_FILE): certificate calls will be refused"
            );
        }
        Ok(Self::new(db, vault, &config.operator_token_list())
            .with_ca(ca.map(std::sync::Arc::new))
            .with_settings(DomainSettings {
                activation_url_template: config.activation_url_template.clone(),
                activation_ttl_ms: i64::from(config.activation_ttl_days) * 24 * 60 * 60 * 1000,
                activation_max_attempts: config.activation_max_attempts,
                auth_cache_ttl_ms: config.auth_cache_ms,
                session_ttl_ms: i64::from(config.session_ttl_hours) * 60 * 60 * 1000,
                session_idle_ms: config.session_idle_minutes * 60 * 1000,
                email_verification_url_template: config.email_verification_url_template.clone(),
                // At least a day shorter than a link lives, or the link dies
                // held (an ORGADMIN_ACTIVATION_TTL_DAYS of 3 or less).
                email_change_hold_ms: i64::from(config.email_change_hold_hours)
                    .min(24 * (i64::from(config.activation_ttl_days) - 1))
                    .max(0)
                    * 60
                    * 60
                    * 1000,
                join_confirmation_url_template: config.join_confirmation_url_template.clone(),
                imports: config.import_settings(),
                certificates: config.certificate_settings(),
                passwords: config.password_settings(),
                trusted_peer_header: config.trusted_peer_header.trim().to_ascii_lowercase(),
            }))
    }
}

/// Rules of this crate's source that a new entry point could quietly break.
#[cfg(test)]
mod source_rules {
    use std::path::Path;

    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
            }
        }
    }

    fn all_sources() -> Vec<(String, String)> {
        let mut out = Vec::new();
        sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
        out
    }

    /// A bare `begin()` is a deferred transaction on SQLite, which fails with
    /// "database is locked" beside another process's writer.
    #[test]
    fn writes_begin_through_begin_write() {
        for (path, text) in all_sources() {
            if path.ends_with("persistence/mod.rs") {
                continue;
            }
            // Spelt in two halves, so this line does not match itself.
            let bare_begin = concat!(".begin", "()");
            for (n, line) in text.lines().enumerate() {
                assert!(
                    !line.contains(bare_begin),
                    "{path}:{}: use persistence::begin_write, not begin()",
                    n + 1
                );
            }
        }
    }

    /// `#[instrument(err)]` logs every error at ERROR, client errors
    /// included; ERROR is for internal errors, which the service logs. And a
    /// span at the default level INFO is made on every call (a registry slot,
    /// enter and exit on every poll) although nothing at INFO shows it: the
    /// spans are DEBUG, seen with `RUST_LOG=orgadmin_domain=debug`.
    #[test]
    fn entry_points_log_their_errors_below_error() {
        for (path, text) in all_sources() {
            for (n, line) in text.lines().enumerate() {
                let attribute = line.trim_start().starts_with("#[instrument(");
                assert!(
                    !attribute || !line.contains("err") || line.contains("err(level = \"debug\")"),
                    "{path}:{}: write err(level = \"debug\")",
                    n + 1
                );
                assert!(
                    !attribute || line.contains("#[instrument(level = \"debug\""),
                    "{path}:{}: write #[instrument(level = \"debug\", ...)]",
                    n + 1
                );
            }
        }
    }
}

#[cfg(test)]
mod sign_ins {
    use super::*;

    /// Steps that run to their end outlive their callers, so their number
    /// has a bound of its own: the one past it is refused before it starts;
    /// shutdown waits for those running.
    #[tokio::test]
    async fn steps_run_to_their_end_within_a_bound() {
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        let domain = Domain::new(db, CprVault::new([1; 32], [2; 32]), &[]);
        let (open, gate) = tokio::sync::watch::channel(false);
        let mut running = Vec::new();
        for _ in 0..SIGN_INS_IN_FLIGHT {
            let (domain, mut gate) = (domain.clone(), gate.clone());
            running.push(tokio::spawn(async move {
                domain
                    .to_the_end(async move {
                        let _ = gate.wait_for(|open| *open).await;
                        Ok(())
                    })
                    .await
            }));
        }
        while domain.sign_ins.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = domain.to_the_end(async { Ok(()) }).await;
        assert!(matches!(refused, Err(DomainError::RateLimited { .. })), "{refused:?}");
        assert!(!domain.finish_sign_ins(std::time::Duration::from_millis(50)).await);
        // The callers leave; the steps still end, and shutdown sees them end.
        for caller in &running {
            caller.abort();
        }
        open.send(true).unwrap();
        assert!(domain.finish_sign_ins(std::time::Duration::from_secs(5)).await);
    }
}
