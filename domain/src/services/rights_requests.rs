//! Rights requests (R-ACC-9): a member asks for an admin level or a grant,
//! with a reason; the organisation's rights administrators are notified;
//! one of them (never the requester: two keys) approves, which applies the
//! level or grant in the same transaction through the same write as
//! GrantAdminLevel or CreateGrant, with the approver's rights, or rejects.
//! The requester is notified either way; both steps are in history.
//!
//! A member may ask for an administrative role too: organisation
//! administrators (who change roles) are told and decide it, and an
//! approval applies it through UpdateUser's own write, with its rules (the
//! organisation's maximum of administrators among them).

use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter};
use tracing::instrument;
use uuid::Uuid;

use super::access::{Grantee, GranteeRow, NewGrant};
use super::lock_organisation;
use super::notifications::NotificationKind;
use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason};
use crate::mail::MailKind;
use crate::model::*;
use crate::paging;
use crate::persistence::entities::{rights_request, user};
use crate::persistence::history::{self, NewEvent, Subject};
use crate::persistence::mapping::parse;
use crate::policy::{Action, Actions, Caller, Target, authorize};

crate::string_enum_pub!(
    RightsRequestState {
        Open => "OPEN",
        Approved => "APPROVED",
        Rejected => "REJECTED",
    }
);

/// What is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// An admin level (1-4) on the organisation or a unit.
    AdminLevel { level: i32, unit_id: Option<Uuid> },
    /// A right with its actions (no grant options: those are given, not
    /// asked for) on the organisation or a unit.
    Grant {
        right: String,
        actions: Actions,
        unit_id: Option<Uuid>,
    },
    /// An administrative role on the organisation.
    Role(Role),
}

impl Requested {
    /// Who decides: rights administrators levels and rights, those who
    /// change roles roles.
    fn decided_by(&self) -> Action {
        match self {
            Requested::Role(_) => Action::ChangeRoles,
            _ => Action::ManageGrants,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RightsRequest {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub requester_id: Uuid,
    pub requested: Requested,
    pub reason: String,
    pub state: RightsRequestState,
    pub created_at: Millis,
    pub decided_by: Option<String>,
    pub decided_at: Option<Millis>,
    pub decision_note: Option<String>,
}

const KIND_LEVEL: &str = "ADMIN_LEVEL";
const KIND_GRANT: &str = "GRANT";
const KIND_ROLE: &str = "ROLE";

fn from_row(row: rights_request::Model) -> DomainResult<RightsRequest> {
    let requested = match row.kind.as_str() {
        KIND_LEVEL => Requested::AdminLevel {
            level: row.level.map(i32::from).unwrap_or_default(),
            unit_id: row.unit_id,
        },
        KIND_ROLE => Requested::Role(parse(row.role.as_deref().unwrap_or_default())?),
        _ => Requested::Grant {
            right: row.right_name.unwrap_or_default(),
            actions: Actions {
                read: row.can_read,
                edit: row.can_edit,
            },
            unit_id: row.unit_id,
        },
    };
    Ok(RightsRequest {
        id: row.id,
        organisation_id: row.organisation_id,
        requester_id: row.requester_id,
        requested,
        reason: row.reason,
        state: parse(&row.state)?,
        created_at: row.created_at,
        decided_by: row.decided_by,
        decided_at: row.decided_at,
        decision_note: row.decision_note,
    })
}

/// What was asked for, in words (history and mails).
fn described(requested: &Requested) -> String {
    let scope = |unit: &Option<Uuid>| unit.map_or("the organisation".to_owned(), |u| format!("unit {u}"));
    match requested {
        Requested::AdminLevel { level, unit_id } => format!("admin level {level} on {}", scope(unit_id)),
        Requested::Grant {
            right,
            actions,
            unit_id,
        } => {
            let what = match (actions.read, actions.edit) {
                (true, true) => "read+edit",
                (false, true) => "edit",
                _ => "read",
            };
            format!("{right} {what} on {}", scope(unit_id))
        }
        Requested::Role(role) => format!("the role {role}"),
    }
}

/// "approved" or "rejected" in the recipient's language.
/// Ends the open rights requests of a person who is gone (deleted, or
/// closed for anonymity): refused with `note` by `caller`, each with its
/// RIGHTS_REQUEST_REJECTED event as a decision writes, and nothing sent to
/// them. In the transaction of their deletion.
pub(crate) async fn close_open_requests_of_in(
    txn: &sea_orm::DatabaseTransaction,
    caller: &Caller,
    requester_id: Uuid,
    now: Millis,
    note: &str,
) -> DomainResult<()> {
    let open = rights_request::Entity::find()
        .filter(rights_request::Column::RequesterId.eq(requester_id))
        .filter(rights_request::Column::State.eq(RightsRequestState::Open.as_str()))
        .all(txn)
        .await?;
    for request in open {
        let what = described(&from_row(request.clone())?.requested);
        let organisation_id = request.organisation_id;
        let mut row: rights_request::ActiveModel = request.into();
        row.state = Set(RightsRequestState::Rejected.as_str().into());
        row.decided_by = Set(Some(caller.actor()));
        row.decided_at = Set(Some(now));
        row.decision_note = Set(Some(note.to_owned()));
        row.update(txn).await?;
        history::record(
            txn,
            NewEvent {
                organisation_id: Some(organisation_id),
                subject: Subject::User(requester_id),
                activity: Activity::RightsRequestRejected,
                caller,
                at: now,
                changes: vec![FieldChange {
                    field: "requested".into(),
                    before: what,
                    after: RightsRequestState::Rejected.as_str().to_owned(),
                }],
            },
        )
        .await?;
    }
    Ok(())
}

pub(crate) fn decision_word(language: Language, approved: bool) -> &'static str {
    match (language, approved) {
        (Language::Da, true) => "godkendt",
        (Language::Da, false) => "afvist",
        (Language::Sv, true) => "godkänts",
        (Language::Sv, false) => "avslagits",
        (Language::En, true) => "approved",
        (Language::En, false) => "rejected",
    }
}

impl Domain {
    /// The caller asks for a level or a right for themselves.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn request_rights(
        &self,
        caller: &Caller,
        requested: Requested,
        reason: &str,
    ) -> DomainResult<RightsRequest> {
        let (Some(user_id), Some(org_id)) = (caller.user_id(), caller.organisation_id()) else {
            return Err(DomainError::denied("only a member of an organisation asks for rights"));
        };
        crate::validate::lines_of_text(reason, 10, 1000).map_err(|rule| DomainError::invalid("reason", rule))?;
        let reason = reason.trim();
        let requester = user::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| DomainError::not_found("user", user_id))?;
        // The same field rules as the write that would apply it, so an
        // approval does not fail on what could have been refused now.
        // Paths as in the request: `admin_level.unit_id`, `grant.right`.
        match &requested {
            Requested::AdminLevel { level, unit_id } => {
                self.check_new_level(&self.db, &requester, *level, *unit_id)
                    .await
                    .map_err(|e| e.within("admin_level"))?;
            }
            Requested::Grant {
                right,
                actions,
                unit_id,
            } => {
                let grantee = GranteeRow::User(Box::new(requester.clone()));
                self.check_new_grant(&self.db, &grantee, &grant_of(user_id, right, *actions, *unit_id))
                    .await
                    .map_err(|e| e.within("grant"))?;
            }
            Requested::Role(role) => {
                if !role.is_administrator() {
                    return Err(DomainError::invalid(
                        "role",
                        "must be ROLE_ORGANISATION_ADMIN, ROLE_USER_ADMIN or ROLE_RIGHTS_ADMIN (every member is a user)",
                    ));
                }
                if requester.service_account {
                    return Err(DomainError::precondition(
                        Reason::ServiceAccount,
                        "a service account holds no roles",
                    ));
                }
                let held = super::users::roles_of(&self.db, &[user_id]).await?;
                if held.get(&user_id).is_some_and(|roles| roles.contains(role)) {
                    return Err(DomainError::invalid("role", "is held by the requester already"));
                }
            }
        }
        let txn = crate::persistence::begin_write(&self.db).await?;
        let org = lock_organisation(&txn, org_id).await?;
        let open = rights_request::Entity::find()
            .filter(rights_request::Column::RequesterId.eq(user_id))
            .filter(rights_request::Column::State.eq(RightsRequestState::Open.as_str()))
            .all(&txn)
            .await?
            .into_iter()
            .map(from_row)
            .collect::<DomainResult<Vec<_>>>()?;
        if open.iter().any(|r| r.requested == requested) {
            return Err(DomainError::precondition(
                Reason::RightsRequestOpen,
                "the same request of this user is already waiting for a decision",
            ));
        }
        let (kind, level, right, actions, unit_id) = match &requested {
            Requested::AdminLevel { level, unit_id } => (
                KIND_LEVEL,
                i16::try_from(*level).ok(),
                None,
                Actions::default(),
                *unit_id,
            ),
            Requested::Grant {
                right,
                actions,
                unit_id,
            } => (KIND_GRANT, None, Some(right.clone()), *actions, *unit_id),
            Requested::Role(_) => (KIND_ROLE, None, None, Actions::default(), None),
        };
        let role = match &requested {
            Requested::Role(role) => Some(role.as_str().to_owned()),
            _ => None,
        };
        let now = now_millis();
        let row = rights_request::ActiveModel {
            id: Set(Uuid::now_v7()),
            organisation_id: Set(org_id),
            requester_id: Set(user_id),
            kind: Set(kind.into()),
            level: Set(level),
            right_name: Set(right),
            can_read: Set(actions.read),
            can_edit: Set(actions.edit),
            unit_id: Set(unit_id),
            reason: Set(reason.to_owned()),
            state: Set(RightsRequestState::Open.as_str().into()),
            created_at: Set(now),
            decided_by: Set(None),
            decided_at: Set(None),
            decision_note: Set(None),
            role: Set(role),
        }
        .insert(&txn)
        .await?;
        let what = described(&requested);
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(org_id),
                subject: Subject::User(user_id),
                activity: Activity::RightsRequested,
                caller,
                at: now,
                changes: vec![
                    FieldChange {
                        field: "requested".into(),
                        before: String::new(),
                        after: what.clone(),
                    },
                    FieldChange {
                        field: "reason".into(),
                        before: String::new(),
                        after: reason.to_owned(),
                    },
                ],
            },
        )
        .await?;
        // Every standing rights administrator of the organisation hears of
        // a level or right (organisation administrators decide too, but are
        // not mailed); organisation administrators of a role.
        let decider_role = match requested {
            Requested::Role(_) => Role::OrganisationAdmin,
            _ => Role::RightsAdmin,
        };
        let deciders = super::standing_role_holders_query(org_id, decider_role)
            .all(&txn)
            .await?;
        let requester_name = format!("{} {}", requester.first_name, requester.surname);
        for decider in deciders.iter().filter(|d| d.id != user_id) {
            self.notify(
                &txn,
                decider,
                NotificationKind::RightsRequest,
                MailKind::RightsRequest,
                &[
                    ("first_name", &decider.first_name),
                    ("requester_name", &requester_name),
                    ("organisation_name", &org.name),
                    ("requested", &what),
                    ("reason", reason),
                ],
                Some(row.id),
            )
            .await?;
        }
        txn.commit().await?;
        from_row(row)
    }

    /// Rights administrators (and organisation administrators) see the
    /// organisation's requests; everyone else their own.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_rights_requests(
        &self,
        caller: &Caller,
        organisation_id: Uuid,
        open_only: bool,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<RightsRequest>> {
        let mut query =
            rights_request::Entity::find().filter(rights_request::Column::OrganisationId.eq(organisation_id));
        if let super::Visible::Concerning(me) =
            super::visible_to(caller, Action::ManageGrants, organisation_id, "rights requests")?
        {
            query = query.filter(Condition::all().add(rights_request::Column::RequesterId.eq(me)));
        }
        if open_only {
            query = query.filter(rights_request::Column::State.eq(RightsRequestState::Open.as_str()));
        }
        let limit = paging::page_size(page_size, 50, 500)?;
        let (rows, next) = paging::keyset(
            &self.db,
            query,
            rights_request::Column::Id,
            paging::Order::Descending,
            &format!("rights_requests:{organisation_id}"),
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

    /// Approves (applies the level or grant with the decider's rights) or
    /// rejects an open request, and tells the requester.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn decide_rights_request(
        &self,
        caller: &Caller,
        id: Uuid,
        approve: bool,
        note: &str,
    ) -> DomainResult<RightsRequest> {
        let unknown = || DomainError::not_found("rights request", id);
        let request = rights_request::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(unknown)?;
        if caller.organisation_id() != Some(request.organisation_id) {
            return Err(unknown());
        }
        let action = from_row(request.clone())?.requested.decided_by();
        authorize(caller, action, Target::organisation(request.organisation_id))?;
        super::check_decision(caller, Some(request.requester_id), note)?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        let org = lock_organisation(&txn, request.organisation_id).await?;
        let request = rights_request::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(unknown)?;
        // Again on the decider's roles as they are now.
        authorize(
            &super::access::caller_as_now(self, &txn, caller).await?,
            action,
            Target::organisation(request.organisation_id),
        )?;
        if request.state != RightsRequestState::Open.as_str() {
            return Err(DomainError::precondition(
                Reason::RightsRequestDecided,
                format!("the request was already {}", request.state.to_lowercase()),
            ));
        }
        let requester = user::Entity::find_by_id(request.requester_id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", request.requester_id))?;
        let decided = from_row(request.clone())?;
        if approve {
            match &decided.requested {
                Requested::AdminLevel { level, unit_id } => {
                    let level = self.check_new_level(&txn, &requester, *level, *unit_id).await?;
                    self.grant_admin_level_in(&txn, caller, &requester, level, *unit_id)
                        .await?;
                }
                Requested::Grant {
                    right,
                    actions,
                    unit_id,
                } => {
                    let new = grant_of(requester.id, right, *actions, *unit_id);
                    let grantee = GranteeRow::User(Box::new(requester.clone()));
                    self.check_new_grant(&txn, &grantee, &new).await?;
                    self.create_grant_in(&txn, caller, &grantee, new).await?;
                }
                Requested::Role(role) => {
                    let mut roles = super::users::roles_of(&txn, &[requester.id])
                        .await?
                        .remove(&requester.id)
                        .unwrap_or_default();
                    if !roles.contains(role) {
                        roles.push(*role);
                    }
                    // As a level or a grant: only for someone active or
                    // pending (UpdateUser changes a deactivated person's
                    // roles, and a timed deactivation's end would bring
                    // them back with this one, unlooked at).
                    super::access::standing_user_as_now(&txn, requester.id).await?;
                    // UpdateUser's write: the maximum of administrators, the
                    // caller's right to change roles.
                    let patch = crate::services::users::UserPatch {
                        roles: Some(roles),
                        ..Default::default()
                    };
                    self.update_user_in(&txn, caller, requester.id, "", patch).await?;
                }
            }
        }
        let now = now_millis();
        let state = if approve {
            RightsRequestState::Approved
        } else {
            RightsRequestState::Rejected
        };
        let mut row: rights_request::ActiveModel = request.into();
        row.state = Set(state.as_str().into());
        row.decided_by = Set(Some(caller.actor()));
        row.decided_at = Set(Some(now));
        row.decision_note = Set((!note.is_empty()).then(|| note.to_owned()));
        let row = row.update(&txn).await?;
        let what = described(&decided.requested);
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(org.id),
                subject: Subject::User(requester.id),
                activity: if approve {
                    Activity::RightsRequestApproved
                } else {
                    Activity::RightsRequestRejected
                },
                caller,
                at: now,
                changes: vec![FieldChange {
                    field: "requested".into(),
                    before: what.clone(),
                    after: state.as_str().to_owned(),
                }],
            },
        )
        .await?;
        let language: Language = parse(&requester.language)?;
        let shown_note = if note.is_empty() { "-" } else { note };
        self.notify(
            &txn,
            &requester,
            NotificationKind::RightsRequest,
            MailKind::RightsRequestDecided,
            &[
                ("first_name", &requester.first_name),
                ("organisation_name", &org.name),
                ("requested", &what),
                ("decision", decision_word(language, approve)),
                ("note", shown_note),
            ],
            Some(id),
        )
        .await?;
        txn.commit().await?;
        if approve {
            self.auth_cache.clear();
        }
        from_row(row)
    }
}

fn grant_of(grantee_id: Uuid, right: &str, actions: Actions, unit_id: Option<Uuid>) -> NewGrant {
    NewGrant {
        request_id: None,
        grantee: Grantee::User(grantee_id),
        right: right.to_owned(),
        unit_id,
        resource: None,
        actions,
        grantable: Actions::default(),
        may_authorise: false,
    }
}
