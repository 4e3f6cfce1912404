//! Password resets (R-AUTH-2: passwords are set only with a link or code the
//! person received). The person asks with their login id, or a user
//! administrator sends one; either way a single-use link goes to the
//! person's own address through the outbox, and no reply says whether the
//! login id exists. Choosing the new password with the link ends every
//! session of the person and lifts a login lock.

use sea_orm::sea_query::{Expr, ExprTrait, LockType};
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect};
use tracing::instrument;
use uuid::Uuid;

use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason};
use crate::model::*;
use crate::passwords::{Password, check_new_password};
use crate::persistence::entities::{activation_secret, api_token, login_challenge, organisation, user};
use crate::persistence::history::{self, NewEvent, Subject, diff};
use crate::persistence::mapping::parse;
use crate::policy::{Action, Caller};
use crate::secrets::token_hash;
use crate::services::activation::{KIND_RESET, SingleUseLink, person_caller, take_secret};
use crate::services::login::check_login_id;
use crate::validate::Violations;

/// How long a self-service reset request after the last one sends nothing
/// while that link is live (`reset_link_on_its_way`): long enough that a
/// flood of requests leaves the person one working link, short enough that
/// a person whose mail went astray asks again soon.
pub const RESET_REQUEST_INTERVAL_MS: Millis = 2 * 60 * 1000;

/// The least time a self-service reset request takes to answer, whatever
/// the login id: far above what either path takes on a healthy system
/// (a few milliseconds), so the answer's timing tells nothing.
pub const RESET_ANSWER_FLOOR: std::time::Duration = std::time::Duration::from_millis(250);

impl Domain {
    /// Mails a reset link to the person a login id names, when it names
    /// exactly one active person; answers the same in every case, and
    /// after the same time ([`RESET_ANSWER_FLOOR`]): a known person's
    /// request writes a link, a mail and history, an unknown one reads one
    /// row, and the difference in milliseconds told anyone which login ids
    /// belong to active people.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn request_password_reset(
        &self,
        login_id: &str,
        organisation_id: Option<Uuid>,
        peer: Option<String>,
    ) -> DomainResult<()> {
        let mut v = Violations::default();
        check_login_id(&mut v, login_id);
        v.into_result()?;
        let answer_at = tokio::time::Instant::now() + RESET_ANSWER_FLOOR;
        let done = self.mail_reset_link_if_known(login_id, organisation_id, peer).await;
        tokio::time::sleep_until(answer_at).await;
        done
    }

    async fn mail_reset_link_if_known(
        &self,
        login_id: &str,
        organisation_id: Option<Uuid>,
        peer: Option<String>,
    ) -> DomainResult<()> {
        let Some(row) = self
            .person_with_login_id(
                login_id,
                organisation_id,
                user::Column::State
                    .eq(UserState::Active.as_str())
                    .and(user::Column::ServiceAccount.eq(false)),
            )
            .await?
        else {
            tracing::debug!("password reset asked for a login id that names no one active person");
            return Ok(());
        };
        let txn = crate::persistence::begin_write(&self.db).await?;
        // Requests for one person queue here (PostgreSQL; SQLite has one
        // writer), so two at once cannot both find no link on its way. The
        // link goes to the address the locked row holds: read before the
        // lock, a change of address committed meanwhile (which ends reset
        // links) sent a live link to the old mailbox.
        let Some(row) = user::Entity::find_by_id(row.id)
            .lock(LockType::NoKeyUpdate)
            .one(&txn)
            .await?
        else {
            return Ok(());
        };
        if parse::<UserState>(&row.state)? != UserState::Active || row.service_account {
            return Ok(());
        }
        let caller = person_caller(&row);
        if self.reset_link_on_its_way(&txn, row.id).await? {
            tracing::debug!("password reset asked for again while the last link is on its way; nothing sent");
            return Ok(());
        }
        self.mail_reset_link_in(&txn, &caller, &row, peer.as_deref()).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Whether the person was mailed a reset link in the last
    /// [`RESET_REQUEST_INTERVAL_MS`] that is still live. Anyone may ask for
    /// a reset with a login id, and each new link ends the one before: asked
    /// for every few seconds, no link would ever work and the mailbox would
    /// fill. So a request while one is on its way sends nothing (it answers
    /// as always); an administrator's SendPasswordReset still replaces it.
    async fn reset_link_on_its_way(&self, txn: &DatabaseTransaction, user_id: Uuid) -> DomainResult<bool> {
        use sea_orm::PaginatorTrait;
        let now = now_millis();
        Ok(activation_secret::Entity::find()
            .filter(activation_secret::Column::UserId.eq(user_id))
            .filter(activation_secret::Column::Kind.eq(KIND_RESET))
            .filter(activation_secret::Column::UsedAt.is_null())
            .filter(activation_secret::Column::RevokedAt.is_null())
            .filter(activation_secret::Column::ExpiresAt.gt(now))
            .filter(activation_secret::Column::CreatedAt.gt(now - RESET_REQUEST_INTERVAL_MS))
            .count(txn)
            .await?
            > 0)
    }

    /// A user administrator (the operator, for administrators) mails the
    /// person a reset link; the administrator never sees it.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn send_password_reset(&self, caller: &Caller, user_id: Uuid) -> DomainResult<()> {
        self.authorize_on_user(caller, Action::SendPasswordReset, user_id)
            .await?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        // Locked, as above: the link goes to the address in force.
        let row = user::Entity::find_by_id(user_id)
            .lock(LockType::NoKeyUpdate)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", user_id))?;
        if parse::<UserState>(&row.state)? != UserState::Active {
            return Err(DomainError::precondition(
                Reason::UserNotActive,
                "only an active user can reset a password; a pending one activates with their link or code",
            ));
        }
        if row.service_account {
            return Err(DomainError::precondition(
                Reason::ServiceAccount,
                "a service account has no password and no mailbox: those it is shared with manage it",
            ));
        }
        self.mail_reset_link_in(&txn, caller, &row, None).await?;
        txn.commit().await?;
        Ok(())
    }

    async fn mail_reset_link_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        row: &user::Model,
        peer: Option<&str>,
    ) -> DomainResult<()> {
        let organisation_name = organisation::Entity::find_by_id(row.organisation_id)
            .one(txn)
            .await?
            .map(|o| o.name)
            .unwrap_or_default();
        let template = self.settings.passwords.reset_url_template.clone();
        self.mail_single_use_link(
            txn,
            row,
            SingleUseLink::PasswordReset,
            &row.email,
            &template,
            &organisation_name,
        )
        .await?;
        let now = now_millis();
        let mut changes = Vec::new();
        diff(&mut changes, "reset_link", "", "mailed");
        if let Some(peer) = peer {
            diff(&mut changes, "peer", "", peer);
        }
        history::record(
            txn,
            NewEvent {
                organisation_id: Some(row.organisation_id),
                subject: Subject::User(row.id),
                activity: Activity::PasswordResetSent,
                caller,
                at: now,
                changes,
            },
        )
        .await
    }

    /// Sets a new password with a reset link's token. Every session of the
    /// person ends (whoever else was signed in is out), and every API token
    /// they made, and a login lock is lifted; they log in again with the
    /// new password.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn reset_password(&self, token: &str, password: Password, peer: Option<String>) -> DomainResult<()> {
        let mut v = Violations::default();
        if token.trim().is_empty() {
            v.add("token", "is required");
        }
        if password.is_empty() {
            v.add("password", "is required");
        }
        v.into_result()?;
        // Hashed before the transaction, as at activation.
        let min_chars = self.min_password_chars_for_secret(&[token_hash(token.trim())]).await?;
        let phc = self.hash_new_password("password", &password, &[], min_chars).await?;
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let Some(stored) = activation_secret::Entity::find()
            .filter(activation_secret::Column::SecretHash.eq(token_hash(token.trim())))
            .filter(activation_secret::Column::Kind.eq(KIND_RESET))
            .one(&txn)
            .await?
        else {
            return Err(DomainError::precondition(
                Reason::PasswordResetUnknown,
                "this reset link is not known; ask for a new one",
            ));
        };
        if stored.used_at.is_some() {
            return Err(DomainError::precondition(
                Reason::PasswordResetUsed,
                "this reset link was already used; ask for a new one if you need to",
            ));
        }
        if stored.revoked_at.is_some() || stored.expires_at <= now {
            return Err(DomainError::precondition(
                Reason::PasswordResetExpired,
                "this reset link has expired, a newer one replaced it, or it ended when the password or the e-mail address changed; ask for a new one",
            ));
        }
        // Resets of one person queue here (PostgreSQL; SQLite has one
        // writer at a time): each takes its own link, then ends the others,
        // so two at once locked each other's links and one failed as a
        // deadlock. The mode leaves logins (which only reference the row)
        // alone.
        let row = user::Entity::find_by_id(stored.user_id)
            .lock(LockType::NoKeyUpdate)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", stored.user_id))?;
        if parse::<UserState>(&row.state)? != UserState::Active {
            return Err(DomainError::precondition(
                Reason::UserNotActive,
                "this user is not active; ask your user administrator",
            ));
        }
        let login_ids: Vec<&str> = [Some(row.email.as_str()), row.username.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let min_chars = self.min_password_chars(&txn, &row).await?;
        check_new_password(&password, &login_ids, min_chars).map_err(|rule| DomainError::invalid("password", rule))?;
        if !take_secret(&txn, stored.id, now).await? {
            return Err(DomainError::precondition(
                Reason::PasswordResetUsed,
                "this reset link was used, or ended by another reset, meanwhile",
            ));
        }
        self.store_password_in(&txn, row.id, phc, now).await?;
        self.end_reset_links(&txn, row.id, now).await?;
        // A login waiting for its second factor began with the old password.
        login_challenge::Entity::delete_many()
            .filter(login_challenge::Column::UserId.eq(row.id))
            .exec(&txn)
            .await?;
        let ended = api_token::Entity::update_many()
            .col_expr(api_token::Column::RevokedAt, Expr::value(now))
            .filter(api_token::Column::UserId.eq(row.id))
            .filter(api_token::Column::Kind.eq(crate::services::auth::KIND_SESSION))
            .filter(api_token::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        // A reset is what someone does who fears their password is known:
        // an API token minted with it (their own, or one made through a
        // share for a service account) would let whoever knew it in still,
        // for up to two years. So every API token the person made ends too.
        let tokens_ended = api_token::Entity::update_many()
            .col_expr(api_token::Column::RevokedAt, Expr::value(now))
            .filter(api_token::Column::OrganisationId.eq(row.organisation_id))
            .filter(api_token::Column::Kind.eq(crate::services::auth::KIND_API))
            .filter(api_token::Column::CreatedBy.eq(format!("user:{}", row.id)))
            .filter(api_token::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        let mut changes = Vec::new();
        diff(&mut changes, "password", "", "changed");
        diff(&mut changes, "sessions_ended", "", ended.rows_affected);
        diff(&mut changes, "api_tokens_ended", "", tokens_ended.rows_affected);
        diff(&mut changes, "peer", "", peer.as_deref().unwrap_or("unknown"));
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(row.organisation_id),
                subject: Subject::User(row.id),
                activity: Activity::PasswordReset,
                caller: &person_caller(&row),
                at: now,
                changes,
            },
        )
        .await?;
        txn.commit().await?;
        self.auth_cache.clear();
        Ok(())
    }
}
