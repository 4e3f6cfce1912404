//! Shared access (R-ACC-5): a user's own resources (profile, settings,
//! history, API tokens, notifications) shared, read or edit, with a
//! colleague of the same organisation. The colleague then acts as the owner
//! by naming them in the request (the service's `x-orgadmin-act-as`
//! header) without the owner's credentials: the call runs as the owner with
//! none of the owner's roles or levels, and history names both (`actor` the
//! colleague, `on_behalf_of` the owner). Being shared with confers no
//! administration. Administrators share a user's resources too (a service
//! account's, say), never with themselves: two keys (R-ACC-4).

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, Condition, EntityTrait, IntoActiveModel, QueryFilter};
use tracing::instrument;
use uuid::Uuid;

use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason};
use crate::model::*;
use crate::paging;
use crate::persistence::entities::{api_token, share, user};
use crate::persistence::history::{self, NewEvent, Subject};
use crate::persistence::mapping::parse;
use crate::policy::{Acting, Action, Caller, Principal};
use crate::services::{Visible, authorize_on_user_as_now, lock_organisation, visible_to};

/// A share as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub owner_id: Uuid,
    pub grantee_id: Uuid,
    pub may_edit: bool,
    pub shared_by: String,
    pub shared_at: Millis,
}

#[derive(Debug, Clone, Default)]
pub struct ShareFilter {
    pub owner_id: Option<Uuid>,
    pub grantee_id: Option<Uuid>,
}

fn from_row(row: share::Model) -> Share {
    Share {
        id: row.id,
        organisation_id: row.organisation_id,
        owner_id: row.owner_id,
        grantee_id: row.grantee_id,
        may_edit: row.can_edit,
        shared_by: row.shared_by,
        shared_at: row.shared_at,
    }
}

/// How history shows a share: who with, and what they may.
fn shown(grantee_id: Uuid, may_edit: bool) -> String {
    format!("user:{grantee_id} {}", if may_edit { "read+edit" } else { "read" })
}

fn standing(row: &user::Model) -> DomainResult<bool> {
    Ok(parse::<UserState>(&row.state)?.is_standing())
}

/// The tokens the colleague made through an edit share (for a service
/// account, the only kind a share makes) end with it, or with its edit
/// right: left, they acted as the owner for up to two years after.
async fn revoke_tokens_made_through(
    txn: &sea_orm::DatabaseTransaction,
    row: &share::Model,
    now: Millis,
) -> DomainResult<()> {
    api_token::Entity::update_many()
        .col_expr(api_token::Column::RevokedAt, Expr::value(now))
        .filter(api_token::Column::UserId.eq(row.owner_id))
        .filter(api_token::Column::CreatedBy.eq(format!("user:{}", row.grantee_id)))
        .filter(api_token::Column::RevokedAt.is_null())
        .exec(txn)
        .await?;
    Ok(())
}

/// The refusals of a call through a share that is not there, or only to read.
const NOT_SHARED: &str = "that user has not shared their resources with you";
const SHARED_TO_READ: &str = "that user shared their resources with you to read, not to edit";

/// Refused unless `owner_id` shares their resources with `grantee_id` to
/// edit, as of now: the organisation's lock is taken first, the one every
/// change of a share takes, so a share cannot end between this check and
/// the commit of what the caller writes through it.
pub(crate) async fn ensure_share_allows_edit(
    txn: &sea_orm::DatabaseTransaction,
    organisation_id: Uuid,
    owner_id: Uuid,
    grantee_id: Uuid,
) -> DomainResult<()> {
    lock_organisation(txn, organisation_id).await?;
    let share = share::Entity::find()
        .filter(share::Column::OwnerId.eq(owner_id))
        .filter(share::Column::GranteeId.eq(grantee_id))
        .filter(share::Column::OrganisationId.eq(organisation_id))
        .one(txn)
        .await?;
    match share {
        Some(share) if share.can_edit => Ok(()),
        Some(_) => Err(DomainError::denied(SHARED_TO_READ)),
        None => Err(DomainError::denied(NOT_SHARED)),
    }
}

/// Deletes a share, with its `SHARE_REVOKED` event on the owner.
async fn end_share_in(
    txn: &sea_orm::DatabaseTransaction,
    caller: &Caller,
    row: &share::Model,
    now: Millis,
) -> DomainResult<()> {
    share::Entity::delete_by_id(row.id).exec(txn).await?;
    revoke_tokens_made_through(txn, row, now).await?;
    history::record(
        txn,
        NewEvent {
            organisation_id: Some(row.organisation_id),
            subject: Subject::User(row.owner_id),
            activity: Activity::ShareRevoked,
            caller,
            at: now,
            changes: vec![FieldChange {
                field: "shared_with".into(),
                before: shown(row.grantee_id, row.can_edit),
                after: String::new(),
            }],
        },
    )
    .await
}

/// Ends every share of `user_id`'s resources and with them (a deleted
/// user's shares end with them).
pub(super) async fn end_shares_of_in(
    txn: &sea_orm::DatabaseTransaction,
    caller: &Caller,
    user_id: Uuid,
    now: Millis,
) -> DomainResult<()> {
    let rows = share::Entity::find()
        .filter(
            Condition::any()
                .add(share::Column::OwnerId.eq(user_id))
                .add(share::Column::GranteeId.eq(user_id)),
        )
        .all(txn)
        .await?;
    for row in &rows {
        end_share_in(txn, caller, row, now).await?;
    }
    Ok(())
}

impl Domain {
    /// R-ACC-5: shares `owner_id`'s own resources with `grantee_id`, read or
    /// also edit; sharing again with the same colleague changes the access.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn share_access(
        &self,
        caller: &Caller,
        owner_id: Uuid,
        grantee_id: Uuid,
        may_edit: bool,
    ) -> DomainResult<Share> {
        let owner = self.authorize_on_user(caller, Action::ShareAccess, owner_id).await?;
        let grantee = user::Entity::find_by_id(grantee_id)
            .one(&self.db)
            .await?
            .filter(|row| row.organisation_id == owner.organisation_id)
            .ok_or_else(|| DomainError::not_found("user", grantee_id))?;
        if grantee_id == owner_id {
            return Err(DomainError::invalid(
                "grantee_user_id",
                "must be another user than the owner",
            ));
        }
        // A service account is shared, never shared with: whoever holds its
        // token would otherwise act as the owner through it, one person
        // turning both keys.
        if grantee.service_account {
            return Err(DomainError::invalid(
                "grantee_user_id",
                "must be a person: a service account is shared, never shared with",
            ));
        }
        // A service account's access is shared by the people who may share
        // it, never by the account itself: with a token made through a
        // share, its holder could otherwise open the share again once it
        // was ended.
        if owner.service_account && caller.acting_user_id() == Some(owner_id) {
            return Err(DomainError::denied(
                "a service account does not share its own access: a user administrator shares it",
            ));
        }
        // Two keys (R-ACC-4): an administrator never opens a user's
        // resources to themselves; a colleague must.
        if caller.acting_user_id() == Some(grantee_id) {
            return Err(DomainError::denied(
                "nobody shares a user's resources with themselves: a colleague must (two keys)",
            ));
        }
        if !standing(&grantee)? || !standing(&owner)? {
            return Err(DomainError::precondition(
                Reason::UserNotActive,
                "only an active or pending user's resources are shared, and only with an active or pending user",
            ));
        }
        let txn = crate::persistence::begin_write(&self.db).await?;
        lock_organisation(&txn, owner.organisation_id).await?;
        // Again as things stand under the lock: the caller's roles, and both
        // users' state.
        authorize_on_user_as_now(self, &txn, caller, Action::ShareAccess, owner_id).await?;
        let owner = super::standing_user_as_now(&txn, owner_id).await?;
        super::standing_user_as_now(&txn, grantee_id).await?;
        let now = now_millis();
        let existing = share::Entity::find()
            .filter(share::Column::OwnerId.eq(owner_id))
            .filter(share::Column::GranteeId.eq(grantee_id))
            .one(&txn)
            .await?;
        let before = existing
            .as_ref()
            .map_or(String::new(), |row| shown(grantee_id, row.can_edit));
        let row = match existing {
            // The same access again: nothing to change, nothing to record.
            Some(row) if row.can_edit == may_edit => row,
            Some(row) => {
                if row.can_edit && !may_edit {
                    revoke_tokens_made_through(&txn, &row, now).await?;
                }
                let mut active = row.into_active_model();
                active.can_edit = Set(may_edit);
                active.sharer_id = Set(caller.acting_user_id());
                active.shared_by = Set(caller.actor());
                active.shared_at = Set(now);
                active.update(&txn).await?
            }
            None => {
                share::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    organisation_id: Set(owner.organisation_id),
                    owner_id: Set(owner_id),
                    grantee_id: Set(grantee_id),
                    can_edit: Set(may_edit),
                    sharer_id: Set(caller.acting_user_id()),
                    shared_by: Set(caller.actor()),
                    shared_at: Set(now),
                }
                .insert(&txn)
                .await?
            }
        };
        let after = shown(grantee_id, may_edit);
        let changed = before != after;
        if changed {
            history::record(
                &txn,
                NewEvent {
                    organisation_id: Some(owner.organisation_id),
                    subject: Subject::User(owner_id),
                    activity: Activity::AccessShared,
                    caller,
                    at: now,
                    changes: vec![FieldChange {
                        field: "shared_with".into(),
                        before,
                        after,
                    }],
                },
            )
            .await?;
        }
        txn.commit().await?;
        if changed {
            // An edit right taken back ended the tokens made with it.
            self.auth_cache.clear();
        }
        Ok(from_row(row))
    }

    /// Ends a share. The owner and the colleague (giving it up) end theirs;
    /// whoever may share the owner's resources ends any.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn revoke_share(&self, caller: &Caller, id: Uuid) -> DomainResult<Share> {
        let unknown = || DomainError::not_found("share", id);
        let row = share::Entity::find_by_id(id).one(&self.db).await?.ok_or_else(unknown)?;
        if caller.organisation_id() != Some(row.organisation_id) {
            return Err(unknown());
        }
        let me = caller.acting_user_id();
        let own = me == Some(row.owner_id) || me == Some(row.grantee_id);
        if !own {
            self.authorize_on_user(caller, Action::ShareAccess, row.owner_id)
                .await?;
        }
        let txn = crate::persistence::begin_write(&self.db).await?;
        lock_organisation(&txn, row.organisation_id).await?;
        let row = share::Entity::find_by_id(id).one(&txn).await?.ok_or_else(unknown)?;
        if !own {
            authorize_on_user_as_now(self, &txn, caller, Action::ShareAccess, row.owner_id).await?;
        }
        end_share_in(&txn, caller, &row, now_millis()).await?;
        txn.commit().await?;
        // Tokens made through the share ended with it.
        self.auth_cache.clear();
        Ok(from_row(row))
    }

    /// The organisation's shares, by owner or colleague. Organisation and
    /// user administrators see all; everyone else the shares they are in or
    /// made.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_shares(
        &self,
        caller: &Caller,
        organisation_id: Uuid,
        filter: ShareFilter,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<Share>> {
        let mut query = share::Entity::find().filter(share::Column::OrganisationId.eq(organisation_id));
        if let Visible::Concerning(me) = visible_to(caller, Action::ReadShares, organisation_id, "shares")? {
            query = query.filter(
                Condition::any()
                    .add(share::Column::OwnerId.eq(me))
                    .add(share::Column::GranteeId.eq(me))
                    .add(share::Column::SharerId.eq(me)),
            );
        }
        if let Some(owner) = filter.owner_id {
            query = query.filter(share::Column::OwnerId.eq(owner));
        }
        if let Some(grantee) = filter.grantee_id {
            query = query.filter(share::Column::GranteeId.eq(grantee));
        }
        let limit = paging::page_size(page_size, 50, 500)?;
        let (rows, next) = paging::keyset(
            &self.db,
            query,
            share::Column::Id,
            paging::Order::Ascending,
            &format!("shares:{organisation_id}"),
            page_token,
            limit,
            |r| r.id,
        )
        .await?;
        Ok(Page {
            items: rows.into_iter().map(from_row).collect(),
            next_page_token: next,
        })
    }

    /// The caller behind `bearer` acting as `owner_id` through a share
    /// (R-ACC-5): refused unless the owner shared their resources with the
    /// caller, with edit when the call needs it, and the owner stands.
    /// Acting as oneself is just oneself.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn authenticate_acting(&self, bearer: &str, owner_id: &str, needs_edit: bool) -> DomainResult<Caller> {
        let real = self.authenticate(bearer).await?;
        let owner_id = Uuid::parse_str(owner_id.trim()).map_err(|_| {
            DomainError::invalid(
                "x-orgadmin-act-as",
                "must be the id of the user whose resources were shared with you",
            )
        })?;
        let (
            Principal::Member {
                user_id: me,
                organisation_id,
                ..
            },
            None,
        ) = (&real.principal, real.acting)
        else {
            return Err(DomainError::denied("only a user acts as another, through a share"));
        };
        if *me == owner_id {
            return Ok(real);
        }
        let not_shared = || DomainError::denied(NOT_SHARED);
        let share = share::Entity::find()
            .filter(share::Column::OwnerId.eq(owner_id))
            .filter(share::Column::GranteeId.eq(*me))
            .one(&self.db)
            .await?
            .filter(|row| row.organisation_id == *organisation_id)
            .ok_or_else(not_shared)?;
        if needs_edit && !share.can_edit {
            return Err(DomainError::denied(SHARED_TO_READ));
        }
        let owner = user::Entity::find_by_id(owner_id)
            .one(&self.db)
            .await?
            .ok_or_else(not_shared)?;
        // A deactivated or deleted user cannot act (R-USR-4), nor be acted as.
        if !standing(&owner)? {
            return Err(DomainError::denied("that user is not active"));
        }
        let mut caller = Caller::acting_as(
            owner_id,
            *organisation_id,
            Acting {
                by: *me,
                may_edit: share.can_edit,
            },
        );
        caller.identity = real.identity;
        caller.credential = real.credential;
        Ok(caller)
    }
}
