use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // R-AUTH-3: an organisation may require a second factor of everyone
        // (seed 002: a code mailed at each login).
        manager
            .alter_table(
                Table::alter()
                    .table(Organisations::Table)
                    .add_column(boolean(Organisations::SecondFactorRequired).default(false))
                    .to_owned(),
            )
            .await?;
        // Sessions end after a while unused as well as at their absolute end.
        manager
            .alter_table(
                Table::alter()
                    .table(ApiTokens::Table)
                    .add_column(big_integer_null(ApiTokens::LastUsedAt))
                    .to_owned(),
            )
            .await?;
        // The step between a right password and a session: the code that
        // completes it (mailed; hashed with a server key, as a six-digit code
        // hashed bare is found by trying all of them) or the authenticator
        // app's, and the tries left.
        manager
            .create_table(
                Table::create()
                    .table(LoginChallenges::Table)
                    .col(uuid(LoginChallenges::Id).primary_key())
                    .col(uuid(LoginChallenges::UserId))
                    .col(string_uniq(LoginChallenges::TokenHash))
                    .col(string(LoginChallenges::Method))
                    .col(string_null(LoginChallenges::CodeHash))
                    .col(integer(LoginChallenges::AttemptsLeft))
                    .col(big_integer(LoginChallenges::CreatedAt))
                    .col(big_integer(LoginChallenges::ExpiresAt))
                    .col(big_integer_null(LoginChallenges::UsedAt))
                    .col(string_null(LoginChallenges::Peer))
                    .foreign_key(
                        ForeignKey::create()
                            .name("login_challenges_user")
                            .from(LoginChallenges::Table, LoginChallenges::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("login_challenges_by_user")
                    .table(LoginChallenges::Table)
                    .col(LoginChallenges::UserId)
                    .to_owned(),
            )
            .await?;
        // An authenticator app (RFC 6238): the shared secret, sealed with
        // the server's encryption key; usable once confirmed with a code. The
        // last time step used is kept, so a code works once.
        manager
            .create_table(
                Table::create()
                    .table(TotpCredentials::Table)
                    .col(uuid(TotpCredentials::UserId).primary_key())
                    .col(string(TotpCredentials::SecretSealed))
                    .col(big_integer(TotpCredentials::CreatedAt))
                    .col(big_integer_null(TotpCredentials::ConfirmedAt))
                    .col(big_integer_null(TotpCredentials::LastStep))
                    .foreign_key(
                        ForeignKey::create()
                            .name("totp_credentials_user")
                            .from(TotpCredentials::Table, TotpCredentials::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TotpCredentials::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(LoginChallenges::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiTokens::Table)
                    .drop_column(ApiTokens::LastUsedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Organisations::Table)
                    .drop_column(Organisations::SecondFactorRequired)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Organisations {
    Table,
    SecondFactorRequired,
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum LoginChallenges {
    Table,
    Id,
    UserId,
    TokenHash,
    Method,
    CodeHash,
    AttemptsLeft,
    CreatedAt,
    ExpiresAt,
    UsedAt,
    Peer,
}

#[derive(DeriveIden)]
enum TotpCredentials {
    Table,
    UserId,
    SecretSealed,
    CreatedAt,
    ConfirmedAt,
    LastStep,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}
