use sea_orm_migration::prelude::*;

/// A mail whose content dies at a known time (a login code after its
/// minutes, a single-use link at its expiry) must not arrive after it: a
/// login code greylisted past its ten minutes arrived dead, hours later,
/// telling the person that someone else knows their password. The outbox
/// keeps when such a mail stops being worth sending; the worker parks it
/// then instead of sending it late. Empty for every other mail (and for
/// every row written before), which is sent however late as before.
#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &["ALTER TABLE outbox_mails ADD COLUMN deliver_before BIGINT NULL"];

const DOWN: &[&str] = &["ALTER TABLE outbox_mails DROP COLUMN deliver_before"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, DOWN).await
    }
}
