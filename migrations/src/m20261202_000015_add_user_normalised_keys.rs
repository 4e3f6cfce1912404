use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use sea_orm_migration::prelude::*;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// E-mail addresses and usernames are login ids, unique without regard to
/// case or Unicode form (`Case.Test@Probe.dk` is `case.test@probe.dk`); the
/// text search of R-USR-8 folds non-ASCII letters too (`ÆRØ` finds `Ærø`).
/// Neither database can do that in SQL on both backends (SQLite's `lower()`
/// folds ASCII only; neither normalises Unicode), so the domain stores keys
/// computed in Rust on every write (`orgadmin_domain::normalise`):
/// `email_key`, `username_key` (NFC, then lower case, then NFC) and
/// `search_text` (the keys of first name, surname and e-mail, space-separated),
/// and the partial unique indexes move to the keys, under their old names.
///
/// The backfill reads every user in pages and writes their keys with those
/// same rules; on the way it stores first name and surname in NFC and birth
/// dates in their one form `YYYY-MM-DD` (`1990-5-17` was accepted before).
/// Stored e-mail addresses and usernames are left as they were typed.
///
/// Existing duplicates: if two live users already share an e-mail key in one
/// organisation (or a username key anywhere), the older one (by id, which is
/// time-ordered) keeps the key and the newer one gets none: the migration
/// does not fail (that would stop a deploy on data only an administrator can
/// sort out), no new duplicate can be made, and each such user is logged at
/// WARN with its id and the older user's. An administrator resolves one by
/// changing its address or username (refused with EMAIL_TAKEN /
/// USERNAME_TAKEN while it still collides), or deleting it.
const ADD_COLUMNS: &[&str] = &[
    "ALTER TABLE users ADD COLUMN email_key TEXT",
    "ALTER TABLE users ADD COLUMN username_key TEXT",
    "ALTER TABLE users ADD COLUMN search_text TEXT NOT NULL DEFAULT ''",
];

const MOVE_INDEXES: &[&str] = &[
    "DROP INDEX users_live_email",
    "DROP INDEX users_live_username",
    "CREATE UNIQUE INDEX users_live_email ON users (organisation_id, email_key) WHERE state <> 'DELETED'",
    "CREATE UNIQUE INDEX users_live_username ON users (username_key) \
     WHERE state <> 'DELETED' AND username_key IS NOT NULL",
];

/// Back to the indexes of migration 7. Names and birth dates stay in their
/// normal form: the old code reads them as well.
const DOWN: &[&str] = &[
    "DROP INDEX users_live_email",
    "DROP INDEX users_live_username",
    "CREATE UNIQUE INDEX users_live_email ON users (organisation_id, email) WHERE state <> 'DELETED'",
    "CREATE UNIQUE INDEX users_live_username ON users (username) WHERE state <> 'DELETED' AND username IS NOT NULL",
    "ALTER TABLE users DROP COLUMN search_text",
    "ALTER TABLE users DROP COLUMN username_key",
    "ALTER TABLE users DROP COLUMN email_key",
];

const PAGE: usize = 1000;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, ADD_COLUMNS).await?;
        backfill(manager).await?;
        crate::execute_all(manager, MOVE_INDEXES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, DOWN).await
    }
}

fn nfc(text: &str) -> String {
    text.nfc().collect()
}

/// `orgadmin_domain::normalise::key` as of this migration.
fn key(text: &str) -> String {
    nfc(&nfc(text).to_lowercase())
}

/// `YYYY-MM-DD`, if `text` reads as a date at all; otherwise as it was.
fn canonical_date(text: String) -> String {
    chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map(|date| date.format("%Y-%m-%d").to_string())
        .unwrap_or(text)
}

async fn backfill(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let backend = db.get_database_backend();
    let param = |n: usize| match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    };
    let select = "SELECT id, organisation_id, state, first_name, surname, email, username, birth_date FROM users";
    let update = format!(
        "UPDATE users SET first_name = {}, surname = {}, birth_date = {}, email_key = {}, username_key = {}, \
         search_text = {} WHERE id = {}",
        param(1),
        param(2),
        param(3),
        param(4),
        param(5),
        param(6),
        param(7)
    );
    // Keys already held by a live user, and by whom.
    let mut emails: HashMap<(Uuid, String), Uuid> = HashMap::new();
    let mut usernames: HashMap<String, Uuid> = HashMap::new();
    let mut after: Option<Uuid> = None;
    loop {
        let statement = match after {
            None => Statement::from_string(backend, format!("{select} ORDER BY id LIMIT {PAGE}")),
            Some(last) => Statement::from_sql_and_values(
                backend,
                format!("{select} WHERE id > {} ORDER BY id LIMIT {PAGE}", param(1)),
                [Value::from(last)],
            ),
        };
        let rows = db.query_all_raw(statement).await?;
        for row in &rows {
            let id: Uuid = row.try_get("", "id")?;
            let organisation_id: Uuid = row.try_get("", "organisation_id")?;
            let state: String = row.try_get("", "state")?;
            let first_name = nfc(&row.try_get::<String>("", "first_name")?);
            let surname = nfc(&row.try_get::<String>("", "surname")?);
            let email: String = row.try_get("", "email")?;
            let username: Option<String> = row.try_get("", "username")?;
            let birth_date: Option<String> = row.try_get("", "birth_date")?;
            let live = state != "DELETED";

            let mut email_key = Some(key(&email));
            if live {
                let slot = (organisation_id, key(&email));
                if let Some(older) = emails.get(&slot) {
                    tracing::warn!(
                        user = %id, older_user = %older, organisation = %organisation_id,
                        "migration 15: this live user's e-mail address is an older live user's but for case or \
                         Unicode form; it keeps the address but holds no key until an administrator changes \
                         or deletes it"
                    );
                    email_key = None;
                } else {
                    emails.insert(slot, id);
                }
            }
            let mut username_key = username.as_deref().map(key);
            if live && let Some(k) = username_key.clone() {
                if let Some(older) = usernames.get(&k) {
                    tracing::warn!(
                        user = %id, older_user = %older,
                        "migration 15: this live user's username is an older live user's but for case or \
                         Unicode form; it keeps the username but holds no key until an administrator changes \
                         or deletes it"
                    );
                    username_key = None;
                } else {
                    usernames.insert(k, id);
                }
            }
            let search_text = format!("{} {} {}", key(&first_name), key(&surname), key(&email));
            let values: [Value; 7] = [
                first_name.into(),
                surname.into(),
                birth_date.map(canonical_date).into(),
                email_key.into(),
                username_key.into(),
                search_text.into(),
                id.into(),
            ];
            db.execute_raw(Statement::from_sql_and_values(backend, update.clone(), values))
                .await?;
            after = Some(id);
        }
        if rows.len() < PAGE {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_case_and_form() {
        assert_eq!(key("Case.Test@Probe.dk"), "case.test@probe.dk");
        assert_eq!(key("A\u{30A}SE"), "\u{E5}se");
        assert_eq!(canonical_date("1990-5-17".into()), "1990-05-17");
        assert_eq!(canonical_date("+1990-05-17".into()), "1990-05-17");
        assert_eq!(canonical_date("not a date".into()), "not a date");
    }
}
