use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // R-OPS-3: the W3C traceparent of the CreateImport call, so the
        // worker's run of the job shows in the same trace (the outbox has
        // had its column since migration 8).
        manager
            .alter_table(
                Table::alter()
                    .table(ImportJobs::Table)
                    .add_column(string_null(ImportJobs::TraceContext))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ImportJobs::Table)
                    .drop_column(ImportJobs::TraceContext)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum ImportJobs {
    Table,
    TraceContext,
}
