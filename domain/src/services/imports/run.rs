//! The worker's side of an import (R-BULK-3): claim a job, read its file
//! from the database in pieces, and apply it in batches. Each batch is one
//! transaction that also moves the job's checkpoint, so a worker killed at
//! any moment leaves either a whole batch or none of it, and the next worker
//! starts after the last batch committed. New users of a batch are created
//! together (`create_users_in`: the rules of CreateUser, in few
//! statements); every edit or delete row runs in a savepoint of the
//! batch's transaction, so a refused row rolls back alone.

use std::collections::HashMap;

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tracing::instrument;
use uuid::Uuid;

use super::format::{Column, MAX_CELLS, MAX_RECORD_BYTES, Next, RecordReader, check_header};
use super::rows::{CellError, RowOp, Units, UserRef, read_row, row_errors, unique_keys};
use super::*;
use crate::mail::MailKind;
use crate::persistence::entities::organisation;
use crate::persistence::is_postgres;
use crate::services::activation::member_caller;
use crate::services::notifications::NotificationKind;
use crate::services::users::roles_of;

/// How a row ended.
const REQUESTER_CANNOT_ACT: &str = "the person who started the import can no longer act (deactivated, deleted or without the rights); rows not yet applied were left";

/// A row after one that took the requester's own right to import.
fn requester_cannot_act() -> CellError {
    CellError::new(
        None,
        Reason::ImportRequesterCannotAct,
        "an earlier row of this file took the right to import from the person who started it; this row was left",
    )
}

enum Outcome {
    Applied {
        /// The user the row created or changed.
        user: Uuid,
        created: bool,
        notice: Option<CellError>,
    },
    Skipped,
    Failed(Vec<CellError>),
}

/// The file's pieces, fetched one at a time and opened.
struct Chunks {
    job_id: Uuid,
    next_seq: i32,
    vault: crate::secrets::CprVault,
}

impl Chunks {
    async fn next(&mut self, db: &impl ConnectionTrait) -> DomainResult<Option<Vec<u8>>> {
        let seq = self.next_seq;
        let chunk = import_chunk::Entity::find_by_id((self.job_id, seq)).one(db).await?;
        self.next_seq += 1;
        let Some(chunk) = chunk else { return Ok(None) };
        if !chunk.sealed {
            return Ok(Some(chunk.data));
        }
        self.vault
            .open_bytes(&chunk.data, &super::chunk_context(self.job_id, seq))
            .map(Some)
    }
}

/// The file as records, pulled through the incremental reader.
struct Records {
    reader: RecordReader,
    chunks: Chunks,
}

impl Records {
    fn new(job: &import_job::Model, vault: &crate::secrets::CprVault) -> DomainResult<Self> {
        let encoding: FileEncoding = parse(job.encoding.as_deref().unwrap_or("UTF8"))?;
        Ok(Self {
            reader: RecordReader::new(encoding),
            chunks: Chunks {
                job_id: job.id,
                next_seq: 0,
                vault: vault.clone(),
            },
        })
    }

    /// The next record and its row number, or `None` at the end.
    async fn next(&mut self, db: &impl ConnectionTrait) -> DomainResult<Option<(i64, Vec<String>)>> {
        loop {
            match self.reader.next_record() {
                Next::Record(cells) => return Ok(Some((self.reader.row(), cells))),
                Next::NeedInput => match self.chunks.next(db).await? {
                    Some(bytes) => self.reader.push(&bytes),
                    None => self.reader.finish(),
                },
                Next::End => return Ok(None),
                Next::TooLong => {
                    return Err(DomainError::precondition(
                        Reason::ImportTooLarge,
                        format!(
                            "the row after row {} is longer than {} KiB or has more than {} cells (an import row has {} columns; a quote left open runs on to the end of the file)",
                            self.reader.row(),
                            MAX_RECORD_BYTES / 1024,
                            MAX_CELLS,
                            Column::ALL.len(),
                        ),
                    ));
                }
            }
        }
    }
}

/// What the first pass over a file learnt.
struct Scan {
    /// Data rows (the header not counted).
    rows: i64,
    /// Per unique value: the first two rows that hold it and how many do.
    seen: HashMap<u64, (u32, u32, u32)>,
}

impl Scan {
    /// The row's values that another row of the file also holds.
    fn duplicates(&self, kind: ImportKind, row: i64, cells: &[String]) -> Vec<CellError> {
        unique_keys(kind, cells)
            .into_iter()
            .filter_map(|(column, key)| {
                let (first, second, count) = *self.seen.get(&key)?;
                if count < 2 {
                    return None;
                }
                let other = if i64::from(first) == row { second } else { first };
                let more = if count > 2 {
                    format!(" and {} more rows", count - 2)
                } else {
                    String::new()
                };
                Some(CellError::new(
                    Some(column),
                    Reason::DuplicateInFile,
                    format!(
                        "row {other}{more} of this file has the same {}; neither row is applied, correct the file",
                        column.key()
                    ),
                ))
            })
            .collect()
    }
}

/// Why a job cannot go on.
struct JobFailure {
    reason: Reason,
    message: String,
}

/// An import job this worker now holds.
#[derive(Debug, Clone)]
pub struct ClaimedImport {
    pub id: Uuid,
    /// The W3C traceparent of the CreateImport call, for the run's span.
    pub traceparent: Option<String>,
}

/// Runs in a row that may end in an error before the job ends FAILED.
const MAX_FAILED_RUNS: i32 = 5;

impl Domain {
    /// Claims the oldest queued job, or a running one whose worker's lease
    /// ran out. On PostgreSQL `FOR UPDATE SKIP LOCKED` lets several workers
    /// claim at once without waiting on each other.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn claim_import(&self, worker: &str) -> DomainResult<Option<ClaimedImport>> {
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let mut query = import_job::Entity::find()
            .select_only()
            .column(import_job::Column::Id)
            .column(import_job::Column::TraceContext)
            .filter(
                Expr::col(import_job::Column::State)
                    .eq(ImportState::Queued.as_str())
                    .or(Expr::col(import_job::Column::State)
                        .eq(ImportState::Running.as_str())
                        .and(Expr::col(import_job::Column::LeaseUntil).lt(now))),
            )
            .order_by_asc(import_job::Column::CreatedAt)
            .limit(1);
        if is_postgres(&txn) {
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let Some((id, traceparent)) = query.into_tuple::<(Uuid, Option<String>)>().one(&txn).await? else {
            txn.commit().await?;
            return Ok(None);
        };
        import_job::Entity::update_many()
            .col_expr(import_job::Column::State, Expr::value(ImportState::Running.as_str()))
            .col_expr(import_job::Column::ClaimedBy, Expr::value(worker))
            .col_expr(
                import_job::Column::LeaseUntil,
                Expr::value(now + self.settings.imports.lease_ms),
            )
            .col_expr(
                import_job::Column::StartedAt,
                Expr::col(import_job::Column::StartedAt).if_null(now),
            )
            .col_expr(import_job::Column::UpdatedAt, Expr::value(now))
            .filter(import_job::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        tracing::info!(import = %id, worker, "import claimed");
        crate::metrics::job_claimed("import", 1);
        Ok(Some(ClaimedImport { id, traceparent }))
    }

    /// Runs a claimed job until it ends, its claim is lost, or `stop` says
    /// so (then the claim is handed back and another worker, or this one
    /// later, resumes after the last checkpoint).
    ///
    /// A run that ends in an error is counted, unless the error says the
    /// database was busy or away for a while (a lock wait, an outage: the
    /// job is not at fault, and resumes after its lease as often as it
    /// takes). After `MAX_FAILED_RUNS` counted runs in a row (none moved the
    /// checkpoint) the job ends FAILED (IMPORT_RUN_FAILED), the error in its
    /// message, instead of being retried for ever, holding one of its
    /// organisation's places; that run answers `Ok`, as the job has ended.
    #[instrument(level = "debug", skip_all, fields(import = %job_id), err(level = "debug"))]
    pub async fn run_import(&self, job_id: Uuid, worker: &str, stop: &(dyn Fn() -> bool + Sync)) -> DomainResult<()> {
        let error = match self.run_import_once(job_id, worker, stop).await {
            Ok(()) => return Ok(()),
            Err(error @ (DomainError::Unavailable { .. } | DomainError::RateLimited { .. })) => return Err(error),
            Err(error) => error,
        };
        match self.count_failed_run(job_id, worker, &error).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(error),
            Err(counting) => {
                tracing::warn!(import = %job_id, error = %counting, "could not count a failed import run");
                Err(error)
            }
        }
    }

    /// Counts a run that ended in `error`; the last one allowed ends the
    /// job (then `true`), as does a cancel its requester asked for.
    async fn count_failed_run(&self, job_id: Uuid, worker: &str, error: &DomainError) -> DomainResult<bool> {
        let counted = import_job::Entity::update_many()
            .col_expr(
                import_job::Column::FailedRuns,
                Expr::col(import_job::Column::FailedRuns).add(1),
            )
            .filter(import_job::Column::Id.eq(job_id))
            .filter(import_job::Column::ClaimedBy.eq(worker))
            .filter(import_job::Column::State.eq(ImportState::Running.as_str()))
            .exec_with_returning(&self.db)
            .await?;
        let Some(job) = counted.into_iter().next() else {
            return Ok(false);
        };
        // Its requester asked to cancel it: that is how it ends, now,
        // whatever keeps its runs from getting to the cancel.
        if job.cancel_requested {
            self.end_import(&job, worker, ImportState::Cancelled, None).await?;
            return Ok(true);
        }
        if job.failed_runs < MAX_FAILED_RUNS {
            return Ok(false);
        }
        // The requester reads this message: an internal error's detail
        // (a table, a statement, a value) goes to the log only, as
        // `to_status` keeps it from a caller.
        let last = match error {
            DomainError::Internal(_) => "an internal error; the worker's log has its details".to_owned(),
            other => other.to_string(),
        };
        let failure = JobFailure {
            reason: Reason::ImportRunFailed,
            message: format!(
                "the import stopped with an error {MAX_FAILED_RUNS} times in a row without getting further (last: {last}); rows done so far stay done"
            ),
        };
        tracing::warn!(import = %job_id, %error, "an import failed {MAX_FAILED_RUNS} runs in a row; it ends FAILED");
        self.end_import(&job, worker, ImportState::Failed, Some(failure))
            .await?;
        Ok(true)
    }

    async fn run_import_once(&self, job_id: Uuid, worker: &str, stop: &(dyn Fn() -> bool + Sync)) -> DomainResult<()> {
        let job = self.claimed_job(job_id, worker).await?;
        let Some(job) = job else { return Ok(()) };
        let kind: ImportKind = parse(&job.kind)?;
        let scan = match self.scan_import(&job).await? {
            Ok(scan) => scan,
            Err(failure) => return self.end_import(&job, worker, ImportState::Failed, Some(failure)).await,
        };
        if job.rows != Some(scan.rows) {
            import_job::Entity::update_many()
                .col_expr(import_job::Column::Rows, Expr::value(scan.rows))
                .filter(import_job::Column::Id.eq(job.id))
                .exec(&self.db)
                .await?;
        }
        let units = self.import_units(job.organisation_id).await?;
        let mut records = Records::new(&job, &self.vault)?;
        // The header, then the rows earlier batches did.
        records.next(&self.db).await?;
        for _ in 0..job.processed {
            if records.next(&self.db).await?.is_none() {
                break;
            }
        }
        let mut processed = job.processed;
        let creates = matches!(kind, ImportKind::Create | ImportKind::LegacyCreate);
        let batch_size = if creates {
            self.settings.imports.create_batch_size
        } else {
            self.settings.imports.batch_size
        };
        // When to tell PostgreSQL's planner how many users there now are:
        // after the first batch, then each time this run has made four
        // times as many.
        let mut analyse_at = batch_size as i64;
        loop {
            let mut batch = Vec::with_capacity(batch_size);
            while batch.len() < batch_size {
                match records.next(&self.db).await? {
                    Some(record) => batch.push(record),
                    None => break,
                }
            }
            if batch.is_empty() {
                return self.end_import(&job, worker, ImportState::Succeeded, None).await;
            }
            let Some(current) = self.claimed_job(job.id, worker).await? else {
                return Ok(());
            };
            if current.cancel_requested {
                return self.end_import(&job, worker, ImportState::Cancelled, None).await;
            }
            if stop() {
                self.release_import(job.id, worker).await?;
                return Ok(());
            }
            let Some(caller) = self.requester(&self.db, &job).await? else {
                let failure = JobFailure {
                    reason: Reason::ImportRequesterCannotAct,
                    message: REQUESTER_CANNOT_ACT.into(),
                };
                return self.end_import(&job, worker, ImportState::Failed, Some(failure)).await;
            };
            let done = batch.len() as i64;
            if !self
                .apply_batch(&current, kind, &caller, &scan, &units, batch, worker, processed)
                .await?
            {
                tracing::warn!(import = %job.id, worker, "lost the claim on the import; another worker goes on");
                return Ok(());
            }
            // Edit and delete rows change who may act (state, roles), as
            // UpdateUser and DeleteUser do: cached callers are read again.
            if !creates {
                self.auth_cache.clear();
            }
            processed += done;
            if creates && processed - job.processed >= analyse_at {
                self.analyse_users().await?;
                analyse_at *= 4;
            }
        }
    }

    /// Refreshes PostgreSQL's statistics of the users table. A create
    /// import may grow it many times over within a minute, before
    /// autovacuum's next look: planned on the old statistics, a batch's
    /// uniqueness look-up (an IN list of a thousand keys) walked every
    /// user of the organisation instead of its unique index, and the job
    /// slowed as it grew (60,000 rows: 460 ms a look-up; BENCHMARKS.md).
    async fn analyse_users(&self) -> DomainResult<()> {
        if is_postgres(&self.db) {
            self.db.execute_unprepared("ANALYZE users").await?;
        }
        Ok(())
    }

    /// The job if this worker still holds it.
    async fn claimed_job(&self, id: Uuid, worker: &str) -> DomainResult<Option<import_job::Model>> {
        Ok(import_job::Entity::find_by_id(id)
            .filter(import_job::Column::ClaimedBy.eq(worker))
            .filter(import_job::Column::State.eq(ImportState::Running.as_str()))
            .one(&self.db)
            .await?)
    }

    /// Hands a claim back at shutdown so the job resumes at once elsewhere.
    async fn release_import(&self, id: Uuid, worker: &str) -> DomainResult<()> {
        import_job::Entity::update_many()
            .col_expr(import_job::Column::LeaseUntil, Expr::value(0))
            .filter(import_job::Column::Id.eq(id))
            .filter(import_job::Column::ClaimedBy.eq(worker))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The first pass: the header, the row count against the limit, and
    /// which values more than one row holds.
    async fn scan_import(&self, job: &import_job::Model) -> DomainResult<Result<Scan, JobFailure>> {
        match self.scan_records(job).await {
            // A row too long to read: the file, not this run, is at fault.
            Err(DomainError::FailedPrecondition {
                reason: Reason::ImportTooLarge,
                message,
                ..
            }) => Ok(Err(JobFailure {
                reason: Reason::ImportTooLarge,
                message,
            })),
            scanned => scanned,
        }
    }

    async fn scan_records(&self, job: &import_job::Model) -> DomainResult<Result<Scan, JobFailure>> {
        let kind: ImportKind = parse(&job.kind)?;
        let mut records = Records::new(job, &self.vault)?;
        let Some((_, header)) = records.next(&self.db).await? else {
            return Ok(Err(JobFailure {
                reason: Reason::ImportHeaderInvalid,
                message: "the file has no header row".into(),
            }));
        };
        if let Err(message) = check_header(&header) {
            return Ok(Err(JobFailure {
                reason: Reason::ImportHeaderInvalid,
                message,
            }));
        }
        let max = self.settings.imports.max_rows;
        let mut scan = Scan {
            rows: 0,
            seen: HashMap::new(),
        };
        while let Some((row, cells)) = records.next(&self.db).await? {
            scan.rows += 1;
            if scan.rows > max {
                return Ok(Err(JobFailure {
                    reason: Reason::ImportTooManyRows,
                    message: format!("the file has more than the {max} rows an import may have; split it"),
                }));
            }
            for (_, key) in unique_keys(kind, &cells) {
                let entry = scan.seen.entry(key).or_insert((row as u32, 0, 0));
                entry.2 += 1;
                if entry.2 == 2 {
                    entry.1 = row as u32;
                }
            }
        }
        // Keep only what a row can collide on.
        scan.seen.retain(|_, seen| seen.2 > 1);
        scan.seen.shrink_to_fit();
        Ok(Ok(scan))
    }

    async fn import_units(&self, organisation_id: Uuid) -> DomainResult<Units> {
        let units = self.units_of(&self.db, organisation_id).await?;
        Ok(Units {
            by_number: units
                .iter()
                .filter_map(|u| u.number.clone().map(|n| (n, u.id)))
                .collect(),
            ids: units.iter().map(|u| u.id).collect(),
        })
    }

    /// The requester as they are now (in `db`: the batch's transaction
    /// sees its own rows): rows run with their current rights.
    async fn requester(&self, db: &impl ConnectionTrait, job: &import_job::Model) -> DomainResult<Option<Caller>> {
        let Some(row) = user::Entity::find_by_id(job.requester_id).one(db).await? else {
            return Ok(None);
        };
        if !parse::<UserState>(&row.state)?.is_standing() || row.organisation_id != job.organisation_id {
            return Ok(None);
        }
        let roles = roles_of(db, &[row.id]).await?.remove(&row.id).unwrap_or_default();
        let caller = member_caller(&row, roles);
        let kind: ImportKind = parse(&job.kind)?;
        if authorize(&caller, import_action(kind), Target::organisation(job.organisation_id)).is_err() {
            return Ok(None);
        }
        Ok(Some(caller))
    }

    /// Applies one batch and moves the checkpoint, in one transaction.
    /// Under `validate_only` the rows' changes are rolled back and only the
    /// report and the counts are kept. Returns false when the claim was
    /// lost (nothing of the batch stays).
    #[allow(clippy::too_many_arguments)]
    async fn apply_batch(
        &self,
        job: &import_job::Model,
        kind: ImportKind,
        caller: &Caller,
        scan: &Scan,
        units: &Units,
        batch: Vec<(i64, Vec<String>)>,
        worker: &str,
        processed: i64,
    ) -> DomainResult<bool> {
        let txn = crate::persistence::begin_write(&self.db).await?;
        if job.validate_only && kind == ImportKind::Create {
            // Rows checked in earlier batches were rolled back: count their
            // licences as taken, so the licence rule sees what applying
            // the file would.
            organisation::Entity::update_many()
                .col_expr(
                    organisation::Column::LicencesUsed,
                    Expr::col(organisation::Column::LicencesUsed).add(job.applied),
                )
                .filter(organisation::Column::Id.eq(job.organisation_id))
                .exec(&txn)
                .await?;
        }
        let deactivate_only =
            !crate::services::deletes_profiles(&crate::services::read_organisation(&txn, job.organisation_id).await?)?;
        let (mut applied, mut failed, mut skipped) = (0i64, 0i64, 0i64);
        let mut errors: Vec<(i64, CellError)> = Vec::new();
        let mut created = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        // New users are created together, in few statements, after the
        // other rows are read: the rows' order is kept, so the licences
        // still go to the first rows of the file.
        let mut creates = Vec::new();
        // A row may change the requester themselves (give up a role,
        // deactivate or delete them): the rows after it run on what is left
        // of their rights, read again inside this batch's transaction.
        let mut requester_now = Some(caller.clone());
        for (row, cells) in batch {
            let Some(caller) = &requester_now else {
                outcomes.push((row, Outcome::Failed(vec![requester_cannot_act()])));
                continue;
            };
            let outcome = match read_row(kind, job.organisation_id, &cells, units) {
                Err(mut problems) => {
                    problems.extend(scan.duplicates(kind, row, &cells));
                    Outcome::Failed(problems)
                }
                Ok(RowOp::Empty) => Outcome::Skipped,
                Ok(op) => {
                    let duplicates = scan.duplicates(kind, row, &cells);
                    if !duplicates.is_empty() {
                        Outcome::Failed(duplicates)
                    } else if let RowOp::Create(new) = op {
                        match self.check_new_user(caller, new) {
                            Ok(checked) => {
                                creates.push((row, checked));
                                continue;
                            }
                            Err(refusal) => Outcome::Failed(row_errors(refusal)?),
                        }
                    } else {
                        self.apply_row(&txn, job, caller, op, deactivate_only).await?
                    }
                }
            };
            let changed_requester = matches!(outcome, Outcome::Applied { user, .. } if user == job.requester_id);
            outcomes.push((row, outcome));
            if changed_requester {
                requester_now = self.requester(&txn, job).await?;
            }
        }

        let (rows, checked): (Vec<i64>, Vec<_>) = creates.into_iter().unzip();
        // A check counts the administrator seats its rolled-back batches
        // took (the seat rule's own count, before and after this batch).
        let checks_admin_seats = job.validate_only && !checked.is_empty();
        let admin_seats = || crate::services::seat_holders(&txn, job.organisation_id, Role::OrganisationAdmin);
        let seats_before = if checks_admin_seats { admin_seats().await? } else { 0 };
        let admin_seats_taken_before = if job.validate_only { job.admin_seats_taken } else { 0 };
        let answers = match &requester_now {
            Some(caller) => {
                self.create_users_in(&txn, caller, checked, admin_seats_taken_before)
                    .await?
            }
            // A create batch changes no existing user, so it never gets
            // here; were it to, its rows fail as the later rows did.
            None => checked
                .iter()
                .map(|_| Err(DomainError::denied(REQUESTER_CANNOT_ACT)))
                .collect(),
        };
        let admin_seats_taken = if checks_admin_seats {
            admin_seats().await? - seats_before
        } else {
            0
        };
        for (row, answer) in rows.into_iter().zip(answers) {
            let outcome = match answer {
                Ok(user) => Outcome::Applied {
                    user: user.user.id,
                    created: true,
                    notice: None,
                },
                Err(refusal) => Outcome::Failed(row_errors(refusal)?),
            };
            outcomes.push((row, outcome));
        }
        for (row, outcome) in outcomes {
            match outcome {
                Outcome::Applied {
                    user,
                    created: was_created,
                    notice,
                } => {
                    applied += 1;
                    if was_created {
                        created.push(user);
                    }
                    errors.extend(notice.map(|n| (row, n)));
                }
                Outcome::Skipped => skipped += 1,
                Outcome::Failed(problems) => {
                    failed += 1;
                    errors.extend(problems.into_iter().map(|p| (row, p)));
                }
            }
        }
        let txn = if job.validate_only {
            txn.rollback().await?;
            created.clear();
            crate::persistence::begin_write(&self.db).await?
        } else {
            txn
        };
        let now = now_millis();
        let moved = import_job::Entity::update_many()
            .col_expr(
                import_job::Column::Processed,
                Expr::value(processed + applied + failed + skipped),
            )
            .col_expr(
                import_job::Column::Applied,
                Expr::col(import_job::Column::Applied).add(applied),
            )
            .col_expr(
                import_job::Column::Failed,
                Expr::col(import_job::Column::Failed).add(failed),
            )
            .col_expr(
                import_job::Column::Skipped,
                Expr::col(import_job::Column::Skipped).add(skipped),
            )
            .col_expr(
                import_job::Column::LeaseUntil,
                Expr::value(now + self.settings.imports.lease_ms),
            )
            .col_expr(import_job::Column::UpdatedAt, Expr::value(now))
            // The job got further: failed runs before this one no longer count.
            .col_expr(import_job::Column::FailedRuns, Expr::value(0))
            .col_expr(
                import_job::Column::AdminSeatsTaken,
                Expr::col(import_job::Column::AdminSeatsTaken).add(admin_seats_taken),
            )
            .filter(import_job::Column::Id.eq(job.id))
            .filter(import_job::Column::ClaimedBy.eq(worker))
            .filter(import_job::Column::State.eq(ImportState::Running.as_str()))
            .filter(import_job::Column::Processed.eq(processed))
            .exec(&txn)
            .await?;
        if moved.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        // One error per row and column: a row refused twice for one
        // column keeps the first reason. The report lists the first
        // `max_report_errors` (batches run in file order).
        let room = if errors.is_empty() {
            0
        } else {
            let listed = import_error::Entity::find()
                .filter(import_error::Column::JobId.eq(job.id))
                .count(&txn)
                .await?;
            usize::try_from(self.settings.imports.max_report_errors.saturating_sub(listed)).unwrap_or(usize::MAX)
        };
        let mut seen = std::collections::HashSet::new();
        let rows: Vec<import_error::ActiveModel> = errors
            .into_iter()
            .filter(|(row, e)| seen.insert((*row, e.column.map(Column::key).unwrap_or(""))))
            .take(room)
            .map(|(row, e)| import_error::ActiveModel {
                job_id: Set(job.id),
                file_row: Set(row),
                column_name: Set(e.column.map(Column::key).unwrap_or("").to_owned()),
                reason: Set(e.reason),
                message: Set(e.message),
            })
            .collect();
        crate::persistence::insert_in_chunks(&txn, rows).await?;
        let created_rows: Vec<import_created_user::ActiveModel> = created
            .into_iter()
            .map(|user_id| import_created_user::ActiveModel {
                job_id: Set(job.id),
                user_id: Set(user_id),
            })
            .collect();
        crate::persistence::insert_in_chunks(&txn, created_rows).await?;
        txn.commit().await?;
        crate::metrics::import_rows(applied as u64, failed as u64);
        Ok(true)
    }

    /// One row, in a savepoint: what the RPC refuses rolls back alone.
    async fn apply_row(
        &self,
        txn: &DatabaseTransaction,
        job: &import_job::Model,
        caller: &Caller,
        op: RowOp,
        deactivate_only: bool,
    ) -> DomainResult<Outcome> {
        let savepoint = crate::persistence::savepoint(txn).await?;
        let result = self.apply_op(&savepoint, job, caller, op, deactivate_only).await;
        match result {
            Ok(outcome @ (Outcome::Applied { .. } | Outcome::Skipped)) => {
                savepoint.commit().await?;
                Ok(outcome)
            }
            Ok(outcome) => {
                savepoint.rollback().await?;
                Ok(outcome)
            }
            Err(error) => {
                savepoint.rollback().await?;
                Ok(Outcome::Failed(row_errors(error)?))
            }
        }
    }

    async fn apply_op(
        &self,
        txn: &DatabaseTransaction,
        job: &import_job::Model,
        caller: &Caller,
        op: RowOp,
        deactivate_only: bool,
    ) -> DomainResult<Outcome> {
        match op {
            RowOp::Empty => Ok(Outcome::Skipped),
            RowOp::Create(_) => Err(DomainError::Internal(
                "a create row goes through the batch's create of many users".into(),
            )),
            RowOp::Edit(reference, patch) => {
                let row = match self
                    .find_referenced_user(txn, job.organisation_id, &reference, NewEmail::MayStandBeside)
                    .await?
                {
                    Ok(row) => row,
                    Err(problems) => return Ok(Outcome::Failed(problems)),
                };
                let updated = self.update_user_in(txn, caller, row.id, "", patch).await?;
                if updated.version == row.version {
                    Ok(Outcome::Skipped)
                } else {
                    Ok(Outcome::Applied {
                        user: row.id,
                        created: false,
                        notice: None,
                    })
                }
            }
            RowOp::Delete(reference) => {
                let row = match self
                    .find_referenced_user(txn, job.organisation_id, &reference, NewEmail::Identifies)
                    .await?
                {
                    Ok(row) => row,
                    Err(problems) => return Ok(Outcome::Failed(problems)),
                };
                if !deactivate_only {
                    self.delete_user_in(txn, caller, row.id, "").await?;
                    return Ok(Outcome::Applied {
                        user: row.id,
                        created: false,
                        notice: None,
                    });
                }
                // A delete row says the person left (R-CERT-4, "holder no
                // longer with the organisation"), whatever the policy keeps
                // of their profile: their certificates end as a deletion's
                // do (they stayed valid for years), and those they were the
                // contact person of go to their holders. So also for someone
                // already deactivated by hand, whose row is otherwise
                // skipped. Published by the worker's next look, as an
                // import's deletions are. Deactivated first: the
                // revocations then find the holder gone, as a deletion's do,
                // and tell the contact person, not the leaver.
                let now = now_millis();
                let already_out = row.state == UserState::Deactivated.as_str() && row.deactivated_until.is_none();
                if !already_out {
                    self.deactivate_user_in(
                        txn,
                        caller,
                        row.id,
                        None,
                        "bulk delete; the organisation's deletion policy is DEACTIVATE_ONLY",
                        "",
                    )
                    .await?;
                }
                let ended = self
                    .end_holder_certificates_in(
                        txn,
                        caller,
                        row.id,
                        crate::services::certificates::HolderEnding::Left,
                        now,
                    )
                    .await?;
                self.hand_over_contact_in(txn, caller, row.id, now).await?;
                if already_out && ended == 0 {
                    return Ok(Outcome::Skipped);
                }
                Ok(Outcome::Applied {
                    user: row.id,
                    created: false,
                    notice: Some(CellError {
                        column: None,
                        reason: DEACTIVATED_NOT_DELETED.into(),
                        message: "deactivated, not deleted: the organisation's deletion policy is DEACTIVATE_ONLY"
                            .into(),
                    }),
                })
            }
        }
    }

    /// The user an edit or delete row names. Every identifying cell given
    /// must name the same user of the organisation, except that on an edit
    /// row a new e-mail address may stand beside a user id and a CPR number.
    async fn find_referenced_user(
        &self,
        txn: &DatabaseTransaction,
        organisation_id: Uuid,
        reference: &UserRef,
        email: NewEmail,
    ) -> DomainResult<Result<user::Model, Vec<CellError>>> {
        let in_org = || user::Entity::find().filter(user::Column::OrganisationId.eq(organisation_id));
        let live = || in_org().filter(user::Column::State.ne(UserState::Deleted.as_str()));
        let mut found: Vec<(Column, Option<user::Model>)> = Vec::new();
        if let Some(id) = reference.user_id {
            found.push((Column::UserId, in_org().filter(user::Column::Id.eq(id)).one(txn).await?));
        }
        if let Some(cpr) = &reference.cpr {
            let hash = self.vault.lookup_hash(cpr);
            found.push((
                Column::Cpr,
                live().filter(user::Column::CprHash.eq(hash)).one(txn).await?,
            ));
        }
        let email_identifies =
            email == NewEmail::Identifies || !(reference.user_id.is_some() && reference.cpr.is_some());
        if let Some(email) = reference.email.as_ref().filter(|_| email_identifies) {
            found.push((
                Column::Email,
                live().filter(user::Column::EmailKey.eq(email.key())).one(txn).await?,
            ));
        }
        let missing: Vec<CellError> = found
            .iter()
            .filter(|(_, row)| row.is_none())
            .map(|(column, _)| {
                CellError::new(
                    Some(*column),
                    Reason::NotFound,
                    format!("names no user of this organisation by its {}", column.key()),
                )
            })
            .collect();
        if !missing.is_empty() {
            return Ok(Err(missing));
        }
        let rows: Vec<user::Model> = found.into_iter().filter_map(|(_, row)| row).collect();
        let Some(first) = rows.first().cloned() else {
            return Ok(Err(vec![CellError::new(
                None,
                Reason::InvalidArgument,
                "name the user by at least two of user id, CPR number and e-mail",
            )]));
        };
        if rows.iter().any(|r| r.id != first.id) {
            return Ok(Err(vec![CellError::new(
                None,
                Reason::UserMismatch,
                "the user id, CPR number and e-mail of this row name different users",
            )]));
        }
        Ok(Ok(first))
    }

    /// R-BULK-6: the requester of an import that ended (finished, failed
    /// or cancelled, queued or running) is told, in app and by mail as they
    /// chose, unless they are gone. In the transaction that ends it.
    /// Returns the job as it ended.
    pub(super) async fn tell_requester_import_ended_in(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        job_id: Uuid,
    ) -> DomainResult<import_job::Model> {
        let finished = import_job::Entity::find_by_id(job_id)
            .one(txn)
            .await?
            .ok_or_else(|| DomainError::not_found("import", job_id))?;
        if let Some(requester) = user::Entity::find_by_id(finished.requester_id).one(txn).await?
            && parse::<UserState>(&requester.state)? != UserState::Deleted
        {
            let id = job_id.to_string();
            let applied = finished.applied.to_string();
            let failed = finished.failed.to_string();
            self.notify(
                txn,
                &requester,
                NotificationKind::ImportFinished,
                MailKind::ImportFinished,
                &[
                    ("first_name", requester.first_name.as_str()),
                    ("job_id", &id),
                    ("created", &applied),
                    ("failed", &failed),
                ],
                Some(job_id),
            )
            .await?;
        }
        Ok(finished)
    }

    /// Ends a job, tells the requester (in-app and by mail as they chose,
    /// R-BULK-6) in the same transaction, and lets go of the claim.
    async fn end_import(
        &self,
        job: &import_job::Model,
        worker: &str,
        state: ImportState,
        failure: Option<JobFailure>,
    ) -> DomainResult<()> {
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let (reason, message) = failure.map(|f| (f.reason.as_str(), f.message)).unzip();
        let ended = import_job::Entity::update_many()
            .col_expr(import_job::Column::State, Expr::value(state.as_str()))
            .col_expr(import_job::Column::FailureReason, Expr::value(reason))
            .col_expr(import_job::Column::FailureMessage, Expr::value(message))
            .col_expr(import_job::Column::FinishedAt, Expr::value(now))
            .col_expr(import_job::Column::UpdatedAt, Expr::value(now))
            .col_expr(import_job::Column::LeaseUntil, Expr::value(Option::<i64>::None))
            .filter(import_job::Column::Id.eq(job.id))
            .filter(import_job::Column::ClaimedBy.eq(worker))
            .filter(import_job::Column::State.eq(ImportState::Running.as_str()))
            .exec(&txn)
            .await?;
        if ended.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(());
        }
        let finished = self.tell_requester_import_ended_in(&txn, job.id).await?;
        txn.commit().await?;
        tracing::info!(
            import = %job.id,
            state = state.as_str(),
            applied = finished.applied,
            failed = finished.failed,
            skipped = finished.skipped,
            "import ended"
        );
        Ok(())
    }

    /// Deletes the files of jobs finished longer ago than the retention
    /// (their reports stay) and uploads abandoned for an hour. Returns how
    /// many files went.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn purge_import_files(&self, now: Millis) -> DomainResult<u64> {
        let cutoff = now - self.settings.imports.file_retention_ms;
        let finished: Vec<Uuid> = import_job::Entity::find()
            .select_only()
            .column(import_job::Column::Id)
            .filter(import_job::Column::State.is_in([
                ImportState::Succeeded.as_str(),
                ImportState::Failed.as_str(),
                ImportState::Cancelled.as_str(),
            ]))
            .filter(import_job::Column::FinishedAt.lte(cutoff))
            .filter(import_job::Column::FileDeletedAt.is_null())
            .limit(100)
            .into_tuple()
            .all(&self.db)
            .await?;
        let idle_since = now - self.settings.imports.upload_idle_ms;
        let abandoned: Vec<Uuid> = import_job::Entity::find()
            .select_only()
            .column(import_job::Column::Id)
            .filter(import_job::Column::State.eq(ImportState::Uploading.as_str()))
            .filter(import_job::Column::UpdatedAt.lte(idle_since))
            .limit(100)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut count = finished.len() as u64;
        for id in finished {
            let txn = crate::persistence::begin_write(&self.db).await?;
            import_chunk::Entity::delete_many()
                .filter(import_chunk::Column::JobId.eq(id))
                .exec(&txn)
                .await?;
            import_job::Entity::update_many()
                .col_expr(import_job::Column::FileDeletedAt, Expr::value(now))
                .filter(import_job::Column::Id.eq(id))
                .exec(&txn)
                .await?;
            txn.commit().await?;
        }
        for id in abandoned {
            count += u64::from(self.discard_upload(id, Some(idle_since)).await?);
        }
        Ok(count)
    }
}

/// What a row's e-mail cell is beside a user id and a CPR number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NewEmail {
    /// The user's new address (an edit row).
    MayStandBeside,
    /// One more cell that must name the same user: a delete row deletes
    /// for good (R-USR-5), and a cell naming someone else, or no one, says
    /// the row is not what its writer meant.
    Identifies,
}
