use std::pin::Pin;
use std::time::Duration;

use orgadmin_domain::DomainError;
use orgadmin_domain::model::Language;
use orgadmin_domain::services::imports::{
    BeganImport, FileEncoding, ImportJob, ImportKind, ImportRowError, ImportSpec, ImportState, format,
};
use orgadmin_domain::{Caller, Domain};
use orgadmin_proto::v1 as pb;
use orgadmin_proto::v1::import_service_server::ImportService;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{caller, caller_from_metadata};
use crate::convert::*;
use crate::error::{IntoStatus, to_status};

pub struct ImportHandler {
    pub domain: Domain,
}

/// How often WatchImport looks at a running job.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

fn kind_from_pb(field: &str, value: i32) -> Result<ImportKind, DomainError> {
    match pb::ImportKind::try_from(value) {
        Ok(pb::ImportKind::Create) => Ok(ImportKind::Create),
        Ok(pb::ImportKind::Edit) => Ok(ImportKind::Edit),
        Ok(pb::ImportKind::Delete) => Ok(ImportKind::Delete),
        Ok(pb::ImportKind::LegacyCreate) => Ok(ImportKind::LegacyCreate),
        _ => Err(DomainError::invalid(
            field,
            "must be CREATE, EDIT, DELETE or LEGACY_CREATE",
        )),
    }
}

fn kind_to_pb(kind: ImportKind) -> pb::ImportKind {
    match kind {
        ImportKind::Create => pb::ImportKind::Create,
        ImportKind::Edit => pb::ImportKind::Edit,
        ImportKind::Delete => pb::ImportKind::Delete,
        ImportKind::LegacyCreate => pb::ImportKind::LegacyCreate,
    }
}

fn state_to_pb(state: ImportState) -> pb::ImportState {
    match state {
        // Never shown: a job becomes visible when its upload finishes.
        ImportState::Uploading | ImportState::Queued => pb::ImportState::Queued,
        ImportState::Running => pb::ImportState::Running,
        ImportState::Succeeded => pb::ImportState::Succeeded,
        ImportState::Failed => pb::ImportState::Failed,
        ImportState::Cancelled => pb::ImportState::Cancelled,
    }
}

fn encoding_to_pb(encoding: Option<FileEncoding>) -> pb::FileEncoding {
    match encoding {
        None => pb::FileEncoding::Unspecified,
        Some(FileEncoding::Utf8) => pb::FileEncoding::Utf8,
        Some(FileEncoding::Utf8Bom) => pb::FileEncoding::Utf8Bom,
        Some(FileEncoding::Windows1252) => pb::FileEncoding::Windows1252,
    }
}

fn job_to_pb(job: &ImportJob) -> pb::ImportJob {
    pb::ImportJob {
        id: job.id.to_string(),
        organisation_id: job.organisation_id.to_string(),
        kind: kind_to_pb(job.kind) as i32,
        state: state_to_pb(job.state) as i32,
        validate_only: job.validate_only,
        file_name: job.file_name.clone(),
        file_bytes: job.file_bytes,
        encoding: encoding_to_pb(job.encoding) as i32,
        rows: job.rows.unwrap_or_default(),
        processed: job.processed,
        applied: job.applied,
        failed: job.failed,
        skipped: job.skipped,
        requester_id: job.requester_id.to_string(),
        requester_name: job.requester_name.clone(),
        create_time: Some(timestamp(job.created_at)),
        start_time: opt_timestamp(job.started_at),
        end_time: opt_timestamp(job.finished_at),
        failure_reason: job.failure_reason.clone().unwrap_or_default(),
        failure_message: job.failure_message.clone().unwrap_or_default(),
        cancel_requested: job.cancel_requested,
    }
}

fn row_error_to_pb(e: ImportRowError) -> pb::ImportRowError {
    pb::ImportRowError {
        row: e.row,
        column: e.column,
        reason: e.reason,
        message: e.message,
        applied: e.applied,
    }
}

fn spec_from_pb(spec: pb::ImportSpec) -> Result<ImportSpec, DomainError> {
    Ok(ImportSpec {
        organisation_id: id("spec.organisation_id", &spec.organisation_id)?,
        kind: kind_from_pb("spec.kind", spec.kind)?,
        validate_only: spec.validate_only,
        file_name: spec.file_name,
        request_id: opt_string(spec.request_id),
    })
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// How long an upload may pause between two of its messages: a client that
/// stopped sending (but kept its connection) held its in-flight place and
/// its upload's place in the organisation's queue for ever.
const UPLOAD_PAUSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

async fn next_part(
    stream: &mut Streaming<pb::CreateImportRequest>,
) -> Result<Option<pb::create_import_request::Part>, Status> {
    let Ok(message) = tokio::time::timeout(UPLOAD_PAUSE_LIMIT, stream.message()).await else {
        return Err(Status::deadline_exceeded(format!(
            "no part of the upload arrived for {} s; send the file again",
            UPLOAD_PAUSE_LIMIT.as_secs()
        )));
    };
    match message? {
        None => Ok(None),
        Some(message) => Ok(message.part),
    }
}

#[tonic::async_trait]
impl ImportService for ImportHandler {
    async fn create_import(
        &self,
        request: Request<Streaming<pb::CreateImportRequest>>,
    ) -> Result<Response<pb::CreateImportResponse>, Status> {
        let caller: Caller = caller_from_metadata(&self.domain, request.metadata()).await?;
        let mut stream = request.into_inner();
        let spec = match next_part(&mut stream).await? {
            Some(pb::create_import_request::Part::Spec(spec)) => spec_from_pb(spec).into_status()?,
            _ => {
                return Err(to_status(DomainError::invalid(
                    "spec",
                    "the first message must carry the spec; the file follows in chunks",
                )));
            }
        };
        let mut upload = match self.domain.begin_import(&caller, spec).await.into_status()? {
            BeganImport::Existing(job) => {
                return Ok(Response::new(pb::CreateImportResponse {
                    job: Some(job_to_pb(&job)),
                }));
            }
            BeganImport::Upload(upload) => upload,
        };
        loop {
            let part = match next_part(&mut stream).await {
                Ok(part) => part,
                Err(status) => {
                    // The client went away mid-file: nothing is queued.
                    let _ = upload.abandon().await;
                    return Err(status);
                }
            };
            let pushed = match part {
                None => break,
                Some(pb::create_import_request::Part::Chunk(bytes)) => upload.push(&bytes).await,
                Some(pb::create_import_request::Part::Spec(_)) => {
                    Err(DomainError::invalid("spec", "only the first message carries the spec"))
                }
            };
            if let Err(error) = pushed {
                let _ = upload.abandon().await;
                return Err(to_status(error));
            }
        }
        let job = upload.finish().await.into_status()?;
        Ok(Response::new(pb::CreateImportResponse {
            job: Some(job_to_pb(&job)),
        }))
    }

    async fn get_import(
        &self,
        request: Request<pb::GetImportRequest>,
    ) -> Result<Response<pb::GetImportResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let job_id = id("id", &request.get_ref().id).into_status()?;
        let job = self.domain.get_import(&caller, job_id).await.into_status()?;
        Ok(Response::new(pb::GetImportResponse {
            job: Some(job_to_pb(&job)),
        }))
    }

    async fn list_imports(
        &self,
        request: Request<pb::ListImportsRequest>,
    ) -> Result<Response<pb::ListImportsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let organisation_id = id("organisation_id", &r.organisation_id).into_status()?;
        let page = self
            .domain
            .list_imports(&caller, organisation_id, r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListImportsResponse {
            jobs: page.items.iter().map(job_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    type WatchImportStream = BoxStream<pb::WatchImportResponse>;

    async fn watch_import(
        &self,
        request: Request<pb::WatchImportRequest>,
    ) -> Result<Response<Self::WatchImportStream>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let job_id = id("id", &request.get_ref().id).into_status()?;
        // The first answer comes from here, so a bad id or a denied caller
        // fails the call itself, not the stream.
        let first = self.domain.get_import(&caller, job_id).await.into_status()?;
        let domain = self.domain.clone();
        let lifetime = Duration::from_millis(self.domain.settings().imports.watch_lifetime_ms.max(0) as u64);
        let ends_at = tokio::time::Instant::now() + lifetime;
        let updates = changes_stream(move |sent: Option<ImportJob>| {
            let domain = domain.clone();
            let caller = caller.clone();
            let first = first.clone();
            async move {
                let Some(last) = sent else { return Some(Ok(first)) };
                if last.state.is_finished() {
                    return None;
                }
                loop {
                    if tokio::time::Instant::now() + WATCH_INTERVAL > ends_at {
                        tokio::time::sleep_until(ends_at).await;
                        return Some(Err(Status::deadline_exceeded(format!(
                            "watched for {} minutes, the most one watch lasts; the job goes on: watch it again",
                            lifetime.as_secs() / 60
                        ))));
                    }
                    tokio::time::sleep(WATCH_INTERVAL).await;
                    match domain.get_import(&caller, job_id).await {
                        Ok(job) if job != last => return Some(Ok(job)),
                        Ok(_) => continue,
                        Err(e) => return Some(Err(to_status(e))),
                    }
                }
            }
        })
        .map(|job| {
            job.map(|job| pb::WatchImportResponse {
                job: Some(job_to_pb(&job)),
            })
        });
        Ok(Response::new(Box::pin(updates)))
    }

    async fn list_import_errors(
        &self,
        request: Request<pb::ListImportErrorsRequest>,
    ) -> Result<Response<pb::ListImportErrorsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let job_id = id("id", &r.id).into_status()?;
        let page = self
            .domain
            .list_import_errors(&caller, job_id, r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListImportErrorsResponse {
            errors: page.items.into_iter().map(row_error_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    type GetImportReportStream = BoxStream<pb::GetImportReportResponse>;

    async fn get_import_report(
        &self,
        request: Request<pb::GetImportReportRequest>,
    ) -> Result<Response<Self::GetImportReportStream>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let job_id = id("id", &request.get_ref().id).into_status()?;
        let first = self
            .domain
            .import_report_piece(&caller, job_id, None)
            .await
            .into_status()?;
        let domain = self.domain.clone();
        let stream = super::pieces(
            first,
            move |after| {
                let (domain, caller) = (domain.clone(), caller.clone());
                async move { domain.import_report_piece(&caller, job_id, Some(after)).await }
            },
            |chunk| pb::GetImportReportResponse { chunk },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_import(
        &self,
        request: Request<pb::CancelImportRequest>,
    ) -> Result<Response<pb::CancelImportResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let job_id = id("id", &request.get_ref().id).into_status()?;
        let job = self.domain.cancel_import(&caller, job_id).await.into_status()?;
        Ok(Response::new(pb::CancelImportResponse {
            job: Some(job_to_pb(&job)),
        }))
    }

    async fn get_import_template(
        &self,
        request: Request<pb::GetImportTemplateRequest>,
    ) -> Result<Response<pb::GetImportTemplateResponse>, Status> {
        // Public knowledge, but only for callers: like every RPC but
        // activation, it needs a bearer token.
        caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let kind = kind_from_pb("kind", r.kind).into_status()?;
        let language = language("language", r.language).into_status()?.unwrap_or(Language::Da);
        Ok(Response::new(pb::GetImportTemplateResponse {
            file_name: format!("orgadmin-{}-{}.csv", kind.as_str().to_lowercase(), language.as_str()),
            content: format::template(kind, language),
        }))
    }

    async fn batch_send_activation(
        &self,
        request: Request<pb::BatchSendActivationRequest>,
    ) -> Result<Response<pb::BatchSendActivationResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let organisation_id = id("organisation_id", &r.organisation_id).into_status()?;
        let user_ids = r
            .user_ids
            .iter()
            .enumerate()
            .map(|(i, u)| id(&format!("user_ids[{i}]"), u))
            .collect::<Result<Vec<_>, _>>()
            .into_status()?;
        let import_id = opt_id("import_id", &r.import_id).into_status()?;
        let outcome = self
            .domain
            .batch_send_activation(&caller, organisation_id, user_ids, import_id)
            .await
            .into_status()?;
        let strings = |ids: Vec<uuid::Uuid>| ids.into_iter().map(|i| i.to_string()).collect();
        Ok(Response::new(pb::BatchSendActivationResponse {
            queued_user_ids: strings(outcome.queued),
            needs_code_user_ids: strings(outcome.needs_code),
            skipped_user_ids: strings(outcome.skipped),
            needs_administrator_user_ids: strings(outcome.needs_administrator),
        }))
    }
}

/// A stream whose next item is computed from the previous one: `None` ends it.
fn changes_stream<T, F, Fut>(next: F) -> impl Stream<Item = Result<T, Status>> + Send + 'static
where
    T: Clone + Send + 'static,
    F: Fn(Option<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<Result<T, Status>>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut last = None;
        loop {
            // A client that hung up ends the watch at once, even while the
            // job does not move (a queue without a worker).
            let item = tokio::select! {
                item = next(last.clone()) => item,
                _ = tx.closed() => break,
            };
            let Some(item) = item else { break };
            let failed = item.is_err();
            if let Ok(value) = &item {
                last = Some(value.clone());
            }
            // The client hung up: stop watching.
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
