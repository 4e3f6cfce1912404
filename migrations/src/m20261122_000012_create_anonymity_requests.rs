use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AnonymityRequests::Table)
                    .col(uuid(AnonymityRequests::Id).primary_key())
                    .col(uuid(AnonymityRequests::OrganisationId))
                    .col(uuid(AnonymityRequests::UserId))
                    // PENDING, APPROVED or REJECTED.
                    .col(string(AnonymityRequests::State))
                    .col(text(AnonymityRequests::Reason))
                    .col(big_integer(AnonymityRequests::CreatedAt))
                    .col(string_null(AnonymityRequests::DecidedBy))
                    .col(big_integer_null(AnonymityRequests::DecidedAt))
                    .col(text_null(AnonymityRequests::DecisionNote))
                    .col(uuid_null(AnonymityRequests::NewUserId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("anonymity_requests_organisation")
                    .table(AnonymityRequests::Table)
                    .col(AnonymityRequests::OrganisationId)
                    .col(AnonymityRequests::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AnonymityRequests::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AnonymityRequests {
    Table,
    Id,
    OrganisationId,
    UserId,
    State,
    Reason,
    CreatedAt,
    DecidedBy,
    DecidedAt,
    DecisionNote,
    NewUserId,
}
