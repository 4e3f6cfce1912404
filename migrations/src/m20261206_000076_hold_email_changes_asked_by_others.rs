use sea_orm_migration::{prelude::*, schema::*};

/// R-USR-6, R-AUTH-2: an e-mail change asked by someone other than the
/// person (an administrator) is verifiable only after a hold: the person,
/// told at the address in force, has that long to withdraw it before the
/// new address takes over their password resets. The time its link starts
/// to work; none for the secrets that work at once.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::add_column(
            manager,
            ActivationSecrets::Table,
            big_integer_null(ActivationSecrets::UsableFrom).to_owned(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::drop_column(manager, ActivationSecrets::Table, ActivationSecrets::UsableFrom).await
    }
}

#[derive(DeriveIden)]
enum ActivationSecrets {
    Table,
    UsableFrom,
}
