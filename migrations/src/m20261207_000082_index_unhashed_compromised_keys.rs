use sea_orm::ConnectionTrait;
use sea_orm_migration::prelude::*;

/// R-CERT-4: pods of the release before migration 81 serve on during the
/// upgrade, and a certificate they revoke as compromised keeps no key hash.
/// The check of a new key also reads those few rows (their DER has the
/// key); this partial index finds them without reading the table.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Raw SQL: the same partial index on both databases.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX certificates_unhashed_compromised ON certificates (id) \
                 WHERE public_key_hash IS NULL AND revocation_reason = 'KEY_COMPROMISED'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX certificates_unhashed_compromised")
            .await?;
        Ok(())
    }
}
