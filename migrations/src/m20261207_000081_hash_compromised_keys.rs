use sea_orm::ConnectionTrait;
use sea_orm_migration::prelude::*;
use uuid::Uuid;

/// R-CERT-4: a key revoked as compromised is refused by its hash
/// (`public_key_hash`, migration 80), which migration 80 left empty for
/// the certificates issued before it. A certificate revoked as compromised
/// before the upgrade was therefore no refusal at all: its key could be
/// certified again. Their hashes are filled in from the DER (few rows:
/// only those revoked for a compromised key). Certificates that end from
/// now on get theirs as they end.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let rows = db
            .query_all(
                &Query::select()
                    .columns([Certificates::Id, Certificates::Der])
                    .from(Certificates::Table)
                    .and_where(Expr::col(Certificates::PublicKeyHash).is_null())
                    .and_where(Expr::col(Certificates::Der).is_not_null())
                    .and_where(Expr::col(Certificates::RevocationReason).eq("KEY_COMPROMISED"))
                    .to_owned(),
            )
            .await?;
        for row in rows {
            let id: Uuid = row.try_get("", "id")?;
            let der: Vec<u8> = row.try_get("", "der")?;
            let Ok((_, certificate)) = x509_parser::parse_x509_certificate(&der) else {
                tracing::warn!(%id, "a certificate revoked as compromised does not parse; its key cannot be refused");
                continue;
            };
            use sha2::Digest;
            let hash = hex::encode(sha2::Sha256::digest(certificate.tbs_certificate.subject_pki.raw));
            db.execute(
                &Query::update()
                    .table(Certificates::Table)
                    .value(Certificates::PublicKeyHash, hash)
                    .and_where(Expr::col(Certificates::Id).eq(id))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // The hashes are true of their certificates: kept.
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Certificates {
    Table,
    Id,
    Der,
    PublicKeyHash,
    RevocationReason,
}
