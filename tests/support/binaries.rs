//! The workspace's binaries, built from the sources under test.
//!
//! A test that runs `orgadmin-service` or `orgadmin-worker` as a process must
//! not run whatever binary happens to be in `target/`: the first call here
//! runs `cargo build --workspace --bins` once per test process (a no-op when
//! `scripts/test` has just built them) in the profile of the test binary, and
//! takes each binary's path from cargo's own report of what it built.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();

/// The path of the workspace binary `name`, freshly built.
pub fn built_binary(name: &str) -> PathBuf {
    let built = BUILT.get_or_init(build_workspace_bins);
    match built.get(name) {
        Some(path) => path.clone(),
        None => panic!("cargo built no binary named {name}; it built {:?}", built.keys()),
    }
}

/// The cargo profile the running test binary was built with:
/// `target/<profile dir>/deps/<test binary>`, where `debug` is `dev`.
fn profile() -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .expect("test binary under target/<profile>/deps");
    match dir {
        "debug" => "dev".to_owned(),
        other => other.to_owned(),
    }
}

/// Variables cargo sets for the process it runs, describing one package
/// (prefixes); cargo's own configuration (CARGO_HOME, CARGO_TARGET_DIR,
/// CARGO_BUILD_*, ...) is kept.
const PACKAGE_VARIABLES: &[&str] = &[
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_CFG_",
    "OUT_DIR",
];

fn build_workspace_bins() -> HashMap<String, PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("Cargo.toml");
    // `cargo test` names itself in CARGO; a test binary run by hand falls
    // back to the cargo on PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    // Cargo gives a test process the variables of the package it belongs to
    // (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, OUT_DIR, ...). Build scripts watch
    // some of them (ring's does), so passed on they would make this build and
    // the next plain one each rebuild half the dependency tree.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if PACKAGE_VARIABLES.iter().any(|prefix| name.starts_with(prefix)) {
            command.env_remove(name);
        }
    }
    let output = command
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--workspace", "--bins", "--message-format=json"])
        .arg("--profile")
        .arg(profile())
        .stdin(Stdio::null())
        .output()
        .expect("run cargo build");
    assert!(
        output.status.success(),
        "cargo build --workspace --bins failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut built = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(name), Some(executable)) = (message["target"]["name"].as_str(), message["executable"].as_str()) {
            built.insert(name.to_owned(), PathBuf::from(executable));
        }
    }
    built
}
