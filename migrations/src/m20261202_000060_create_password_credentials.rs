use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // R-AUTH-2: a person's password (argon2id PHC string, never the
        // password) and the login lockout state that guards it. One row per
        // user who has set a password.
        manager
            .create_table(
                Table::create()
                    .table(PasswordCredentials::Table)
                    .col(uuid(PasswordCredentials::UserId).primary_key())
                    .col(string(PasswordCredentials::Phc))
                    .col(big_integer(PasswordCredentials::SetAt))
                    // Attempts taken since the last success or lock; taken
                    // before the password is checked, so parallel guesses
                    // cannot pass the limit.
                    .col(integer(PasswordCredentials::FailedAttempts).default(0))
                    // Consecutive locks: each lock lasts longer.
                    .col(integer(PasswordCredentials::Lockouts).default(0))
                    .col(big_integer_null(PasswordCredentials::LockedUntil))
                    .col(big_integer_null(PasswordCredentials::LastLoginAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("password_credentials_user")
                            .from(PasswordCredentials::Table, PasswordCredentials::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PasswordCredentials::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum PasswordCredentials {
    Table,
    UserId,
    Phc,
    SetAt,
    FailedAttempts,
    Lockouts,
    LockedUntil,
    LastLoginAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}
