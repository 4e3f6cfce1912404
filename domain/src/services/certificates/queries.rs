//! Reading the inventory (R-CERT-6): one certificate, search with page
//! tokens, history, and the export of all of an organisation's certificates.

use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tracing::instrument;
use uuid::Uuid;

use super::lifecycle::recipient_of;
use super::{Certificate, CertificateState, CertificateUsage, canonical_serial, to_certificate};
use crate::Domain;
use crate::error::{DomainError, DomainResult};
use crate::model::*;
use crate::normalise;
use crate::paging;
use crate::persistence::entities::certificate;
use crate::policy::{Action, Caller, Target, authorize};
use crate::services::imports::format::excel_csv;
use crate::services::users::HistoryQuery;

/// The filters of `SearchCertificates`; all given ones must hold.
#[derive(Debug, Clone, Default)]
pub struct CertificateQuery {
    pub organisation_id: Uuid,
    pub certificate_id: Option<Uuid>,
    /// Hex, with or without colons.
    pub serial: Option<String>,
    /// A part of the subject, any case.
    pub subject_text: Option<String>,
    pub holder_id: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    pub email: Option<String>,
    pub kind: Option<CertificateKind>,
    pub state: Option<CertificateState>,
    pub usage: Option<CertificateUsage>,
    /// notAfter at or after this…
    pub expires_from: Option<Millis>,
    /// …and before this.
    pub expires_to: Option<Millis>,
    pub page_size: i32,
    pub page_token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// The issued certificates, PEM one after another.
    PemBundle,
    /// One line per certificate (Excel CSV, formula cells neutralised).
    Csv,
}

/// Rows per export chunk.
const EXPORT_CHUNK: u64 = 500;

impl Domain {
    /// Whether the caller may read this certificate: the organisation's
    /// certificate readers, and its holder and contact person.
    fn authorize_read(&self, caller: &Caller, row: &certificate::Model) -> DomainResult<()> {
        let own = caller
            .user_id()
            .is_some_and(|me| me == recipient_of(row) || me == row.contact_id);
        if own {
            return Ok(());
        }
        authorize(
            caller,
            Action::ReadCertificates,
            Target::organisation(row.organisation_id),
        )
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn get_certificate(&self, caller: &Caller, id: Uuid) -> DomainResult<Certificate> {
        let row = self.visible_certificate(&self.db, caller, id).await?;
        self.authorize_read(caller, &row)?;
        to_certificate(row)
    }

    /// The history of one certificate, newest first.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn certificate_history(
        &self,
        caller: &Caller,
        id: Uuid,
        query: HistoryQuery,
    ) -> DomainResult<Page<HistoryEvent>> {
        // A deleted order's row is gone, its history is not: readers of the
        // organisation's certificates may still read it.
        let organisation_id = match self.visible_certificate(&self.db, caller, id).await {
            Ok(row) => {
                self.authorize_read(caller, &row)?;
                row.organisation_id
            }
            Err(DomainError::NotFound { .. }) => {
                let org = self.history_organisation(id).await?;
                let Some(org) = org.filter(|org| caller.organisation_id() == Some(*org)) else {
                    return Err(DomainError::not_found("certificate", id));
                };
                authorize(caller, Action::ReadCertificates, Target::organisation(org))?;
                org
            }
            Err(other) => return Err(other),
        };
        self.history_of("CERTIFICATE", id, organisation_id, query).await
    }

    async fn history_organisation(&self, id: Uuid) -> DomainResult<Option<Uuid>> {
        use crate::persistence::entities::history_event;
        Ok(history_event::Entity::find()
            .select_only()
            .column(history_event::Column::OrganisationId)
            .filter(history_event::Column::SubjectKind.eq("CERTIFICATE"))
            .filter(history_event::Column::SubjectId.eq(id))
            .into_tuple::<Option<Uuid>>()
            .one(&self.db)
            .await?
            .flatten())
    }

    /// R-CERT-6: newest first, 50 by default; with an expiry bound, the
    /// soonest to expire first.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn search_certificates(
        &self,
        caller: &Caller,
        query: CertificateQuery,
    ) -> DomainResult<Page<Certificate>> {
        authorize(
            caller,
            Action::ReadCertificates,
            Target::organisation(query.organisation_id),
        )?;
        let limit = paging::page_size(query.page_size, 50, 500)?;
        let list = format!("certificates:{}", query.organisation_id);
        if let (Some(from), Some(to)) = (query.expires_from, query.expires_to)
            && from >= to
        {
            return Err(DomainError::invalid("expire_time_to", "must be after expire_time_from"));
        }
        let mut filter = Condition::all().add(certificate::Column::OrganisationId.eq(query.organisation_id));
        if let Some(id) = query.certificate_id {
            filter = filter.add(certificate::Column::Id.eq(id));
        }
        if let Some(serial) = &query.serial {
            let serial = canonical_serial(serial).map_err(|rule| DomainError::invalid("serial", rule))?;
            filter = filter.add(certificate::Column::Serial.eq(serial));
        }
        if let Some(text) = &query.subject_text {
            let text = normalise::key(text.trim());
            if text.is_empty() || text.chars().count() > 200 {
                return Err(DomainError::invalid("subject_text", "must be 1 to 200 characters"));
            }
            crate::validate::no_control_characters(&text).map_err(|rule| DomainError::invalid("subject_text", rule))?;
            filter = filter.add(crate::persistence::contains_literally(
                certificate::Column::SearchText,
                &text,
            ));
        }
        if let Some(holder) = query.holder_id {
            filter = filter.add(certificate::Column::HolderId.eq(holder));
        }
        if let Some(contact) = query.contact_id {
            filter = filter.add(certificate::Column::ContactId.eq(contact));
        }
        if let Some(email) = &query.email {
            crate::validate::no_control_characters(email).map_err(|rule| DomainError::invalid("email", rule))?;
            // In any case, as the order compared it with the person's
            // address: "Karen@Firma.dk" at order is found as
            // "karen@firma.dk". Certificate addresses are plain ASCII, so
            // both databases' lower() agree.
            filter = filter.add(ExprTrait::eq(
                Expr::expr(Func::lower(Expr::col(certificate::Column::Email))),
                email.trim().to_ascii_lowercase(),
            ));
        }
        if let Some(kind) = query.kind {
            filter = filter.add(certificate::Column::Kind.eq(kind.as_str()));
        }
        if let Some(state) = query.state {
            filter = filter.add(certificate::Column::State.eq(state.as_str()));
        }
        if let Some(usage) = query.usage {
            // A comma list: match the whole word (ENCRYPTION is also the
            // tail of EMAIL_ENCRYPTION).
            let word = usage.as_str();
            filter = filter.add(
                Condition::any()
                    .add(certificate::Column::Usages.eq(word))
                    .add(certificate::Column::Usages.starts_with(format!("{word},")))
                    .add(certificate::Column::Usages.ends_with(format!(",{word}")))
                    .add(certificate::Column::Usages.contains(format!(",{word},"))),
            );
        }
        if let Some(from) = query.expires_from {
            filter = filter.add(certificate::Column::NotAfter.gte(from));
        }
        if let Some(to) = query.expires_to {
            filter = filter.add(certificate::Column::NotAfter.lt(to));
        }
        let select = certificate::Entity::find().filter(filter);
        let (rows, next) = if query.expires_from.is_some() || query.expires_to.is_some() {
            // Who asks for an expiry window wants what expires first, and
            // newest-first would walk every newer certificate before the
            // window's (correlated with age): ~1 s over a million rows for
            // 30 days. Ordered by (notAfter, id), the organisation's expiry
            // index serves the page exactly. Its own list tag: a token of
            // the newest-first order means nothing here.
            paging::keyset_by_time(
                &self.db,
                select,
                certificate::Column::NotAfter,
                certificate::Column::Id,
                &format!("{list}:expiry"),
                &query.page_token,
                limit,
                // The expiry filter leaves no row without notAfter (orders).
                |r| (r.not_after.unwrap_or_default(), r.id),
            )
            .await?
        } else {
            // Ids first, whatever the filters (a few primary-key reads more
            // when they need the rows anyway): on PostgreSQL the
            // organisation's (organisation_id, id) index also holds
            // `search_text`, so a subject text that the newest certificates
            // lack is checked against index entries, not the ~1.4 kB rows
            // (BENCHMARKS.md, issue 10).
            paging::keyset_ids_first(
                &self.db,
                select,
                certificate::Column::Id,
                paging::Order::Descending,
                &list,
                &query.page_token,
                limit,
                |r| r.id,
            )
            .await?
        };
        Ok(Page {
            items: rows.into_iter().map(to_certificate).collect::<DomainResult<_>>()?,
            next_page_token: next,
        })
    }

    /// One chunk of the export of all of an organisation's certificates,
    /// oldest first, after `cursor` (the last id of the previous chunk).
    /// Returns the bytes and the cursor of the next chunk (`None`: done).
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn export_certificates_chunk(
        &self,
        caller: &Caller,
        organisation_id: Uuid,
        format: ExportFormat,
        cursor: Option<Uuid>,
    ) -> DomainResult<(Vec<u8>, Option<Uuid>)> {
        authorize(caller, Action::ReadCertificates, Target::organisation(organisation_id))?;
        let mut select = certificate::Entity::find()
            .filter(certificate::Column::OrganisationId.eq(organisation_id))
            .order_by_asc(certificate::Column::Id)
            .limit(EXPORT_CHUNK);
        if let Some(after) = cursor {
            select = select.filter(certificate::Column::Id.gt(after));
        }
        if format == ExportFormat::PemBundle {
            select = select.filter(certificate::Column::Der.is_not_null());
        }
        let rows = select.all(&self.db).await?;
        let next = (rows.len() as u64 == EXPORT_CHUNK).then(|| rows[rows.len() - 1].id);
        let bytes = match format {
            ExportFormat::PemBundle => rows
                .iter()
                .filter_map(|row| row.der.as_deref())
                .map(|der| crate::ca::pem("CERTIFICATE", der))
                .collect::<String>()
                .into_bytes(),
            ExportFormat::Csv => {
                let mut lines = Vec::with_capacity(rows.len() + 1);
                if cursor.is_none() {
                    lines.push(CSV_HEADER.iter().map(|h| (*h).to_owned()).collect());
                }
                for row in rows {
                    lines.push(csv_line(to_certificate(row)?));
                }
                let mut bytes = excel_csv(lines);
                if cursor.is_some() {
                    // One byte-order mark, at the start of the file.
                    bytes.drain(..3);
                }
                bytes
            }
        };
        Ok((bytes, next))
    }
}

const CSV_HEADER: [&str; 15] = [
    "id",
    "kind",
    "state",
    "serial",
    "subject",
    "holder_id",
    "contact_id",
    "label",
    "usages",
    "email",
    "key_algorithm",
    "not_before",
    "not_after",
    "revoked_at",
    "revocation_reason",
];

fn csv_line(c: Certificate) -> Vec<String> {
    let time = |at: Option<Millis>| {
        at.and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    };
    vec![
        c.id.to_string(),
        c.kind.as_str().into(),
        c.state.as_str().into(),
        c.serial.unwrap_or_default(),
        c.subject.unwrap_or_default(),
        c.holder_id.map(|h| h.to_string()).unwrap_or_default(),
        c.contact_id.to_string(),
        c.label.unwrap_or_default(),
        super::usages_to_text(&c.usages),
        c.email.unwrap_or_default(),
        c.key_algorithm.unwrap_or_default(),
        time(c.not_before),
        time(c.not_after),
        time(c.revoked_at),
        c.revocation_reason.map(|r| r.as_str().to_owned()).unwrap_or_default(),
    ]
}
