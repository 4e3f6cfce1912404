use sea_orm_migration::prelude::*;

/// R-CERT-6: newest-first search by subject text walks the organisation's
/// `(organisation_id, id)` index backwards and checks `search_text` on each
/// certificate until the page fills. A common word that the newest
/// certificates lack (a surname, 50,000 certificates back) read 50,000 of
/// the table's ~1.4 kB rows: ~70 ms at 1,000,000 stored (BENCHMARKS.md).
/// On PostgreSQL the index now carries `search_text` (`INCLUDE`), and the
/// search finds the page's ids by an index-only scan: ~30 ms for the same
/// walk. Same key, so every other use of the index (the export, plain
/// lists) gets the same plans; it replaces the old one under its name, and
/// is about five times its size (239 MB against 47 MB, built fresh over a
/// million certificates).
/// Built without `CONCURRENTLY` (a migration runs in a transaction):
/// issuing and revoking wait for the build, seconds at a million.
///
/// An index-only scan skips the table only for pages the visibility map
/// marks all-visible, which VACUUM keeps up: certificates get vacuumed
/// after 1% of their rows changed, not the default 20% (200,000 changes at
/// a million). SQLite keeps its index: it has no `INCLUDE`, and its
/// inventories are small.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_on_postgres(
            manager,
            &[
                "CREATE INDEX certificates_organisation_text ON certificates (organisation_id, id) INCLUDE (search_text)",
                "DROP INDEX certificates_organisation",
                "ALTER INDEX certificates_organisation_text RENAME TO certificates_organisation",
                "ALTER TABLE certificates SET (autovacuum_vacuum_scale_factor = 0.01, \
                 autovacuum_vacuum_insert_scale_factor = 0.01)",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_on_postgres(
            manager,
            &[
                "ALTER TABLE certificates RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_insert_scale_factor)",
                "CREATE INDEX certificates_organisation_plain ON certificates (organisation_id, id)",
                "DROP INDEX certificates_organisation",
                "ALTER INDEX certificates_organisation_plain RENAME TO certificates_organisation",
            ],
        )
        .await
    }
}
