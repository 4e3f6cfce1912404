//! Organisations, settings, licences and units (R-ORG).

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
use tracing::instrument;
use uuid::Uuid;

use super::{lock_organisation, read_organisation, seat_holders};
use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason, is_unique_violation};
use crate::model::*;
use crate::paging;
use crate::persistence::entities::{admin_level, grant, organisation, unit, user};
use crate::persistence::history::{self, NewEvent, Subject, diff};
use crate::persistence::mapping::{json_list, organisation_from_row, unit_from_row};
use crate::policy::{Action, Caller, Target, authorize};
use crate::validate::{self, Violations};

pub const DEFAULT_LICENCE_COUNT: i32 = 50;
const MAX_LICENCE_COUNT: i32 = 1_000_000;

#[derive(Debug, Clone, Default)]
pub struct NewOrganisation {
    pub name: String,
    pub cvr: String,
    pub ean_numbers: Vec<String>,
    pub licence_count: Option<i32>,
    pub max_administrators: Option<i32>,
    pub deletion_policy: Option<DeletionPolicy>,
    /// Client-chosen (AIP-155): a retry with the same id returns the
    /// organisation the first attempt made.
    pub request_id: Option<String>,
}

/// Fields named in an update mask; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct OrganisationPatch {
    pub name: Option<String>,
    pub ean_numbers: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct SettingsPatch {
    pub allowed_identification_means: Option<Vec<IdentificationMeans>>,
    pub join_requests_allowed: Option<bool>,
    pub certificate_kinds: Option<Vec<CertificateKind>>,
    pub deletion_policy: Option<DeletionPolicy>,
    pub max_administrators: Option<i32>,
    pub billing: Option<BillingDetails>,
    pub second_factor_required: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct NewUnit {
    pub organisation_id: Uuid,
    pub parent_id: Option<Uuid>,
    pub kind: UnitKind,
    pub name: String,
    pub number: Option<String>,
    /// Client-chosen, per organisation: a retry with the same id returns the
    /// unit the first attempt made.
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct UnitPatch {
    pub name: Option<String>,
    /// `Some(None)` moves the unit to the top level.
    pub parent_id: Option<Option<Uuid>>,
}

/// `prefix` is the path of the message holding the list in the request:
/// empty on CreateOrganisation, `organisation.` on UpdateOrganisation.
fn check_eans(violations: &mut Violations, prefix: &str, eans: &[String]) {
    if eans.len() > 20 {
        violations.add(&format!("{prefix}ean_numbers"), "at most 20 EAN numbers");
    }
    for (i, ean) in eans.iter().enumerate() {
        violations.check(&format!("{prefix}ean_numbers[{i}]"), validate::ean(ean));
    }
}

fn parse_etag(etag: &str) -> DomainResult<Option<i64>> {
    if etag.is_empty() {
        return Ok(None);
    }
    etag.parse::<i64>()
        .map(Some)
        .map_err(|_| DomainError::invalid("etag", "is not an etag this service returned"))
}

pub(crate) fn check_etag(resource: &'static str, etag: &str, current: i64) -> DomainResult<()> {
    match parse_etag(etag)? {
        Some(version) if version != current => Err(DomainError::stale_etag(resource)),
        _ => Ok(()),
    }
}

/// The unit `unit_id` if it belongs to `organisation_id`.
pub(crate) async fn find_unit_of(
    db: &impl sea_orm::ConnectionTrait,
    unit_id: Uuid,
    organisation_id: Uuid,
) -> DomainResult<Option<unit::Model>> {
    Ok(unit::Entity::find_by_id(unit_id)
        .filter(unit::Column::OrganisationId.eq(organisation_id))
        .one(db)
        .await?)
}

impl Domain {
    /// The people placed in `unit_id` or below with something a start of
    /// delegating ends (`end_handover_in`): a waiting address change, or
    /// not yet activated.
    async fn people_with_handovers_in(
        &self,
        txn: &DatabaseTransaction,
        organisation_id: Uuid,
        unit_id: Uuid,
    ) -> DomainResult<Vec<user::Model>> {
        let units = self.units_of(txn, organisation_id).await?;
        Ok(user::Entity::find()
            .filter(user::Column::OrganisationId.eq(organisation_id))
            .filter(user::Column::UnitId.is_in(subtree(&units, unit_id)))
            .filter(super::access::has_handover())
            .all(txn)
            .await?)
    }
}

impl Domain {
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn create_organisation(&self, caller: &Caller, new: NewOrganisation) -> DomainResult<Organisation> {
        authorize(caller, Action::CreateOrganisation, Target::platform())?;
        let mut violations = Violations::default();
        violations.check("name", validate::text(&new.name, 200));
        violations.check("cvr", validate::cvr(&new.cvr));
        check_eans(&mut violations, "", &new.ean_numbers);
        let licence_count = new.licence_count.unwrap_or(DEFAULT_LICENCE_COUNT);
        if !(1..=MAX_LICENCE_COUNT).contains(&licence_count) {
            violations.add("licence_count", format!("must be between 1 and {MAX_LICENCE_COUNT}"));
        }
        let max_administrators = new.max_administrators.unwrap_or(0);
        if !(0..=1000).contains(&max_administrators) {
            violations.add("max_administrators", "must be between 0 (no limit) and 1000");
        }
        if let Some(id) = &new.request_id {
            violations.check("request_id", validate::request_id(id));
        }
        violations.into_result()?;

        let txn = crate::persistence::begin_write(&self.db).await?;
        // A retry finds what its first attempt made (before the CVR rule,
        // which that organisation now breaks).
        if let Some(existing) = self
            .organisation_by_request(&txn, new.request_id.as_deref(), &new.cvr)
            .await?
        {
            txn.commit().await?;
            return organisation_from_row(existing);
        }
        if let Some(holder) = organisation::Entity::find()
            .filter(organisation::Column::Cvr.eq(&new.cvr))
            .one(&txn)
            .await?
        {
            // A parallel attempt of this very request may have committed
            // since the look-up above (PostgreSQL reads committed rows).
            if new.request_id.is_some() && holder.create_request_id == new.request_id {
                txn.commit().await?;
                return organisation_from_row(holder);
            }
            return Err(DomainError::AlreadyExists {
                reason: Reason::CvrTaken,
                message: format!("an organisation with CVR {} already exists", new.cvr),
            });
        }
        let now = now_millis();
        let row = organisation::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(new.name.trim().to_owned()),
            cvr: Set(new.cvr.clone()),
            ean_numbers: Set(json_list(&new.ean_numbers)),
            allowed_identification_means: Set(json_list(&[IdentificationMeans::MitId])),
            join_requests_allowed: Set(false),
            certificate_kinds: Set(json_list(&[CertificateKind::Employee])),
            deletion_policy: Set(new.deletion_policy.unwrap_or(DeletionPolicy::AllowDelete).to_string()),
            max_administrators: Set(max_administrators),
            licence_count: Set(licence_count),
            licences_used: Set(0),
            billing_name: Set(String::new()),
            billing_address: Set(String::new()),
            billing_email: Set(String::new()),
            billing_reference: Set(String::new()),
            second_factor_required: Set(false),
            create_request_id: Set(new.request_id.clone()),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let row = match organisation::Entity::insert(row).exec_with_returning(&txn).await {
            Ok(row) => row,
            Err(err) => {
                // On PostgreSQL a parallel attempt with the same request id
                // may have committed first: answer with its organisation.
                let _ = txn.rollback().await;
                if is_unique_violation(&err)
                    && let Some(existing) = self
                        .organisation_by_request(&self.db, new.request_id.as_deref(), &new.cvr)
                        .await?
                {
                    return organisation_from_row(existing);
                }
                return Err(err.into());
            }
        };
        let mut changes = Vec::new();
        diff(&mut changes, "name", "", &row.name);
        diff(&mut changes, "cvr", "", &row.cvr);
        diff(&mut changes, "licence_count", "", row.licence_count);
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(row.id),
                subject: Subject::Organisation(row.id),
                activity: Activity::OrganisationCreated,
                caller,
                at: now,
                changes,
            },
        )
        .await?;
        txn.commit().await?;
        organisation_from_row(row)
    }

    /// The organisation an earlier CreateOrganisation with this request
    /// id made, if it was made for the same CVR number (which never
    /// changes): the same id for another company is another request.
    async fn organisation_by_request(
        &self,
        db: &impl sea_orm::ConnectionTrait,
        request_id: Option<&str>,
        cvr: &str,
    ) -> DomainResult<Option<organisation::Model>> {
        let Some(request_id) = request_id else {
            return Ok(None);
        };
        let Some(earlier) = organisation::Entity::find()
            .filter(organisation::Column::CreateRequestId.eq(request_id))
            .one(db)
            .await?
        else {
            return Ok(None);
        };
        crate::services::ensure_same_request(Some(earlier.cvr.as_str()), cvr, "organisation")?;
        Ok(Some(earlier))
    }

    async fn load_organisation(&self, id: Uuid) -> DomainResult<Organisation> {
        organisation_from_row(read_organisation(&self.db, id).await?)
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn get_organisation(&self, caller: &Caller, id: Uuid) -> DomainResult<Organisation> {
        authorize(caller, Action::ReadOrganisation, Target::organisation(id))?;
        self.load_organisation(id).await
    }

    /// Operators see every organisation; members see their own.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_organisations(
        &self,
        caller: &Caller,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<Organisation>> {
        let limit = paging::page_size(page_size, 50, 500)?;
        let mut query = organisation::Entity::find();
        if let Some(own) = caller.organisation_id() {
            query = query.filter(organisation::Column::Id.eq(own));
        } else if !caller.is_operator() {
            return Err(DomainError::denied("the caller may not list organisations"));
        }
        let (rows, next) = paging::keyset(
            &self.db,
            query,
            organisation::Column::Id,
            paging::Order::Ascending,
            "organisations",
            page_token,
            limit,
            |r| r.id,
        )
        .await?;
        let items = rows
            .into_iter()
            .map(organisation_from_row)
            .collect::<DomainResult<Vec<_>>>()?;
        Ok(Page {
            items,
            next_page_token: next,
        })
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn update_organisation(
        &self,
        caller: &Caller,
        id: Uuid,
        etag: &str,
        patch: OrganisationPatch,
    ) -> DomainResult<Organisation> {
        authorize(caller, Action::UpdateOrganisation, Target::organisation(id))?;
        let mut violations = Violations::default();
        if let Some(name) = &patch.name {
            violations.check("organisation.name", validate::text(name, 200));
        }
        if let Some(eans) = &patch.ean_numbers {
            check_eans(&mut violations, "organisation.", eans);
        }
        violations.into_result()?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        let row = lock_organisation(&txn, id).await?;
        check_etag("organisation", etag, row.version).map_err(|e| e.within("organisation"))?;
        let now = now_millis();
        let mut changes = Vec::new();
        let mut active: organisation::ActiveModel = row.clone().into();
        if let Some(name) = patch.name {
            diff(&mut changes, "name", &row.name, name.trim());
            active.name = Set(name.trim().to_owned());
        }
        if let Some(eans) = patch.ean_numbers {
            let eans = json_list(&eans);
            diff(&mut changes, "ean_numbers", &row.ean_numbers, &eans);
            active.ean_numbers = Set(eans);
        }
        self.finish_organisation_write(txn, row, active, changes, Activity::OrganisationUpdated, caller, now)
            .await
    }

    /// Bumps the version (guarded by the one read), writes history, commits.
    #[allow(clippy::too_many_arguments)]
    async fn finish_organisation_write(
        &self,
        txn: sea_orm::DatabaseTransaction,
        before: organisation::Model,
        mut active: organisation::ActiveModel,
        changes: Vec<FieldChange>,
        activity: Activity,
        caller: &Caller,
        now: Millis,
    ) -> DomainResult<Organisation> {
        if changes.is_empty() {
            txn.commit().await?;
            return self.load_organisation(before.id).await;
        }
        active.version = Set(before.version + 1);
        active.updated_at = Set(now);
        let result = organisation::Entity::update_many()
            .set(active)
            .filter(organisation::Column::Id.eq(before.id))
            .filter(organisation::Column::Version.eq(before.version))
            .exec(&txn)
            .await?;
        if result.rows_affected != 1 {
            return Err(DomainError::stale_etag("organisation"));
        }
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(before.id),
                subject: Subject::Organisation(before.id),
                activity,
                caller,
                at: now,
                changes,
            },
        )
        .await?;
        txn.commit().await?;
        self.load_organisation(before.id).await
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn get_settings(&self, caller: &Caller, organisation_id: Uuid) -> DomainResult<Organisation> {
        authorize(caller, Action::ReadSettings, Target::organisation(organisation_id))?;
        self.load_organisation(organisation_id).await
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn update_settings(
        &self,
        caller: &Caller,
        organisation_id: Uuid,
        etag: &str,
        patch: SettingsPatch,
    ) -> DomainResult<Organisation> {
        authorize(caller, Action::UpdateSettings, Target::organisation(organisation_id))?;
        let mut violations = Violations::default();
        if let Some(max) = patch.max_administrators
            && !(0..=1000).contains(&max)
        {
            violations.add("settings.max_administrators", "must be between 0 (no limit) and 1000");
        }
        if let Some(billing) = &patch.billing {
            violations.check("settings.billing.name", validate::line_of_text(&billing.name, 200));
            violations.check(
                "settings.billing.address",
                validate::lines_of_text(&billing.address, 0, 500),
            );
            if !billing.email.is_empty() {
                violations.check("settings.billing.email", validate::email(&billing.email));
            }
            violations.check(
                "settings.billing.reference",
                validate::line_of_text(&billing.reference, 100),
            );
        }
        if let Some(means) = &patch.allowed_identification_means
            && means.is_empty()
        {
            violations.add("settings.allowed_identification_means", "must name at least one means");
        }
        violations.into_result()?;

        let txn = crate::persistence::begin_write(&self.db).await?;
        let row = lock_organisation(&txn, organisation_id).await?;
        check_etag("organisation settings", etag, row.version).map_err(|e| e.within("settings"))?;
        if let Some(max) = patch.max_administrators
            && max > 0
        {
            let admins = seat_holders(&txn, organisation_id, Role::OrganisationAdmin).await?;
            if admins > i64::from(max) {
                return Err(DomainError::precondition(
                    Reason::AdministratorsAboveLimit,
                    format!(
                        "the organisation has {admins} administrators, more than the new maximum of {max}; remove administrators first"
                    ),
                ));
            }
        }
        let now = now_millis();
        let mut changes = Vec::new();
        let mut active: organisation::ActiveModel = row.clone().into();
        if let Some(means) = patch.allowed_identification_means {
            let value = json_list(&means);
            diff(
                &mut changes,
                "allowed_identification_means",
                &row.allowed_identification_means,
                &value,
            );
            active.allowed_identification_means = Set(value);
            // Under the organisation's lock, which every write of a
            // person's means takes too; only when a means was withdrawn (a
            // settings form saved again changes nobody).
            let allowed_before = super::users::allowed_means(&row)?;
            let people = if allowed_before.iter().any(|m| !means.contains(m)) {
                self.withdraw_means_beyond_in(&txn, caller, organisation_id, &means, now)
                    .await?
            } else {
                0
            };
            if people > 0 {
                diff(
                    &mut changes,
                    "people_losing_identification_means",
                    "",
                    people.to_string(),
                );
            }
        }
        if let Some(value) = patch.join_requests_allowed {
            diff(&mut changes, "join_requests_allowed", row.join_requests_allowed, value);
            active.join_requests_allowed = Set(value);
        }
        if let Some(kinds) = patch.certificate_kinds {
            let value = json_list(&kinds);
            diff(&mut changes, "certificate_kinds", &row.certificate_kinds, &value);
            active.certificate_kinds = Set(value);
        }
        if let Some(policy) = patch.deletion_policy {
            diff(&mut changes, "deletion_policy", &row.deletion_policy, policy);
            active.deletion_policy = Set(policy.to_string());
        }
        if let Some(max) = patch.max_administrators {
            diff(&mut changes, "max_administrators", row.max_administrators, max);
            active.max_administrators = Set(max);
        }
        if let Some(mut billing) = patch.billing {
            // Stored as the address was checked (trimmed, NFC), not as sent.
            if let Ok(email) = crate::email::Email::parse(&billing.email) {
                billing.email = email.as_str().to_owned();
            }
            diff(&mut changes, "billing.name", &row.billing_name, &billing.name);
            diff(&mut changes, "billing.address", &row.billing_address, &billing.address);
            diff(&mut changes, "billing.email", &row.billing_email, &billing.email);
            diff(
                &mut changes,
                "billing.reference",
                &row.billing_reference,
                &billing.reference,
            );
            active.billing_name = Set(billing.name);
            active.billing_address = Set(billing.address);
            active.billing_email = Set(billing.email);
            active.billing_reference = Set(billing.reference);
        }
        if let Some(value) = patch.second_factor_required {
            diff(
                &mut changes,
                "second_factor_required",
                row.second_factor_required,
                value,
            );
            active.second_factor_required = Set(value);
        }
        self.finish_organisation_write(txn, row, active, changes, Activity::SettingsUpdated, caller, now)
            .await
    }

    /// Operators change the licence count (R-ORG-4). It cannot drop below the
    /// licences in use: those users would otherwise hold licences that do not exist.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn set_licence_count(
        &self,
        caller: &Caller,
        organisation_id: Uuid,
        licence_count: i32,
    ) -> DomainResult<Organisation> {
        authorize(caller, Action::SetLicenceCount, Target::organisation(organisation_id))?;
        if !(1..=MAX_LICENCE_COUNT).contains(&licence_count) {
            return Err(DomainError::invalid(
                "licence_count",
                format!("must be between 1 and {MAX_LICENCE_COUNT}"),
            ));
        }
        let txn = crate::persistence::begin_write(&self.db).await?;
        let row = lock_organisation(&txn, organisation_id).await?;
        let used = row.licences_used;
        if used > i64::from(licence_count) {
            return Err(DomainError::FailedPrecondition {
                reason: Reason::LicencesInUse,
                message: format!(
                    "{used} licences are in use, more than the new licence count of {licence_count}; deactivate or delete users first"
                ),
                metadata: vec![("licences_used".into(), used.to_string())],
            });
        }
        let mut changes = Vec::new();
        diff(&mut changes, "licence_count", row.licence_count, licence_count);
        let mut active: organisation::ActiveModel = row.clone().into();
        active.licence_count = Set(licence_count);
        self.finish_organisation_write(
            txn,
            row,
            active,
            changes,
            Activity::LicenceCountChanged,
            caller,
            now_millis(),
        )
        .await
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn create_unit(&self, caller: &Caller, new: NewUnit) -> DomainResult<Unit> {
        authorize(caller, Action::ManageUnits, Target::organisation(new.organisation_id))?;
        let mut violations = Violations::default();
        violations.check("name", validate::text(&new.name, 200));
        let number = new.number.clone().filter(|n| !n.is_empty());
        match (new.kind, &number) {
            (UnitKind::ProductionUnit, Some(n)) => violations.check("number", validate::p_number(n)),
            (UnitKind::TaxUnit, Some(n)) => violations.check("number", validate::se_number(n)),
            (UnitKind::ProductionUnit | UnitKind::TaxUnit, None) => violations.add(
                "number",
                "a production unit needs its P-number, a tax unit its SE-number",
            ),
            (UnitKind::Department, Some(_)) => violations.add("number", "a department has no number"),
            (UnitKind::Department, None) => {}
        }
        if let Some(id) = &new.request_id {
            violations.check("request_id", validate::request_id(id));
        }
        violations.into_result()?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        lock_organisation(&txn, new.organisation_id).await?;
        // Under the organisation lock: a parallel retry waits for the first
        // attempt and then finds its unit.
        if let Some(request_id) = &new.request_id
            && let Some(existing) = unit::Entity::find()
                .filter(unit::Column::OrganisationId.eq(new.organisation_id))
                .filter(unit::Column::CreateRequestId.eq(request_id.as_str()))
                .one(&txn)
                .await?
        {
            // Kind and number never change: the same id for another unit
            // is another request.
            crate::services::ensure_same_request(
                Some(&format!("{}|{:?}", existing.kind, existing.number)),
                &format!("{}|{:?}", new.kind.as_str(), number),
                "unit",
            )?;
            txn.commit().await?;
            return unit_from_row(existing);
        }
        if let Some(parent) = new.parent_id {
            self.unit_in_organisation(&txn, parent, new.organisation_id, "parent_id")
                .await?;
        }
        if let Some(n) = &number {
            let taken = unit::Entity::find()
                .filter(unit::Column::OrganisationId.eq(new.organisation_id))
                .filter(unit::Column::Kind.eq(new.kind.as_str()))
                .filter(unit::Column::Number.eq(n.as_str()))
                .count(&txn)
                .await?;
            if taken > 0 {
                return Err(DomainError::AlreadyExists {
                    reason: Reason::UnitNumberTaken,
                    message: format!("the organisation already has a unit with number {n}"),
                });
            }
        }
        let now = now_millis();
        let row = unit::Entity::insert(unit::ActiveModel {
            id: Set(Uuid::now_v7()),
            organisation_id: Set(new.organisation_id),
            parent_id: Set(new.parent_id),
            kind: Set(new.kind.to_string()),
            name: Set(new.name.trim().to_owned()),
            number: Set(number.clone()),
            created_at: Set(now),
            create_request_id: Set(new.request_id.clone()),
        })
        .exec_with_returning(&txn)
        .await?;
        // R-ACC-7: a production unit comes with its system group.
        if new.kind == UnitKind::ProductionUnit {
            super::access::groups::create_system_group_in(&txn, caller, &row).await?;
        }
        let mut changes = Vec::new();
        diff(&mut changes, "name", "", &row.name);
        diff(&mut changes, "kind", "", &row.kind);
        diff(&mut changes, "number", "", number.unwrap_or_default());
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(row.organisation_id),
                subject: Subject::Unit(row.id),
                activity: Activity::UnitCreated,
                caller,
                at: now,
                changes,
            },
        )
        .await?;
        txn.commit().await?;
        // Admin levels held on units were resolved to subtrees when their
        // holders authenticated: a changed tree must be resolved again.
        self.auth_cache.clear();
        unit_from_row(row)
    }

    /// The one check that a unit named in a request (by the field given)
    /// belongs to the organisation: units' parents, users' units.
    pub(crate) async fn unit_in_organisation(
        &self,
        db: &impl sea_orm::ConnectionTrait,
        unit_id: Uuid,
        organisation_id: Uuid,
        field: &str,
    ) -> DomainResult<unit::Model> {
        find_unit_of(db, unit_id, organisation_id)
            .await?
            .ok_or_else(|| no_such_unit(field))
    }

    /// Which of these units belong to the organisation: one look-up.
    pub(crate) async fn units_in_organisation(
        &self,
        db: &impl sea_orm::ConnectionTrait,
        mut unit_ids: Vec<Uuid>,
        organisation_id: Uuid,
    ) -> DomainResult<std::collections::HashSet<Uuid>> {
        unit_ids.sort_unstable();
        unit_ids.dedup();
        if unit_ids.is_empty() {
            return Ok(Default::default());
        }
        Ok(unit::Entity::find()
            .select_only()
            .column(unit::Column::Id)
            .filter(unit::Column::OrganisationId.eq(organisation_id))
            .filter(unit::Column::Id.is_in(unit_ids))
            .into_tuple::<Uuid>()
            .all(db)
            .await?
            .into_iter()
            .collect())
    }

    /// All units, parents before children.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_units(&self, caller: &Caller, organisation_id: Uuid) -> DomainResult<Vec<Unit>> {
        authorize(caller, Action::ReadUnits, Target::organisation(organisation_id))?;
        read_organisation(&self.db, organisation_id).await?;
        let units = self.units_of(&self.db, organisation_id).await?;
        Ok(tree_order(units))
    }

    /// Two keys (R-ACC-4, R-ACC-7), as for placing oneself (UpdateUser):
    /// whoever is placed in the moved unit or below joins the system groups
    /// over its new place, so moving the unit one works in under a
    /// production unit whose group holds rights would be giving oneself
    /// those rights.
    async fn ensure_not_moving_oneself_into_rights(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        moved: &unit::Model,
        units: &[Unit],
        new_parent: Option<Uuid>,
    ) -> DomainResult<()> {
        let Some(me) = caller.acting_user_id() else {
            return Ok(());
        };
        let my_unit = user::Entity::find_by_id(me).one(txn).await?.and_then(|u| u.unit_id);
        if !my_unit.is_some_and(|mine| subtree(units, moved.id).contains(&mine)) {
            return Ok(());
        }
        crate::services::access::groups::ensure_joining_gives_no_rights(
            self,
            txn,
            moved.organisation_id,
            new_parent,
            moved.parent_id,
            "nobody moves the unit they are placed in",
        )
        .await
    }

    pub(crate) async fn units_of(
        &self,
        db: &impl sea_orm::ConnectionTrait,
        organisation_id: Uuid,
    ) -> DomainResult<Vec<Unit>> {
        unit::Entity::find()
            .filter(unit::Column::OrganisationId.eq(organisation_id))
            .order_by_asc(unit::Column::Id)
            .all(db)
            .await?
            .into_iter()
            .map(unit_from_row)
            .collect()
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn update_unit(&self, caller: &Caller, unit_id: Uuid, patch: UnitPatch) -> DomainResult<Unit> {
        let row = unit::Entity::find_by_id(unit_id)
            .one(&self.db)
            .await?
            .filter(|row| crate::policy::sees_organisation(caller, row.organisation_id))
            .ok_or_else(|| DomainError::not_found("unit", unit_id))?;
        authorize(caller, Action::ManageUnits, Target::organisation(row.organisation_id))?;
        if let Some(name) = &patch.name {
            validate::text(name, 200).map_err(|e| DomainError::invalid("unit.name", e))?;
        }
        let txn = crate::persistence::begin_write(&self.db).await?;
        lock_organisation(&txn, row.organisation_id).await?;
        // Read again under the lock: a parallel change to the other field
        // must not be written back over.
        let row = unit::Entity::find_by_id(unit_id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("unit", unit_id))?;
        let mut changes = Vec::new();
        let mut active: unit::ActiveModel = row.clone().into();
        if let Some(name) = patch.name {
            diff(&mut changes, "name", &row.name, name.trim());
            active.name = Set(name.trim().to_owned());
        }
        if let Some(parent) = patch.parent_id {
            let units = self.units_of(&txn, row.organisation_id).await?;
            if let Some(parent) = parent {
                self.unit_in_organisation(&txn, parent, row.organisation_id, "unit.parent_id")
                    .await?;
                // Moving a unit under itself or its own subtree would cut it off the tree.
                if subtree(&units, unit_id).contains(&parent) {
                    return Err(DomainError::invalid(
                        "unit.parent_id",
                        "a unit cannot move under itself or its own sub-units",
                    ));
                }
            }
            if parent != row.parent_id {
                self.ensure_not_moving_oneself_into_rights(&txn, caller, &row, &units, parent)
                    .await?;
            }
            diff(
                &mut changes,
                "parent_id",
                row.parent_id.map(|p| p.to_string()).unwrap_or_default(),
                parent.map(|p| p.to_string()).unwrap_or_default(),
            );
            active.parent_id = Set(parent);
        }
        // R-AUTH-1: the people of a subtree moved under a unit whose system
        // group may pass a right on start to delegate; read who among them
        // has something waiting before the move, and end it after.
        let moving = patch.parent_id.is_some_and(|parent| parent != row.parent_id);
        let waiting = if moving {
            self.people_with_handovers_in(&txn, row.organisation_id, unit_id)
                .await?
        } else {
            Vec::new()
        };
        let delegating_before = if waiting.is_empty() {
            Default::default()
        } else {
            let people: Vec<&user::Model> = waiting.iter().collect();
            super::access::delegating_among(self, &txn, row.organisation_id, &people).await?
        };
        let updated = unit::Entity::update(active).exec(&txn).await?;
        if !waiting.is_empty() {
            let people: Vec<&user::Model> = waiting.iter().collect();
            let delegating_after = super::access::delegating_among(self, &txn, row.organisation_id, &people).await?;
            let roles = super::users::roles_of(&txn, &waiting.iter().map(|u| u.id).collect::<Vec<_>>()).await?;
            for person in &waiting {
                let is_admin = roles
                    .get(&person.id)
                    .is_some_and(|r| r.iter().any(|r| r.is_administrator()));
                if !is_admin && !delegating_before.contains(&person.id) && delegating_after.contains(&person.id) {
                    self.end_handover_in(&txn, caller, person.id, now_millis()).await?;
                }
            }
        }
        if updated.name != row.name {
            super::access::groups::rename_system_group_in(&txn, unit_id, &updated.name).await?;
        }
        if updated.parent_id != row.parent_id {
            // R-ACC-7: the users below leave the system groups above the
            // old place, with what they passed on through them.
            super::access::groups::unit_moved_in(
                self,
                &txn,
                caller,
                row.organisation_id,
                unit_id,
                row.parent_id,
                updated.parent_id,
                now_millis(),
            )
            .await?;
        }
        if !changes.is_empty() {
            history::record(
                &txn,
                NewEvent {
                    organisation_id: Some(row.organisation_id),
                    subject: Subject::Unit(unit_id),
                    activity: Activity::UnitUpdated,
                    caller,
                    at: now_millis(),
                    changes,
                },
            )
            .await?;
        }
        txn.commit().await?;
        // Admin levels held on units were resolved to subtrees when their
        // holders authenticated: a changed tree must be resolved again.
        self.auth_cache.clear();
        unit_from_row(updated)
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn delete_unit(&self, caller: &Caller, unit_id: Uuid) -> DomainResult<()> {
        let row = unit::Entity::find_by_id(unit_id)
            .one(&self.db)
            .await?
            .filter(|row| crate::policy::sees_organisation(caller, row.organisation_id))
            .ok_or_else(|| DomainError::not_found("unit", unit_id))?;
        authorize(caller, Action::ManageUnits, Target::organisation(row.organisation_id))?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        lock_organisation(&txn, row.organisation_id).await?;
        let children = unit::Entity::find()
            .filter(unit::Column::ParentId.eq(unit_id))
            .count(&txn)
            .await?;
        // A deleted profile keeps its unit for the record, but holds no
        // place in it: counted, it would keep the unit for ever (a deleted
        // user cannot be moved).
        let members = user::Entity::find()
            .filter(user::Column::UnitId.eq(unit_id))
            .filter(user::Column::State.ne(UserState::Deleted.as_str()))
            .count(&txn)
            .await?;
        // A level or grant held on the unit would silently vanish with it.
        let levels = admin_level::Entity::find()
            .filter(admin_level::Column::UnitId.eq(unit_id))
            .count(&txn)
            .await?
            + grant::Entity::find()
                // Held on the unit, or by its system group (whose id is
                // the unit's).
                .filter(
                    sea_orm::Condition::any()
                        .add(grant::Column::UnitId.eq(unit_id))
                        .add(grant::Column::GranteeGroupId.eq(unit_id)),
                )
                .count(&txn)
                .await?;
        if children > 0 || members > 0 || levels > 0 {
            return Err(DomainError::precondition(
                Reason::UnitInUse,
                format!(
                    "the unit still has {children} sub-units, {members} users and {levels} admin levels and grants held on it; move or revoke them first"
                ),
            ));
        }
        let now = now_millis();
        super::access::groups::delete_system_group_in(&txn, caller, unit_id, now).await?;
        user::Entity::update_many()
            .col_expr(user::Column::UnitId, Expr::value(Option::<Uuid>::None))
            .filter(user::Column::UnitId.eq(unit_id))
            .filter(user::Column::State.eq(UserState::Deleted.as_str()))
            .exec(&txn)
            .await?;
        unit::Entity::delete_by_id(unit_id).exec(&txn).await?;
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(row.organisation_id),
                subject: Subject::Unit(unit_id),
                activity: Activity::UnitDeleted,
                caller,
                at: now,
                changes: vec![FieldChange {
                    field: "name".into(),
                    before: row.name,
                    after: String::new(),
                }],
            },
        )
        .await?;
        txn.commit().await?;
        // Admin levels held on units were resolved to subtrees when their
        // holders authenticated: a changed tree must be resolved again.
        self.auth_cache.clear();
        Ok(())
    }
}

/// The unit and every unit below it (R-ORG-1: rights on a unit cover its subtree).
pub(crate) fn subtree(units: &[Unit], root: Uuid) -> Vec<Uuid> {
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(units.iter().filter(|u| u.parent_id == Some(parent)).map(|u| u.id));
        i += 1;
    }
    found
}

fn tree_order(units: Vec<Unit>) -> Vec<Unit> {
    let roots: Vec<Uuid> = units.iter().filter(|u| u.parent_id.is_none()).map(|u| u.id).collect();
    let mut ordered = Vec::with_capacity(units.len());
    for root in roots {
        for id in subtree(&units, root) {
            if let Some(unit) = units.iter().find(|u| u.id == id) {
                ordered.push(unit.clone());
            }
        }
    }
    ordered
}

/// The refusal of a unit reference that names no unit of the organisation.
pub(crate) fn no_such_unit(field: &str) -> DomainError {
    DomainError::invalid(field, "names no unit of this organisation")
}
