//! R-USR-6: a changed e-mail address is verified before it replaces the old
//! one. UpdateUser puts the new address in `pending_email` and mails a
//! single-use link to it; the old address stays in force (logins, mail) until
//! the person opens the link (VerifyEmail). A user still waiting for
//! activation has not used any address yet: theirs changes at once, and a CPR
//! user's activation link goes to the new one. A change asked by someone
//! else (an administrator) is held: its link works only after
//! `email_change_hold_ms`, while the person, told at the address in force,
//! may withdraw it (giving that address again). Else whoever may edit a
//! person's address could move it to a mailbox of their own, verify it at
//! once and reset the person's password: sign in as them.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter};
use tracing::instrument;

use super::activation::{KIND_EMAIL, SingleUseLink, person_caller, take_secret};
use super::lock_organisation;
use crate::Domain;
use crate::email::Email;
use crate::error::{DomainError, DomainResult, Reason, unique_rule_refusal};
use crate::model::*;
use crate::normalise;
use crate::persistence::entities::{activation_secret, user};
use crate::persistence::history::{self, NewEvent, Subject, diff};
use crate::persistence::mapping::parse;

use crate::secrets::token_hash;

impl Domain {
    /// Inside the transaction of an UpdateUser that changes the address of
    /// `row` (as written): mails a verification link to `new_email`. An
    /// address another live user of the organisation has is refused now,
    /// with the rule's own reason, rather than at verification.
    pub(crate) async fn request_email_change(
        &self,
        txn: &DatabaseTransaction,
        row: &user::Model,
        new_email: &Email,
        organisation_name: &str,
        usable_from: Option<Millis>,
    ) -> DomainResult<()> {
        let taken = user::Entity::find()
            .filter(user::Column::OrganisationId.eq(row.organisation_id))
            .filter(user::Column::EmailKey.eq(new_email.key()))
            .filter(user::Column::State.ne(UserState::Deleted.as_str()))
            .filter(user::Column::Id.ne(row.id))
            .count(txn)
            .await?;
        if taken > 0 {
            return Err(unique_rule_refusal(Reason::EmailTaken));
        }
        let template = self.settings.email_verification_url_template.clone();
        self.mail_single_use_link(
            txn,
            row,
            SingleUseLink::EmailVerification { usable_from },
            new_email.as_str(),
            &template,
            organisation_name,
        )
        .await
    }

    /// Ends an open verification link (the change was withdrawn).
    pub(crate) async fn withdraw_email_change(
        &self,
        txn: &DatabaseTransaction,
        user_id: uuid::Uuid,
        now: Millis,
    ) -> DomainResult<()> {
        activation_secret::Entity::update_many()
            .col_expr(activation_secret::Column::RevokedAt, Expr::value(now))
            .filter(activation_secret::Column::UserId.eq(user_id))
            .filter(activation_secret::Column::Kind.eq(KIND_EMAIL))
            .filter(activation_secret::Column::UsedAt.is_null())
            .filter(activation_secret::Column::RevokedAt.is_null())
            .exec(txn)
            .await?;
        Ok(())
    }

    /// The person opened the link mailed to their new address: it replaces
    /// the old one and counts as verified. The token is the credential.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn verify_email(&self, token: &str) -> DomainResult<User> {
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let Some(stored) = activation_secret::Entity::find()
            .filter(activation_secret::Column::SecretHash.eq(token_hash(token.trim())))
            .filter(activation_secret::Column::Kind.eq(KIND_EMAIL))
            .one(&txn)
            .await?
        else {
            return Err(DomainError::precondition(
                Reason::EmailVerificationUnknown,
                "this verification link is not known; check it, or change the address again for a new one",
            ));
        };
        self.ensure_secret_usable(&stored, now)?;
        // Every link this release makes names its start. One without was
        // made by a pod of the older release during an upgrade (or after a
        // rollback), which knew no hold, so whoever asked for it: it is
        // held as an administrator's would be.
        let from = stored
            .usable_from
            .unwrap_or(stored.created_at.saturating_add(self.settings.email_change_hold_ms));
        if from > now {
            return Err(DomainError::precondition(
                Reason::EmailChangeHeld,
                format!(
                    "this change can be confirmed from {} (a change asked by an administrator, or made while the service was being upgraded, waits); until then it is withdrawn by giving the address in force again",
                    crate::mail::date_time(from)
                ),
            ));
        }
        let row = user::Entity::find_by_id(stored.user_id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", stored.user_id))?;
        lock_organisation(&txn, row.organisation_id).await?;
        let row = user::Entity::find_by_id(stored.user_id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", stored.user_id))?;
        if parse::<UserState>(&row.state)? == UserState::Deleted {
            return Err(DomainError::precondition(Reason::UserDeleted, "the user is deleted"));
        }
        // A live link always has its change waiting (withdrawing a change
        // ends its link); should they ever part, the link names nothing.
        let Some(pending) = row.pending_email.clone() else {
            return Err(DomainError::precondition(
                Reason::EmailVerificationUnknown,
                "no change of e-mail address is waiting for verification",
            ));
        };
        let email = Email::parse(&pending).map_err(DomainError::Internal)?;
        if !take_secret(&txn, stored.id, now).await? {
            drop(txn);
            return Err(self.locked_or_replaced(stored.id).await?);
        }
        // The unique index on (organisation, e-mail key) refuses an address
        // someone else took meanwhile, as EMAIL_TAKEN.
        let updated = user::Entity::update_many()
            .col_expr(user::Column::Email, Expr::value(email.as_str()))
            .col_expr(user::Column::EmailKey, Expr::value(email.key()))
            .col_expr(
                user::Column::SearchText,
                Expr::value(normalise::search_text(&row.first_name, &row.surname, email.as_str())),
            )
            .col_expr(user::Column::PendingEmail, Expr::value(Option::<String>::None))
            .col_expr(user::Column::EmailVerified, Expr::value(true))
            .col_expr(user::Column::Version, Expr::value(row.version + 1))
            .col_expr(user::Column::UpdatedAt, Expr::value(now))
            .filter(user::Column::Id.eq(row.id))
            .filter(user::Column::Version.eq(row.version))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            return Err(DomainError::stale_etag("user"));
        }
        self.end_reset_links(&txn, row.id, now).await?;
        let caller = person_caller(&row);
        let mut changes = Vec::new();
        diff(&mut changes, "email", &row.email, email.as_str());
        diff(&mut changes, "pending_email", &pending, "");
        diff(&mut changes, "email_verified", row.email_verified, true);
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(row.organisation_id),
                subject: Subject::User(row.id),
                activity: Activity::EmailVerified,
                caller: &caller,
                at: now,
                changes,
            },
        )
        .await?;
        txn.commit().await?;
        // Callers carry their e-mail for history: look them up again.
        self.auth_cache.clear();
        self.get_user_unchecked(row.id).await
    }
}
