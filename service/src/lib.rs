//! The orgadmin gRPC server: thin tonic handlers over `orgadmin-domain`.

pub mod bounds;
pub mod convert;
pub mod error;
pub mod handlers;
pub mod server;
pub mod shed;

pub use server::serve;
