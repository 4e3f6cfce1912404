//! What the CA publishes and what the worker keeps up to date (R-CERT-5,
//! R-CERT-7): the CRL, the status of one serial (for OCSP), the EXPIRED
//! state and the expiry warnings.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use tracing::instrument;
use uuid::Uuid;

use super::lifecycle::describe;
use super::{CertificateState, RevocationReason};
use crate::Domain;
use crate::ca::RevokedEntry;
use crate::error::{DomainError, DomainResult};
use crate::mail::MailKind;
use crate::model::*;
use crate::persistence::entities::{certificate, crl_publication, user, user_role};
use crate::persistence::history::{self, NewEvent, Subject, diff};
use crate::persistence::is_postgres;
use crate::persistence::mapping::parse;
use crate::policy::{Action, Caller, Target, authorize};
use crate::services::notifications::NotificationKind;
use crate::services::read_organisation;

/// A signed CRL as stored.
#[derive(Debug, Clone)]
pub struct PublishedCrl {
    pub number: i64,
    pub this_update: Millis,
    pub next_update: Millis,
    pub revoked_count: i64,
    pub der: Vec<u8>,
}

impl From<crl_publication::Model> for PublishedCrl {
    fn from(row: crl_publication::Model) -> Self {
        Self {
            number: row.crl_number,
            this_update: row.this_update,
            next_update: row.next_update,
            revoked_count: row.revoked_count,
            der: row.der,
        }
    }
}

/// What OCSP answers about one serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateStatus {
    Good,
    Revoked {
        at: Millis,
        reason: RevocationReason,
    },
    /// Not a certificate this CA issued.
    Unknown,
}

/// CRLs kept besides the newest (for a relying party mid-download).
const CRLS_KEPT: i64 = 10;
/// Certificates a sweep step handles per statement.
const SWEEP_BATCH: u64 = 500;
/// The two expiry warnings (R-CERT-7), nearest first.
const WARNINGS: [(i64, &str); 2] = [(7, "7"), (30, "30")];
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Revoked (or superseded) certificates that have not expired, or expired
/// within the last CRL period (`validity_ms`): what a CRL signed at `now`
/// lists. An entry stays on one regularly scheduled CRL issued beyond its
/// certificate's validity (RFC 5280 §3.3); it left the very first CRL
/// signed after the certificate expired.
fn listed(now: Millis, validity_ms: Millis) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(certificate::Column::State.is_in([
            CertificateState::Revoked.as_str(),
            CertificateState::Superseded.as_str(),
        ]))
        .add(certificate::Column::NotAfter.gt(now - validity_ms))
}

/// A CRL signed but not yet stored, with what it was signed from.
struct CrlDraft {
    /// The newest stored CRL's number and thisUpdate when it was read.
    last: Option<(i64, Millis)>,
    row: crl_publication::Model,
}

/// The write transaction a CRL is stored in; publishers queue on the
/// advisory lock (PostgreSQL) or the write lock (SQLite).
async fn begin_publication(db: &sea_orm::DatabaseConnection) -> DomainResult<sea_orm::DatabaseTransaction> {
    let txn = crate::persistence::begin_write(db).await?;
    if is_postgres(&txn) {
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(5280)").await?;
    }
    Ok(txn)
}

/// The newest stored CRL's number and thisUpdate (not its DER: at 100,000
/// entries that is 4.9 MB read for two numbers).
async fn last_crl(db: &impl ConnectionTrait) -> DomainResult<Option<(i64, Millis)>> {
    Ok(crl_publication::Entity::find()
        .select_only()
        .column(crl_publication::Column::CrlNumber)
        .column(crl_publication::Column::ThisUpdate)
        .order_by_desc(crl_publication::Column::CrlNumber)
        .into_tuple()
        .one(db)
        .await?)
}

/// Reads what the CRL lists at `now` and signs it under the number after
/// the newest stored one.
async fn draft_crl(
    db: &impl ConnectionTrait,
    ca: &crate::ca::CertificateAuthority,
    now: Millis,
    validity_ms: i64,
) -> DomainResult<CrlDraft> {
    let last = last_crl(db).await?;
    let number = last.map_or(1, |(last_number, _)| last_number + 1);
    let revoked: Vec<(Option<String>, Option<i64>, Option<String>)> = certificate::Entity::find()
        .select_only()
        .column(certificate::Column::Serial)
        .column(certificate::Column::RevokedAt)
        .column(certificate::Column::RevocationReason)
        .filter(listed(now, validity_ms))
        .into_tuple()
        .all(db)
        .await?;
    let mut entries = revoked
        .into_iter()
        .map(|(serial, at, reason)| {
            let serial = hex::decode(serial.unwrap_or_default()).map_err(|e| DomainError::Internal(e.to_string()))?;
            let reason: RevocationReason = parse(reason.as_deref().unwrap_or("SUPERSEDED"))?;
            Ok(RevokedEntry {
                serial,
                revoked_at: at.unwrap_or(now),
                reason: reason.rfc5280(),
            })
        })
        .collect::<DomainResult<Vec<_>>>()?;
    // In serial order, so one state always signs the same list: sorted
    // here, by bytes, not by the database's text collation (strcoll over
    // 100,000 serials was a visible share of a publication).
    entries.sort_unstable_by(|a, b| a.serial.cmp(&b.serial));
    // Never earlier than the last one, whatever the clocks of replicas
    // (the CRL number tells two of one second apart).
    let this_update = last.map_or(now, |(_, last_update)| Ord::max(now, last_update));
    let next_update = this_update + validity_ms;
    let der = ca
        .sign_crl(number, this_update, next_update, &entries)
        .map_err(DomainError::Internal)?;
    Ok(CrlDraft {
        last,
        row: crl_publication::Model {
            crl_number: number,
            this_update,
            next_update,
            revoked_count: entries.len() as i64,
            der,
        },
    })
}

/// Whether a draft signed outside `txn` may be stored in it: no CRL was
/// stored since, and the list at its `now` has as many certificates. The
/// count is enough: a listed certificate stays listed (REVOKED and
/// SUPERSEDED are final, their revocation time and reason never change,
/// and such a row is never deleted), so the list at a fixed `now` can only
/// grow, and the same count is the same list.
async fn still_true(txn: &sea_orm::DatabaseTransaction, draft: &CrlDraft, now: Millis) -> DomainResult<bool> {
    if last_crl(txn).await? != draft.last {
        return Ok(false);
    }
    let validity_ms = draft.row.next_update - draft.row.this_update;
    let listed_now = certificate::Entity::find()
        .filter(listed(now, validity_ms))
        .count(txn)
        .await? as i64;
    Ok(listed_now == draft.row.revoked_count)
}

/// Stores a CRL, drops those older than the kept ones, and commits.
async fn store_crl(
    txn: sea_orm::DatabaseTransaction,
    row: crl_publication::Model,
) -> DomainResult<crl_publication::Model> {
    crl_publication::Entity::insert(crl_publication::ActiveModel {
        crl_number: Set(row.crl_number),
        this_update: Set(row.this_update),
        next_update: Set(row.next_update),
        revoked_count: Set(row.revoked_count),
        der: Set(row.der.clone()),
    })
    .exec_without_returning(&txn)
    .await?;
    crl_publication::Entity::delete_many()
        .filter(crl_publication::Column::CrlNumber.lte(row.crl_number - CRLS_KEPT))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(row)
}

impl Domain {
    /// Signs a CRL of every revoked certificate now and stores it under
    /// the next number. Publishers take turns (an advisory lock on
    /// PostgreSQL, the one writer on SQLite), so numbers only grow.
    ///
    /// The list is read and signed outside the write transaction: at
    /// 100,000 entries that takes 0.3-0.75 s, and on SQLite an open write
    /// transaction holds every other write of the system for as long. The
    /// short transaction then stores the CRL only if what it signed is
    /// still the truth: the same newest CRL (its number and thisUpdate went
    /// into the signature) and the same listed certificates. Otherwise it
    /// signs again; the last try reads and signs inside the transaction, as
    /// every try once did, so a stream of revocations cannot starve it.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn publish_crl(&self, now: Millis) -> DomainResult<PublishedCrl> {
        const TRIES_OUTSIDE: usize = 2;
        let ca = self.ca()?;
        let mut stored = None;
        for _ in 0..TRIES_OUTSIDE {
            let draft = draft_crl(&self.db, ca, now, self.settings.certificates.crl_validity_ms).await?;
            let txn = begin_publication(&self.db).await?;
            if still_true(&txn, &draft, now).await? {
                stored = Some(store_crl(txn, draft.row).await?);
                break;
            }
            txn.rollback().await?;
        }
        let row = match stored {
            Some(row) => row,
            None => {
                let txn = begin_publication(&self.db).await?;
                let draft = draft_crl(&txn, ca, now, self.settings.certificates.crl_validity_ms).await?;
                store_crl(txn, draft.row).await?
            }
        };
        let published = PublishedCrl::from(row);
        let mut signed_here = self.crl_signed_here.lock().unwrap_or_else(|e| e.into_inner());
        if signed_here.as_ref().is_none_or(|held| held.number < published.number) {
            *signed_here = Some(std::sync::Arc::new(published.clone()));
        }
        Ok(published)
    }

    /// The newest CRL this process signed since it started, if any: a cache
    /// of the current CRL takes it when it is newer than its own copy,
    /// without reading it back from the database.
    pub fn crl_signed_here(&self) -> Option<std::sync::Arc<PublishedCrl>> {
        self.crl_signed_here.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// After a revocation committed: a new CRL now. Should that fail, the
    /// revocation stands and the worker's next look (`refresh_crl_if_due`)
    /// publishes it.
    pub(crate) async fn publish_crl_after_commit(&self) {
        if self.ca.is_none() {
            return;
        }
        if let Err(e) = self.publish_crl(now_millis()).await {
            tracing::warn!(error = %e, "could not publish the CRL after a revocation; the worker will");
        }
    }

    /// Whether a (deleted) user's certificates were revoked with them.
    pub(crate) async fn holds_revoked_certificates(&self, holder_id: Uuid) -> DomainResult<bool> {
        Ok(certificate::Entity::find()
            .filter(certificate::Column::HolderId.eq(holder_id))
            .filter(certificate::Column::State.eq(CertificateState::Revoked.as_str()))
            .count(&self.db)
            .await?
            > 0)
    }

    /// Whether serving a CRL with these times, this process signs a new
    /// one first: it holds the CA, and less than a quarter of the CRL's
    /// life is left. The worker renews at half (`refresh_crl_if_due`), so
    /// that means the worker is down or far behind, and relying parties
    /// that check nextUpdate would soon refuse every certificate.
    pub fn renews_crl_when_serving(&self, this_update: Millis, next_update: Millis, now: Millis) -> bool {
        self.ca.is_some() && next_update - now < (next_update - this_update) / 4
    }

    /// The newest CRL; the first is signed on demand, and so is a new one
    /// when the newest is overdue ([`Self::renews_crl_when_serving`]).
    /// Should that signing fail, the newest is served.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn current_crl(&self) -> DomainResult<PublishedCrl> {
        let now = now_millis();
        match self.latest_crl().await? {
            Some(crl) if self.renews_crl_when_serving(crl.this_update, crl.next_update, now) => {
                match self.publish_crl(now).await {
                    Ok(renewed) => Ok(renewed),
                    Err(error) => {
                        tracing::warn!(%error, "could not renew an overdue CRL; serving the newest");
                        Ok(crl)
                    }
                }
            }
            Some(crl) => Ok(crl),
            None => self.publish_crl(now).await,
        }
    }

    async fn latest_crl(&self) -> DomainResult<Option<PublishedCrl>> {
        Ok(crl_publication::Entity::find()
            .order_by_desc(crl_publication::Column::CrlNumber)
            .one(&self.db)
            .await?
            .map(Into::into))
    }

    /// The number of the newest CRL, for a cache to see whether it is stale
    /// without reading the CRL itself.
    pub async fn current_crl_number(&self) -> DomainResult<Option<i64>> {
        Ok(crl_publication::Entity::find()
            .select_only()
            .column(crl_publication::Column::CrlNumber)
            .order_by_desc(crl_publication::Column::CrlNumber)
            .into_tuple::<i64>()
            .one(&self.db)
            .await?)
    }

    /// `GetCrl` and the CA certificate: public, any caller.
    pub async fn crl_for(&self, caller: &Caller) -> DomainResult<PublishedCrl> {
        let target = caller
            .organisation_id()
            .map_or(Target::platform(), Target::organisation);
        authorize(caller, Action::ReadCertificateAuthority, target)?;
        self.current_crl().await
    }

    /// The worker's look: a new CRL when there is none, when half of the
    /// newest one's life is gone, or when a revocation is missing from it
    /// (its publication after commit failed). Returns whether it published.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn refresh_crl_if_due(&self, now: Millis) -> DomainResult<bool> {
        if self.ca.is_none() {
            return Ok(false);
        }
        // Its times and count only: the CRL itself (megabytes with 100,000
        // entries) is not read on every tick.
        let latest: Option<(i64, i64, i64)> = crl_publication::Entity::find()
            .select_only()
            .column(crl_publication::Column::ThisUpdate)
            .column(crl_publication::Column::NextUpdate)
            .column(crl_publication::Column::RevokedCount)
            .order_by_desc(crl_publication::Column::CrlNumber)
            .into_tuple()
            .one(&self.db)
            .await?;
        let due = match latest {
            None => true,
            Some((this_update, next_update, revoked_count)) => {
                let half_life = (next_update - this_update) / 2;
                // Counted at the newest CRL's own thisUpdate, so only a
                // revocation can change the count, not an expiry since.
                let listed_then = certificate::Entity::find()
                    .filter(listed(this_update, self.settings.certificates.crl_validity_ms))
                    .count(&self.db)
                    .await? as i64;
                next_update - now < half_life || listed_then != revoked_count
            }
        };
        if due {
            self.publish_crl(now).await?;
        }
        Ok(due)
    }

    /// What OCSP answers for a serial (lower-case hex, no leading zeros).
    pub async fn certificate_status(&self, serial: &str) -> DomainResult<CertificateStatus> {
        let Some(row) = certificate::Entity::find()
            .filter(certificate::Column::Serial.eq(serial))
            .one(&self.db)
            .await?
        else {
            return Ok(CertificateStatus::Unknown);
        };
        Ok(match (parse::<CertificateState>(&row.state)?, row.revoked_at) {
            (CertificateState::Revoked | CertificateState::Superseded, Some(at)) => CertificateStatus::Revoked {
                at,
                reason: parse(row.revocation_reason.as_deref().unwrap_or("SUPERSEDED"))?,
            },
            _ => CertificateStatus::Good,
        })
    }

    /// Marks ISSUED certificates past notAfter EXPIRED, each with its
    /// history event. Returns how many.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn expire_certificates(&self, now: Millis) -> DomainResult<u64> {
        let caller = Caller::system("certificate-expiry");
        let mut expired = 0;
        loop {
            let txn = crate::persistence::begin_write(&self.db).await?;
            let due = certificate::Entity::find()
                .filter(certificate::Column::State.eq(CertificateState::Issued.as_str()))
                .filter(certificate::Column::NotAfter.lte(now))
                .limit(SWEEP_BATCH)
                .all(&txn)
                .await?;
            let batch = due.len() as u64;
            for row in due {
                let done = certificate::Entity::update_many()
                    .col_expr(
                        certificate::Column::State,
                        Expr::value(CertificateState::Expired.as_str()),
                    )
                    // One on from the row as it is, not as read: a change
                    // committed since the read (a new contact person)
                    // leaves it ISSUED and moved the version on, and the
                    // expiry must not reuse the ETag that change handed out.
                    .col_expr(
                        certificate::Column::Version,
                        Expr::col(certificate::Column::Version).add(1),
                    )
                    .col_expr(certificate::Column::UpdatedAt, Expr::value(now))
                    .filter(certificate::Column::Id.eq(row.id))
                    .filter(certificate::Column::State.eq(CertificateState::Issued.as_str()))
                    .exec(&txn)
                    .await?;
                if done.rows_affected != 1 {
                    continue;
                }
                let mut changes = Vec::new();
                diff(&mut changes, "state", &row.state, CertificateState::Expired.as_str());
                history::record(
                    &txn,
                    NewEvent {
                        organisation_id: Some(row.organisation_id),
                        subject: Subject::Certificate(row.id),
                        activity: Activity::CertificateExpired,
                        caller: &caller,
                        at: now,
                        changes,
                    },
                )
                .await?;
                if row.kind == CertificateKind::Organisation.as_str() {
                    self.end_signing_without_sealing_in(&txn, &caller, row.organisation_id, now)
                        .await?;
                }
                expired += 1;
            }
            txn.commit().await?;
            if batch < SWEEP_BATCH {
                return Ok(expired);
            }
        }
    }

    /// Deletes orders whose pickup token expired unused, each with its
    /// history event (reason "pickup expired"), as DeleteCertificateOrder
    /// would: nothing can pick them up any more, and left ORDERED they
    /// stood in every list as waiting, for ever. The administrator orders
    /// again. Returns how many.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn end_unclaimed_orders(&self, now: Millis) -> DomainResult<u64> {
        let caller = Caller::system("certificate-expiry");
        let mut ended = 0;
        loop {
            let txn = crate::persistence::begin_write(&self.db).await?;
            let due = certificate::Entity::find()
                .filter(certificate::Column::State.eq(CertificateState::Ordered.as_str()))
                .filter(certificate::Column::PickupExpiresAt.lte(now))
                .limit(SWEEP_BATCH)
                .all(&txn)
                .await?;
            let batch = due.len() as u64;
            for row in due {
                if super::lifecycle::delete_order_in(&txn, &caller, &row, now, Some("pickup expired")).await? {
                    ended += 1;
                }
            }
            txn.commit().await?;
            if batch < SWEEP_BATCH {
                return Ok(ended);
            }
        }
    }

    /// R-CERT-7: tells the holder, the contact person and the user
    /// administrators 30 and 7 days before a certificate expires, each
    /// warning once: the warning's column is set by a conditional UPDATE in
    /// the transaction that writes its mails, so two workers cannot both
    /// send it. A certificate first seen inside 7 days gets the 7-day
    /// warning only. Returns the number of warnings (certificates) sent.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn warn_expiring_certificates(&self, now: Millis) -> DomainResult<u64> {
        let mut warned = 0;
        for (days, days_text) in WARNINGS {
            let column = if days == 7 {
                certificate::Column::Warned7At
            } else {
                certificate::Column::Warned30At
            };
            loop {
                let due = certificate::Entity::find()
                    .filter(certificate::Column::State.eq(CertificateState::Issued.as_str()))
                    .filter(certificate::Column::NotAfter.gt(now))
                    .filter(certificate::Column::NotAfter.lte(now + days * DAY_MS))
                    .filter(column.is_null())
                    .limit(SWEEP_BATCH)
                    .all(&self.db)
                    .await?;
                let batch = due.len() as u64;
                for row in due {
                    if self.warn_one(row, column, days_text, now).await? {
                        warned += 1;
                    }
                }
                if batch < SWEEP_BATCH {
                    break;
                }
            }
        }
        Ok(warned)
    }

    async fn warn_one(
        &self,
        row: certificate::Model,
        column: certificate::Column,
        days_text: &str,
        now: Millis,
    ) -> DomainResult<bool> {
        let txn = crate::persistence::begin_write(&self.db).await?;
        // Claimed only while still ISSUED and not expired: one revoked or
        // superseded since the sweep read its batch gets no warning.
        let mut claim = certificate::Entity::update_many()
            .col_expr(column, Expr::value(now))
            .filter(certificate::Column::Id.eq(row.id))
            .filter(certificate::Column::State.eq(CertificateState::Issued.as_str()))
            .filter(certificate::Column::NotAfter.gt(now))
            .filter(column.is_null());
        if days_text == WARNINGS[0].1 {
            // The 30-day warning is past too: never send it after this one.
            claim = claim.col_expr(
                certificate::Column::Warned30At,
                Expr::col(certificate::Column::Warned30At).if_null(now),
            );
        }
        if claim.exec(&txn).await?.rows_affected != 1 {
            return Ok(false);
        }
        // As it is now that the claim holds its row: a contact changed
        // since the sweep read its batch is the one told (the warning is
        // sent once, so the old contact's would be the only one).
        let Some(row) = certificate::Entity::find_by_id(row.id).one(&txn).await? else {
            return Ok(false);
        };
        let org = read_organisation(&txn, row.organisation_id).await?;
        let what = describe(&row);
        let expires_on = crate::mail::date(row.not_after.unwrap_or(now));
        // The days actually left, not the window's: a certificate first seen
        // inside a window (a short validity, a worker that was down) was
        // told "expires in 30 days" with a date a week away. Counted by the
        // dates, as `expires_on` is written.
        let days_left = crate::mail::days_until(now, row.not_after.unwrap_or(now));
        let mut recipients: Vec<Uuid> = [row.holder_id, Some(row.contact_id)].into_iter().flatten().collect();
        let user_admins: Vec<Uuid> = user_role::Entity::find()
            .select_only()
            .column(user_role::Column::UserId)
            .filter(user_role::Column::OrganisationId.eq(row.organisation_id))
            .filter(user_role::Column::Role.eq(Role::UserAdmin.as_str()))
            .into_tuple()
            .all(&txn)
            .await?;
        recipients.extend(user_admins);
        let mut told = Vec::new();
        for id in recipients {
            if told.contains(&id) {
                continue;
            }
            told.push(id);
            let Some(person) = user::Entity::find_by_id(id).one(&txn).await? else {
                continue;
            };
            if person.state != UserState::Active.as_str() {
                continue;
            }
            let days_left = crate::mail::quantity(
                crate::persistence::mapping::parse(&person.language)?,
                days_left,
                crate::mail::Unit::Day,
            );
            self.notify(
                &txn,
                &person,
                NotificationKind::Certificate,
                MailKind::CertificateExpiring,
                &[
                    ("first_name", person.first_name.as_str()),
                    ("organisation_name", org.name.as_str()),
                    ("certificate", what.as_str()),
                    ("days_left", days_left.as_str()),
                    ("expires_on", expires_on.as_str()),
                ],
                Some(row.id),
            )
            .await?;
        }
        txn.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_run_nearest_first() {
        assert!(WARNINGS[0].0 < WARNINGS[1].0);
    }
}
