//! Anonymity requests (R-USR-10): a user asks; the organisation's user
//! administrators are notified; one approves (the user is re-created as a new
//! anonymous profile and the old one closed, in one transaction) or rejects.

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tracing::instrument;
use uuid::Uuid;

use super::lock_organisation;
use super::notifications::NotificationKind;
use super::users::roles_of;
use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason};
use crate::mail::MailKind;
use crate::model::*;
use crate::paging;
use crate::persistence::entities::{anonymity_request, api_token, user};
use crate::persistence::history::{self, NewEvent, Subject, diff};
use crate::persistence::mapping::parse;
use crate::policy::{Action, Caller, Target, authorize};
use crate::services::certificates::HolderEnding;

crate::string_enum_pub!(
    AnonymityRequestState {
        Pending => "PENDING",
        Approved => "APPROVED",
        Rejected => "REJECTED",
    }
);

#[derive(Debug, Clone)]
pub struct AnonymityRequest {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub user_id: Uuid,
    pub state: AnonymityRequestState,
    pub reason: String,
    pub created_at: Millis,
    pub decided_by: Option<String>,
    pub decided_at: Option<Millis>,
    pub decision_note: Option<String>,
    pub new_user_id: Option<Uuid>,
}

/// The outcome of a decision: with an approval, the new profile (which the
/// person activates by the link mailed to them).
#[derive(Debug, Clone)]
pub struct AnonymityDecision {
    pub request: AnonymityRequest,
    pub new_user: Option<User>,
}

/// Whether `user_id` is a profile an approved anonymity request made: the
/// new profile of someone who signed in before, pending until they activate
/// it by the link mailed to them. No administrator hands it a way in (an
/// activation code, an address of their choosing that the link follows):
/// they could activate the person's profile as the person (R-AUTH-1).
pub(crate) async fn recreated_for_anonymity(db: &impl sea_orm::ConnectionTrait, user_id: Uuid) -> DomainResult<bool> {
    Ok(recreated_for_anonymity_among(db, &[user_id]).await?.contains(&user_id))
}

/// Which of `user_ids` are profiles re-created for anonymity (see
/// [`recreated_for_anonymity`]), in one query.
pub(crate) async fn recreated_for_anonymity_among(
    db: &impl sea_orm::ConnectionTrait,
    user_ids: &[Uuid],
) -> DomainResult<std::collections::HashSet<Uuid>> {
    if user_ids.is_empty() {
        return Ok(Default::default());
    }
    use sea_orm::QuerySelect;
    let found: Vec<Option<Uuid>> = anonymity_request::Entity::find()
        .select_only()
        .column(anonymity_request::Column::NewUserId)
        .filter(anonymity_request::Column::NewUserId.is_in(user_ids.iter().copied()))
        .into_tuple()
        .all(db)
        .await?;
    Ok(found.into_iter().flatten().collect())
}

fn from_row(row: anonymity_request::Model) -> DomainResult<AnonymityRequest> {
    Ok(AnonymityRequest {
        id: row.id,
        organisation_id: row.organisation_id,
        user_id: row.user_id,
        state: parse(&row.state)?,
        reason: row.reason,
        created_at: row.created_at,
        decided_by: row.decided_by,
        decided_at: row.decided_at,
        decision_note: row.decision_note,
        new_user_id: row.new_user_id,
    })
}

impl Domain {
    /// The caller asks to become anonymous.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn request_anonymity(&self, caller: &Caller, reason: &str) -> DomainResult<AnonymityRequest> {
        let (Some(user_id), Some(org_id)) = (caller.user_id(), caller.organisation_id()) else {
            return Err(DomainError::denied("only a user can ask to become anonymous"));
        };
        crate::validate::lines_of_text(reason, 10, 1000).map_err(|rule| DomainError::invalid("reason", rule))?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        let org = lock_organisation(&txn, org_id).await?;
        // Approved, the request closes this profile for good (its e-mail and
        // CPR number move to the new one): asked where that cannot be, it
        // could only wait to be rejected.
        crate::services::ensure_deletes_profiles(
            &org,
            "a profile cannot be re-created as anonymous here (the old one would have to be deleted)",
        )?;
        let row = user::Entity::find_by_id(user_id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", user_id))?;
        if row.anonymous {
            return Err(DomainError::precondition(
                Reason::AlreadyAnonymous,
                "this user profile is already anonymous",
            ));
        }
        // Approved, the request would recreate the account as a pending
        // anonymous profile with an activation code: a person's way in to
        // something no person signs in to.
        if row.service_account {
            return Err(DomainError::precondition(
                Reason::ServiceAccount,
                "a service account is no person: it has no name to hide",
            ));
        }
        let open = anonymity_request::Entity::find()
            .filter(anonymity_request::Column::UserId.eq(user_id))
            .filter(anonymity_request::Column::State.eq(AnonymityRequestState::Pending.as_str()))
            .count(&txn)
            .await?;
        if open > 0 {
            return Err(DomainError::precondition(
                Reason::AnonymityRequestOpen,
                "a request of this user is already waiting for a decision",
            ));
        }
        let now = now_millis();
        let request = anonymity_request::Entity::insert(anonymity_request::ActiveModel {
            id: Set(Uuid::now_v7()),
            organisation_id: Set(org_id),
            user_id: Set(user_id),
            state: Set(AnonymityRequestState::Pending.as_str().into()),
            reason: Set(reason.trim().to_owned()),
            created_at: Set(now),
            decided_by: Set(None),
            decided_at: Set(None),
            decision_note: Set(None),
            new_user_id: Set(None),
        })
        .exec_with_returning(&txn)
        .await?;
        let mut changes = Vec::new();
        diff(&mut changes, "anonymity_request", "", request.id);
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(org_id),
                subject: Subject::User(user_id),
                activity: Activity::AnonymityRequested,
                caller,
                at: now,
                changes,
            },
        )
        .await?;
        // Every standing user administrator of the organisation hears of it.
        let admins = super::standing_role_holders_query(org_id, Role::UserAdmin)
            .all(&txn)
            .await?;
        let requester = format!("{} {}", row.first_name, row.surname);
        for admin in admins {
            self.notify(
                &txn,
                &admin,
                NotificationKind::AnonymityRequest,
                MailKind::AnonymityRequest,
                &[
                    ("first_name", &admin.first_name),
                    ("requester_name", &requester),
                    ("organisation_name", &org.name),
                    ("reason", &request.reason),
                ],
                Some(request.id),
            )
            .await?;
        }
        txn.commit().await?;
        from_row(request)
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_anonymity_requests(
        &self,
        caller: &Caller,
        organisation_id: Uuid,
        pending_only: bool,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<AnonymityRequest>> {
        authorize(
            caller,
            Action::DecideAnonymityRequests,
            Target::organisation(organisation_id),
        )?;
        let limit = paging::page_size(page_size, 50, 500)?;
        let list = format!("anonymity:{organisation_id}");
        let mut query =
            anonymity_request::Entity::find().filter(anonymity_request::Column::OrganisationId.eq(organisation_id));
        if pending_only {
            query = query.filter(anonymity_request::Column::State.eq(AnonymityRequestState::Pending.as_str()));
        }
        let (rows, next) = paging::keyset(
            &self.db,
            query,
            anonymity_request::Column::Id,
            paging::Order::Ascending,
            &list,
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

    /// Approves (re-create anonymous, close the old profile) or rejects.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn decide_anonymity_request(
        &self,
        caller: &Caller,
        id: Uuid,
        approve: bool,
        note: &str,
    ) -> DomainResult<AnonymityDecision> {
        // A request is about a person: outside the caller's view of people
        // (another organisation; for the operator, anyone) it reads as
        // missing, so ids cannot be probed.
        let request = anonymity_request::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .filter(|request| crate::policy::sees_user(caller, request.organisation_id, false))
            .ok_or_else(|| DomainError::not_found("anonymity request", id))?;
        authorize(
            caller,
            Action::DecideAnonymityRequests,
            Target::organisation(request.organisation_id),
        )?;
        super::check_decision(caller, Some(request.user_id), note)?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        let org = lock_organisation(&txn, request.organisation_id).await?;
        // The decider as they are under the lock (as for join and rights
        // requests): checked only as authenticated, a decision went through
        // after a demotion of the caller committed while it waited.
        let caller = &crate::services::access::caller_as_now(self, &txn, caller).await?;
        authorize(
            caller,
            Action::DecideAnonymityRequests,
            Target::organisation(request.organisation_id),
        )?;
        let request = anonymity_request::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("anonymity request", id))?;
        if request.state != AnonymityRequestState::Pending.as_str() {
            return Err(DomainError::precondition(
                Reason::AnonymityRequestDecided,
                format!("the request was already {}", request.state.to_lowercase()),
            ));
        }
        let now = now_millis();
        let old = user::Entity::find_by_id(request.user_id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", request.user_id))?;
        let mut decided: anonymity_request::ActiveModel = request.clone().into();
        decided.decided_by = Set(Some(caller.actor()));
        decided.decided_at = Set(Some(now));
        decided.decision_note = Set((!note.is_empty()).then(|| note.to_owned()));
        let (mut new_user, mut revoked) = (None, 0);
        if approve {
            // The policy may have changed since the request: approving closes
            // the old profile as DELETED, which DEACTIVATE_ONLY forbids
            // (rejecting still ends the request).
            crate::services::ensure_deletes_profiles(
                &org,
                "the old profile cannot be closed for an anonymous one; reject the request",
            )?;
            if !parse::<UserState>(&old.state)?.is_standing() {
                return Err(DomainError::precondition(
                    Reason::UserNotActive,
                    "only an active or pending user can be re-created as anonymous",
                ));
            }
            // R-ORG-5: the new profile is pending until the person activates
            // it, so closing the old one is removing an active administrator.
            let roles = roles_of(&txn, &[old.id]).await?.remove(&old.id).unwrap_or_default();
            let closing = crate::persistence::mapping::user_from_row(old.clone(), roles.clone(), &self.vault)?;
            self.ensure_not_last_admin(&txn, &closing).await?;
            // The new profile carries the roles, and its activation code
            // comes back to whoever approves: for an administrator, only
            // someone who may change roles approves (R-AUTH-1).
            let delegates =
                !closing.is_administrator() && crate::services::access::user_delegates(self, &txn, &old).await?;
            crate::policy::authorize_sign_in_change(
                caller,
                crate::policy::Target::user(org.id, old.id, closing.is_administrator(), old.unit_id)
                    .delegating(delegates),
            )?;
            // Close the old profile first: its e-mail and CPR number move on.
            let closed = user::Entity::update_many()
                .col_expr(user::Column::State, Expr::value(UserState::Deleted.as_str()))
                .col_expr(user::Column::Version, Expr::value(old.version + 1))
                .col_expr(user::Column::UpdatedAt, Expr::value(now))
                .filter(user::Column::Id.eq(old.id))
                .filter(user::Column::Version.eq(old.version))
                .exec(&txn)
                .await?;
            if closed.rows_affected != 1 {
                return Err(DomainError::stale_etag("user"));
            }
            api_token::Entity::update_many()
                .col_expr(api_token::Column::RevokedAt, Expr::value(now))
                .filter(api_token::Column::UserId.eq(old.id))
                .filter(api_token::Column::RevokedAt.is_null())
                .exec(&txn)
                .await?;
            // The closed profile is deleted: its delegation ends with it, as
            // any deleted user's (the new, anonymous one starts with none),
            // and so do its certificates, which name the person: left
            // ISSUED, they stayed valid for years in a name the person asked
            // to be rid of. The new profile orders its own, pseudonymous.
            super::access::end_delegation_of_in(&txn, caller, old.id, now).await?;
            // The person moves on with their CPR number and address; the
            // closed profile keeps neither the number nor a way to sign in.
            super::users::forget_deleted_person_in(&txn, caller, old.id, now).await?;
            revoked = self
                .end_holder_certificates_in(&txn, caller, old.id, HolderEnding::Left, now)
                .await?;
            self.hand_over_contact_in(&txn, caller, old.id, now).await?;
            let new_id = Uuid::now_v7();
            let mut fresh: user::ActiveModel = old.clone().into();
            fresh.id = Set(new_id);
            fresh.state = Set(UserState::PendingActivation.as_str().into());
            fresh.anonymous = Set(true);
            fresh.activated_at = Set(None);
            fresh.deactivated_until = Set(None);
            fresh.create_request_id = Set(None);
            fresh.version = Set(1);
            fresh.created_at = Set(now);
            fresh.updated_at = Set(now);
            // The same person and address: a waiting address change stays
            // with the closed profile.
            fresh.pending_email = Set(None);
            // The person activates the new profile by a link mailed to the
            // address they used, whether or not a CPR number is stored (a
            // birth date matches a link too): a code handed to whoever
            // approves, with the birth date they may read, would let them
            // activate a person's profile as that person (R-AUTH-1).
            let (fresh, _) = self.insert_user(&txn, fresh, &roles, &org, false).await?;
            self.issue_activation_link(&txn, &fresh, &org.name, crate::services::activation::Earlier::NoneYet)
                .await?;
            let mut changes = Vec::new();
            diff(&mut changes, "state", old.state.as_str(), UserState::Deleted);
            diff(&mut changes, "replaced_by", "", new_id);
            history::record(
                &txn,
                NewEvent {
                    organisation_id: Some(org.id),
                    subject: Subject::User(old.id),
                    activity: Activity::UserClosedForAnonymity,
                    caller,
                    at: now,
                    changes,
                },
            )
            .await?;
            let mut changes = Vec::new();
            diff(&mut changes, "state", "", UserState::PendingActivation);
            diff(&mut changes, "anonymous", false, true);
            diff(&mut changes, "replaces", "", old.id);
            history::record(
                &txn,
                NewEvent {
                    organisation_id: Some(org.id),
                    subject: Subject::User(new_id),
                    activity: Activity::UserCreated,
                    caller,
                    at: now,
                    changes,
                },
            )
            .await?;
            decided.state = Set(AnonymityRequestState::Approved.as_str().into());
            decided.new_user_id = Set(Some(new_id));
            new_user = Some(crate::persistence::mapping::user_from_row(fresh, roles, &self.vault)?);
        } else {
            decided.state = Set(AnonymityRequestState::Rejected.as_str().into());
            let mut changes = Vec::new();
            diff(&mut changes, "anonymity_request", request.id, "rejected");
            history::record(
                &txn,
                NewEvent {
                    organisation_id: Some(org.id),
                    subject: Subject::User(old.id),
                    activity: Activity::AnonymityRejected,
                    caller,
                    at: now,
                    changes,
                },
            )
            .await?;
        }
        let decided = anonymity_request::Entity::update(decided).exec(&txn).await?;
        txn.commit().await?;
        if approve {
            self.auth_cache.clear();
        }
        if revoked > 0 {
            self.publish_crl_after_commit().await;
        }
        Ok(AnonymityDecision {
            request: from_row(decided)?,
            new_user,
        })
    }
}
