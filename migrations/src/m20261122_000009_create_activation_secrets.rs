use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ActivationSecrets::Table)
                    .col(uuid(ActivationSecrets::Id).primary_key())
                    .col(uuid(ActivationSecrets::UserId))
                    // LINK (mailed token) or CODE (handed over by an administrator).
                    .col(string(ActivationSecrets::Kind))
                    // SHA-256 of the token or code; never the secret itself.
                    .col(string_len_uniq(ActivationSecrets::SecretHash, 64))
                    .col(integer(ActivationSecrets::FailedAttempts))
                    .col(big_integer(ActivationSecrets::ExpiresAt))
                    // Set when used, replaced or burned by too many attempts.
                    .col(big_integer_null(ActivationSecrets::UsedAt))
                    .col(big_integer_null(ActivationSecrets::RevokedAt))
                    .col(big_integer(ActivationSecrets::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("activation_secrets_user")
                    .table(ActivationSecrets::Table)
                    .col(ActivationSecrets::UserId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ActivationSecrets::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ActivationSecrets {
    Table,
    Id,
    UserId,
    Kind,
    SecretHash,
    FailedAttempts,
    ExpiresAt,
    UsedAt,
    RevokedAt,
    CreatedAt,
}
