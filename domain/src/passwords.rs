//! Passwords (R-AUTH-2): the policy a new password must meet, and argon2id
//! hashing off the async threads.
//!
//! Policy after NIST SP 800-63B-4: a minimum length (15 characters where the
//! password is the only factor), at least 64 allowed (256 here), no
//! composition rules, and refused when it is, or contains, the person's login
//! id, or is on the bundled list of common passwords, or is a run of one
//! character or of a keyboard or alphabet sequence. Passwords are compared in
//! NFC, so the same password typed on two keyboards is the same password.
//!
//! Hashing is argon2id with OWASP's parameters by default (m = 19 MiB, t = 2,
//! p = 1), stored as PHC strings (the parameters travel with each hash, so a
//! change of parameters needs no migration: a hash made with others is
//! replaced at the next successful login). Each hash takes ~50 ms of one core
//! and 19 MiB: it runs on Tokio's blocking pool behind a semaphore of one
//! permit per core, so logins can saturate the CPU but never the async
//! threads that serve every other call, and memory stays bounded.

use std::sync::Arc;

use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, Version};
use unicode_normalization::UnicodeNormalization;

use crate::error::{DomainError, DomainResult};

/// The longest password accepted (NIST: at least 64 must be allowed).
pub const MAX_PASSWORD_CHARS: usize = 256;

/// A password as typed, NFC-normalised. Never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn new(typed: &str) -> Self {
        Self(typed.nfc().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Length in characters.
    pub fn chars(&self) -> usize {
        self.0.chars().count()
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Tunables of passwords and login lockout, from configuration.
#[derive(Clone, Debug)]
pub struct PasswordSettings {
    /// argon2id memory in KiB (OWASP: 19456).
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Minimum length where the password is the only factor.
    pub min_chars: usize,
    /// Minimum length where a second factor is required (NIST: 8).
    pub min_chars_with_second_factor: usize,
    /// How long a login's second step (its mailed code) lasts, and how many
    /// codes it takes.
    pub code_ttl_ms: i64,
    pub code_attempts: i32,
    /// Wrong passwords before the account locks.
    pub max_failures: i32,
    /// How long the first lock lasts; each further one in a row doubles it.
    pub lock_ms: i64,
    /// The longest a lock lasts.
    pub lock_max_ms: i64,
    /// After this many locks in a row the account stays locked until an
    /// administrator unlocks it. 0: never (the default: a permanent lock lets
    /// anyone lock out an account whose login id they know).
    pub permanent_lock_after: i32,
    /// How long a password reset link works.
    pub reset_ttl_ms: i64,
    /// The link of a reset mail; `{token}` is replaced by the token.
    pub reset_url_template: String,
    /// Sign-in attempts (Login, ActivateUser, RequestPasswordReset,
    /// ResetPassword) per minute per login id and per peer address on one
    /// replica; 0: no limit.
    pub attempts_per_login_id: u32,
    pub attempts_per_peer: u32,
    /// Hashing threads; 0: one per core the process may use. Each keeps
    /// `memory_kib` once it has hashed, so a pod's memory limit must allow
    /// threads × memory_kib: on a node with 64 cores and no CPU limit "one
    /// per core" was 1.2 GiB of argon2 memory.
    pub hash_threads: usize,
}

impl Default for PasswordSettings {
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
            min_chars: 15,
            min_chars_with_second_factor: 8,
            code_ttl_ms: 10 * 60 * 1000,
            code_attempts: 3,
            max_failures: 5,
            lock_ms: 60_000,
            lock_max_ms: 24 * 60 * 60 * 1000,
            permanent_lock_after: 0,
            reset_ttl_ms: 2 * 60 * 60 * 1000,
            reset_url_template: "http://localhost:50080/reset-password?token={token}".into(),
            // Off in code (tests sign in hundreds of times a minute from one
            // address); per login id on in configuration (`Config`: 10).
            attempts_per_login_id: 0,
            attempts_per_peer: 0,
            hash_threads: 0,
        }
    }
}

impl PasswordSettings {
    /// How long the lock after `earlier_locks` locks in a row lasts; `None`
    /// when it is permanent.
    pub fn lock_duration_ms(&self, earlier_locks: i32) -> Option<i64> {
        if self.permanent_lock_after > 0 && earlier_locks + 1 >= self.permanent_lock_after {
            return None;
        }
        let doubled = self.lock_ms.saturating_mul(1i64 << earlier_locks.clamp(0, 30));
        Some(doubled.min(self.lock_max_ms).max(self.lock_ms.min(self.lock_max_ms)))
    }
}

thread_local! {
    /// A hashing thread's argon2 memory (m_cost KiB), kept from one hash to
    /// the next: fresh zeroed memory per hash costs a page fault per 4 KiB,
    /// about a sixth of a verification (BENCHMARKS.md, issue 12).
    static MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Checks `password` against a PHC string as `verify_password` does, in
/// this thread's kept memory: the string's algorithm, version, parameters
/// and salt, the output compared without stopping at the first difference.
fn verify_in_place(password: &[u8], phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm.as_str()),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let Ok(version) = parsed.version.map_or(Ok(Version::default()), Version::try_from) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    let hashed = MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, argon2::Block::default());
        }
        argon2.hash_password_into_with_memory(password, salt.as_ref(), &mut out, &mut memory[..blocks])
    });
    hashed.is_ok() && crate::secrets::constant_time_eq(&out, expected.as_bytes())
}

type HashJob = Box<dyn FnOnce() + Send>;

/// The hashing threads `settings` ask for: 0 is one per core.
fn threads_for(settings: &PasswordSettings) -> usize {
    match settings.hash_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        asked => asked,
    }
}

/// Threads for argon2 (one per core unless `hash_threads` says), never the async threads (a hash is ~25 ms
/// of CPU). The threads run at a lower priority (nice 10): when the cores
/// are saturated with logins, the async threads and the database still get
/// the CPU first, so other calls do not queue behind hashing, while hashing
/// still takes every cycle nothing else wants. Jobs wait in one queue; the
/// threads end when the hasher is dropped.
struct HashPool {
    jobs: std::sync::mpsc::SyncSender<HashJob>,
    /// One per place in the queue (waiting or being hashed): taken before
    /// the job exists, given back when it ends.
    slots: Arc<tokio::sync::Semaphore>,
}

/// A place in the hashing queue, taken before anything is spent on a
/// password check: a login takes it before it takes one of the account's
/// tries, so a full queue refuses the login at once instead of after the
/// try is gone (a flood of other sign-ins must not use up, and lock, this
/// person's tries). A job holding a slot always fits in the queue.
pub struct HashSlot {
    /// Given back when the slot is dropped, after its job.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Jobs that may wait per hashing thread (a hash is ~20 ms of a core): more
/// are refused at once, so a flood of sign-ins cannot queue minutes of
/// argon2 in front of everyone else's.
const QUEUED_PER_THREAD: usize = 32;

impl HashPool {
    fn start(threads: usize, capacity: usize) -> Result<Self, String> {
        // As many places in the channel as slots: a job that holds a slot
        // is never refused by the channel.
        let (jobs, queue) = std::sync::mpsc::sync_channel::<HashJob>(capacity);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for index in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match next {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| format!("cannot start a password hashing thread: {e}"))?;
        }
        Ok(Self {
            jobs,
            slots: Arc::new(tokio::sync::Semaphore::new(capacity)),
        })
    }

    fn reserve(&self) -> DomainResult<HashSlot> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(|permit| HashSlot { _permit: permit })
            .map_err(|_| DomainError::RateLimited {
                message: "too many sign-ins are waiting for a password check; retry shortly".into(),
                retry_after_ms: 1000,
            })
    }

    fn submit(&self, slot: HashSlot, job: HashJob) -> DomainResult<()> {
        let job: HashJob = Box::new(move || {
            job();
            drop(slot);
        });
        self.jobs.try_send(job).map_err(|refused| match refused {
            std::sync::mpsc::TrySendError::Full(_) => {
                DomainError::Internal("the password hashing queue was full for a job holding a slot".into())
            }
            std::sync::mpsc::TrySendError::Disconnected(_) => {
                DomainError::Internal("the password hashing threads are gone".into())
            }
        })
    }
}

/// The hashing threads' priority on thread-priority's 0 (lowest) to 99
/// scale; for Linux's normal policy about nice 9 (of 19), so a thread with
/// the normal nice 0 weighs about seven times as much.
const HASHING_PRIORITY: u8 = 25;

/// A higher nice value for the calling thread (on Linux the nice value
/// belongs to each thread); where that is refused, the normal priority.
fn lower_this_threads_priority() {
    let lowered = thread_priority::ThreadPriorityValue::try_from(HASHING_PRIORITY)
        .map_err(|e| e.to_string())
        .and_then(|value| {
            thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Crossplatform(value))
                .map_err(|e| format!("{e:?}"))
        });
    if let Err(error) = lowered {
        tracing::debug!(%error, "password hashing threads keep the normal priority");
    }
}

/// Common passwords (lower case), one per line: the ones breach lists show
/// first, and their Danish and Swedish kin.
const COMMON: &str = include_str!("common_passwords.txt");

/// The rule a new password breaks; `Display` says it to an RPC's caller,
/// and the self-service pages say it in the person's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordRule {
    TooShort { min_chars: usize },
    TooLong { max_chars: usize },
    ContainsLoginId,
    Common,
    Predictable,
}

impl std::fmt::Display for PasswordRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooShort { min_chars } => write!(f, "must be at least {min_chars} characters long"),
            Self::TooLong { max_chars } => write!(f, "must be at most {max_chars} characters long"),
            Self::ContainsLoginId => f.write_str("must not contain your login id"),
            Self::Common => f.write_str("is too common: it is on the list of passwords that are tried first"),
            Self::Predictable => {
                f.write_str("is too predictable: it repeats a character, a short pattern or a keyboard or alphabet run")
            }
        }
    }
}

impl From<PasswordRule> for String {
    fn from(rule: PasswordRule) -> Self {
        rule.to_string()
    }
}

/// Why a new password is refused, said to the person choosing it.
pub fn check_new_password(password: &Password, login_ids: &[&str], min_chars: usize) -> Result<(), PasswordRule> {
    let chars = password.0.chars().count();
    if chars < min_chars {
        return Err(PasswordRule::TooShort { min_chars });
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PasswordRule::TooLong {
            max_chars: MAX_PASSWORD_CHARS,
        });
    }
    let lower = password.0.to_lowercase();
    for id in login_ids {
        let id = id.trim().to_lowercase();
        if id.chars().count() >= 4 && lower.contains(&id) {
            return Err(PasswordRule::ContainsLoginId);
        }
        // The e-mail address's local part is as guessable as the address.
        if let Some((local, _)) = id.split_once('@')
            && local.chars().count() >= 4
            && lower.contains(local)
        {
            return Err(PasswordRule::ContainsLoginId);
        }
    }
    if COMMON.lines().any(|common| common == lower) {
        return Err(PasswordRule::Common);
    }
    if is_predictable(&lower) {
        return Err(PasswordRule::Predictable);
    }
    Ok(())
}

/// A repetition of a short pattern ("aaaa…", "abcabc…") or a piece of a
/// keyboard row, the alphabet or the digits, forwards or backwards.
fn is_predictable(lower: &str) -> bool {
    let chars: Vec<char> = lower.chars().collect();
    let repeats_period =
        |period: usize| chars.len() >= 2 * period && (period..chars.len()).all(|i| chars[i] == chars[i - period]);
    if (1..=4).any(repeats_period) {
        return true;
    }
    const RUNS: [&str; 4] = [
        "abcdefghijklmnopqrstuvwxyzæøå",
        "01234567890123456789012345678901234567890",
        "qwertyuiopåasdfghjklæøzxcvbnm",
        "qwertyuiopasdfghjklzxcvbnm",
    ];
    RUNS.iter().any(|run| {
        let backwards: String = run.chars().rev().collect();
        run.contains(lower) || backwards.contains(lower)
    })
}

/// What checking a password found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub matches: bool,
    /// The stored hash was made with other parameters than configured now:
    /// store a new one (possible only now, while the password is at hand).
    pub needs_rehash: bool,
}

/// argon2id hashing on the blocking pool, one hash per core at a time.
pub struct Hasher {
    params: Params,
    pool: HashPool,
    threads: usize,
    /// Verifications run (argon2 over a stored or the dummy hash).
    verified: Arc<std::sync::atomic::AtomicU64>,
    /// A hash of a random password: checked when the login id is unknown or
    /// has no password, so that case costs the same time as a wrong
    /// password and timing reveals nothing.
    dummy_phc: String,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").field("params", &self.params).finish()
    }
}

impl Hasher {
    pub fn new(settings: &PasswordSettings) -> Result<Self, String> {
        let params = Params::new(settings.memory_kib, settings.iterations, settings.parallelism, None)
            .map_err(|e| format!("argon2 parameters (ORGADMIN_PASSWORD_*): {e}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let random = crate::secrets::new_token();
        let dummy_phc = argon2
            .hash_password(random.as_bytes())
            .map_err(|e| format!("argon2: {e}"))?
            .to_string();
        let threads = threads_for(settings);
        Ok(Self {
            params,
            pool: HashPool::start(threads, threads * QUEUED_PER_THREAD)?,
            threads,
            verified: Arc::default(),
            dummy_phc,
        })
    }

    /// How many verifications have run: an unknown login id must cost one
    /// as a known one does, which the answer's time floor would hide from
    /// a clock.
    pub fn verifications(&self) -> u64 {
        self.verified.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many threads hash (`PasswordSettings::hash_threads`).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether this hasher already uses the parameters of `settings`.
    pub fn hashes_like(&self, settings: &PasswordSettings) -> bool {
        self.params.m_cost() == settings.memory_kib
            && self.params.t_cost() == settings.iterations
            && self.params.p_cost() == settings.parallelism
            && self.threads == threads_for(settings)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// A place in the hashing queue; refused at once (RESOURCE_EXHAUSTED,
    /// retry later) when the queue is full.
    pub fn reserve(&self) -> DomainResult<HashSlot> {
        self.pool.reserve()
    }

    /// Runs `work` on one of the hashing threads once one is free.
    async fn on_a_core<T: Send + 'static>(
        &self,
        slot: HashSlot,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> DomainResult<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.pool.submit(
            slot,
            Box::new(move || {
                // A caller that gave up gets no hash: a burst of abandoned
                // hashes does not hold up the queue. (A login is not such a
                // caller: it runs to its end on its own, see `login`.)
                if !done.is_closed() {
                    let _ = done.send(work());
                }
            }),
        )?;
        result
            .await
            .map_err(|_| DomainError::Internal("a password hashing thread stopped".into()))
    }

    /// A PHC string for a new password.
    pub async fn hash(&self, password: &Password) -> DomainResult<String> {
        let argon2 = self.argon2();
        let password = password.clone();
        self.on_a_core(self.reserve()?, move || {
            argon2.hash_password(password.bytes()).map(|h| h.to_string())
        })
        .await?
        .map_err(|e| DomainError::Internal(format!("argon2: {e}")))
    }

    /// Checks `password` against `stored` (a PHC string); with `None` against
    /// the dummy hash, so the answer (no match) takes the same time.
    pub async fn check(&self, password: &Password, stored: Option<&str>) -> DomainResult<Checked> {
        self.check_in(self.reserve()?, password, stored).await
    }

    /// [`Hasher::check`] in a place of the queue taken earlier.
    pub async fn check_in(&self, slot: HashSlot, password: &Password, stored: Option<&str>) -> DomainResult<Checked> {
        let phc = stored.unwrap_or(&self.dummy_phc).to_owned();
        let known = stored.is_some();
        let wanted = self.params.clone();
        let password = password.clone();
        let verified = self.verified.clone();
        self.on_a_core(slot, move || {
            // Against the dummy hash the work is the same and the answer no.
            let matches = verify_in_place(password.bytes(), &phc) && known;
            verified.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let needs_rehash = matches
                && PasswordHash::new(&phc).is_ok_and(|parsed| {
                    let value = |name: &str| {
                        parsed
                            .params
                            .iter()
                            .find(|(key, _)| key.as_str() == name)
                            .and_then(|(_, v)| v.as_str().parse::<u32>().ok())
                    };
                    parsed.algorithm.as_str() != "argon2id"
                        || value("m") != Some(wanted.m_cost())
                        || value("t") != Some(wanted.t_cost())
                        || value("p") != Some(wanted.p_cost())
                });
            Checked { matches, needs_rehash }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of each thread of this process named `name`
    /// (/proc/self/task/*/stat, field 19).
    #[cfg(target_os = "linux")]
    fn nice_of_threads_named(name: &str) -> Vec<i64> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
            .filter(|stat| stat.contains(&format!("({name})")))
            .filter_map(|stat| {
                let after_name = &stat[stat.rfind(')')? + 2..];
                after_name.split(' ').nth(16)?.parse().ok()
            })
            .collect()
    }

    /// A full queue refuses at once (RATE_LIMITED) instead of growing: the
    /// places are slots, counted while a job waits and while it runs, and
    /// taken before the job exists; a slot comes back when its job ends.
    #[test]
    fn a_full_hashing_queue_refuses() {
        let pool = HashPool::start(1, 3).unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        pool.submit(
            pool.reserve().unwrap(),
            Box::new(move || {
                started.send(()).unwrap();
                let _ = wait.recv();
            }),
        )
        .unwrap();
        running.recv().unwrap();
        pool.submit(pool.reserve().unwrap(), Box::new(|| {})).unwrap();
        let held = pool.reserve().unwrap();
        assert!(matches!(pool.reserve(), Err(DomainError::RateLimited { .. })));
        pool.submit(held, Box::new(|| {})).unwrap();
        release.send(()).unwrap();
        let started = std::time::Instant::now();
        while pool.slots.available_permits() < 3 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "slots not given back"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// The kept-memory check answers as argon2's own `verify_password`, for
    /// right and wrong passwords, other parameters and a reused (dirty)
    /// memory, and refuses what is no argon2 PHC string.
    #[test]
    fn verification_in_kept_memory_agrees_with_argon2() {
        use argon2::password_hash::PasswordVerifier;
        let small = Params::new(8 * 1024, 1, 1, None).unwrap();
        let larger = Params::new(12 * 1024, 2, 2, None).unwrap();
        for (algorithm, params) in [
            (Algorithm::Argon2id, small.clone()),
            (Algorithm::Argon2id, larger),
            (Algorithm::Argon2i, small),
        ] {
            let argon2 = Argon2::new(algorithm, Version::V0x13, params);
            let phc = argon2.hash_password(b"right horse battery staple").unwrap().to_string();
            for password in [&b"right horse battery staple"[..], b"wrong horse battery staple", b""] {
                assert_eq!(
                    verify_in_place(password, &phc),
                    argon2.verify_password(password, phc.as_str()).is_ok(),
                    "{phc} with {password:?}"
                );
            }
        }
        assert!(!verify_in_place(b"x", "not a phc string"));
        assert!(!verify_in_place(b"x", "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2g"));
    }

    #[test]
    fn hashing_threads_are_as_many_as_asked_or_one_per_core() {
        let settings = |hash_threads| PasswordSettings {
            memory_kib: 8 * 1024,
            iterations: 1,
            hash_threads,
            ..PasswordSettings::default()
        };
        assert_eq!(Hasher::new(&settings(3)).unwrap().threads(), 3);
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(Hasher::new(&settings(0)).unwrap().threads(), cores);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_below_normal_priority() {
        let hasher = Hasher::new(&PasswordSettings {
            memory_kib: 8 * 1024,
            iterations: 1,
            ..PasswordSettings::default()
        })
        .unwrap();
        let phc = hasher.hash(&Password::new("a password long enough")).await.unwrap();
        assert!(
            hasher
                .check(&Password::new("a password long enough"), Some(&phc))
                .await
                .unwrap()
                .matches
        );
        let nice = nice_of_threads_named("argon2-0");
        assert!(!nice.is_empty(), "no hashing thread found");
        assert!(
            nice.iter().all(|n| (5..=15).contains(n)),
            "hashing threads at nice {nice:?}"
        );
    }

    fn check(password: &str, ids: &[&str]) -> Result<(), String> {
        check_new_password(&Password::new(password), ids, 15).map_err(String::from)
    }

    #[test]
    fn policy_refuses_short_common_predictable_and_login_ids() {
        assert!(check("correct horse battery", &["karen@firma.dk"]).is_ok());
        assert!(check("fjordhest-tårn-blå-9", &["karen@firma.dk"]).is_ok());
        assert_eq!(check("kort", &[]).unwrap_err(), "must be at least 15 characters long");
        assert!(check(&"x".repeat(257), &[]).unwrap_err().contains("at most 256"));
        assert!(
            check(&"lang og sikker ".repeat(18)[..256], &[]).is_ok(),
            "256 is allowed"
        );
        assert!(
            check("karen@firma.dk-2026!", &["karen@firma.dk"])
                .unwrap_err()
                .contains("login id")
        );
        assert!(
            check("hello karen.jensen 99", &["Karen.Jensen@firma.dk"])
                .unwrap_err()
                .contains("login id")
        );
        assert!(check("passwordpassword", &[]).unwrap_err().contains("too common"));
        assert!(check("PasswordPassword", &[]).unwrap_err().contains("too common"));
        assert!(check("aaaaaaaaaaaaaaaa", &[]).unwrap_err().contains("predictable"));
        assert!(check("abcabcabcabcabcabc", &[]).unwrap_err().contains("predictable"));
        assert!(check("1234567890123456", &[]).unwrap_err().contains("predictable"));
        assert!(check("qwertyuiopasdfgh", &[]).unwrap_err().contains("predictable"));
        assert!(check("zyxwvutsrqponmlk", &[]).unwrap_err().contains("predictable"));
    }

    #[test]
    fn nfc_and_nfd_are_one_password() {
        let nfc = Password::new("s\u{e6}lg\u{e5}rd p\u{e5} \u{f8}en 2026");
        let nfd = Password::new("s\u{e6}lga\u{30a}rd pa\u{30a} \u{f8}en 2026");
        assert_eq!(nfc.bytes(), nfd.bytes());
        assert_eq!(format!("{nfc:?}"), "Password(..)");
    }

    #[test]
    fn locks_double_up_to_the_cap_and_permanent_is_a_setting() {
        let mut settings = PasswordSettings::default();
        assert_eq!(settings.lock_duration_ms(0), Some(60_000));
        assert_eq!(settings.lock_duration_ms(1), Some(120_000));
        assert_eq!(settings.lock_duration_ms(40), Some(24 * 60 * 60 * 1000));
        settings.permanent_lock_after = 3;
        assert_eq!(settings.lock_duration_ms(1), Some(120_000));
        assert_eq!(settings.lock_duration_ms(2), None);
    }

    #[tokio::test]
    async fn hashes_check_and_flag_old_parameters() {
        let cheap = PasswordSettings {
            memory_kib: 64,
            iterations: 1,
            ..PasswordSettings::default()
        };
        let hasher = Hasher::new(&cheap).unwrap();
        let password = Password::new("lang nok til at være god");
        let phc = hasher.hash(&password).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        let right = hasher.check(&password, Some(&phc)).await.unwrap();
        assert_eq!(
            right,
            Checked {
                matches: true,
                needs_rehash: false
            }
        );
        let wrong = hasher.check(&Password::new("forkert"), Some(&phc)).await.unwrap();
        assert!(!wrong.matches);
        assert!(!hasher.check(&password, None).await.unwrap().matches);
        let stronger = Hasher::new(&PasswordSettings {
            memory_kib: 128,
            ..cheap
        })
        .unwrap();
        let upgraded = stronger.check(&password, Some(&phc)).await.unwrap();
        assert_eq!(
            upgraded,
            Checked {
                matches: true,
                needs_rehash: true
            }
        );
    }
}
