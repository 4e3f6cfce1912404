use sea_orm::ConnectionTrait;
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
        .await?;
        // Open verification links from before the hold: who asked for
        // their change is not recorded, so each is held as if an
        // administrator had (72 hours from when it was made, the default).
        // A person's own change waits at most that long once; an
        // administrator's cannot be confirmed at once after the upgrade.
        let hold = Query::update()
            .table(ActivationSecrets::Table)
            .value(
                ActivationSecrets::UsableFrom,
                Expr::col(ActivationSecrets::CreatedAt).add(HOLD_MS),
            )
            .and_where(Expr::col(ActivationSecrets::Kind).eq("EMAIL"))
            .and_where(Expr::col(ActivationSecrets::UsedAt).is_null())
            .and_where(Expr::col(ActivationSecrets::RevokedAt).is_null())
            .to_owned();
        manager.get_connection().execute(&hold).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::drop_column(manager, ActivationSecrets::Table, ActivationSecrets::UsableFrom).await
    }
}

/// ORGADMIN_EMAIL_CHANGE_HOLD_HOURS' default.
const HOLD_MS: i64 = 72 * 60 * 60 * 1000;

#[derive(DeriveIden)]
enum ActivationSecrets {
    Table,
    Kind,
    CreatedAt,
    UsedAt,
    RevokedAt,
    UsableFrom,
}
