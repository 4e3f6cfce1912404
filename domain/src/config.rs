//! Configuration: embedded defaults, then an optional TOML file
//! (`ORGADMIN_CONFIG`), then the environment (`DATABASE_URL`, `SMTP_URL`,
//! `ORGADMIN_*`). Checked once at start; a bad value stops the process with a
//! message that names it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::secrets::{self, CprVault};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `sqlite://...` or `postgres://...`; empty: a SQLite file in `data_dir`.
    pub database_url: String,
    /// Where the embedded default keeps its database, generated secrets and mail.
    pub data_dir: PathBuf,
    /// The gRPC listen address.
    pub listen: String,
    /// Where `orgadmin-worker` answers `grpc.health.v1` (its Deployment's
    /// probes); `0.0.0.0:50052` in a pod, port 0 for any free port.
    pub worker_health_listen: String,
    /// Pool size on PostgreSQL.
    pub database_max_connections: u32,
    /// Calls the orgadmin services work on at once, over all connections;
    /// more are refused at once with RESOURCE_EXHAUSTED (health checks and
    /// reflection are not counted).
    pub max_in_flight: usize,
    /// gRPC connections open at once; more wait to be accepted until one
    /// closes. A connection that sends nothing for 10 s after connecting is
    /// closed.
    pub max_grpc_connections: usize,
    /// Seconds a gRPC connection may stay open with no call on it before
    /// it is closed (a client reconnects for its next call): a client that
    /// keeps connections open without calls would otherwise hold their
    /// places for ever.
    pub grpc_idle_timeout_seconds: u64,
    /// After SIGTERM, seconds the service goes on serving with its health
    /// NOT_SERVING before it stops accepting and drains, so that endpoints
    /// stop sending it new connections first (Kubernetes: a few seconds;
    /// keep terminationGracePeriodSeconds above this plus the drain).
    pub shutdown_delay_seconds: u64,
    /// argon2id memory (KiB), iterations and lanes of new password hashes.
    pub password_memory_kib: u32,
    pub password_iterations: u32,
    pub password_parallelism: u32,
    /// Password hashing threads; 0: one per core the process may use. Each
    /// keeps ORGADMIN_PASSWORD_MEMORY_KIB once it has hashed: set it where
    /// the process sees more cores than its memory limit allows for (a pod
    /// without a CPU limit sees every core of its node).
    pub password_hash_threads: usize,
    /// Shortest password accepted where it is the only factor (NIST: 15).
    pub password_min_chars: usize,
    /// Shortest password where a second factor is required (NIST: 8).
    pub password_min_chars_with_second_factor: usize,
    /// How long a login's mailed code works, and how many codes one login
    /// may try.
    pub login_code_ttl_minutes: i64,
    pub login_code_attempts: i32,
    /// A session ends after this many minutes unused (and at the latest
    /// after ORGADMIN_SESSION_TTL_HOURS).
    pub session_idle_minutes: i64,
    /// Wrong passwords before an account locks; the lock starts at
    /// ORGADMIN_LOGIN_LOCK_SECONDS and doubles with each lock in a row, up to
    /// ORGADMIN_LOGIN_LOCK_MAX_SECONDS.
    pub login_max_failures: i32,
    pub login_lock_seconds: i64,
    pub login_lock_max_seconds: i64,
    /// Locks in a row after which only an administrator unlocks; 0: never.
    pub login_permanent_lock_after: i32,
    /// How long a password reset link works, and where it leads (`{token}`
    /// is replaced).
    pub password_reset_ttl_minutes: i64,
    pub password_reset_url_template: String,
    /// Sign-in attempts per minute per login id and per peer address on one
    /// replica (Login, ActivateUser, RequestPasswordReset, ResetPassword);
    /// 0: no limit.
    pub login_attempts_per_id_per_minute: u32,
    pub login_attempts_per_peer_per_minute: u32,
    /// Behind a proxy: the header whose last entry is the caller's address
    /// (e.g. `x-forwarded-for`). Empty: the TCP peer.
    pub trusted_peer_header: String,
    /// Comma-separated operator bearer tokens. Empty on the embedded default:
    /// one is generated at first start.
    pub operator_tokens: String,
    /// 64 hex digits each; generated on the embedded default.
    pub cpr_lookup_key: String,
    pub cpr_encryption_key: String,
    /// `text` or `json`.
    pub log_format: String,
    /// Six-field cron (seconds first, UTC) of the timed-reactivation sweep.
    pub reactivation_schedule: String,
    /// Users reactivated per statement by the sweep.
    pub reactivation_batch_size: u64,
    /// SMTP server for mail (`smtp://host:port`, `smtps://user:pass@host`);
    /// empty: `.eml` files in `data_dir/outbox`.
    pub smtp_url: String,
    /// The From header of every mail.
    pub mail_from: String,
    /// Pooled SMTP connections per worker.
    pub mail_pool_size: u32,
    /// Attempts before a mail that keeps failing for a reason that may pass
    /// (no connection, a 4xx) may be parked as failed; it is parked only
    /// once it is also `mail_retry_hours` old.
    pub mail_max_attempts: i32,
    /// How long a mail that keeps failing for a reason that may pass is
    /// tried (back-off capped at an hour) before it is parked: a relay
    /// outage or greylisting of a few hours parks nothing.
    pub mail_retry_hours: i64,
    /// First retry delay; doubles with each attempt (with jitter).
    pub mail_retry_base_ms: i64,
    /// How often the worker looks for due mail.
    pub mail_poll_interval_ms: u64,
    /// How long a worker's claim on a mail lasts; a crashed worker's mails
    /// go to another worker after this.
    pub mail_lease_ms: i64,
    /// The activation link; `{token}` is replaced by the token.
    pub activation_url_template: String,
    pub activation_ttl_days: u32,
    pub activation_max_attempts: i32,
    /// How long this replica trusts an authenticated token without asking the
    /// database (revocations reach other replicas within this); 0: off.
    pub auth_cache_ms: i64,
    /// How long the session token that activation hands out works.
    pub session_ttl_hours: u32,
    /// How long an e-mail change asked by someone other than the person
    /// waits before its link works (the person, told at the address in
    /// force, may withdraw it meanwhile); 0: no wait.
    pub email_change_hold_hours: u32,
    /// The link in e-mail verification mails; `{token}` is replaced.
    pub email_verification_url_template: String,
    /// The link in the mail that confirms a request to join; `{token}` is
    /// replaced.
    pub join_confirmation_url_template: String,
    /// Largest import file accepted, in bytes.
    pub import_max_file_bytes: i64,
    /// Most data rows in one import file.
    pub import_max_rows: i64,
    /// Imports one organisation may have queued or running at once.
    pub import_max_open_per_organisation: u64,
    /// Rows of an edit or delete import per transaction and checkpoint.
    pub import_batch_size: usize,
    /// Rows of a create or legacy import per transaction and checkpoint.
    pub import_create_batch_size: usize,
    /// How long a worker's claim on an import lasts between checkpoints; a
    /// job whose worker died is taken over after this.
    pub import_lease_ms: i64,
    /// How long a finished import's file is kept (its report stays).
    pub import_file_retention_hours: u32,
    /// How often the worker looks for queued imports.
    pub import_poll_interval_ms: u64,
    /// PEM files of the CA's issuing key and certificate, and of the chain
    /// above it (intermediate under an offline root); as a Kubernetes Secret
    /// mounts them. Empty on the embedded default: a CA is generated once
    /// into `data_dir/ca`.
    pub ca_key_file: String,
    pub ca_certificate_file: String,
    pub ca_chain_file: String,
    /// The CRL distribution point written into every certificate.
    pub ca_crl_url: String,
    /// The OCSP responder written into every certificate.
    pub ca_ocsp_url: String,
    /// Where relying parties fetch the CRL (`GET /crl`) over plain HTTP;
    /// empty: not served.
    pub certificate_http_listen: String,
    /// Validity of new certificates per kind, in days; unset, three
    /// calendar years (to the same date three years on).
    pub certificate_employee_validity_days: Option<u32>,
    pub certificate_organisation_validity_days: Option<u32>,
    pub certificate_system_validity_days: Option<u32>,
    /// How long a certificate pickup token works, in days.
    pub certificate_pickup_ttl_days: u32,
    /// The pickup link in the mail; `{token}` is replaced.
    pub certificate_pickup_url_template: String,
    /// Hours from a CRL's thisUpdate to its nextUpdate.
    pub crl_validity_hours: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            data_dir: PathBuf::from("./data"),
            listen: "127.0.0.1:50051".into(),
            worker_health_listen: "127.0.0.1:50052".into(),
            database_max_connections: 20,
            max_in_flight: 256,
            max_grpc_connections: 1024,
            grpc_idle_timeout_seconds: 300,
            shutdown_delay_seconds: 0,
            password_memory_kib: 19 * 1024,
            password_iterations: 2,
            password_parallelism: 1,
            password_hash_threads: 0,
            password_min_chars: 15,
            password_min_chars_with_second_factor: 8,
            login_code_ttl_minutes: 10,
            login_code_attempts: 3,
            session_idle_minutes: 60,
            login_max_failures: 5,
            login_lock_seconds: 60,
            login_lock_max_seconds: 24 * 60 * 60,
            login_permanent_lock_after: 0,
            password_reset_ttl_minutes: 120,
            password_reset_url_template: "http://localhost:50080/reset-password?token={token}".into(),
            login_attempts_per_id_per_minute: 10,
            // Off by default: behind an ingress or a back end that signs
            // people in, every call has the same peer address, and one
            // limit would hold back the whole organisation. Turn it on where
            // callers connect directly or ORGADMIN_TRUSTED_PEER_HEADER names
            // the proxy's header.
            login_attempts_per_peer_per_minute: 0,
            trusted_peer_header: String::new(),
            operator_tokens: String::new(),
            cpr_lookup_key: String::new(),
            cpr_encryption_key: String::new(),
            log_format: "text".into(),
            reactivation_schedule: "*/5 * * * * *".into(),
            reactivation_batch_size: 1000,
            smtp_url: String::new(),
            mail_from: "orgadmin <noreply@orgadmin.localhost>".into(),
            mail_pool_size: 4,
            mail_max_attempts: 8,
            mail_retry_hours: 48,
            mail_retry_base_ms: 2000,
            mail_poll_interval_ms: 500,
            mail_lease_ms: 60_000,
            activation_url_template: "http://localhost:50080/activate?token={token}".into(),
            activation_ttl_days: 30,
            activation_max_attempts: 5,
            auth_cache_ms: 1000,
            session_ttl_hours: 12,
            email_change_hold_hours: 72,
            email_verification_url_template: "http://localhost:8080/verify-email?token={token}".into(),
            join_confirmation_url_template: "http://localhost:8080/join/confirm?token={token}".into(),
            import_max_file_bytes: 512 * 1024 * 1024,
            import_max_rows: 1_000_000,
            import_max_open_per_organisation: 5,
            import_batch_size: 25,
            import_create_batch_size: 1000,
            import_lease_ms: 60_000,
            import_file_retention_hours: 7 * 24,
            import_poll_interval_ms: 1000,
            ca_key_file: String::new(),
            ca_certificate_file: String::new(),
            ca_chain_file: String::new(),
            ca_crl_url: "http://127.0.0.1:50080/crl".into(),
            ca_ocsp_url: "http://127.0.0.1:50080/ocsp".into(),
            certificate_http_listen: "127.0.0.1:50080".into(),
            certificate_employee_validity_days: None,
            certificate_organisation_validity_days: None,
            certificate_system_validity_days: None,
            certificate_pickup_ttl_days: 14,
            certificate_pickup_url_template: "http://localhost:8080/certificates/pickup?token={token}".into(),
            crl_validity_hours: 24,
        }
    }
}

impl Config {
    /// Reads defaults, the optional file and the environment.
    pub fn load() -> Result<Self, String> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Ok(path) = std::env::var("ORGADMIN_CONFIG") {
            if !Path::new(&path).exists() {
                return Err(format!("ORGADMIN_CONFIG points at {path}, which does not exist"));
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: Config = figment
            .merge(Env::prefixed("ORGADMIN_").ignore(&["CONFIG"]))
            .merge(Env::raw().only(&["DATABASE_URL", "SMTP_URL"]))
            .extract()
            .map_err(|e| format!("configuration: {e}"))?;
        config.check()?;
        Ok(config)
    }

    /// The rules a configuration must meet before anything starts.
    pub fn check(&self) -> Result<(), String> {
        self.listen.parse::<SocketAddr>().map_err(|_| {
            format!(
                "ORGADMIN_LISTEN={:?} is not a socket address such as 127.0.0.1:50051",
                self.listen
            )
        })?;
        self.worker_health_listen.parse::<SocketAddr>().map_err(|_| {
            format!(
                "ORGADMIN_WORKER_HEALTH_LISTEN={:?} is not a socket address such as 127.0.0.1:50052",
                self.worker_health_listen
            )
        })?;
        let url = self.effective_database_url();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("DATABASE_URL must start with sqlite:, postgres:// or postgresql://".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(format!(
                "ORGADMIN_LOG_FORMAT={:?} must be text or json",
                self.log_format
            ));
        }
        if !self.activation_url_template.contains("{token}") {
            return Err("ORGADMIN_ACTIVATION_URL_TEMPLATE must contain {token}".into());
        }
        if !self.email_verification_url_template.contains("{token}") {
            return Err("ORGADMIN_EMAIL_VERIFICATION_URL_TEMPLATE must contain {token}".into());
        }
        if !self.join_confirmation_url_template.contains("{token}") {
            return Err("ORGADMIN_JOIN_CONFIRMATION_URL_TEMPLATE must contain {token}".into());
        }
        if !self.certificate_pickup_url_template.contains("{token}") {
            return Err("ORGADMIN_CERTIFICATE_PICKUP_URL_TEMPLATE must contain {token}".into());
        }
        let validity = [
            self.certificate_employee_validity_days,
            self.certificate_organisation_validity_days,
            self.certificate_system_validity_days,
        ];
        if validity.iter().flatten().any(|days| !(1..=3650).contains(days))
            || !(1..=365).contains(&self.certificate_pickup_ttl_days)
            || !(1..=24 * 31).contains(&self.crl_validity_hours)
        {
            return Err("ORGADMIN_CERTIFICATE_*_VALIDITY_DAYS must be between 1 and 3650, ORGADMIN_CERTIFICATE_PICKUP_TTL_DAYS between 1 and 365, ORGADMIN_CRL_VALIDITY_HOURS between 1 and 744".into());
        }
        if !self.certificate_http_listen.is_empty() && self.certificate_http_listen.parse::<SocketAddr>().is_err() {
            return Err(format!(
                "ORGADMIN_CERTIFICATE_HTTP_LISTEN={:?} is not a socket address such as 127.0.0.1:50080 (or empty: not served)",
                self.certificate_http_listen
            ));
        }
        if !(1..=365).contains(&self.activation_ttl_days) {
            return Err("ORGADMIN_ACTIVATION_TTL_DAYS must be between 1 and 365".into());
        }
        if self.mail_pool_size == 0
            || self.mail_max_attempts < 1
            || self.mail_retry_base_ms < 1
            || self.mail_retry_hours < 0
            || self.mail_poll_interval_ms < 10
            || self.mail_lease_ms < 100
        {
            return Err("ORGADMIN_MAIL_POOL_SIZE, ORGADMIN_MAIL_MAX_ATTEMPTS and ORGADMIN_MAIL_RETRY_BASE_MS must be at least 1, ORGADMIN_MAIL_RETRY_HOURS at least 0, ORGADMIN_MAIL_POLL_INTERVAL_MS at least 10, ORGADMIN_MAIL_LEASE_MS at least 100".into());
        }
        if !self.mail_from.contains('@') {
            return Err(format!(
                "ORGADMIN_MAIL_FROM={:?} must be an address such as \"orgadmin <noreply@example.dk>\"",
                self.mail_from
            ));
        }
        let smtp_scheme_ok = self.smtp_url.starts_with("smtp://") || self.smtp_url.starts_with("smtps://");
        if !self.smtp_url.is_empty() && !smtp_scheme_ok {
            return Err("SMTP_URL must start with smtp:// or smtps://".into());
        }
        if !(0..=60_000).contains(&self.auth_cache_ms) {
            return Err("ORGADMIN_AUTH_CACHE_MS must be between 0 (off) and 60000".into());
        }
        if !(1..=24 * 30).contains(&self.session_ttl_hours) {
            return Err("ORGADMIN_SESSION_TTL_HOURS must be between 1 and 720".into());
        }
        // The batch's ids are bound values of its statements (SQLite takes
        // 32,766 in one).
        if !(1..=10_000).contains(&self.reactivation_batch_size) {
            return Err("ORGADMIN_REACTIVATION_BATCH_SIZE must be between 1 and 10000".into());
        }
        if self.import_max_file_bytes < 1024
            || self.import_max_rows < 1
            || self.import_max_open_per_organisation < 1
            || !(1..=10_000).contains(&self.import_batch_size)
            || !(1..=10_000).contains(&self.import_create_batch_size)
            || self.import_lease_ms < 1000
            || self.import_poll_interval_ms < 10
        {
            return Err("ORGADMIN_IMPORT_MAX_FILE_BYTES must be at least 1024, ORGADMIN_IMPORT_MAX_ROWS and ORGADMIN_IMPORT_MAX_OPEN_PER_ORGANISATION at least 1, ORGADMIN_IMPORT_BATCH_SIZE and ORGADMIN_IMPORT_CREATE_BATCH_SIZE between 1 and 10000, ORGADMIN_IMPORT_LEASE_MS at least 1000, ORGADMIN_IMPORT_POLL_INTERVAL_MS at least 10".into());
        }
        if argon2::Params::new(
            self.password_memory_kib,
            self.password_iterations,
            self.password_parallelism,
            None,
        )
        .is_err()
            || self.password_memory_kib < 8 * 1024
            || self.password_hash_threads > 1024
        {
            return Err("ORGADMIN_PASSWORD_MEMORY_KIB (at least 8192), ORGADMIN_PASSWORD_ITERATIONS and ORGADMIN_PASSWORD_PARALLELISM (at least 1) must be valid argon2id parameters, and ORGADMIN_PASSWORD_HASH_THREADS at most 1024".into());
        }
        if !(5..=7 * 24 * 60).contains(&self.password_reset_ttl_minutes)
            || !self.password_reset_url_template.contains("{token}")
        {
            return Err("ORGADMIN_PASSWORD_RESET_TTL_MINUTES must be between 5 and 10080, and ORGADMIN_PASSWORD_RESET_URL_TEMPLATE must contain {token}".into());
        }
        if !(8..=64).contains(&self.password_min_chars)
            || !(8..=self.password_min_chars).contains(&self.password_min_chars_with_second_factor)
        {
            return Err("ORGADMIN_PASSWORD_MIN_CHARS must be between 8 and 64, and ORGADMIN_PASSWORD_MIN_CHARS_WITH_SECOND_FACTOR between 8 and ORGADMIN_PASSWORD_MIN_CHARS".into());
        }
        if !(1..=60).contains(&self.login_code_ttl_minutes) || !(1..=10).contains(&self.login_code_attempts) {
            return Err("ORGADMIN_LOGIN_CODE_TTL_MINUTES must be between 1 and 60, ORGADMIN_LOGIN_CODE_ATTEMPTS between 1 and 10".into());
        }
        if !(1..=7 * 24 * 60).contains(&self.session_idle_minutes) {
            return Err("ORGADMIN_SESSION_IDLE_MINUTES must be between 1 and 10080".into());
        }
        if !(1..=100).contains(&self.login_max_failures)
            || self.login_lock_seconds < 1
            || self.login_lock_max_seconds < self.login_lock_seconds
            || self.login_permanent_lock_after < 0
        {
            return Err("ORGADMIN_LOGIN_MAX_FAILURES must be between 1 and 100, ORGADMIN_LOGIN_LOCK_SECONDS at least 1 and at most ORGADMIN_LOGIN_LOCK_MAX_SECONDS, ORGADMIN_LOGIN_PERMANENT_LOCK_AFTER 0 (off) or more".into());
        }
        if !(1..=100_000).contains(&self.max_in_flight) {
            return Err("ORGADMIN_MAX_IN_FLIGHT must be between 1 and 100000".into());
        }
        if !(1..=86_400).contains(&self.grpc_idle_timeout_seconds) {
            return Err("ORGADMIN_GRPC_IDLE_TIMEOUT_SECONDS must be between 1 and 86400".into());
        }
        if !(1..=100_000).contains(&self.max_grpc_connections) {
            return Err("ORGADMIN_MAX_GRPC_CONNECTIONS must be between 1 and 100000".into());
        }
        if self.shutdown_delay_seconds > 300 {
            return Err("ORGADMIN_SHUTDOWN_DELAY_SECONDS must be at most 300".into());
        }
        for (name, value) in [
            ("ORGADMIN_CPR_LOOKUP_KEY", &self.cpr_lookup_key),
            ("ORGADMIN_CPR_ENCRYPTION_KEY", &self.cpr_encryption_key),
        ] {
            if !value.is_empty() {
                secrets::parse_key(name, value)?;
            }
        }
        if !self.is_embedded() && (self.cpr_lookup_key.is_empty() || self.cpr_encryption_key.is_empty()) {
            return Err("ORGADMIN_CPR_LOOKUP_KEY and ORGADMIN_CPR_ENCRYPTION_KEY must be set (64 hex digits each) when DATABASE_URL is not the embedded SQLite default".into());
        }
        Ok(())
    }

    pub fn import_settings(&self) -> crate::services::imports::ImportSettings {
        crate::services::imports::ImportSettings {
            max_file_bytes: self.import_max_file_bytes,
            max_rows: self.import_max_rows,
            max_open_per_organisation: self.import_max_open_per_organisation,
            batch_size: self.import_batch_size,
            create_batch_size: self.import_create_batch_size,
            lease_ms: self.import_lease_ms,
            file_retention_ms: i64::from(self.import_file_retention_hours) * 60 * 60 * 1000,
            ..crate::services::imports::ImportSettings::default()
        }
    }

    pub fn ca_source(&self) -> crate::ca::CaSource {
        crate::ca::CaSource {
            key_file: self.ca_key_file.clone(),
            certificate_file: self.ca_certificate_file.clone(),
            chain_file: self.ca_chain_file.clone(),
            crl_url: self.ca_crl_url.clone(),
            ocsp_url: self.ca_ocsp_url.clone(),
        }
    }

    pub fn password_settings(&self) -> crate::passwords::PasswordSettings {
        crate::passwords::PasswordSettings {
            memory_kib: self.password_memory_kib,
            iterations: self.password_iterations,
            parallelism: self.password_parallelism,
            min_chars: self.password_min_chars,
            min_chars_with_second_factor: self.password_min_chars_with_second_factor,
            code_ttl_ms: self.login_code_ttl_minutes * 60 * 1000,
            code_attempts: self.login_code_attempts,
            max_failures: self.login_max_failures,
            lock_ms: self.login_lock_seconds * 1000,
            lock_max_ms: self.login_lock_max_seconds * 1000,
            permanent_lock_after: self.login_permanent_lock_after,
            reset_ttl_ms: self.password_reset_ttl_minutes * 60 * 1000,
            reset_url_template: self.password_reset_url_template.clone(),
            attempts_per_login_id: self.login_attempts_per_id_per_minute,
            attempts_per_peer: self.login_attempts_per_peer_per_minute,
            hash_threads: self.password_hash_threads,
        }
    }

    pub fn certificate_settings(&self) -> crate::services::certificates::CertificateSettings {
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        crate::services::certificates::CertificateSettings {
            employee_validity: validity_of(self.certificate_employee_validity_days),
            organisation_validity: validity_of(self.certificate_organisation_validity_days),
            system_validity: validity_of(self.certificate_system_validity_days),
            pickup_ttl_ms: i64::from(self.certificate_pickup_ttl_days) * DAY_MS,
            pickup_url_template: self.certificate_pickup_url_template.clone(),
            crl_validity_ms: i64::from(self.crl_validity_hours) * 60 * 60 * 1000,
        }
    }

    /// True when running on the embedded default: a SQLite file, keys generated.
    pub fn is_embedded(&self) -> bool {
        self.effective_database_url().starts_with("sqlite:")
    }

    /// The SQLite database file of the embedded default (`None` when
    /// DATABASE_URL names a database of its own).
    pub fn embedded_database_file(&self) -> Option<PathBuf> {
        self.database_url.is_empty().then(|| self.data_dir.join("orgadmin.db"))
    }

    pub fn effective_database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}/orgadmin.db?mode=rwc", self.data_dir.display())
        } else {
            self.database_url.clone()
        }
    }

    pub fn operator_token_list(&self) -> Vec<String> {
        self.operator_tokens
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The CPR keys: from configuration, or on the embedded default from
    /// `data_dir/cpr-keys` (created at first start, readable by the owner only).
    pub fn cpr_vault(&self) -> Result<CprVault, String> {
        if !self.cpr_lookup_key.is_empty() && !self.cpr_encryption_key.is_empty() {
            return Ok(CprVault::new(
                secrets::parse_key("ORGADMIN_CPR_LOOKUP_KEY", &self.cpr_lookup_key)?,
                secrets::parse_key("ORGADMIN_CPR_ENCRYPTION_KEY", &self.cpr_encryption_key)?,
            ));
        }
        let path = self.data_dir.join("cpr-keys");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(_) => {
                let text = format!(
                    "{}\n{}\n",
                    hex::encode(secrets::random_key()),
                    hex::encode(secrets::random_key())
                );
                write_private_file(&path, &text)?;
                text
            }
        };
        let mut lines = text.lines();
        let lookup = secrets::parse_key("cpr-keys line 1", lines.next().unwrap_or_default())?;
        let encryption = secrets::parse_key("cpr-keys line 2", lines.next().unwrap_or_default())?;
        Ok(CprVault::new(lookup, encryption))
    }
}

/// Creates a folder (and its parents) that only its owner can enter (mode
/// 0700 on Unix), and tightens it if it exists: the embedded default keeps
/// the database, the CPR keys, the operator token and mails with link tokens
/// in these folders.
pub fn create_private_dir(path: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    restrict(path, 0o700)
}

/// Makes the embedded default's SQLite files readable by the owner only. The
/// database file is created here (0600) before SQLite opens it: SQLite gives
/// its -wal and -shm files the database file's mode.
pub fn protect_sqlite_files(database: &Path) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(database)
        .map_err(|e| format!("cannot create {}: {e}", database.display()))?;
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", database.display()));
        if path.exists() {
            restrict(&path, 0o600)?;
        }
    }
    Ok(())
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot restrict {}: {e}", path.display()))
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> Result<(), String> {
    Ok(())
}

/// Writes a file only its owner can read (mode 0600 on Unix).
pub fn write_private_file(path: &Path, contents: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        create_private_dir(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A configured validity in days, or R-CERT-4's three calendar years.
fn validity_of(days: Option<u32>) -> crate::services::certificates::Validity {
    use crate::services::certificates::Validity;
    days.map_or(Validity::Years(3), Validity::Days)
}
