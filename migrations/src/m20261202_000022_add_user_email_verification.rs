use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// R-USR-6: changing a user's e-mail re-verifies it. The new address waits in
/// `pending_email` until the link mailed to it is opened; the old one stays
/// in force meanwhile. `email_verified` says whether the address in force was
/// proved to reach the user (certificates put only verified addresses in a
/// certificate, R-CERT-2). Users who activated by a mailed link proved their
/// address; the backfill marks them.
const UP: &[&str] = &[
    "ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE",
    "ALTER TABLE users ADD COLUMN pending_email VARCHAR NULL",
    "UPDATE users SET email_verified = TRUE WHERE id IN \
     (SELECT user_id FROM activation_secrets WHERE kind = 'LINK' AND used_at IS NOT NULL)",
];

const DOWN: &[&str] = &[
    "ALTER TABLE users DROP COLUMN pending_email",
    "ALTER TABLE users DROP COLUMN email_verified",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, DOWN).await
    }
}
