use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Partial unique indexes: a deleted user keeps its row (history points at it)
/// but no longer blocks its e-mail, username or CPR number. The `WHERE` form is
/// the same on SQLite and PostgreSQL, so it is written as SQL.
const UP: &[&str] = &[
    "CREATE UNIQUE INDEX users_live_email ON users (organisation_id, email) WHERE state <> 'DELETED'",
    "CREATE UNIQUE INDEX users_live_username ON users (username) WHERE state <> 'DELETED' AND username IS NOT NULL",
    "CREATE UNIQUE INDEX users_live_cpr ON users (organisation_id, cpr_hash) WHERE state <> 'DELETED' AND cpr_hash IS NOT NULL",
];

const DOWN: &[&str] = &[
    "DROP INDEX users_live_email",
    "DROP INDEX users_live_username",
    "DROP INDEX users_live_cpr",
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
