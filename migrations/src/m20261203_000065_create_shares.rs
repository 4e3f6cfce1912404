use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // R-ACC-5: a user's own resources (profile, settings, history, API
        // tokens, notifications) shared, read or edit, with a colleague, who
        // then acts as the owner without the owner's credentials. One share
        // per owner and grantee; sharing again changes its access.
        manager
            .create_table(
                Table::create()
                    .table(Shares::Table)
                    .col(uuid(Shares::Id).primary_key())
                    .col(uuid(Shares::OrganisationId))
                    .col(uuid(Shares::OwnerId))
                    .col(uuid(Shares::GranteeId))
                    .col(boolean(Shares::CanEdit))
                    .col(uuid_null(Shares::SharerId))
                    .col(string(Shares::SharedBy))
                    .col(big_integer(Shares::SharedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("shares_owner")
                            .from(Shares::Table, Shares::OwnerId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("shares_grantee")
                            .from(Shares::Table, Shares::GranteeId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("shares_by_owner_and_grantee")
                    .table(Shares::Table)
                    .col(Shares::OwnerId)
                    .col(Shares::GranteeId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("shares_by_organisation")
                    .table(Shares::Table)
                    .col(Shares::OrganisationId)
                    .col(Shares::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Shares::Table).to_owned()).await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Shares {
    Table,
    Id,
    OrganisationId,
    OwnerId,
    GranteeId,
    CanEdit,
    SharerId,
    SharedBy,
    SharedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}
