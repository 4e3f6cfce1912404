//! Overload: the server bounds the calls it works on at once and refuses the
//! rest at once, instead of queueing them in memory.

use std::time::{Duration, Instant};

use orgadmin_domain::DomainSettings;
use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use sea_orm::TransactionTrait;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_types::StatusExt;

both_backends!(calls_over_the_in_flight_bound_are_shed);

async fn calls_over_the_in_flight_bound_are_shed(backend: Backend) {
    // One database connection, two calls at once.
    let app = TestApp::start_limited(backend, DomainSettings::default(), 1, 2).await;
    let fixture = app.org_with_admin().await;
    let get = |app: &TestApp| {
        let mut users = app.users();
        let (token, id) = (fixture.admin_token.clone(), fixture.admin.id.clone());
        async move { users.get_user(req(&token, pb::GetUserRequest { id })).await }
    };
    // The test takes the only connection: calls that need it wait.
    let holder = app.domain.db().begin().await.unwrap();
    let waiting: Vec<_> = (0..2).map(|_| tokio::spawn(get(&app))).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    for _ in 0..4 {
        let refused = assert_code(get(&app).await, Code::ResourceExhausted);
        assert_eq!(refused.get_error_details().error_info().unwrap().reason, "OVERLOADED");
        assert!(refused.get_error_details().retry_info().is_some(), "says when to retry");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, not after waiting: {:?}",
        started.elapsed()
    );
    // Health probes are outside the bound.
    let health = app
        .health()
        .check(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");

    drop(holder);
    for call in waiting {
        let user = call
            .await
            .unwrap()
            .expect("the calls within the bound complete")
            .into_inner();
        assert_eq!(user.user.unwrap().id, fixture.admin.id);
    }
    // And the permits came back.
    get(&app).await.expect("served again");
    app.finish().await;
}
