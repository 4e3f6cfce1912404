//! Generates the orgadmin.v1 server and client code plus the descriptor set
//! that server reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "orgadmin/v1/organisation_service.proto",
    "orgadmin/v1/user_service.proto",
    "orgadmin/v1/auth_service.proto",
    "orgadmin/v1/notification_service.proto",
    "orgadmin/v1/import_service.proto",
    "orgadmin/v1/certificate_service.proto",
    "orgadmin/v1/access_service.proto",
];

/// Imported by the contract, vendored from googleapis (`google/api/`, found
/// through the include path `.`): its extensions travel in the descriptor set,
/// so reflection shows `[(google.api.field_behavior) = REQUIRED]` and the like.
const VENDORED: &[&str] = &["google/api/field_behavior.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    // The vendored protoc keeps the build free of a system protobuf-compiler.
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // prost's codec answers a request that is no valid message with
        // INTERNAL; ours says INVALID_ARGUMENT (src/lib.rs, `codec`).
        .codec_path("crate::codec::RequestCodec")
        .file_descriptor_set_path(out_dir.join("orgadmin_descriptor.bin"))
        .compile_with_config(config, PROTOS, &["."])?;
    // tonic-prost-build 0.14 does not print these reliably; do it by hand.
    for proto in PROTOS.iter().chain(VENDORED) {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
