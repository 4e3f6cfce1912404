use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // R-ORG-3, R-ACC-9: a person asks to join an organisation that allows
        // it. The request waits UNCONFIRMED until the link mailed to the
        // address given is opened (`token_hash`, until `expires_at`), then
        // OPEN for the organisation's user administrators, who approve (the
        // user is created: `user_id`) or reject it.
        manager
            .create_table(
                Table::create()
                    .table(JoinRequests::Table)
                    .col(uuid(JoinRequests::Id).primary_key())
                    .col(uuid(JoinRequests::OrganisationId))
                    .col(string(JoinRequests::FirstName))
                    .col(string(JoinRequests::Surname))
                    .col(string(JoinRequests::Email))
                    .col(string(JoinRequests::EmailKey))
                    .col(string(JoinRequests::BirthDate))
                    .col(string(JoinRequests::Language))
                    .col(text(JoinRequests::Reason))
                    .col(string(JoinRequests::State))
                    .col(string_null(JoinRequests::TokenHash))
                    .col(big_integer(JoinRequests::ExpiresAt))
                    .col(big_integer(JoinRequests::MailedAt))
                    .col(big_integer(JoinRequests::CreatedAt))
                    .col(big_integer_null(JoinRequests::ConfirmedAt))
                    .col(string_null(JoinRequests::DecidedBy))
                    .col(big_integer_null(JoinRequests::DecidedAt))
                    .col(text_null(JoinRequests::DecisionNote))
                    .col(uuid_null(JoinRequests::UserId))
                    .foreign_key(
                        ForeignKey::create()
                            .name("join_requests_organisation")
                            .from(JoinRequests::Table, JoinRequests::OrganisationId)
                            .to(Organisations::Table, Organisations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, columns, unique) in [
            (
                "join_requests_by_organisation",
                vec![JoinRequests::OrganisationId, JoinRequests::Id],
                false,
            ),
            (
                "join_requests_by_address",
                vec![JoinRequests::OrganisationId, JoinRequests::EmailKey],
                false,
            ),
            ("join_requests_by_token", vec![JoinRequests::TokenHash], true),
        ] {
            let mut index = Index::create();
            index.name(name).table(JoinRequests::Table);
            for column in columns {
                index.col(column);
            }
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        // One live request per address and organisation, whatever a bug
        // in the locking would let through (both databases take partial
        // indexes).
        manager
            .get_connection()
            .execute_unprepared(
                r#"CREATE UNIQUE INDEX "join_requests_live_per_address" ON "join_requests" ("organisation_id", "email_key") WHERE "state" IN ('UNCONFIRMED', 'OPEN')"#,
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(JoinRequests::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum JoinRequests {
    Table,
    Id,
    OrganisationId,
    FirstName,
    Surname,
    Email,
    EmailKey,
    BirthDate,
    Language,
    Reason,
    State,
    TokenHash,
    ExpiresAt,
    MailedAt,
    CreatedAt,
    ConfirmedAt,
    DecidedBy,
    DecidedAt,
    DecisionNote,
    UserId,
}

#[derive(DeriveIden)]
enum Organisations {
    Table,
    Id,
}
