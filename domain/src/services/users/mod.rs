//! Users: creation, lifecycle, licences, administrators, history (R-USR,
//! R-ORG-2, R-ORG-4, R-ORG-5), one file per concern; here the request types
//! and the rules they share.

mod create;
pub(crate) use create::OPERATOR_APPOINTS_ONLY_WITHOUT_ADMIN;
mod lifecycle;
pub(crate) use lifecycle::forget_deleted_person_in;
mod queries;
mod update;

use std::collections::HashMap;
use std::sync::OnceLock;

use sea_orm::ActiveValue::{self, Set};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, FromQueryResult, JoinType, QueryFilter,
    QuerySelect, QueryTrait, Statement,
};
use tracing::instrument;
use uuid::Uuid;

use super::organisations::{check_etag, subtree};
use super::{
    active_role_holders, apply_licence_delta, ensure_licence_free, licence_delta, lock_organisation, read_organisation,
    seat_holders,
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
use crate::services::certificates::HolderEnding;
use crate::validate::{self, Violations};

/// Shown in history instead of a CPR number, which never goes there.
pub(crate) const HIDDEN: &str = "<hidden>";

/// `Debug` shows whether a CPR number was given, never the number.
#[derive(Clone, Default)]
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
    /// R-ACC-5: a service account, active at once and never mailed.
    pub service_account: bool,
    /// Legacy import (R-BULK-5): the user's RID number in the old system,
    /// checked by the import where it reads the cell (`validate::legacy_id`).
    /// Such a user is created DEACTIVATED (for good, so holding no seat)
    /// with the roles given, and gets no activation.
    pub legacy_id: Option<String>,
}

/// A `NewUser` that passed CreateUser's field rules, in stored form. No
/// `Debug`: it holds a CPR number.
#[derive(Clone)]
pub(crate) struct CheckedNewUser {
    roles: Vec<Role>,
    wants_admin: bool,
    first_name: String,
    surname: String,
    email: Email,
    username: Option<String>,
    cpr: Option<String>,
    birth_date: Option<String>,
    new: NewUser,
}

/// Fields named in an update mask. `Some(None)` clears an optional field.
/// `Debug` shows whether a CPR number was given, never the number.
#[derive(Clone, Default)]
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

/// What `Debug` shows of a CPR number: that there is one.
pub(crate) fn cpr_shown(cpr: &Option<String>) -> Option<&'static str> {
    cpr.as_ref().map(|_| HIDDEN)
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("organisation_id", &self.organisation_id)
            .field("first_name", &self.first_name)
            .field("surname", &self.surname)
            .field("email", &self.email)
            .field("username", &self.username)
            .field("cpr", &cpr_shown(&self.cpr))
            .field("birth_date", &self.birth_date)
            .field("unit_id", &self.unit_id)
            .field("phone", &self.phone)
            .field("language", &self.language)
            .field("external_ids", &self.external_ids)
            .field("roles", &self.roles)
            .field("identification_means", &self.identification_means)
            .field("signing_right", &self.signing_right)
            .field("anonymous", &self.anonymous)
            .field("request_id", &self.request_id)
            .field("suppress_activation", &self.suppress_activation)
            .field("legacy_id", &self.legacy_id)
            .finish()
    }
}

impl std::fmt::Debug for UserPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserPatch")
            .field("first_name", &self.first_name)
            .field("surname", &self.surname)
            .field("email", &self.email)
            .field("username", &self.username)
            .field("cpr", &cpr_shown(&self.cpr))
            .field("birth_date", &self.birth_date)
            .field("unit_id", &self.unit_id)
            .field("phone", &self.phone)
            .field("language", &self.language)
            .field("external_ids", &self.external_ids)
            .field("roles", &self.roles)
            .field("identification_means", &self.identification_means)
            .field("signing_right", &self.signing_right)
            .finish()
    }
}

#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub state: Option<UserState>,
    pub role: Option<Role>,
    pub unit_id: Option<Uuid>,
    /// Members of this group (R-ACC-7): a custom group's, or those placed
    /// in a system group's unit.
    pub group_id: Option<Uuid>,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub page_size: i32,
    pub page_token: String,
    pub start: Option<Millis>,
    pub end: Option<Millis>,
    /// Only these; empty: all.
    pub activities: Vec<Activity>,
}

/// The outcome of a create: `created` is false when a retry found the user
/// its first attempt made. `Debug` hides the code.
#[derive(Clone)]
pub struct CreatedUser {
    pub user: User,
    pub created: bool,
    /// For a user without a CPR number: the activation code, shown this once.
    pub activation_code: Option<String>,
}

impl std::fmt::Debug for CreatedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedUser")
            .field("user", &self.user)
            .field("created", &self.created)
            .field("activation_code", &cpr_shown(&self.activation_code))
            .finish()
    }
}

fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

/// First name, surname and e-mail address in their stored form (trimmed,
/// NFC; the address parsed by the one address rule), each checked under
/// `prefix` (the path of the message holding them: `user.` on UpdateUser).
/// Each path is written as a `{prefix}` format string: the field-rule test
/// (tests/api/field_rules.rs) reads them so, with the prefixes callers pass.
pub(crate) fn check_identity_fields(
    v: &mut Violations,
    prefix: &str,
    first_name: Option<&str>,
    surname: Option<&str>,
    email: Option<&str>,
) -> (Option<String>, Option<String>, Option<Email>) {
    let mut name = |field: String, value: Option<&str>| {
        let value = nfc(value?.trim());
        v.check(&field, validate::person_name(&value, 100));
        Some(value)
    };
    let first_name = name(format!("{prefix}first_name"), first_name);
    let surname = name(format!("{prefix}surname"), surname);
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
pub(crate) fn check_birth_date(v: &mut Violations, field: &str, date: &str) -> Option<String> {
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

/// What a service account may not have, as a create or an update would
/// give it.
pub(crate) struct ServiceAccountFields {
    pub holds_roles: bool,
    pub has_cpr: bool,
    pub has_identification_means: bool,
    pub signing_right: bool,
}

/// R-ACC-5: a service account is no person. It holds no roles (people
/// administer, accounts are shared), has no CPR number or birth date, no
/// identification means and no signing right (nor is it anonymous, which
/// only CreateUser sets and checks). One
/// rule for CreateUser and UpdateUser; `prefix` is the request's path to
/// the user's fields ("" or "user."), `cpr_field` the request's CPR field
/// (a top-level field in both).
pub(crate) fn check_service_account(v: &mut Violations, prefix: &str, cpr_field: &str, fields: ServiceAccountFields) {
    if fields.holds_roles {
        v.add(
            &format!("{prefix}roles"),
            "a service account holds no roles: people administer, accounts are shared",
        );
    }
    if fields.has_cpr {
        v.add(cpr_field, "a service account has no CPR number or birth date");
    }
    if fields.has_identification_means {
        v.add(
            &format!("{prefix}identification_means"),
            "a service account has no identification means",
        );
    }
    if fields.signing_right {
        v.add(
            &format!("{prefix}signing_right"),
            "a service account has no signing right",
        );
    }
}

/// Locks the user's row for the rest of the transaction, after the
/// organisation's lock (PostgreSQL; SQLite has one writer at a time). The
/// reactivation sweep writes users without the organisation's lock: read
/// unlocked, a row it changed meanwhile made this write's versioned UPDATE
/// find another version (STALE_ETAG, even for a caller who gave no etag,
/// such as an import's edit row). Locked, a sweep in progress is waited
/// for and its result read; a sweep behind this write skips the row.
pub(crate) async fn lock_user_row(txn: &DatabaseTransaction, id: Uuid) -> DomainResult<()> {
    if crate::persistence::is_postgres(txn) {
        user::Entity::find_by_id(id)
            .select_only()
            .column(user::Column::Id)
            // As strong as the UPDATE that follows, no stronger: rows that
            // refer to the person (sessions, secrets) may still be added.
            .lock(sea_orm::sea_query::LockType::NoKeyUpdate)
            .into_tuple::<Uuid>()
            .one(txn)
            .await?;
    }
    Ok(())
}

/// R-ORG-3: the identification means an organisation administrator allows
/// bound the ones a user administrator gives a person. The refusal's text
/// when `means` go beyond `allowed` (the organisation's, parsed once by the
/// caller: a create of many checks every user against them), `None` when
/// they do not.
pub(crate) fn means_beyond_allowed(allowed: &[IdentificationMeans], means: &[IdentificationMeans]) -> Option<String> {
    let beyond: Vec<&str> = means
        .iter()
        .filter(|m| !allowed.contains(m))
        .map(|m| m.as_str())
        .collect();
    if beyond.is_empty() {
        return None;
    }
    let allowed: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
    Some(format!(
        "{} is not allowed by the organisation, which allows {}; an organisation administrator changes this in the settings",
        beyond.join(", "),
        allowed.join(", ")
    ))
}

/// The identification means `org` allows (R-ORG-3).
pub(crate) fn allowed_means(org: &organisation::Model) -> DomainResult<Vec<IdentificationMeans>> {
    crate::persistence::mapping::parse_list(&org.allowed_identification_means)
}

impl Domain {
    async fn ensure_admin_seat_free(&self, db: &impl ConnectionTrait, org: &organisation::Model) -> DomainResult<()> {
        if org.max_administrators == 0 {
            return Ok(());
        }
        let admins = seat_holders(db, org.id, Role::OrganisationAdmin).await?;
        if admins >= i64::from(org.max_administrators) {
            return Err(max_administrators_reached(org));
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
    pub(crate) async fn ensure_not_last_admin(&self, db: &impl ConnectionTrait, user: &User) -> DomainResult<()> {
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

    /// Reads a user without a policy check: for callers that proved their
    /// right another way (an activation secret).
    pub(crate) async fn get_user_unchecked(&self, id: Uuid) -> DomainResult<User> {
        self.load_user(&self.db, id).await
    }

    /// One round trip: the user row joined with its roles (a row per role).
    /// The statement's text is built once per backend (GetUser's hot path:
    /// sea-query built these 1.6 kB on every call), see [`user_with_roles`].
    async fn load_user(&self, db: &impl ConnectionTrait, id: Uuid) -> DomainResult<User> {
        let rows = db.query_all_raw(user_with_roles(db.get_database_backend(), id)).await?;
        let mut roles = Vec::with_capacity(rows.len());
        let mut found = None;
        for row in &rows {
            if found.is_none() {
                // Unprefixed columns: sea-orm looks each up by its own name,
                // with no `format!` per column as for a prefix.
                found = Some(<user::Model as FromQueryResult>::from_query_result(row, "")?);
            }
            if let Some(role) = row.try_get::<Option<String>>("", HELD_ROLE)? {
                roles.push(parse(&role)?);
            }
        }
        let Some(row) = found else {
            return Err(DomainError::not_found("user", id));
        };
        user_from_row(row, roles, &self.vault)
    }

    /// Loads a user and checks the caller may take `action` on them.
    async fn authorized_user(&self, caller: &Caller, action: Action, id: Uuid) -> DomainResult<User> {
        let user = self.load_user(&self.db, id).await?;
        let holds_level = crate::services::access::target_holds_level(&self.db, caller, id).await?;
        crate::policy::authorize_on_user(
            caller,
            action,
            Target::user(user.organisation_id, id, user.is_administrator(), user.unit_id).holding_level(holds_level),
        )?;
        Ok(user)
    }
}

/// The column of [`user_with_roles`] holding one role of the user.
const HELD_ROLE: &str = "held_role";

/// The user `id`'s columns with one role per row (none: one row with a
/// NULL role). The text is built once per backend, only the id per call.
fn user_with_roles(backend: DbBackend, id: Uuid) -> Statement {
    fn build(backend: DbBackend, id: Uuid) -> Statement {
        user::Entity::find_by_id(id)
            .join_rev(JoinType::LeftJoin, crate::persistence::roles_of_user())
            .column_as(user_role::Column::Role, HELD_ROLE)
            .build(backend)
    }
    static TEXT: [OnceLock<String>; 2] = [OnceLock::new(), OnceLock::new()];
    let slot = &TEXT[usize::from(backend == DbBackend::Postgres)];
    let sql = slot.get_or_init(|| build(backend, Uuid::nil()).sql);
    Statement::from_sql_and_values(backend, sql.clone(), [id.into()])
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

fn max_administrators_reached(org: &organisation::Model) -> DomainError {
    DomainError::FailedPrecondition {
        reason: Reason::MaxAdministratorsReached,
        message: format!(
            "the organisation already has its maximum of {} administrators",
            org.max_administrators
        ),
        metadata: vec![("max_administrators".into(), org.max_administrators.to_string())],
    }
}

async fn write_roles(db: &impl ConnectionTrait, user_id: Uuid, org_id: Uuid, roles: &[Role]) -> DomainResult<()> {
    user_role::Entity::insert_many(role_rows(user_id, org_id, roles))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

fn role_rows(user_id: Uuid, org_id: Uuid, roles: &[Role]) -> impl Iterator<Item = user_role::ActiveModel> + '_ {
    roles.iter().map(move |role| user_role::ActiveModel {
        user_id: Set(user_id),
        role: Set(role.to_string()),
        organisation_id: Set(org_id),
    })
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

fn opt_id(id: Option<Uuid>) -> String {
    id.map(|i| i.to_string()).unwrap_or_default()
}

pub(crate) fn opt_time(at: Option<Millis>) -> String {
    at.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statement kept per backend is the one sea-orm builds for the id.
    #[test]
    fn the_kept_user_statement_is_the_built_one() {
        for backend in [DbBackend::Postgres, DbBackend::Sqlite] {
            for id in [Uuid::now_v7(), Uuid::now_v7()] {
                let built = user::Entity::find_by_id(id)
                    .join_rev(JoinType::LeftJoin, crate::persistence::roles_of_user())
                    .column_as(user_role::Column::Role, HELD_ROLE)
                    .build(backend);
                let kept = user_with_roles(backend, id);
                assert_eq!(kept.sql, built.sql);
                assert_eq!(kept.values, built.values);
                assert!(kept.sql.contains(&format!("AS \"{HELD_ROLE}\"")), "{}", kept.sql);
            }
        }
    }

    #[test]
    fn debug_never_shows_a_cpr_number() {
        let cpr = "0101801234".to_string();
        let new = NewUser {
            cpr: Some(cpr.clone()),
            first_name: "Karen".into(),
            ..Default::default()
        };
        let patch = UserPatch {
            cpr: Some(cpr.clone()),
            ..Default::default()
        };
        for text in [format!("{new:?}"), format!("{patch:?}"), format!("{new:#?}")] {
            assert!(!text.contains(&cpr) && !text.contains("010180"), "{text}");
            assert!(text.contains(HIDDEN), "{text}");
        }
        assert!(format!("{new:?}").contains("Karen"));
        // The other types that carry a CPR number or a single-use secret.
        use crate::services::activation::{ActivationProof, ActivationSecret};
        for text in [
            format!("{:?}", ActivationProof::Cpr(cpr.clone())),
            format!("{:?}", ActivationSecret::Code("ABCDE-FGHJK".into())),
            format!("{:?}", ActivationSecret::LinkToken("ABCDE-FGHJK".into())),
        ] {
            assert!(!text.contains(&cpr) && !text.contains("ABCDE"), "{text}");
            assert!(text.contains(HIDDEN), "{text}");
        }
    }
}
