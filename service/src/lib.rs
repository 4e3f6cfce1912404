//! The orgadmin gRPC server: thin tonic handlers over `orgadmin-domain`.

pub mod acting;
pub mod bounds;
pub mod connections;
pub mod convert;
pub mod error;
pub mod handlers;
pub mod http;
pub mod pages;
pub mod server;
pub mod shed;

pub use connections::ConnectionLimits;
pub use http::serve_certificate_http;
pub use server::{serve, serve_with_limits};
