use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(uuid(Users::Id).primary_key())
                    .col(uuid(Users::OrganisationId))
                    .col(string(Users::State))
                    .col(string(Users::FirstName))
                    .col(string(Users::Surname))
                    .col(string(Users::Email))
                    .col(string_null(Users::Username))
                    // Keyed hash for look-up, ciphertext for reading back: a dump
                    // of the table does not reveal a CPR number.
                    .col(string_null(Users::CprHash))
                    .col(text_null(Users::CprCiphertext))
                    .col(string_null(Users::BirthDate))
                    .col(uuid_null(Users::UnitId))
                    .col(string_null(Users::Phone))
                    .col(string(Users::Language))
                    .col(text(Users::ExternalIds))
                    .col(text(Users::IdentificationMeans))
                    .col(boolean(Users::SigningRight))
                    .col(boolean(Users::Anonymous))
                    .col(string_null(Users::LegacyId))
                    .col(big_integer_null(Users::DeactivatedUntil))
                    .col(big_integer_null(Users::ActivatedAt))
                    .col(string_null(Users::CreateRequestId))
                    .col(big_integer(Users::Version))
                    .col(big_integer(Users::CreatedAt))
                    .col(big_integer(Users::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Users::Table, Users::OrganisationId)
                            .to(Organisations::Table, Organisations::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Users::Table, Users::UnitId)
                            .to(Units::Table, Units::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // Keyset pages of one organisation's users.
        manager
            .create_index(
                Index::create()
                    .name("users_organisation_id")
                    .table(Users::Table)
                    .col(Users::OrganisationId)
                    .col(Users::Id)
                    .to_owned(),
            )
            .await?;
        // The timed-reactivation sweep finds due users by this index.
        manager
            .create_index(
                Index::create()
                    .name("users_state_deactivated_until")
                    .table(Users::Table)
                    .col(Users::State)
                    .col(Users::DeactivatedUntil)
                    .to_owned(),
            )
            .await?;
        // A retried create with the same request id finds the first one's user.
        manager
            .create_index(
                Index::create()
                    .name("users_create_request_id")
                    .table(Users::Table)
                    .col(Users::OrganisationId)
                    .col(Users::CreateRequestId)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Users::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    OrganisationId,
    State,
    FirstName,
    Surname,
    Email,
    Username,
    CprHash,
    CprCiphertext,
    BirthDate,
    UnitId,
    Phone,
    Language,
    ExternalIds,
    IdentificationMeans,
    SigningRight,
    Anonymous,
    LegacyId,
    DeactivatedUntil,
    ActivatedAt,
    CreateRequestId,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Organisations {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Units {
    Table,
    Id,
}
