//! A person's sessions (R-AUTH-3): listing the live ones and ending one.
//! Everyone may see and end their own; user administrators (the operator,
//! for organisation administrators) a user's, e.g. after a lost laptop.

use sea_orm::sea_query::{Expr, Query};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder};
use tracing::instrument;
use uuid::Uuid;

use crate::Domain;
use crate::error::{DomainError, DomainResult};
use crate::model::*;
use crate::persistence::entities::api_token;
use crate::persistence::history::{self, NewEvent, Subject, diff};
use crate::policy::{Action, Caller};
use crate::secrets::token_hash;
use crate::services::auth::KIND_SESSION;

/// How long an ended session's row (and an expired login challenge's) is
/// kept before the sweep deletes it: a week, for an operator looking into
/// a sign-in that just failed; history keeps the logins and revocations.
pub const ENDED_SESSION_RETENTION_MS: Millis = 7 * 24 * 60 * 60 * 1000;

/// How long a sent mail's row stays (its payload is blanked when sent):
/// long enough to answer "was it sent?", not for ever. Every mailed sign-in
/// code and notification wrote one.
pub const SENT_MAIL_RETENTION_MS: Millis = 30 * 24 * 60 * 60 * 1000;

/// Rows one statement of the purge deletes: short write locks.
const PURGE_BATCH: u64 = 1000;

/// A live session, without its token.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub last_used_at: Millis,
    pub idle_expires_at: Millis,
    /// The session the call was made with.
    pub current: bool,
}

/// Deletes the rows of `E` that `which` selects, `PURGE_BATCH` at a time
/// (by their primary key `id`); returns how many.
async fn delete_in_batches<E: EntityTrait>(
    db: &sea_orm::DatabaseConnection,
    id: E::Column,
    which: Condition,
) -> DomainResult<u64> {
    let mut deleted = 0;
    loop {
        let batch = Query::select()
            .column(id)
            .from(E::default())
            .cond_where(which.clone())
            .limit(PURGE_BATCH)
            .to_owned();
        let gone = E::delete_many()
            .filter(id.in_subquery(batch))
            .exec(db)
            .await?
            .rows_affected;
        deleted += gone;
        if gone < PURGE_BATCH {
            return Ok(deleted);
        }
    }
}

impl Domain {
    /// Deletes sessions that ended (revoked, expired, or idle past their
    /// limit) over `ENDED_SESSION_RETENTION_MS` ago, and login challenges
    /// that expired as long ago, a batch at a time. Nothing reads them
    /// again, and every login wrote one: without the purge both tables grew
    /// by a row per sign-in for ever. Returns the rows deleted.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn purge_ended_sessions(&self, now: Millis) -> DomainResult<u64> {
        use crate::persistence::entities::login_challenge;
        let before = now - ENDED_SESSION_RETENTION_MS;
        let idle_before = before - self.settings.session_idle_ms;
        let ended_sessions = Condition::all().add(api_token::Column::Kind.eq(KIND_SESSION)).add(
            Condition::any()
                .add(api_token::Column::RevokedAt.lt(before))
                .add(api_token::Column::ExpiresAt.lt(before))
                .add(api_token::Column::LastUsedAt.lt(idle_before))
                .add(
                    Condition::all()
                        .add(api_token::Column::LastUsedAt.is_null())
                        .add(api_token::Column::CreatedAt.lt(idle_before)),
                ),
        );
        let sessions = delete_in_batches::<api_token::Entity>(&self.db, api_token::Column::Id, ended_sessions).await?;
        let challenges = delete_in_batches::<login_challenge::Entity>(
            &self.db,
            login_challenge::Column::Id,
            Condition::all().add(login_challenge::Column::ExpiresAt.lt(before)),
        )
        .await?;
        Ok(sessions + challenges + self.purge_ended_records(now).await?)
    }

    /// The other records that end and are never read again, a batch at a
    /// time: single-use links (activation, e-mail change, reset) used,
    /// revoked or expired over a week ago (an old link then reads as
    /// unknown rather than used); requests to join that expired unconfirmed
    /// (README: "deleted"; they hold a stranger's name, address and birth
    /// date, and were deleted only when the same organisation was asked
    /// again); and sent mails' rows after `SENT_MAIL_RETENTION_MS`.
    async fn purge_ended_records(&self, now: Millis) -> DomainResult<u64> {
        use crate::persistence::entities::{activation_secret, join_request, outbox_mail};
        let before = now - ENDED_SESSION_RETENTION_MS;
        let secrets = delete_in_batches::<activation_secret::Entity>(
            &self.db,
            activation_secret::Column::Id,
            Condition::any()
                .add(activation_secret::Column::UsedAt.lt(before))
                .add(activation_secret::Column::RevokedAt.lt(before))
                .add(activation_secret::Column::ExpiresAt.lt(before)),
        )
        .await?;
        let join_requests = delete_in_batches::<join_request::Entity>(
            &self.db,
            join_request::Column::Id,
            Condition::all()
                .add(
                    join_request::Column::State
                        .eq(crate::services::join_requests::JoinRequestState::Unconfirmed.as_str()),
                )
                .add(join_request::Column::ExpiresAt.lte(now)),
        )
        .await?;
        let mails = delete_in_batches::<outbox_mail::Entity>(
            &self.db,
            outbox_mail::Column::Id,
            Condition::all()
                .add(outbox_mail::Column::State.eq(super::outbox::STATE_SENT))
                .add(outbox_mail::Column::SentAt.lt(now - SENT_MAIL_RETENTION_MS)),
        )
        .await?;
        // A parked mail's content (a login code, a link, personal text)
        // once its end passed: RetryMail refuses it from then on, so
        // nothing reads it again. (Parked before its end, it kept its
        // content for a retry in time.)
        let dead = outbox_mail::Entity::update_many()
            .col_expr(outbox_mail::Column::Payload, Expr::value(""))
            .filter(outbox_mail::Column::State.eq(super::outbox::STATE_FAILED))
            .filter(outbox_mail::Column::DeliverBefore.lte(now))
            .filter(outbox_mail::Column::Payload.ne(""))
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(secrets + join_requests + mails + dead)
    }

    /// The live sessions of `user_id` (the caller's own when `None`), newest
    /// first.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_sessions(
        &self,
        caller: &Caller,
        user_id: Option<Uuid>,
        bearer: &str,
    ) -> DomainResult<Vec<Session>> {
        let user_id = self.sessions_owner(caller, user_id).await?;
        let now = now_millis();
        let idle_ms = self.settings.session_idle_ms;
        let presented = token_hash(bearer);
        let rows = api_token::Entity::find()
            .filter(api_token::Column::UserId.eq(user_id))
            .filter(api_token::Column::Kind.eq(KIND_SESSION))
            .filter(api_token::Column::RevokedAt.is_null())
            .filter(api_token::Column::ExpiresAt.gt(now))
            .filter(session_not_idle(now, idle_ms))
            .order_by_desc(api_token::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let last_used_at = row.last_used_at.unwrap_or(row.created_at);
                let expires_at = row.expires_at.unwrap_or(Millis::MAX);
                Session {
                    id: row.id,
                    user_id,
                    name: row.name,
                    created_at: row.created_at,
                    expires_at,
                    last_used_at,
                    idle_expires_at: (last_used_at + idle_ms).min(expires_at),
                    current: row.token_hash == presented,
                }
            })
            .collect())
    }

    /// Ends one session of the caller's, or of a user the caller manages.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn revoke_session(&self, caller: &Caller, id: Uuid) -> DomainResult<()> {
        let not_found = || DomainError::not_found("session", id);
        let row = api_token::Entity::find_by_id(id)
            .filter(api_token::Column::Kind.eq(KIND_SESSION))
            .one(&self.db)
            .await?
            .ok_or_else(not_found)?;
        let owner = row.user_id.ok_or_else(not_found)?;
        self.sessions_owner(caller, Some(owner)).await?;
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let ended = api_token::Entity::update_many()
            .col_expr(api_token::Column::RevokedAt, Expr::value(now))
            .filter(api_token::Column::Id.eq(id))
            .filter(api_token::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        if ended.rows_affected == 1 {
            let mut changes = Vec::new();
            diff(&mut changes, "session", &row.name, "ended");
            history::record(
                &txn,
                NewEvent {
                    organisation_id: row.organisation_id,
                    subject: Subject::User(owner),
                    activity: Activity::SessionRevoked,
                    caller,
                    at: now,
                    changes,
                },
            )
            .await?;
        }
        txn.commit().await?;
        self.auth_cache.clear();
        Ok(())
    }

    /// Whose sessions the caller asks about, after the policy check.
    async fn sessions_owner(&self, caller: &Caller, user_id: Option<Uuid>) -> DomainResult<Uuid> {
        let user_id = match user_id.or(caller.user_id()) {
            Some(id) => id,
            None => {
                return Err(DomainError::denied(
                    "operators have no sessions; name the user_id whose sessions to see",
                ));
            }
        };
        self.authorize_on_user(caller, Action::ManageSessions, user_id).await?;
        Ok(user_id)
    }
}

/// A session used (or, never used, made) within the last `idle_ms`: the
/// rule `authenticate` applies, for the lists that show live sessions.
pub(crate) fn session_not_idle(now: Millis, idle_ms: i64) -> Condition {
    Condition::any()
        .add(api_token::Column::LastUsedAt.gt(now - idle_ms))
        .add(
            Condition::all()
                .add(api_token::Column::LastUsedAt.is_null())
                .add(api_token::Column::CreatedAt.gt(now - idle_ms)),
        )
}
