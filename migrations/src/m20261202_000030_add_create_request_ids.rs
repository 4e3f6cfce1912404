use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Every create takes a client-chosen request id (AIP-155), as CreateUser
/// already does: a retry with the same id finds what the first attempt made
/// instead of making it twice. The id is unique within its scope (all
/// organisations; the units of one organisation; the API tokens of one
/// user); rows without one (older rows, callers that send none) are left out
/// of the partial indexes. The `WHERE` form is the same on SQLite and
/// PostgreSQL, so it is written as SQL.
const UP: &[&str] = &[
    "ALTER TABLE organisations ADD COLUMN create_request_id VARCHAR NULL",
    "ALTER TABLE units ADD COLUMN create_request_id VARCHAR NULL",
    "ALTER TABLE api_tokens ADD COLUMN create_request_id VARCHAR NULL",
    "CREATE UNIQUE INDEX organisations_create_request_id ON organisations (create_request_id) \
     WHERE create_request_id IS NOT NULL",
    "CREATE UNIQUE INDEX units_create_request_id ON units (organisation_id, create_request_id) \
     WHERE create_request_id IS NOT NULL",
    "CREATE UNIQUE INDEX api_tokens_create_request_id ON api_tokens (user_id, create_request_id) \
     WHERE create_request_id IS NOT NULL",
];

const DOWN: &[&str] = &[
    "DROP INDEX api_tokens_create_request_id",
    "DROP INDEX units_create_request_id",
    "DROP INDEX organisations_create_request_id",
    "ALTER TABLE api_tokens DROP COLUMN create_request_id",
    "ALTER TABLE units DROP COLUMN create_request_id",
    "ALTER TABLE organisations DROP COLUMN create_request_id",
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
