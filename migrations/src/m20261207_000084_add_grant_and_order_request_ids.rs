use sea_orm_migration::prelude::*;

/// AIP-155 for CreateGrant and OrderCertificate, as migration 30 gave the
/// other creates: a client whose call timed out after it landed retries,
/// and the retry must find the grant or order the first call made, not
/// make a second (a second live grant outlives the one revoked; a second
/// order mails a second pickup token). With the id goes a fingerprint of
/// what was asked, so the same id sent with another request is refused
/// instead of answered with the first one's result. Unique per
/// organisation; rows without an id are left out of the partial indexes.
/// The indexes start empty (every row has no id), so building them reads
/// the tables once and writes nothing.
#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "ALTER TABLE grants ADD COLUMN create_request_id VARCHAR NULL",
    "ALTER TABLE grants ADD COLUMN create_request_hash VARCHAR NULL",
    "ALTER TABLE certificates ADD COLUMN create_request_id VARCHAR NULL",
    "ALTER TABLE certificates ADD COLUMN create_request_hash VARCHAR NULL",
    "CREATE UNIQUE INDEX grants_create_request_id ON grants (organisation_id, create_request_id) \
     WHERE create_request_id IS NOT NULL",
    "CREATE UNIQUE INDEX certificates_create_request_id ON certificates (organisation_id, create_request_id) \
     WHERE create_request_id IS NOT NULL",
];

const DOWN: &[&str] = &[
    "DROP INDEX certificates_create_request_id",
    "DROP INDEX grants_create_request_id",
    "ALTER TABLE certificates DROP COLUMN create_request_hash",
    "ALTER TABLE certificates DROP COLUMN create_request_id",
    "ALTER TABLE grants DROP COLUMN create_request_hash",
    "ALTER TABLE grants DROP COLUMN create_request_id",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, DOWN).await
    }
}
