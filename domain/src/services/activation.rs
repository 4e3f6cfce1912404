//! Activation (R-USR-3): a single-use link mailed to CPR users, a temporary
//! code handed over for birth-date users. Secrets are random, stored as
//! SHA-256 only, expire, are single use, and stop working when replaced.

use rand::Rng;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect};
use tracing::instrument;
use uuid::Uuid;

use super::lock_organisation;
use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason};
use crate::mail::MailKind;
use crate::model::*;
use crate::persistence::entities::{activation_secret, organisation, user};
use crate::persistence::history::{self, NewEvent, Subject, diff};
use crate::persistence::mapping::parse;
use crate::policy::{Action, Caller, Principal};
use crate::secrets::{Secret, new_token, token_hash};
use crate::validate;

pub(crate) const KIND_LINK: &str = "LINK";
const KIND_CODE: &str = "CODE";
/// A link that verifies a changed e-mail address (R-USR-6). Kept apart from
/// activation: one never works in place of the other, and neither replaces
/// the other.
pub(crate) const KIND_EMAIL: &str = "EMAIL";
/// A link to choose a new password (R-AUTH-2); its own family too.
pub(crate) const KIND_RESET: &str = "RESET";
const ACTIVATION_KINDS: [&str; 2] = [KIND_LINK, KIND_CODE];

/// The secrets a new secret of `kind` replaces.
fn family(kind: &str) -> Vec<&'static str> {
    match kind {
        KIND_EMAIL => vec![KIND_EMAIL],
        KIND_RESET => vec![KIND_RESET],
        _ => ACTIVATION_KINDS.to_vec(),
    }
}

/// Letters and digits that cannot be mistaken for each other when read aloud
/// or copied by hand (no 0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// 10 symbols of 31: about 49 bits, with a few attempts per code.
const CODE_LENGTH: usize = 10;

/// The single-use links orgadmin mails.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SingleUseLink {
    /// Saying whether the user can hold earlier secrets to end.
    Activation(Earlier),
    /// Always ends the earlier verification link; works from `usable_from`
    /// when given (a change asked by someone else, held).
    EmailVerification { usable_from: Option<Millis> },
    /// Always ends the earlier reset link.
    PasswordReset,
}

/// What the person proves they are when activating. `Debug` names the
/// kind of proof, never its value.
#[derive(Clone)]
pub enum ActivationProof {
    Cpr(String),
    BirthDate(String),
}

impl std::fmt::Debug for ActivationProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpr(_) => "Cpr(<hidden>)",
            Self::BirthDate(_) => "BirthDate(<hidden>)",
        })
    }
}

/// The secret they activate with. `Debug` names the kind, never the secret.
#[derive(Clone)]
pub enum ActivationSecret {
    LinkToken(String),
    Code(String),
}

impl std::fmt::Debug for ActivationSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::LinkToken(_) => "LinkToken(<hidden>)",
            Self::Code(_) => "Code(<hidden>)",
        })
    }
}

fn new_code() -> String {
    let mut rng = rand::rng();
    let symbols: String = (0..CODE_LENGTH)
        .map(|_| CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char)
        .collect();
    format!("{}-{}", &symbols[..5], &symbols[5..])
}

/// Codes are typed by people: ignore case, spaces and dashes.
fn normalise_code(code: &str) -> String {
    let clean: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if clean.len() == CODE_LENGTH {
        format!("{}-{}", &clean[..5], &clean[5..])
    } else {
        clean
    }
}

/// Whether the user can hold open secrets that a new one replaces. A user
/// inserted in this very transaction holds none: no UPDATE to end them (one
/// round trip less per CreateUser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Earlier {
    /// End the open secrets of the same family first.
    End,
    /// A new user: there is nothing to end.
    NoneYet,
}

impl Domain {
    /// Ends every open secret of the user of the `kinds` given (a new one
    /// replaces them).
    async fn revoke_activation_secrets(
        &self,
        db: &impl ConnectionTrait,
        user_id: Uuid,
        kinds: &[&str],
        now: Millis,
    ) -> DomainResult<()> {
        activation_secret::Entity::update_many()
            .col_expr(activation_secret::Column::RevokedAt, Expr::value(now))
            .filter(activation_secret::Column::UserId.eq(user_id))
            .filter(activation_secret::Column::Kind.is_in(kinds.to_vec()))
            .filter(activation_secret::Column::UsedAt.is_null())
            .filter(activation_secret::Column::RevokedAt.is_null())
            .exec(db)
            .await?;
        Ok(())
    }

    /// Ends the user's open activation links and codes (a new one is made
    /// by whoever may).
    pub(crate) async fn end_activation_secrets(
        &self,
        db: &impl ConnectionTrait,
        user_id: Uuid,
        now: Millis,
    ) -> DomainResult<()> {
        self.revoke_activation_secrets(db, user_id, &ACTIVATION_KINDS, now)
            .await
    }

    /// Ends the user's open password-reset links: they went to an address
    /// that is no longer theirs (whoever reads the old mailbox, often why it
    /// changed, must not set the password), or a reset just set it (a
    /// second link, asked for in parallel, must not set it again).
    pub(crate) async fn end_reset_links(
        &self,
        db: &impl ConnectionTrait,
        user_id: Uuid,
        now: Millis,
    ) -> DomainResult<()> {
        self.revoke_activation_secrets(db, user_id, &[KIND_RESET], now).await
    }

    pub(crate) async fn store_secret(
        &self,
        db: &impl ConnectionTrait,
        user_id: Uuid,
        kind: &str,
        secret: &str,
        earlier: Earlier,
        usable_from: Option<Millis>,
    ) -> DomainResult<Millis> {
        let now = now_millis();
        if earlier == Earlier::End {
            self.revoke_activation_secrets(db, user_id, &family(kind), now).await?;
        }
        let ttl = if kind == KIND_RESET {
            self.settings.passwords.reset_ttl_ms
        } else {
            self.settings.activation_ttl_ms
        };
        // A link or code whose mail names only its last day works through
        // that day; a reset link's mail names the time.
        let expires_at = if kind == KIND_RESET {
            now + ttl
        } else {
            crate::mail::link_end(now, ttl)
        };
        activation_secret::Entity::insert(activation_secret::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user_id),
            kind: Set(kind.into()),
            secret_hash: Set(if kind == KIND_CODE {
                self.activation_code_hash(secret)
            } else {
                token_hash(secret)
            }),
            failed_attempts: Set(0),
            expires_at: Set(expires_at),
            used_at: Set(None),
            revoked_at: Set(None),
            created_at: Set(now),
            usable_from: Set(usable_from),
            send_request_id: Set(None),
            send_request_hash: Set(None),
        })
        .exec_without_returning(db)
        .await?;
        Ok(expires_at)
    }

    /// A new link for a CPR user, mailed through the outbox.
    pub(crate) async fn issue_activation_link(
        &self,
        txn: &DatabaseTransaction,
        row: &user::Model,
        organisation_name: &str,
        earlier: Earlier,
    ) -> DomainResult<()> {
        let template = self.settings.activation_url_template.clone();
        self.mail_single_use_link(
            txn,
            row,
            SingleUseLink::Activation(earlier),
            &row.email,
            &template,
            organisation_name,
        )
        .await
    }

    /// Stores a new single-use secret of `link`'s kind (ending the open ones
    /// it replaces) and mails the link to `recipient`, in the caller's
    /// transaction.
    pub(crate) async fn mail_single_use_link(
        &self,
        txn: &DatabaseTransaction,
        row: &user::Model,
        link: SingleUseLink,
        recipient: &str,
        url_template: &str,
        organisation_name: &str,
    ) -> DomainResult<()> {
        let (kind, mail, link_name, earlier, usable_from) = match link {
            SingleUseLink::Activation(earlier) => (KIND_LINK, MailKind::Activation, "activation_link", earlier, None),
            SingleUseLink::EmailVerification { usable_from } => (
                KIND_EMAIL,
                MailKind::EmailVerification,
                "verification_link",
                Earlier::End,
                usable_from,
            ),
            SingleUseLink::PasswordReset => (KIND_RESET, MailKind::PasswordReset, "reset_link", Earlier::End, None),
        };
        let token = new_token();
        let expires_at = self
            .store_secret(txn, row.id, kind, &token, earlier, usable_from)
            .await?;
        let url = url_template.replace("{token}", &token);
        // A reset link lasts hours: its mail gives the time, not only the day.
        let (expiry_name, expiry) = if kind == KIND_RESET {
            ("expires_at", crate::mail::date_time(expires_at))
        } else {
            (
                "expires_on",
                crate::mail::link_end_text(expires_at, self.settings.activation_ttl_ms),
            )
        };
        // From when the link works: at once, or after a hold (a change of
        // address asked by someone else), which the recipient should know
        // before they open it.
        let usable_from = crate::mail::date_time(usable_from.unwrap_or_else(now_millis));
        self.enqueue_mail_until(
            txn,
            Some(row.organisation_id),
            mail,
            recipient,
            &format!("{} {}", row.first_name, row.surname),
            parse(&row.language)?,
            &[
                ("first_name", &row.first_name),
                ("organisation_name", organisation_name),
                (link_name, &url),
                (expiry_name, &expiry),
                ("usable_from", &usable_from),
            ],
            Some(expires_at),
        )
        .await?;
        Ok(())
    }

    /// How an activation code is stored: keyed with the look-up key. A code
    /// has about 49 bits and its proof (a birth date) is stored in clear, so
    /// a plain hash in a dump is found by trying every code, all codes of
    /// the dump in one pass; links have 256 bits and need no key.
    fn activation_code_hash(&self, code: &str) -> String {
        self.vault.lookup_hash(&format!("activation-code:{code}"))
    }

    /// A new code for a birth-date user; returned once, to the administrator.
    pub(crate) async fn issue_activation_code(
        &self,
        txn: &DatabaseTransaction,
        row: &user::Model,
        earlier: Earlier,
    ) -> DomainResult<(String, Millis)> {
        let code = new_code();
        let expires_at = self.store_secret(txn, row.id, KIND_CODE, &code, earlier, None).await?;
        Ok((code, expires_at))
    }

    async fn pending_user_for_activation(
        &self,
        caller: &Caller,
        user_id: Uuid,
    ) -> DomainResult<(DatabaseTransaction, user::Model, organisation::Model)> {
        let row = self
            .authorize_on_user(caller, Action::ManageActivation, user_id)
            .await?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        let org = lock_organisation(&txn, row.organisation_id).await?;
        // Again as things stand under the lock: a promotion committed a
        // moment ago makes the user an administrator, whose activation only
        // someone who may change roles hands out.
        let row =
            crate::services::authorize_on_user_as_now(self, &txn, caller, Action::ManageActivation, user_id).await?;
        if parse::<UserState>(&row.state)? != UserState::PendingActivation {
            return Err(DomainError::precondition(
                Reason::UserNotPending,
                format!(
                    "only a user pending activation can be activated; this one is {}",
                    row.state
                ),
            ));
        }
        Ok((txn, row, org))
    }

    /// Re-sends the activation mail with a new link; the old link stops
    /// working. With a `request_id` (AIP-155), a retry of a call that
    /// landed sends nothing: a second mail's link ended the first mail's,
    /// and the person held two mails, one dead.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn send_activation(&self, caller: &Caller, user_id: Uuid, request_id: Option<&str>) -> DomainResult<()> {
        if let Some(id) = request_id {
            crate::validate::request_id(id).map_err(|rule| DomainError::invalid("request_id", rule))?;
        }
        let fingerprint = super::request_fingerprint(caller, &("SendActivation", user_id));
        if let Some(id) = request_id {
            // Before the state check: the first call's link may have been
            // used by now, and the retry still answers as the first did.
            let row = self
                .authorize_on_user(caller, Action::ManageActivation, user_id)
                .await?;
            if self
                .answered_send(&self.db, row.organisation_id, id, &fingerprint)
                .await?
            {
                return Ok(());
            }
        }
        let (txn, row, org) = self.pending_user_for_activation(caller, user_id).await?;
        // Again under the organisation's lock: a twin of this retry that
        // committed while this one waited for it.
        if let Some(id) = request_id
            && self.answered_send(&txn, org.id, id, &fingerprint).await?
        {
            return Ok(());
        }
        if row.cpr_hash.is_none() && !super::anonymity::recreated_for_anonymity(&txn, row.id).await? {
            return Err(DomainError::precondition(
                Reason::NoCprNumber,
                "this user has no CPR number and activates with a code: use CreateActivationCode",
            ));
        }
        self.send_activation_link_in(&txn, caller, &row, &org.name).await?;
        if let Some(id) = request_id {
            // The link just made is the user's only live one (it ended the
            // others).
            activation_secret::Entity::update_many()
                .col_expr(activation_secret::Column::SendRequestId, Expr::value(id))
                .col_expr(activation_secret::Column::SendRequestHash, Expr::value(fingerprint))
                .filter(activation_secret::Column::UserId.eq(row.id))
                .filter(activation_secret::Column::Kind.eq(KIND_LINK))
                .filter(activation_secret::Column::UsedAt.is_null())
                .filter(activation_secret::Column::RevokedAt.is_null())
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Whether a SendActivation of `organisation_id` already used
    /// `request_id`: `true` when it was this request (nothing to send
    /// again), REQUEST_ID_REUSED when it was another (another user, another
    /// caller), `false` when no call used it.
    async fn answered_send(
        &self,
        db: &impl ConnectionTrait,
        organisation_id: Uuid,
        request_id: &str,
        fingerprint: &str,
    ) -> DomainResult<bool> {
        let stored: Option<Option<String>> = activation_secret::Entity::find()
            .select_only()
            .column(activation_secret::Column::SendRequestHash)
            .filter(activation_secret::Column::SendRequestId.eq(request_id))
            .filter(
                activation_secret::Column::UserId.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(user::Column::Id)
                        .from(user::Entity)
                        .and_where(user::Column::OrganisationId.eq(organisation_id))
                        .to_owned(),
                ),
            )
            .into_tuple()
            .one(db)
            .await?;
        match stored {
            None => Ok(false),
            Some(stored) => {
                super::ensure_same_request(stored.as_deref(), fingerprint, "activation mail").map(|()| true)
            }
        }
    }

    /// Mails a CPR user waiting for activation a new link (the old one
    /// stops working) and records it: SendActivation and
    /// BatchSendActivation, in the caller's transaction.
    pub(crate) async fn send_activation_link_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        row: &user::Model,
        organisation_name: &str,
    ) -> DomainResult<()> {
        self.issue_activation_link(txn, row, organisation_name, Earlier::End)
            .await?;
        let mut changes = Vec::new();
        diff(&mut changes, "activation", "", "link mailed");
        history::record(
            txn,
            NewEvent {
                organisation_id: Some(row.organisation_id),
                subject: Subject::User(row.id),
                activity: Activity::ActivationSent,
                caller,
                at: now_millis(),
                changes,
            },
        )
        .await
    }

    /// A new code for a user without a CPR number; the old code stops working.
    /// The user is told by mail that a new code exists (not the code itself).
    /// Returns the code and when it stops working.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn create_activation_code(&self, caller: &Caller, user_id: Uuid) -> DomainResult<(String, Millis)> {
        let (txn, row, org) = self.pending_user_for_activation(caller, user_id).await?;
        if row.cpr_hash.is_some() {
            return Err(DomainError::precondition(
                Reason::HasCprNumber,
                "this user has a CPR number and activates by the mailed link: use SendActivation",
            ));
        }
        // A code comes back to the administrator, who may read the birth
        // date it is matched with.
        if super::anonymity::recreated_for_anonymity(&txn, row.id).await? {
            return Err(DomainError::precondition(
                Reason::ActivatesByLink,
                "this profile was re-created for anonymity and the person activates it by the link mailed to them: use SendActivation",
            ));
        }
        // The code comes back to the caller: an operator could activate an
        // administrator's profile as them (its birth date is theirs to
        // read), so an operator gets it only while the organisation has no
        // active administrator, as for appointing one.
        if caller.is_operator()
            && crate::services::active_role_holders(&txn, org.id, Role::OrganisationAdmin).await? > 0
        {
            return Err(DomainError::denied(
                crate::services::users::OPERATOR_APPOINTS_ONLY_WITHOUT_ADMIN,
            ));
        }
        let (code, expires_at) = self.issue_activation_code(&txn, &row, Earlier::End).await?;
        self.enqueue_mail(
            &txn,
            Some(org.id),
            MailKind::NewCodeNotice,
            &row.email,
            &format!("{} {}", row.first_name, row.surname),
            parse(&row.language)?,
            &[("first_name", &row.first_name), ("organisation_name", &org.name)],
        )
        .await?;
        let mut changes = Vec::new();
        diff(&mut changes, "activation", "", "code created");
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(org.id),
                subject: Subject::User(user_id),
                activity: Activity::ActivationCodeCreated,
                caller,
                at: now_millis(),
                changes,
            },
        )
        .await?;
        txn.commit().await?;
        Ok((code, expires_at))
    }

    /// The person activates with link token or code plus their CPR number or
    /// birth date. No bearer token: the secret is the credential. The person
    /// gets a session token of their own (R-AUTH-1): their first credential
    /// comes from their own activation, never from an administrator. With
    /// `new_password` they also set their password (R-AUTH-2: passwords are
    /// set only by the person, with a link or code only they received).
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn activate_user(
        &self,
        secret: ActivationSecret,
        proof: ActivationProof,
        new_password: Option<crate::passwords::Password>,
    ) -> DomainResult<Activated> {
        let (hashes, field) = match &secret {
            ActivationSecret::LinkToken(token) => (vec![token_hash(token.trim())], "token"),
            ActivationSecret::Code(code) => {
                let code = normalise_code(code);
                // A code made before codes were hashed with the key is
                // stored under its plain hash; it is found so until it
                // expires (`activation_ttl_ms`).
                (vec![self.activation_code_hash(&code), token_hash(&code)], "code")
            }
        };
        let proof = match proof {
            ActivationProof::Cpr(cpr) => {
                ActivationProof::Cpr(validate::normalise_cpr(&cpr).map_err(|e| DomainError::invalid("cpr", e))?)
            }
            ActivationProof::BirthDate(date) => {
                validate::birth_date(&date, chrono::Utc::now().date_naive())
                    .map_err(|e| DomainError::invalid("birth_date", e))?;
                ActivationProof::BirthDate(date)
            }
        };
        // Hashed before the transaction: no write lock waits for argon2. The
        // rule about the person's own login ids is checked once they are known.
        // The length rule is the person's (a second factor allows shorter
        // passwords), read before any try of the proof is spent.
        let password = match new_password {
            Some(password) => {
                let min_chars = self.min_password_chars_for_secret(&hashes).await?;
                Some((
                    self.hash_new_password("password", &password, &[], min_chars).await?,
                    password,
                ))
            }
            None => None,
        };
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let refused = |reason: Reason, message: &str| DomainError::precondition(reason, message.to_owned());
        let Some(stored) = activation_secret::Entity::find()
            .filter(activation_secret::Column::SecretHash.is_in(hashes))
            .filter(activation_secret::Column::Kind.is_in(ACTIVATION_KINDS))
            .one(&txn)
            .await?
        else {
            return Err(refused(
                Reason::ActivationUnknown,
                &format!(
                    "this activation {field} is not known; check it, or ask your user administrator for a new one"
                ),
            ));
        };
        self.ensure_secret_usable(&stored, now)?;
        let row = user::Entity::find_by_id(stored.user_id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", stored.user_id))?;
        let matches = match &proof {
            ActivationProof::Cpr(cpr) => row.cpr_hash.as_deref() == Some(self.vault.lookup_hash(cpr).as_str()),
            ActivationProof::BirthDate(date) => {
                row.cpr_hash.is_none() && validate::is_stored_date(row.birth_date.as_deref(), date)
            }
        };
        if !matches {
            // Count the miss (and burn the secret at the limit) even though
            // the call fails: that is what limits guessing. One conditional
            // UPDATE, so parallel guesses cannot lose each other's count: on
            // PostgreSQL a second writer waits for the first and re-checks
            // the WHERE clause against its result; SQLite has one writer.
            let counted = self.count_activation_miss(&txn, stored.id, now).await?;
            txn.commit().await?;
            if !counted {
                // Others' misses locked it while this guess was checked.
                return Err(self.locked_or_replaced(stored.id).await?);
            }
            return Err(refused(
                Reason::ActivationMismatch,
                "the CPR number or birth date does not match this activation",
            ));
        }
        if parse::<UserState>(&row.state)? != UserState::PendingActivation {
            return Err(refused(
                Reason::UserNotPending,
                "this user profile is not waiting for activation",
            ));
        }
        if let Some((_, typed)) = &password {
            let login_ids: Vec<&str> = [Some(row.email.as_str()), row.username.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            let min_chars = self.min_password_chars(&txn, &row).await?;
            crate::passwords::check_new_password(typed, &login_ids, min_chars)
                .map_err(|rule| DomainError::invalid("password", rule))?;
        }
        let org = lock_organisation(&txn, row.organisation_id).await?;
        if !take_secret(&txn, stored.id, now).await? {
            drop(txn);
            return Err(self.locked_or_replaced(stored.id).await?);
        }
        self.revoke_activation_secrets(&txn, row.id, &ACTIVATION_KINDS, now)
            .await?;
        // A mailed link proves the address reaches the person (R-USR-6); a
        // code handed over does not.
        let proved_email = row.email_verified || stored.kind == KIND_LINK;
        let updated = user::Entity::update_many()
            .col_expr(user::Column::State, Expr::value(UserState::Active.as_str()))
            .col_expr(user::Column::EmailVerified, Expr::value(proved_email))
            .col_expr(user::Column::ActivatedAt, Expr::value(now))
            .col_expr(user::Column::Version, Expr::value(row.version + 1))
            .col_expr(user::Column::UpdatedAt, Expr::value(now))
            .filter(user::Column::Id.eq(row.id))
            .filter(user::Column::Version.eq(row.version))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            return Err(DomainError::stale_etag("user"));
        }
        let caller = person_caller(&row);
        let how = if stored.kind == KIND_CODE { "code" } else { "link" };
        let (session_token, session_expires_at) = self.issue_session(&txn, &row, "activation", now).await?;
        let mut changes = Vec::new();
        diff(&mut changes, "state", UserState::PendingActivation, UserState::Active);
        diff(&mut changes, "activated_with", "", how);
        diff(&mut changes, "session", "", "started");
        if let Some((phc, _)) = password {
            self.store_password_in(&txn, row.id, phc, now).await?;
            diff(&mut changes, "password", "", "set");
        }
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(org.id),
                subject: Subject::User(row.id),
                activity: Activity::UserActivated,
                caller: &caller,
                at: now,
                changes,
            },
        )
        .await?;
        self.enqueue_mail(
            &txn,
            Some(org.id),
            MailKind::Welcome,
            &row.email,
            &format!("{} {}", row.first_name, row.surname),
            parse(&row.language)?,
            &[("first_name", &row.first_name), ("organisation_name", &org.name)],
        )
        .await?;
        txn.commit().await?;
        Ok(Activated {
            user: self.get_user_unchecked(row.id).await?,
            session_token,
            session_expires_at,
        })
    }

    /// Refuses a secret that was used, replaced, locked by misses, or expired.
    pub(crate) fn ensure_secret_usable(&self, stored: &activation_secret::Model, now: Millis) -> DomainResult<()> {
        if stored.used_at.is_some() {
            return Err(DomainError::precondition(
                Reason::ActivationUsed,
                "this activation link or code was already used",
            ));
        }
        if stored.revoked_at.is_some() {
            return Err(locked_or_replaced(stored, self.settings.activation_max_attempts));
        }
        if stored.expires_at <= now {
            return Err(DomainError::precondition(
                Reason::ActivationExpired,
                "this activation link or code has expired; ask your user administrator to send a new one",
            ));
        }
        Ok(())
    }

    /// Counts one wrong CPR number or birth date against a live secret and
    /// revokes it at the limit, in one statement. False when the secret was
    /// no longer live (used, revoked or locked by others' misses).
    async fn count_activation_miss(&self, db: &impl ConnectionTrait, id: Uuid, now: Millis) -> DomainResult<bool> {
        let attempts_after = Expr::col(activation_secret::Column::FailedAttempts).add(1);
        let counted = activation_secret::Entity::update_many()
            .col_expr(activation_secret::Column::FailedAttempts, attempts_after.clone())
            .col_expr(
                activation_secret::Column::RevokedAt,
                Expr::case(
                    attempts_after.gte(self.settings.activation_max_attempts),
                    Expr::value(now),
                )
                .finally(Expr::value(Option::<i64>::None))
                .into(),
            )
            .filter(activation_secret::Column::Id.eq(id))
            .filter(activation_secret::Column::UsedAt.is_null())
            .filter(activation_secret::Column::RevokedAt.is_null())
            .exec(db)
            .await?;
        Ok(counted.rows_affected == 1)
    }

    /// Why a secret that was live when read no longer is, read afresh.
    pub(crate) async fn locked_or_replaced(&self, id: Uuid) -> DomainResult<DomainError> {
        let stored = activation_secret::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| DomainError::not_found("activation", id))?;
        if stored.used_at.is_some() {
            return Ok(DomainError::precondition(
                Reason::ActivationUsed,
                "this activation link or code was already used",
            ));
        }
        Ok(locked_or_replaced(&stored, self.settings.activation_max_attempts))
    }
}

/// Uses a single-use secret if it is still live now: a parallel guess may
/// have locked it (or a parallel call used it) since it was read. False when
/// it was not.
pub(crate) async fn take_secret(db: &impl ConnectionTrait, id: Uuid, now: Millis) -> DomainResult<bool> {
    let taken = activation_secret::Entity::update_many()
        .col_expr(activation_secret::Column::UsedAt, Expr::value(now))
        .filter(activation_secret::Column::Id.eq(id))
        .filter(activation_secret::Column::UsedAt.is_null())
        .filter(activation_secret::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(taken.rows_affected == 1)
}

/// The person a secret proved, as the caller history names: they act for
/// themselves, with no role.
pub(crate) fn person_caller(row: &user::Model) -> Caller {
    member_caller(row, Vec::new())
}

/// A user of the organisation acting with `roles` (the import job acts as
/// its requester with the roles they hold now), named as history names them.
/// No admin levels: imports need the user administrator role, which every
/// row's check is then allowed by.
pub(crate) fn member_caller(row: &user::Model, roles: Vec<Role>) -> Caller {
    Caller::new(Principal::Member {
        user_id: row.id,
        organisation_id: row.organisation_id,
        roles,
        levels: Vec::new(),
    })
    .with_identity(format!("{} {}", row.first_name, row.surname), row.email.clone())
}

/// `member_caller`'s display name as SQL over the `users` row of a
/// statement, for a statement that writes history from the row it locks
/// (`log_in_in_one_statement`). The same text: the name, a space, the
/// surname (test `login::history_names_a_person_alike_on_either_path`).
pub(crate) fn display_name_of_user_row() -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::Expr;
    Expr::cust_with_exprs(
        "$1 || ' ' || $2",
        [
            Expr::col((user::Entity, user::Column::FirstName)),
            Expr::col((user::Entity, user::Column::Surname)),
        ],
    )
}

fn locked_or_replaced(stored: &activation_secret::Model, max_attempts: i32) -> DomainError {
    if stored.failed_attempts >= max_attempts {
        DomainError::precondition(
            Reason::ActivationLocked,
            "this activation link or code was locked after too many wrong CPR numbers or birth dates; ask your user administrator for a new one",
        )
    } else {
        DomainError::precondition(
            Reason::ActivationReplaced,
            "this activation link or code was replaced; use the newest one, or ask your user administrator for a new one",
        )
    }
}

/// A completed activation: the user, and the session token of the person
/// who activated (shown once).
#[derive(Debug)]
pub struct Activated {
    pub user: User,
    pub session_token: Secret,
    pub session_expires_at: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_readable_and_normalise() {
        let code = new_code();
        assert_eq!(code.len(), 11);
        assert!(code.chars().all(|c| c == '-' || CODE_ALPHABET.contains(&(c as u8))));
        assert_eq!(normalise_code(&code.to_lowercase().replace('-', " ")), code);
    }
}
