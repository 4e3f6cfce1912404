//! The transactional outbox (R-NOTE-2). A mail is a row written in the same
//! transaction as the change that causes it; the worker claims due rows,
//! sends them and marks them. Nothing is sent on the RPC path.
//!
//! Claims are leases: a worker that dies mid-send leaves rows whose lease runs
//! out, and another worker picks them up. A resent mail keeps its Message-ID
//! (derived from the row id), so a duplicate after a crash is recognisable.

use rand::Rng;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tracing::instrument;
use uuid::Uuid;

use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason};
use crate::mail::{MailKind, RenderedMail, render};
use crate::model::*;
use crate::paging;
use crate::persistence::entities::outbox_mail;
use crate::persistence::is_postgres;
use crate::policy::{Action, Caller, Target, authorize};

pub const STATE_PENDING: &str = "PENDING";
pub const STATE_SENT: &str = "SENT";
pub const STATE_FAILED: &str = "FAILED";

/// A mail the worker holds a lease on.
#[derive(Debug, Clone)]
pub struct ClaimedMail {
    pub claim: MailClaim,
    pub kind: String,
    pub recipient: String,
    pub mail: RenderedMail,
    /// The W3C traceparent of the request that queued the mail, so its
    /// sending joins that trace.
    pub traceparent: Option<String>,
}

/// One claim of one mail: what a mark of its outcome must still match. A
/// worker whose lease ran out while it sent (a slow relay, a pause) may
/// finish after another worker claimed the mail again; its failure must then
/// change nothing (not count an attempt twice, not park a mail the other
/// delivered). The lease's end is the claim's fencing token: every claim
/// sets it anew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailClaim {
    pub id: Uuid,
    pub worker: String,
    pub lease_until: Millis,
    /// Failed attempts before this claim.
    pub attempts: i32,
    /// When the mail was queued: a mail that keeps failing for a reason
    /// that may pass is parked only once it is old (see [`MailRetry`]).
    pub created_at: Millis,
    /// When its content dies (a login code, a single-use link): a retry
    /// due after it is not made.
    pub deliver_before: Option<Millis>,
}

/// How a failed delivery is retried (`ORGADMIN_MAIL_*`).
#[derive(Debug, Clone, Copy)]
pub struct MailRetry {
    /// Attempts at least, before a mail failing for a passing reason is parked.
    pub max_attempts: i32,
    /// The first retry's delay; doubled per attempt, at most an hour.
    pub base_delay_ms: i64,
    /// And at least this old: a relay down for an afternoon, or a
    /// greylisting relay, parks nothing.
    pub retry_for_ms: i64,
}

impl MailRetry {
    /// Whether a failure parks the mail: a permanent one (a refusal of the
    /// mail itself: its recipient, its content) at once; one that may pass
    /// (a refusal of the relay or our settings, 5xx included: it would
    /// park every mail alike) only after `max_attempts` attempts and
    /// `retry_for_ms` since it was queued.
    pub fn parks(&self, failure: Failure, attempts: i32, age_ms: i64) -> bool {
        failure == Failure::Permanent || (attempts >= self.max_attempts && age_ms >= self.retry_for_ms)
    }
}

/// Why a mail was parked unsent because its content died first: the
/// operator reads it in ListFailedMails, and RetryMail refuses it.
fn expired_error(deliver_before: Millis) -> String {
    let end = to_the_second(deliver_before);
    format!("its content expired at {end} before its delivery was confirmed: not sent (again) after that")
}

/// A mail's end as its messages name it (RFC 3339, UTC, to the second).
fn to_the_second(at: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// How long a mail this worker cannot decrypt waits before it is claimed
/// again (by this or another worker).
const UNREADABLE_WAIT_MS: i64 = 5 * 60 * 1000;

impl MailClaim {
    /// The claim's own row, still pending and still held by this claim.
    fn still_held(&self) -> Condition {
        Condition::all()
            .add(outbox_mail::Column::Id.eq(self.id))
            .add(outbox_mail::Column::State.eq(STATE_PENDING))
            .add(outbox_mail::Column::ClaimedBy.eq(self.worker.as_str()))
            .add(outbox_mail::Column::LeaseUntil.eq(self.lease_until))
            .add(outbox_mail::Column::Attempts.eq(self.attempts))
    }
}

/// A mail as operators see it: no content, which may hold a link token.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub id: Uuid,
    pub organisation_id: Option<Uuid>,
    pub kind: String,
    pub recipient: String,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub next_attempt_at: Millis,
}

/// What one failed delivery means for the mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Worth trying again later: connection refused, a 4xx, or a refusal
    /// about the relay or our settings (a login required, a sender not
    /// ours, a quota), which the same mail passes once they are right.
    Transient,
    /// Trying again cannot help: a 5xx about this mail (no such mailbox,
    /// the message too big or its content refused).
    Permanent,
}

impl Domain {
    /// Renders and queues a mail inside the caller's transaction.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn enqueue_mail(
        &self,
        db: &impl ConnectionTrait,
        organisation_id: Option<Uuid>,
        kind: MailKind,
        recipient: &str,
        to_name: &str,
        language: Language,
        vars: &[(&str, &str)],
    ) -> DomainResult<Uuid> {
        self.enqueue_mail_until(db, organisation_id, kind, recipient, to_name, language, vars, None)
            .await
    }

    /// [`Self::enqueue_mail`] for a mail whose content dies at
    /// `deliver_before` (a login code, a single-use link): the worker parks
    /// it unsent from then on, instead of delivering a dead code late.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn enqueue_mail_until(
        &self,
        db: &impl ConnectionTrait,
        organisation_id: Option<Uuid>,
        kind: MailKind,
        recipient: &str,
        to_name: &str,
        language: Language,
        vars: &[(&str, &str)],
        deliver_before: Option<Millis>,
    ) -> DomainResult<Uuid> {
        let mail = render(kind, language, to_name, vars)?;
        let payload = serde_json::to_string(&mail).map_err(|e| DomainError::Internal(e.to_string()))?;
        let now = now_millis();
        let id = Uuid::now_v7();
        outbox_mail::Entity::insert(outbox_mail::ActiveModel {
            id: Set(id),
            organisation_id: Set(organisation_id),
            kind: Set(kind.as_str().to_owned()),
            recipient: Set(recipient.to_owned()),
            // Encrypted at rest: an activation mail holds a single-use token.
            payload: Set(self.vault.encrypt(&payload)),
            state: Set(STATE_PENDING.into()),
            attempts: Set(0),
            next_attempt_at: Set(now),
            claimed_by: Set(None),
            lease_until: Set(None),
            last_error: Set(None),
            trace_context: Set(crate::telemetry::current_traceparent()),
            created_at: Set(now),
            sent_at: Set(None),
            deliver_before: Set(deliver_before),
        })
        .exec_without_returning(db)
        .await?;
        Ok(id)
    }

    /// Claims up to `limit` due mails for `worker` for `lease_ms`. On
    /// PostgreSQL the rows are picked with `FOR UPDATE SKIP LOCKED`, so
    /// replicas claiming at once get disjoint batches.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn claim_due_mails(&self, worker: &str, limit: u64, lease_ms: i64) -> DomainResult<Vec<ClaimedMail>> {
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let mut due = outbox_mail::Entity::find()
            .filter(outbox_mail::Column::State.eq(STATE_PENDING))
            .filter(outbox_mail::Column::NextAttemptAt.lte(now))
            .filter(
                Condition::any()
                    .add(outbox_mail::Column::LeaseUntil.is_null())
                    .add(outbox_mail::Column::LeaseUntil.lt(now)),
            )
            .order_by_asc(outbox_mail::Column::NextAttemptAt)
            .limit(limit);
        if is_postgres(&txn) {
            due = due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let rows = due.all(&txn).await?;
        if rows.is_empty() {
            txn.commit().await?;
            return Ok(Vec::new());
        }
        // A mail whose content died while it waited (a relay down past a
        // login code's minutes) is parked, not sent: found among the due
        // rows, so a claim with nothing expired costs nothing more.
        let (expired, rows): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|r| r.deliver_before.is_some_and(|end| end <= now));
        for row in &expired {
            // Parked by the claim, not tried: what it says holds whether or
            // not an earlier claim's send (whose record was lost) got through.
            let error = expired_error(row.deliver_before.unwrap_or(now));
            outbox_mail::Entity::update_many()
                .col_expr(outbox_mail::Column::State, Expr::value(STATE_FAILED))
                .col_expr(outbox_mail::Column::LastError, Expr::value(error.clone()))
                .col_expr(outbox_mail::Column::LeaseUntil, Expr::value(Option::<i64>::None))
                .col_expr(outbox_mail::Column::ClaimedBy, Expr::value(Option::<String>::None))
                .col_expr(outbox_mail::Column::Payload, Expr::value(""))
                .filter(outbox_mail::Column::Id.eq(row.id))
                .exec(&txn)
                .await?;
            tracing::warn!(mail = %row.id, kind = %row.kind, attempts = row.attempts, error = %error, "mail parked unsent: its content expired");
        }
        let lease_until = now + lease_ms;
        if !rows.is_empty() {
            let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
            outbox_mail::Entity::update_many()
                .col_expr(outbox_mail::Column::ClaimedBy, Expr::value(worker))
                .col_expr(outbox_mail::Column::LeaseUntil, Expr::value(lease_until))
                .filter(outbox_mail::Column::Id.is_in(ids))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        // Counted once committed: a claim that failed to commit parks them
        // again next time.
        for _ in &expired {
            crate::metrics::mail_delivery("expired");
        }
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let claim = MailClaim {
                id: row.id,
                worker: worker.to_owned(),
                lease_until,
                attempts: row.attempts,
                created_at: row.created_at,
                deliver_before: row.deliver_before,
            };
            match self.vault.decrypt(&row.payload).and_then(|json| {
                serde_json::from_str::<RenderedMail>(&json).map_err(|e| DomainError::Internal(e.to_string()))
            }) {
                Ok(mail) => claimed.push(ClaimedMail {
                    claim,
                    kind: row.kind,
                    recipient: row.recipient,
                    mail,
                    traceparent: row.trace_context,
                }),
                Err(e) => {
                    // Most often a worker started with another key than the
                    // service's (a wrong secret, a rotation half done): the
                    // content is readable again once the key is right, so
                    // the mail waits instead of being parked. Loudly: an
                    // operator must fix the key.
                    tracing::error!(mail = %claim.id, error = %e, "outbox: a mail cannot be decrypted with this worker's ORGADMIN_CPR_ENCRYPTION_KEY; it waits");
                    self.defer_mail(&claim, &format!("payload unreadable: {e}"), UNREADABLE_WAIT_MS)
                        .await?;
                }
            }
        }
        Ok(claimed)
    }

    /// Marks a mail sent and drops its content. Whichever claim delivered
    /// it: a delivery is a fact, also when it came from a claim whose lease
    /// ran out meanwhile (a later failure of the other claim then changes
    /// nothing, see [`MailClaim`]). A mail already marked sent stays as it
    /// was (its first delivery's time).
    pub async fn mark_mail_sent(&self, claim: &MailClaim) -> DomainResult<()> {
        let marked = outbox_mail::Entity::update_many()
            .col_expr(outbox_mail::Column::State, Expr::value(STATE_SENT))
            .col_expr(outbox_mail::Column::SentAt, Expr::value(now_millis()))
            .col_expr(outbox_mail::Column::Payload, Expr::value(""))
            .col_expr(outbox_mail::Column::LeaseUntil, Expr::value(Option::<i64>::None))
            .filter(outbox_mail::Column::Id.eq(claim.id))
            .filter(outbox_mail::Column::State.ne(STATE_SENT))
            .exec(&self.db)
            .await?;
        crate::metrics::mail_delivery(if marked.rows_affected == 1 {
            "sent"
        } else {
            "sent_again"
        });
        Ok(())
    }

    /// Gives a claimed mail back unsent, for the next claim (this worker's
    /// or another's) to take at once. Changes nothing when the claim no
    /// longer holds the mail.
    /// Gives a claimed mail back, due again in `wait_ms`, its attempts
    /// not counted.
    async fn defer_mail(&self, claim: &MailClaim, error: &str, wait_ms: i64) -> DomainResult<()> {
        let error: String = error.chars().take(1000).collect();
        outbox_mail::Entity::update_many()
            .col_expr(outbox_mail::Column::LeaseUntil, Expr::value(Option::<i64>::None))
            .col_expr(outbox_mail::Column::ClaimedBy, Expr::value(Option::<String>::None))
            .col_expr(outbox_mail::Column::LastError, Expr::value(error))
            .col_expr(outbox_mail::Column::NextAttemptAt, Expr::value(now_millis() + wait_ms))
            .filter(claim.still_held())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    pub async fn release_mail(&self, claim: &MailClaim) -> DomainResult<()> {
        outbox_mail::Entity::update_many()
            .col_expr(outbox_mail::Column::LeaseUntil, Expr::value(Option::<i64>::None))
            .col_expr(outbox_mail::Column::ClaimedBy, Expr::value(Option::<String>::None))
            .filter(claim.still_held())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// How many mails wait to be sent and since when the oldest waits: the
    /// outbox gauges. One aggregate over the pending rows.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn outbox_backlog(&self) -> DomainResult<(u64, Option<Millis>)> {
        use sea_orm::sea_query::Func;
        let row: Option<(i64, Option<i64>)> = outbox_mail::Entity::find()
            .select_only()
            .column_as(Expr::expr(Func::count(Expr::col(outbox_mail::Column::Id))), "depth")
            .column_as(
                Expr::expr(Func::min(Expr::col(outbox_mail::Column::CreatedAt))),
                "oldest",
            )
            .filter(outbox_mail::Column::State.eq(STATE_PENDING))
            .into_tuple()
            .one(&self.db)
            .await?;
        let (depth, oldest) = row.unwrap_or((0, None));
        Ok((depth.max(0) as u64, oldest))
    }

    /// Records a failed delivery: retried with exponential back-off and
    /// jitter, or parked as FAILED when permanent or out of attempts. One
    /// statement, and only while `claim` still holds the mail: returns
    /// whether it did (a claim replaced meanwhile records nothing).
    pub async fn mark_mail_failed(
        &self,
        claim: &MailClaim,
        error: &str,
        failure: Failure,
        retry: &MailRetry,
    ) -> DomainResult<bool> {
        let attempts = claim.attempts + 1;
        let now = now_millis();
        let next_attempt_at = now + backoff_ms(attempts, retry.base_delay_ms);
        // A retry that would come when the content is dead is not made (a
        // login code is worth minutes, however young its mail): parked now.
        // Its content stays until its end (RetryMail may still send it
        // before then); the hourly purge drops it after.
        let dies_first = claim.deliver_before.filter(|end| next_attempt_at >= *end);
        let park = retry.parks(failure, attempts, now - claim.created_at) || dies_first.is_some();
        let mut error: String = error.chars().take(1000).collect();
        if let Some(end) = dies_first {
            error = format!("{error}; {}", expired_error(end));
        }
        let mut update = outbox_mail::Entity::update_many()
            .col_expr(outbox_mail::Column::Attempts, Expr::value(attempts))
            .col_expr(outbox_mail::Column::LastError, Expr::value(error.clone()))
            .col_expr(outbox_mail::Column::LeaseUntil, Expr::value(Option::<i64>::None));
        update = if park {
            update.col_expr(outbox_mail::Column::State, Expr::value(STATE_FAILED))
        } else {
            update.col_expr(outbox_mail::Column::NextAttemptAt, Expr::value(next_attempt_at))
        };
        let marked = update.filter(claim.still_held()).exec(&self.db).await?.rows_affected == 1;
        let id = claim.id;
        if !marked {
            tracing::info!(mail = %id, error = %error, "mail delivery failed after its claim ended; not recorded");
        } else if dies_first.is_some() {
            crate::metrics::mail_delivery("expired");
            tracing::warn!(mail = %id, attempts, error = %error, "mail parked unsent: its content expires before the next try");
        } else if park {
            crate::metrics::mail_delivery("parked");
            tracing::warn!(mail = %id, attempts, error = %error, "mail parked as failed");
        } else {
            crate::metrics::mail_delivery("failed");
            tracing::info!(mail = %id, attempts, error = %error, "mail delivery failed; will retry");
        }
        Ok(marked)
    }

    /// Parked mails, for operators (content not included).
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_failed_mails(
        &self,
        caller: &Caller,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<OutboxEntry>> {
        authorize(caller, Action::ManageMailQueue, Target::platform())?;
        let limit = paging::page_size(page_size, 50, 500)?;
        let query = outbox_mail::Entity::find().filter(outbox_mail::Column::State.eq(STATE_FAILED));
        let (rows, next) = paging::keyset(
            &self.db,
            query,
            outbox_mail::Column::Id,
            paging::Order::Ascending,
            "failed-mails",
            page_token,
            limit,
            |r| r.id,
        )
        .await?;
        Ok(Page {
            items: self.as_operators_see(rows).await?,
            next_page_token: next,
        })
    }

    /// R-ACC-6: the operator sees an organisation's administrators, not its
    /// ordinary users. A parked mail to anyone else (a user, someone asking
    /// to join) names its recipient with the local part masked, in the
    /// address and in the relay's error (which often quotes it): the domain
    /// is what a delivery problem is about.
    async fn as_operators_see(&self, rows: Vec<outbox_mail::Model>) -> DomainResult<Vec<OutboxEntry>> {
        use crate::persistence::entities::user;
        let keys: Vec<String> = rows.iter().map(|row| crate::email::login_key(&row.recipient)).collect();
        let people: Vec<(Uuid, Uuid, Option<String>)> = if keys.is_empty() {
            Vec::new()
        } else {
            user::Entity::find()
                .select_only()
                .columns([user::Column::Id, user::Column::OrganisationId, user::Column::EmailKey])
                .filter(user::Column::EmailKey.is_in(keys.clone()))
                // A deleted person keeps their roles' rows: their address
                // may be an ordinary user's now.
                .filter(user::Column::State.ne(crate::model::UserState::Deleted.as_str()))
                .into_tuple()
                .all(&self.db)
                .await?
        };
        let ids: Vec<Uuid> = people.iter().map(|(id, _, _)| *id).collect();
        let roles = crate::services::users::roles_of(&self.db, &ids).await?;
        let administrators: std::collections::HashSet<(Uuid, String)> = people
            .into_iter()
            .filter(|(id, _, _)| roles.get(id).is_some_and(|r| r.iter().any(|r| r.is_administrator())))
            .filter_map(|(_, organisation, key)| key.map(|key| (organisation, key)))
            .collect();
        Ok(rows
            .into_iter()
            .zip(keys)
            .map(|(row, key)| {
                let shown = match row.organisation_id {
                    Some(organisation) => administrators.contains(&(organisation, key)),
                    None => true,
                };
                let mut entry = entry_from_row(row);
                if !shown {
                    let masked = masked_address(&entry.recipient);
                    // The relay quotes the address as it was sent: with an
                    // IDN domain, in ASCII (Punycode).
                    let sent = crate::email::Email::parse(&entry.recipient)
                        .map(|email| email.to_address().to_string())
                        .unwrap_or_default();
                    entry.last_error = entry.last_error.map(|error| {
                        let error = error.replace(&entry.recipient, &masked);
                        if sent.is_empty() {
                            error
                        } else {
                            error.replace(&sent, &masked)
                        }
                    });
                    entry.recipient = masked;
                }
                entry
            })
            .collect())
    }

    /// Puts a parked mail back in the queue, with fresh attempts.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn retry_mail(&self, caller: &Caller, id: Uuid) -> DomainResult<OutboxEntry> {
        authorize(caller, Action::ManageMailQueue, Target::platform())?;
        let row = outbox_mail::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| DomainError::not_found("mail", id))?;
        if row.state != STATE_FAILED {
            return Err(DomainError::precondition(
                Reason::MailNotFailed,
                format!("only a failed mail can be retried; this one is {}", row.state),
            ));
        }
        // Its content ended: a login code or link that expired (the person
        // asks for a new one), or a recipient who was deleted (their
        // parked mails keep no content). An empty content is one dropped
        // at that end.
        let ended = row
            .deliver_before
            .filter(|end| *end <= now_millis())
            .or_else(|| row.payload.is_empty().then(now_millis));
        if let Some(end) = ended {
            let end = to_the_second(end);
            return Err(DomainError::precondition(
                Reason::MailExpired,
                format!(
                    "this mail cannot be sent any more: its content ended at {end} (an expired login code or link, or a deleted recipient)"
                ),
            ));
        }
        // Conditional on still being FAILED: a parallel retry (and the send
        // it led to) must not be undone by this one.
        let requeued = outbox_mail::Entity::update_many()
            .col_expr(outbox_mail::Column::State, Expr::value(STATE_PENDING))
            .col_expr(outbox_mail::Column::Attempts, Expr::value(0))
            .col_expr(outbox_mail::Column::NextAttemptAt, Expr::value(now_millis()))
            .filter(outbox_mail::Column::Id.eq(id))
            .filter(outbox_mail::Column::State.eq(STATE_FAILED))
            .exec(&self.db)
            .await?;
        let row = outbox_mail::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| DomainError::not_found("mail", id))?;
        if requeued.rows_affected == 0 {
            return Err(DomainError::precondition(
                Reason::MailNotFailed,
                format!("only a failed mail can be retried; this one is {}", row.state),
            ));
        }
        tracing::info!(mail = %id, actor = %caller.actor(), "failed mail queued again by hand");
        Ok(self.as_operators_see(vec![row]).await?.remove(0))
    }

    /// Mails by state, for metrics and tests.
    pub async fn outbox_counts(&self) -> DomainResult<(u64, u64, u64)> {
        use sea_orm::PaginatorTrait;
        let count = |state: &'static str| {
            outbox_mail::Entity::find()
                .filter(outbox_mail::Column::State.eq(state))
                .count(&self.db)
        };
        Ok((
            count(STATE_PENDING).await?,
            count(STATE_SENT).await?,
            count(STATE_FAILED).await?,
        ))
    }
}

/// `s***@firma.dk`: the local part's first character, the domain whole.
fn masked_address(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
        None => "***".to_owned(),
    }
}

fn entry_from_row(row: outbox_mail::Model) -> OutboxEntry {
    OutboxEntry {
        id: row.id,
        organisation_id: row.organisation_id,
        kind: row.kind,
        recipient: row.recipient,
        state: row.state,
        attempts: row.attempts,
        last_error: row.last_error,
        created_at: row.created_at,
        next_attempt_at: row.next_attempt_at,
    }
}

/// base × 2^(attempts-1), at most an hour, ±20 % jitter so retries of many
/// mails after an outage do not arrive in one wave.
pub fn backoff_ms(attempts: i32, base_ms: i64) -> i64 {
    let exp = base_ms.saturating_mul(1i64 << (attempts - 1).clamp(0, 20));
    let capped = exp.min(3_600_000);
    let jitter = rand::rng().random_range(0.8..1.2);
    (capped as f64 * jitter) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mail_failing_for_a_passing_reason_is_parked_only_when_old() {
        let retry = MailRetry {
            max_attempts: 8,
            base_delay_ms: 2000,
            retry_for_ms: 48 * 3_600_000,
        };
        let hour = 3_600_000;
        assert!(retry.parks(Failure::Permanent, 1, 0), "a 5xx to the mail: at once");
        assert!(
            !retry.parks(Failure::Transient, 8, 5 * 60 * 1000),
            "an outage of minutes"
        );
        assert!(!retry.parks(Failure::Transient, 30, 47 * hour), "still young");
        assert!(!retry.parks(Failure::Transient, 7, 49 * hour), "too few attempts");
        assert!(retry.parks(Failure::Transient, 8, 48 * hour));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!((1600..=2400).contains(&backoff_ms(1, 2000)));
        assert!((6400..=9600).contains(&backoff_ms(3, 2000)));
        assert!(backoff_ms(30, 2000) <= 4_320_000);
    }
}
