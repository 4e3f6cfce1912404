//! Bulk work on users from CSV files as queued jobs (R-BULK-1..6). The
//! service stores an upload and answers at once; the worker claims the job
//! and applies its rows through the very functions of CreateUser,
//! UpdateUser, DeactivateUser and DeleteUser (`*_in`, over the batch's
//! transaction), so no rule exists twice.

pub mod format;
mod rows;
mod run;

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
use tracing::instrument;
use uuid::Uuid;

pub use self::format::FileEncoding;
pub use self::run::ClaimedImport;
use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason};
use crate::model::*;
use crate::paging;
use crate::persistence::entities::{import_chunk, import_created_user, import_error, import_job, user};
use crate::persistence::mapping::parse;
use crate::policy::{Action, Caller, Target, authorize};
use crate::validate::{self, Violations};

crate::string_enum_pub!(
    ImportKind {
        Create => "CREATE",
        Edit => "EDIT",
        Delete => "DELETE",
        LegacyCreate => "LEGACY_CREATE",
    }
);

crate::string_enum_pub!(
    /// `Uploading` is internal: the upload has not finished, nobody sees the job.
    ImportState {
        Uploading => "UPLOADING",
        Queued => "QUEUED",
        Running => "RUNNING",
        Succeeded => "SUCCEEDED",
        Failed => "FAILED",
        Cancelled => "CANCELLED",
    }
);

impl ImportState {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Limits and pacing of import jobs, from configuration.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    /// Largest file accepted, in bytes.
    pub max_file_bytes: i64,
    /// Most data rows in one file.
    pub max_rows: i64,
    /// Jobs one organisation may have QUEUED or RUNNING at once.
    pub max_open_per_organisation: u64,
    /// Rows of an edit or delete file per transaction (and checkpoint).
    /// Small on purpose: each such row runs in a savepoint of its own, and
    /// one that moves a licence updates the organisation's row; on
    /// PostgreSQL each later statement of the batch walks the versions the
    /// earlier ones left (500 rows a batch ran at a third of the speed of
    /// 25; see BENCHMARKS.md).
    pub batch_size: usize,
    /// Rows of a create or legacy file per transaction: their users are
    /// created together in a few statements (`create_users_in`), so a large
    /// batch is cheap.
    pub create_batch_size: usize,
    /// How long a worker's claim on a job lasts without a checkpoint; a job
    /// whose worker died goes to another after this.
    pub lease_ms: i64,
    /// How long a finished job's file is kept; its report stays.
    pub file_retention_ms: i64,
    /// An upload that received nothing for this long was abandoned (its
    /// client went away without a word): its job and pieces are deleted.
    pub upload_idle_ms: i64,
    /// How long one WatchImport stream lasts at most: a watch polls the job
    /// until it ends, and a job queued with no worker to take it never
    /// does. The stream then ends DEADLINE_EXCEEDED; the client watches again.
    pub watch_lifetime_ms: i64,
    /// Errors a job's report lists at most; the job's `failed` counts them
    /// all. A million-row file refused row by row (a wrong export) wrote an
    /// error per row and column, kept for ever, and validate-only runs of
    /// it could be repeated.
    pub max_report_errors: u64,
}

impl Default for ImportSettings {
    fn default() -> Self {
        Self {
            max_file_bytes: 512 * 1024 * 1024,
            max_rows: 1_000_000,
            max_open_per_organisation: 5,
            batch_size: 25,
            create_batch_size: 1000,
            lease_ms: 60_000,
            file_retention_ms: 7 * 24 * 60 * 60 * 1000,
            upload_idle_ms: 60 * 60 * 1000,
            watch_lifetime_ms: 15 * 60 * 1000,
            max_report_errors: 10_000,
        }
    }
}

/// Largest piece of a file one upload message may carry.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ImportSpec {
    pub organisation_id: Uuid,
    pub kind: ImportKind,
    pub validate_only: bool,
    pub file_name: String,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportJob {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub kind: ImportKind,
    pub state: ImportState,
    pub validate_only: bool,
    pub file_name: String,
    pub file_bytes: i64,
    pub encoding: Option<FileEncoding>,
    pub rows: Option<i64>,
    pub processed: i64,
    pub applied: i64,
    pub failed: i64,
    pub skipped: i64,
    pub requester_id: Uuid,
    pub requester_name: String,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub failure_reason: Option<String>,
    pub failure_message: Option<String>,
    pub cancel_requested: bool,
}

/// One row's problem, or a notice about an applied row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRowError {
    /// As a spreadsheet numbers it: the header is row 1.
    pub row: i64,
    /// A column's key, or empty for the row as a whole.
    pub column: String,
    pub reason: String,
    pub message: String,
    /// The row was applied; this tells how (e.g. deactivated, not deleted).
    pub applied: bool,
}

/// Problems per piece of an import's report (`import_report_piece`).
pub const REPORT_PIECE_ROWS: u64 = 1000;

/// Where the next piece of an import's report starts: after this problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportCursor {
    row: i64,
    column: String,
}

/// What BatchSendActivation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchActivation {
    pub queued: Vec<Uuid>,
    pub needs_code: Vec<Uuid>,
    pub skipped: Vec<Uuid>,
    /// Waiting for activation, but whose link only someone who may change
    /// roles sends (`policy::authorize_sign_in_change`).
    pub needs_administrator: Vec<Uuid>,
}

/// An upload in progress: push the file's pieces, then finish.
pub struct ImportUpload {
    domain: Domain,
    job_id: Uuid,
    organisation_id: Uuid,
    request_id: Option<String>,
    next_seq: i32,
    bytes: i64,
    sniffer: format::EncodingSniffer,
    /// When the job's `updated_at` last said the upload is alive.
    alive_at: Millis,
    /// Queued, or discarded, by `finish` or `abandon`: nothing for `drop`.
    settled: bool,
}

impl Drop for ImportUpload {
    /// An upload dropped unsettled is discarded at once: its call was
    /// cancelled, or its deadline passed, and the handler's future was
    /// dropped with it, so `abandon` never ran. It used to keep one of the
    /// organisation's places for open imports, and its pieces, until the
    /// purge of idle uploads (an hour by default). Discarding deletes only
    /// a job still UPLOADING: one a cancelled `finish` queued stays.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (domain, job_id) = (self.domain.clone(), self.job_id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = domain.discard_upload(job_id, None).await {
                    tracing::warn!(%error, job = %job_id, "a dropped upload was not discarded; the purge will");
                }
            });
        }
    }
}

/// The answer to the first message of an upload (one per upload: its size
/// does not matter).
#[allow(clippy::large_enum_variant)]
pub enum BeganImport {
    /// A retry of an upload that finished: its job (the file is not read).
    Existing(ImportJob),
    Upload(ImportUpload),
}

/// An upload the purge of abandoned uploads took while it was still open.
fn upload_abandoned() -> DomainError {
    DomainError::FailedPrecondition {
        reason: Reason::ImportUploadAbandoned,
        message: "this upload was idle too long and was discarded; send the file again".into(),
        metadata: vec![],
    }
}

/// Reason codes of row notices that are not errors.
const DEACTIVATED_NOT_DELETED: &str = "DEACTIVATED_NOT_DELETED";

fn job_from_row(row: import_job::Model) -> DomainResult<ImportJob> {
    Ok(ImportJob {
        id: row.id,
        organisation_id: row.organisation_id,
        kind: parse(&row.kind)?,
        state: parse(&row.state)?,
        validate_only: row.validate_only,
        file_name: row.file_name,
        file_bytes: row.file_bytes,
        encoding: row.encoding.as_deref().map(parse).transpose()?,
        rows: row.rows,
        processed: row.processed,
        applied: row.applied,
        failed: row.failed,
        skipped: row.skipped,
        requester_id: row.requester_id,
        requester_name: row.requester_name,
        created_at: row.created_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
        failure_reason: row.failure_reason,
        failure_message: row.failure_message,
        cancel_requested: row.cancel_requested,
    })
}

/// Who may start a job of `kind`: user administrators import users into
/// their own organisation; legacy imports (which bring administrators and
/// bypass activation) need an organisation administrator.
fn import_action(kind: ImportKind) -> Action {
    match kind {
        ImportKind::LegacyCreate => Action::ImportLegacyUsers,
        _ => Action::ImportUsers,
    }
}

impl Domain {
    /// The first message of an upload: checks the caller and the spec and
    /// the organisation's open jobs, and makes the (not yet visible) job.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn begin_import(&self, caller: &Caller, spec: ImportSpec) -> DomainResult<BeganImport> {
        authorize(
            caller,
            import_action(spec.kind),
            Target::organisation(spec.organisation_id),
        )?;
        let Some(requester_id) = caller.user_id() else {
            return Err(DomainError::denied("imports are made by a person of the organisation"));
        };
        let mut v = Violations::default();
        if spec.file_name.chars().count() > 255 || spec.file_name.chars().any(char::is_control) {
            v.add(
                "spec.file_name",
                "must be at most 255 characters without control characters",
            );
        }
        if let Some(id) = &spec.request_id {
            v.check("spec.request_id", validate::request_id(id));
        }
        v.into_result()?;
        crate::services::read_organisation(&self.db, spec.organisation_id).await?;
        if let Some(request_id) = &spec.request_id
            && let Some(existing) = import_job::Entity::find()
                .filter(import_job::Column::OrganisationId.eq(spec.organisation_id))
                .filter(import_job::Column::RequestId.eq(request_id.as_str()))
                .one(&self.db)
                .await?
        {
            crate::services::ensure_same_request(
                Some(&import_request_of(&existing)),
                &import_request(spec.kind.as_str(), spec.validate_only, &spec.file_name, requester_id),
                "import",
            )?;
            return Ok(BeganImport::Existing(job_from_row(existing)?));
        }
        self.ensure_import_slot(&self.db, spec.organisation_id, None).await?;
        let now = now_millis();
        let id = Uuid::now_v7();
        import_job::Entity::insert(import_job::ActiveModel {
            id: Set(id),
            organisation_id: Set(spec.organisation_id),
            kind: Set(spec.kind.to_string()),
            state: Set(ImportState::Uploading.to_string()),
            validate_only: Set(spec.validate_only),
            file_name: Set(spec.file_name.clone()),
            file_bytes: Set(0),
            encoding: Set(None),
            requester_id: Set(requester_id),
            requester_name: Set(caller.display_name()),
            request_id: Set(None),
            rows: Set(None),
            processed: Set(0),
            applied: Set(0),
            failed: Set(0),
            skipped: Set(0),
            cancel_requested: Set(false),
            claimed_by: Set(None),
            lease_until: Set(None),
            failure_reason: Set(None),
            failure_message: Set(None),
            created_at: Set(now),
            started_at: Set(None),
            finished_at: Set(None),
            updated_at: Set(now),
            file_deleted_at: Set(None),
            trace_context: Set(crate::telemetry::current_traceparent()),
            failed_runs: Set(0),
            admin_seats_taken: Set(0),
        })
        .exec_without_returning(&self.db)
        .await?;
        Ok(BeganImport::Upload(ImportUpload {
            domain: self.clone(),
            job_id: id,
            organisation_id: spec.organisation_id,
            request_id: spec.request_id,
            next_seq: 0,
            bytes: 0,
            sniffer: format::EncodingSniffer::default(),
            alive_at: now,
            settled: false,
        }))
    }

    /// Refuses a new job while the organisation has its most open ones
    /// (UPLOADING, QUEUED or RUNNING; `uploading`, the job being queued, not
    /// counted). Checked when an upload starts, so a full queue is told
    /// before the file is sent, and again, under the organisation's lock,
    /// when it is queued. Uploads count: otherwise any number could be
    /// stored at once, each up to the file limit, and all but the last
    /// few refused only when finished.
    async fn ensure_import_slot(
        &self,
        db: &impl sea_orm::ConnectionTrait,
        organisation_id: Uuid,
        uploading: Option<Uuid>,
    ) -> DomainResult<()> {
        let mut open = import_job::Entity::find()
            .filter(import_job::Column::OrganisationId.eq(organisation_id))
            .filter(import_job::Column::State.is_in([
                ImportState::Uploading.as_str(),
                ImportState::Queued.as_str(),
                ImportState::Running.as_str(),
            ]));
        if let Some(job) = uploading {
            open = open.filter(import_job::Column::Id.ne(job));
        }
        let open = open.count(db).await?;
        let max = self.settings.imports.max_open_per_organisation;
        if open >= max {
            return Err(DomainError::FailedPrecondition {
                reason: Reason::ImportsQueueFull,
                message: format!(
                    "the organisation already has {open} imports uploading, queued or running, the most allowed; wait for one to finish or cancel one"
                ),
                metadata: vec![("max_open_imports".into(), max.to_string())],
            });
        }
        Ok(())
    }

    async fn import_job_row(&self, id: Uuid) -> DomainResult<import_job::Model> {
        self.import_job_row_in(&self.db, id).await
    }

    /// [`Self::import_job_row`] over `db` (a transaction that wrote it).
    async fn import_job_row_in(&self, db: &impl sea_orm::ConnectionTrait, id: Uuid) -> DomainResult<import_job::Model> {
        import_job::Entity::find_by_id(id)
            .filter(import_job::Column::State.ne(ImportState::Uploading.as_str()))
            .one(db)
            .await?
            .ok_or_else(|| DomainError::not_found("import", id))
    }

    /// A job the caller may read: its organisation's user administrators
    /// and organisation administrators. Outside the organisation (operators
    /// included: they import nothing) a job reads as missing, so ids cannot
    /// be probed; inside it, a member without the right is refused.
    async fn readable_import(&self, caller: &Caller, id: Uuid) -> DomainResult<import_job::Model> {
        let row = self.import_job_row(id).await?;
        if caller.organisation_id() != Some(row.organisation_id) {
            return Err(DomainError::not_found("import", id));
        }
        authorize(caller, Action::ReadImports, Target::organisation(row.organisation_id))?;
        Ok(row)
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn get_import(&self, caller: &Caller, id: Uuid) -> DomainResult<ImportJob> {
        job_from_row(self.readable_import(caller, id).await?)
    }

    /// An organisation's jobs, newest first.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_imports(
        &self,
        caller: &Caller,
        organisation_id: Uuid,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<ImportJob>> {
        authorize(caller, Action::ReadImports, Target::organisation(organisation_id))?;
        let limit = paging::page_size(page_size, 50, 500)?;
        let list = format!("imports:{organisation_id}");
        let query = import_job::Entity::find()
            .filter(import_job::Column::OrganisationId.eq(organisation_id))
            .filter(import_job::Column::State.ne(ImportState::Uploading.as_str()));
        let (rows, next) = paging::keyset(
            &self.db,
            query,
            import_job::Column::Id,
            paging::Order::Descending,
            &list,
            page_token,
            limit,
            |r| r.id,
        )
        .await?;
        Ok(Page {
            items: rows.into_iter().map(job_from_row).collect::<DomainResult<_>>()?,
            next_page_token: next,
        })
    }

    /// The job's row problems and notices in file order, a page at a time.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_import_errors(
        &self,
        caller: &Caller,
        id: Uuid,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<ImportRowError>> {
        self.readable_import(caller, id).await?;
        let limit = paging::page_size(page_size, 100, 1000)?;
        let list = format!("import-errors:{id}");
        let after = paging::decode_key(&list, page_token, |key| {
            let (row, column) = key.split_once(':')?;
            Some((row.parse::<i64>().ok()?, column.to_owned()))
        })?;
        let mut query = import_error::Entity::find()
            .filter(import_error::Column::JobId.eq(id))
            .order_by_asc(import_error::Column::FileRow)
            .order_by_asc(import_error::Column::ColumnName);
        if let Some((row, column)) = after {
            query = query.filter(
                Expr::col(import_error::Column::FileRow)
                    .gt(row)
                    .or(Expr::col(import_error::Column::FileRow)
                        .eq(row)
                        .and(Expr::col(import_error::Column::ColumnName).gt(column))),
            );
        }
        let mut rows = query.limit(limit + 1).all(&self.db).await?;
        let next = (rows.len() as u64 > limit).then(|| {
            rows.truncate(limit as usize);
            let last = &rows[rows.len() - 1];
            paging::encode_key(&list, &format!("{}:{}", last.file_row, last.column_name))
        });
        Ok(Page {
            items: rows.into_iter().map(row_error_from_row).collect(),
            next_page_token: next,
        })
    }

    /// A piece of the job's report: its row problems as a CSV file for
    /// Excel (row, column, reason, message, applied; every cell neutralised
    /// against formulas), [`REPORT_PIECE_ROWS`] problems at a time after
    /// `after` (none: the first piece, with the byte-order mark and the
    /// header), with where the next piece starts (none: this is the last).
    /// A million bad rows are a report of some hundred megabytes: read
    /// whole, it could take the service's memory.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn import_report_piece(
        &self,
        caller: &Caller,
        id: Uuid,
        after: Option<ReportCursor>,
    ) -> DomainResult<(Vec<u8>, Option<ReportCursor>)> {
        let job = self.readable_import(caller, id).await?;
        let language: Language = user::Entity::find_by_id(job.requester_id)
            .one(&self.db)
            .await?
            .map(|u| parse(&u.language))
            .transpose()?
            .unwrap_or(Language::Da);
        let header = match language {
            Language::Da => ["Række", "Kolonne", "Årsag", "Besked", "Udført"],
            Language::Sv => ["Rad", "Kolumn", "Orsak", "Meddelande", "Utförd"],
            Language::En => ["Row", "Column", "Reason", "Message", "Applied"],
        };
        let (yes, no) = match language {
            Language::Da => ("ja", "nej"),
            Language::Sv => ("ja", "nej"),
            Language::En => ("yes", "no"),
        };
        let mut query = import_error::Entity::find()
            .filter(import_error::Column::JobId.eq(id))
            .order_by_asc(import_error::Column::FileRow)
            .order_by_asc(import_error::Column::ColumnName);
        if let Some(ReportCursor { row, column }) = &after {
            query = query.filter(
                Expr::col(import_error::Column::FileRow)
                    .gt(*row)
                    .or(Expr::col(import_error::Column::FileRow)
                        .eq(*row)
                        .and(Expr::col(import_error::Column::ColumnName).gt(column.clone()))),
            );
        }
        let errors = query.limit(REPORT_PIECE_ROWS).all(&self.db).await?;
        let next = (errors.len() as u64 == REPORT_PIECE_ROWS).then(|| {
            let last = &errors[errors.len() - 1];
            ReportCursor {
                row: last.file_row,
                column: last.column_name.clone(),
            }
        });
        let header = after.is_none().then(|| header.iter().map(|h| h.to_string()).collect());
        let rows = header.into_iter().chain(errors.into_iter().map(|e| {
            let e = row_error_from_row(e);
            vec![
                e.row.to_string(),
                e.column,
                e.reason,
                e.message,
                if e.applied { yes } else { no }.to_owned(),
            ]
        }));
        let mut piece = format::excel_csv(rows);
        if after.is_some() {
            // One byte-order mark, at the start of the file.
            piece.drain(..3);
        }
        Ok((piece, next))
    }

    /// Stops a job: a queued one at once, a running one between two
    /// batches (rows applied so far stay).
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn cancel_import(&self, caller: &Caller, id: Uuid) -> DomainResult<ImportJob> {
        let row = self.readable_import(caller, id).await?;
        authorize(
            caller,
            import_action(parse(&row.kind)?),
            Target::organisation(row.organisation_id),
        )?;
        let now = now_millis();
        // A queued job ends here, so its requester is told here, as the
        // worker tells them of a running one it ends.
        let txn = crate::persistence::begin_write(&self.db).await?;
        let queued = import_job::Entity::update_many()
            .col_expr(import_job::Column::State, Expr::value(ImportState::Cancelled.as_str()))
            .col_expr(import_job::Column::CancelRequested, Expr::value(true))
            .col_expr(import_job::Column::FinishedAt, Expr::value(now))
            .col_expr(import_job::Column::UpdatedAt, Expr::value(now))
            .filter(import_job::Column::Id.eq(id))
            .filter(import_job::Column::State.eq(ImportState::Queued.as_str()))
            .exec(&txn)
            .await?;
        if queued.rows_affected == 1 {
            self.tell_requester_import_ended_in(&txn, id).await?;
        }
        txn.commit().await?;
        if queued.rows_affected == 0 {
            let running = import_job::Entity::update_many()
                .col_expr(import_job::Column::CancelRequested, Expr::value(true))
                .col_expr(import_job::Column::UpdatedAt, Expr::value(now))
                .filter(import_job::Column::Id.eq(id))
                .filter(import_job::Column::State.eq(ImportState::Running.as_str()))
                .exec(&self.db)
                .await?;
            if running.rows_affected == 0 {
                return Err(DomainError::precondition(
                    Reason::ImportFinished,
                    "the import has already finished; nothing to cancel",
                ));
            }
        }
        job_from_row(self.import_job_row(id).await?)
    }

    /// R-BULK-4: one activation mail per CPR user waiting for activation;
    /// users without a CPR number are listed back (each needs a code of
    /// their own), others skipped. Users come by id or as every user an
    /// import job created.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn batch_send_activation(
        &self,
        caller: &Caller,
        organisation_id: Uuid,
        user_ids: Vec<Uuid>,
        import_id: Option<Uuid>,
    ) -> DomainResult<BatchActivation> {
        authorize(caller, Action::ImportUsers, Target::organisation(organisation_id))?;
        let ids = match import_id {
            Some(job_id) => {
                if !user_ids.is_empty() {
                    return Err(DomainError::invalid(
                        "user_ids",
                        "give user ids or an import id, not both",
                    ));
                }
                let job = self.readable_import(caller, job_id).await?;
                if job.organisation_id != organisation_id {
                    return Err(DomainError::not_found("import", job_id));
                }
                import_created_user::Entity::find()
                    .filter(import_created_user::Column::JobId.eq(job_id))
                    .order_by_asc(import_created_user::Column::UserId)
                    .all(&self.db)
                    .await?
                    .into_iter()
                    .map(|r| r.user_id)
                    .collect()
            }
            None if user_ids.is_empty() => {
                return Err(DomainError::invalid(
                    "user_ids",
                    "give at least one user id or an import id",
                ));
            }
            None if user_ids.len() > 1000 => {
                return Err(DomainError::invalid("user_ids", "at most 1000 users per call"));
            }
            None => user_ids,
        };
        // One link per person: a repeated id would mail twice, and the
        // second link would end the first.
        let mut seen = std::collections::HashSet::new();
        let ids: Vec<Uuid> = ids.into_iter().filter(|id| seen.insert(*id)).collect();
        let mut outcome = BatchActivation::default();
        for chunk in ids.chunks(500) {
            let txn = crate::persistence::begin_write(&self.db).await?;
            // Locked, as for one link (SendActivation): activations and
            // deletions lock it too, so the states read below hold until
            // the links are written; read unlocked, a user activated or
            // deleted meanwhile was mailed a link that could not work.
            let org = crate::services::lock_organisation(&txn, organisation_id).await?;
            // The caller as they are under the lock, as SendActivation
            // checks them: as authenticated (cached), a demoted
            // administrator's batch that waited for the lock still mailed
            // administrators their links.
            let caller_now = crate::services::access::caller_as_now(self, &txn, caller).await?;
            authorize(&caller_now, Action::ImportUsers, Target::organisation(organisation_id))?;
            // R-AUTH-1, as for one link (SendActivation): an administrator's
            // link, or that of a person who delegates, is sent only by
            // someone who may change roles; whoever else sent it could
            // activate them.
            let sends_any = caller_now.is_operator()
                || authorize(&caller_now, Action::ChangeRoles, Target::organisation(organisation_id)).is_ok();
            let rows = user::Entity::find()
                .filter(user::Column::Id.is_in(chunk.to_vec()))
                .filter(user::Column::OrganisationId.eq(organisation_id))
                .all(&txn)
                .await?;
            let found: std::collections::HashMap<Uuid, user::Model> = rows.into_iter().map(|r| (r.id, r)).collect();
            let (roles, delegating) = if sends_any {
                Default::default()
            } else {
                let rows: Vec<&user::Model> = found.values().collect();
                (
                    crate::services::users::roles_of(&txn, chunk).await?,
                    crate::services::access::delegating_among(self, &txn, organisation_id, &rows).await?,
                )
            };
            let on_its_way = links_on_their_way(&txn, chunk).await?;
            // Profiles re-created for anonymity activate by link, like
            // SendActivation's, though they have no CPR number.
            let without_cpr: Vec<Uuid> = found.values().filter(|r| r.cpr_hash.is_none()).map(|r| r.id).collect();
            let recreated = crate::services::anonymity::recreated_for_anonymity_among(&txn, &without_cpr).await?;
            for id in chunk {
                let Some(row) = found.get(id) else {
                    outcome.skipped.push(*id);
                    continue;
                };
                if parse::<UserState>(&row.state)? != UserState::PendingActivation {
                    outcome.skipped.push(*id);
                } else if !sends_any
                    && (roles.get(id).is_some_and(|r| r.iter().any(|r| r.is_administrator()))
                        || delegating.contains(id))
                {
                    outcome.needs_administrator.push(*id);
                } else if row.cpr_hash.is_none() && !recreated.contains(id) {
                    outcome.needs_code.push(*id);
                } else if on_its_way.contains(id) {
                    outcome.queued.push(*id);
                } else {
                    self.send_activation_link_in(&txn, caller, row, &org.name).await?;
                    outcome.queued.push(*id);
                }
            }
            txn.commit().await?;
        }
        Ok(outcome)
    }
}

/// How long an activation link a batch (or anyone) sent stays the one a
/// batch leaves alone (`links_on_their_way`).
pub const BATCH_LINK_INTERVAL_MS: Millis = 10 * 60 * 1000;

/// The users of `ids` mailed an activation link in the last
/// [`BATCH_LINK_INTERVAL_MS`] that is still live. A batch commits piece by
/// piece: when its caller's deadline passes and the caller retries, the
/// people of the pieces done were mailed again, each new link ending the
/// one they had just received. Now a batch counts them as queued and sends
/// nothing; SendActivation still replaces a link at once.
async fn links_on_their_way(
    txn: &sea_orm::DatabaseTransaction,
    ids: &[Uuid],
) -> DomainResult<std::collections::HashSet<Uuid>> {
    use crate::persistence::entities::activation_secret;
    let now = now_millis();
    let users: Vec<Uuid> = activation_secret::Entity::find()
        .select_only()
        .column(activation_secret::Column::UserId)
        .filter(activation_secret::Column::UserId.is_in(ids.to_vec()))
        .filter(activation_secret::Column::Kind.eq(crate::services::activation::KIND_LINK))
        .filter(activation_secret::Column::UsedAt.is_null())
        .filter(activation_secret::Column::RevokedAt.is_null())
        .filter(activation_secret::Column::ExpiresAt.gt(now))
        .filter(activation_secret::Column::CreatedAt.gt(now - BATCH_LINK_INTERVAL_MS))
        .into_tuple()
        .all(txn)
        .await?;
    Ok(users.into_iter().collect())
}

/// The one refusal of an upload's pieces (too large, or none at all).
fn bad_chunk(description: String) -> DomainError {
    DomainError::invalid("chunk", description)
}

fn row_error_from_row(row: import_error::Model) -> ImportRowError {
    let applied = row.reason == DEACTIVATED_NOT_DELETED;
    ImportRowError {
        row: row.file_row,
        column: row.column_name,
        reason: row.reason,
        message: row.message,
        applied,
    }
}

impl ImportUpload {
    pub fn job_id(&self) -> Uuid {
        self.job_id
    }

    /// Stores the next piece of the file, sealed: the file holds CPR
    /// numbers and is kept for days (R-USR-9).
    pub async fn push(&mut self, bytes: &[u8]) -> DomainResult<()> {
        if bytes.len() > MAX_CHUNK_BYTES {
            return Err(bad_chunk(format!(
                "must be at most {MAX_CHUNK_BYTES} bytes (1 MiB) per message"
            )));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.bytes += bytes.len() as i64;
        let max = self.domain.settings.imports.max_file_bytes;
        if self.bytes > max {
            return Err(DomainError::FailedPrecondition {
                reason: Reason::ImportTooLarge,
                message: format!("the file is larger than the {max} bytes an import may have"),
                metadata: vec![("max_file_bytes".into(), max.to_string())],
            });
        }
        self.sniffer.push(bytes);
        self.keep_alive().await?;
        import_chunk::Entity::insert(import_chunk::ActiveModel {
            job_id: Set(self.job_id),
            seq: Set(self.next_seq),
            data: Set(self
                .domain
                .vault
                .seal_bytes(bytes, &chunk_context(self.job_id, self.next_seq))),
            sealed: Set(true),
        })
        .exec_without_returning(&self.domain.db)
        .await?;
        self.next_seq += 1;
        Ok(())
    }

    /// A long upload says now and then that it is alive, so the purge of
    /// abandoned uploads (idle for `upload_idle_ms`) leaves it alone: a
    /// quarter of that apart, one UPDATE, not one per piece. An upload the
    /// purge took meanwhile stops here, instead of storing pieces nobody
    /// will read.
    async fn keep_alive(&mut self) -> DomainResult<()> {
        let now = now_millis();
        if now - self.alive_at < self.domain.settings.imports.upload_idle_ms / 4 {
            return Ok(());
        }
        let touched = import_job::Entity::update_many()
            .col_expr(import_job::Column::UpdatedAt, Expr::value(now))
            .filter(import_job::Column::Id.eq(self.job_id))
            .filter(import_job::Column::State.eq(ImportState::Uploading.as_str()))
            .exec(&self.domain.db)
            .await?;
        if touched.rows_affected != 1 {
            return Err(upload_abandoned());
        }
        self.alive_at = now;
        Ok(())
    }

    /// The whole file arrived: the job is queued and returned.
    pub async fn finish(mut self) -> DomainResult<ImportJob> {
        let done = self.queue().await;
        // A failure that discarded nothing (the database gone a moment)
        // leaves the upload for `drop` to discard.
        self.settled = done.is_ok();
        done
    }

    /// `finish`'s work: queues the job, or refuses it and discards the
    /// upload; an error of the database may leave it as it was.
    async fn queue(&mut self) -> DomainResult<ImportJob> {
        if self.bytes == 0 {
            let domain = self.domain.clone();
            let job_id = self.job_id;
            domain.discard_upload(job_id, None).await?;
            return Err(bad_chunk("the file is empty: send its bytes after the spec".into()));
        }
        let domain = self.domain.clone();
        let encoding = match std::mem::take(&mut self.sniffer).finish() {
            Ok(encoding) => encoding,
            Err(rule) => {
                domain.discard_upload(self.job_id, None).await?;
                return Err(bad_chunk(format!("the file {rule}")));
            }
        };
        let txn = crate::persistence::begin_write(&domain.db).await?;
        // Checked again at the end, under the organisation's lock: uploads
        // of one organisation may overlap, and two finishing at once must
        // not both take the last place.
        crate::services::lock_organisation(&txn, self.organisation_id).await?;
        if let Err(full) = domain
            .ensure_import_slot(&txn, self.organisation_id, Some(self.job_id))
            .await
        {
            drop(txn);
            domain.discard_upload(self.job_id, None).await?;
            return Err(full);
        }
        let now = now_millis();
        let queued = import_job::Entity::update_many()
            .col_expr(import_job::Column::State, Expr::value(ImportState::Queued.as_str()))
            .col_expr(import_job::Column::FileBytes, Expr::value(self.bytes))
            .col_expr(import_job::Column::Encoding, Expr::value(encoding.as_str()))
            .col_expr(import_job::Column::RequestId, Expr::value(self.request_id.clone()))
            .col_expr(import_job::Column::UpdatedAt, Expr::value(now))
            .filter(import_job::Column::Id.eq(self.job_id))
            .filter(import_job::Column::State.eq(ImportState::Uploading.as_str()))
            .exec(&txn)
            .await;
        match queued {
            // The job as this call queued it, read before the commit: read
            // after, a worker could already have claimed it (the reply then
            // said RUNNING, or SUCCEEDED, to the call that queued it).
            Ok(done) if done.rows_affected == 1 => {
                let queued = domain.import_job_row_in(&txn, self.job_id).await?;
                txn.commit().await?;
                job_from_row(queued)
            }
            // The purge took it as abandoned meanwhile (see `keep_alive`).
            Ok(_) => Err(upload_abandoned()),
            Err(e) if crate::error::is_unique_violation(&e) => {
                // A retry with the same request id finished first: its job
                // is the answer; this upload is dropped.
                drop(txn);
                // Still UPLOADING (its own update was rolled back): read
                // whatever its state, as `import_job_row` would not.
                let own = import_job::Entity::find_by_id(self.job_id)
                    .one(&domain.db)
                    .await?
                    .ok_or_else(|| DomainError::not_found("import", self.job_id))?;
                domain.discard_upload(self.job_id, None).await?;
                let request_id = self.request_id.take().unwrap_or_default();
                let existing = import_job::Entity::find()
                    .filter(import_job::Column::OrganisationId.eq(self.organisation_id))
                    .filter(import_job::Column::RequestId.eq(request_id))
                    .one(&domain.db)
                    .await?
                    .ok_or_else(|| DomainError::Internal("the import with this request id vanished".into()))?;
                crate::services::ensure_same_request(
                    Some(&import_request_of(&existing)),
                    &import_request_of(&own),
                    "import",
                )?;
                job_from_row(existing)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The upload was abandoned (the client went away, or a limit refused it).
    pub async fn abandon(mut self) -> DomainResult<()> {
        let done = self.domain.discard_upload(self.job_id, None).await.map(drop);
        self.settled = done.is_ok();
        done
    }
}

impl Domain {
    /// Deletes the upload `job_id` and its pieces; with `idle_since`, only
    /// if it has said nothing since (the purge of abandoned uploads).
    pub(super) async fn discard_upload(&self, job_id: Uuid, idle_since: Option<Millis>) -> DomainResult<bool> {
        let txn = crate::persistence::begin_write(&self.db).await?;
        // The job first, and its pieces only if it was still an upload: an
        // upload that finished meanwhile (the purge read it as idle just
        // before) keeps its file. And one that spoke meanwhile (a piece's
        // keep-alive) is not idle: deleted, it lost the pieces it had just
        // stored, and the ones after them were stored for no job.
        let mut discarded = import_job::Entity::delete_many()
            .filter(import_job::Column::Id.eq(job_id))
            .filter(import_job::Column::State.eq(ImportState::Uploading.as_str()));
        if let Some(idle_since) = idle_since {
            discarded = discarded.filter(import_job::Column::UpdatedAt.lte(idle_since));
        }
        let discarded = discarded.exec(&txn).await?;
        if discarded.rows_affected == 1 {
            import_chunk::Entity::delete_many()
                .filter(import_chunk::Column::JobId.eq(job_id))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(discarded.rows_affected == 1)
    }
}

/// What a sealed piece of an import file is bound to: its job and place,
/// so a piece opens only where it was stored.
pub(crate) fn chunk_context(job_id: Uuid, seq: i32) -> Vec<u8> {
    let mut context = job_id.as_bytes().to_vec();
    context.extend(seq.to_be_bytes());
    context
}

/// What an import's request id stands for (AIP-155): who uploaded what
/// kind of file, named how, and whether only to check it. A retry sends the
/// same; the same id with another of these (a real run after a check, a
/// DELETE under a CREATE's id, another person's upload) is another request,
/// which must not be answered with the first one's job. The file's bytes
/// are not compared (they arrive after the answer is decided).
fn import_request(kind: &str, validate_only: bool, file_name: &str, requester_id: Uuid) -> String {
    format!("{kind}|{validate_only}|{requester_id}|{file_name}")
}

fn import_request_of(job: &import_job::Model) -> String {
    import_request(&job.kind, job.validate_only, &job.file_name, job.requester_id)
}
