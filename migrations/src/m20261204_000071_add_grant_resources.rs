use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // R-ACC-3: a grant's scope may be one resource (named by the service
        // that checks the right), within the organisation or a unit.
        manager
            .alter_table(
                Table::alter()
                    .table(Grants::Table)
                    .add_column(string_null(Grants::Resource))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Widening a grant on one resource to its whole scope would give
        // more than was granted: such grants (and what was made on their
        // strength) go.
        manager
            .get_connection()
            .execute_unprepared(
                r#"WITH RECURSIVE "gone" ("id") AS (
                       SELECT "id" FROM "grants" WHERE "resource" IS NOT NULL
                       UNION SELECT "grants"."id" FROM "grants" JOIN "gone" ON "grants"."parent_id" = "gone"."id")
                   DELETE FROM "grants" WHERE "id" IN (SELECT "id" FROM "gone")"#,
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Grants::Table)
                    .drop_column(Grants::Resource)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Grants {
    Table,
    Resource,
}
