//! Persistence: connections, migrations, and the mapping between rows and
//! domain types. Nothing outside this module sees a sea-orm entity.

pub(crate) mod entities;
pub(crate) mod history;
pub(crate) mod mapping;

use std::time::Duration;

use orgadmin_migrations::MigratorTrait;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};

/// Opens the pool. SQLite gets one connection: it has one writer anyway, and a
/// single connection turns lock contention into plain queueing.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .connect_timeout(Duration::from_secs(10))
        // A call that waited this long for a connection is better refused
        // (UNAVAILABLE, retried by the client) than kept in memory.
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    if url.starts_with("sqlite:") {
        options.max_connections(1).min_connections(1);
    } else {
        options.max_connections(max_connections).min_connections(1);
    }
    let db = Database::connect(options).await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        // WAL lets a second process (a separate worker) read while we write;
        // the busy timeout makes it wait instead of failing.
        db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
        db.execute_unprepared("PRAGMA busy_timeout=10000").await?;
        db.execute_unprepared("PRAGMA foreign_keys=ON").await?;
    }
    Ok(db)
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    orgadmin_migrations::Migrator::up(db, None).await
}

pub(crate) fn is_postgres(db: &impl ConnectionTrait) -> bool {
    db.get_database_backend() == DbBackend::Postgres
}

/// users -> user_roles, for joining a user's roles into the same query.
pub(crate) fn roles_of_user() -> sea_orm::RelationDef {
    use sea_orm::EntityTrait;
    entities::user_role::Entity::belongs_to(entities::user::Entity)
        .from(entities::user_role::Column::UserId)
        .to(entities::user::Column::Id)
        .into()
}
