use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // R-CERT: one row per certificate from its order on: ORDERED (a
        // pickup token waits), ISSUED, then REVOKED, SUPERSEDED or EXPIRED.
        // The inventory is what search, export, the CRL, OCSP and the expiry
        // warnings read; the issued certificate itself is kept as DER.
        manager
            .create_table(
                Table::create()
                    .table(Certificates::Table)
                    .col(uuid(Certificates::Id).primary_key())
                    .col(uuid(Certificates::OrganisationId))
                    // EMPLOYEE, ORGANISATION or SYSTEM (the R-ORG-3 kinds).
                    .col(string(Certificates::Kind))
                    .col(string(Certificates::State))
                    // The user a user certificate is for; none for an
                    // organisation or system certificate.
                    .col(uuid_null(Certificates::HolderId))
                    .col(uuid(Certificates::ContactId))
                    // What an organisation or system certificate is for
                    // ("Payroll integration"); the CN of its subject.
                    .col(string_null(Certificates::Label))
                    // Comma-separated usages, e.g. AUTHENTICATION,SIGNING.
                    .col(string(Certificates::Usages))
                    .col(string_null(Certificates::Email))
                    // The certificate this one renews (SUPERSEDED on issue).
                    .col(uuid_null(Certificates::RenewsId))
                    .col(string_null(Certificates::PickupTokenHash))
                    .col(big_integer_null(Certificates::PickupExpiresAt))
                    // Lowercase hex, no leading zeros stripped: as issued.
                    .col(string_null(Certificates::Serial))
                    .col(text_null(Certificates::Subject))
                    // The subject lowercased and NFC-normalised, for search.
                    .col(text_null(Certificates::SearchText))
                    .col(string_null(Certificates::KeyAlgorithm))
                    .col(big_integer_null(Certificates::NotBefore))
                    .col(big_integer_null(Certificates::NotAfter))
                    .col(blob_null(Certificates::Der))
                    .col(big_integer_null(Certificates::RevokedAt))
                    .col(string_null(Certificates::RevocationReason))
                    // Expiry warnings sent (R-CERT-7): each once.
                    .col(big_integer_null(Certificates::Warned30At))
                    .col(big_integer_null(Certificates::Warned7At))
                    .col(big_integer(Certificates::Version))
                    .col(big_integer(Certificates::CreatedAt))
                    .col(big_integer(Certificates::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, columns, unique) in [
            ("certificates_serial", vec![Certificates::Serial], true),
            ("certificates_pickup_token", vec![Certificates::PickupTokenHash], true),
            (
                "certificates_organisation",
                vec![Certificates::OrganisationId, Certificates::Id],
                false,
            ),
            ("certificates_holder", vec![Certificates::HolderId], false),
            ("certificates_contact", vec![Certificates::ContactId], false),
            (
                "certificates_state_expiry",
                vec![Certificates::State, Certificates::NotAfter],
                false,
            ),
            (
                "certificates_organisation_expiry",
                vec![Certificates::OrganisationId, Certificates::NotAfter, Certificates::Id],
                false,
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(Certificates::Table);
            for column in columns {
                index.col(column);
            }
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        // R-CERT-5: every CRL the CA signed, numbered; the newest is served.
        // The number is the primary key, so two replicas publishing at once
        // cannot both use one number.
        manager
            .create_table(
                Table::create()
                    .table(CrlPublications::Table)
                    .col(big_integer(CrlPublications::CrlNumber).primary_key())
                    .col(big_integer(CrlPublications::ThisUpdate))
                    .col(big_integer(CrlPublications::NextUpdate))
                    .col(big_integer(CrlPublications::RevokedCount))
                    .col(blob(CrlPublications::Der))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CrlPublications::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Certificates::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Certificates {
    Table,
    Id,
    OrganisationId,
    Kind,
    State,
    HolderId,
    ContactId,
    Label,
    Usages,
    Email,
    RenewsId,
    PickupTokenHash,
    PickupExpiresAt,
    Serial,
    Subject,
    SearchText,
    KeyAlgorithm,
    NotBefore,
    NotAfter,
    Der,
    RevokedAt,
    RevocationReason,
    Warned30At,
    Warned7At,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum CrlPublications {
    Table,
    CrlNumber,
    ThisUpdate,
    NextUpdate,
    RevokedCount,
    Der,
}
