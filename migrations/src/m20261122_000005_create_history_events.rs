use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(HistoryEvents::Table)
                    // UUIDv7: ordering by id is ordering by time.
                    .col(uuid(HistoryEvents::Id).primary_key())
                    .col(uuid_null(HistoryEvents::OrganisationId))
                    .col(string(HistoryEvents::SubjectKind))
                    .col(uuid(HistoryEvents::SubjectId))
                    .col(big_integer(HistoryEvents::OccurredAt))
                    .col(string(HistoryEvents::Actor))
                    .col(string_null(HistoryEvents::OnBehalfOf))
                    .col(string(HistoryEvents::Activity))
                    .col(text(HistoryEvents::Changes))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("history_events_subject")
                    .table(HistoryEvents::Table)
                    .col(HistoryEvents::SubjectId)
                    .col(HistoryEvents::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(HistoryEvents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum HistoryEvents {
    Table,
    Id,
    OrganisationId,
    SubjectKind,
    SubjectId,
    OccurredAt,
    Actor,
    OnBehalfOf,
    Activity,
    Changes,
}
