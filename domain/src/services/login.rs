//! Login with a password (R-AUTH-2, R-AUTH-3), the lockout that guards it,
//! unlocking, and logout.
//!
//! The lockout is taken before the password is checked: each attempt first
//! reserves one of the account's remaining tries in one conditional UPDATE
//! (the last try also sets the lock), and only then spends ~50 ms on argon2.
//! So however many guesses arrive in parallel, at most `max_failures` are
//! ever checked per lock period (ZITADEL's GHSA-7h8m-vrxx-vr4m was parallel
//! attempts slipping past a counter read before the check). A right password
//! gives the tries back and lifts the lock its own try set. A process that
//! dies between reservation and answer leaves at most a spent try and a lock
//! that ends by itself. A caller that goes away (a deadline, a dropped
//! call) does not: from the try on, the attempt runs to its end in a task of
//! its own, so the try is given back or recorded as a failure, and a lock it
//! set is in the history. And no try is taken when the hashing queue is full:
//! its place is reserved first.
//!
//! Every refusal reads the same, whether the login id is unknown, has no
//! password, is locked or the password is wrong, and costs the same time (an
//! unknown id is checked against a dummy hash): a caller learns nothing about
//! which accounts exist. Only after the right password does the answer say
//! that the user may not log in (pending, deactivated).

use sea_orm::sea_query::{Expr, ExprTrait, IntoCondition, LockType, Query, SelectStatement, SimpleExpr};
use sea_orm::{
    ColumnTrait, Condition, DatabaseTransaction, EntityTrait, JoinType, QueryFilter, QuerySelect, QueryTrait,
};
use tracing::instrument;
use uuid::Uuid;

use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason};
use crate::model::*;
use crate::passwords::{Password, check_new_password};
use crate::persistence::entities::{api_token, history_event, organisation, password_credential, user};
use crate::persistence::history::{self, NewEvent, Subject, diff};
use crate::persistence::mapping::parse;
use crate::policy::{Action, Caller};
use crate::secrets::{Secret, token_hash};
use crate::services::activation::person_caller;
use crate::services::second_factor::{LoginOutcome, confirmed_app_of, second_factor_method};
use crate::validate::Violations;

/// The column of the person's name as history gives it, in
/// `log_in_in_one_statement`.
const DISPLAY_NAME: &str = "display_name";

/// The least time a refused login takes to answer, whoever the login id
/// names: above a hash and the record of a wrong password on a healthy
/// system (tens of milliseconds), so the answer's timing does not tell a
/// known id with a wrong password (which writes its failure) from an
/// unknown one (which writes nothing). As `RESET_ANSWER_FLOOR`.
pub const LOGIN_REFUSAL_FLOOR: std::time::Duration = std::time::Duration::from_millis(250);

/// A lock with no end: only an administrator lifts it.
const PERMANENT: Millis = i64::MAX;

/// What `Login` is given. `peer` is the caller's address, for history.
#[derive(Debug, Clone)]
pub struct LoginAttempt {
    pub login_id: String,
    pub password: Password,
    /// Needed only when the login id names people in several organisations.
    pub organisation_id: Option<Uuid>,
    pub peer: Option<String>,
}

/// A started session, shown once.
#[derive(Debug)]
pub struct LoggedIn {
    pub user_id: Uuid,
    pub organisation_id: Uuid,
    pub session_token: Secret,
    pub session_expires_at: Millis,
}

fn refused() -> DomainError {
    DomainError::Unauthenticated {
        message: "the login id or password is wrong, or the account is locked for a while; if your login id belongs to several organisations, give organisation_id".into(),
    }
}

/// The outcome of reserving a try.
pub(crate) enum Reserved {
    /// A try is taken; `locks` says this try, if wrong, is the one that
    /// locked the account (the lock is already set); `taken` is the row as
    /// the try left it.
    Try {
        locks: bool,
        taken: password_credential::Model,
    },
    /// Locked (or no tries left): refuse without checking.
    Locked,
}

impl Domain {
    /// Checks a login id and password; starts a session (R-AUTH-2).
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn login(&self, attempt: LoginAttempt) -> DomainResult<LoginOutcome> {
        let mut v = Violations::default();
        check_login_id(&mut v, &attempt.login_id);
        if attempt.password.is_empty() {
            v.add("password", "is required");
        } else if attempt.password.chars() > 4 * crate::passwords::MAX_PASSWORD_CHARS {
            v.add("password", "is too long");
        }
        v.into_result()?;
        let answer_at = tokio::time::Instant::now() + LOGIN_REFUSAL_FLOOR;
        // A full hashing queue refuses before a try is taken: a flood of
        // other sign-ins must not use up, and lock, this person's tries.
        let slot = self.hasher.reserve()?;
        let domain = self.clone();
        let outcome = self
            .to_the_end(async move { domain.login_in(slot, attempt).await })
            .await;
        // Only an attempt that hashed gets here (the queue refused the
        // rest), so the refusals waiting out the floor are at most the
        // hashing's own rate times the floor.
        if matches!(outcome, Err(DomainError::Unauthenticated { .. })) {
            tokio::time::sleep_until(answer_at).await;
        }
        outcome
    }

    /// `login` after validation, in a reserved place of the hashing queue.
    async fn login_in(&self, slot: crate::passwords::HashSlot, attempt: LoginAttempt) -> DomainResult<LoginOutcome> {
        // One statement before the hash, whoever the login id names: it
        // takes a try of the one person it names, if they have a password,
        // are not locked and have tries left. Unknown, ambiguous, without a
        // password or locked: no row, the same time, the same answer.
        let now = now_millis();
        let named = password_credential::Column::UserId.in_subquery(only_person_named(
            &attempt.login_id,
            attempt.organisation_id,
            user::Column::State.ne(UserState::Deleted.as_str()),
        ));
        let Some(credential) = self.take_login_try(named, now).await? else {
            self.hasher.check_in(slot, &attempt.password, None).await?;
            return Err(refused());
        };
        let locks = locks_now(&credential, now);
        let checked = self
            .hasher
            .check_in(slot, &attempt.password, Some(&credential.phc))
            .await?;
        if !checked.matches {
            // A person removed meanwhile gets the same answer, unrecorded:
            // naming them would tell the caller the login id existed.
            if let Some(person) = user::Entity::find_by_id(credential.user_id).one(&self.db).await? {
                self.record_login_failure(&person, locks, attempt.peer.as_deref(), now, Activity::LoginFailed)
                    .await?;
            }
            return Err(refused());
        }
        // The right password: a hash with old parameters is replaced now,
        // the only time the password is at hand.
        // Not at any price: with the queue full, the next login does it.
        let rehashed = if checked.needs_rehash {
            match self.hasher.hash(&attempt.password).await {
                Ok(phc) => Some(phc),
                Err(error) => {
                    tracing::info!(%error, "a password hash with old parameters is kept until the next login");
                    None
                }
            }
        } else {
            None
        };
        let finished = self
            .finish_login(
                credential.user_id,
                &credential.phc,
                rehashed,
                locks,
                attempt.peer.as_deref(),
            )
            .await;
        if let Err(error) = &finished
            && error.is_outage()
        {
            self.give_back_login_try(&credential, locks).await;
        }
        finished
    }

    /// Undoes the try `taken` (the row as its reservation left it) after
    /// the right password or code met a database that failed before the
    /// answer was written: the caller retries, as UNAVAILABLE invites, and
    /// each retry took a try, so a brownout locked people out who typed
    /// their password right. Only while the row is as the try left it
    /// (apart from later tries, when it did not lock): a reset or another
    /// try's lock meanwhile is left alone. Best effort: if the database is
    /// still down, the try stays spent and the lock it set ends by itself.
    pub(crate) async fn give_back_login_try(&self, taken: &password_credential::Model, locks: bool) {
        let give_back = password_credential::Entity::update_many()
            .filter(password_credential::Column::UserId.eq(taken.user_id))
            .filter(password_credential::Column::Phc.eq(taken.phc.as_str()));
        let give_back = if locks {
            give_back
                .col_expr(
                    password_credential::Column::FailedAttempts,
                    Expr::value(self.settings.passwords.max_failures - 1),
                )
                .col_expr(
                    password_credential::Column::Lockouts,
                    Expr::col(password_credential::Column::Lockouts).sub(1),
                )
                .col_expr(
                    password_credential::Column::LockedUntil,
                    Expr::value(Option::<i64>::None),
                )
                .filter(password_credential::Column::FailedAttempts.eq(0))
                .filter(password_credential::Column::Lockouts.eq(taken.lockouts))
                .filter(password_credential::Column::LockedUntil.eq(taken.locked_until))
        } else {
            give_back
                .col_expr(
                    password_credential::Column::FailedAttempts,
                    Expr::col(password_credential::Column::FailedAttempts).sub(1),
                )
                .filter(password_credential::Column::FailedAttempts.gt(0))
        };
        if let Err(error) = give_back.exec(&self.db).await {
            tracing::warn!(%error, "a sign-in try taken before a database failure stays spent");
        }
    }

    /// The one person a login id (e-mail address or username, compared by
    /// its key) names among users meeting `state`, within the organisation
    /// when one is given; `None` when it names nobody or several.
    pub(crate) async fn person_with_login_id(
        &self,
        login_id: &str,
        organisation_id: Option<Uuid>,
        state: impl sea_orm::sea_query::IntoCondition,
    ) -> DomainResult<Option<user::Model>> {
        Ok(user::Entity::find()
            .filter(user::Column::Id.in_subquery(only_person_named(login_id, organisation_id, state)))
            .one(&self.db)
            .await?)
    }

    /// Takes one try of `user_id` (see [`Self::take_login_try`]).
    pub(crate) async fn reserve_login_try(&self, user_id: Uuid, now: Millis) -> DomainResult<Reserved> {
        let taken = self
            .take_login_try(password_credential::Column::UserId.eq(user_id), now)
            .await?;
        Ok(taken.map_or(Reserved::Locked, |row| Reserved::Try {
            locks: locks_now(&row, now),
            taken: row,
        }))
    }

    /// Takes one try of the password `which` selects (at most one row) in
    /// one statement: only while not locked and tries are left; the last try
    /// sets the lock (lifted again if it is right). Returns the row as this
    /// attempt left it; `None` when no try was taken.
    async fn take_login_try(&self, which: SimpleExpr, now: Millis) -> DomainResult<Option<password_credential::Model>> {
        let settings = &self.settings.passwords;
        let max = settings.max_failures;
        let after = Expr::col(password_credential::Column::FailedAttempts).add(1);
        let is_last = after.clone().gte(max);
        // The lock's length by how many locks came before, as one CASE (the
        // doubling is computed here, not in SQL, so both databases agree).
        let mut lock_until = Expr::case(
            Expr::col(password_credential::Column::Lockouts).lte(0),
            lock_end(settings.lock_duration_ms(0), now),
        );
        for earlier in 1..=31 {
            lock_until = lock_until.case(
                ExprTrait::eq(Expr::col(password_credential::Column::Lockouts), earlier),
                lock_end(settings.lock_duration_ms(earlier), now),
            );
        }
        let lock_until: SimpleExpr = lock_until.finally(lock_end(settings.lock_duration_ms(32), now)).into();
        // One statement, so no transaction around it: BEGIN and COMMIT would
        // be two more round trips on every login. On SQLite a lone write
        // takes the write lock itself, waiting up to the busy timeout.
        let taken = password_credential::Entity::update_many()
            .col_expr(
                password_credential::Column::LockedUntil,
                Expr::case(is_last.clone(), lock_until)
                    .finally(Expr::col(password_credential::Column::LockedUntil))
                    .into(),
            )
            .col_expr(
                password_credential::Column::Lockouts,
                Expr::case(is_last.clone(), Expr::col(password_credential::Column::Lockouts).add(1))
                    .finally(Expr::col(password_credential::Column::Lockouts))
                    .into(),
            )
            .col_expr(
                password_credential::Column::FailedAttempts,
                Expr::case(is_last, Expr::value(0)).finally(after).into(),
            )
            .filter(which)
            .filter(password_credential::Column::FailedAttempts.lt(max))
            .filter(
                Condition::any()
                    .add(password_credential::Column::LockedUntil.is_null())
                    .add(password_credential::Column::LockedUntil.lte(now)),
            )
            .exec_with_returning(&self.db)
            .await?;
        Ok(taken.into_iter().next())
    }

    /// A wrong password or second-factor code (`activity`), and the lock
    /// its try set, in history.
    pub(crate) async fn record_login_failure(
        &self,
        person: &user::Model,
        locked: bool,
        peer: Option<&str>,
        now: Millis,
        activity: Activity,
    ) -> DomainResult<()> {
        let txn = crate::persistence::begin_write(&self.db).await?;
        let system = Caller::system("login");
        let mut changes = Vec::new();
        diff(&mut changes, "peer", "", peer.unwrap_or("unknown"));
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(person.organisation_id),
                subject: Subject::User(person.id),
                activity,
                caller: &system,
                at: now,
                changes: changes.clone(),
            },
        )
        .await?;
        if locked {
            record_lock_in(&txn, person, changes, now).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// The right password: a session, or the second step where one is
    /// required. A hash with old parameters is replaced in the same
    /// transaction.
    async fn finish_login(
        &self,
        user_id: Uuid,
        checked_phc: &str,
        rehashed: Option<String>,
        locks: bool,
        peer: Option<&str>,
    ) -> DomainResult<LoginOutcome> {
        if rehashed.is_none()
            && crate::persistence::is_postgres(&self.db)
            && let Some(logged_in) = self.log_in_in_one_statement(user_id, checked_phc, peer).await?
        {
            return Ok(LoginOutcome::LoggedIn(logged_in));
        }
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        // The password may have been reset while this one was being checked:
        // the checked hash must still be the stored one, or the old password
        // would open a session after the reset ended them all (and a rehash
        // would bring the old password back).
        // The user is read again in the same statement: they may have been
        // deactivated while the password was checked. With them, what
        // decides the second factor.
        let mut login_row = user::Entity::find_by_id(user_id)
            .join_rev(JoinType::InnerJoin, crate::persistence::password_of_user())
            .join(JoinType::InnerJoin, crate::persistence::organisation_of_user())
            .filter(password_credential::Column::Phc.eq(checked_phc))
            .column_as(
                organisation::Column::SecondFactorRequired,
                "organisation_requires_second_factor",
            )
            .expr_as(Expr::exists(confirmed_app_of(user_id)), "has_confirmed_app");
        // The password row is locked until this login has its session
        // (PostgreSQL; SQLite has one writer at a time). Read without a
        // lock, a reset that committed just after the read ended every
        // session but this one, still to be written: the old password
        // opened a session that outlived the reset. Locked, a reset in
        // progress is waited for and its new hash fails the match above;
        // a reset behind this login waits and then ends its session too.
        // The person's row likewise, for a deactivation (which ends every
        // session): one in progress is waited for and its state read, one
        // behind this login waits and then ends this session too. Unlocked,
        // a session written just after a deactivation committed outlived it
        // and worked again once the person was reactivated.
        if crate::persistence::is_postgres(&txn) {
            use sea_orm::sea_query::IntoTableRef;
            QueryTrait::query(&mut login_row).lock_with_tables(
                LockType::Update,
                // The person first, then the password: the order of every
                // other write on both (a reset, a second factor, a
                // reactivation). The other way round, a login and a reset
                // of one person deadlocked on PostgreSQL.
                [
                    user::Entity.into_table_ref(),
                    password_credential::Entity.into_table_ref(),
                ],
            );
        }
        let Some(LoginRow {
            person,
            organisation_requires_second_factor,
            has_confirmed_app,
        }) = login_row.into_model::<LoginRow>().one(&txn).await?
        else {
            return Err(refused());
        };
        if let Some(phc) = rehashed {
            password_credential::Entity::update_many()
                .col_expr(password_credential::Column::Phc, Expr::value(phc))
                .filter(password_credential::Column::UserId.eq(user_id))
                .filter(password_credential::Column::Phc.eq(checked_phc))
                .exec(&txn)
                .await?;
        }
        if let Some(method) = second_factor_method(organisation_requires_second_factor, has_confirmed_app) {
            // The password's try stays spent until the second factor is
            // proved, and a lock it set stays: knowing the password buys no
            // fresh tries at the code.
            if locks {
                let mut changes = Vec::new();
                diff(&mut changes, "peer", "", peer.unwrap_or("unknown"));
                record_lock_in(&txn, &person, changes, now).await?;
                txn.commit().await?;
                return Err(refused());
            }
            if let Err(not_active) = self.ensure_may_log_in(&person) {
                txn.commit().await?;
                return Err(not_active);
            }
            let challenge = self.start_challenge_in(&txn, &person, method, peer, now).await?;
            txn.commit().await?;
            return Ok(LoginOutcome::SecondFactor(challenge));
        }
        if let Err(not_active) = self.ensure_may_log_in(&person) {
            reset_login_tries(&txn, person.id, None).await?;
            txn.commit().await?;
            return Err(not_active);
        }
        let logged_in = self.complete_login_in(&txn, &person, peer, None, now).await?;
        txn.commit().await?;
        Ok(LoginOutcome::LoggedIn(logged_in))
    }

    /// `finish_login`'s common case in one statement on PostgreSQL: an
    /// active person whose organisation asks no second factor, who has no
    /// app, and whose checked hash is still the stored one. One round trip
    /// instead of six (BEGIN, the locked read, the reset, the session, its
    /// history event, COMMIT): every wakeup of another thread preempts the
    /// hashing threads and costs them their cache, so a login's round trips
    /// are most of what it costs beyond its hash (BENCHMARKS.md, issue 12).
    /// The rows are locked as `finish_login` locks them, and the writes
    /// happen only for the row the lock found. `None` when there was no such
    /// row: nothing was written, and `finish_login`'s transaction reads the
    /// person again and decides (a second step, not active, refused).
    async fn log_in_in_one_statement(
        &self,
        user_id: Uuid,
        checked_phc: &str,
        peer: Option<&str>,
    ) -> DomainResult<Option<LoggedIn>> {
        use sea_orm::sea_query::{Alias, CommonTableExpression, IntoTableRef, WithClause};
        use sea_orm::{ConnectionTrait, FromQueryResult};

        let now = now_millis();
        let person = Alias::new("person");
        let mut locked = Query::select();
        locked
            .column((user::Entity, user::Column::Id))
            .column((user::Entity, user::Column::OrganisationId))
            .column((user::Entity, user::Column::Email))
            .expr_as(crate::services::activation::display_name_of_user_row(), DISPLAY_NAME)
            .from(user::Entity)
            .inner_join(
                password_credential::Entity,
                Expr::col((password_credential::Entity, password_credential::Column::UserId))
                    .equals((user::Entity, user::Column::Id)),
            )
            .inner_join(
                organisation::Entity,
                Expr::col((organisation::Entity, organisation::Column::Id))
                    .equals((user::Entity, user::Column::OrganisationId)),
            )
            .and_where(Expr::col((user::Entity, user::Column::Id)).eq(user_id))
            .and_where(Expr::col((password_credential::Entity, password_credential::Column::Phc)).eq(checked_phc))
            // `ensure_may_log_in` passes, `second_factor_method` names none.
            .and_where(Expr::col((user::Entity, user::Column::State)).eq(UserState::Active.as_str()))
            .and_where(Expr::col((organisation::Entity, organisation::Column::SecondFactorRequired)).eq(false))
            .and_where(Expr::exists(confirmed_app_of(user_id)).not())
            .lock_with_tables(
                LockType::Update,
                // The person first, then the password: the order of every
                // other write on both (a reset, a second factor, a
                // reactivation). The other way round, a login and a reset
                // of one person deadlocked on PostgreSQL.
                [
                    user::Entity.into_table_ref(),
                    password_credential::Entity.into_table_ref(),
                ],
            );
        let reset = QueryTrait::into_query(
            reset_of_tries(Some(now)).filter(
                password_credential::Column::UserId
                    .in_subquery(Query::select().column(user::Column::Id).from(person.clone()).to_owned()),
            ),
        );
        let (session, session_token, session_expires_at) = self.new_session(user_id, "login", now);
        let session = crate::persistence::insert_for_each_row_of(
            session,
            person.clone(),
            vec![(
                api_token::Column::OrganisationId,
                Expr::col(user::Column::OrganisationId),
            )],
        );
        // Named by the person's id alone: their organisation, name and
        // address come from the row the statement locks.
        let caller = Caller::new(crate::policy::Principal::Member {
            user_id,
            organisation_id: Uuid::nil(),
            roles: Vec::new(),
            levels: Vec::new(),
        });
        let event = crate::persistence::insert_for_each_row_of(
            history::to_row(login_succeeded(Uuid::nil(), user_id, &caller, peer, None, now)),
            person.clone(),
            vec![
                (
                    history_event::Column::OrganisationId,
                    Expr::col(user::Column::OrganisationId),
                ),
                (history_event::Column::ActorName, Expr::col(DISPLAY_NAME)),
                (history_event::Column::ActorEmail, Expr::col(user::Column::Email)),
            ],
        );
        let mut with = WithClause::new();
        with.cte(
            CommonTableExpression::new()
                .query(locked)
                .table_name(person.clone())
                .to_owned(),
        );
        for (name, write) in [
            ("reset", reset.into()),
            ("session", session.into()),
            ("event", event.into()),
        ] {
            let write: sea_orm::sea_query::SubQueryStatement = write;
            with.cte(
                CommonTableExpression::new()
                    .query(write)
                    .table_name(Alias::new(name))
                    .to_owned(),
            );
        }
        let statement = Query::select()
            .column(user::Column::OrganisationId)
            .from(person)
            .to_owned()
            .with(with);
        let backend = self.db.get_database_backend();
        let Some(row) = self.db.query_one_raw(backend.build(&statement)).await? else {
            return Ok(None);
        };
        #[derive(FromQueryResult)]
        struct LoggedInto {
            organisation_id: Uuid,
        }
        let LoggedInto { organisation_id } = LoggedInto::from_query_result(&row, "")?;
        Ok(Some(LoggedIn {
            user_id,
            organisation_id,
            session_token,
            session_expires_at,
        }))
    }

    /// USER_NOT_ACTIVE unless `person` may log in; said only to whoever
    /// gave the right password.
    pub(crate) fn ensure_may_log_in(&self, person: &user::Model) -> DomainResult<()> {
        let state: UserState = parse(&person.state)?;
        if state == UserState::Active {
            return Ok(());
        }
        Err(DomainError::precondition(
            Reason::UserNotActive,
            match state {
                UserState::PendingActivation => "this login is not activated yet; use the activation link or code",
                _ => "this login is deactivated; ask your user administrator",
            },
        ))
    }

    /// Every factor proved: tries back, lock lifted, a session started, with
    /// its history event, inside `txn`.
    pub(crate) async fn complete_login_in(
        &self,
        txn: &DatabaseTransaction,
        person: &user::Model,
        peer: Option<&str>,
        second_factor: Option<SecondFactorMethod>,
        now: Millis,
    ) -> DomainResult<LoggedIn> {
        reset_login_tries(txn, person.id, Some(now)).await?;
        let (session_token, session_expires_at) = self.issue_session(txn, person, "login", now).await?;
        let caller = person_caller(person);
        history::record(
            txn,
            login_succeeded(person.organisation_id, person.id, &caller, peer, second_factor, now),
        )
        .await?;
        Ok(LoggedIn {
            user_id: person.id,
            organisation_id: person.organisation_id,
            session_token,
            session_expires_at,
        })
    }

    /// Stores a first password inside the caller's transaction (activation),
    /// after the policy check; the PHC string is made before the transaction
    /// (`hash_new_password`), so no transaction waits for argon2.
    pub(crate) async fn store_password_in(
        &self,
        txn: &DatabaseTransaction,
        user_id: Uuid,
        phc: String,
        now: Millis,
    ) -> DomainResult<()> {
        use sea_orm::ActiveValue::Set;
        password_credential::Entity::delete_by_id(user_id).exec(txn).await?;
        password_credential::Entity::insert(password_credential::ActiveModel {
            user_id: Set(user_id),
            phc: Set(phc),
            set_at: Set(now),
            failed_attempts: Set(0),
            lockouts: Set(0),
            locked_until: Set(None),
            last_login_at: Set(None),
        })
        .exec_without_returning(txn)
        .await?;
        Ok(())
    }

    /// Checks a new password against the policy (the person's login ids may
    /// not be in it) and hashes it. Field errors name `field`.
    pub(crate) async fn hash_new_password(
        &self,
        field: &str,
        password: &Password,
        login_ids: &[&str],
        min_chars: usize,
    ) -> DomainResult<String> {
        check_new_password(password, login_ids, min_chars).map_err(|rule| DomainError::invalid(field, rule))?;
        self.hasher.hash(password).await
    }

    /// Lifts a login lock (R-AUTH-2): user administrators for their users,
    /// the operator for organisation administrators (R-ACC-6).
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn unlock_login(&self, caller: &Caller, user_id: Uuid) -> DomainResult<User> {
        self.authorize_on_user(caller, Action::UnlockLogin, user_id).await?;
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let row = user::Entity::find_by_id(user_id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", user_id))?;
        let lifted = self.lift_login_lock_in(&txn, caller, &row, now).await?;
        txn.commit().await?;
        if !lifted {
            tracing::debug!(user = %user_id, "unlock asked for a login that was not locked");
        }
        self.get_user_unchecked(user_id).await
    }

    /// Clears the tries and any lock of a user's password inside `txn`, with
    /// a history event when there was a lock to lift. Also the second half of
    /// seed 001's deactivate-then-activate, which unlocks.
    pub(crate) async fn lift_login_lock_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        row: &user::Model,
        now: Millis,
    ) -> DomainResult<bool> {
        if lift_login_locks(txn, vec![row.id], now).await?.is_empty() {
            return Ok(false);
        }
        history::record(txn, login_unlocked(row.organisation_id, row.id, caller, now)).await?;
        Ok(true)
    }

    /// Ends the session the caller presented (R-AUTH-2). An API token is
    /// not a session: revoke it with RevokeApiToken.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn logout(&self, caller: &Caller, bearer: &str) -> DomainResult<()> {
        let Some(user_id) = caller.user_id() else {
            return Err(DomainError::denied(
                "only a person's session can be logged out; operator tokens are configuration",
            ));
        };
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let ended = api_token::Entity::update_many()
            .col_expr(api_token::Column::RevokedAt, Expr::value(now))
            .filter(api_token::Column::TokenHash.eq(token_hash(bearer)))
            .filter(api_token::Column::Kind.eq(crate::services::auth::KIND_SESSION))
            .filter(api_token::Column::UserId.eq(user_id))
            .filter(api_token::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        if ended.rows_affected != 1 {
            return Err(DomainError::precondition(
                Reason::NotASession,
                "the presented token is not a session (API tokens are revoked with RevokeApiToken)",
            ));
        }
        let mut changes = Vec::new();
        diff(&mut changes, "session", "started", "ended");
        history::record(
            &txn,
            NewEvent {
                organisation_id: caller.organisation_id(),
                subject: Subject::User(user_id),
                activity: Activity::LoggedOut,
                caller,
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

impl Domain {
    /// The organisation a sign-in page names by its CVR number, for a login
    /// id held by people in several organisations (the pages have no
    /// organisation ids to offer). Empty: none named. Text that names no
    /// organisation gives the nil id, which names nobody, so the sign-in
    /// is refused like any other and takes as long.
    pub async fn organisation_for_sign_in(&self, cvr: &str) -> DomainResult<Option<Uuid>> {
        let cvr = cvr.trim();
        if cvr.is_empty() {
            return Ok(None);
        }
        // A CVR number is digits; anything else (a NUL, which PostgreSQL
        // cannot compare, failed as INTERNAL there) names no organisation.
        if !cvr.chars().all(|c| c.is_ascii_digit()) {
            return Ok(Some(Uuid::nil()));
        }
        let id: Option<Uuid> = organisation::Entity::find()
            .select_only()
            .column(organisation::Column::Id)
            .filter(organisation::Column::Cvr.eq(cvr))
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(Some(id.unwrap_or(Uuid::nil())))
    }

    /// Counts one sign-in attempt against the per-minute limits of its login
    /// id (when the call names one) and of its peer address, before the
    /// call looks anything up: RATE_LIMITED with the time to wait.
    pub fn limit_sign_in_attempt(&self, what: &str, login_id: Option<&str>, peer: Option<&str>) -> DomainResult<()> {
        const MINUTE: Millis = 60_000;
        let settings = &self.settings.passwords;
        let now = now_millis();
        let limited = |retry_after_ms: Millis, whose: &str| DomainError::RateLimited {
            message: format!("too many sign-in attempts from this {whose}; wait and try again"),
            retry_after_ms,
        };
        if let Some(peer) = peer {
            let site = site_limit_key(peer).map(|site| format!("site:{site}"));
            let site_limit = settings.attempts_per_peer.saturating_mul(SUBSCRIBERS_PER_SITE);
            // A site whose budget is used up refuses before its /64 is
            // counted: each new /64 of a /48 added a key to the table
            // before the site refused it, 65,536 of them per /48.
            if let Some(site) = &site {
                self.attempts
                    .exhausted(site, site_limit, MINUTE, now)
                    .map_err(|ms| limited(ms, "network"))?;
            }
            self.attempts
                .attempt(
                    &format!("peer:{}", peer_limit_key(peer)),
                    settings.attempts_per_peer,
                    MINUTE,
                    now,
                )
                .map_err(|ms| limited(ms, "address"))?;
            if let Some(site) = &site {
                self.attempts
                    .attempt(site, site_limit, MINUTE, now)
                    .map_err(|ms| limited(ms, "network"))?;
            }
        }
        if let Some(login_id) = login_id.map(crate::email::login_key).filter(|k| !k.is_empty()) {
            self.attempts
                .attempt(
                    &format!("{what}:{login_id}"),
                    settings.attempts_per_login_id,
                    MINUTE,
                    now,
                )
                .map_err(|ms| limited(ms, "login id"))?;
        }
        Ok(())
    }
}

/// Whose limit an address counts against: an IPv6 address's /64, the
/// smallest network a provider hands one subscriber (who otherwise had
/// 2^64 fresh limits to spray passwords from); an IPv4 address (also one
/// written as IPv6, `::ffff:192.0.2.1`) alone.
/// How many subscribers' tries an IPv6 site's /48 has together (see
/// `site_limit_key`): a company's network holds many people behind many
/// /64s, so its budget is looser than one address's, yet bounded.
const SUBSCRIBERS_PER_SITE: u32 = 16;

/// The /48 an IPv6 address lies in: what a provider hands one site, whose
/// holder has 65,536 /64s, each with a limit of its own, to spray
/// passwords from. `None` for IPv4 (its address is the limit).
fn site_limit_key(peer: &str) -> Option<String> {
    let std::net::IpAddr::V6(v6) = peer.parse::<std::net::IpAddr>().ok()? else {
        return None;
    };
    if v6.to_ipv4_mapped().is_some() {
        return None;
    }
    let network = u128::from(v6) & !(u128::MAX >> 48);
    Some(format!("{}/48", std::net::Ipv6Addr::from(network)))
}

fn peer_limit_key(peer: &str) -> String {
    match peer.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let network = u128::from(v6) & !(u128::from(u64::MAX));
                format!("{}/64", std::net::Ipv6Addr::from(network))
            }
        },
        Ok(std::net::IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => peer.to_owned(),
    }
}

/// A login id is required and at most an e-mail address long.
pub(crate) fn check_login_id(v: &mut Violations, login_id: &str) {
    if login_id.trim().is_empty() {
        v.add("login_id", "is required");
    } else if login_id.chars().count() > 320 {
        v.add("login_id", "must be at most 320 characters");
    } else if login_id.chars().any(char::is_control) {
        v.add("login_id", "must not contain control characters");
    }
}

/// The lock a try just set, in history (`changes` says where from).
async fn record_lock_in(
    txn: &DatabaseTransaction,
    person: &user::Model,
    mut changes: Vec<FieldChange>,
    now: Millis,
) -> DomainResult<()> {
    let until = password_credential::Entity::find_by_id(person.id)
        .one(txn)
        .await?
        .and_then(|row| row.locked_until);
    diff(
        &mut changes,
        "locked_until",
        "",
        match until {
            Some(PERMANENT) | None => "until unlocked".to_owned(),
            // The instant, as every time in history: the date alone read
            // "locked until 2026-03-10" for a lock of a minute.
            Some(at) => crate::services::users::opt_time(Some(at)),
        },
    );
    history::record(
        txn,
        NewEvent {
            organisation_id: Some(person.organisation_id),
            subject: Subject::User(person.id),
            activity: Activity::LoginLocked,
            caller: &Caller::system("login"),
            at: now,
            changes,
        },
    )
    .await?;
    tracing::info!(user = %person.id, "login locked after repeated wrong passwords or codes");
    Ok(())
}

/// Gives the account's tries back and lifts its lock; with `login_at`,
/// also notes the login.
async fn reset_login_tries(txn: &DatabaseTransaction, user_id: Uuid, login_at: Option<Millis>) -> DomainResult<()> {
    reset_of_tries(login_at)
        .filter(password_credential::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    Ok(())
}

/// Tries back and any lock lifted (and when the login was, for a login),
/// for the password rows the caller's filter picks.
fn reset_of_tries(login_at: Option<Millis>) -> sea_orm::UpdateMany<password_credential::Entity> {
    let reset = password_credential::Entity::update_many()
        .col_expr(password_credential::Column::FailedAttempts, Expr::value(0))
        .col_expr(password_credential::Column::Lockouts, Expr::value(0))
        .col_expr(
            password_credential::Column::LockedUntil,
            Expr::value(Option::<i64>::None),
        );
    match login_at {
        Some(at) => reset.col_expr(password_credential::Column::LastLoginAt, Expr::value(at)),
        None => reset,
    }
}

/// A session started: the history event of a login.
fn login_succeeded<'a>(
    organisation_id: Uuid,
    user_id: Uuid,
    caller: &'a Caller,
    peer: Option<&str>,
    second_factor: Option<SecondFactorMethod>,
    at: Millis,
) -> NewEvent<'a> {
    let mut changes = Vec::new();
    diff(&mut changes, "peer", "", peer.unwrap_or("unknown"));
    diff(&mut changes, "session", "", "started");
    if let Some(method) = second_factor {
        diff(&mut changes, "second_factor", "", method.as_str());
    }
    NewEvent {
        organisation_id: Some(organisation_id),
        subject: Subject::User(user_id),
        activity: Activity::LoginSucceeded,
        caller,
        at,
        changes,
    }
}

/// The id of the one user a login id (e-mail address or username,
/// compared by its key) names among users meeting `state`, within the
/// organisation when one is given, as a subquery: no row when it names
/// nobody or several. The one place that rule is written.
fn only_person_named(login_id: &str, organisation_id: Option<Uuid>, state: impl IntoCondition) -> SelectStatement {
    let key = crate::email::login_key(login_id);
    let mut named = Condition::all()
        .add(
            Condition::any()
                .add(user::Column::EmailKey.eq(key.as_str()))
                .add(user::Column::UsernameKey.eq(key.as_str())),
        )
        .add(state.into_condition());
    if let Some(org) = organisation_id {
        named = named.add(user::Column::OrganisationId.eq(org));
    }
    let how_many = Query::select()
        .expr(Expr::col((user::Entity, user::Column::Id)).count())
        .from(user::Entity)
        .cond_where(named.clone())
        .to_owned();
    Query::select()
        .column((user::Entity, user::Column::Id))
        .from(user::Entity)
        .cond_where(named)
        .and_where(SimpleExpr::from(how_many).eq(1))
        .to_owned()
}

/// The user `finish_login` reads again, with what decides the second factor.
#[derive(sea_orm::FromQueryResult)]
struct LoginRow {
    #[sea_orm(nested)]
    person: user::Model,
    // Named apart from every users column: the nested model reads those
    // by their plain names.
    organisation_requires_second_factor: bool,
    has_confirmed_app: bool,
}

/// Whether the try a row records is the one that set its lock.
fn locks_now(credential: &password_credential::Model, now: Millis) -> bool {
    credential.locked_until.is_some_and(|until| until > now)
}

/// `now + duration` as a value, or the permanent lock.
fn lock_end(duration: Option<i64>, now: Millis) -> Expr {
    Expr::value(duration.map_or(PERMANENT, |ms| now.saturating_add(ms)))
}

/// Clears the tries and any lock of the passwords of `user_ids` inside
/// `txn`; returns the users who had something to clear. The one rule of
/// every unlock: by hand, by reactivation, and by the end of a timed
/// deactivation (seed 001's deactivate-then-activate unlocks).
/// The password credentials a lift of login locks changes: locked, or with
/// failed tries or earlier lockouts counted.
pub(crate) fn has_a_login_lock(now: Millis) -> Condition {
    Condition::any()
        .add(password_credential::Column::LockedUntil.gt(now))
        .add(password_credential::Column::Lockouts.gt(0))
        .add(password_credential::Column::FailedAttempts.gt(0))
}

pub(crate) async fn lift_login_locks(
    txn: &DatabaseTransaction,
    user_ids: Vec<Uuid>,
    now: Millis,
) -> DomainResult<Vec<Uuid>> {
    Ok(password_credential::Entity::update_many()
        .col_expr(password_credential::Column::FailedAttempts, Expr::value(0))
        .col_expr(password_credential::Column::Lockouts, Expr::value(0))
        .col_expr(
            password_credential::Column::LockedUntil,
            Expr::value(Option::<i64>::None),
        )
        .filter(password_credential::Column::UserId.is_in(user_ids))
        .filter(has_a_login_lock(now))
        .exec_with_returning(txn)
        .await?
        .into_iter()
        .map(|row| row.user_id)
        .collect())
}

/// The history event of a lifted login lock.
pub(crate) fn login_unlocked(organisation_id: Uuid, user_id: Uuid, caller: &Caller, at: Millis) -> NewEvent<'_> {
    let mut changes = Vec::new();
    diff(&mut changes, "login", "locked", "unlocked");
    NewEvent {
        organisation_id: Some(organisation_id),
        subject: Subject::User(user_id),
        activity: Activity::LoginUnlocked,
        caller,
        at,
        changes,
    }
}

#[cfg(test)]
mod tests {
    use super::{peer_limit_key, second_factor_method, site_limit_key};

    /// `log_in_in_one_statement` writes "no second step" as SQL: no
    /// organisation rule and no confirmed app. Should the rule ever ask a
    /// second step in another case too, this fails before that statement
    /// logs such a person in without one.
    #[test]
    fn the_one_statement_login_s_condition_is_the_rule_s_no_second_step() {
        for organisation_requires in [false, true] {
            for has_app in [false, true] {
                assert_eq!(
                    second_factor_method(organisation_requires, has_app).is_none(),
                    !organisation_requires && !has_app,
                    "requires {organisation_requires}, app {has_app}"
                );
            }
        }
    }

    #[test]
    fn an_ipv6_address_counts_against_its_64() {
        assert_eq!(peer_limit_key("2001:db8:1:2::a"), "2001:db8:1:2::/64");
        assert_eq!(peer_limit_key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_eq!(peer_limit_key("2001:db8:1:3::a"), "2001:db8:1:3::/64");
        assert_eq!(peer_limit_key("::ffff:198.51.100.7"), "198.51.100.7");
        assert_eq!(peer_limit_key("198.51.100.7"), "198.51.100.7");
        assert_eq!(peer_limit_key("not an address"), "not an address");
    }

    #[test]
    fn an_ipv6_address_counts_against_its_48_too() {
        assert_eq!(site_limit_key("2001:db8:1:2::a").as_deref(), Some("2001:db8:1::/48"));
        assert_eq!(
            site_limit_key("2001:db8:1:ffff:ffff::1").as_deref(),
            Some("2001:db8:1::/48")
        );
        assert_eq!(site_limit_key("2001:db8:2::a").as_deref(), Some("2001:db8:2::/48"));
        assert_eq!(site_limit_key("::ffff:198.51.100.7"), None);
        assert_eq!(site_limit_key("198.51.100.7"), None);
        assert_eq!(site_limit_key("not an address"), None);
    }
}
