//! Domain entry points. Each write is one transaction that also writes its
//! history event.

pub mod activation;
pub mod anonymity;
pub mod auth;
pub mod notifications;
pub mod organisations;
pub mod outbox;
pub mod sweeps;
pub mod users;

use sea_orm::sea_query::{LockType, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use crate::error::{DomainError, DomainResult};
use crate::model::Role;
use crate::persistence::entities::{organisation, user, user_role};
use crate::persistence::is_postgres;

/// Loads an organisation row and, on PostgreSQL, locks it for the rest of the
/// transaction: every rule that counts users (licences, administrators) runs
/// under this lock, so two concurrent calls cannot both take the last licence.
/// SQLite has a single writer connection, which serialises them already.
pub(crate) async fn lock_organisation(db: &impl ConnectionTrait, id: Uuid) -> DomainResult<organisation::Model> {
    let mut query = organisation::Entity::find_by_id(id);
    if is_postgres(db) {
        query = query.lock(LockType::Update);
    }
    query
        .one(db)
        .await?
        .ok_or_else(|| DomainError::not_found("organisation", id))
}

pub(crate) const STANDING_STATES: [&str; 2] = ["PENDING_ACTIVATION", "ACTIVE"];

/// Users holding a licence: active and pending (R-ORG-4).
pub(crate) async fn licences_used(db: &impl ConnectionTrait, organisation_id: Uuid) -> DomainResult<i64> {
    Ok(user::Entity::find()
        .filter(user::Column::OrganisationId.eq(organisation_id))
        .filter(user::Column::State.is_in(STANDING_STATES))
        .count(db)
        .await? as i64)
}

/// Standing (active or pending) holders of a role, as a query to count or load.
pub(crate) fn standing_role_holders_query(organisation_id: Uuid, role: Role) -> sea_orm::Select<user::Entity> {
    user::Entity::find()
        .filter(user::Column::OrganisationId.eq(organisation_id))
        .filter(user::Column::State.is_in(STANDING_STATES))
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

/// How many standing holders a role has.
pub(crate) async fn standing_role_holders(
    db: &impl ConnectionTrait,
    organisation_id: Uuid,
    role: Role,
) -> DomainResult<i64> {
    Ok(standing_role_holders_query(organisation_id, role).count(db).await? as i64)
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
        let roles = users::roles_of(&self.db, &[user_id])
            .await?
            .remove(&user_id)
            .unwrap_or_default();
        let is_admin = roles.iter().any(|r| r.is_administrator());
        crate::policy::authorize(
            caller,
            action,
            crate::policy::Target::user(row.organisation_id, user_id, is_admin),
        )?;
        Ok(row)
    }
}
