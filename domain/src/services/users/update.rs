//! Changing a user's fields and roles (R-USR-6, R-ORG-5), and the one
//! versioned row write every change of a user goes through.

use super::*;

impl Domain {
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn update_user(&self, caller: &Caller, id: Uuid, etag: &str, patch: UserPatch) -> DomainResult<User> {
        let changes_roles = patch.roles.is_some();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let (updated, revoked) = self.update_user_counting_in(&txn, caller, id, etag, patch).await?;
        txn.commit().await?;
        if changes_roles {
            // Rights may have changed: cached callers must be looked up again.
            self.auth_cache.clear();
        }
        // Certificates that sign were revoked with the right: publish at
        // once (an import's edit rows are published by the worker's next
        // look, as its deletions are).
        if revoked > 0 {
            self.publish_crl_after_commit().await;
        }
        Ok(updated)
    }

    /// UpdateUser's rules and writes inside the caller's transaction (the
    /// import job's edit rows run many in one). Cached callers are the
    /// caller's to clear after the commit when roles were given; a CRL is
    /// the worker's to publish when certificates were revoked.
    pub(crate) async fn update_user_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        id: Uuid,
        etag: &str,
        patch: UserPatch,
    ) -> DomainResult<User> {
        Ok(self.update_user_counting_in(txn, caller, id, etag, patch).await?.0)
    }

    /// [`Self::update_user_in`], with how many certificates it revoked (a
    /// withdrawn signing right revokes those that sign).
    async fn update_user_counting_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        id: Uuid,
        etag: &str,
        patch: UserPatch,
    ) -> DomainResult<(User, u64)> {
        let current = self.load_user(txn, id).await?;
        let holds_level = crate::services::access::target_holds_level(txn, caller, id).await?;
        let target = Target::user(current.organisation_id, id, current.is_administrator(), current.unit_id)
            .holding_level(holds_level);
        let touches_fields = patch.first_name.is_some()
            || patch.surname.is_some()
            || patch.email.is_some()
            || patch.username.is_some()
            || patch.cpr.is_some()
            || patch.birth_date.is_some()
            || patch.unit_id.is_some()
            || patch.phone.is_some()
            || patch.language.is_some()
            || patch.external_ids.is_some()
            || patch.identification_means.is_some()
            || patch.signing_right.is_some();
        // What would change how the person signs in: a value given and not
        // the one they have (an import's edit rows repeat unchanged cells).
        let key = |text: &str| crate::normalise::key(text.trim());
        let touches_sign_in = patch.email.as_deref().is_some_and(|e| key(e) != key(&current.email))
            || patch
                .username
                .as_ref()
                .is_some_and(|u| u.as_deref().map(key) != current.username.as_deref().map(key))
            || patch.cpr.is_some()
            || patch
                .birth_date
                .as_deref()
                .is_some_and(|d| Some(d.trim()) != current.birth_date.as_deref());
        // Read only for a change of how the person signs in, and only for
        // one who is no administrator (who is guarded as one anyway).
        // Moved in the same call, where they go counts too: a unit whose
        // system group may pass rights on makes them delegate.
        let delegates = async |current: &User| -> DomainResult<bool> {
            use crate::services::access::user_by_id_delegates;
            if !touches_sign_in || current.is_administrator() {
                return Ok(false);
            }
            Ok(user_by_id_delegates(self, txn, id, None).await?
                || (patch.unit_id.is_some() && user_by_id_delegates(self, txn, id, patch.unit_id).await?))
        };
        let target = target.delegating(delegates(&current).await?);
        let authorize_change = |caller: &Caller, target: Target| -> DomainResult<()> {
            if touches_fields || patch.roles.is_none() {
                crate::policy::authorize_on_user(caller, Action::UpdateUser, target)?;
            }
            // A scoped admin level moves users only within its subtree.
            if let Some(unit_id) = patch.unit_id {
                crate::policy::authorize(caller, Action::UpdateUser, target.moved_to(unit_id))?;
            }
            if patch.roles.is_some() {
                crate::policy::authorize_on_user(caller, Action::ChangeRoles, target)?;
            }
            if touches_sign_in {
                crate::policy::authorize_sign_in_change(caller, target)?;
            }
            Ok(())
        };
        authorize_change(caller, target)?;
        let mut v = Violations::default();
        // A name sent back as it is stored is no change, and is not held to
        // rules newer than it (a name with < or >, stored before they were
        // refused, would block every update that sends the whole person).
        fn changed<'a>(sent: Option<&'a str>, stored: &str) -> Option<&'a str> {
            sent.filter(|name| nfc(name.trim()) != stored)
        }
        let (first_name, surname, email) = check_identity_fields(
            &mut v,
            "user.",
            changed(patch.first_name.as_deref(), &current.first_name),
            changed(patch.surname.as_deref(), &current.surname),
            patch.email.as_deref(),
        );
        let username = patch.username.as_ref().map(|u| u.as_deref().map(nfc));
        if let Some(Some(username)) = &username {
            v.check("user.username", validate::username(username));
        }
        if patch.cpr.is_some() && patch.birth_date.is_some() {
            v.add("cpr", "give either a CPR number or a birth date, not both");
        }
        let new_cpr = match &patch.cpr {
            Some(cpr) => match validate::normalise_cpr(cpr) {
                Ok(c) => Some(c),
                Err(e) => {
                    v.add("cpr", e);
                    None
                }
            },
            None => None,
        };
        let birth_date = patch
            .birth_date
            .as_deref()
            .and_then(|date| check_birth_date(&mut v, "user.birth_date", date));
        if let Some(Some(phone)) = &patch.phone {
            v.check("user.phone", validate::phone(phone));
        }
        if let Some(ids) = &patch.external_ids {
            v.check("user.external_ids", validate::external_ids(ids));
        }
        if current.service_account {
            check_service_account(
                &mut v,
                "user.",
                "cpr",
                ServiceAccountFields {
                    holds_roles: patch
                        .roles
                        .as_ref()
                        .is_some_and(|roles| roles.iter().any(|r| r.is_administrator())),
                    has_cpr: patch.cpr.is_some() || patch.birth_date.is_some(),
                    has_identification_means: patch.identification_means.as_ref().is_some_and(|m| !m.is_empty()),
                    signing_right: patch.signing_right == Some(true),
                },
            );
        }
        v.into_result()?;
        let org = lock_organisation(txn, current.organisation_id).await?;
        lock_user_row(txn, id).await?;
        // Checked on the user as they are under the lock: a DeleteUser that
        // committed while this call waited for it leaves nothing to change
        // (read before the lock, the deleted profile was rewritten, and an
        // address change mailed a link for it).
        let current = self.load_user(txn, id).await?;
        if current.state == UserState::Deleted {
            return Err(DomainError::precondition(
                Reason::UserDeleted,
                "a deleted user cannot be changed",
            ));
        }
        // A name sent back as it was read before the lock is no longer the
        // stored one when a rename committed in between: then it is a
        // change after all (the sent value wins, as every other field's
        // does), held to today's rules. Compared only before the lock, the
        // rename stayed and the call answered as if it had been applied.
        let (first_name, surname) = {
            let mut late = Violations::default();
            fn unchecked<'a>(checked: &Option<String>, sent: Option<&'a str>) -> Option<&'a str> {
                sent.filter(|_| checked.is_none())
            }
            let (late_first_name, late_surname, _) = check_identity_fields(
                &mut late,
                "user.",
                changed(unchecked(&first_name, patch.first_name.as_deref()), &current.first_name),
                changed(unchecked(&surname, patch.surname.as_deref()), &current.surname),
                None,
            );
            late.into_result()?;
            (first_name.or(late_first_name), surname.or(late_surname))
        };
        // Two keys (R-ACC-4, R-ACC-7), under the lock (a grant to a group
        // made a moment ago counts): placing oneself in a production unit
        // whose system group holds rights would be giving oneself rights.
        if let Some(Some(unit)) = patch.unit_id
            && caller.acting_user_id() == Some(id)
            && current.unit_id != Some(unit)
        {
            crate::services::access::groups::ensure_joining_gives_no_rights(
                self,
                txn,
                current.organisation_id,
                Some(unit),
                current.unit_id,
                "nobody places themselves in or",
            )
            .await?;
        }

        // Two keys (R-ACC-4): nobody gives themselves a role; a colleague
        // does (or approves their request). Giving one up is one's own call.
        if caller.acting_user_id() == Some(id)
            && let Some(roles) = &patch.roles
            && roles.iter().any(|r| r.is_administrator() && !current.roles.contains(r))
        {
            return Err(DomainError::denied(
                "nobody gives themselves a role: a colleague must (two keys)",
            ));
        }
        // The same for the signing right: with it a person signs for the
        // organisation (a SIGNING certificate, the organisation
        // certificate's seal).
        if caller.acting_user_id() == Some(id) && patch.signing_right == Some(true) && !current.signing_right {
            return Err(DomainError::denied(
                "nobody gives themselves the signing right: a colleague must (two keys)",
            ));
        }
        // Again on the user as they are under the lock: one moved out of a
        // scoped level's subtree (or given a role) a moment ago is beyond it.
        // And by the caller as they are under it: a role change checked on
        // the caller as authenticated went through after a demotion of the
        // caller committed while it waited for the lock (an organisation
        // administrator being demoted could still make a colleague one).
        if caller.holds_levels() || touches_sign_in || patch.roles.is_some() {
            let caller_now = crate::services::access::caller_as_now(self, txn, caller).await?;
            authorize_change(
                &caller_now,
                Target::user(current.organisation_id, id, current.is_administrator(), current.unit_id)
                    .holding_level(holds_level)
                    .delegating(delegates(&current).await?),
            )?;
        }
        check_etag("user", etag, current.version).map_err(|e| e.within("user"))?;
        // R-ORG-3, against the settings as they are under the lock: the
        // means this change adds (an edit row repeating what a person holds
        // changes nothing, and is no refusal).
        if let Some(means) = &patch.identification_means {
            let added: Vec<IdentificationMeans> = means
                .iter()
                .copied()
                .filter(|m| !current.identification_means.contains(m))
                .collect();
            if let Some(refusal) = means_beyond_allowed(&allowed_means(&org)?, &added) {
                return Err(DomainError::invalid("user.identification_means", refusal));
            }
        }
        let row = user::Entity::find_by_id(id)
            .one(txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", id))?;
        let mut active: user::ActiveModel = row.clone().into();
        let mut changes = Vec::new();
        if let Some(name) = &first_name {
            diff(&mut changes, "first_name", &row.first_name, name);
            active.first_name = Set(name.clone());
        }
        if let Some(name) = &surname {
            diff(&mut changes, "surname", &row.surname, name);
            active.surname = Set(name.clone());
        }
        // R-USR-6: a new address waits for verification; the old one stays
        // in force. A user not yet activated has used no address: theirs
        // changes at once (and a CPR user's activation link follows it); so
        // does a service account's, which is no one's mailbox (R-ACC-5).
        // Not a profile re-created for anonymity: its person signed in
        // before, and its activation link would follow the address to
        // whoever typed it. Giving the address in force again withdraws a
        // waiting change.
        let changed_email = email.as_ref().filter(|e| e.as_str() != row.email).cloned();
        let withdraws_change = email.is_some() && changed_email.is_none() && row.pending_email.is_some();
        let never_proved = current.state == UserState::PendingActivation
            && changed_email.is_some()
            && !crate::services::anonymity::recreated_for_anonymity(txn, row.id).await?;
        let (new_email, email_to_verify) = match changed_email {
            Some(email) if never_proved || current.service_account => (Some(email), None),
            Some(email) => (
                None,
                Some(email).filter(|e| row.pending_email.as_deref() != Some(e.as_str())),
            ),
            None => (None, None),
        };
        if let Some(email) = &new_email {
            diff(&mut changes, "email", &row.email, email.as_str());
            active.email = Set(email.as_str().to_owned());
            active.email_key = Set(Some(email.key().to_owned()));
            active.email_verified = Set(false);
            active.pending_email = Set(None);
        }
        if let Some(email) = &email_to_verify {
            diff(
                &mut changes,
                "pending_email",
                row.pending_email.clone().unwrap_or_default(),
                email.as_str(),
            );
            active.pending_email = Set(Some(email.as_str().to_owned()));
        }
        if withdraws_change {
            diff(
                &mut changes,
                "pending_email",
                row.pending_email.clone().unwrap_or_default(),
                "",
            );
            active.pending_email = Set(None);
        }
        if first_name.is_some() || surname.is_some() || new_email.is_some() {
            active.search_text = Set(normalise::search_text(
                first_name.as_deref().unwrap_or(&row.first_name),
                surname.as_deref().unwrap_or(&row.surname),
                new_email.as_ref().map_or(row.email.as_str(), Email::as_str),
            ));
        }
        let new_username = username.filter(|u| *u != row.username);
        if let Some(username) = &new_username {
            diff(
                &mut changes,
                "username",
                row.username.clone().unwrap_or_default(),
                username.clone().unwrap_or_default(),
            );
            active.username = Set(username.clone());
            active.username_key = Set(username.as_deref().map(normalise::key));
        }
        let new_cpr_hash = new_cpr
            .as_ref()
            .map(|c| self.vault.lookup_hash(c))
            .filter(|h| Some(h) != row.cpr_hash.as_ref());
        if let (Some(cpr), Some(hash)) = (&new_cpr, &new_cpr_hash) {
            diff(&mut changes, "cpr", "", HIDDEN);
            diff(
                &mut changes,
                "birth_date",
                row.birth_date.clone().unwrap_or_default(),
                "",
            );
            active.cpr_hash = Set(Some(hash.clone()));
            active.cpr_ciphertext = Set(Some(self.vault.encrypt(cpr)));
            active.birth_date = Set(None);
        }
        if let Some(date) = birth_date {
            if row.cpr_hash.is_some() {
                diff(&mut changes, "cpr", HIDDEN, "");
            }
            diff(
                &mut changes,
                "birth_date",
                row.birth_date.clone().unwrap_or_default(),
                &date,
            );
            active.birth_date = Set(Some(date));
            active.cpr_hash = Set(None);
            active.cpr_ciphertext = Set(None);
        }
        if let Some(unit) = patch.unit_id {
            if let Some(unit) = unit {
                self.unit_in_organisation(txn, unit, org.id, "unit_id")
                    .await
                    .map_err(|e| e.within("user"))?;
            }
            diff(&mut changes, "unit_id", opt_id(row.unit_id), opt_id(unit));
            active.unit_id = Set(unit);
        }
        if let Some(phone) = patch.phone {
            diff(
                &mut changes,
                "phone",
                row.phone.clone().unwrap_or_default(),
                phone.clone().unwrap_or_default(),
            );
            active.phone = Set(phone);
        }
        if let Some(language) = patch.language {
            diff(&mut changes, "language", &row.language, language);
            active.language = Set(language.to_string());
        }
        if let Some(ids) = patch.external_ids {
            let value = json_list(&ids);
            diff(&mut changes, "external_ids", &row.external_ids, &value);
            active.external_ids = Set(value);
        }
        if let Some(means) = patch.identification_means {
            let value = json_list(&means);
            diff(&mut changes, "identification_means", &row.identification_means, &value);
            active.identification_means = Set(value);
        }
        if let Some(signing) = patch.signing_right {
            diff(&mut changes, "signing_right", row.signing_right, signing);
            active.signing_right = Set(signing);
            // Signing through the organisation certificate needs the right.
            if !signing && row.signs_with_organisation_certificate {
                diff(&mut changes, "signs_with_organisation_certificate", true, false);
                active.signs_with_organisation_certificate = Set(false);
            }
        }
        let new_roles = patch.roles.map(normalise_roles).filter(|r| *r != current.roles);
        // Becoming an administrator: how they sign in is from now on changed
        // only by someone who may change roles (R-AUTH-1), so the links and
        // codes issued while they were an ordinary user (perhaps to an
        // address a user administrator chose) end with the promotion. A
        // waiting address change is withdrawn; a pending user's links and
        // codes end.
        let promoted = !current.is_administrator()
            && new_roles
                .as_ref()
                .is_some_and(|roles| roles.iter().any(|r| r.is_administrator()));
        // Moved into a unit whose system group may pass a right on, a
        // person starts to delegate: the same from now on (R-AUTH-1).
        let moves_into_delegation = match patch.unit_id {
            Some(unit) if unit != row.unit_id && !current.is_administrator() => {
                use crate::services::access::user_by_id_delegates;
                !user_by_id_delegates(self, txn, id, None).await?
                    && user_by_id_delegates(self, txn, id, Some(unit)).await?
            }
            _ => false,
        };
        if moves_into_delegation {
            crate::services::access::ensure_may_make_delegate(
                self,
                txn,
                caller,
                current.organisation_id,
                "moving them into this unit",
            )
            .await?;
        }
        let starts_guarded = promoted || moves_into_delegation;
        let withdraws_for_promotion = starts_guarded && row.pending_email.is_some() && email_to_verify.is_none();
        if withdraws_for_promotion {
            diff(
                &mut changes,
                "pending_email",
                row.pending_email.as_deref().unwrap_or_default(),
                "",
            );
            active.pending_email = Set(None);
        }
        if let Some(roles) = &new_roles {
            let gains_admin =
                roles.contains(&Role::OrganisationAdmin) && !current.roles.contains(&Role::OrganisationAdmin);
            let loses_admin =
                !roles.contains(&Role::OrganisationAdmin) && current.roles.contains(&Role::OrganisationAdmin);
            if gains_admin && holds_seat(current.state, current.deactivated_until) {
                self.ensure_admin_seat_free(txn, &org).await?;
            }
            if loses_admin {
                self.ensure_not_last_admin(txn, &current).await?;
            }
            diff(&mut changes, "roles", json_list(&current.roles), json_list(roles));
        }
        if changes.is_empty() {
            return Ok((current, 0));
        }
        if let Some(roles) = &new_roles {
            user_role::Entity::delete_many()
                .filter(user_role::Column::UserId.eq(id))
                .exec(txn)
                .await?;
            write_roles(txn, id, org.id, roles).await?;
        }
        let now = now_millis();
        self.write_user_change(txn, &row, active, now).await?;
        let mut revoked = 0;
        if patch.signing_right == Some(false) && row.signing_right {
            revoked = self
                .end_holder_certificates_in(txn, caller, id, HolderEnding::SigningRightWithdrawn, now)
                .await?;
        }
        if let Some(unit) = patch.unit_id
            && unit != row.unit_id
        {
            // R-ACC-7: out of a production unit, out of its system group, and
            // what the user passed on through its grants goes with it.
            crate::services::access::groups::left_system_groups_in(self, txn, caller, &row, unit, now).await?;
        }
        // A new address gets a new link; the same address spelt with other
        // capitals is no change of how the person signs in (it was not
        // checked as one) and sends nothing.
        let new_address = new_email
            .as_ref()
            .is_some_and(|e| crate::normalise::key(e.as_str()) != crate::normalise::key(&row.email));
        if email_to_verify.is_some() || withdraws_change || new_email.is_some() || withdraws_for_promotion {
            let written = user::Entity::find_by_id(id)
                .one(txn)
                .await?
                .ok_or_else(|| DomainError::not_found("user", id))?;
            self.withdraw_email_change(txn, id, now).await?;
            if let Some(email) = &email_to_verify {
                // Asked by someone else (an administrator): held, and the
                // person hears of it at the address in force, before the new
                // one can take over their password resets and codes, and can
                // withdraw it.
                let asked_by_other = caller.acting_user_id() != Some(id);
                let hold = self.settings.email_change_hold_ms;
                // Always written: a link without a start is one an older
                // release made, and is held (`verify_email`).
                // Held to a whole minute, as the mails name it.
                let usable_from = if asked_by_other && hold > 0 {
                    crate::mail::whole_minute_from(now + hold)
                } else {
                    now
                };
                self.request_email_change(txn, &written, email, &org.name, Some(usable_from))
                    .await?;
                if asked_by_other {
                    self.enqueue_mail(
                        txn,
                        Some(org.id),
                        crate::mail::MailKind::EmailChangeNotice,
                        &written.email,
                        &format!("{} {}", written.first_name, written.surname),
                        parse(&written.language)?,
                        &[
                            ("first_name", &written.first_name),
                            ("organisation_name", &org.name),
                            ("new_email", email.as_str()),
                            ("confirmable_from", &crate::mail::date_time(usable_from)),
                        ],
                    )
                    .await?;
                }
            }
            // Recorded as sent by the caller, as SendActivation is: the link
            // goes to the address they typed, so the person is their
            // stand-in (`ensure_no_stand_in_of`).
            if new_address && written.cpr_hash.is_some() {
                self.send_activation_link_in(txn, caller, &written, &org.name).await?;
            }
        }
        // No new link by itself, not even to the address on record: a
        // pending person's address and CPR number were set by whoever
        // created them, perhaps a user administrator's own mailbox and a
        // number they know. Someone who may change roles sends one (or gave
        // a new address in this call, which mailed its own link above).
        if starts_guarded && current.state == UserState::PendingActivation && !new_address {
            self.end_activation_secrets(txn, id, now).await?;
        }
        history::record(
            txn,
            NewEvent {
                organisation_id: Some(org.id),
                subject: Subject::User(id),
                activity: Activity::UserUpdated,
                caller,
                at: now,
                changes,
            },
        )
        .await?;
        Ok((self.load_user(txn, id).await?, revoked))
    }

    /// R-ORG-3: the organisation `org_id` (locked by the caller) now allows
    /// only `allowed`: every person holding another means loses it, with a
    /// history event each, in the caller's transaction (the settings
    /// change's). A person's means always lie within the organisation's, so
    /// what is exported or shown of them is what they may use. Returns how
    /// many people lost a means.
    ///
    /// One UPDATE per distinct stored list (a handful: there are four
    /// means), not per person: the organisation stays locked a moment, not
    /// for one write per person of a large organisation, and each UPDATE
    /// locks and re-reads its rows itself, so a row the reactivation sweep
    /// holds (it writes users without the organisation's lock) is waited
    /// for, not found changed.
    pub(crate) async fn withdraw_means_beyond_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        org_id: Uuid,
        allowed: &[IdentificationMeans],
        now: Millis,
    ) -> DomainResult<u64> {
        use sea_orm::Condition;
        use sea_orm::sea_query::ExprTrait;
        let withdrawn: Vec<IdentificationMeans> = IdentificationMeans::ALL
            .iter()
            .copied()
            .filter(|m| !allowed.contains(m))
            .collect();
        if withdrawn.is_empty() {
            return Ok(0);
        }
        // The stored list is JSON text: a quoted name narrows the rows read
        // (a LIKE's `_` may match more; the parsed list decides).
        let holding = withdrawn.iter().fold(Condition::any(), |any, means| {
            any.add(user::Column::IdentificationMeans.contains(format!("\"{}\"", means.as_str())))
        });
        let lists: Vec<String> = user::Entity::find()
            .select_only()
            .column(user::Column::IdentificationMeans)
            .distinct()
            .filter(user::Column::OrganisationId.eq(org_id))
            .filter(user::Column::State.ne(UserState::Deleted.as_str()))
            .filter(holding)
            .into_tuple()
            .all(txn)
            .await?;
        let mut events = Vec::new();
        for held_text in lists {
            let held: Vec<IdentificationMeans> = crate::persistence::mapping::parse_list(&held_text)?;
            let kept: Vec<IdentificationMeans> = held.iter().copied().filter(|m| allowed.contains(m)).collect();
            if kept.len() == held.len() {
                continue;
            }
            let kept_text = json_list(&kept);
            let changed = user::Entity::update_many()
                .col_expr(user::Column::IdentificationMeans, Expr::value(kept_text.clone()))
                .col_expr(user::Column::Version, Expr::col(user::Column::Version).add(1))
                .col_expr(user::Column::UpdatedAt, Expr::value(now))
                .filter(user::Column::OrganisationId.eq(org_id))
                .filter(user::Column::State.ne(UserState::Deleted.as_str()))
                .filter(user::Column::IdentificationMeans.eq(held_text.clone()))
                .exec_with_returning(txn)
                .await?;
            for row in changed {
                let mut changes = Vec::new();
                diff(&mut changes, "identification_means", &held_text, &kept_text);
                events.push(NewEvent {
                    organisation_id: Some(org_id),
                    subject: Subject::User(row.id),
                    activity: Activity::UserUpdated,
                    caller,
                    at: now,
                    changes,
                });
            }
        }
        let people = events.len() as u64;
        history::record_all(txn, events).await?;
        Ok(people)
    }

    /// Writes the row if nobody changed it since `before` was read.
    pub(super) async fn write_user_change(
        &self,
        txn: &DatabaseTransaction,
        before: &user::Model,
        mut active: user::ActiveModel,
        now: Millis,
    ) -> DomainResult<()> {
        active.version = Set(before.version + 1);
        active.updated_at = Set(now);
        let state_before = parse::<UserState>(&before.state)?;
        let state_after = match &active.state {
            ActiveValue::Set(state) | ActiveValue::Unchanged(state) => parse::<UserState>(state)?,
            ActiveValue::NotSet => state_before,
        };
        let until_after = match &active.deactivated_until {
            ActiveValue::Set(until) | ActiveValue::Unchanged(until) => *until,
            ActiveValue::NotSet => before.deactivated_until,
        };
        let seat_before = holds_seat(state_before, before.deactivated_until);
        let seat_after = holds_seat(state_after, until_after);
        let result = user::Entity::update_many()
            .set(active)
            .filter(user::Column::Id.eq(before.id))
            .filter(user::Column::Version.eq(before.version))
            .exec(txn)
            .await?;
        if result.rows_affected != 1 {
            return Err(DomainError::stale_etag("user"));
        }
        // A take is conditional: the limit holds whatever the caller checked.
        apply_licence_delta(txn, before.organisation_id, licence_delta(seat_before, seat_after)).await
    }
}
