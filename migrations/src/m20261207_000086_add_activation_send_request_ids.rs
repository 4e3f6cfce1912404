use sea_orm_migration::prelude::*;

/// AIP-155 for SendActivation: a client whose call timed out after it
/// landed retries, and the retry mailed a second link that ended the first
/// (the person got two mails, the first dead). The link a SendActivation
/// made keeps the call's request id and a fingerprint of the request, so a
/// retry finds it and sends nothing. Rows without an id (every row before,
/// every link sent without one) are left out of the index.
#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "ALTER TABLE activation_secrets ADD COLUMN send_request_id VARCHAR NULL",
    "ALTER TABLE activation_secrets ADD COLUMN send_request_hash VARCHAR NULL",
    "CREATE INDEX activation_secrets_send_request_id ON activation_secrets (send_request_id) \
     WHERE send_request_id IS NOT NULL",
];

const DOWN: &[&str] = &[
    "DROP INDEX activation_secrets_send_request_id",
    "ALTER TABLE activation_secrets DROP COLUMN send_request_hash",
    "ALTER TABLE activation_secrets DROP COLUMN send_request_id",
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
