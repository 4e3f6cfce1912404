//! User groups (R-ACC-7, seed 001 "Brugergrupper"). A custom group is made
//! by an organisation administrator; user administrators add and remove its
//! members, users of other organisations too, found by two facts (their
//! user id and their organisation's CVR), so that outside help can be given
//! rights here. A system group stands for one production unit: it is made
//! with the unit (with the unit's id), renamed with it and deleted with it,
//! and its members are whoever is placed in the unit's subtree, so nobody
//! adds or removes them by hand.

use std::collections::{HashMap, HashSet};

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect};
use tracing::instrument;
use uuid::Uuid;

use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason};
use crate::model::*;
use crate::normalise;
use crate::paging;
use crate::persistence::entities::{group, group_member, organisation, unit, user};
use crate::persistence::history::{self, NewEvent, Subject};
use crate::persistence::mapping::parse;
use crate::policy::{Action, Caller, Target, authorize};
use crate::services::organisations::subtree;
use crate::services::{Visible, lock_organisation, visible_to};
use crate::validate::{self, Violations};

/// A group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub kind: GroupKind,
    pub name: String,
    pub description: String,
    /// A system group's production unit.
    pub unit_id: Option<Uuid>,
    pub created_by: String,
    pub created_at: Millis,
}

/// A custom group as asked for.
#[derive(Debug, Clone, Default)]
pub struct NewGroup {
    pub organisation_id: Uuid,
    pub name: String,
    pub description: String,
}

/// A member as the group's organisation sees them (seed 001: name,
/// organisation and P-unit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub user_id: Uuid,
    /// Empty for an anonymous user of another organisation: their name
    /// stays with their own.
    pub first_name: String,
    pub surname: String,
    pub organisation_id: Uuid,
    pub organisation_name: String,
    pub unit_id: Option<Uuid>,
    pub unit_name: String,
    /// Of another organisation than the group's.
    pub external: bool,
    /// Who added them; empty in a system group (the unit decides).
    pub added_by: String,
    pub added_at: Option<Millis>,
}

fn from_row(row: group::Model) -> DomainResult<Group> {
    Ok(Group {
        id: row.id,
        organisation_id: row.organisation_id,
        kind: parse(&row.kind)?,
        name: row.name,
        description: row.description,
        unit_id: row.unit_id,
        created_by: row.created_by,
        created_at: row.created_at,
    })
}

/// How history names a group: its name and id.
fn shown(row: &group::Model) -> String {
    format!("{} ({})", row.name, row.id)
}

fn refuse_system(row: &group::Model, doing: &str) -> DomainResult<()> {
    if row.kind == GroupKind::System.as_str() {
        return Err(DomainError::precondition(
            Reason::SystemGroup,
            format!(
                "a system group follows its production unit: nobody {doing} by hand (move the user to or from the unit instead)"
            ),
        ));
    }
    Ok(())
}

/// A group of the caller's organisation: another organisation's (and, for
/// the operator, who administers no groups, every one) reads as missing.
async fn group_of(db: &impl ConnectionTrait, caller: &Caller, id: Uuid) -> DomainResult<group::Model> {
    group::Entity::find_by_id(id)
        .one(db)
        .await?
        .filter(|row| caller.organisation_id() == Some(row.organisation_id))
        .ok_or_else(|| DomainError::not_found("group", id))
}

/// Adds or removes a member, with the event on the member (so their own
/// history says which groups they were put in, and by whom).
async fn record_membership(
    txn: &DatabaseTransaction,
    caller: &Caller,
    group: &group::Model,
    user_id: Uuid,
    added: bool,
    now: Millis,
) -> DomainResult<()> {
    let (before, after) = if added {
        (String::new(), shown(group))
    } else {
        (shown(group), String::new())
    };
    history::record(
        txn,
        NewEvent {
            organisation_id: Some(group.organisation_id),
            subject: Subject::User(user_id),
            activity: if added {
                Activity::GroupMemberAdded
            } else {
                Activity::GroupMemberRemoved
            },
            caller,
            at: now,
            changes: vec![FieldChange {
                field: "group".into(),
                before,
                after,
            }],
        },
    )
    .await
}

/// A production unit's system group, made with the unit in its transaction.
pub(crate) async fn create_system_group_in(
    txn: &DatabaseTransaction,
    caller: &Caller,
    unit: &unit::Model,
) -> DomainResult<()> {
    let row = group::Entity::insert(group::ActiveModel {
        id: Set(unit.id),
        organisation_id: Set(unit.organisation_id),
        kind: Set(GroupKind::System.to_string()),
        name: Set(unit.name.clone()),
        description: Set(String::new()),
        unit_id: Set(Some(unit.id)),
        created_by: Set("system".into()),
        created_at: Set(unit.created_at),
    })
    .exec_with_returning(txn)
    .await?;
    history::record(
        txn,
        NewEvent {
            organisation_id: Some(row.organisation_id),
            subject: Subject::Group(row.id),
            activity: Activity::GroupCreated,
            caller,
            at: unit.created_at,
            changes: vec![FieldChange {
                field: "group".into(),
                before: String::new(),
                after: shown(&row),
            }],
        },
    )
    .await
}

/// A renamed production unit's system group takes the new name.
pub(crate) async fn rename_system_group_in(txn: &DatabaseTransaction, unit_id: Uuid, name: &str) -> DomainResult<()> {
    group::Entity::update_many()
        .col_expr(group::Column::Name, sea_orm::sea_query::Expr::value(name.to_owned()))
        .filter(group::Column::UnitId.eq(unit_id))
        .exec(txn)
        .await?;
    Ok(())
}

/// A deleted production unit's system group goes with it.
pub(crate) async fn delete_system_group_in(
    txn: &DatabaseTransaction,
    caller: &Caller,
    unit_id: Uuid,
    now: Millis,
) -> DomainResult<()> {
    for row in group::Entity::find()
        .filter(group::Column::UnitId.eq(unit_id))
        .all(txn)
        .await?
    {
        delete_group_in(txn, caller, &row, now).await?;
    }
    Ok(())
}

async fn delete_group_in(
    txn: &DatabaseTransaction,
    caller: &Caller,
    row: &group::Model,
    now: Millis,
) -> DomainResult<()> {
    // Its grants go first, each with what was made on its strength.
    super::grants::revoke_grants_held_in(txn, caller, super::Grantee::Group(row.id), now).await?;
    // The members leave, each with their event: a deleted group's
    // membership must not linger in anyone's rights.
    let members = group_member::Entity::find()
        .filter(group_member::Column::GroupId.eq(row.id))
        .all(txn)
        .await?;
    for member in &members {
        record_membership(txn, caller, row, member.user_id, false, now).await?;
    }
    group_member::Entity::delete_many()
        .filter(group_member::Column::GroupId.eq(row.id))
        .exec(txn)
        .await?;
    group::Entity::delete_by_id(row.id).exec(txn).await?;
    history::record(
        txn,
        NewEvent {
            organisation_id: Some(row.organisation_id),
            subject: Subject::Group(row.id),
            activity: Activity::GroupDeleted,
            caller,
            at: now,
            changes: vec![FieldChange {
                field: "group".into(),
                before: shown(row),
                after: String::new(),
            }],
        },
    )
    .await
}

/// A deleted user leaves every custom group they were in (of any
/// organisation).
pub(crate) async fn leave_groups_in(
    txn: &DatabaseTransaction,
    caller: &Caller,
    user_id: Uuid,
    now: Millis,
) -> DomainResult<()> {
    let memberships = group_member::Entity::find()
        .filter(group_member::Column::UserId.eq(user_id))
        .all(txn)
        .await?;
    if memberships.is_empty() {
        return Ok(());
    }
    let groups = group::Entity::find()
        .filter(group::Column::Id.is_in(memberships.iter().map(|m| m.group_id)))
        .all(txn)
        .await?;
    for row in &groups {
        record_membership(txn, caller, row, user_id, false, now).await?;
    }
    group_member::Entity::delete_many()
        .filter(group_member::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    Ok(())
}

/// The condition "is a member of `group_id`" on users, for `ListUsers`: a
/// custom group's member rows, or a system group's unit subtree. The group
/// must be of `organisation_id` (else INVALID_ARGUMENT on `field`).
pub(crate) async fn members_condition(
    domain: &Domain,
    db: &impl ConnectionTrait,
    organisation_id: Uuid,
    group_id: Uuid,
    field: &str,
) -> DomainResult<sea_orm::Condition> {
    let row = group::Entity::find_by_id(group_id)
        .filter(group::Column::OrganisationId.eq(organisation_id))
        .one(db)
        .await?
        .ok_or_else(|| DomainError::invalid(field, "names no group of this organisation"))?;
    members_of(domain, db, &row).await
}

/// The condition "is a member of `group`" on users (see
/// [`members_condition`]), for a group already read.
pub(crate) async fn members_of(
    domain: &Domain,
    db: &impl ConnectionTrait,
    group: &group::Model,
) -> DomainResult<sea_orm::Condition> {
    Ok(match group.unit_id {
        Some(unit_id) => {
            let units = domain.units_of(db, group.organisation_id).await?;
            sea_orm::Condition::all().add(user::Column::UnitId.is_in(subtree(&units, unit_id)))
        }
        None => sea_orm::Condition::all().add(
            user::Column::Id.in_subquery(
                Query::select()
                    .column(group_member::Column::UserId)
                    .from(group_member::Entity)
                    .and_where(group_member::Column::GroupId.eq(group.id))
                    .to_owned(),
            ),
        ),
    })
}

/// The groups `user` is in: the custom groups they were added to (of any
/// organisation) and the system groups of the production units above their
/// unit.
pub(crate) async fn groups_of_user(
    domain: &Domain,
    db: &impl ConnectionTrait,
    user: &user::Model,
) -> DomainResult<Vec<Uuid>> {
    let mut groups: Vec<Uuid> = group_member::Entity::find()
        .filter(group_member::Column::UserId.eq(user.id))
        .all(db)
        .await?
        .into_iter()
        .map(|m| m.group_id)
        .collect();
    if let Some(unit_id) = user.unit_id {
        groups.extend(system_groups_over(domain, db, user.organisation_id, unit_id).await?);
    }
    // In one order whatever order the rows came in: lists filter by these
    // ids, and a page token is bound to its list's filter as written.
    groups.sort_unstable();
    groups.dedup();
    Ok(groups)
}

/// The system groups whose members include whoever is placed in `unit_id`:
/// those of the unit and of its ancestors (a system group covers its
/// production unit's subtree).
pub(crate) async fn system_groups_over(
    domain: &Domain,
    db: &impl ConnectionTrait,
    organisation_id: Uuid,
    unit_id: Uuid,
) -> DomainResult<Vec<Uuid>> {
    let units = domain.units_of(db, organisation_id).await?;
    let parent: HashMap<Uuid, Option<Uuid>> = units.iter().map(|u| (u.id, u.parent_id)).collect();
    let mut at = Some(unit_id);
    let mut seen = HashSet::new();
    let mut above = Vec::new();
    while let Some(id) = at.filter(|id| seen.insert(*id)) {
        above.push(id);
        at = parent.get(&id).copied().flatten();
    }
    Ok(group::Entity::find()
        .filter(group::Column::UnitId.is_in(above))
        .all(db)
        .await?
        .into_iter()
        .map(|g| g.id)
        .collect())
}

/// `user` moved from their unit to `to`: the system groups they left take
/// with them what the user passed on through those groups' grants (as
/// leaving a custom group does).
pub(crate) async fn left_system_groups_in(
    domain: &Domain,
    txn: &DatabaseTransaction,
    caller: &Caller,
    user: &user::Model,
    to: Option<Uuid>,
    now: Millis,
) -> DomainResult<()> {
    let left = system_groups_left(domain, txn, user.organisation_id, user.unit_id, to).await?;
    if left.is_empty() {
        return Ok(());
    }
    super::grants::revoke_passed_on_in(txn, caller, user.id, Some(&left), now).await
}

/// A unit moved from under `from` to under `to` (its old and new parents):
/// whoever is placed in its subtree left the system groups above `from`
/// that are not above `to`, and what they passed on through those groups'
/// grants goes, as for a user moved (`left_system_groups_in`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn unit_moved_in(
    domain: &Domain,
    txn: &DatabaseTransaction,
    caller: &Caller,
    organisation_id: Uuid,
    unit_id: Uuid,
    from: Option<Uuid>,
    to: Option<Uuid>,
    now: Millis,
) -> DomainResult<()> {
    let left = system_groups_left(domain, txn, organisation_id, from, to).await?;
    if left.is_empty() {
        return Ok(());
    }
    let units = domain.units_of(txn, organisation_id).await?;
    let moved = subtree(&units, unit_id);
    let mut placed = HashSet::new();
    for chunk in moved.chunks(500) {
        placed.extend(
            user::Entity::find()
                .filter(user::Column::OrganisationId.eq(organisation_id))
                .filter(user::Column::UnitId.is_in(chunk.to_vec()))
                .all(txn)
                .await?
                .into_iter()
                .map(|u| u.id),
        );
    }
    super::grants::revoke_passed_on_by_in(txn, caller, &placed, &left, now).await
}

/// The system groups one leaves moving from under `from` to under `to`
/// (units; none: no unit): those over `from` that are not over `to`.
/// Swapped, the ones one joins.
pub(crate) async fn system_groups_left(
    domain: &Domain,
    db: &impl ConnectionTrait,
    organisation_id: Uuid,
    from: Option<Uuid>,
    to: Option<Uuid>,
) -> DomainResult<Vec<Uuid>> {
    let Some(from) = from else {
        return Ok(Vec::new());
    };
    let staying = match to {
        Some(unit) => system_groups_over(domain, db, organisation_id, unit).await?,
        None => Vec::new(),
    };
    Ok(system_groups_over(domain, db, organisation_id, from)
        .await?
        .into_iter()
        .filter(|g| !staying.contains(g))
        .collect())
}

/// Two keys (R-ACC-4, R-ACC-7): refuses (`denied`) a move of one's own
/// from under `from` to under `to` (units; none: no unit) that joins a
/// system group holding rights, which would be giving oneself rights.
pub(crate) async fn ensure_joining_gives_no_rights(
    domain: &Domain,
    db: &impl ConnectionTrait,
    organisation_id: Uuid,
    to: Option<Uuid>,
    from: Option<Uuid>,
    denied: &str,
) -> DomainResult<()> {
    // The groups one joins are those one would leave going back.
    let joining = system_groups_left(domain, db, organisation_id, to, from).await?;
    if any_holds_grants(db, joining).await? {
        return Err(DomainError::denied(format!(
            "{denied} under a unit whose system group holds rights: a colleague must (two keys)"
        )));
    }
    Ok(())
}

/// Whether any of `groups` holds a grant whose rights its members may pass
/// on or let others pass on: joining one of them is starting to delegate.
pub(crate) async fn any_passes_rights_on(db: &impl ConnectionTrait, groups: Vec<Uuid>) -> DomainResult<bool> {
    use crate::persistence::entities::grant;
    use sea_orm::PaginatorTrait;
    if groups.is_empty() {
        return Ok(false);
    }
    Ok(grant::Entity::find()
        .filter(grant::Column::GranteeGroupId.is_in(groups))
        .filter(super::grants::passes_on())
        .count(db)
        .await?
        > 0)
}

/// Whether any of `groups` holds a grant: joining one of them is being
/// given rights.
pub(crate) async fn any_holds_grants(db: &impl ConnectionTrait, groups: Vec<Uuid>) -> DomainResult<bool> {
    use sea_orm::PaginatorTrait;
    if groups.is_empty() {
        return Ok(false);
    }
    Ok(crate::persistence::entities::grant::Entity::find()
        .filter(crate::persistence::entities::grant::Column::GranteeGroupId.is_in(groups))
        .count(db)
        .await?
        > 0)
}

impl Domain {
    /// The start of every write on one custom group: the caller may
    /// `action` on its organisation (checked again under the organisation's
    /// lock, on the caller's roles as they stand), the group is of the
    /// caller's organisation and not a system group (refused as
    /// "nobody {doing} by hand"). Returns the transaction and the group as
    /// read under the lock.
    async fn begin_custom_group_write(
        &self,
        caller: &Caller,
        group_id: Uuid,
        action: Action,
        doing: &str,
    ) -> DomainResult<(DatabaseTransaction, group::Model)> {
        let row = group_of(&self.db, caller, group_id).await?;
        authorize(caller, action, Target::organisation(row.organisation_id))?;
        refuse_system(&row, doing)?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        lock_organisation(&txn, row.organisation_id).await?;
        let now_caller = super::caller_as_now(self, &txn, caller).await?;
        authorize(&now_caller, action, Target::organisation(row.organisation_id))?;
        let row = group_of(&txn, caller, group_id).await?;
        Ok((txn, row))
    }

    /// R-ACC-7: an organisation administrator makes a custom group; its
    /// name is unique in the organisation, case and accents aside.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn create_group(&self, caller: &Caller, new: NewGroup) -> DomainResult<Group> {
        authorize(caller, Action::ManageGroups, Target::organisation(new.organisation_id))?;
        let mut violations = Violations::default();
        violations.check("name", validate::text(&new.name, 200));
        if let Err(rule) = crate::validate::lines_of_text(&new.description, 0, 1000) {
            violations.add("description", rule);
        }
        violations.into_result()?;
        let name = new.name.trim().to_owned();
        let txn = crate::persistence::begin_write(&self.db).await?;
        lock_organisation(&txn, new.organisation_id).await?;
        let now_caller = super::caller_as_now(self, &txn, caller).await?;
        authorize(
            &now_caller,
            Action::ManageGroups,
            Target::organisation(new.organisation_id),
        )?;
        // Under the organisation's lock: two creates of one name cannot both
        // find it free.
        let key = normalise::key(&name);
        let taken = group::Entity::find()
            .filter(group::Column::OrganisationId.eq(new.organisation_id))
            .all(&txn)
            .await?
            .iter()
            .any(|g| normalise::key(&g.name) == key);
        if taken {
            return Err(DomainError::AlreadyExists {
                reason: Reason::GroupNameTaken,
                message: format!("the organisation already has a group named {name:?}"),
            });
        }
        let now = now_millis();
        let row = group::Entity::insert(group::ActiveModel {
            id: Set(Uuid::now_v7()),
            organisation_id: Set(new.organisation_id),
            kind: Set(GroupKind::Custom.to_string()),
            name: Set(name),
            description: Set(new.description.trim().to_owned()),
            unit_id: Set(None),
            created_by: Set(caller.actor()),
            created_at: Set(now),
        })
        .exec_with_returning(&txn)
        .await?;
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(row.organisation_id),
                subject: Subject::Group(row.id),
                activity: Activity::GroupCreated,
                caller,
                at: now,
                changes: vec![FieldChange {
                    field: "group".into(),
                    before: String::new(),
                    after: shown(&row),
                }],
            },
        )
        .await?;
        txn.commit().await?;
        from_row(row)
    }

    /// Deletes a custom group; its members leave it (each with an event).
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn delete_group(&self, caller: &Caller, id: Uuid) -> DomainResult<Group> {
        let (txn, row) = self
            .begin_custom_group_write(caller, id, Action::ManageGroups, "deletes it")
            .await?;
        delete_group_in(&txn, caller, &row, now_millis()).await?;
        txn.commit().await?;
        from_row(row)
    }

    /// The organisation's groups, by name. Organisation, user and rights
    /// administrators see all; any other member the groups they are in.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_groups(
        &self,
        caller: &Caller,
        organisation_id: Uuid,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<Group>> {
        let mut query = group::Entity::find().filter(group::Column::OrganisationId.eq(organisation_id));
        if let Visible::Concerning(me) = visible_to(caller, Action::ReadGroups, organisation_id, "groups")? {
            let member = user::Entity::find_by_id(me)
                .one(&self.db)
                .await?
                .ok_or_else(|| DomainError::not_found("user", me))?;
            query = query.filter(group::Column::Id.is_in(groups_of_user(self, &self.db, &member).await?));
        }
        let limit = paging::page_size(page_size, 50, 500)?;
        let (rows, next) = paging::keyset(
            &self.db,
            query,
            group::Column::Id,
            paging::Order::Ascending,
            &format!("groups:{organisation_id}"),
            page_token,
            limit,
            |r| r.id,
        )
        .await?;
        Ok(Page {
            items: rows.into_iter().map(from_row).collect::<DomainResult<_>>()?,
            next_page_token: next,
        })
    }

    /// R-ACC-7: adds a user to a custom group. A user of the group's own
    /// organisation is named by id; a user of another by id and their
    /// organisation's CVR, and must have activated their profile (seed 001:
    /// only users who have signed in are found). Adding a member again
    /// changes nothing.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn add_group_member(
        &self,
        caller: &Caller,
        group_id: Uuid,
        user_id: Uuid,
        organisation_cvr: Option<&str>,
    ) -> DomainResult<GroupMember> {
        if let Some(cvr) = organisation_cvr {
            validate::cvr(cvr).map_err(|e| DomainError::invalid("organisation_cvr", e))?;
        }
        let (txn, row) = self
            .begin_custom_group_write(caller, group_id, Action::ManageGroupMembers, "adds members to it")
            .await?;
        // Two keys (R-ACC-4): a group's rights are given to its members, and
        // nobody gives themselves rights; a colleague adds them.
        if caller.acting_user_id() == Some(user_id) {
            return Err(DomainError::denied(
                "nobody adds themselves to a group: a colleague must (two keys)",
            ));
        }
        let member = self.member_to_add(&txn, &row, user_id, organisation_cvr).await?;
        let existing = group_member::Entity::find_by_id((group_id, user_id)).one(&txn).await?;
        let membership = match existing {
            Some(existing) => existing,
            None => {
                // Joining a group that holds a right to pass on, a person
                // starts to delegate (read before they are in it).
                let starts = super::starts_to_delegate(self, &txn, &member).await?;
                let now = now_millis();
                let added = group_member::Entity::insert(group_member::ActiveModel {
                    group_id: Set(group_id),
                    user_id: Set(user_id),
                    adder_id: Set(caller.acting_user_id()),
                    added_by: Set(caller.actor()),
                    added_at: Set(now),
                })
                .exec_with_returning(&txn)
                .await?;
                record_membership(&txn, caller, &row, user_id, true, now).await?;
                if starts && super::user_delegates(self, &txn, &member).await? {
                    super::ensure_may_make_delegate(
                        self,
                        &txn,
                        caller,
                        row.organisation_id,
                        "adding them to this group",
                    )
                    .await?;
                    self.end_handover_in(&txn, caller, user_id, now).await?;
                }
                added
            }
        };
        let shown = described(&txn, &row, vec![(member, Some(membership))]).await?;
        txn.commit().await?;
        Ok(shown.into_iter().next().expect("one member described"))
    }

    /// The user to add, found the way the seed does: in the group's own
    /// organisation by id, in another by id and CVR. Every miss reads the
    /// same, so the two facts reveal nothing about users they do not name.
    async fn member_to_add(
        &self,
        txn: &DatabaseTransaction,
        group: &group::Model,
        user_id: Uuid,
        organisation_cvr: Option<&str>,
    ) -> DomainResult<user::Model> {
        let missing = || {
            DomainError::not_found(
                "user",
                match organisation_cvr {
                    Some(cvr) => format!("{user_id} in the organisation with CVR {cvr}"),
                    None => format!(
                        "{user_id} in this organisation (a user of another organisation is named by id and their organisation's CVR)"
                    ),
                },
            )
        };
        // Locked: a user of another organisation is deleted under that
        // organisation's lock, not this one's, and must not be added while
        // their deletion takes them out of every group.
        let mut query = user::Entity::find_by_id(user_id);
        if crate::persistence::is_postgres(txn) {
            query = query.lock(sea_orm::sea_query::LockType::Update);
        }
        let found = query.one(txn).await?.ok_or_else(missing)?;
        let external = found.organisation_id != group.organisation_id;
        match organisation_cvr {
            None if external => return Err(missing()),
            None => {}
            Some(cvr) => {
                let home = organisation::Entity::find_by_id(found.organisation_id)
                    .one(txn)
                    .await?
                    .ok_or_else(missing)?;
                if home.cvr != cvr {
                    return Err(missing());
                }
            }
        }
        let state = parse::<UserState>(&found.state)?;
        if external && state != UserState::Active {
            // Not even their state is told to another organisation.
            return Err(missing());
        }
        if !state.is_standing() {
            return Err(DomainError::precondition(
                Reason::UserNotActive,
                "only an active or pending user is added to a group",
            ));
        }
        Ok(found)
    }

    /// Takes a member out of a custom group.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn remove_group_member(&self, caller: &Caller, group_id: Uuid, user_id: Uuid) -> DomainResult<()> {
        let (txn, row) = self
            .begin_custom_group_write(caller, group_id, Action::ManageGroupMembers, "removes members from it")
            .await?;
        let removed = group_member::Entity::delete_by_id((group_id, user_id))
            .exec(&txn)
            .await?;
        if removed.rows_affected == 0 {
            return Err(DomainError::not_found("group member", user_id));
        }
        let now = now_millis();
        record_membership(&txn, caller, &row, user_id, false, now).await?;
        super::grants::revoke_passed_on_in(&txn, caller, user_id, Some(&[group_id]), now).await?;
        txn.commit().await?;
        Ok(())
    }

    /// A group's members with name, organisation and unit (seed 001), by
    /// user id: a custom group's as added, a system group's as placed.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_group_members(
        &self,
        caller: &Caller,
        group_id: Uuid,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<GroupMember>> {
        let row = group_of(&self.db, caller, group_id).await?;
        authorize(caller, Action::ReadGroups, Target::organisation(row.organisation_id))?;
        let limit = paging::page_size(page_size, 50, 500)?;
        let list = format!("group-members:{group_id}");
        let (members, next) = match row.unit_id {
            Some(unit_id) => {
                let units = self.units_of(&self.db, row.organisation_id).await?;
                let query = user::Entity::find()
                    .filter(user::Column::OrganisationId.eq(row.organisation_id))
                    .filter(user::Column::UnitId.is_in(subtree(&units, unit_id)))
                    .filter(user::Column::State.ne(UserState::Deleted.as_str()));
                let (users, next) = paging::keyset(
                    &self.db,
                    query,
                    user::Column::Id,
                    paging::Order::Ascending,
                    &list,
                    page_token,
                    limit,
                    |r| r.id,
                )
                .await?;
                (users.into_iter().map(|u| (u, None)).collect::<Vec<_>>(), next)
            }
            None => {
                let query = group_member::Entity::find().filter(group_member::Column::GroupId.eq(group_id));
                let (memberships, next) = paging::keyset(
                    &self.db,
                    query,
                    group_member::Column::UserId,
                    paging::Order::Ascending,
                    &list,
                    page_token,
                    limit,
                    |r| r.user_id,
                )
                .await?;
                let mut users: HashMap<Uuid, user::Model> = user::Entity::find()
                    .filter(user::Column::Id.is_in(memberships.iter().map(|m| m.user_id)))
                    .all(&self.db)
                    .await?
                    .into_iter()
                    .map(|u| (u.id, u))
                    .collect();
                let pairs = memberships
                    .into_iter()
                    .filter_map(|m| users.remove(&m.user_id).map(|u| (u, Some(m))))
                    .collect();
                (pairs, next)
            }
        };
        Ok(Page {
            items: described(&self.db, &row, members).await?,
            next_page_token: next,
        })
    }
}

/// Members as the group's organisation sees them: their organisations'
/// and units' names read once per page.
async fn described(
    db: &impl ConnectionTrait,
    group: &group::Model,
    members: Vec<(user::Model, Option<group_member::Model>)>,
) -> DomainResult<Vec<GroupMember>> {
    let organisation_ids: HashSet<Uuid> = members.iter().map(|(u, _)| u.organisation_id).collect();
    let unit_ids: HashSet<Uuid> = members.iter().filter_map(|(u, _)| u.unit_id).collect();
    let organisations: HashMap<Uuid, String> = organisation::Entity::find()
        .filter(organisation::Column::Id.is_in(organisation_ids))
        .all(db)
        .await?
        .into_iter()
        .map(|o| (o.id, o.name))
        .collect();
    let units: HashMap<Uuid, String> = unit::Entity::find()
        .filter(unit::Column::Id.is_in(unit_ids))
        .all(db)
        .await?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect();
    Ok(members
        .into_iter()
        .map(|(user, membership)| {
            let external = user.organisation_id != group.organisation_id;
            let hidden = external && user.anonymous;
            GroupMember {
                user_id: user.id,
                first_name: if hidden { String::new() } else { user.first_name },
                surname: if hidden { String::new() } else { user.surname },
                organisation_id: user.organisation_id,
                organisation_name: organisations.get(&user.organisation_id).cloned().unwrap_or_default(),
                unit_id: user.unit_id,
                unit_name: user.unit_id.and_then(|u| units.get(&u).cloned()).unwrap_or_default(),
                external,
                added_by: membership.as_ref().map(|m| m.added_by.clone()).unwrap_or_default(),
                added_at: membership.map(|m| m.added_at),
            }
        })
        .collect())
}
