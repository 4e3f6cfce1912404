//! The database under stress from outside: writers in two processes on one
//! SQLite file, PostgreSQL backends terminated under calls, a database that
//! stops accepting connections and comes back.

use orgadmin_domain::{Domain, persistence};
use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use tokio::net::TcpListener;
use tonic::transport::Channel;

both_backends!(writers_in_two_processes_queue);

/// Service and worker as separate processes on one database: a second pool
/// (as a second process has) serving gRPC and running the worker, beside the
/// test server. Eight writers over both create users at once; none may fail
/// (on SQLite: "database is locked" when transactions begin deferred).
async fn writers_in_two_processes_queue(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin_limits(Some(1000), None).await;

    let second = Domain::new(
        persistence::connect(&app.database_url, 10).await.expect("second pool"),
        test_vault(),
        &[OPERATOR_TOKEN.to_owned()],
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second_addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut stop_server = stopped.clone();
    let server = tokio::spawn(orgadmin_service::serve(second.clone(), listener, 256, async move {
        let _ = stop_server.wait_for(|s| *s).await;
    }));
    let config = worker_config(&app, "");
    let mut stop_worker = stopped.clone();
    let worker = tokio::spawn(async move {
        orgadmin_worker::run(second, &config, async move {
            let _ = stop_worker.wait_for(|s| *s).await;
        })
        .await
    });
    let second_channel = Channel::from_shared(format!("http://{second_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut writers = Vec::new();
    for writer in 0..8 {
        let mut users = if writer % 2 == 0 {
            app.users()
        } else {
            pb::user_service_client::UserServiceClient::new(second_channel.clone())
        };
        let (token, org) = (fixture.admin_token.clone(), fixture.org.id.clone());
        writers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..50 {
                let request = new_user(&org, "Skriver", &[]);
                if let Err(status) = users.create_user(req(&token, request)).await {
                    failures.push(format!("{:?}: {}", status.code(), status.message()));
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for writer in writers {
        failures.extend(writer.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} of 400 creates failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    let _ = stop.send(true);
    server.await.unwrap().unwrap();
    worker.await.unwrap().unwrap();
    app.finish().await;
}
