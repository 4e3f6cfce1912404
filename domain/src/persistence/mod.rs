//! Persistence: connections, migrations, and the mapping between rows and
//! domain types. Nothing outside this module sees a sea-orm entity.

pub(crate) mod entities;
pub(crate) mod history;
pub(crate) mod mapping;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use orgadmin_migrations::MigratorTrait;
use sea_orm::sqlx::sqlite::SqliteJournalMode;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

/// How long a SQLite writer waits for another process's write to finish
/// before it gives up (UNAVAILABLE, retryable).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the pool. SQLite gets one connection: it has one writer anyway, and a
/// single connection turns lock contention within a process into plain
/// queueing. Between processes (a separate worker) SQLite's own locks decide;
/// see [`begin_write`].
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .connect_timeout(Duration::from_secs(10))
        // A call that waited this long for a connection is better refused
        // (UNAVAILABLE, retried by the client) than kept in memory.
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false)
        // No ping on every checkout (sqlx's default: a round trip per query
        // and per transaction); see `worth_a_ping`.
        .test_before_acquire(false)
        .map_sqlx_postgres_before_acquire(|conn, meta| {
            Box::pin(async move {
                if worth_a_ping(meta.idle_for) {
                    sea_orm::sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .map_sqlx_sqlite_before_acquire(|conn, meta| {
            Box::pin(async move {
                if worth_a_ping(meta.idle_for) {
                    sea_orm::sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .map_sqlx_postgres_opts(|postgres| {
            // A DATABASE_URL that sets one of these (`?options=-c …`) keeps
            // its own value.
            let given = postgres.get_options().unwrap_or_default().to_owned();
            let ours: Vec<(&str, &str)> = POSTGRES_SESSION_LIMITS
                .iter()
                .copied()
                .filter(|(name, _)| !sets_option(&given, name))
                .collect();
            postgres.options(ours)
        })
        // Set on every connection the pool opens, not once: a reconnected
        // connection without a busy timeout fails at once on a lock.
        // WAL lets a second process read while this one writes.
        .map_sqlx_sqlite_opts(|sqlite| {
            sqlite
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
        });
    if url.starts_with("sqlite:") {
        options.max_connections(1).min_connections(1);
    } else {
        options.max_connections(max_connections).min_connections(1);
    }
    Database::connect(options).await
}

/// Limits on every PostgreSQL session of the pool. No wait on a row lock
/// is endless: a session left holding one (an operator's open psql
/// transaction, a client gone mid-transaction) fails the calls and sweeps
/// behind it after `lock_timeout` (UNAVAILABLE, retried) instead of stalling
/// them, the worker's sweep included, for good. A session of ours left idle
/// inside a transaction (a bug of ours, or of a driver) is ended by the
/// server, and its locks with it. Both far above any wait a call of ours
/// has when things work (an import batch holds its organisation for well
/// under a second).
const POSTGRES_SESSION_LIMITS: [(&str, &str); 2] =
    [("lock_timeout", "30s"), ("idle_in_transaction_session_timeout", "60s")];

/// Whether a libpq `options` string (`-c name=value`, `-cname=value`,
/// `--name=value`) sets `name` itself (`deadlock_timeout` does not set
/// `lock_timeout`).
fn sets_option(options: &str, name: &str) -> bool {
    options.split_whitespace().any(|word| {
        let word = word
            .strip_prefix("-c")
            .or_else(|| word.strip_prefix("--"))
            .unwrap_or(word);
        word.split_once('=').is_some_and(|(key, _)| key == name)
    })
}

/// A pooled connection idle this long is pinged before it is handed out: it
/// may have been cut meanwhile (server idle timeout, proxy, failover).
const PING_WHEN_IDLE: Duration = Duration::from_secs(1);
/// After a lost connection was seen, every checkout pings for this long:
/// connections opened before the loss are likely cut too. Longer than
/// `PING_WHEN_IDLE`, so a connection not checked out in this window is
/// pinged anyway when it next is.
const PING_AFTER_LOSS_MS: i64 = 30_000;

/// When a lost connection was last seen (ms since the epoch; 0: never). For
/// the whole process: an extra ping for another pool costs little.
static CONNECTION_LOST_AT: AtomicI64 = AtomicI64::new(0);

/// Called where a database error is classified as a lost connection.
pub(crate) fn connection_lost() {
    CONNECTION_LOST_AT.store(crate::model::now_millis(), Ordering::Relaxed);
}

/// Whether to ping a pooled connection before a call uses it. sqlx pings on
/// every checkout by default: one more round trip per statement and per
/// transaction, which was a third of the round trips of GetUser (profile in
/// BENCHMARKS.md, stop 15). A hot connection is not pinged; one idle for
/// `PING_WHEN_IDLE` is, and so is every one for `PING_AFTER_LOSS_MS` after a
/// lost connection was seen, so after a failover or terminated backends the
/// dead ones are weeded out by pings, not by calls: the call that meets
/// the first dead connection answers UNAVAILABLE (retryable), as a call in
/// flight does.
fn worth_a_ping(idle_for: Duration) -> bool {
    idle_for >= PING_WHEN_IDLE
        || crate::model::now_millis() - CONNECTION_LOST_AT.load(Ordering::Relaxed) < PING_AFTER_LOSS_MS
}

/// Begins a transaction that will write. Every domain write starts here,
/// never with a bare `begin()`.
///
/// On SQLite it is `BEGIN IMMEDIATE`: it takes the database's write lock at
/// once, waiting up to the busy timeout for another process's writer. A
/// default (deferred) transaction that reads first and writes later cannot
/// wait: if another process wrote in between, its snapshot is stale and the
/// write fails at once with "database is locked" (SQLITE_BUSY_SNAPSHOT, 517),
/// whatever the busy timeout. On PostgreSQL it is a plain `BEGIN`.
/// A savepoint inside a write transaction: what runs in it can be rolled
/// back alone (an import row the rules refuse) while the outer transaction,
/// which already holds the write lock, goes on.
pub async fn savepoint(txn: &DatabaseTransaction) -> Result<DatabaseTransaction, DbErr> {
    use sea_orm::TransactionTrait;
    txn.begin().await
}

pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    // Measured as pool wait: BEGIN is one short round trip, so the time is
    // mostly waiting for a free connection (or SQLite's write lock).
    let started = std::time::Instant::now();
    let (txn, backend) = if db.get_database_backend() == DbBackend::Sqlite {
        let txn = db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await;
        (txn, "sqlite")
    } else {
        (db.begin().await, "postgresql")
    };
    crate::metrics::pool_wait(backend, started.elapsed());
    txn
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

/// users -> password_credentials, for reading a person with their password
/// in one query.
pub(crate) fn password_of_user() -> sea_orm::RelationDef {
    use sea_orm::EntityTrait;
    entities::password_credential::Entity::belongs_to(entities::user::Entity)
        .from(entities::password_credential::Column::UserId)
        .to(entities::user::Column::Id)
        .into()
}

/// users -> organisations, for joining a user's organisation into the same
/// query.
pub(crate) fn organisation_of_user() -> sea_orm::RelationDef {
    use sea_orm::EntityTrait;
    entities::user::Entity::belongs_to(entities::organisation::Entity)
        .from(entities::user::Column::OrganisationId)
        .to(entities::organisation::Column::Id)
        .into()
}

/// `column LIKE '%text%'` with `text` taken literally (its `%`, `_` and `\`
/// escaped): a search for `50%` finds `50%`, not everything.
pub(crate) fn contains_literally(column: impl sea_orm::ColumnTrait, text: &str) -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::{Expr, ExprTrait, LikeExpr};
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    Expr::col(column).like(LikeExpr::new(format!("%{escaped}%")).escape('\\'))
}

/// Inserts rows in multi-row statements small enough for either database's
/// limit on bound values (SQLite's is 32,766): one round trip per few
/// hundred rows instead of one per row.
pub(crate) async fn insert_in_chunks<A>(db: &impl ConnectionTrait, rows: Vec<A>) -> Result<(), DbErr>
where
    A: sea_orm::ActiveModelTrait,
{
    let per_statement = rows_per_statement::<A::Entity>();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<A> = rows.by_ref().take(per_statement).collect();
        <A::Entity as sea_orm::EntityTrait>::insert_many(chunk)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// `INSERT INTO … SELECT … FROM source`: the values `row` sets, once for
/// each row of `source` (a common table expression of the same statement;
/// none when it has none), with the columns of `from_source` taken from
/// that row instead (values only it knows). For a write that must happen
/// only if another part of the same statement found its row.
pub(crate) fn insert_for_each_row_of<A>(
    row: A,
    source: sea_orm::sea_query::Alias,
    from_source: Vec<(
        <A::Entity as sea_orm::EntityTrait>::Column,
        sea_orm::sea_query::SimpleExpr,
    )>,
) -> sea_orm::sea_query::InsertStatement
where
    A: sea_orm::ActiveModelTrait,
{
    use sea_orm::sea_query::{Expr, Query};
    use sea_orm::{EntityTrait, IdenStatic, Iterable};
    let mut from_source = from_source;
    let (mut columns, mut values) = (Vec::new(), Vec::new());
    for column in <A::Entity as EntityTrait>::Column::iter() {
        let taken = from_source.iter().position(|(c, _)| c.as_str() == column.as_str());
        let value = match taken {
            Some(at) => from_source.swap_remove(at).1,
            None => match row.get(column).into_value() {
                Some(value) => Expr::val(value),
                None => continue,
            },
        };
        columns.push(column);
        values.push(value);
    }
    assert!(
        from_source.is_empty(),
        "a column to take from the source is not the table's"
    );
    let mut insert = Query::insert();
    insert
        .into_table(A::Entity::default())
        .columns(columns)
        .select_from(Query::select().exprs(values).from(source).to_owned())
        .expect("as many values as columns");
    insert
}

/// How many rows of this table one statement may carry.
pub(crate) fn rows_per_statement<E: sea_orm::EntityTrait>() -> usize {
    use sea_orm::Iterable;
    const BOUND_VALUES: usize = 30_000;
    (BOUND_VALUES / E::Column::iter().count().max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_sets_a_session_limit_only_by_its_own_name() {
        assert!(sets_option("-c lock_timeout=300ms", "lock_timeout"));
        assert!(sets_option("-clock_timeout=1s -c statement_timeout=0", "lock_timeout"));
        assert!(sets_option("--lock_timeout=1s", "lock_timeout"));
        assert!(!sets_option("-c deadlock_timeout=2s", "lock_timeout"));
        assert!(!sets_option("", "lock_timeout"));
        assert!(!sets_option("-c lock_timeout", "lock_timeout"));
    }
}
