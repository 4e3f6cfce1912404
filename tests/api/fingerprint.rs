//! The fingerprint that proves "a denied call changed nothing" (used by the
//! rights matrix and every refused write) sees a change to any value of any
//! table, including the ones row counts and version sums miss, and tables
//! added after it was written.

use std::collections::BTreeSet;

use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use sea_orm::ConnectionTrait;

both_backends!(fingerprint_sees_every_change);

/// The tables whose fingerprint differs between `before` and `after`.
fn changed(before: &Fingerprint, after: &Fingerprint) -> BTreeSet<String> {
    before
        .keys()
        .chain(after.keys())
        .filter(|table| before.get(*table) != after.get(*table))
        .cloned()
        .collect()
}

async fn fingerprint_sees_every_change(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    // A row in each table the changes below touch.
    app.orgs()
        .create_unit(req(
            &fixture.admin_token,
            pb::CreateUnitRequest {
                organisation_id: fixture.org.id.clone(),
                kind: pb::UnitKind::Department as i32,
                name: "Salg".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create unit");
    app.notes()
        .update_notification_preferences(req(
            &fixture.admin_token,
            pb::UpdateNotificationPreferencesRequest {
                preferences: vec![pb::NotificationPreference {
                    kind: pb::NotificationKind::AnonymityRequest as i32,
                    channel: pb::DeliveryChannel::InApp as i32,
                }],
            },
        ))
        .await
        .expect("preferences");
    let (_, member_token) = app.member(&fixture, "Anonym", &[]).await;
    app.users()
        .request_anonymity(req(
            &member_token,
            pb::RequestAnonymityRequest {
                reason: "Beskyttet adresse efter flytning".into(),
            },
        ))
        .await
        .expect("a request, and so a notification");
    assert_eq!(
        app.fingerprint().await,
        app.fingerprint().await,
        "stable when nothing changes"
    );

    // Changes that leave every row count and version sum as it was: a
    // unit's name, a read mark, a preference, a role, a mail's state.
    let db = app.domain.db();
    for (table, sql) in [
        ("units", "UPDATE units SET name = 'Indkøb'"),
        ("notifications", "UPDATE notifications SET read_at = 1"),
        (
            "notification_preferences",
            "UPDATE notification_preferences SET channel = channel || '-'",
        ),
        ("user_roles", "UPDATE user_roles SET role = role || '-'"),
        ("outbox_mails", "UPDATE outbox_mails SET state = 'SENT'"),
        ("organisations", "UPDATE organisations SET billing_reference = 'PO 17'"),
        // A table nobody listed.
        ("added_later", "CREATE TABLE added_later (note TEXT)"),
        ("added_later", "INSERT INTO added_later (note) VALUES ('x')"),
        ("added_later", "UPDATE added_later SET note = 'y'"),
    ] {
        let before = app.fingerprint().await;
        db.execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let after = app.fingerprint().await;
        assert_eq!(
            changed(&before, &after),
            BTreeSet::from([table.to_owned()]),
            "{sql}: before {before:?}, after {after:?}"
        );
    }
    app.domain
        .db()
        .execute_unprepared("DROP TABLE added_later")
        .await
        .unwrap();
    app.finish().await;
}
