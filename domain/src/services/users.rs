//! Users: creation, lifecycle, licences, administrators, history (R-USR,
//! R-ORG-2, R-ORG-4, R-ORG-5).

use std::collections::HashMap;

use sea_orm::ActiveValue::{self, Set};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, JoinType, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use tracing::instrument;
use uuid::Uuid;

use super::organisations::{check_etag, subtree};
use super::{
    active_role_holders, apply_licence_delta, ensure_licence_free, licence_delta, lock_organisation, read_organisation,
    seat_holders, take_licence,
};
use crate::Domain;
use crate::email::Email;
use crate::error::{DomainError, DomainResult, Reason};
use crate::model::*;
use crate::normalise::{self, nfc};
use crate::paging;
use crate::persistence::entities::{api_token, history_event, organisation, user, user_role};
use crate::persistence::history::{self, NewEvent, Subject, changes_from_json, diff};
use crate::persistence::mapping::{json_list, parse, user_from_row};
use crate::policy::{Action, Caller, Target, authorize};
use crate::validate::{self, Violations};

/// Shown in history instead of a CPR number, which never goes there.
const HIDDEN: &str = "<hidden>";

#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub organisation_id: Uuid,
    pub first_name: String,
    pub surname: String,
    pub email: String,
    pub username: Option<String>,
    pub cpr: Option<String>,
    pub birth_date: Option<String>,
    pub unit_id: Option<Uuid>,
    pub phone: Option<String>,
    pub language: Option<Language>,
    pub external_ids: Vec<String>,
    pub roles: Vec<Role>,
    pub identification_means: Vec<IdentificationMeans>,
    pub signing_right: bool,
    pub anonymous: bool,
    pub request_id: Option<String>,
    /// Imports create users without sending activation (R-BULK-4).
    pub suppress_activation: bool,
}

/// Fields named in an update mask. `Some(None)` clears an optional field.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub first_name: Option<String>,
    pub surname: Option<String>,
    pub email: Option<String>,
    pub username: Option<Option<String>>,
    pub cpr: Option<String>,
    pub birth_date: Option<String>,
    pub unit_id: Option<Option<Uuid>>,
    pub phone: Option<Option<String>>,
    pub language: Option<Language>,
    pub external_ids: Option<Vec<String>>,
    pub roles: Option<Vec<Role>>,
    pub identification_means: Option<Vec<IdentificationMeans>>,
    pub signing_right: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub state: Option<UserState>,
    pub role: Option<Role>,
    pub unit_id: Option<Uuid>,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub page_size: i32,
    pub page_token: String,
    pub start: Option<Millis>,
    pub end: Option<Millis>,
    pub activities: Vec<String>,
}

/// The outcome of a create: `created` is false when a retry found the user
/// its first attempt made.
#[derive(Debug, Clone)]
pub struct CreatedUser {
    pub user: User,
    pub created: bool,
    /// For a user without a CPR number: the activation code, shown this once.
    pub activation_code: Option<String>,
}

fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

/// First name, surname and e-mail address in their stored form (trimmed,
/// NFC; the address parsed by the one address rule), each checked under
/// `prefix` (the path of the message holding them: `user.` on UpdateUser).
fn check_identity_fields(
    v: &mut Violations,
    prefix: &str,
    first_name: Option<&str>,
    surname: Option<&str>,
    email: Option<&str>,
) -> (Option<String>, Option<String>, Option<Email>) {
    let mut name = |field: &str, value: Option<&str>| {
        let value = nfc(value?.trim());
        v.check(&format!("{prefix}{field}"), validate::text(&value, 100));
        Some(value)
    };
    let first_name = name("first_name", first_name);
    let surname = name("surname", surname);
    let email = email.and_then(|email| match Email::parse(email) {
        Ok(email) => Some(email),
        Err(e) => {
            v.add(&format!("{prefix}email"), e);
            None
        }
    });
    (first_name, surname, email)
}

/// A birth date checked and in its stored form (`YYYY-MM-DD`).
fn check_birth_date(v: &mut Violations, field: &str, date: &str) -> Option<String> {
    match validate::birth_date(date, today()) {
        Ok(date) => Some(validate::canonical_date(date)),
        Err(e) => {
            v.add(field, e);
            None
        }
    }
}

fn normalise_roles(mut roles: Vec<Role>) -> Vec<Role> {
    if roles.is_empty() {
        roles.push(Role::User);
    }
    roles.sort();
    roles.dedup();
    roles
}

impl Domain {
    #[instrument(skip_all, err(level = "debug"))]
    pub async fn create_user(&self, caller: &Caller, new: NewUser) -> DomainResult<CreatedUser> {
        let org_id = new.organisation_id;
        let requested_roles = normalise_roles(new.roles.clone());
        let wants_admin = requested_roles.iter().any(|r| r.is_administrator());
        // Operators may only create administrators; whether this one is the
        // organisation's first (and so becomes its administrator) is decided
        // below, under the organisation lock.
        authorize(caller, Action::CreateUser, Target::organisation(org_id))?;
        if !caller.is_operator() && requested_roles != [Role::User] {
            authorize(caller, Action::ChangeRoles, Target::organisation(org_id))?;
        }

        let mut v = Violations::default();
        let (first_name, surname, email) =
            check_identity_fields(&mut v, "", Some(&new.first_name), Some(&new.surname), Some(&new.email));
        let username = new.username.as_deref().map(nfc);
        if let Some(username) = &username {
            v.check("username", validate::username(username));
        }
        let mut birth_date = None;
        let cpr = match (&new.cpr, &new.birth_date) {
            (Some(_), Some(_)) => {
                v.add("cpr", "give either a CPR number or a birth date, not both");
                None
            }
            (None, None) => {
                v.add("cpr", "a CPR number or a birth date is required");
                None
            }
            (Some(cpr), None) => match validate::normalise_cpr(cpr) {
                Ok(cpr) => Some(cpr),
                Err(e) => {
                    v.add("cpr", e);
                    None
                }
            },
            (None, Some(date)) => {
                birth_date = check_birth_date(&mut v, "birth_date", date);
                None
            }
        };
        if let Some(phone) = &new.phone {
            v.check("phone", validate::phone(phone));
        }
        v.check("external_ids", validate::external_ids(&new.external_ids));
        if let Some(id) = &new.request_id
            && (id.is_empty() || id.len() > 100)
        {
            v.add("request_id", "must be 1 to 100 characters");
        }
        v.into_result()?;
        let (Some(first_name), Some(surname), Some(email)) = (first_name, surname, email) else {
            return Err(DomainError::Internal("a checked identity field is missing".into()));
        };

        let txn = crate::persistence::begin_write(&self.db).await?;
        // Rules that count administrators need the organisation locked for the
        // whole transaction; a plain user only needs a licence, which
        // `take_licence` takes as the last statement, so creates in one
        // organisation hold its row lock only while they commit.
        let counts_admins = caller.is_operator() || wants_admin;
        let org = if counts_admins {
            lock_organisation(&txn, org_id).await?
        } else {
            read_organisation(&txn, org_id).await?
        };
        if let Some(request_id) = &new.request_id
            && let Some(existing) = user::Entity::find()
                .filter(user::Column::OrganisationId.eq(org_id))
                .filter(user::Column::CreateRequestId.eq(request_id.as_str()))
                .one(&txn)
                .await?
        {
            txn.commit().await?;
            let user = self.user_from_model(existing).await?;
            authorize(
                caller,
                Action::ReadUser,
                Target::user(org_id, user.id, user.is_administrator()),
            )?;
            return Ok(CreatedUser {
                user,
                created: false,
                activation_code: None,
            });
        }

        let mut roles = requested_roles;
        if caller.is_operator() {
            // R-ORG-2: the first user an operator creates in an organisation
            // without an administrator becomes its administrator.
            if seat_holders(&txn, org_id, Role::OrganisationAdmin).await? == 0 {
                roles.extend([Role::OrganisationAdmin, Role::UserAdmin]);
                roles = normalise_roles(roles);
            } else if !wants_admin {
                return Err(DomainError::denied(
                    "operators create an organisation's administrators only; its user administrators create the other users",
                ));
            }
        }
        ensure_licence_free(&org)?;
        if roles.contains(&Role::OrganisationAdmin) {
            self.ensure_admin_seat_free(&txn, &org).await?;
        }
        if let Some(unit) = new.unit_id {
            self.unit_in_organisation_for_user(&txn, unit, org_id).await?;
        }
        // E-mail, username and CPR uniqueness: the partial unique indexes
        // refuse a duplicate at the INSERT, with the rule's own reason.
        let cpr_hash = cpr.as_ref().map(|c| self.vault.lookup_hash(c));

        let now = now_millis();
        let id = Uuid::now_v7();
        let language = new.language.unwrap_or(Language::Da);
        let row = user::ActiveModel {
            id: Set(id),
            organisation_id: Set(org_id),
            state: Set(UserState::PendingActivation.to_string()),
            search_text: Set(normalise::search_text(&first_name, &surname, email.as_str())),
            first_name: Set(first_name),
            surname: Set(surname),
            email: Set(email.as_str().to_owned()),
            email_key: Set(Some(email.key().to_owned())),
            username_key: Set(username.as_deref().map(normalise::key)),
            username: Set(username),
            cpr_hash: Set(cpr_hash),
            cpr_ciphertext: Set(cpr.as_ref().map(|c| self.vault.encrypt(c))),
            birth_date: Set(birth_date),
            unit_id: Set(new.unit_id),
            phone: Set(new.phone.clone()),
            language: Set(language.to_string()),
            external_ids: Set(json_list(&new.external_ids)),
            identification_means: Set(json_list(&new.identification_means)),
            signing_right: Set(new.signing_right),
            anonymous: Set(new.anonymous),
            email_verified: Set(false),
            pending_email: Set(None),
            legacy_id: Set(None),
            deactivated_until: Set(None),
            activated_at: Set(None),
            create_request_id: Set(new.request_id.clone()),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let (row, activation_code) = self
            .insert_user(&txn, row, &roles, &org, !new.suppress_activation)
            .await?;

        let mut changes = Vec::new();
        diff(&mut changes, "state", "", UserState::PendingActivation);
        diff(&mut changes, "first_name", "", &row.first_name);
        diff(&mut changes, "surname", "", &row.surname);
        diff(&mut changes, "email", "", &row.email);
        diff(&mut changes, "username", "", row.username.clone().unwrap_or_default());
        if cpr.is_some() {
            diff(&mut changes, "cpr", "", HIDDEN);
        }
        diff(
            &mut changes,
            "birth_date",
            "",
            row.birth_date.clone().unwrap_or_default(),
        );
        diff(&mut changes, "roles", "", json_list(&roles));
        diff(&mut changes, "anonymous", false, row.anonymous);
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(org_id),
                subject: Subject::User(id),
                activity: "USER_CREATED",
                caller,
                at: now,
                changes,
            },
        )
        .await?;
        take_licence(&txn, org_id).await?;
        txn.commit().await?;
        Ok(CreatedUser {
            user: user_from_row(row, roles, &self.vault)?,
            created: true,
            activation_code,
        })
    }

    /// The one way a user comes to exist (CreateUser, the anonymity
    /// re-creation, the import job): inserts the row and its roles and, when
    /// asked, starts its activation (a mailed link for a CPR user, else a
    /// code returned once), all in the caller's transaction. Licences are the
    /// caller's: a create takes one last, a re-creation frees the old one.
    pub(crate) async fn insert_user(
        &self,
        txn: &DatabaseTransaction,
        row: user::ActiveModel,
        roles: &[Role],
        org: &organisation::Model,
        start_activation: bool,
    ) -> DomainResult<(user::Model, Option<String>)> {
        let row = user::Entity::insert(row).exec_with_returning(txn).await?;
        write_roles(txn, row.id, org.id, roles).await?;
        let code = match (start_activation, row.cpr_hash.is_some()) {
            (false, _) => None,
            (true, true) => {
                self.issue_activation_link(txn, &row, &org.name).await?;
                None
            }
            (true, false) => Some(self.issue_activation_code(txn, &row).await?),
        };
        Ok((row, code))
    }

    async fn unit_in_organisation_for_user(
        &self,
        db: &impl ConnectionTrait,
        unit_id: Uuid,
        org_id: Uuid,
    ) -> DomainResult<()> {
        let found = crate::persistence::entities::unit::Entity::find_by_id(unit_id)
            .filter(crate::persistence::entities::unit::Column::OrganisationId.eq(org_id))
            .count(db)
            .await?;
        if found == 0 {
            return Err(DomainError::invalid("unit_id", "names no unit of this organisation"));
        }
        Ok(())
    }

    async fn ensure_admin_seat_free(&self, db: &impl ConnectionTrait, org: &organisation::Model) -> DomainResult<()> {
        if org.max_administrators == 0 {
            return Ok(());
        }
        let admins = seat_holders(db, org.id, Role::OrganisationAdmin).await?;
        if admins >= i64::from(org.max_administrators) {
            return Err(DomainError::FailedPrecondition {
                reason: Reason::MaxAdministratorsReached,
                message: format!(
                    "the organisation already has its maximum of {} administrators",
                    org.max_administrators
                ),
                metadata: vec![("max_administrators".into(), org.max_administrators.to_string())],
            });
        }
        Ok(())
    }

    /// A user who holds no seat is about to hold one again (reactivation, or an
    /// end time given to an open-ended deactivation): a licence and, for an
    /// administrator, an administrator seat must be free. The organisation is
    /// locked by the caller (`begin_user_write`).
    async fn ensure_seats_for_return(&self, txn: &DatabaseTransaction, user: &User) -> DomainResult<()> {
        let org = lock_organisation(txn, user.organisation_id).await?;
        ensure_licence_free(&org)?;
        if user.roles.contains(&Role::OrganisationAdmin) {
            self.ensure_admin_seat_free(txn, &org).await?;
        }
        Ok(())
    }

    /// R-ORG-5: the change would take `user` out of the active administrators;
    /// refuse if they are the last one. Only ACTIVE administrators count: one
    /// still pending activation cannot act, so leaving only them would leave
    /// the organisation without an administrator who can.
    async fn ensure_not_last_admin(&self, db: &impl ConnectionTrait, user: &User) -> DomainResult<()> {
        if !user.roles.contains(&Role::OrganisationAdmin) || user.state != UserState::Active {
            return Ok(());
        }
        if active_role_holders(db, user.organisation_id, Role::OrganisationAdmin).await? <= 1 {
            return Err(DomainError::precondition(
                Reason::LastOrganisationAdmin,
                "this is the organisation's last active administrator; appoint another administrator first",
            ));
        }
        Ok(())
    }

    pub(crate) async fn user_from_model(&self, row: user::Model) -> DomainResult<User> {
        let roles = roles_of(&self.db, &[row.id]).await?.remove(&row.id).unwrap_or_default();
        user_from_row(row, roles, &self.vault)
    }

    /// Reads a user without a policy check: for callers that proved their
    /// right another way (an activation secret).
    pub(crate) async fn get_user_unchecked(&self, id: Uuid) -> DomainResult<User> {
        self.load_user(&self.db, id).await
    }

    /// One round trip: the user row joined with its roles (a row per role).
    async fn load_user(&self, db: &impl ConnectionTrait, id: Uuid) -> DomainResult<User> {
        let rows = user::Entity::find_by_id(id)
            .join_rev(JoinType::LeftJoin, crate::persistence::roles_of_user())
            .select_also(user_role::Entity)
            .all(db)
            .await?;
        let Some((row, _)) = rows.first().cloned() else {
            return Err(DomainError::not_found("user", id));
        };
        let roles = rows
            .iter()
            .filter_map(|(_, role)| role.as_ref())
            .map(|role| parse(&role.role))
            .collect::<DomainResult<Vec<Role>>>()?;
        user_from_row(row, roles, &self.vault)
    }

    /// Loads a user and checks the caller may take `action` on them.
    async fn authorized_user(&self, caller: &Caller, action: Action, id: Uuid) -> DomainResult<User> {
        let user = self.load_user(&self.db, id).await?;
        crate::policy::authorize_on_user(
            caller,
            action,
            Target::user(user.organisation_id, id, user.is_administrator()),
        )?;
        Ok(user)
    }

    #[instrument(skip_all, err(level = "debug"))]
    pub async fn get_user(&self, caller: &Caller, id: Uuid) -> DomainResult<User> {
        self.authorized_user(caller, Action::ReadUser, id).await
    }

    #[instrument(skip_all, err(level = "debug"))]
    pub async fn list_users(
        &self,
        caller: &Caller,
        organisation_id: Uuid,
        filter: UserFilter,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<User>> {
        authorize(caller, Action::ListUsers, Target::organisation(organisation_id))?;
        let limit = paging::page_size(page_size, 50, 500)?;
        let after = paging::decode(&format!("users:{organisation_id}"), page_token)?;
        let mut query = user::Entity::find()
            .filter(user::Column::OrganisationId.eq(organisation_id))
            .order_by_asc(user::Column::Id);
        if let Some(after) = after {
            query = query.filter(user::Column::Id.gt(after));
        }
        if let Some(state) = filter.state {
            query = query.filter(user::Column::State.eq(state.as_str()));
        }
        let role_subquery = |roles: Vec<&'static str>| {
            Query::select()
                .column(user_role::Column::UserId)
                .from(user_role::Entity)
                .and_where(user_role::Column::OrganisationId.eq(organisation_id))
                .and_where(user_role::Column::Role.is_in(roles))
                .to_owned()
        };
        if let Some(role) = filter.role {
            query = query.filter(user::Column::Id.in_subquery(role_subquery(vec![role.as_str()])));
        }
        if crate::policy::operator_sees_administrators_only(caller) {
            let admin_roles = Role::ALL
                .iter()
                .filter(|r| r.is_administrator())
                .map(|r| r.as_str())
                .collect();
            query = query.filter(user::Column::Id.in_subquery(role_subquery(admin_roles)));
        }
        if let Some(unit) = filter.unit_id {
            let units = self.units_of(&self.db, organisation_id).await?;
            if !units.iter().any(|u| u.id == unit) {
                return Err(DomainError::invalid("unit_id", "names no unit of this organisation"));
            }
            query = query.filter(user::Column::UnitId.is_in(subtree(&units, unit)));
        }
        if let Some(text) = filter.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            if text.chars().count() > 100 {
                return Err(DomainError::invalid("text", "must be at most 100 characters"));
            }
            // Every word must appear in a name or the e-mail: in their keys
            // (NFC, Unicode lower case), stored in `search_text` on every
            // write, because SQLite's `lower()` folds ASCII only.
            for word in normalise::key(text).split_whitespace() {
                let pattern = format!("%{}%", escape_like(word));
                query = query.filter(
                    Expr::col(user::Column::SearchText).like(sea_orm::sea_query::LikeExpr::new(pattern).escape('\\')),
                );
            }
        }
        let mut rows = query.limit(limit + 1).all(&self.db).await?;
        let next = (rows.len() as u64 > limit).then(|| {
            rows.truncate(limit as usize);
            paging::encode(&format!("users:{organisation_id}"), rows[rows.len() - 1].id)
        });
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut roles = roles_of(&self.db, &ids).await?;
        let items = rows
            .into_iter()
            .map(|row| {
                let held = roles.remove(&row.id).unwrap_or_default();
                user_from_row(row, held, &self.vault)
            })
            .collect::<DomainResult<Vec<_>>>()?;
        Ok(Page {
            items,
            next_page_token: next,
        })
    }

    #[instrument(skip_all, err(level = "debug"))]
    pub async fn update_user(&self, caller: &Caller, id: Uuid, etag: &str, patch: UserPatch) -> DomainResult<User> {
        let current = self.load_user(&self.db, id).await?;
        let target = Target::user(current.organisation_id, id, current.is_administrator());
        let touches_fields = patch.first_name.is_some()
            || patch.surname.is_some()
            || patch.email.is_some()
            || patch.username.is_some()
            || patch.cpr.is_some()
            || patch.birth_date.is_some()
            || patch.unit_id.is_some()
            || patch.phone.is_some()
            || patch.language.is_some()
            || patch.external_ids.is_some()
            || patch.identification_means.is_some()
            || patch.signing_right.is_some();
        if touches_fields || patch.roles.is_none() {
            crate::policy::authorize_on_user(caller, Action::UpdateUser, target)?;
        }
        if patch.roles.is_some() {
            crate::policy::authorize_on_user(caller, Action::ChangeRoles, target)?;
        }

        let mut v = Violations::default();
        let (first_name, surname, email) = check_identity_fields(
            &mut v,
            "user.",
            patch.first_name.as_deref(),
            patch.surname.as_deref(),
            patch.email.as_deref(),
        );
        let username = patch.username.as_ref().map(|u| u.as_deref().map(nfc));
        if let Some(Some(username)) = &username {
            v.check("user.username", validate::username(username));
        }
        if patch.cpr.is_some() && patch.birth_date.is_some() {
            v.add("cpr", "give either a CPR number or a birth date, not both");
        }
        let new_cpr = match &patch.cpr {
            Some(cpr) => match validate::normalise_cpr(cpr) {
                Ok(c) => Some(c),
                Err(e) => {
                    v.add("cpr", e);
                    None
                }
            },
            None => None,
        };
        let birth_date = patch
            .birth_date
            .as_deref()
            .and_then(|date| check_birth_date(&mut v, "user.birth_date", date));
        if let Some(Some(phone)) = &patch.phone {
            v.check("user.phone", validate::phone(phone));
        }
        if let Some(ids) = &patch.external_ids {
            v.check("user.external_ids", validate::external_ids(ids));
        }
        v.into_result()?;
        if current.state == UserState::Deleted {
            return Err(DomainError::precondition(
                Reason::UserDeleted,
                "a deleted user cannot be changed",
            ));
        }

        let txn = crate::persistence::begin_write(&self.db).await?;
        let org = lock_organisation(&txn, current.organisation_id).await?;
        let current = self.load_user(&txn, id).await?;
        check_etag("user", etag, current.version)?;
        let row = user::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", id))?;
        let mut active: user::ActiveModel = row.clone().into();
        let mut changes = Vec::new();
        if let Some(name) = &first_name {
            diff(&mut changes, "first_name", &row.first_name, name);
            active.first_name = Set(name.clone());
        }
        if let Some(name) = &surname {
            diff(&mut changes, "surname", &row.surname, name);
            active.surname = Set(name.clone());
        }
        // R-USR-6: a new address waits for verification; the old one stays
        // in force. A user not yet activated has used no address: theirs
        // changes at once (and a CPR user's activation link follows it).
        // Giving the address in force again withdraws a waiting change.
        let changed_email = email.as_ref().filter(|e| e.as_str() != row.email).cloned();
        let withdraws_change = email.is_some() && changed_email.is_none() && row.pending_email.is_some();
        let (new_email, email_to_verify) = match changed_email {
            Some(email) if current.state == UserState::PendingActivation => (Some(email), None),
            Some(email) => (
                None,
                Some(email).filter(|e| row.pending_email.as_deref() != Some(e.as_str())),
            ),
            None => (None, None),
        };
        if let Some(email) = &new_email {
            diff(&mut changes, "email", &row.email, email.as_str());
            active.email = Set(email.as_str().to_owned());
            active.email_key = Set(Some(email.key().to_owned()));
            active.email_verified = Set(false);
            active.pending_email = Set(None);
        }
        if let Some(email) = &email_to_verify {
            diff(
                &mut changes,
                "pending_email",
                row.pending_email.clone().unwrap_or_default(),
                email.as_str(),
            );
            active.pending_email = Set(Some(email.as_str().to_owned()));
        }
        if withdraws_change {
            diff(
                &mut changes,
                "pending_email",
                row.pending_email.clone().unwrap_or_default(),
                "",
            );
            active.pending_email = Set(None);
        }
        if first_name.is_some() || surname.is_some() || new_email.is_some() {
            active.search_text = Set(normalise::search_text(
                first_name.as_deref().unwrap_or(&row.first_name),
                surname.as_deref().unwrap_or(&row.surname),
                new_email.as_ref().map_or(row.email.as_str(), Email::as_str),
            ));
        }
        let new_username = username.filter(|u| *u != row.username);
        if let Some(username) = &new_username {
            diff(
                &mut changes,
                "username",
                row.username.clone().unwrap_or_default(),
                username.clone().unwrap_or_default(),
            );
            active.username = Set(username.clone());
            active.username_key = Set(username.as_deref().map(normalise::key));
        }
        let new_cpr_hash = new_cpr
            .as_ref()
            .map(|c| self.vault.lookup_hash(c))
            .filter(|h| Some(h) != row.cpr_hash.as_ref());
        if let (Some(cpr), Some(hash)) = (&new_cpr, &new_cpr_hash) {
            diff(&mut changes, "cpr", "", HIDDEN);
            diff(
                &mut changes,
                "birth_date",
                row.birth_date.clone().unwrap_or_default(),
                "",
            );
            active.cpr_hash = Set(Some(hash.clone()));
            active.cpr_ciphertext = Set(Some(self.vault.encrypt(cpr)));
            active.birth_date = Set(None);
        }
        if let Some(date) = birth_date {
            if row.cpr_hash.is_some() {
                diff(&mut changes, "cpr", HIDDEN, "");
            }
            diff(
                &mut changes,
                "birth_date",
                row.birth_date.clone().unwrap_or_default(),
                &date,
            );
            active.birth_date = Set(Some(date));
            active.cpr_hash = Set(None);
            active.cpr_ciphertext = Set(None);
        }
        if let Some(unit) = patch.unit_id {
            if let Some(unit) = unit {
                self.unit_in_organisation_for_user(&txn, unit, org.id).await?;
            }
            diff(&mut changes, "unit_id", opt_id(row.unit_id), opt_id(unit));
            active.unit_id = Set(unit);
        }
        if let Some(phone) = patch.phone {
            diff(
                &mut changes,
                "phone",
                row.phone.clone().unwrap_or_default(),
                phone.clone().unwrap_or_default(),
            );
            active.phone = Set(phone);
        }
        if let Some(language) = patch.language {
            diff(&mut changes, "language", &row.language, language);
            active.language = Set(language.to_string());
        }
        if let Some(ids) = patch.external_ids {
            let value = json_list(&ids);
            diff(&mut changes, "external_ids", &row.external_ids, &value);
            active.external_ids = Set(value);
        }
        if let Some(means) = patch.identification_means {
            let value = json_list(&means);
            diff(&mut changes, "identification_means", &row.identification_means, &value);
            active.identification_means = Set(value);
        }
        if let Some(signing) = patch.signing_right {
            diff(&mut changes, "signing_right", row.signing_right, signing);
            active.signing_right = Set(signing);
        }
        let new_roles = patch.roles.map(normalise_roles).filter(|r| *r != current.roles);
        if let Some(roles) = &new_roles {
            let gains_admin =
                roles.contains(&Role::OrganisationAdmin) && !current.roles.contains(&Role::OrganisationAdmin);
            let loses_admin =
                !roles.contains(&Role::OrganisationAdmin) && current.roles.contains(&Role::OrganisationAdmin);
            if gains_admin && holds_seat(current.state, current.deactivated_until) {
                self.ensure_admin_seat_free(&txn, &org).await?;
            }
            if loses_admin {
                self.ensure_not_last_admin(&txn, &current).await?;
            }
            diff(&mut changes, "roles", json_list(&current.roles), json_list(roles));
        }
        if changes.is_empty() {
            txn.commit().await?;
            return Ok(current);
        }
        if let Some(roles) = &new_roles {
            user_role::Entity::delete_many()
                .filter(user_role::Column::UserId.eq(id))
                .exec(&txn)
                .await?;
            write_roles(&txn, id, org.id, roles).await?;
        }
        let now = now_millis();
        self.write_user_change(&txn, &row, active, now).await?;
        if email_to_verify.is_some() || withdraws_change || new_email.is_some() {
            let written = user::Entity::find_by_id(id)
                .one(&txn)
                .await?
                .ok_or_else(|| DomainError::not_found("user", id))?;
            self.withdraw_email_change(&txn, id, now).await?;
            if let Some(email) = &email_to_verify {
                self.request_email_change(&txn, &written, email, &org.name).await?;
            }
            if new_email.is_some() && written.cpr_hash.is_some() {
                self.issue_activation_link(&txn, &written, &org.name).await?;
            }
        }
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(org.id),
                subject: Subject::User(id),
                activity: "USER_UPDATED",
                caller,
                at: now,
                changes,
            },
        )
        .await?;
        let updated = self.load_user(&txn, id).await?;
        txn.commit().await?;
        if new_roles.is_some() {
            // Rights changed: cached callers must be looked up again.
            self.auth_cache.clear();
        }
        Ok(updated)
    }

    /// Writes the row if nobody changed it since `before` was read.
    async fn write_user_change(
        &self,
        txn: &DatabaseTransaction,
        before: &user::Model,
        mut active: user::ActiveModel,
        now: Millis,
    ) -> DomainResult<()> {
        active.version = Set(before.version + 1);
        active.updated_at = Set(now);
        let state_before = parse::<UserState>(&before.state)?;
        let state_after = match &active.state {
            ActiveValue::Set(state) | ActiveValue::Unchanged(state) => parse::<UserState>(state)?,
            ActiveValue::NotSet => state_before,
        };
        let until_after = match &active.deactivated_until {
            ActiveValue::Set(until) | ActiveValue::Unchanged(until) => *until,
            ActiveValue::NotSet => before.deactivated_until,
        };
        let seat_before = holds_seat(state_before, before.deactivated_until);
        let seat_after = holds_seat(state_after, until_after);
        let result = user::Entity::update_many()
            .set(active)
            .filter(user::Column::Id.eq(before.id))
            .filter(user::Column::Version.eq(before.version))
            .exec(txn)
            .await?;
        if result.rows_affected != 1 {
            return Err(DomainError::stale_etag("user"));
        }
        // A take is conditional: the limit holds whatever the caller checked.
        apply_licence_delta(txn, before.organisation_id, licence_delta(seat_before, seat_after)).await
    }

    /// R-USR-4: deactivates for good (`until` None) or for a period. Calling it
    /// on a deactivated user changes the period.
    #[instrument(skip_all, err(level = "debug"))]
    pub async fn deactivate_user(
        &self,
        caller: &Caller,
        id: Uuid,
        until: Option<Millis>,
        reason: &str,
    ) -> DomainResult<User> {
        self.authorized_user(caller, Action::DeactivateUser, id).await?;
        let now = now_millis();
        if let Some(until) = until
            && until <= now
        {
            return Err(DomainError::invalid("until", "must be in the future"));
        }
        if reason.chars().count() > 500 {
            return Err(DomainError::invalid("reason", "must be at most 500 characters"));
        }
        let (txn, current, row) = self.begin_user_write(id).await?;
        match current.state {
            UserState::Deleted => {
                return Err(DomainError::precondition(
                    Reason::UserDeleted,
                    "a deleted user cannot be deactivated",
                ));
            }
            UserState::Active | UserState::PendingActivation => self.ensure_not_last_admin(&txn, &current).await?,
            UserState::Deactivated => {}
        }
        // An open-ended deactivation that gets an end time reserves its seat
        // again: only if one is free (R-ORG-4).
        if !holds_seat(current.state, current.deactivated_until) && holds_seat(UserState::Deactivated, until) {
            self.ensure_seats_for_return(&txn, &current).await?;
        }
        let mut changes = Vec::new();
        diff(&mut changes, "state", current.state, UserState::Deactivated);
        diff(
            &mut changes,
            "deactivated_until",
            opt_time(current.deactivated_until),
            opt_time(until),
        );
        if !reason.is_empty() {
            diff(&mut changes, "reason", "", reason);
        }
        let mut active: user::ActiveModel = row.clone().into();
        active.state = Set(UserState::Deactivated.to_string());
        active.deactivated_until = Set(until);
        self.write_user_change(&txn, &row, active, now).await?;
        self.revoke_user_tokens(&txn, id, now, false).await?;
        self.record_user_event(&txn, &current, "USER_DEACTIVATED", caller, now, changes)
            .await?;
        let updated = self.load_user(&txn, id).await?;
        txn.commit().await?;
        self.auth_cache.clear();
        Ok(updated)
    }

    #[instrument(skip_all, err(level = "debug"))]
    pub async fn reactivate_user(&self, caller: &Caller, id: Uuid) -> DomainResult<User> {
        self.authorized_user(caller, Action::ReactivateUser, id).await?;
        let (txn, current, row) = self.begin_user_write(id).await?;
        if current.state != UserState::Deactivated {
            return Err(DomainError::precondition(
                Reason::UserNotDeactivated,
                format!(
                    "only a deactivated user can be reactivated; this one is {}",
                    current.state
                ),
            ));
        }
        // A timed deactivation kept its seats for this return (R-ORG-4); an
        // open-ended one needs free ones. The sweep follows the same rule:
        // it only ever returns timed deactivations.
        if !holds_seat(current.state, current.deactivated_until) {
            self.ensure_seats_for_return(&txn, &current).await?;
        }
        let now = now_millis();
        let state = reactivated_state(&row);
        let mut changes = Vec::new();
        diff(&mut changes, "state", current.state, state);
        diff(
            &mut changes,
            "deactivated_until",
            opt_time(current.deactivated_until),
            "",
        );
        let mut active: user::ActiveModel = row.clone().into();
        active.state = Set(state.to_string());
        active.deactivated_until = Set(None);
        self.write_user_change(&txn, &row, active, now).await?;
        self.record_user_event(&txn, &current, "USER_REACTIVATED", caller, now, changes)
            .await?;
        let updated = self.load_user(&txn, id).await?;
        txn.commit().await?;
        Ok(updated)
    }

    /// R-USR-5: final; refused under DEACTIVATE_ONLY.
    #[instrument(skip_all, err(level = "debug"))]
    pub async fn delete_user(&self, caller: &Caller, id: Uuid) -> DomainResult<User> {
        self.authorized_user(caller, Action::DeleteUser, id).await?;
        let (txn, current, row) = self.begin_user_write(id).await?;
        let org = lock_organisation(&txn, current.organisation_id).await?;
        if parse::<DeletionPolicy>(&org.deletion_policy)? == DeletionPolicy::DeactivateOnly {
            return Err(DomainError::precondition(
                Reason::DeletionNotAllowed,
                "the organisation's deletion policy is DEACTIVATE_ONLY: users are deactivated, never deleted",
            ));
        }
        if current.state == UserState::Deleted {
            return Err(DomainError::precondition(
                Reason::UserDeleted,
                "the user is already deleted",
            ));
        }
        self.ensure_not_last_admin(&txn, &current).await?;
        let now = now_millis();
        let mut changes = Vec::new();
        diff(&mut changes, "state", current.state, UserState::Deleted);
        let mut active: user::ActiveModel = row.clone().into();
        active.state = Set(UserState::Deleted.to_string());
        active.deactivated_until = Set(None);
        self.write_user_change(&txn, &row, active, now).await?;
        self.revoke_user_tokens(&txn, id, now, true).await?;
        self.record_user_event(&txn, &current, "USER_DELETED", caller, now, changes)
            .await?;
        let updated = self.load_user(&txn, id).await?;
        txn.commit().await?;
        self.auth_cache.clear();
        Ok(updated)
    }

    /// Opens the write transaction of a lifecycle change: the organisation is
    /// locked first (the same order everywhere), then the user is read again.
    async fn begin_user_write(&self, id: Uuid) -> DomainResult<(DatabaseTransaction, User, user::Model)> {
        let txn = crate::persistence::begin_write(&self.db).await?;
        let row = user::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", id))?;
        lock_organisation(&txn, row.organisation_id).await?;
        let row = user::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("user", id))?;
        let roles = roles_of(&txn, &[id]).await?.remove(&id).unwrap_or_default();
        let user = user_from_row(row.clone(), roles, &self.vault)?;
        Ok((txn, user, row))
    }

    async fn record_user_event(
        &self,
        txn: &DatabaseTransaction,
        user: &User,
        activity: &'static str,
        caller: &Caller,
        at: Millis,
        changes: Vec<FieldChange>,
    ) -> DomainResult<()> {
        history::record(
            txn,
            NewEvent {
                organisation_id: Some(user.organisation_id),
                subject: Subject::User(user.id),
                activity,
                caller,
                at,
                changes,
            },
        )
        .await
    }

    /// A deactivated user cannot act; a deleted one never again. Deactivation
    /// only blocks tokens at authentication (so reactivation restores them);
    /// deletion revokes them for good.
    async fn revoke_user_tokens(
        &self,
        txn: &DatabaseTransaction,
        user_id: Uuid,
        now: Millis,
        for_good: bool,
    ) -> DomainResult<()> {
        if for_good {
            api_token::Entity::update_many()
                .col_expr(api_token::Column::RevokedAt, Expr::value(now))
                .filter(api_token::Column::UserId.eq(user_id))
                .filter(api_token::Column::RevokedAt.is_null())
                .exec(txn)
                .await?;
        }
        Ok(())
    }

    /// R-USR-7: newest first, 200 by default.
    #[instrument(skip_all, err(level = "debug"))]
    pub async fn list_user_history(
        &self,
        caller: &Caller,
        user_id: Uuid,
        query: HistoryQuery,
    ) -> DomainResult<Page<HistoryEvent>> {
        self.authorized_user(caller, Action::ReadUserHistory, user_id).await?;
        let limit = paging::page_size(query.page_size, 200, 1000)?;
        let list = format!("history:{user_id}");
        let before = paging::decode(&list, &query.page_token)?;
        if let (Some(start), Some(end)) = (query.start, query.end)
            && start >= end
        {
            return Err(DomainError::invalid("end_time", "must be after start_time"));
        }
        let mut select = history_event::Entity::find()
            .filter(history_event::Column::SubjectKind.eq("USER"))
            .filter(history_event::Column::SubjectId.eq(user_id))
            .order_by_desc(history_event::Column::Id);
        if let Some(before) = before {
            select = select.filter(history_event::Column::Id.lt(before));
        }
        if let Some(start) = query.start {
            select = select.filter(history_event::Column::OccurredAt.gte(start));
        }
        if let Some(end) = query.end {
            select = select.filter(history_event::Column::OccurredAt.lt(end));
        }
        if !query.activities.is_empty() {
            select = select.filter(history_event::Column::Activity.is_in(query.activities.clone()));
        }
        let mut rows = select.limit(limit + 1).all(&self.db).await?;
        let next = (rows.len() as u64 > limit).then(|| {
            rows.truncate(limit as usize);
            paging::encode(&list, rows[rows.len() - 1].id)
        });
        Ok(Page {
            items: rows
                .into_iter()
                .map(|row| HistoryEvent {
                    id: row.id,
                    subject_id: row.subject_id,
                    activity: row.activity,
                    actor: row.actor,
                    actor_name: row.actor_name,
                    actor_email: row.actor_email,
                    on_behalf_of: row.on_behalf_of,
                    occurred_at: row.occurred_at,
                    changes: changes_from_json(&row.changes),
                })
                .collect(),
            next_page_token: next,
        })
    }
}

/// Where a reactivated user goes: back to ACTIVE, or to PENDING_ACTIVATION if
/// they never activated.
pub(crate) fn reactivated_state(row: &user::Model) -> UserState {
    if row.activated_at.is_some() {
        UserState::Active
    } else {
        UserState::PendingActivation
    }
}

async fn write_roles(db: &impl ConnectionTrait, user_id: Uuid, org_id: Uuid, roles: &[Role]) -> DomainResult<()> {
    let rows = roles.iter().map(|role| user_role::ActiveModel {
        user_id: Set(user_id),
        role: Set(role.to_string()),
        organisation_id: Set(org_id),
    });
    user_role::Entity::insert_many(rows).exec_without_returning(db).await?;
    Ok(())
}

pub(crate) async fn roles_of(db: &impl ConnectionTrait, user_ids: &[Uuid]) -> DomainResult<HashMap<Uuid, Vec<Role>>> {
    let mut map: HashMap<Uuid, Vec<Role>> = HashMap::new();
    if user_ids.is_empty() {
        return Ok(map);
    }
    let rows = user_role::Entity::find()
        .filter(user_role::Column::UserId.is_in(user_ids.to_vec()))
        .all(db)
        .await?;
    for row in rows {
        map.entry(row.user_id).or_default().push(parse(&row.role)?);
    }
    Ok(map)
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

fn opt_id(id: Option<Uuid>) -> String {
    id.map(|i| i.to_string()).unwrap_or_default()
}

pub(crate) fn opt_time(at: Option<Millis>) -> String {
    at.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
