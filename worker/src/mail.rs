//! Delivery of outbox mail: one transport built at start (a pooled SMTP
//! connection set, or `.eml` files on the embedded default), and the loop that
//! claims due mails, sends them with bounded concurrency and marks them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use orgadmin_domain::email::Email;
use orgadmin_domain::model::now_millis;
use orgadmin_domain::services::outbox::{ClaimedMail, Failure, MailClaim, MailRetry};
use orgadmin_domain::telemetry;
use orgadmin_domain::{Config, Domain};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::smtp::SmtpPool;

pub enum Transport {
    /// `smtp://` and `smtps://`: pooled connections whose every wait is
    /// bounded (see `smtp`). Not lettre's pooled transport: a send dropped
    /// at a deadline would go back to its pool mid-conversation.
    Smtp(SmtpPool),
    /// The embedded default: each mail becomes `<dir>/<mail id>.eml`.
    Files(PathBuf),
}

impl Transport {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        if config.smtp_url.is_empty() {
            // Mails hold activation link tokens: the owner's eyes only.
            let dir = config.data_dir.join("outbox");
            orgadmin_domain::config::create_private_dir(&dir).map_err(anyhow::Error::msg)?;
            return Ok(Self::Files(dir));
        }
        Ok(Self::Smtp(SmtpPool::from_url(
            &config.smtp_url,
            Duration::from_secs(20),
        )?))
    }

    /// How long one send may fairly take: SMTP's own time limit per step;
    /// a file is written at once.
    fn fair_try_ms(&self) -> i64 {
        match self {
            Self::Smtp(pool) => pool.timeout().as_millis() as i64,
            Self::Files(_) => 1000,
        }
    }

    async fn send(&self, id: uuid::Uuid, message: Message) -> Result<(), (String, Failure)> {
        match self {
            Self::Smtp(pool) => pool.send(message.envelope(), &message.formatted()).await,
            Self::Files(dir) => {
                // Write then rename: a reader never sees half a mail, and a
                // resend after a crash overwrites the same file.
                let tmp = dir.join(format!(".{id}.eml.tmp"));
                let path = dir.join(format!("{id}.eml"));
                let write = async {
                    use tokio::io::AsyncWriteExt;
                    let mut file = tokio::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&tmp)
                        .await?;
                    file.write_all(&message.formatted()).await?;
                    file.flush().await?;
                    drop(file);
                    tokio::fs::rename(&tmp, &path).await
                };
                write.await.map_err(|e| (e.to_string(), Failure::Transient))
            }
        }
    }
}

/// The RFC 5322 Message-ID of an outbox row: stable across resends.
pub fn message_id(id: uuid::Uuid, from: &Mailbox) -> String {
    format!("<{id}@{}>", from.email.domain())
}

/// The recipient is read by the RPC's own address rule (`Email::parse`), so
/// a mail goes to exactly the address that was accepted, or nowhere: the
/// name is a display name lettre encodes, never parsed as part of an address.
pub fn build_message(from: &Mailbox, claimed: &ClaimedMail) -> Result<Message, String> {
    let address = Email::parse(&claimed.recipient)
        .map_err(|e| format!("recipient address {:?} is not valid: {e}", claimed.recipient))?;
    let name = claimed.mail.to_name.trim();
    let to = Mailbox::new((!name.is_empty()).then(|| name.to_owned()), address.to_address());
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(&claimed.mail.subject)
        .message_id(Some(message_id(claimed.claim.id, from)))
        .date_now()
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(claimed.mail.text.clone()),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(claimed.mail.html.clone()),
                ),
        )
        .map_err(|e| e.to_string())
}

pub struct Outbox {
    pub domain: Domain,
    pub transport: Arc<Transport>,
    pub from: Mailbox,
    pub worker_id: String,
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub retry: MailRetry,
    /// How long a claim lasts; a worker that dies loses its mails to
    /// another worker after this.
    pub lease_ms: i64,
    /// When the outbox gauges were last measured.
    backlog_reported: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// The first pause before recording a delivery again; doubled per try.
const RECORD_PAUSE_FIRST: Duration = Duration::from_millis(50);
/// The longest pause between tries to record a delivery.
const RECORD_PAUSE_MOST: Duration = Duration::from_secs(1);

/// Marks a delivered mail sent, trying again with back-off while the
/// claim's lease lasts. A mark that fails once (no pooled connection in
/// time, SQLITE_BUSY, a PostgreSQL `lock_timeout`, a dropped connection)
/// would leave the mail pending: claimed again after the lease, and sent
/// a second time. Marking is idempotent, so trying again is safe.
///
/// Until the lease ends, no other claim can take the mail
/// (`claim_due_mails` takes only rows whose lease has run out): a mark
/// that lands by then rules a second send out. After it, another replica,
/// or this worker's own next batch, may already have claimed the mail and
/// be sending it, so a later mark no longer rules that out, while waiting
/// on would hold up the whole batch (`drain_once` waits for every send),
/// and a stopping worker, past the lease: the bound every other step of a
/// batch keeps. The last try starts at the lease's end; `drain_once`
/// leaves at least a tenth of the lease for these tries.
async fn record_delivery(domain: &Domain, claim: &MailClaim) -> orgadmin_domain::DomainResult<()> {
    let mut pause = RECORD_PAUSE_FIRST;
    loop {
        let error = match domain.mark_mail_sent(claim).await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let left_ms = claim.lease_until - now_millis();
        if left_ms <= 0 {
            return Err(error);
        }
        // Once a mail: an outage of the database would otherwise log a
        // line per mail per try.
        if pause == RECORD_PAUSE_FIRST {
            tracing::warn!(mail = %claim.id, error = %error, "outbox: could not record a delivery; trying again while the claim lasts");
        } else {
            tracing::debug!(mail = %claim.id, error = %error, "outbox: could not record a delivery yet");
        }
        tokio::time::sleep(pause.min(Duration::from_millis(left_ms as u64))).await;
        pause = (pause * 2).min(RECORD_PAUSE_MOST);
    }
}

/// The mails' sender, `ORGADMIN_MAIL_FROM`.
pub fn sender(config: &Config) -> anyhow::Result<Mailbox> {
    config
        .mail_from
        .parse()
        .map_err(|e| anyhow::anyhow!("ORGADMIN_MAIL_FROM={:?} is not a mailbox: {e}", config.mail_from))
}

/// How often the outbox gauges are measured at most.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

impl Outbox {
    pub fn from_config(domain: Domain, config: &Config, worker_id: String) -> anyhow::Result<Self> {
        Ok(Self {
            domain,
            transport: Arc::new(Transport::from_config(config)?),
            from: sender(config)?,
            worker_id,
            concurrency: config.mail_pool_size as usize,
            poll_interval: Duration::from_millis(config.mail_poll_interval_ms),
            retry: MailRetry {
                max_attempts: config.mail_max_attempts,
                base_delay_ms: config.mail_retry_base_ms,
                retry_for_ms: config.mail_retry_hours.saturating_mul(3_600_000),
            },
            lease_ms: config.mail_lease_ms,
            backlog_reported: Default::default(),
        })
    }

    /// Sends until `stop` turns true; a batch in flight is finished first.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let batch = (self.concurrency * 8) as u64;
        loop {
            if *stop.borrow() {
                break;
            }
            let sent = match self.drain_once(batch).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "outbox: claiming mail failed");
                    0
                }
            };
            // A full batch means more may be due: go again at once.
            if sent < batch as usize {
                tokio::select! {
                    _ = tokio::time::sleep(self.poll_interval) => {}
                    // A stop sender gone is a stop too: waiting on it would
                    // return at once, every time, and spin.
                    changed = stop.changed() => if changed.is_err() { break },
                }
            }
        }
        if let Transport::Smtp(pool) = self.transport.as_ref() {
            pool.close().await;
        }
        tracing::info!("outbox sender stopped");
    }

    /// Claims one batch and sends it; returns how many mails it held.
    pub async fn drain_once(&self, batch: u64) -> anyhow::Result<usize> {
        let claimed = self
            .domain
            .claim_due_mails(&self.worker_id, batch, self.lease_ms)
            .await?;
        let count = claimed.len();
        orgadmin_domain::metrics::job_claimed("mail_batch", u64::from(count > 0));
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = JoinSet::new();
        for mail in claimed {
            let permit = permits.clone().acquire_owned().await?;
            // A send must end, and be recorded, before the claim's lease
            // does: after it another worker may take the mail, and both
            // would send it. A mail whose lease ran short while it waited
            // for a permit (a slow relay) goes back unsent instead, before
            // its window is too short for a fair try (which, cut off, would
            // count as a failed attempt).
            let window_ms = mail.claim.lease_until - now_millis() - self.lease_ms / 10;
            if window_ms < self.transport.fair_try_ms().min(self.lease_ms / 2) {
                if let Err(e) = self.domain.release_mail(&mail.claim).await {
                    tracing::warn!(mail = %mail.claim.id, error = %e, "outbox: could not give back an unsent mail");
                }
                continue;
            }
            // A mail whose content died while it waited here is not sent:
            // given back, the next claim parks it unsent. One that dies
            // during its send is cut off then (its failure parks it), so
            // nothing arrives after its end.
            let window_ms = match mail.claim.deliver_before.map(|end| end - now_millis()) {
                Some(left) if left <= 0 => {
                    if let Err(e) = self.domain.release_mail(&mail.claim).await {
                        tracing::warn!(mail = %mail.claim.id, error = %e, "outbox: could not give back an expired mail");
                    }
                    continue;
                }
                Some(left) => window_ms.min(left),
                None => window_ms,
            };
            let deadline = Duration::from_millis(window_ms as u64);
            let domain = self.domain.clone();
            let transport = self.transport.clone();
            let from = self.from.clone();
            let retry = self.retry;
            // The send joins the trace of the request that queued the mail.
            let span = if telemetry::traces_enabled() {
                let span = tracing::info_span!(
                    "outbox.send",
                    otel.kind = "producer",
                    mail = %mail.claim.id,
                    mail.kind = %mail.kind,
                    mail.attempt = mail.claim.attempts + 1,
                    otel.status_code = tracing::field::Empty,
                );
                telemetry::adopt_remote_parent(&span, mail.traceparent.as_deref(), None);
                span
            } else {
                tracing::Span::none()
            };
            tasks.spawn(
                async move {
                    let _permit = permit;
                    let outcome = match build_message(&from, &mail) {
                        Ok(message) => tokio::time::timeout(deadline, transport.send(mail.claim.id, message))
                            .await
                            .unwrap_or_else(|_| {
                                Err((
                                    format!(
                                        "not delivered within {} ms, before the claim's lease ends",
                                        deadline.as_millis()
                                    ),
                                    Failure::Transient,
                                ))
                            }),
                        Err(e) => Err((e, Failure::Permanent)),
                    };
                    let marked = match outcome {
                        Ok(()) => record_delivery(&domain, &mail.claim).await,
                        Err((error, failure)) => {
                            tracing::Span::current().record("otel.status_code", "ERROR");
                            domain
                                .mark_mail_failed(&mail.claim, &error, failure, &retry)
                                .await
                                .map(drop)
                        }
                    };
                    if let Err(e) = marked {
                        // The lease runs out and the mail is sent again, with the same Message-ID.
                        tracing::error!(mail = %mail.claim.id, error = %e, "outbox: could not record the outcome of a send");
                    }
                }
                .instrument(span),
            );
        }
        while tasks.join_next().await.is_some() {}
        self.report_backlog().await;
        Ok(count)
    }

    /// The outbox gauges, at most every few seconds and only while metrics
    /// are exported: one aggregate query over the pending rows.
    async fn report_backlog(&self) {
        if !telemetry::metrics_enabled() {
            return;
        }
        {
            let mut last = self.backlog_reported.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < BACKLOG_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        match self.domain.outbox_backlog().await {
            Ok((depth, oldest)) => {
                let age_ms = oldest.map(|at| (now_millis() - at).max(0)).unwrap_or(0);
                orgadmin_domain::metrics::outbox_backlog(depth, Duration::from_millis(age_ms as u64));
            }
            Err(e) => tracing::warn!(error = %e, "outbox: could not measure the backlog"),
        }
    }
}
