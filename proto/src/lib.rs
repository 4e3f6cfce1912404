//! The orgadmin.v1 gRPC contract, generated from `proto/orgadmin/v1/`.

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("orgadmin.v1");

    /// The encoded descriptor set of every orgadmin.v1 file, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("orgadmin_descriptor");
}
