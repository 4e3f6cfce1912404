//! Migrations as an upgrade meets them: each one is applied whole or not
//! at all, on SQLite as on PostgreSQL, so one stopped midway is applied
//! again at the next start.

use orgadmin_migrations::{Migrator, MigratorTrait};
use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use sea_orm::ConnectionTrait;

both_backends!(
    a_migration_that_fails_midway_leaves_nothing_behind,
    profiles_deleted_before_the_upgrade_forget_the_person,
);

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

/// Migration 83: a profile deleted by an earlier release (which kept the
/// person's CPR number, birth date and credentials) forgets them at the
/// upgrade, as a profile deleted now does.
async fn profiles_deleted_before_the_upgrade_forget_the_person(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (gone, email) = app.member_with_password(&fixture, "Gitte", &[]).await;
    app.request_password_reset(&email).await;
    let session = app.login(&email, TEST_PASSWORD).await.expect("logged in").session_token;
    app.access()
        .request_rights(req(
            &session,
            pb::RequestRightsRequest {
                requested: Some(pb::request_rights_request::Requested::Role(pb::Role::UserAdmin as i32)),
                reason: "Jeg overtager brugeradministrationen".into(),
            },
        ))
        .await
        .expect("asked");
    let id: uuid::Uuid = gone.id.parse().unwrap();
    app.undo_migrations_from("m20261207_000083_forget_deleted_people").await;
    // As the earlier release deleted: the state and the licence, nothing else.
    app.execute_bound("UPDATE users SET state = 'DELETED' WHERE id = $1", vec![id.into()])
        .await;
    let org: uuid::Uuid = fixture.org.id.parse().unwrap();
    app.execute_bound(
        "UPDATE organisations SET licences_used = licences_used - 1 WHERE id = $1",
        vec![org.into()],
    )
    .await;
    assert_eq!(
        crate::lifecycle::held_of(&app, &gone.id).await.len(),
        4,
        "the test's person holds a CPR number, a password, links and a request"
    );
    Migrator::up(app.domain.db(), None).await.expect("migration 83");
    assert_eq!(
        crate::lifecycle::held_of(&app, &gone.id).await,
        Vec::<String>::new(),
        "a profile deleted before the upgrade still holds"
    );
    app.finish().await;
}
