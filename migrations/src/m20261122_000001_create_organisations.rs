use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Organisations::Table)
                    .col(uuid(Organisations::Id).primary_key())
                    .col(string(Organisations::Name))
                    .col(string_len_uniq(Organisations::Cvr, 8))
                    .col(text(Organisations::EanNumbers))
                    .col(text(Organisations::AllowedIdentificationMeans))
                    .col(boolean(Organisations::JoinRequestsAllowed))
                    .col(text(Organisations::CertificateKinds))
                    .col(string(Organisations::DeletionPolicy))
                    .col(integer(Organisations::MaxAdministrators))
                    .col(integer(Organisations::LicenceCount))
                    .col(string(Organisations::BillingName))
                    .col(string(Organisations::BillingAddress))
                    .col(string(Organisations::BillingEmail))
                    .col(string(Organisations::BillingReference))
                    .col(big_integer(Organisations::Version))
                    .col(big_integer(Organisations::CreatedAt))
                    .col(big_integer(Organisations::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Organisations::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Organisations {
    Table,
    Id,
    Name,
    Cvr,
    EanNumbers,
    AllowedIdentificationMeans,
    JoinRequestsAllowed,
    CertificateKinds,
    DeletionPolicy,
    MaxAdministrators,
    LicenceCount,
    BillingName,
    BillingAddress,
    BillingEmail,
    BillingReference,
    Version,
    CreatedAt,
    UpdatedAt,
}
