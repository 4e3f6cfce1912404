use sea_orm::ConnectionTrait;
use sea_orm_migration::prelude::*;

/// R-USR-5, R-USR-9: a profile deleted before this release kept the
/// person's CPR number (hash and ciphertext), birth date, password,
/// authenticator app, login challenges and activation links, none of which
/// a deleted profile has a use for, and their rights requests stayed open
/// (a rejection then mailed an address that may be someone else's). Deletion forgets them from now on
/// (`forget_deleted_person_in`); this forgets them for the profiles deleted
/// before. Pods of the previous release that delete during the rollout
/// still leave theirs behind (few rows; the next release's migration can
/// sweep again).
#[derive(DeriveMigrationName)]
pub struct Migration;

const DELETED: &str = "SELECT id FROM users WHERE state = 'DELETED'";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Raw SQL: the same statements on both databases.
        let db = manager.get_connection();
        db.execute_unprepared(
            "UPDATE users SET cpr_hash = NULL, cpr_ciphertext = NULL, birth_date = NULL \
             WHERE state = 'DELETED' \
             AND (cpr_hash IS NOT NULL OR cpr_ciphertext IS NOT NULL OR birth_date IS NOT NULL)",
        )
        .await?;
        db.execute_unprepared(&format!(
            "UPDATE rights_requests SET state = 'REJECTED', decided_by = 'system:upgrade', \
             decided_at = {now}, decision_note = 'closed: the person''s profile was deleted' \
             WHERE state = 'OPEN' AND requester_id IN ({DELETED})",
            now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        ))
        .await?;
        for table in [
            "password_credentials",
            "totp_credentials",
            "login_challenges",
            "activation_secrets",
        ] {
            db.execute_unprepared(&format!("DELETE FROM {table} WHERE user_id IN ({DELETED})"))
                .await?;
        }
        Ok(())
    }

    /// What was forgotten cannot come back.
    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}
