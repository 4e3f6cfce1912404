use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// History names people: the actor's display name and e-mail as they were
/// when they acted (a later rename or a deleted user must not change what
/// history says). Older events keep an empty name: who they were then is not
/// known any more, only their id in `actor`.
const UP: &[&str] = &[
    "ALTER TABLE history_events ADD COLUMN actor_name VARCHAR NOT NULL DEFAULT ''",
    "ALTER TABLE history_events ADD COLUMN actor_email VARCHAR NULL",
];

const DOWN: &[&str] = &[
    "ALTER TABLE history_events DROP COLUMN actor_email",
    "ALTER TABLE history_events DROP COLUMN actor_name",
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
