use sea_orm_migration::{prelude::*, schema::*};

/// R-IMP-2: an import run that ends in an error (not a row's refusal: the
/// database refused a statement, the stored job cannot be read) is retried
/// after its lease, and used to be retried for ever, holding one of the
/// organisation's places for open jobs. The runs that failed in a row are
/// counted; a run that moves the checkpoint starts the count again.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::add_column(
            manager,
            ImportJobs::Table,
            integer(ImportJobs::FailedRuns).default(0).to_owned(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::drop_column(manager, ImportJobs::Table, ImportJobs::FailedRuns).await
    }
}

#[derive(DeriveIden)]
enum ImportJobs {
    Table,
    FailedRuns,
}
