use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// R-ORG-4: the number of licences in use (users ACTIVE or PENDING_ACTIVATION)
/// kept on the organisation row. Counting users on every create was O(users)
/// and ran under the organisation lock; the counter is checked and taken by
/// one conditional UPDATE as the last statement before COMMIT. The backfill
/// counts what is there now; from here on every change of a user's state
/// moves the counter in the same transaction.
const UP: &[&str] = &[
    "ALTER TABLE organisations ADD COLUMN licences_used BIGINT NOT NULL DEFAULT 0",
    "UPDATE organisations SET licences_used = (SELECT COUNT(*) FROM users \
     WHERE users.organisation_id = organisations.id AND users.state IN ('PENDING_ACTIVATION', 'ACTIVE'))",
];

const DOWN: &[&str] = &["ALTER TABLE organisations DROP COLUMN licences_used"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, DOWN).await
    }
}
