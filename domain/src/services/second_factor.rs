//! The second factor of a login (R-AUTH-3). After the right password, a
//! person whose organisation requires it, or who enrolled an authenticator
//! app, gets a challenge instead of a session: a six-digit code mailed
//! through the outbox (seed 002), or the app's code (RFC 6238).
//! `verify_login_code` completes the login.
//!
//! Every code tried takes one of the challenge's few tries and one of the
//! account's login tries, both in conditional UPDATEs before the code is
//! compared, so parallel guesses cannot pass either limit, and wrong codes
//! lock the account exactly as wrong passwords do. The password's own try
//! is only given back once the second factor is proved: knowing the password
//! does not buy fresh tries at the code.

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait, LockType, OnConflict, Query, SelectStatement};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect};
use tracing::instrument;
use uuid::Uuid;

use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason};
use crate::mail::MailKind;
use crate::model::*;
use crate::persistence::entities::{activation_secret, login_challenge, organisation, totp_credential, user};
use crate::persistence::history::{self, NewEvent, Subject, diff};
use crate::persistence::mapping::parse;
use crate::policy::{Action, Caller};
use crate::secrets::{Secret, new_token, token_hash};
use crate::services::login::{LoggedIn, Reserved};
use crate::totp;
use crate::validate::Violations;

/// A right password that still needs its second factor. The token is shown
/// once, to the caller of Login, and names this step only.
#[derive(Debug)]
pub struct LoginChallenge {
    pub user_id: Uuid,
    pub organisation_id: Uuid,
    pub challenge_token: Secret,
    pub method: SecondFactorMethod,
    pub expires_at: Millis,
}

/// What Login answers: a session, or the second step.
#[derive(Debug)]
pub enum LoginOutcome {
    LoggedIn(LoggedIn),
    SecondFactor(LoginChallenge),
}

/// An authenticator app being enrolled: its secret, shown once, as text and
/// as the `otpauth://` URI apps read.
#[derive(Debug)]
pub struct TotpEnrolment {
    pub secret: Secret,
    pub otpauth_uri: Secret,
}

/// Any refusal of a code reads the same: wrong, expired, used, or no tries left.
fn code_refused() -> DomainError {
    DomainError::Unauthenticated {
        message: "the code is wrong or has expired, or too many codes were tried; log in again for a new one".into(),
    }
}

/// Six digits, spaces forgiven (people copy codes in groups).
fn parse_code(v: &mut Violations, code: &str) -> String {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.is_empty() {
        v.add("code", "is required");
    } else if code.len() != totp::DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        v.add(
            "code",
            "must be the 6 digits of the mailed code or the authenticator app",
        );
    }
    code
}

/// A confirmed authenticator app of `user_id`, for `EXISTS`.
pub(crate) fn confirmed_app_of(user_id: Uuid) -> SelectStatement {
    Query::select()
        .expr(Expr::value(1))
        .from(totp_credential::Entity)
        .and_where(Expr::col((totp_credential::Entity, totp_credential::Column::UserId)).eq(user_id))
        .and_where(Expr::col((totp_credential::Entity, totp_credential::Column::ConfirmedAt)).is_not_null())
        .to_owned()
}

/// The second factor a login must prove, from the organisation's rule and
/// whether the person has a confirmed app (see `second_factor_for`).
pub(crate) fn second_factor_method(organisation_requires: bool, has_app: bool) -> Option<SecondFactorMethod> {
    if has_app {
        Some(SecondFactorMethod::Totp)
    } else {
        organisation_requires.then_some(SecondFactorMethod::MailCode)
    }
}

impl Domain {
    /// The second factor `person` must prove at login, if any: the
    /// authenticator app once one is confirmed (the person chose it), else a
    /// mailed code when the organisation requires a second factor.
    pub(crate) async fn second_factor_for(
        &self,
        db: &impl ConnectionTrait,
        person: &user::Model,
    ) -> DomainResult<Option<SecondFactorMethod>> {
        let found: Option<(bool, bool)> = organisation::Entity::find_by_id(person.organisation_id)
            .select_only()
            .column(organisation::Column::SecondFactorRequired)
            .expr(Expr::exists(confirmed_app_of(person.id)))
            .into_tuple()
            .one(db)
            .await?;
        let (required, has_app) = found.unwrap_or_default();
        Ok(second_factor_method(required, has_app))
    }

    /// The shortest password `person` may choose (NIST SP 800-63B-4: 15
    /// where it is the only factor, 8 where a second one is required).
    pub(crate) async fn min_password_chars(
        &self,
        db: &impl ConnectionTrait,
        person: &user::Model,
    ) -> DomainResult<usize> {
        let settings = &self.settings.passwords;
        Ok(match self.second_factor_for(db, person).await? {
            Some(_) => settings.min_chars_with_second_factor,
            None => settings.min_chars,
        })
    }

    /// [`Self::min_password_chars`] of the person an activation or reset
    /// secret (by its hashes) belongs to; the general rule when it names no one.
    pub(crate) async fn min_password_chars_for_secret(&self, secret_hashes: &[String]) -> DomainResult<usize> {
        let owner = activation_secret::Entity::find()
            .filter(activation_secret::Column::SecretHash.is_in(secret_hashes.iter().cloned()))
            .one(&self.db)
            .await?;
        let person = match owner {
            Some(secret) => user::Entity::find_by_id(secret.user_id).one(&self.db).await?,
            None => None,
        };
        match person {
            Some(person) => self.min_password_chars(&self.db, &person).await,
            None => Ok(self.settings.passwords.min_chars),
        }
    }

    /// Starts the second step inside the login's transaction: the challenge
    /// row, the mailed code (through the outbox, in the same transaction),
    /// and its history event.
    pub(crate) async fn start_challenge_in(
        &self,
        txn: &DatabaseTransaction,
        person: &user::Model,
        method: SecondFactorMethod,
        peer: Option<&str>,
        now: Millis,
    ) -> DomainResult<LoginChallenge> {
        let settings = &self.settings.passwords;
        let id = Uuid::now_v7();
        let token = new_token();
        let expires_at = now + settings.code_ttl_ms;
        let code_hash = if method == SecondFactorMethod::MailCode {
            let code = new_login_code();
            let organisation_name = organisation::Entity::find_by_id(person.organisation_id)
                .one(txn)
                .await?
                .map(|o| o.name)
                .unwrap_or_default();
            let language = parse(&person.language)?;
            let valid_for = crate::mail::quantity(
                language,
                Ord::max(settings.code_ttl_ms / 60_000, 1),
                crate::mail::Unit::Minute,
            );
            self.enqueue_mail_until(
                txn,
                Some(person.organisation_id),
                MailKind::LoginCode,
                &person.email,
                &format!("{} {}", person.first_name, person.surname),
                language,
                &[
                    ("first_name", &person.first_name),
                    ("organisation_name", &organisation_name),
                    ("code", &code),
                    ("valid_for", &valid_for),
                ],
                Some(expires_at),
            )
            .await?;
            Some(self.login_code_hash(id, &code))
        } else {
            None
        };
        login_challenge::Entity::insert(login_challenge::ActiveModel {
            id: Set(id),
            user_id: Set(person.id),
            token_hash: Set(token_hash(&token)),
            method: Set(method.as_str().to_owned()),
            code_hash: Set(code_hash),
            attempts_left: Set(settings.code_attempts),
            created_at: Set(now),
            expires_at: Set(expires_at),
            used_at: Set(None),
            peer: Set(peer.map(str::to_owned)),
        })
        .exec_without_returning(txn)
        .await?;
        // Challenges a person never completed are of no use to anyone.
        login_challenge::Entity::delete_many()
            .filter(login_challenge::Column::UserId.eq(person.id))
            .filter(
                Condition::any()
                    .add(login_challenge::Column::ExpiresAt.lte(now))
                    .add(login_challenge::Column::UsedAt.is_not_null()),
            )
            .exec(txn)
            .await?;
        let mut changes = Vec::new();
        diff(&mut changes, "peer", "", peer.unwrap_or("unknown"));
        diff(&mut changes, "method", "", method.as_str());
        history::record(
            txn,
            NewEvent {
                organisation_id: Some(person.organisation_id),
                subject: Subject::User(person.id),
                activity: Activity::SecondFactorRequested,
                caller: &Caller::system("login"),
                at: now,
                changes,
            },
        )
        .await?;
        Ok(LoginChallenge {
            user_id: person.id,
            organisation_id: person.organisation_id,
            challenge_token: Secret::new(token),
            method,
            expires_at,
        })
    }

    /// A mailed code is kept as a keyed hash: six digits hashed bare are
    /// found by trying all million of them.
    fn login_code_hash(&self, challenge_id: Uuid, code: &str) -> String {
        self.vault.lookup_hash(&format!("login-code:{challenge_id}:{code}"))
    }

    /// Completes a login with the code of its challenge; starts the session.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn verify_login_code(
        &self,
        challenge_token: &str,
        code: &str,
        peer: Option<String>,
    ) -> DomainResult<LoggedIn> {
        let mut v = Violations::default();
        if challenge_token.trim().is_empty() {
            v.add("challenge_token", "is required");
        } else if challenge_token.len() > 200 {
            v.add("challenge_token", "must be at most 200 characters");
        }
        let code = parse_code(&mut v, code);
        v.into_result()?;
        // From the tries on, to the end whatever the caller does (see
        // `login`): a try taken is recorded as a failure or used.
        let domain = self.clone();
        let challenge_token = challenge_token.trim().to_owned();
        self.to_the_end(async move { domain.verify_login_code_in(&challenge_token, &code, peer).await })
            .await
    }

    async fn verify_login_code_in(
        &self,
        challenge_token: &str,
        code: &str,
        peer: Option<String>,
    ) -> DomainResult<LoggedIn> {
        let now = now_millis();
        let Some(challenge) = login_challenge::Entity::find()
            .filter(login_challenge::Column::TokenHash.eq(token_hash(challenge_token.trim())))
            .one(&self.db)
            .await?
        else {
            return Err(code_refused());
        };
        // One of the challenge's tries, taken before the code is compared.
        let txn = crate::persistence::begin_write(&self.db).await?;
        let taken = login_challenge::Entity::update_many()
            .col_expr(
                login_challenge::Column::AttemptsLeft,
                Expr::col(login_challenge::Column::AttemptsLeft).sub(1),
            )
            .filter(login_challenge::Column::Id.eq(challenge.id))
            .filter(login_challenge::Column::AttemptsLeft.gt(0))
            .filter(login_challenge::Column::UsedAt.is_null())
            .filter(login_challenge::Column::ExpiresAt.gt(now))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        if taken.rows_affected != 1 {
            return Err(code_refused());
        }
        let Some(person) = user::Entity::find_by_id(challenge.user_id).one(&self.db).await? else {
            return Err(code_refused());
        };
        // And one of the account's tries: wrong codes lock as wrong passwords do.
        let Reserved::Try { locks, taken } = self.reserve_login_try(person.id, now).await? else {
            return Err(code_refused());
        };
        let method: SecondFactorMethod = parse(&challenge.method)?;
        let matched = match method {
            SecondFactorMethod::MailCode => (challenge.code_hash.as_deref()
                == Some(self.login_code_hash(challenge.id, code).as_str()))
            .then_some(None),
            SecondFactorMethod::Totp => self
                .totp_step(person.id, code, now, true)
                .await?
                .map(|(step, _)| Some(step)),
        };
        let Some(totp_step) = matched else {
            self.record_login_failure(&person, locks, peer.as_deref(), now, Activity::SecondFactorFailed)
                .await?;
            return Err(code_refused());
        };
        let finished = self
            .complete_code_login(person.id, challenge.id, totp_step, method, peer.as_deref(), now)
            .await;
        if let Err(error) = &finished
            && error.is_outage()
        {
            // The right code met a failing database: its try of the
            // account is given back, as a login's is, and its try of the
            // challenge (three retries of UNAVAILABLE used the challenge up,
            // and the person had to start the login again).
            self.give_back_login_try(&taken, locks).await;
            let challenge_try = login_challenge::Entity::update_many()
                .col_expr(
                    login_challenge::Column::AttemptsLeft,
                    Expr::col(login_challenge::Column::AttemptsLeft).add(1),
                )
                .filter(login_challenge::Column::Id.eq(challenge.id))
                .filter(login_challenge::Column::UsedAt.is_null())
                .filter(login_challenge::Column::AttemptsLeft.lt(self.settings.passwords.code_attempts))
                .exec(&self.db)
                .await;
            if let Err(error) = challenge_try {
                tracing::warn!(%error, "a code's try taken before a database failure stays spent");
            }
        }
        finished
    }

    /// The right code: the challenge and the app's time step used, the
    /// session started, in one transaction.
    async fn complete_code_login(
        &self,
        person_id: Uuid,
        challenge_id: Uuid,
        totp_step: Option<i64>,
        method: SecondFactorMethod,
        peer: Option<&str>,
        now: Millis,
    ) -> DomainResult<LoggedIn> {
        let txn = crate::persistence::begin_write(&self.db).await?;
        // The person's row is locked until the session is written, first
        // (the order a reset takes them: the person, then their challenges),
        // as `finish_login` locks it: read unlocked, a deactivation that
        // committed just after the read ended every session but this one,
        // still to be written, and it worked again on reactivation.
        let person = user::Entity::find_by_id(person_id)
            .lock(LockType::Update)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", person_id))?;
        // Single use: the challenge, and the app's time step.
        let used = login_challenge::Entity::update_many()
            .col_expr(login_challenge::Column::UsedAt, Expr::value(now))
            .filter(login_challenge::Column::Id.eq(challenge_id))
            .filter(login_challenge::Column::UsedAt.is_null())
            .exec(&txn)
            .await?;
        if used.rows_affected != 1 {
            return Err(code_refused());
        }
        if let Some(step) = totp_step
            && !take_totp_step(&txn, person.id, step).await?
        {
            return Err(code_refused());
        }
        self.ensure_may_log_in(&person)?;
        let logged_in = self.complete_login_in(&txn, &person, peer, Some(method), now).await?;
        txn.commit().await?;
        Ok(logged_in)
    }

    /// The time step `code` means for `user_id`'s app (confirmed, or being
    /// enrolled when `confirmed` is false), if it is newer than the last one
    /// used; with the sealed row's user.
    async fn totp_step(
        &self,
        user_id: Uuid,
        code: &str,
        now: Millis,
        confirmed: bool,
    ) -> DomainResult<Option<(i64, totp_credential::Model)>> {
        let state = if confirmed {
            totp_credential::Column::ConfirmedAt.is_not_null()
        } else {
            totp_credential::Column::ConfirmedAt.is_null()
        };
        let Some(row) = totp_credential::Entity::find_by_id(user_id)
            .filter(state)
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let secret = hex::decode(self.vault.decrypt(&row.secret_sealed)?)
            .map_err(|_| DomainError::Internal("a stored authenticator secret is not hex".into()))?;
        let step = totp::matching_step(&secret, code, now.div_euclid(1000));
        Ok(step
            .filter(|step| row.last_step.is_none_or(|last| *step > last))
            .map(|step| (step, row)))
    }

    /// Starts enrolling an authenticator app for the caller themselves; the
    /// secret is shown once. Until `confirm_totp` proves the app holds it,
    /// logins do not ask for it.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn enroll_totp(&self, caller: &Caller) -> DomainResult<TotpEnrolment> {
        let Some(user_id) = caller.user_id() else {
            return Err(DomainError::denied(
                "only a person enrols an authenticator app, for themselves; operators sign in with tokens",
            ));
        };
        let now = now_millis();
        let mut secret = [0u8; totp::SECRET_BYTES];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
        let txn = crate::persistence::begin_write(&self.db).await?;
        let row = user::Entity::find_by_id(user_id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", user_id))?;
        let existing = totp_credential::Entity::find_by_id(user_id).one(&txn).await?;
        if existing.as_ref().is_some_and(|e| e.confirmed_at.is_some()) {
            return Err(already_enrolled());
        }
        // A pending enrolment is replaced; a confirmed one never is, not
        // even one confirmed after the read above (a parallel ConfirmTotp):
        // the replacement is conditional within its own statement, where a
        // delete-then-insert silently undid the person's second factor.
        let written = totp_credential::Entity::insert(totp_credential::ActiveModel {
            user_id: Set(user_id),
            secret_sealed: Set(self.vault.encrypt(&hex::encode(secret))),
            created_at: Set(now),
            confirmed_at: Set(None),
            last_step: Set(None),
        })
        .on_conflict(
            OnConflict::column(totp_credential::Column::UserId)
                .update_columns([
                    totp_credential::Column::SecretSealed,
                    totp_credential::Column::CreatedAt,
                    totp_credential::Column::LastStep,
                ])
                .action_and_where(Expr::col((totp_credential::Entity, totp_credential::Column::ConfirmedAt)).is_null())
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        if written == 0 {
            return Err(already_enrolled());
        }
        let issuer = organisation::Entity::find_by_id(row.organisation_id)
            .one(&txn)
            .await?
            .map(|o| o.name)
            .unwrap_or_else(|| "orgadmin".into());
        txn.commit().await?;
        Ok(TotpEnrolment {
            secret: Secret::new(totp::base32(&secret)),
            otpauth_uri: Secret::new(totp::otpauth_uri(&issuer, &row.email, &secret)),
        })
    }

    /// Confirms the caller's app with a code it shows; from now on their
    /// logins ask for the app's code.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn confirm_totp(&self, caller: &Caller, code: &str) -> DomainResult<()> {
        let Some(user_id) = caller.user_id() else {
            return Err(DomainError::denied(
                "only a person confirms their own authenticator app",
            ));
        };
        let mut v = Violations::default();
        let code = parse_code(&mut v, code);
        v.into_result()?;
        let now = now_millis();
        let pending = totp_credential::Entity::find_by_id(user_id)
            .filter(totp_credential::Column::ConfirmedAt.is_null())
            .one(&self.db)
            .await?;
        if pending.is_none() {
            return Err(DomainError::precondition(
                Reason::NoAuthenticatorPending,
                "no authenticator app is being enrolled; call EnrollTotp first",
            ));
        }
        let Some((step, row)) = self.totp_step(user_id, &code, now, false).await? else {
            return Err(DomainError::invalid(
                "code",
                "is not the authenticator app's current code; check the app and the phone's clock",
            ));
        };
        let txn = crate::persistence::begin_write(&self.db).await?;
        // The very secret the code was checked against, still unconfirmed.
        let confirmed = totp_credential::Entity::update_many()
            .col_expr(totp_credential::Column::ConfirmedAt, Expr::value(now))
            .col_expr(totp_credential::Column::LastStep, Expr::value(step))
            .filter(totp_credential::Column::UserId.eq(user_id))
            .filter(totp_credential::Column::SecretSealed.eq(row.secret_sealed))
            .filter(totp_credential::Column::ConfirmedAt.is_null())
            .exec(&txn)
            .await?;
        if confirmed.rows_affected != 1 {
            return Err(DomainError::precondition(
                Reason::NoAuthenticatorPending,
                "the enrolment changed meanwhile; call EnrollTotp again",
            ));
        }
        let person = user::Entity::find_by_id(user_id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", user_id))?;
        let mut changes = Vec::new();
        diff(&mut changes, "authenticator", "", "enrolled");
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(person.organisation_id),
                subject: Subject::User(user_id),
                activity: Activity::AuthenticatorEnrolled,
                caller,
                at: now,
                changes,
            },
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Removes a user's authenticator app (a lost phone): user
    /// administrators for their users, the operator for organisation
    /// administrators. The user's next login asks for a mailed code where
    /// the organisation requires a second factor, and for none elsewhere.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn remove_authenticator(&self, caller: &Caller, user_id: Uuid) -> DomainResult<User> {
        self.authorize_on_user(caller, Action::RemoveAuthenticator, user_id)
            .await?;
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        // Again under the organisation's lock, which a change of roles
        // takes: a promotion a moment ago makes the user an administrator,
        // whose second factor only someone who may change roles removes.
        let org_id = user::Entity::find_by_id(user_id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", user_id))?
            .organisation_id;
        crate::services::lock_organisation(&txn, org_id).await?;
        let row =
            crate::services::authorize_on_user_as_now(self, &txn, caller, Action::RemoveAuthenticator, user_id).await?;
        let removed = totp_credential::Entity::delete_by_id(user_id).exec(&txn).await?;
        if removed.rows_affected > 0 {
            let mut changes = Vec::new();
            diff(&mut changes, "authenticator", "enrolled", "");
            history::record(
                &txn,
                NewEvent {
                    organisation_id: Some(row.organisation_id),
                    subject: Subject::User(user_id),
                    activity: Activity::AuthenticatorRemoved,
                    caller,
                    at: now,
                    changes,
                },
            )
            .await?;
        }
        txn.commit().await?;
        self.get_user_unchecked(user_id).await
    }
}

/// Marks a time step of the app used; false when it (or a later one) was.
async fn take_totp_step(txn: &DatabaseTransaction, user_id: Uuid, step: i64) -> DomainResult<bool> {
    let taken = totp_credential::Entity::update_many()
        .col_expr(totp_credential::Column::LastStep, Expr::value(step))
        .filter(totp_credential::Column::UserId.eq(user_id))
        .filter(totp_credential::Column::ConfirmedAt.is_not_null())
        .filter(
            Condition::any()
                .add(totp_credential::Column::LastStep.is_null())
                .add(totp_credential::Column::LastStep.lt(step)),
        )
        .exec(txn)
        .await?;
    Ok(taken.rows_affected == 1)
}

/// Six random digits.
fn new_login_code() -> String {
    use rand::Rng;
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

fn already_enrolled() -> DomainError {
    DomainError::precondition(
        Reason::AuthenticatorEnrolled,
        "an authenticator app is enrolled already; a user administrator removes it (UserService.RemoveAuthenticator) before another is enrolled",
    )
}
