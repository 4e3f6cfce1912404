use sea_orm_migration::prelude::*;

/// R-CERT-6: `SearchCertificates` by subject text is a `LIKE '%…%'` on
/// `search_text`, which no B-tree serves; over a large inventory it read the
/// whole table (about 1 s at 1,000,000 certificates, BENCHMARKS.md). On
/// PostgreSQL a trigram GIN index serves any substring of three characters
/// or more. SQLite has no such index and keeps the scan (a small inventory).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_on_postgres(
            manager,
            &[
                "CREATE EXTENSION IF NOT EXISTS pg_trgm",
                "CREATE INDEX IF NOT EXISTS certificates_search_text_trgm ON certificates USING gin (search_text gin_trgm_ops)",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The extension stays: another schema object may use it by then.
        crate::execute_on_postgres(manager, &["DROP INDEX IF EXISTS certificates_search_text_trgm"]).await
    }
}
