//! The one integration-test binary. Every scenario runs on SQLite and on
//! PostgreSQL (`both_backends!`), against a real server over real gRPC.

mod access;
mod bounds;
mod certificates;
mod contract;
mod credentials;
mod email_change;
mod field_rules;
mod fingerprint;
mod groups;
mod history;
mod imports;
mod joining;
mod lifecycle;
mod limits;
mod login;
mod mail;
mod migrations;
mod normalisation;
mod operations;
mod organisations;
mod outage;
mod pages;
mod reasons;
mod replicas;
mod rights;
mod seats;
mod second_factor;
mod sharing;
mod smoke;
mod telemetry;
mod users;
mod visibility;
mod workers;
