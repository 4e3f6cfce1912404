//! Grants of rights (R-ACC-3, R-ACC-4): a right, named by the service that
//! checks it, given to a user on the organisation or a unit's subtree,
//! with the actions it allows (read, edit), which of them the grantee may
//! pass on, and whether the grantee may let others pass them on
//! (authorise). A grant made on the strength of another is its child:
//! revoking a grant revokes everything made on its strength, as SQL's
//! `REVOKE … CASCADE` does (the seed's bank box: when the key holder loses
//! the key, so does everyone they lent it to).

use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter};
use tracing::instrument;
use uuid::Uuid;

use super::resolve_scopes;
use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason};
use crate::model::*;
use crate::paging;
use crate::persistence::entities::{grant, group, user};
use crate::persistence::history::{self, NewEvent, Subject};
use crate::persistence::mapping::parse;
use crate::policy::{Action, Actions, Caller, GrantRequest, HeldGrant, Target, authorize, authorize_grant};
use crate::services::{Visible, lock_organisation, visible_to};
use crate::validate::Violations;

/// Who holds a grant: a user, or a group (R-ACC-7), whose members hold it
/// as if it were theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grantee {
    User(Uuid),
    Group(Uuid),
}

/// A grantee as read for a new grant.
pub(crate) enum GranteeRow {
    User(Box<user::Model>),
    Group(group::Model),
}

impl GranteeRow {
    fn organisation_id(&self) -> Uuid {
        match self {
            GranteeRow::User(row) => row.organisation_id,
            GranteeRow::Group(row) => row.organisation_id,
        }
    }
}

fn subject_of(grantee: Grantee) -> Subject {
    match grantee {
        Grantee::User(id) => Subject::User(id),
        Grantee::Group(id) => Subject::Group(id),
    }
}

/// A grant as asked for.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub grantee: Grantee,
    pub right: String,
    /// None: the whole organisation.
    pub unit_id: Option<Uuid>,
    /// One resource within that scope (named by the service that checks
    /// the right); none: all of it.
    pub resource: Option<String>,
    pub actions: Actions,
    pub grantable: Actions,
    pub may_authorise: bool,
    /// The client's request id (AIP-155): a retry finds the first grant.
    pub request_id: Option<String>,
}

/// A grant as stored.
#[derive(Debug, Clone)]
pub struct GrantedRight {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub grantee: Grantee,
    pub right: String,
    pub unit_id: Option<Uuid>,
    pub resource: Option<String>,
    pub actions: Actions,
    pub grantable: Actions,
    pub may_authorise: bool,
    /// The grant it was made on the strength of; none: by an administrator.
    pub parent_id: Option<Uuid>,
    pub granter_id: Option<Uuid>,
    pub granted_by: String,
    pub granted_at: Millis,
}

#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub resource: Option<String>,
    /// The grants this user holds, directly or through their groups.
    pub grantee_id: Option<Uuid>,
    pub grantee_group_id: Option<Uuid>,
    pub unit_id: Option<Uuid>,
    pub granter_id: Option<Uuid>,
}

/// What a revocation took away: the grant named and, below it, every grant
/// made on its strength.
#[derive(Debug, Clone)]
pub struct RevokedGrants {
    pub revoked: Vec<GrantedRight>,
}

fn from_row(row: grant::Model) -> GrantedRight {
    GrantedRight {
        id: row.id,
        organisation_id: row.organisation_id,
        grantee: match (row.grantee_id, row.grantee_group_id) {
            (Some(user), _) => Grantee::User(user),
            (None, Some(group)) => Grantee::Group(group),
            // The table's check constraint holds exactly one.
            (None, None) => Grantee::User(Uuid::nil()),
        },
        right: row.right_name,
        unit_id: row.unit_id,
        resource: row.resource,
        actions: Actions {
            read: row.can_read,
            edit: row.can_edit,
        },
        grantable: Actions {
            read: row.passes_read,
            edit: row.passes_edit,
        },
        may_authorise: row.may_authorise,
        parent_id: row.parent_id,
        granter_id: row.granter_id,
        granted_by: row.granted_by,
        granted_at: row.granted_at,
    }
}

fn shown(grant: &GrantedRight) -> String {
    let list = |a: Actions| {
        let mut names = Vec::new();
        if a.read {
            names.push("read");
        }
        if a.edit {
            names.push("edit");
        }
        names.join("+")
    };
    let mut scope = grant
        .unit_id
        .map_or("the organisation".to_owned(), |u| format!("unit {u}"));
    if let Some(resource) = &grant.resource {
        scope = format!("resource {resource} of {scope}");
    }
    let mut text = format!("{} {} on {scope}", grant.right, list(grant.actions));
    if !grant.grantable.is_empty() {
        text.push_str(&format!(", may grant {}", list(grant.grantable)));
    }
    if grant.may_authorise {
        text.push_str(", may authorise");
    }
    text
}

/// A resource's name: what the service that checks the right calls it
/// (`invoice:2026-113`, `mailbox/support`).
fn check_resource(v: &mut Violations, resource: &str) {
    let ok = (1..=200).contains(&resource.len())
        && resource
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'/'));
    if !ok {
        v.add(
            "resource",
            "must be 1 to 200 characters of letters, digits, '.', '-', '_', ':' and '/' (e.g. invoice:2026-113)",
        );
    }
}

/// A right's name: what the service that checks it calls it.
fn check_right(v: &mut Violations, right: &str) {
    let ok = (1..=100).contains(&right.len())
        && right
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
        && right.as_bytes()[0].is_ascii_lowercase();
    if !ok {
        v.add(
            "right",
            "must be 1 to 100 characters of a-z, 0-9, '.', '-' and '_', starting with a letter (e.g. tax.vat-returns)",
        );
    }
}

fn request_of(new: &NewGrant, caller_in_grantee_group: bool) -> GrantRequest<'_> {
    GrantRequest {
        grantee: match new.grantee {
            Grantee::User(id) | Grantee::Group(id) => id,
        },
        caller_in_grantee_group,
        right: &new.right,
        unit_id: new.unit_id,
        resource: new.resource.as_deref(),
        actions: new.actions,
        grantable: new.grantable,
        may_authorise: new.may_authorise,
    }
}

/// A user as a holder of grants: their own, and their groups' (R-ACC-7:
/// grants through groups count like direct grants). Read once per call.
struct Holder {
    id: Uuid,
    groups: Vec<Uuid>,
    /// A service account uses what it holds but passes nothing on (R-ACC-5):
    /// colleagues act as it through shares, and being shared with gives no
    /// admin rights. Its grant options, direct or through a group, count for
    /// nothing, so no share hands the power to grant to anyone.
    passes_nothing: bool,
}

impl Holder {
    /// One who does not exist holds nothing of anyone else's.
    async fn of(domain: &Domain, db: &impl ConnectionTrait, user_id: Uuid) -> DomainResult<Self> {
        let (groups, passes_nothing) = match user::Entity::find_by_id(user_id).one(db).await? {
            Some(user) => (
                super::groups::groups_of_user(domain, db, &user).await?,
                user.service_account,
            ),
            None => (Vec::new(), true),
        };
        Ok(Self {
            id: user_id,
            groups,
            passes_nothing,
        })
    }

    /// The condition "held by this user".
    fn holds(&self) -> Condition {
        Condition::any()
            .add(grant::Column::GranteeId.eq(self.id))
            .add(grant::Column::GranteeGroupId.is_in(self.groups.clone()))
    }

    /// Whether a grant to `grantee` is one to a group this user is in
    /// (granting to it would be granting to oneself).
    fn is_in(&self, grantee: Grantee) -> bool {
        matches!(grantee, Grantee::Group(group) if self.groups.contains(&group))
    }
}

/// The condition "its rights may be passed on, or others let pass them
/// on" on grants: what makes its holder delegate.
pub(crate) fn passes_on() -> Condition {
    Condition::any()
        .add(grant::Column::PassesRead.eq(true))
        .add(grant::Column::PassesEdit.eq(true))
        .add(grant::Column::MayAuthorise.eq(true))
}

/// Which of `users` (of one organisation) hold a grant whose rights they
/// may pass on, directly or through a group (service accounts never:
/// `Holder::passes_nothing`): whoever takes over their login gives rights
/// away (R-ACC-3), so how they sign in is guarded as an administrator's is
/// (`policy::authorize_sign_in_change`). Two statements, plus each
/// person's groups only when the organisation has a group holding such a
/// grant.
pub(crate) async fn passing_rights_on_among(
    domain: &Domain,
    db: &impl ConnectionTrait,
    organisation_id: Uuid,
    users: &[&user::Model],
) -> DomainResult<std::collections::HashSet<Uuid>> {
    let with_options = || {
        grant::Entity::find()
            .filter(grant::Column::OrganisationId.eq(organisation_id))
            .filter(passes_on())
    };
    let people: Vec<&user::Model> = users.iter().copied().filter(|u| !u.service_account).collect();
    let ids: Vec<Uuid> = people.iter().map(|u| u.id).collect();
    let mut found: std::collections::HashSet<Uuid> = with_options()
        .filter(grant::Column::GranteeId.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .filter_map(|g| g.grantee_id)
        .collect();
    let groups: std::collections::HashSet<Uuid> = with_options()
        .filter(grant::Column::GranteeGroupId.is_not_null())
        .all(db)
        .await?
        .into_iter()
        .filter_map(|g| g.grantee_group_id)
        .collect();
    if !groups.is_empty() {
        for person in people {
            if found.contains(&person.id) {
                continue;
            }
            let theirs = super::groups::groups_of_user(domain, db, person).await?;
            if theirs.iter().any(|g| groups.contains(g)) {
                found.insert(person.id);
            }
        }
    }
    Ok(found)
}

/// The grants `holder` holds now in `organisation_id`, directly or
/// through a group, with the units their scopes cover.
async fn held_grants(
    domain: &Domain,
    db: &impl ConnectionTrait,
    organisation_id: Uuid,
    holder: &Holder,
    right: &str,
) -> DomainResult<Vec<HeldGrant>> {
    let rows = grant::Entity::find()
        .filter(grant::Column::OrganisationId.eq(organisation_id))
        .filter(holder.holds())
        .filter(grant::Column::RightName.eq(right))
        .all(db)
        .await?;
    let scopes: Vec<Option<Uuid>> = rows.iter().map(|r| r.unit_id).collect();
    let covered = resolve_scopes(domain, db, organisation_id, &scopes).await?;
    Ok(rows
        .into_iter()
        .zip(covered)
        .map(|(row, units)| HeldGrant {
            id: row.id,
            right: row.right_name,
            units,
            resource: row.resource,
            grantable: Actions {
                read: row.passes_read && !holder.passes_nothing,
                edit: row.passes_edit && !holder.passes_nothing,
            },
            may_authorise: row.may_authorise && !holder.passes_nothing,
        })
        .collect())
}

/// Revokes `root` and every grant made on its strength, however deep,
/// each with its `GRANT_REVOKED` event (the ones below naming the root in
/// `revoked_with`). Inside the caller's transaction, after the
/// organisation's lock.
async fn revoke_tree_in(
    txn: &sea_orm::DatabaseTransaction,
    caller: &Caller,
    root: grant::Model,
    now: Millis,
) -> DomainResult<Vec<GrantedRight>> {
    let root_id = root.id;
    // The subtree of grants below it, level by level (a grant's children
    // were made while it stood, so the walk ends).
    let mut revoked = vec![root];
    let mut frontier = vec![root_id];
    while !frontier.is_empty() {
        // In chunks: a wide level of the tree must not pass the databases'
        // limit on bound parameters.
        let mut children = Vec::new();
        for chunk in frontier.chunks(500) {
            children.extend(
                grant::Entity::find()
                    .filter(grant::Column::ParentId.is_in(chunk.to_vec()))
                    .all(txn)
                    .await?,
            );
        }
        frontier = children.iter().map(|c| c.id).collect();
        revoked.extend(children);
    }
    let ids: Vec<Uuid> = revoked.iter().map(|r| r.id).collect();
    for chunk in ids.chunks(500) {
        grant::Entity::delete_many()
            .filter(Condition::all().add(grant::Column::Id.is_in(chunk.to_vec())))
            .exec(txn)
            .await?;
    }
    let revoked: Vec<GrantedRight> = revoked.into_iter().map(from_row).collect();
    for grant in &revoked {
        let mut changes = vec![FieldChange {
            field: "grant".into(),
            before: shown(grant),
            after: String::new(),
        }];
        if grant.id != root_id {
            changes.push(FieldChange {
                field: "revoked_with".into(),
                before: String::new(),
                after: root_id.to_string(),
            });
        }
        history::record(
            txn,
            NewEvent {
                organisation_id: Some(grant.organisation_id),
                subject: subject_of(grant.grantee),
                activity: Activity::GrantRevoked,
                caller,
                at: now,
                changes,
            },
        )
        .await?;
    }
    Ok(revoked)
}

/// Revokes every grant `grantee` holds itself (not through groups), each
/// with what was made on its strength: a deleted user's rights end with
/// them, a deleted group's with it.
pub(super) async fn revoke_grants_held_in(
    txn: &sea_orm::DatabaseTransaction,
    caller: &Caller,
    grantee: Grantee,
    now: Millis,
) -> DomainResult<()> {
    let held = grant::Entity::find()
        .filter(match grantee {
            Grantee::User(id) => grant::Column::GranteeId.eq(id),
            Grantee::Group(id) => grant::Column::GranteeGroupId.eq(id),
        })
        .all(txn)
        .await?;
    revoke_trees_in(txn, caller, held, now).await
}

/// Revokes each of `roots` with its cascade, once: a root below another
/// went with that one already.
async fn revoke_trees_in(
    txn: &sea_orm::DatabaseTransaction,
    caller: &Caller,
    roots: impl IntoIterator<Item = grant::Model>,
    now: Millis,
) -> DomainResult<()> {
    let mut gone = std::collections::HashSet::new();
    for root in roots {
        if !gone.contains(&root.id) {
            gone.extend(revoke_tree_in(txn, caller, root, now).await?.iter().map(|g| g.id));
        }
    }
    Ok(())
}

/// Revokes, with their cascades, the grants `granter` made on the strength
/// of a grant held by one of `groups` (any group: `None`): a member who
/// leaves a group (or is deleted) loses what they held through it, and so
/// does everyone they passed it on to, as with a grant of their own.
pub(super) async fn revoke_passed_on_in(
    txn: &sea_orm::DatabaseTransaction,
    caller: &Caller,
    granter: Uuid,
    groups: Option<&[Uuid]>,
    now: Millis,
) -> DomainResult<()> {
    let made = grant::Entity::find()
        .filter(grant::Column::GranterId.eq(granter))
        .filter(grant::Column::ParentId.is_not_null())
        .all(txn)
        .await?;
    if made.is_empty() {
        return Ok(());
    }
    let parents: Vec<Uuid> = made.iter().filter_map(|g| g.parent_id).collect();
    let mut through_groups = std::collections::HashSet::new();
    for chunk in parents.chunks(500) {
        let mut query = grant::Entity::find()
            .filter(grant::Column::Id.is_in(chunk.to_vec()))
            .filter(grant::Column::GranteeGroupId.is_not_null());
        if let Some(groups) = groups {
            query = query.filter(grant::Column::GranteeGroupId.is_in(groups.to_vec()));
        }
        through_groups.extend(query.all(txn).await?.into_iter().map(|g| g.id));
    }
    let roots = made
        .into_iter()
        .filter(|root| root.parent_id.is_some_and(|p| through_groups.contains(&p)));
    revoke_trees_in(txn, caller, roots, now).await
}

/// Revokes, with their cascades, the grants any of `granters` made on the
/// strength of a grant held by one of `groups`: they all left those groups
/// at once (a unit moved out of a production unit's subtree).
pub(super) async fn revoke_passed_on_by_in(
    txn: &sea_orm::DatabaseTransaction,
    caller: &Caller,
    granters: &std::collections::HashSet<Uuid>,
    groups: &[Uuid],
    now: Millis,
) -> DomainResult<()> {
    if granters.is_empty() || groups.is_empty() {
        return Ok(());
    }
    let held: Vec<Uuid> = grant::Entity::find()
        .filter(grant::Column::GranteeGroupId.is_in(groups.to_vec()))
        .all(txn)
        .await?
        .into_iter()
        .map(|g| g.id)
        .collect();
    let mut made = Vec::new();
    for chunk in held.chunks(500) {
        made.extend(
            grant::Entity::find()
                .filter(grant::Column::ParentId.is_in(chunk.to_vec()))
                .all(txn)
                .await?
                .into_iter()
                .filter(|g| g.granter_id.is_some_and(|id| granters.contains(&id))),
        );
    }
    revoke_trees_in(txn, caller, made, now).await
}

impl Domain {
    /// R-ACC-3: gives a right. Administrators give any; a holder passes on
    /// what their grant options allow, within its scope.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn create_grant(&self, caller: &Caller, new: NewGrant) -> DomainResult<GrantedRight> {
        // Rights are given within one's own organisation: a user or group
        // of another (or, for the operator, any) reads as missing.
        let grantee = grantee_row(&self.db, caller, new.grantee).await?;
        // A first check of the caller's right to grant this at all, on
        // the cached caller and the grants as read now, so a caller who
        // may not grant learns nothing of the grantee (their state) from the
        // checks below; the check that counts runs under the lock.
        let granter = caller
            .user_id()
            .ok_or_else(|| DomainError::denied("the caller may not grant rights"))?;
        // The right's name goes into the look-up of what the caller holds:
        // its shape first (PostgreSQL refuses a NUL in a text comparison,
        // which would answer INTERNAL).
        let mut v = Violations::default();
        check_right(&mut v, &new.right);
        if let Some(id) = &new.request_id {
            v.check("request_id", crate::validate::request_id(id));
        }
        v.into_result()?;
        let holder = Holder::of(self, &self.db, granter).await?;
        let held = held_grants(self, &self.db, grantee.organisation_id(), &holder, &new.right).await?;
        authorize_grant(caller, &held, request_of(&new, holder.is_in(new.grantee)))?;
        self.check_new_grant(&self.db, &grantee, &new).await?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        let created = self.create_grant_in(&txn, caller, &grantee, new).await?;
        txn.commit().await?;
        Ok(created)
    }

    /// A grant's field rules and its grantee's state, before any write.
    pub(crate) async fn check_new_grant(
        &self,
        db: &impl ConnectionTrait,
        grantee: &GranteeRow,
        new: &NewGrant,
    ) -> DomainResult<()> {
        let organisation_id = grantee.organisation_id();
        let mut v = Violations::default();
        check_right(&mut v, &new.right);
        if let Some(resource) = &new.resource {
            check_resource(&mut v, resource);
        }
        if new.actions.is_empty() {
            v.add("actions", "must name at least one of READ and EDIT");
        }
        if !new.grantable.within(new.actions) {
            v.add("grantable_actions", "must be among the grant's actions");
        }
        if let Some(unit) = new.unit_id
            && !self.units_of(db, organisation_id).await?.iter().any(|u| u.id == unit)
        {
            v.add("unit_id", "names no unit of this organisation");
        }
        if let GranteeRow::User(grantee) = grantee
            && grantee.service_account
        {
            if !new.grantable.is_empty() {
                v.add(
                    "grantable_actions",
                    "must be empty for a service account: an account uses its rights and passes none on (colleagues act as it through shares)",
                );
            }
            if new.may_authorise {
                v.add(
                    "may_authorise",
                    "must be false for a service account: an account uses its rights and passes none on (colleagues act as it through shares)",
                );
            }
        }
        v.into_result()?;
        if let GranteeRow::User(grantee) = grantee
            && !parse::<UserState>(&grantee.state)?.is_standing()
        {
            return Err(DomainError::precondition(
                Reason::UserNotActive,
                "only an active or pending user can be given a right",
            ));
        }
        Ok(())
    }

    /// CreateGrant's write inside the caller's transaction (a decided
    /// rights request applies it), for a grantee and input already
    /// checked (`check_new_grant`).
    pub(crate) async fn create_grant_in(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        caller: &Caller,
        grantee: &GranteeRow,
        new: NewGrant,
    ) -> DomainResult<GrantedRight> {
        let organisation_id = grantee.organisation_id();
        let granter = caller
            .user_id()
            .ok_or_else(|| DomainError::denied("the caller may not grant rights"))?;
        // Grant writes of an organisation are ordered by its row lock, so the
        // grant this one is made on cannot be revoked between check and commit.
        lock_organisation(txn, organisation_id).await?;
        // A retry (under the lock, so a first call still writing is waited
        // for) gets what the first call made, whatever changed since.
        let fingerprint = new
            .request_id
            .as_ref()
            .map(|_| crate::services::request_fingerprint(caller, &new));
        if let Some(request_id) = &new.request_id
            && let Some(earlier) = grant::Entity::find()
                .filter(grant::Column::OrganisationId.eq(organisation_id))
                .filter(grant::Column::CreateRequestId.eq(request_id.as_str()))
                .one(txn)
                .await?
        {
            crate::services::ensure_same_request(
                earlier.create_request_hash.as_deref(),
                fingerprint.as_deref().unwrap_or_default(),
                "grant",
            )?;
            return Ok(from_row(earlier));
        }
        super::scope_unit_as_now(txn, organisation_id, new.unit_id).await?;
        let caller = &super::caller_as_now(self, txn, caller).await?;
        // The grantee as they stand under the lock (their unit decides their
        // system groups, so whether they delegate already).
        let mut user_now = None;
        match grantee {
            GranteeRow::User(row) => {
                user_now = Some(super::standing_user_as_now(txn, row.id).await?);
            }
            GranteeRow::Group(row) => {
                group::Entity::find_by_id(row.id)
                    .one(txn)
                    .await?
                    .ok_or_else(|| DomainError::not_found("group", row.id))?;
            }
        }
        let holder = Holder::of(self, txn, granter).await?;
        let held = held_grants(self, txn, organisation_id, &holder, &new.right).await?;
        let parent_id = authorize_grant(caller, &held, request_of(&new, holder.is_in(new.grantee)))?;
        let now = now_millis();
        // A person given a right they may pass on starts to delegate; so
        // does each member of a group given one.
        let passes_on = !new.grantable.is_empty() || new.may_authorise;
        if passes_on {
            let people = match (grantee, &user_now) {
                (GranteeRow::User(_), Some(row)) => sea_orm::Condition::all().add(user::Column::Id.eq(row.id)),
                (GranteeRow::Group(group), _) => super::groups::members_of(self, txn, group).await?,
                _ => sea_orm::Condition::any(),
            };
            super::ensure_no_stand_in_of(txn, caller, organisation_id, people).await?;
        }
        let starts: Vec<Uuid> = match (grantee, &user_now) {
            (GranteeRow::User(_), Some(row)) if passes_on => {
                if super::starts_to_delegate(self, txn, row).await? {
                    vec![row.id]
                } else {
                    Vec::new()
                }
            }
            (GranteeRow::Group(group), _) if passes_on => self.members_starting_to_delegate(txn, group).await?,
            _ => Vec::new(),
        };
        let row = grant::ActiveModel {
            id: Set(Uuid::now_v7()),
            organisation_id: Set(organisation_id),
            grantee_id: Set(match new.grantee {
                Grantee::User(id) => Some(id),
                Grantee::Group(_) => None,
            }),
            grantee_group_id: Set(match new.grantee {
                Grantee::Group(id) => Some(id),
                Grantee::User(_) => None,
            }),
            right_name: Set(new.right.clone()),
            unit_id: Set(new.unit_id),
            resource: Set(new.resource.clone()),
            can_read: Set(new.actions.read),
            can_edit: Set(new.actions.edit),
            passes_read: Set(new.grantable.read),
            passes_edit: Set(new.grantable.edit),
            may_authorise: Set(new.may_authorise),
            parent_id: Set(parent_id),
            granter_id: Set(Some(granter)),
            granted_by: Set(caller.actor()),
            granted_at: Set(now),
            create_request_id: Set(new.request_id.clone()),
            create_request_hash: Set(fingerprint),
        }
        .insert(txn)
        .await?;
        let created = from_row(row);
        history::record(
            txn,
            NewEvent {
                organisation_id: Some(organisation_id),
                subject: subject_of(new.grantee),
                activity: Activity::GrantCreated,
                caller,
                at: now,
                changes: vec![FieldChange {
                    field: "grant".into(),
                    before: String::new(),
                    after: shown(&created),
                }],
            },
        )
        .await?;
        for user_id in starts {
            self.end_handover_in(txn, caller, user_id, now).await?;
        }
        Ok(created)
    }

    /// The members of `group` with something for `end_handover_in` to end
    /// (a waiting address change, or not yet activated) who neither are
    /// administrators nor delegate yet: given a right to pass on through
    /// the group, they start to.
    async fn members_starting_to_delegate(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        group: &group::Model,
    ) -> DomainResult<Vec<Uuid>> {
        let organisation_id = group.organisation_id;
        let members = user::Entity::find()
            .filter(user::Column::OrganisationId.eq(organisation_id))
            .filter(super::groups::members_of(self, txn, group).await?)
            .filter(super::has_handover())
            .all(txn)
            .await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<&user::Model> = members.iter().collect();
        let ids: Vec<Uuid> = members.iter().map(|m| m.id).collect();
        let delegating = super::delegating_among(self, txn, organisation_id, &rows).await?;
        let roles = crate::services::users::roles_of(txn, &ids).await?;
        Ok(ids
            .into_iter()
            .filter(|id| !delegating.contains(id))
            .filter(|id| !roles.get(id).is_some_and(|r| r.iter().any(|r| r.is_administrator())))
            .collect())
    }

    /// Revokes a grant and, in the same transaction, every grant made on its
    /// strength, however deep. Administrators revoke any; the one who made
    /// it and the grantee (giving it up) revoke theirs.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn revoke_grant(&self, caller: &Caller, id: Uuid) -> DomainResult<RevokedGrants> {
        let unknown = || DomainError::not_found("grant", id);
        let row = grant::Entity::find_by_id(id).one(&self.db).await?.ok_or_else(unknown)?;
        if caller.organisation_id() != Some(row.organisation_id) {
            return Err(unknown());
        }
        let own = caller
            .user_id()
            .is_some_and(|me| row.grantee_id == Some(me) || Some(me) == row.granter_id);
        if !own {
            authorize(caller, Action::ManageGrants, Target::organisation(row.organisation_id))?;
        }
        let txn = crate::persistence::begin_write(&self.db).await?;
        lock_organisation(&txn, row.organisation_id).await?;
        let root = grant::Entity::find_by_id(id).one(&txn).await?.ok_or_else(unknown)?;
        if !own {
            // Again on the caller's roles as they are now.
            let now = super::caller_as_now(self, &txn, caller).await?;
            authorize(&now, Action::ManageGrants, Target::organisation(row.organisation_id))?;
        }
        let revoked = revoke_tree_in(&txn, caller, root, now_millis()).await?;
        txn.commit().await?;
        Ok(RevokedGrants { revoked })
    }

    /// The organisation's grants, by grantee, unit or granter. Administrators
    /// see all; everyone else the grants they hold or made.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_grants(
        &self,
        caller: &Caller,
        organisation_id: Uuid,
        filter: GrantFilter,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<GrantedRight>> {
        let mut query = grant::Entity::find().filter(grant::Column::OrganisationId.eq(organisation_id));
        if let Visible::Concerning(me) = visible_to(caller, Action::ReadGrants, organisation_id, "grants")? {
            let mine = Holder::of(self, &self.db, me).await?.holds();
            query = query.filter(mine.add(grant::Column::GranterId.eq(me)));
        }
        let limit = paging::page_size(page_size, 50, 500)?;
        if let Some(grantee) = filter.grantee_id {
            // What the user holds, directly or through a group.
            query = query.filter(Holder::of(self, &self.db, grantee).await?.holds());
        }
        if let Some(resource) = filter.resource {
            let mut v = Violations::default();
            check_resource(&mut v, &resource);
            v.into_result()?;
            query = query.filter(grant::Column::Resource.eq(resource));
        }
        if let Some(group) = filter.grantee_group_id {
            query = query.filter(grant::Column::GranteeGroupId.eq(group));
        }
        if let Some(unit) = filter.unit_id {
            query = query.filter(grant::Column::UnitId.eq(unit));
        }
        if let Some(granter) = filter.granter_id {
            query = query.filter(grant::Column::GranterId.eq(granter));
        }
        let (rows, next) = paging::keyset(
            &self.db,
            query,
            grant::Column::Id,
            paging::Order::Ascending,
            &format!("grants:{organisation_id}"),
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
}

/// The grantee of a new grant, of the caller's organisation: another
/// organisation's (or, for the operator, any) reads as missing.
async fn grantee_row(db: &impl ConnectionTrait, caller: &Caller, grantee: Grantee) -> DomainResult<GranteeRow> {
    let ours = |organisation_id: Uuid| Some(organisation_id) == caller.organisation_id();
    Ok(match grantee {
        Grantee::User(id) => GranteeRow::User(Box::new(
            user::Entity::find_by_id(id)
                .one(db)
                .await?
                .filter(|row| ours(row.organisation_id))
                .ok_or_else(|| DomainError::not_found("user", id))?,
        )),
        Grantee::Group(id) => GranteeRow::Group(
            group::Entity::find_by_id(id)
                .one(db)
                .await?
                .filter(|row| ours(row.organisation_id))
                .ok_or_else(|| DomainError::not_found("group", id))?,
        ),
    })
}
