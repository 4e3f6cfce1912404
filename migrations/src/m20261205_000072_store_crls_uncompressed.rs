use sea_orm_migration::prelude::*;

/// R-CERT-5: a revocation re-signs the CRL at once, and PostgreSQL tried to
/// compress every stored CRL (pglz over 4.9 MB at 100,000 entries: about
/// 75 ms of each 0.5 s publication, and a decompression on every read
/// back). Serial numbers are random, so it gains little: the DER is stored
/// as it is (`STORAGE EXTERNAL`: out of line, not compressed). Rows already
/// stored keep their form; SQLite never compresses.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_on_postgres(
            manager,
            &["ALTER TABLE crl_publications ALTER COLUMN der SET STORAGE EXTERNAL"],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_on_postgres(
            manager,
            &["ALTER TABLE crl_publications ALTER COLUMN der SET STORAGE EXTENDED"],
        )
        .await
    }
}
