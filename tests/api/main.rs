//! The one integration-test binary. Every scenario runs on SQLite and on
//! PostgreSQL (`both_backends!`), against a real server over real gRPC.

mod bounds;
mod lifecycle;
mod limits;
mod mail;
mod operations;
mod organisations;
mod outage;
mod rights;
mod smoke;
mod users;
mod visibility;
mod workers;
