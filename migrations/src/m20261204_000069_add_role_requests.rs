use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // R-ACC-9: a member asks for a role too (kind `ROLE`), decided by
        // those who change roles.
        manager
            .alter_table(
                Table::alter()
                    .table(RightsRequests::Table)
                    .add_column(string_null(RightsRequests::Role))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(r#"DELETE FROM "rights_requests" WHERE "kind" = 'ROLE'"#)
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(RightsRequests::Table)
                    .drop_column(RightsRequests::Role)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum RightsRequests {
    Table,
    Role,
}
