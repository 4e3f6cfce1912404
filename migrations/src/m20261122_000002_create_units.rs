use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Units::Table)
                    .col(uuid(Units::Id).primary_key())
                    .col(uuid(Units::OrganisationId))
                    .col(uuid_null(Units::ParentId))
                    .col(string(Units::Kind))
                    .col(string(Units::Name))
                    .col(string_null(Units::Number))
                    .col(big_integer(Units::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Units::Table, Units::OrganisationId)
                            .to(Organisations::Table, Organisations::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Units::Table, Units::ParentId)
                            .to(Units::Table, Units::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // A P- or SE-number names one unit within its organisation.
        manager
            .create_index(
                Index::create()
                    .name("units_organisation_kind_number")
                    .table(Units::Table)
                    .col(Units::OrganisationId)
                    .col(Units::Kind)
                    .col(Units::Number)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Units::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Units {
    Table,
    Id,
    OrganisationId,
    ParentId,
    Kind,
    Name,
    Number,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Organisations {
    Table,
    Id,
}
