use sea_orm::{ConnectionTrait, Statement, Value};
use sea_orm_migration::prelude::*;
use uuid::Uuid;

/// R-AUTH-1, R-ACC-5: a service account's API tokens are made through a
/// share, by a person, and act only while that person and the share do.
/// Before that rule (up to commit 645cfd0) an account could make tokens
/// with a token of its own: such a token names the account itself as its
/// maker, so no share's end and no person's deactivation reaches it, and it
/// acts for up to two years. They are revoked; the people the account is
/// shared with make new ones.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let revoked = revoke_self_made_service_account_tokens(manager.get_connection()).await?;
        if revoked > 0 {
            tracing::warn!(
                revoked,
                "revoked API tokens that service accounts had made for themselves; the account's sharers make new ones"
            );
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // A revocation is not undone.
        Ok(())
    }
}

/// Revokes every open API token a service account made for itself; returns
/// how many. Compared in Rust: the ids are text on PostgreSQL's side of
/// `created_by` and a blob in SQLite's `user_id`.
pub async fn revoke_self_made_service_account_tokens(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT t.id, t.user_id, t.created_by FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.kind = 'API' AND t.revoked_at IS NULL AND u.service_account = TRUE",
        ))
        .await?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut revoked = 0;
    for row in rows {
        let id: Uuid = row.try_get("", "id")?;
        let user_id: Uuid = row.try_get("", "user_id")?;
        let created_by: String = row.try_get("", "created_by")?;
        if created_by != format!("user:{user_id}") {
            continue;
        }
        let update = Query::update()
            .table(ApiTokens::Table)
            .value(ApiTokens::RevokedAt, Value::from(now))
            .and_where(Expr::col(ApiTokens::Id).eq(id))
            .and_where(Expr::col(ApiTokens::RevokedAt).is_null())
            .to_owned();
        revoked += db.execute(&update).await?.rows_affected();
    }
    Ok(revoked)
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    RevokedAt,
}
