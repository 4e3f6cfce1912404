use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OutboxMails::Table)
                    // UUIDv7; also the stable Message-ID of the mail.
                    .col(uuid(OutboxMails::Id).primary_key())
                    .col(uuid_null(OutboxMails::OrganisationId))
                    .col(string(OutboxMails::Kind))
                    .col(string(OutboxMails::Recipient))
                    // The rendered mail, encrypted (it may hold a single-use
                    // link); emptied once sent.
                    .col(text(OutboxMails::Payload))
                    // PENDING, SENT or FAILED.
                    .col(string(OutboxMails::State))
                    .col(integer(OutboxMails::Attempts))
                    .col(big_integer(OutboxMails::NextAttemptAt))
                    // A claim: the worker that holds it until lease_until.
                    .col(string_null(OutboxMails::ClaimedBy))
                    .col(big_integer_null(OutboxMails::LeaseUntil))
                    .col(text_null(OutboxMails::LastError))
                    .col(string_null(OutboxMails::TraceContext))
                    .col(big_integer(OutboxMails::CreatedAt))
                    .col(big_integer_null(OutboxMails::SentAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("outbox_mails_due")
                    .table(OutboxMails::Table)
                    .col(OutboxMails::State)
                    .col(OutboxMails::NextAttemptAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(OutboxMails::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum OutboxMails {
    Table,
    Id,
    OrganisationId,
    Kind,
    Recipient,
    Payload,
    State,
    Attempts,
    NextAttemptAt,
    ClaimedBy,
    LeaseUntil,
    LastError,
    TraceContext,
    CreatedAt,
    SentAt,
}
