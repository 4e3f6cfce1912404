//! R-CERT-3: a user may be allowed to sign through the organisation
//! certificate. Seed 001 sets it on the user's profile, and only where the
//! organisation has a certificate that signs for it; here that is an ISSUED
//! organisation certificate with the SEALING usage, and the user's own
//! signing right.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect};
use tracing::instrument;
use uuid::Uuid;

use super::CertificateState;
use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason};
use crate::model::*;
use crate::persistence::entities::{certificate, user};
use crate::persistence::history::{self, NewEvent, Subject, diff};
use crate::policy::{Action, Caller};

impl Domain {
    /// Allows or stops `user_id` signing through the organisation
    /// certificate; organisation administrators decide (they own the
    /// organisation's certificates). In the user's history.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn set_organisation_signing(
        &self,
        caller: &Caller,
        user_id: Uuid,
        allowed: bool,
        etag: &str,
    ) -> DomainResult<User> {
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let (user, row) = self
            .lock_user_for_write(&txn, caller, Action::ManageOrganisationCertificates, user_id, etag)
            .await?;
        if row.signs_with_organisation_certificate == allowed {
            return Ok(user);
        }
        if allowed {
            // Two keys (R-ACC-4), as for the signing right itself: with
            // this a person seals for the organisation.
            if caller.acting_user_id() == Some(user_id) {
                return Err(DomainError::denied(
                    "nobody allows themselves to sign through the organisation certificate: a colleague must (two keys)",
                ));
            }
            if user.state == UserState::Deleted {
                return Err(DomainError::precondition(Reason::UserDeleted, "the user is deleted"));
            }
            if !row.signing_right {
                return Err(DomainError::precondition(
                    Reason::SigningRightMissing,
                    "signing through the organisation certificate needs the user's signing right; a user administrator grants it first",
                ));
            }
            if !has_sealing_certificate(&txn, row.organisation_id).await? {
                return Err(DomainError::precondition(
                    Reason::NoSealingCertificate,
                    "the organisation has no issued organisation certificate with the SEALING usage to sign through",
                ));
            }
        }
        let written = user::Entity::update_many()
            .col_expr(user::Column::SignsWithOrganisationCertificate, Expr::value(allowed))
            .col_expr(user::Column::Version, Expr::value(row.version + 1))
            .col_expr(user::Column::UpdatedAt, Expr::value(now))
            .filter(user::Column::Id.eq(row.id))
            .filter(user::Column::Version.eq(row.version))
            .exec(&txn)
            .await?;
        if written.rows_affected != 1 {
            return Err(DomainError::stale_etag("user"));
        }
        let mut changes = Vec::new();
        diff(
            &mut changes,
            "signs_with_organisation_certificate",
            row.signs_with_organisation_certificate,
            allowed,
        );
        self.record_user_event(&txn, &user, Activity::UserUpdated, caller, now, changes)
            .await?;
        txn.commit().await?;
        self.get_user_unchecked(user_id).await
    }

    /// When the organisation's last ISSUED organisation certificate with
    /// SEALING has ended (revoked, expired), nobody signs through one any
    /// more: each allowed person's permission ends, in their history, in
    /// the transaction that ended the certificate. Left standing, the
    /// permissions applied again, unasked, to whatever sealing certificate
    /// was issued next, months later perhaps. Returns how many ended.
    pub(crate) async fn end_signing_without_sealing_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        organisation_id: Uuid,
        now: Millis,
    ) -> DomainResult<u64> {
        if has_sealing_certificate(txn, organisation_id).await? {
            return Ok(0);
        }
        let allowed: Vec<Uuid> = user::Entity::find()
            .select_only()
            .column(user::Column::Id)
            .filter(user::Column::OrganisationId.eq(organisation_id))
            .filter(user::Column::SignsWithOrganisationCertificate.eq(true))
            .into_tuple()
            .all(txn)
            .await?;
        if allowed.is_empty() {
            return Ok(0);
        }
        user::Entity::update_many()
            .col_expr(user::Column::SignsWithOrganisationCertificate, Expr::value(false))
            .col_expr(user::Column::Version, Expr::col(user::Column::Version).add(1))
            .col_expr(user::Column::UpdatedAt, Expr::value(now))
            .filter(user::Column::Id.is_in(allowed.iter().copied()))
            .exec(txn)
            .await?;
        for &person in &allowed {
            let mut changes = Vec::new();
            diff(&mut changes, "signs_with_organisation_certificate", true, false);
            history::record(
                txn,
                NewEvent {
                    organisation_id: Some(organisation_id),
                    subject: Subject::User(person),
                    activity: Activity::UserUpdated,
                    caller,
                    at: now,
                    changes,
                },
            )
            .await?;
        }
        Ok(allowed.len() as u64)
    }
}

/// Whether the organisation has an ISSUED organisation certificate with
/// the SEALING usage: what signing through it needs.
async fn has_sealing_certificate(txn: &DatabaseTransaction, organisation_id: Uuid) -> DomainResult<bool> {
    Ok(certificate::Entity::find()
        .filter(certificate::Column::OrganisationId.eq(organisation_id))
        .filter(certificate::Column::Kind.eq(CertificateKind::Organisation.as_str()))
        .filter(certificate::Column::State.eq(CertificateState::Issued.as_str()))
        .filter(certificate::Column::Usages.contains("SEALING"))
        .count(txn)
        .await?
        > 0)
}
