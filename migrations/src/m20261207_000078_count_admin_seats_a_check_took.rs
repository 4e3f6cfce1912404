use sea_orm_migration::{prelude::*, schema::*};

/// R-IMP-1: a validate-only create import rolls each batch back. The
/// licences its earlier batches took are counted from `applied`; the
/// administrator seats they took are not derivable from it, so they are
/// counted here, for the next batch's check of the seats.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::add_column(
            manager,
            ImportJobs::Table,
            big_integer(ImportJobs::AdminSeatsTaken).default(0).to_owned(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::drop_column(manager, ImportJobs::Table, ImportJobs::AdminSeatsTaken).await
    }
}

#[derive(DeriveIden)]
enum ImportJobs {
    Table,
    AdminSeatsTaken,
}
