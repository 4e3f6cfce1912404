//! Migrations as an upgrade meets them: each one is applied whole or not
//! at all, on SQLite as on PostgreSQL, so one stopped midway is applied
//! again at the next start.

use orgadmin_migrations::{Migrator, MigratorTrait};
use orgadmin_tests::*;
use sea_orm::ConnectionTrait;

both_backends!(a_migration_that_fails_midway_leaves_nothing_behind);

/// Migration 80 adds a column, then an index. With its index name taken
/// (standing in for whatever stops a migration midway: a killed pod, a full
/// disk), it fails at the index; the column must be gone with it, and the
/// migration apply once the obstacle is gone. On SQLite the column stayed,
/// and every later start failed on "duplicate column name".
async fn a_migration_that_fails_midway_leaves_nothing_behind(backend: Backend) {
    let app = TestApp::start(backend).await;
    let db = app.domain.db();
    app.undo_migrations_from("m20261207_000080_index_certificate_keys")
        .await;
    db.execute_unprepared("CREATE INDEX certificates_public_key_hash ON users (id)")
        .await
        .expect("the obstacle");
    let failed = Migrator::up(db, None).await;
    assert!(failed.is_err(), "migration 80 applied over its obstacle");
    let column = db
        .execute_unprepared("SELECT public_key_hash FROM certificates WHERE 1 = 0")
        .await;
    assert!(column.is_err(), "half of migration 80 stayed: the column exists");
    db.execute_unprepared("DROP INDEX certificates_public_key_hash")
        .await
        .expect("the obstacle removed");
    Migrator::up(db, None).await.expect("migration 80 applies once it can");
    db.execute_unprepared("SELECT public_key_hash FROM certificates WHERE 1 = 0")
        .await
        .expect("the column is there");
    app.finish().await;
}
