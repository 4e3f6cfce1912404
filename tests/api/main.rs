//! The one integration-test binary. Every scenario runs on SQLite and on
//! PostgreSQL (`both_backends!`), against a real server over real gRPC.

mod credentials;
mod history;
mod lifecycle;
mod limits;
mod mail;
mod normalisation;
mod organisations;
mod rights;
mod seats;
mod smoke;
mod users;
mod workers;
