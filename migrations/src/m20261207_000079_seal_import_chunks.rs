use sea_orm_migration::{prelude::*, schema::*};

/// R-USR-9: an import file holds CPR numbers, and it is kept for days
/// (the file retention), so its pieces are stored sealed with the CPR
/// encryption key, as the outbox's payloads are. Pieces stored before this
/// migration stay readable as they were (`sealed` false) until the purge
/// takes them.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::add_column(
            manager,
            ImportChunks::Table,
            boolean(ImportChunks::Sealed).default(false).to_owned(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::drop_column(manager, ImportChunks::Table, ImportChunks::Sealed).await
    }
}

#[derive(DeriveIden)]
enum ImportChunks {
    Table,
    Sealed,
}
