use sea_orm_migration::{prelude::*, schema::*};

/// R-CERT-4: a key reported compromised is not certified again, and a
/// renewal is over a new key. Both need the certificates of a key: its
/// SubjectPublicKeyInfo's SHA-256, kept beside each certificate issued from
/// now on (certificates issued before carry none; their DER has the key).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::add_column(
            manager,
            Certificates::Table,
            string_null(Certificates::PublicKeyHash).to_owned(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("certificates_public_key_hash")
                    .table(Certificates::Table)
                    .col(Certificates::PublicKeyHash)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("certificates_public_key_hash")
                    .table(Certificates::Table)
                    .to_owned(),
            )
            .await?;
        crate::drop_column(manager, Certificates::Table, Certificates::PublicKeyHash).await
    }
}

#[derive(DeriveIden)]
enum Certificates {
    Table,
    PublicKeyHash,
}
