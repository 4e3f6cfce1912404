use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // R-BULK-3: an import is a job the worker claims and applies batch by
        // batch; `processed` is its checkpoint, moved in each batch's own
        // transaction, so a worker that dies resumes after the last batch it
        // committed.
        manager
            .create_table(
                Table::create()
                    .table(ImportJobs::Table)
                    .col(uuid(ImportJobs::Id).primary_key())
                    .col(uuid(ImportJobs::OrganisationId))
                    // CREATE, EDIT, DELETE or LEGACY_CREATE.
                    .col(string(ImportJobs::Kind))
                    // UPLOADING (not yet a job anyone sees), QUEUED, RUNNING,
                    // SUCCEEDED, FAILED or CANCELLED.
                    .col(string(ImportJobs::State))
                    .col(boolean(ImportJobs::ValidateOnly))
                    .col(string(ImportJobs::FileName))
                    .col(big_integer(ImportJobs::FileBytes))
                    .col(string_null(ImportJobs::Encoding))
                    .col(uuid(ImportJobs::RequesterId))
                    .col(string(ImportJobs::RequesterName))
                    .col(string_null(ImportJobs::RequestId))
                    .col(big_integer_null(ImportJobs::Rows))
                    .col(big_integer(ImportJobs::Processed))
                    .col(big_integer(ImportJobs::Applied))
                    .col(big_integer(ImportJobs::Failed))
                    .col(big_integer(ImportJobs::Skipped))
                    .col(boolean(ImportJobs::CancelRequested))
                    .col(string_null(ImportJobs::ClaimedBy))
                    .col(big_integer_null(ImportJobs::LeaseUntil))
                    .col(string_null(ImportJobs::FailureReason))
                    .col(text_null(ImportJobs::FailureMessage))
                    .col(big_integer(ImportJobs::CreatedAt))
                    .col(big_integer_null(ImportJobs::StartedAt))
                    .col(big_integer_null(ImportJobs::FinishedAt))
                    .col(big_integer(ImportJobs::UpdatedAt))
                    .col(big_integer_null(ImportJobs::FileDeletedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("import_jobs_organisation")
                    .table(ImportJobs::Table)
                    .col(ImportJobs::OrganisationId)
                    .col(ImportJobs::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("import_jobs_state")
                    .table(ImportJobs::Table)
                    .col(ImportJobs::State)
                    .col(ImportJobs::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("import_jobs_request_id")
                    .table(ImportJobs::Table)
                    .col(ImportJobs::OrganisationId)
                    .col(ImportJobs::RequestId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The uploaded file, as it came, in pieces of at most 1 MiB: the
        // worker runs elsewhere and shares only the database.
        manager
            .create_table(
                Table::create()
                    .table(ImportChunks::Table)
                    .col(uuid(ImportChunks::JobId))
                    .col(integer(ImportChunks::Seq))
                    .col(blob(ImportChunks::Data))
                    .primary_key(Index::create().col(ImportChunks::JobId).col(ImportChunks::Seq))
                    .to_owned(),
            )
            .await?;
        // Per-row errors: the row as a spreadsheet numbers it (header = 1),
        // the column's English name ("" for the row as a whole).
        manager
            .create_table(
                Table::create()
                    .table(ImportErrors::Table)
                    .col(uuid(ImportErrors::JobId))
                    .col(big_integer(ImportErrors::FileRow))
                    .col(string(ImportErrors::ColumnName))
                    .col(string(ImportErrors::Reason))
                    .col(text(ImportErrors::Message))
                    .primary_key(
                        Index::create()
                            .col(ImportErrors::JobId)
                            .col(ImportErrors::FileRow)
                            .col(ImportErrors::ColumnName),
                    )
                    .to_owned(),
            )
            .await?;
        // Users a create or legacy job made: BatchSendActivation by job id.
        manager
            .create_table(
                Table::create()
                    .table(ImportCreatedUsers::Table)
                    .col(uuid(ImportCreatedUsers::JobId))
                    .col(uuid(ImportCreatedUsers::UserId))
                    .primary_key(
                        Index::create()
                            .col(ImportCreatedUsers::JobId)
                            .col(ImportCreatedUsers::UserId),
                    )
                    .to_owned(),
            )
            .await?;
        // Legacy users are found by their RID number (R-BULK-5).
        manager
            .create_index(
                Index::create()
                    .name("users_legacy_id")
                    .table(Users::Table)
                    .col(Users::OrganisationId)
                    .col(Users::LegacyId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("users_legacy_id").table(Users::Table).to_owned())
            .await?;
        for table in [
            ImportCreatedUsers::Table.into_iden(),
            ImportErrors::Table.into_iden(),
            ImportChunks::Table.into_iden(),
            ImportJobs::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum ImportJobs {
    Table,
    Id,
    OrganisationId,
    Kind,
    State,
    ValidateOnly,
    FileName,
    FileBytes,
    Encoding,
    RequesterId,
    RequesterName,
    RequestId,
    Rows,
    Processed,
    Applied,
    Failed,
    Skipped,
    CancelRequested,
    ClaimedBy,
    LeaseUntil,
    FailureReason,
    FailureMessage,
    CreatedAt,
    StartedAt,
    FinishedAt,
    UpdatedAt,
    FileDeletedAt,
}

#[derive(DeriveIden)]
enum ImportChunks {
    Table,
    JobId,
    Seq,
    Data,
}

#[derive(DeriveIden)]
enum ImportErrors {
    Table,
    JobId,
    FileRow,
    ColumnName,
    Reason,
    Message,
}

#[derive(DeriveIden)]
enum ImportCreatedUsers {
    Table,
    JobId,
    UserId,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    OrganisationId,
    LegacyId,
}
