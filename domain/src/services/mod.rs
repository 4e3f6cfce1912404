//! Domain entry points. Each write is one transaction that also writes its
//! history event.

pub mod access;
pub mod activation;
pub mod anonymity;
pub mod auth;
pub mod certificates;
pub mod email_change;
pub mod imports;
pub mod join_requests;
pub mod login;
pub mod notifications;
pub mod organisations;
pub mod outbox;
pub mod pages;
pub mod password_reset;
pub mod rights_requests;
pub mod second_factor;
pub mod sessions;
pub mod sweeps;
pub mod users;

use sea_orm::sea_query::{Expr, ExprTrait, LockType, Query};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use crate::error::{DomainError, DomainResult, Reason};
use crate::model::Role;
use crate::persistence::entities::{organisation, user, user_role};
use crate::persistence::is_postgres;

/// What a create with a request id asked (AIP-155), as a fingerprint kept
/// with what it made: the caller and the request as the domain reads it.
/// A retry sends the same and gets the first call's result; the same id
/// with anything else is another request.
pub(crate) fn request_fingerprint(caller: &crate::policy::Caller, request: &impl std::fmt::Debug) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("{}|{request:?}", caller.actor())))
}

/// A retry's answer: `Ok` when the stored fingerprint is this request's;
/// otherwise the id was used by another request (another caller, another
/// body), which is the client's mistake to hear about, not to be answered
/// with someone else's result.
pub(crate) fn ensure_same_request(stored: Option<&str>, fingerprint: &str, resource: &str) -> DomainResult<()> {
    if stored == Some(fingerprint) {
        Ok(())
    } else {
        Err(DomainError::AlreadyExists {
            reason: Reason::RequestIdReused,
            message: format!(
                "request_id was already used for another request (a {resource} made with other fields or by someone else); choose a new request_id"
            ),
        })
    }
}

/// Loads an organisation row and, on PostgreSQL, locks it for the rest of the
/// transaction: every rule that counts users (administrators) runs under this
/// lock, so two concurrent calls cannot both take the last seat.
/// SQLite has a single writer connection, which serialises them already.
pub(crate) async fn lock_organisation(db: &impl ConnectionTrait, id: Uuid) -> DomainResult<organisation::Model> {
    organisation_row(db, id, is_postgres(db)).await
}

/// Loads an organisation row without locking it.
pub(crate) async fn read_organisation(db: &impl ConnectionTrait, id: Uuid) -> DomainResult<organisation::Model> {
    organisation_row(db, id, false).await
}

async fn organisation_row(db: &impl ConnectionTrait, id: Uuid, lock: bool) -> DomainResult<organisation::Model> {
    let mut query = organisation::Entity::find_by_id(id);
    if lock {
        query = query.lock(LockType::Update);
    }
    query
        .one(db)
        .await?
        .ok_or_else(|| DomainError::not_found("organisation", id))
}

pub(crate) const STANDING_STATES: [&str; 2] = ["PENDING_ACTIVATION", "ACTIVE"];

/// The SQL form of `model::holds_seat`: standing, or deactivated with an end
/// time (the seat kept for the return).
pub(crate) fn holds_seat_condition() -> Condition {
    Condition::any().add(user::Column::State.is_in(STANDING_STATES)).add(
        Condition::all()
            .add(user::Column::State.eq(crate::model::UserState::Deactivated.as_str()))
            .add(user::Column::DeactivatedUntil.is_not_null()),
    )
}

/// Moves the organisation's licence counter (R-ORG-4) by `delta` (zero or
/// less: a give-back; a take goes through `take_licences`): every change of
/// `model::holds_seat` calls one of them in its own transaction, so the
/// counter always equals the number of seat holders.
pub(crate) async fn adjust_licences(db: &impl ConnectionTrait, organisation_id: Uuid, delta: i64) -> DomainResult<()> {
    if delta == 0 {
        return Ok(());
    }
    organisation::Entity::update_many()
        .col_expr(
            organisation::Column::LicencesUsed,
            Expr::col(organisation::Column::LicencesUsed).add(delta),
        )
        .filter(organisation::Column::Id.eq(organisation_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Takes `count` licences if that many are free, else
/// LICENCE_LIMIT_REACHED: one conditional UPDATE, all or none. On
/// PostgreSQL it locks the organisation row only from here to COMMIT, which
/// is why creates call it as their last statement; two creates racing for
/// the last licence queue on the row and the second sees the first's
/// increment (READ COMMITTED re-checks the WHERE clause).
pub(crate) async fn take_licences(db: &impl ConnectionTrait, organisation_id: Uuid, count: i64) -> DomainResult<()> {
    let taken = organisation::Entity::update_many()
        .col_expr(
            organisation::Column::LicencesUsed,
            Expr::col(organisation::Column::LicencesUsed).add(count),
        )
        .filter(organisation::Column::Id.eq(organisation_id))
        .filter(
            Expr::col(organisation::Column::LicencesUsed)
                .add(count)
                .lte(Expr::col(organisation::Column::LicenceCount)),
        )
        .exec(db)
        .await?;
    if taken.rows_affected == 1 {
        return Ok(());
    }
    Err(licence_limit_reached(&read_organisation(db, organisation_id).await?))
}

/// R-ORG-3: whether the organisation's deletion policy lets a profile be
/// closed for good (DeleteUser, and the old profile of an anonymity
/// request); DEACTIVATE_ONLY keeps every profile, for traceability.
pub(crate) fn deletes_profiles(org: &organisation::Model) -> DomainResult<bool> {
    Ok(
        crate::persistence::mapping::parse::<crate::model::DeletionPolicy>(&org.deletion_policy)?
            != crate::model::DeletionPolicy::DeactivateOnly,
    )
}

/// Refuses `what` (closing a profile for good) under DEACTIVATE_ONLY.
pub(crate) fn ensure_deletes_profiles(org: &organisation::Model, what: &str) -> DomainResult<()> {
    if deletes_profiles(org)? {
        return Ok(());
    }
    Err(DomainError::precondition(
        Reason::DeletionNotAllowed,
        format!(
            "the organisation's deletion policy is DEACTIVATE_ONLY: users are deactivated, never deleted, so {what}"
        ),
    ))
}

/// Refuses when the organisation, as read, has no free licence: a clear early
/// answer before any write; `take_licences` is what guarantees the limit.
pub(crate) fn ensure_licence_free(org: &organisation::Model) -> DomainResult<()> {
    if org.licences_used >= i64::from(org.licence_count) {
        return Err(licence_limit_reached(org));
    }
    Ok(())
}

pub(crate) fn licence_limit_reached(org: &organisation::Model) -> DomainError {
    DomainError::FailedPrecondition {
        reason: Reason::LicenceLimitReached,
        message: format!(
            "all {} licences of the organisation are in use; deactivate or delete a user, or ask the operator for more licences",
            org.licence_count
        ),
        metadata: vec![
            ("licence_count".into(), org.licence_count.to_string()),
            ("licences_used".into(), org.licences_used.to_string()),
        ],
    }
}

/// The licence change of a user going from seat `before` to seat `after`
/// (each from `model::holds_seat`).
pub(crate) fn licence_delta(before: bool, after: bool) -> i64 {
    i64::from(after) - i64::from(before)
}

/// Applies a licence change: a take is conditional (LICENCE_LIMIT_REACHED
/// when none is free), a give-back is not.
pub(crate) async fn apply_licence_delta(
    db: &impl ConnectionTrait,
    organisation_id: Uuid,
    delta: i64,
) -> DomainResult<()> {
    if delta > 0 {
        take_licences(db, organisation_id, delta).await
    } else {
        adjust_licences(db, organisation_id, delta).await
    }
}

/// Holders of a role's seat (R-ORG-4: standing, or deactivated with an end
/// time), as a query to count: what `max_administrators` limits.
pub(crate) fn seat_holders_query(organisation_id: Uuid, role: Role) -> sea_orm::Select<user::Entity> {
    role_holders_query(organisation_id, role).filter(holds_seat_condition())
}

/// How many seats of a role are held.
pub(crate) async fn seat_holders(db: &impl ConnectionTrait, organisation_id: Uuid, role: Role) -> DomainResult<i64> {
    Ok(seat_holders_query(organisation_id, role).count(db).await? as i64)
}

/// ACTIVE holders of a role: R-ORG-5 counts these (a pending administrator
/// cannot act yet, a deactivated one cannot act now).
pub(crate) async fn active_role_holders(
    db: &impl ConnectionTrait,
    organisation_id: Uuid,
    role: Role,
) -> DomainResult<i64> {
    Ok(role_holders_query(organisation_id, role)
        .filter(user::Column::State.eq(crate::model::UserState::Active.as_str()))
        .count(db)
        .await? as i64)
}

fn role_holders_query(organisation_id: Uuid, role: Role) -> sea_orm::Select<user::Entity> {
    user::Entity::find()
        .filter(user::Column::OrganisationId.eq(organisation_id))
        .filter(
            user::Column::Id.in_subquery(
                Query::select()
                    .column(user_role::Column::UserId)
                    .from(user_role::Entity)
                    .and_where(user_role::Column::OrganisationId.eq(organisation_id))
                    .and_where(user_role::Column::Role.eq(role.as_str()))
                    .to_owned(),
            ),
        )
}

/// Standing (active or pending) holders of a role, as a query to count or load.
pub(crate) fn standing_role_holders_query(organisation_id: Uuid, role: Role) -> sea_orm::Select<user::Entity> {
    role_holders_query(organisation_id, role).filter(user::Column::State.is_in(STANDING_STATES))
}

/// The rules every decision on a request shares (anonymity, rights,
/// joining): a note of at most 1000 characters, and two keys: nobody
/// decides on their own request (R-ACC-4). `requester_id`: none for a
/// person who is no member yet.
pub(crate) fn check_decision(
    caller: &crate::policy::Caller,
    requester_id: Option<Uuid>,
    note: &str,
) -> DomainResult<()> {
    crate::validate::lines_of_text(note, 0, 1000).map_err(|rule| DomainError::invalid("note", rule))?;
    if requester_id.is_some() && caller.user_id() == requester_id {
        return Err(DomainError::denied(
            "another administrator must decide on your own request (two keys)",
        ));
    }
    Ok(())
}

/// What a listing shows its caller.
pub(crate) enum Visible {
    /// Everything of the organisation.
    All,
    /// Only the entries this member is part of (asked, holds, made).
    Concerning(Uuid),
}

/// The one rule of the administration listings (grants, shares, rights
/// requests): whoever may `action` on the organisation sees all of it, any
/// other member of it what concerns them (for a call made through a share:
/// what concerns the owner, whose call it is), anyone else nothing.
pub(crate) fn visible_to(
    caller: &crate::policy::Caller,
    action: crate::policy::Action,
    organisation_id: Uuid,
    what: &str,
) -> DomainResult<Visible> {
    if crate::policy::authorize(caller, action, crate::policy::Target::organisation(organisation_id)).is_ok() {
        return Ok(Visible::All);
    }
    match (caller.user_id(), caller.organisation_id() == Some(organisation_id)) {
        (Some(me), true) => Ok(Visible::Concerning(me)),
        _ => Err(DomainError::denied(format!(
            "the caller may not see the {what} of this organisation"
        ))),
    }
}

/// [`crate::Domain::authorize_on_user`] again inside a writing transaction,
/// after the organisation's lock: on the caller's roles and the user as
/// they stand at commit, not as they were cached or first read.
pub(crate) async fn authorize_on_user_as_now(
    domain: &crate::Domain,
    txn: &sea_orm::DatabaseTransaction,
    caller: &crate::policy::Caller,
    action: crate::policy::Action,
    user_id: Uuid,
) -> DomainResult<user::Model> {
    let caller = access::caller_as_now(domain, txn, caller).await?;
    let row = user::Entity::find_by_id(user_id)
        .one(txn)
        .await?
        .ok_or_else(|| DomainError::not_found("user", user_id))?;
    let target = user_target(domain, txn, &caller, action, &row).await?;
    crate::policy::authorize_on_user(&caller, action, target)?;
    Ok(row)
}

/// What the policy needs to know of a user it decides about for `action`:
/// whether they are an administrator, (for callers acting by level) hold a
/// level, and (for an action on how they sign in) delegate.
async fn user_target(
    domain: &crate::Domain,
    db: &impl ConnectionTrait,
    caller: &crate::policy::Caller,
    action: crate::policy::Action,
    row: &user::Model,
) -> DomainResult<crate::policy::Target> {
    let roles = users::roles_of(db, &[row.id])
        .await?
        .remove(&row.id)
        .unwrap_or_default();
    let is_admin = roles.iter().any(|r| r.is_administrator());
    let holds_level = access::target_holds_level(db, caller, row.id).await?;
    let delegates = action.changes_sign_in() && !is_admin && access::user_delegates(domain, db, row).await?;
    Ok(
        crate::policy::Target::user(row.organisation_id, row.id, is_admin, row.unit_id)
            .holding_level(holds_level)
            .delegating(delegates),
    )
}

impl crate::Domain {
    /// Loads a user row and checks the caller may take `action` on that user
    /// (the policy needs to know whether the user is an administrator).
    pub(crate) async fn authorize_on_user(
        &self,
        caller: &crate::policy::Caller,
        action: crate::policy::Action,
        user_id: Uuid,
    ) -> DomainResult<user::Model> {
        let row = user::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| DomainError::not_found("user", user_id))?;
        let target = user_target(self, &self.db, caller, action, &row).await?;
        crate::policy::authorize_on_user(caller, action, target)?;
        Ok(row)
    }
}
