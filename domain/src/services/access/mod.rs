//! Admin levels (R-ACC-2, R-ACC-4): granting, changing, listing and
//! revoking them; grants of rights (R-ACC-3, `grants`); and the one place a
//! scope is resolved to the units it covers ([`resolve_scopes`]). The decisions themselves are the policy's
//! (`policy::authorize`, `policy::authorize_level_grant`).
//!
//! How levels and roles combine (README "Admin levels"): roles hold on the
//! whole organisation and keep every right they had; a level adds the user
//! rights of its number within its scope. A user administrator is, for
//! users, a level 3 on the whole organisation plus imports, certificates
//! and anonymity decisions; organisation and rights administrators grant
//! any level anywhere.

use std::sync::Arc;

use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter};
use tracing::instrument;
use uuid::Uuid;

mod grants;
pub(crate) mod groups;
mod shares;

pub(crate) use grants::GranteeRow;
pub use grants::{GrantFilter, GrantedRight, Grantee, NewGrant, RevokedGrants};
pub use groups::{Group, GroupMember, NewGroup};
pub(crate) use shares::ensure_share_allows_edit;
pub use shares::{Share, ShareFilter};

use super::lock_organisation;
use super::organisations::subtree;
use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason};
use crate::model::*;
use crate::paging;
use crate::persistence::entities::{admin_level, user};
use crate::persistence::history::{self, NewEvent, Subject};
use crate::persistence::mapping::parse;
use crate::policy::{
    Action, Caller, HeldLevel, LEVEL_1, LEVEL_4, LevelChange, ListingScope, Principal, Target, authorize,
    authorize_level_grant, user_listing_scope,
};

/// One admin level held by one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelGrant {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub user_id: Uuid,
    pub level: u8,
    /// None: the whole organisation.
    pub unit_id: Option<Uuid>,
    /// How history names who granted (or last changed) it.
    pub granted_by: String,
    pub granted_at: Millis,
}

#[derive(Debug, Clone, Default)]
pub struct LevelFilter {
    pub user_id: Option<Uuid>,
    pub unit_id: Option<Uuid>,
}

fn grant_from_row(row: admin_level::Model) -> LevelGrant {
    LevelGrant {
        id: row.id,
        organisation_id: row.organisation_id,
        user_id: row.user_id,
        level: u8::try_from(row.level).unwrap_or(LEVEL_4),
        unit_id: row.unit_id,
        granted_by: row.granted_by,
        granted_at: row.granted_at,
    }
}

/// How history shows a level: `2 on unit <id>` or `1 on the organisation`.
fn shown(level: u8, unit_id: Option<Uuid>) -> String {
    match unit_id {
        Some(unit) => format!("{level} on unit {unit}"),
        None => format!("{level} on the organisation"),
    }
}

fn scope_key(unit_id: Option<Uuid>) -> String {
    unit_id.map(|u| u.to_string()).unwrap_or_default()
}

/// The units each of `scopes` covers (a unit and its subtree; none, the
/// whole organisation, stays none): the one place a scope is resolved. Reads
/// the unit tree only when a scope names a unit.
pub(crate) async fn resolve_scopes(
    domain: &Domain,
    db: &impl ConnectionTrait,
    organisation_id: Uuid,
    scopes: &[Option<Uuid>],
) -> DomainResult<Vec<Option<Arc<[Uuid]>>>> {
    let units = if scopes.iter().any(Option::is_some) {
        domain.units_of(db, organisation_id).await?
    } else {
        Vec::new()
    };
    Ok(scopes
        .iter()
        .map(|scope| scope.map(|unit| Arc::from(subtree(&units, unit))))
        .collect())
}

/// The levels `user_id` holds now, each with the units it covers.
pub(crate) async fn held_levels(
    domain: &Domain,
    db: &impl ConnectionTrait,
    organisation_id: Uuid,
    user_id: Uuid,
) -> DomainResult<Vec<HeldLevel>> {
    use sea_orm::sea_query::{Expr, ExprTrait, Query};
    // A service account holds no level (R-ACC-5): a colleague acting as it
    // through a share must not administer by it. `check_new_level` refuses
    // one; a row from before that rule counts for nothing.
    let a_person = Query::select()
        .column(user::Column::Id)
        .from(user::Entity)
        .and_where(Expr::col(user::Column::Id).eq(user_id))
        .and_where(Expr::col(user::Column::ServiceAccount).eq(false))
        .to_owned();
    let rows = admin_level::Entity::find()
        .filter(admin_level::Column::UserId.eq(user_id))
        .filter(admin_level::Column::UserId.in_subquery(a_person))
        .all(db)
        .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let scopes: Vec<Option<Uuid>> = rows.iter().map(|r| r.unit_id).collect();
    let covered = resolve_scopes(domain, db, organisation_id, &scopes).await?;
    Ok(rows
        .into_iter()
        .zip(covered)
        .map(|(row, units)| HeldLevel {
            level: u8::try_from(row.level).unwrap_or(LEVEL_4),
            units,
        })
        .collect())
}

/// The caller as they stand now, read inside the writing transaction after
/// the organisation's lock: their roles (which let organisation and rights
/// administrators grant anything) and levels may have been taken away since
/// the caller was authenticated and cached.
pub(crate) async fn caller_as_now(domain: &Domain, txn: &DatabaseTransaction, caller: &Caller) -> DomainResult<Caller> {
    let Principal::Member {
        user_id,
        organisation_id,
        ..
    } = &caller.principal
    else {
        return Ok(caller.clone());
    };
    // Acting as another through a share confers none of the owner's roles:
    // the one acting must still stand, and the principal keeps none.
    if let Some(acting) = caller.acting {
        standing_member(txn, acting.by).await?;
        return Ok(caller.clone());
    }
    standing_member(txn, *user_id).await?;
    let roles = crate::services::users::roles_of(txn, &[*user_id])
        .await?
        .remove(user_id)
        .unwrap_or_default();
    // Levels only for a caller who held some when authenticated: one given
    // since then can only make a cached caller weaker, never stronger.
    let levels = if caller.holds_levels() {
        Some(held_levels(domain, txn, *organisation_id, *user_id).await?)
    } else {
        None
    };
    let mut now = caller.clone();
    if let Principal::Member {
        roles: held,
        levels: held_levels_now,
        ..
    } = &mut now.principal
    {
        *held = roles;
        if let Some(levels) = levels {
            *held_levels_now = levels;
        }
    }
    Ok(now)
}

/// Whether `caller` may change roles in `organisation_id`, or is an
/// operator (who appoints administrators by a rule of its own): those
/// make anyone an administrator outright, so the two-keys rules on who
/// may make a person delegate leave them free.
pub(crate) fn may_change_roles(caller: &Caller, organisation_id: Uuid) -> bool {
    caller.is_operator() || authorize(caller, Action::ChangeRoles, Target::organisation(organisation_id)).is_ok()
}

/// Two keys (R-AUTH-1) when a write makes a person start to delegate (a
/// move into a unit, an add to a group, whose rights may be passed on): a
/// caller who may not change roles may have set up how that person signs
/// in (a user administrator keeps the activation code of a person created
/// with a birth date, and sets the password with it), and would then hold a
/// delegator's credentials and grant themselves through them. So only
/// someone who may change roles makes a person delegate, as CreateUser's
/// placement rule says. Checked on the caller as they are under the
/// organisation's lock.
pub(crate) async fn ensure_may_make_delegate(
    domain: &Domain,
    txn: &DatabaseTransaction,
    caller: &Caller,
    organisation_id: Uuid,
    doing: &str,
) -> DomainResult<()> {
    if caller.is_operator() {
        return Ok(());
    }
    let caller_now = caller_as_now(domain, txn, caller).await?;
    if !may_change_roles(&caller_now, organisation_id) {
        return Err(DomainError::denied(format!(
            "{doing} would let this person pass rights on, so only someone who may change roles (an organisation administrator) may (two keys)"
        )));
    }
    Ok(())
}

/// Two keys against a stand-in (R-ACC-4, R-AUTH-1): whoever created a
/// person, or handed out their activation since, may hold what activates
/// them: the code of a person without a CPR number comes back to them, and
/// a CPR person's link goes to the address they typed (a mailbox of their
/// own, with a CPR number they made up: only its form is checked). So
/// they can activate them and sign in as them. Given an
/// admin level or a right to pass on by that very caller, such a person
/// lets one person act twice: keep a level after their own is taken away
/// (and grant it back through the stand-in), or grant themselves rights
/// through it. So among `people` (users of `organisation_id`), none this
/// caller created or sent an activation is made to delegate by them; a colleague
/// may. Someone who may change roles is not held to it: they could make
/// the person an administrator outright (CreateUser's placement rule and
/// `ensure_may_make_delegate` leave them free alike). Read from history,
/// where every creation and activation sent names who did it. `caller`
/// as they are under the organisation's lock.
pub(crate) async fn ensure_no_stand_in_of(
    txn: &DatabaseTransaction,
    caller: &Caller,
    organisation_id: Uuid,
    people: sea_orm::Condition,
) -> DomainResult<()> {
    use sea_orm::sea_query::Query;

    use crate::persistence::entities::history_event;
    if caller.acting_user_id().is_none() || may_change_roles(caller, organisation_id) {
        return Ok(());
    }
    let handed_out = history_event::Entity::find()
        .filter(history_event::Column::OrganisationId.eq(organisation_id))
        .filter(history_event::Column::SubjectKind.eq("USER"))
        .filter(history_event::Column::Actor.eq(caller.actor()))
        .filter(history_event::Column::Activity.is_in([
            Activity::UserCreated.as_str(),
            Activity::ActivationCodeCreated.as_str(),
            Activity::ActivationSent.as_str(),
        ]))
        .filter(
            history_event::Column::SubjectId.in_subquery(
                Query::select()
                    .column(user::Column::Id)
                    .from(user::Entity)
                    .cond_where(people)
                    .to_owned(),
            ),
        )
        .all(txn)
        .await?;
    // A service account never activates: creating one hands over nothing.
    let handed = handed_out.iter().find(|event| {
        event.activity != Activity::UserCreated.as_str()
            || !history::changes_from_json(&event.changes)
                .iter()
                .any(|change| change.field == "service_account" && change.after == "true")
    });
    if let Some(event) = handed {
        return Err(DomainError::denied(format!(
            "you created user {} or sent their activation (a code, or a link to an address you chose), so you could sign in as them: a colleague gives them an admin level or a right to pass on (two keys)",
            event.subject_id
        )));
    }
    Ok(())
}

/// Refuses a caller who is no longer an active (or pending) user.
async fn standing_member(txn: &DatabaseTransaction, user_id: Uuid) -> DomainResult<()> {
    let standing = user::Entity::find_by_id(user_id)
        .one(txn)
        .await?
        .map(|row| parse::<UserState>(&row.state))
        .transpose()?
        .is_some_and(UserState::is_standing);
    if !standing {
        return Err(DomainError::denied("the caller is no longer an active user"));
    }
    Ok(())
}

/// The scope `unit_id` of a level or grant read again after the
/// organisation's lock, which DeleteUnit takes too: checked before the
/// transaction, a unit deleted in between failed the insert on its
/// foreign key (INTERNAL). NOT_FOUND says what happened.
pub(crate) async fn scope_unit_as_now(
    txn: &DatabaseTransaction,
    organisation_id: Uuid,
    unit_id: Option<Uuid>,
) -> DomainResult<()> {
    let Some(unit_id) = unit_id else {
        return Ok(());
    };
    crate::services::organisations::find_unit_of(txn, unit_id, organisation_id)
        .await?
        .map(|_| ())
        .ok_or_else(|| DomainError::not_found("unit", unit_id))
}

/// A user read again inside the writing transaction (after the
/// organisation's lock): their unit and state as they are at commit.
pub(crate) async fn standing_user_as_now(txn: &DatabaseTransaction, user_id: Uuid) -> DomainResult<user::Model> {
    let row = user::Entity::find_by_id(user_id)
        .one(txn)
        .await?
        .ok_or_else(|| DomainError::not_found("user", user_id))?;
    if !parse::<UserState>(&row.state)?.is_standing() {
        return Err(DomainError::precondition(
            Reason::UserNotActive,
            "only an active or pending user can be given an admin level or a right",
        ));
    }
    Ok(row)
}

/// Deletes a level, with its `ADMIN_LEVEL_REVOKED` event on its holder.
async fn remove_level_in(
    txn: &DatabaseTransaction,
    caller: &Caller,
    row: &admin_level::Model,
    now: Millis,
) -> DomainResult<()> {
    admin_level::Entity::delete_by_id(row.id).exec(txn).await?;
    let level = u8::try_from(row.level).unwrap_or(LEVEL_4);
    history::record(
        txn,
        NewEvent {
            organisation_id: Some(row.organisation_id),
            subject: Subject::User(row.user_id),
            activity: Activity::AdminLevelRevoked,
            caller,
            at: now,
            changes: vec![FieldChange {
                field: "admin_level".into(),
                before: shown(level, row.unit_id),
                after: String::new(),
            }],
        },
    )
    .await
}

/// A deleted user's delegation ends with them (DeleteUser's transaction):
/// the levels they held, the grants they held and every grant made on
/// their strength (cascade), and the shares of their resources and with
/// them, each with its history event. A deactivated user keeps theirs, as
/// they keep their seat, for their return.
pub(crate) async fn end_delegation_of_in(
    txn: &DatabaseTransaction,
    caller: &Caller,
    user_id: Uuid,
    now: Millis,
) -> DomainResult<()> {
    for level in admin_level::Entity::find()
        .filter(admin_level::Column::UserId.eq(user_id))
        .all(txn)
        .await?
    {
        remove_level_in(txn, caller, &level, now).await?;
    }
    grants::revoke_grants_held_in(txn, caller, grants::Grantee::User(user_id), now).await?;
    grants::revoke_passed_on_in(txn, caller, user_id, None, now).await?;
    groups::leave_groups_in(txn, caller, user_id, now).await?;
    shares::end_shares_of_in(txn, caller, user_id, now).await
}

/// Whether `user_id` holds an admin level, as the policy must know when a
/// caller acts by level (a level acts on ordinary users only). Asked only
/// for callers who hold levels: for everyone else the answer changes nothing.
pub(crate) async fn target_holds_level(
    db: &impl ConnectionTrait,
    caller: &Caller,
    user_id: Uuid,
) -> DomainResult<bool> {
    if !caller.holds_levels() {
        return Ok(false);
    }
    use sea_orm::PaginatorTrait;
    Ok(admin_level::Entity::find()
        .filter(admin_level::Column::UserId.eq(user_id))
        .count(db)
        .await?
        > 0)
}

/// Whether `user` delegates: holds an admin level (a person, not a
/// service account) or a grant whose rights they may pass on. Taking over
/// such a person's login hands over what they may give, so how they sign
/// in is changed only as an administrator's is
/// (`policy::authorize_sign_in_change`). Read only for those changes.
pub(crate) async fn user_delegates(
    domain: &Domain,
    db: &impl ConnectionTrait,
    user: &user::Model,
) -> DomainResult<bool> {
    // One definition of who delegates: the batch's, for one person.
    Ok(delegating_among(domain, db, user.organisation_id, &[user])
        .await?
        .contains(&user.id))
}

/// The condition "has something a start of delegating ends"
/// (`Domain::end_handover_in`) on users: a waiting address change, or not
/// yet activated.
pub(crate) fn has_handover() -> sea_orm::Condition {
    sea_orm::Condition::any()
        .add(user::Column::PendingEmail.is_not_null())
        .add(user::Column::State.eq(UserState::PendingActivation.as_str()))
}

/// Whether `user` is about to start delegating: neither an administrator
/// (guarded already) nor one who delegates. Read before a write that may
/// make them delegate; [`Domain::end_handover_in`] after it.
pub(crate) async fn starts_to_delegate(
    domain: &Domain,
    db: &impl ConnectionTrait,
    user: &user::Model,
) -> DomainResult<bool> {
    let roles = crate::services::users::roles_of(db, &[user.id]).await?;
    let is_admin = roles
        .get(&user.id)
        .is_some_and(|r| r.iter().any(|r| r.is_administrator()));
    Ok(!is_admin && !user_delegates(domain, db, user).await?)
}

impl Domain {
    /// R-AUTH-1 when a person starts to delegate (given an admin level, or
    /// a right they may pass on, directly or through a group): from now on
    /// how they sign in is changed only by someone who may change roles, so
    /// what was set going while it was not ends, as at a promotion
    /// (`update_user_in`). A waiting address change is withdrawn (perhaps
    /// to a mailbox a user administrator chose, who would verify it, reset
    /// the password and sign in as them); a pending person's activation
    /// codes and links end. Inside the write that made them delegate.
    pub(crate) async fn end_handover_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        user_id: Uuid,
        now: crate::model::Millis,
    ) -> DomainResult<()> {
        use sea_orm::sea_query::Expr;
        let Some(row) = user::Entity::find_by_id(user_id).one(txn).await? else {
            return Ok(());
        };
        if let Some(pending) = &row.pending_email {
            let withdrawn = user::Entity::update_many()
                .col_expr(user::Column::PendingEmail, Expr::value(Option::<String>::None))
                .col_expr(user::Column::Version, Expr::value(row.version + 1))
                .col_expr(user::Column::UpdatedAt, Expr::value(now))
                .filter(user::Column::Id.eq(row.id))
                .filter(user::Column::Version.eq(row.version))
                .exec(txn)
                .await?;
            if withdrawn.rows_affected != 1 {
                return Err(DomainError::Aborted {
                    reason: Reason::ChangedMeanwhile,
                    message: "the user was changed meanwhile; try again".into(),
                });
            }
            self.withdraw_email_change(txn, row.id, now).await?;
            history::record(
                txn,
                NewEvent {
                    organisation_id: Some(row.organisation_id),
                    subject: Subject::User(row.id),
                    activity: crate::model::Activity::UserUpdated,
                    caller,
                    at: now,
                    changes: vec![crate::model::FieldChange {
                        field: "pending_email".into(),
                        before: pending.clone(),
                        after: String::new(),
                    }],
                },
            )
            .await?;
        }
        if parse::<UserState>(&row.state)? == UserState::PendingActivation {
            // No new link by itself: a pending person's address and CPR
            // number were someone else's to set, perhaps a user
            // administrator's own mailbox and a number they know. Someone
            // who may change roles sends one (SendActivation).
            self.end_activation_secrets(txn, row.id, now).await?;
        }
        Ok(())
    }
}

/// Which of `users` (of one organisation) delegate: [`user_delegates`] for
/// a batch (BatchSendActivation), in a few statements, not five per person.
pub(crate) async fn delegating_among(
    domain: &Domain,
    db: &impl ConnectionTrait,
    organisation_id: Uuid,
    users: &[&user::Model],
) -> DomainResult<std::collections::HashSet<Uuid>> {
    let people: Vec<Uuid> = users.iter().filter(|u| !u.service_account).map(|u| u.id).collect();
    let mut found: std::collections::HashSet<Uuid> = admin_level::Entity::find()
        .filter(admin_level::Column::UserId.is_in(people))
        .all(db)
        .await?
        .into_iter()
        .map(|l| l.user_id)
        .collect();
    found.extend(grants::passing_rights_on_among(domain, db, organisation_id, users).await?);
    Ok(found)
}

/// [`user_delegates`] of the user `id` as stored, or as placed in
/// `placed_in` instead when given (a move: the system groups over the unit
/// they go to count); a user not found delegates nothing.
pub(crate) async fn user_by_id_delegates(
    domain: &Domain,
    db: &impl ConnectionTrait,
    id: Uuid,
    placed_in: Option<Option<Uuid>>,
) -> DomainResult<bool> {
    match user::Entity::find_by_id(id).one(db).await? {
        Some(mut row) => {
            if let Some(unit) = placed_in {
                row.unit_id = unit;
            }
            user_delegates(domain, db, &row).await
        }
        None => Ok(false),
    }
}

fn check_level(level: i32) -> DomainResult<u8> {
    match u8::try_from(level) {
        Ok(level) if (LEVEL_1..=LEVEL_4).contains(&level) => Ok(level),
        _ => Err(DomainError::invalid(
            "level",
            "must be 1 (edits users, grants 1-4), 2 (edits, grants 3-4), 3 (edits users) or 4 (views users)",
        )),
    }
}

impl Domain {
    /// The user a level is about, checked visible to the caller (NOT_FOUND
    /// otherwise, as everywhere).
    async fn level_holder(&self, caller: &Caller, action: Action, user_id: Uuid) -> DomainResult<user::Model> {
        self.authorize_on_user(caller, action, user_id).await
    }

    /// R-ACC-2: gives `user_id` admin level `level` on the organisation
    /// (`unit_id` none) or on a unit's subtree; a level they already hold
    /// on that scope is changed. Two keys (R-ACC-4): never for oneself.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn grant_admin_level(
        &self,
        caller: &Caller,
        user_id: Uuid,
        level: i32,
        unit_id: Option<Uuid>,
    ) -> DomainResult<LevelGrant> {
        let grantee = self.level_holder(caller, Action::GrantAdminLevels, user_id).await?;
        let level = self.check_new_level(&self.db, &grantee, level, unit_id).await?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        let granted = self
            .grant_admin_level_in(&txn, caller, &grantee, level, unit_id)
            .await?;
        txn.commit().await?;
        self.auth_cache.clear();
        Ok(granted)
    }

    /// A level's field rules and its grantee's state, before any write:
    /// the level as a number 1-4.
    pub(crate) async fn check_new_level(
        &self,
        db: &impl ConnectionTrait,
        grantee: &user::Model,
        level: i32,
        unit_id: Option<Uuid>,
    ) -> DomainResult<u8> {
        let level = check_level(level)?;
        if grantee.service_account {
            return Err(DomainError::precondition(
                Reason::ServiceAccount,
                "a service account holds no admin level: people administer, accounts are shared (R-ACC-5)",
            ));
        }
        if let Some(unit) = unit_id
            && !self
                .units_of(db, grantee.organisation_id)
                .await?
                .iter()
                .any(|u| u.id == unit)
        {
            return Err(DomainError::invalid("unit_id", "names no unit of this organisation"));
        }
        if !parse::<UserState>(&grantee.state)?.is_standing() {
            return Err(DomainError::precondition(
                Reason::UserNotActive,
                "only an active or pending user can be given an admin level",
            ));
        }
        Ok(level)
    }

    /// GrantAdminLevel's write inside the caller's transaction (a decided
    /// rights request applies it), for a grantee and input already
    /// checked: the ceiling, scope and two keys, the row, its history.
    /// Cached callers are the caller's to clear after the commit.
    pub(crate) async fn grant_admin_level_in(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        caller: &Caller,
        grantee: &user::Model,
        level: u8,
        unit_id: Option<Uuid>,
    ) -> DomainResult<LevelGrant> {
        let user_id = grantee.id;
        let granter = caller
            .user_id()
            .ok_or_else(|| DomainError::denied("only members grant admin levels"))?;
        // The organisation's row lock orders every level write of the
        // organisation, so the granter's levels read below are the ones
        // they hold at commit: two administrators acting at once cannot
        // each grant on a level the other just took away.
        lock_organisation(txn, grantee.organisation_id).await?;
        scope_unit_as_now(txn, grantee.organisation_id, unit_id).await?;
        let caller = &caller_as_now(self, txn, caller).await?;
        let grantee = &standing_user_as_now(txn, grantee.id).await?;
        let granter_levels = held_levels(self, txn, grantee.organisation_id, granter).await?;
        let change = LevelChange {
            grantee: user_id,
            level,
            unit_id,
            grantee_unit: grantee.unit_id,
        };
        authorize_level_grant(caller, &granter_levels, change, false)?;
        ensure_no_stand_in_of(
            txn,
            caller,
            grantee.organisation_id,
            sea_orm::Condition::all().add(user::Column::Id.eq(grantee.id)),
        )
        .await?;
        let starts = starts_to_delegate(self, txn, grantee).await?;
        let existing = admin_level::Entity::find()
            .filter(admin_level::Column::UserId.eq(user_id))
            .filter(admin_level::Column::ScopeKey.eq(scope_key(unit_id)))
            .one(txn)
            .await?;
        let now = now_millis();
        let (row, before) = match existing {
            Some(row) if u8::try_from(row.level) == Ok(level) => return Ok(grant_from_row(row)),
            Some(row) => {
                // Changing a level takes the old one away: the caller must
                // be able to grant that one too.
                let old = u8::try_from(row.level).unwrap_or(LEVEL_4);
                authorize_level_grant(caller, &granter_levels, LevelChange { level: old, ..change }, false)?;
                let mut active: admin_level::ActiveModel = row.into();
                active.level = Set(i16::from(level));
                active.granted_by = Set(caller.actor());
                active.granted_at = Set(now);
                (active.update(txn).await?, shown(old, unit_id))
            }
            None => {
                let row = admin_level::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    organisation_id: Set(grantee.organisation_id),
                    user_id: Set(user_id),
                    level: Set(i16::from(level)),
                    unit_id: Set(unit_id),
                    scope_key: Set(scope_key(unit_id)),
                    granted_by: Set(caller.actor()),
                    granted_at: Set(now),
                };
                (row.insert(txn).await?, String::new())
            }
        };
        history::record(
            txn,
            NewEvent {
                organisation_id: Some(grantee.organisation_id),
                subject: Subject::User(user_id),
                activity: Activity::AdminLevelGranted,
                caller,
                at: now,
                changes: vec![FieldChange {
                    field: "admin_level".into(),
                    before,
                    after: shown(level, unit_id),
                }],
            },
        )
        .await?;
        if starts {
            self.end_handover_in(txn, caller, user_id, now).await?;
        }
        Ok(grant_from_row(row))
    }

    /// Takes an admin level away. Whoever could grant it may; anyone may
    /// give up their own.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn revoke_admin_level(&self, caller: &Caller, id: Uuid) -> DomainResult<LevelGrant> {
        let row = admin_level::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| DomainError::not_found("admin level", id))?;
        let own = caller.user_id() == Some(row.user_id);
        let action = if own {
            Action::ReadAdminLevels
        } else {
            Action::GrantAdminLevels
        };
        // Checked on the cached caller first (nothing is locked for a
        // refusal), then again on the caller and holder as they are now.
        self.level_holder(caller, action, row.user_id)
            .await
            .map_err(|e| match e {
                DomainError::NotFound { .. } => DomainError::not_found("admin level", id),
                other => other,
            })?;
        let granter = caller
            .user_id()
            .ok_or_else(|| DomainError::denied("only members revoke admin levels"))?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        lock_organisation(&txn, row.organisation_id).await?;
        let caller = &caller_as_now(self, &txn, caller).await?;
        let row = admin_level::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("admin level", id))?;
        let grantee = user::Entity::find_by_id(row.user_id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("admin level", id))?;
        let granter_levels = held_levels(self, &txn, row.organisation_id, granter).await?;
        let level = u8::try_from(row.level).unwrap_or(LEVEL_4);
        let change = LevelChange {
            grantee: row.user_id,
            level,
            unit_id: row.unit_id,
            grantee_unit: grantee.unit_id,
        };
        authorize_level_grant(caller, &granter_levels, change, true)?;
        remove_level_in(&txn, caller, &row, now_millis()).await?;
        txn.commit().await?;
        self.auth_cache.clear();
        Ok(grant_from_row(row))
    }

    /// Who holds which level, by user or unit. Everyone sees their own; a
    /// level 1 or 2 held on a unit sees the levels of the people placed in its subtree.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_admin_levels(
        &self,
        caller: &Caller,
        organisation_id: Uuid,
        filter: LevelFilter,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<LevelGrant>> {
        let own_only = filter.user_id.is_some() && filter.user_id == caller.user_id();
        let mut query = admin_level::Entity::find().filter(admin_level::Column::OrganisationId.eq(organisation_id));
        if own_only {
            if caller.organisation_id() != Some(organisation_id) {
                return Err(DomainError::denied(
                    "the caller may not see the admin levels of this organisation",
                ));
            }
        } else {
            authorize(caller, Action::ReadAdminLevels, Target::organisation(organisation_id))?;
            // A scoped level 1 or 2 sees the levels of the people it sees:
            // those placed in its subtree, whatever their level's scope (as
            // GetUser shows them), and none of anyone placed elsewhere.
            if let ListingScope::Units(units) = user_listing_scope(caller, Action::ReadAdminLevels, organisation_id) {
                query = query.filter(
                    admin_level::Column::UserId.in_subquery(
                        sea_orm::sea_query::Query::select()
                            .column(user::Column::Id)
                            .from(user::Entity)
                            .and_where(user::Column::UnitId.is_in(units))
                            .to_owned(),
                    ),
                );
            }
        }
        let limit = paging::page_size(page_size, 50, 500)?;
        if let Some(user_id) = filter.user_id {
            query = query.filter(admin_level::Column::UserId.eq(user_id));
        }
        if let Some(unit_id) = filter.unit_id {
            query = query.filter(admin_level::Column::UnitId.eq(unit_id));
        }
        let (rows, next) = paging::keyset(
            &self.db,
            query,
            admin_level::Column::Id,
            paging::Order::Ascending,
            &format!("admin_levels:{organisation_id}"),
            page_token,
            limit,
            |r| r.id,
        )
        .await?;
        Ok(Page {
            items: rows.into_iter().map(grant_from_row).collect(),
            next_page_token: next,
        })
    }
}
