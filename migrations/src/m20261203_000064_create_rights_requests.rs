use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // R-ACC-9: a member asks for an admin level or a grant, with a
        // reason; a rights administrator approves (which applies it) or
        // rejects. What is asked is kept in the columns of the matching
        // write (level, or right and actions; the unit for both).
        manager
            .create_table(
                Table::create()
                    .table(RightsRequests::Table)
                    .col(uuid(RightsRequests::Id).primary_key())
                    .col(uuid(RightsRequests::OrganisationId))
                    .col(uuid(RightsRequests::RequesterId))
                    .col(string(RightsRequests::Kind))
                    .col(small_integer_null(RightsRequests::Level))
                    .col(string_null(RightsRequests::RightName))
                    .col(boolean(RightsRequests::CanRead))
                    .col(boolean(RightsRequests::CanEdit))
                    .col(uuid_null(RightsRequests::UnitId))
                    .col(text(RightsRequests::Reason))
                    .col(string(RightsRequests::State))
                    .col(big_integer(RightsRequests::CreatedAt))
                    .col(string_null(RightsRequests::DecidedBy))
                    .col(big_integer_null(RightsRequests::DecidedAt))
                    .col(text_null(RightsRequests::DecisionNote))
                    .foreign_key(
                        ForeignKey::create()
                            .name("rights_requests_requester")
                            .from(RightsRequests::Table, RightsRequests::RequesterId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("rights_requests_by_organisation")
                    .table(RightsRequests::Table)
                    .col(RightsRequests::OrganisationId)
                    .col(RightsRequests::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RightsRequests::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum RightsRequests {
    Table,
    Id,
    OrganisationId,
    RequesterId,
    Kind,
    Level,
    RightName,
    CanRead,
    CanEdit,
    UnitId,
    Reason,
    State,
    CreatedAt,
    DecidedBy,
    DecidedAt,
    DecisionNote,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}
