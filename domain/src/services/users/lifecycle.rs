//! Deactivation (with an optional end), reactivation and deletion
//! (R-USR-4, R-USR-5), under the licence and administrator rules.

use super::*;

impl Domain {
    /// R-USR-4: deactivates for good (`until` None) or for a period. Calling it
    /// on a deactivated user changes the period.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn deactivate_user(
        &self,
        caller: &Caller,
        id: Uuid,
        until: Option<Millis>,
        reason: &str,
        etag: &str,
    ) -> DomainResult<User> {
        self.authorized_user(caller, Action::DeactivateUser, id).await?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        let updated = self.deactivate_user_in(&txn, caller, id, until, reason, etag).await?;
        txn.commit().await?;
        self.auth_cache.clear();
        Ok(updated)
    }

    /// DeactivateUser's rules and writes inside the caller's transaction.
    /// Cached callers are the caller's to clear after the commit.
    pub(crate) async fn deactivate_user_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        id: Uuid,
        until: Option<Millis>,
        reason: &str,
        etag: &str,
    ) -> DomainResult<User> {
        let now = now_millis();
        if let Some(until) = until
            && until <= now
        {
            return Err(DomainError::invalid("until", "must be in the future"));
        }
        // Written by a person and shown in history as written: the rules of
        // every such text (no NUL, no control, no bidirectional control).
        if let Err(rule) = validate::lines_of_text(reason, 0, 500) {
            return Err(DomainError::invalid("reason", rule));
        }
        let (current, row) = self
            .lock_user_for_write(txn, caller, Action::DeactivateUser, id, etag)
            .await?;
        match current.state {
            UserState::Deleted => {
                return Err(DomainError::precondition(
                    Reason::UserDeleted,
                    "a deleted user cannot be deactivated",
                ));
            }
            UserState::Active | UserState::PendingActivation => self.ensure_not_last_admin(txn, &current).await?,
            UserState::Deactivated => {
                // The same deactivation again (a retry whose answer was
                // lost, with no etag): nothing changes, so nothing is
                // written, and history does not show it twice.
                if current.deactivated_until == until && same_reason_as_last(txn, id, reason).await? {
                    return Ok(current);
                }
            }
        }
        // An open-ended deactivation that gets an end time reserves its seat
        // again: only if one is free (R-ORG-4).
        if !holds_seat(current.state, current.deactivated_until) && holds_seat(UserState::Deactivated, until) {
            self.ensure_seats_for_return(txn, &current).await?;
        }
        let mut changes = Vec::new();
        diff(&mut changes, "state", current.state, UserState::Deactivated);
        diff(
            &mut changes,
            "deactivated_until",
            opt_time(current.deactivated_until),
            opt_time(until),
        );
        if !reason.is_empty() {
            diff(&mut changes, "reason", "", reason);
        }
        let mut active: user::ActiveModel = row.clone().into();
        active.state = Set(UserState::Deactivated.to_string());
        active.deactivated_until = Set(until);
        self.write_user_change(txn, &row, active, now).await?;
        let ended = self.revoke_user_tokens(txn, id, now, false).await?;
        if ended > 0 {
            diff(&mut changes, "sessions", "", format!("{ended} ended"));
        }
        self.record_user_event(txn, &current, Activity::UserDeactivated, caller, now, changes)
            .await?;
        self.load_user(txn, id).await
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn reactivate_user(&self, caller: &Caller, id: Uuid, etag: &str) -> DomainResult<User> {
        self.authorized_user(caller, Action::ReactivateUser, id).await?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        let updated = self.reactivate_user_in(&txn, caller, id, etag).await?;
        txn.commit().await?;
        Ok(updated)
    }

    /// ReactivateUser's rules and writes inside the caller's transaction.
    pub(crate) async fn reactivate_user_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        id: Uuid,
        etag: &str,
    ) -> DomainResult<User> {
        let (current, row) = self
            .lock_user_for_write(txn, caller, Action::ReactivateUser, id, etag)
            .await?;
        if current.state != UserState::Deactivated {
            return Err(DomainError::precondition(
                Reason::UserNotDeactivated,
                format!(
                    "only a deactivated user can be reactivated; this one is {}",
                    current.state
                ),
            ));
        }
        // A timed deactivation kept its seats for this return (R-ORG-4); an
        // open-ended one needs free ones. The sweep follows the same rule:
        // it only ever returns timed deactivations.
        if !holds_seat(current.state, current.deactivated_until) {
            self.ensure_seats_for_return(txn, &current).await?;
        }
        let now = now_millis();
        let state = reactivated_state(&row);
        let mut changes = Vec::new();
        diff(&mut changes, "state", current.state, state);
        diff(
            &mut changes,
            "deactivated_until",
            opt_time(current.deactivated_until),
            "",
        );
        let mut active: user::ActiveModel = row.clone().into();
        active.state = Set(state.to_string());
        active.deactivated_until = Set(None);
        self.write_user_change(txn, &row, active, now).await?;
        self.record_user_event(txn, &current, Activity::UserReactivated, caller, now, changes)
            .await?;
        // Seed 001: a user administrator unlocks a locked login by
        // deactivating and then activating the user; only a login they may
        // unlock by hand, or the two steps would lift an organisation
        // administrator's lock that only the operator (R-ACC-6) or an
        // organisation administrator lifts.
        match crate::services::authorize_on_user_as_now(self, txn, caller, Action::UnlockLogin, id).await {
            Ok(_) => {
                self.lift_login_lock_in(txn, caller, &row, now).await?;
            }
            Err(DomainError::PermissionDenied { .. } | DomainError::NotFound { .. }) => {}
            Err(error) => return Err(error),
        }
        self.load_user(txn, id).await
    }

    /// R-USR-5: final; refused under DEACTIVATE_ONLY.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn delete_user(&self, caller: &Caller, id: Uuid, etag: &str) -> DomainResult<User> {
        self.authorized_user(caller, Action::DeleteUser, id).await?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        let updated = self.delete_user_in(&txn, caller, id, etag).await?;
        txn.commit().await?;
        self.auth_cache.clear();
        // Their certificates were revoked with them: publish at once (an
        // import's deletions are published by the worker's next look).
        if self.holds_revoked_certificates(id).await? {
            self.publish_crl_after_commit().await;
        }
        Ok(updated)
    }

    /// DeleteUser's rules and writes inside the caller's transaction.
    /// Cached callers are the caller's to clear after the commit.
    pub(crate) async fn delete_user_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        id: Uuid,
        etag: &str,
    ) -> DomainResult<User> {
        let (current, row) = self
            .lock_user_for_write(txn, caller, Action::DeleteUser, id, etag)
            .await?;
        let org = lock_organisation(txn, current.organisation_id).await?;
        crate::services::ensure_deletes_profiles(&org, "this user cannot be deleted")?;
        if current.state == UserState::Deleted {
            return Err(DomainError::precondition(
                Reason::UserDeleted,
                "the user is already deleted",
            ));
        }
        self.ensure_not_last_admin(txn, &current).await?;
        let now = now_millis();
        let mut changes = Vec::new();
        diff(&mut changes, "state", current.state, UserState::Deleted);
        let mut active: user::ActiveModel = row.clone().into();
        active.state = Set(UserState::Deleted.to_string());
        active.deactivated_until = Set(None);
        self.write_user_change(txn, &row, active, now).await?;
        self.revoke_user_tokens(txn, id, now, true).await?;
        forget_deleted_person_in(txn, caller, id, now).await?;
        self.record_user_event(txn, &current, Activity::UserDeleted, caller, now, changes)
            .await?;
        self.end_holder_certificates_in(txn, caller, id, HolderEnding::Left, now)
            .await?;
        self.hand_over_contact_in(txn, caller, id, now).await?;
        crate::services::access::end_delegation_of_in(txn, caller, id, now).await?;
        self.load_user(txn, id).await
    }

    /// Opens the write transaction of a lifecycle change: the organisation is
    /// locked first (the same order everywhere), then the user is read again
    /// and the caller's `etag` (empty: none) checked against that read, so no
    /// change can come between the check and the write (AIP-154).
    /// Locks the user's organisation, reads the user as they are under that
    /// lock, checks the etag and that the caller may take `action` on them.
    pub(crate) async fn lock_user_for_write(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        action: Action,
        id: Uuid,
        etag: &str,
    ) -> DomainResult<(User, user::Model)> {
        let row = user::Entity::find_by_id(id)
            .one(txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", id))?;
        lock_organisation(txn, row.organisation_id).await?;
        lock_user_row(txn, id).await?;
        let row = user::Entity::find_by_id(id)
            .one(txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", id))?;
        let roles = roles_of(txn, &[id]).await?.remove(&id).unwrap_or_default();
        let user = user_from_row(row.clone(), roles, &self.vault)?;
        let holds_level = crate::services::access::target_holds_level(txn, caller, id).await?;
        crate::policy::authorize_on_user(
            caller,
            action,
            Target::user(user.organisation_id, id, user.is_administrator(), user.unit_id).holding_level(holds_level),
        )?;
        check_etag("user", etag, row.version)?;
        Ok((user, row))
    }

    pub(crate) async fn record_user_event(
        &self,
        txn: &DatabaseTransaction,
        user: &User,
        activity: Activity,
        caller: &Caller,
        at: Millis,
        changes: Vec<FieldChange>,
    ) -> DomainResult<()> {
        history::record(
            txn,
            NewEvent {
                organisation_id: Some(user.organisation_id),
                subject: Subject::User(user.id),
                activity,
                caller,
                at,
                changes,
            },
        )
        .await
    }

    /// A deactivated user cannot act; a deleted one never again.
    /// Deactivation ends the person's sessions at once (issue 12): one
    /// opened on a lost laptop must not come back when they are
    /// reactivated, the unlock seed 001 describes. Their API tokens, made
    /// on purpose for an integration, are only blocked at authentication
    /// while they are deactivated and work again after. Deletion revokes
    /// everything for good. Returns how many it revoked.
    pub(super) async fn revoke_user_tokens(
        &self,
        txn: &DatabaseTransaction,
        user_id: Uuid,
        now: Millis,
        for_good: bool,
    ) -> DomainResult<u64> {
        let mut revoked = api_token::Entity::update_many()
            .col_expr(api_token::Column::RevokedAt, Expr::value(now))
            .filter(api_token::Column::UserId.eq(user_id))
            .filter(api_token::Column::RevokedAt.is_null());
        if !for_good {
            revoked = revoked.filter(api_token::Column::Kind.eq(crate::services::auth::KIND_SESSION));
        }
        // A login waiting for its second step is a session on its way: a
        // code given after the person is back (the unlock, seed 001) must
        // not open one that the deactivation was to end.
        use crate::persistence::entities::login_challenge;
        login_challenge::Entity::delete_many()
            .filter(login_challenge::Column::UserId.eq(user_id))
            .exec(txn)
            .await?;
        Ok(revoked.exec(txn).await?.rows_affected)
    }
}

/// The decision note of a rights request that ended with its requester.
const REQUESTER_DELETED_NOTE: &str = "closed: the person's profile was deleted";

/// What a deleted profile no longer keeps (R-USR-5, R-USR-9): the CPR
/// number (its look-up hash and its ciphertext) and the birth date, which
/// identify the person and prove who they are at activation, and every
/// credential and secret of theirs (password, authenticator app, login
/// challenges, activation and e-mail links). A deleted profile never signs
/// in or activates again, so none of it has a use left, and a database dump
/// must not carry a CPR number for people who are gone. Name and e-mail stay:
/// history names who did what. Mails to them not yet sent are dropped. Their
/// open rights requests end too, refused with a note by whoever deleted
/// them: no one can approve them any more, and a decision mailed later would
/// go to an address that may be someone else's by then. (DeleteUser also
/// ends the login challenges in `revoke_user_tokens`; the close for
/// anonymity does not call that, so they are ended here too.)
pub(crate) async fn forget_deleted_person_in(
    txn: &DatabaseTransaction,
    caller: &Caller,
    user_id: Uuid,
    now: Millis,
) -> DomainResult<()> {
    use crate::persistence::entities::{
        activation_secret, login_challenge, outbox_mail, password_credential, totp_credential,
    };
    // Mails to them not yet sent (a reset link, a pickup, a notice) would
    // reach an address that may be someone else's by the time the relay
    // takes them, with links that no longer work. Their address was theirs
    // alone among the organisation's live people until now.
    if let Some(person) = user::Entity::find_by_id(user_id).one(txn).await? {
        // Their address, and the one they were moving to (its link dies too).
        // Not a join request's confirmation: it is for whoever asked to
        // join with that address (perhaps the person again, from outside),
        // not for this profile, and its link does not die with it.
        let addresses: Vec<String> = std::iter::once(person.email).chain(person.pending_email).collect();
        let theirs = sea_orm::Condition::all()
            .add(outbox_mail::Column::OrganisationId.eq(person.organisation_id))
            .add(outbox_mail::Column::Recipient.is_in(addresses))
            .add(outbox_mail::Column::Kind.ne(crate::mail::MailKind::JoinConfirmation.as_str()));
        outbox_mail::Entity::delete_many()
            .filter(theirs.clone())
            .filter(outbox_mail::Column::State.eq(crate::services::outbox::STATE_PENDING))
            .exec(txn)
            .await?;
        // A parked one stays in the operator's list (it says what the relay
        // refused, which is about the domain, not the person), its content
        // gone and ended now, so RetryMail cannot send it (MAIL_EXPIRED).
        outbox_mail::Entity::update_many()
            .col_expr(outbox_mail::Column::Payload, Expr::value(""))
            .col_expr(outbox_mail::Column::DeliverBefore, Expr::value(now))
            .filter(theirs)
            .filter(outbox_mail::Column::State.eq(crate::services::outbox::STATE_FAILED))
            .exec(txn)
            .await?;
    }
    crate::services::rights_requests::close_open_requests_of_in(txn, caller, user_id, now, REQUESTER_DELETED_NOTE)
        .await?;
    user::Entity::update_many()
        .col_expr(user::Column::CprHash, Expr::value(Option::<String>::None))
        .col_expr(user::Column::CprCiphertext, Expr::value(Option::<String>::None))
        .col_expr(user::Column::BirthDate, Expr::value(Option::<String>::None))
        .filter(user::Column::Id.eq(user_id))
        .exec(txn)
        .await?;
    password_credential::Entity::delete_many()
        .filter(password_credential::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    totp_credential::Entity::delete_many()
        .filter(totp_credential::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    login_challenge::Entity::delete_many()
        .filter(login_challenge::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    activation_secret::Entity::delete_many()
        .filter(activation_secret::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    Ok(())
}

/// Whether `reason` adds nothing to the person's last deactivation: empty,
/// or the reason that deactivation gave (it is kept in history only).
async fn same_reason_as_last(txn: &DatabaseTransaction, user_id: Uuid, reason: &str) -> DomainResult<bool> {
    if reason.is_empty() {
        return Ok(true);
    }
    let last = history::recorded_change(
        txn,
        Subject::User(user_id),
        Activity::UserDeactivated,
        history::Which::Last,
        "reason",
    )
    .await?;
    Ok(last.as_deref() == Some(reason))
}
