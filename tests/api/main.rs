//! The one integration-test binary. Every scenario runs on SQLite and on
//! PostgreSQL (`both_backends!`), against a real server over real gRPC.

mod fingerprint;
mod lifecycle;
mod limits;
mod mail;
mod organisations;
mod rights;
mod smoke;
mod users;
mod workers;
