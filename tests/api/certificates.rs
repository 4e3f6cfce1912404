//! R-CERT: the whole certificate lifecycle checked the way a client checks
//! it, with the real `openssl`: keys and CSRs made by `openssl req`, chains
//! verified by `openssl verify`, profiles read by `openssl x509 -text`, the
//! CRL fetched over plain HTTP and verified by `openssl crl`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use orgadmin_domain::model::now_millis;
use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use tonic::{Code, Status};

both_backends!(
    a_user_certificate_lives_and_is_revoked_as_openssl_sees_it,
    an_order_nobody_picked_up_ends_with_its_token,
    every_key_type_and_the_organisation_certificate,
    refusals_change_nothing,
    expiry_warnings_go_once_and_certificates_expire,
    without_a_ca_certificate_calls_say_so,
    an_anonymity_approval_ends_the_old_profiles_certificates,
    withdrawing_the_signing_right_revokes_what_signs,
    a_subject_line_reads_back_as_its_names,
    an_organisation_certificate_keeps_its_identity_through_renewals,
    nobody_gives_themselves_the_signing_right,
    the_contact_person_learns_the_holder_left,
    a_user_certificates_contact_who_leaves_hands_it_to_the_holder,
    an_organisation_certificates_contact_who_left_is_replaced,
    the_previous_contact_person_is_told_of_a_change,
    a_new_contact_person_takes_over_the_certificates_address,
    an_address_with_an_idn_domain_is_named_in_punycode,
    no_certificate_outlives_its_ca,
    ocsp_is_answered_by_get_too,
    a_compromised_key_is_not_certified_again,
    a_revoked_certificate_stays_on_one_crl_after_it_expires,
    a_retried_order_is_made_once,
    a_bulk_deletion_under_deactivate_only_ends_the_leavers_certificates,
    an_overdue_crl_is_renewed_by_whoever_serves_it,
);

const YEAR_MS: i64 = 365 * 24 * 60 * 60 * 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Runs `openssl` in `dir`; panics with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A new key of `kind` (`p256`, `p384`, `ed25519`, `rsa2048`, `rsa1024`) and
/// a CSR for it whose subject asks for something we never grant.
fn csr(dir: &Path, name: &str, kind: &str) -> String {
    let key = format!("{name}.key");
    let out = format!("{name}.csr");
    let mut args = vec![
        "req",
        "-new",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &out,
        "-subj",
        "/CN=Anything I like/O=Not us",
    ];
    match kind {
        "p256" => args.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        "p384" => args.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]),
        "ed25519" => args.extend(["-newkey", "ed25519"]),
        "rsa2048" => args.extend(["-newkey", "rsa:2048"]),
        "rsa1024" => args.extend(["-newkey", "rsa:1024"]),
        other => panic!("no key kind {other}"),
    }
    openssl(dir, &args);
    std::fs::read_to_string(dir.join(out)).unwrap()
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// The value of header `name` (any case) in an HTTP head.
fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}

/// A GET over plain HTTP/1.1, as a relying party fetches a CRL.
async fn http_get(app: &TestApp, path: &str) -> (String, Vec<u8>) {
    app.http("GET", path, &[], b"").await
}

async fn allow_kinds(app: &TestApp, fixture: &OrgFixture, kinds: &[pb::CertificateKind]) {
    app.change_settings(fixture, "certificate_kinds", |settings| {
        settings.certificate_kinds = kinds.iter().map(|k| *k as i32).collect();
    })
    .await;
}

fn user_order(org: &str, holder: &pb::User, usages: &[pb::CertificateUsage]) -> pb::OrderCertificateRequest {
    pb::OrderCertificateRequest {
        organisation_id: org.to_owned(),
        kind: pb::CertificateKind::Employee as i32,
        holder_id: holder.id.clone(),
        usages: usages.iter().map(|u| *u as i32).collect(),
        ..Default::default()
    }
}

async fn order(app: &TestApp, token: &str, request: pb::OrderCertificateRequest) -> Result<pb::Certificate, Status> {
    app.certs()
        .order_certificate(req(token, request))
        .await
        .map(|r| r.into_inner().certificate.unwrap())
}

async fn issue(app: &TestApp, session: &str, pickup: &str, csr: &str) -> Result<pb::IssueCertificateResponse, Status> {
    app.certs()
        .issue_certificate(req(
            session,
            pb::IssueCertificateRequest {
                token: pickup.to_owned(),
                csr_pem: csr.to_owned(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn get(app: &TestApp, token: &str, id: &str) -> Result<pb::Certificate, Status> {
    app.certs()
        .get_certificate(req(
            token,
            pb::GetCertificateRequest {
                certificate_id: id.to_owned(),
            },
        ))
        .await
        .map(|r| r.into_inner().certificate.unwrap())
}

async fn search(app: &TestApp, token: &str, query: pb::SearchCertificatesRequest) -> Vec<pb::Certificate> {
    app.certs()
        .search_certificates(req(token, query))
        .await
        .unwrap()
        .into_inner()
        .certificates
}

async fn revoke(app: &TestApp, token: &str, id: &str, reason: pb::RevocationReason) -> Result<pb::Certificate, Status> {
    app.certs()
        .revoke_certificate(req(
            token,
            pb::RevokeCertificateRequest {
                certificate_id: id.to_owned(),
                reason: reason as i32,
                etag: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner().certificate.unwrap())
}

/// A certificate's history, newest first, as `token` reads it.
async fn history(app: &TestApp, token: &str, id: &str) -> Vec<pb::HistoryEvent> {
    app.certs()
        .list_certificate_history(req(
            token,
            pb::ListCertificateHistoryRequest {
                certificate_id: id.to_owned(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .events
}

/// Orders a user certificate for `holder` and picks it up as them with a
/// fresh key of `key_kind`.
async fn issued_user_certificate(
    app: &TestApp,
    fixture: &OrgFixture,
    holder: &pb::User,
    session: &str,
    usages: &[pb::CertificateUsage],
    dir: &Path,
    key_kind: &str,
) -> pb::IssueCertificateResponse {
    order(app, &fixture.admin_token, user_order(&fixture.org.id, holder, usages))
        .await
        .unwrap();
    let pickup = app.mailed_token("certificate_pickup", &holder.email).await;
    let request = csr(dir, &format!("{key_kind}-{}", next_number()), key_kind);
    issue(app, session, &pickup, &request).await.unwrap()
}

/// A new member with an issued user certificate: (member, their session,
/// the certificate, its notAfter in milliseconds).
async fn member_with_certificate(
    app: &TestApp,
    fixture: &OrgFixture,
    name: &str,
    dir: &Path,
) -> (pb::User, String, pb::Certificate, i64) {
    let (member, session) = app.member(fixture, name, &[]).await;
    let certificate = issued_user_certificate(
        app,
        fixture,
        &member,
        &session,
        &[pb::CertificateUsage::Authentication],
        dir,
        "p256",
    )
    .await
    .certificate
    .unwrap();
    let not_after = ms(&certificate.not_after.unwrap());
    (member, session, certificate, not_after)
}

/// A new member with an issued user certificate and an open order for
/// another: (member, their session, the certificate, the order).
async fn member_with_certificate_and_order(
    app: &TestApp,
    fixture: &OrgFixture,
    name: &str,
    dir: &Path,
) -> (pb::User, String, pb::Certificate, pb::Certificate) {
    let (member, session, issued, _) = member_with_certificate(app, fixture, name, dir).await;
    let open_order = order(
        app,
        &fixture.admin_token,
        user_order(&fixture.org.id, &member, &[pb::CertificateUsage::Authentication]),
    )
    .await
    .unwrap();
    (member, session, issued, open_order)
}

/// A holder's certificates ended with their profile: `issued` revoked as
/// holder left, `open_order` deleted.
async fn assert_ended_with_their_holder(
    app: &TestApp,
    token: &str,
    issued: &pb::Certificate,
    open_order: &pb::Certificate,
) {
    let revoked = get(app, token, &issued.id).await.unwrap();
    assert_eq!(revoked.state(), pb::CertificateState::Revoked);
    assert_eq!(revoked.revocation_reason(), pb::RevocationReason::HolderLeft);
    assert_code(get(app, token, &open_order.id).await, Code::NotFound);
}

/// `openssl verify` of a certificate against the CA chain the reply gave.
fn verify(dir: &Path, name: &str, issued: &pb::IssueCertificateResponse) -> String {
    let cert = write(dir, &format!("{name}.pem"), &issued.certificate_pem);
    let chain = write(dir, "chain.pem", &issued.chain_pem);
    let out = openssl(
        dir,
        &["verify", "-CAfile", chain.to_str().unwrap(), cert.to_str().unwrap()],
    );
    assert!(out.contains(": OK"), "{out}");
    // Names printed as UTF-8, not as \C3\A6 escapes.
    openssl(
        dir,
        &[
            "x509",
            "-in",
            cert.to_str().unwrap(),
            "-noout",
            "-text",
            "-nameopt",
            "oneline,-esc_msb",
        ],
    )
}

/// The CRL from `GET /crl`, as `openssl crl -text` prints it after it
/// verified its signature with the CA; waits up to 2 s for `until`.
async fn crl_text(app: &TestApp, dir: &Path, chain_pem: &str, until: impl Fn(&str) -> bool) -> String {
    let chain = write(dir, "crl-chain.pem", chain_pem);
    let started = Instant::now();
    loop {
        let (head, body) = http_get(app, "/crl").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_lowercase().contains("application/pkix-crl"), "{head}");
        let crl = write(dir, "current.crl", body);
        let text = openssl(
            dir,
            &[
                "crl",
                "-inform",
                "DER",
                "-in",
                crl.to_str().unwrap(),
                "-CAfile",
                chain.to_str().unwrap(),
                "-noout",
                "-text",
            ],
        );
        assert!(text.contains("verify OK"), "{text}");
        if until(&text) {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the CRL did not show the change within 2 s: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `openssl ocsp` against the responder: asks about `what` (`-cert FILE`
/// or `-serial 0x…`), checks the response's signature with the CA, returns
/// what it printed.
fn ocsp(app: &TestApp, dir: &Path, chain: &Path, what: &[&str]) -> String {
    let url = format!("http://{}/ocsp", app.http_addr);
    let mut args = vec![
        "ocsp",
        "-issuer",
        chain.to_str().unwrap(),
        "-CAfile",
        chain.to_str().unwrap(),
        "-url",
        &url,
    ];
    args.extend(what);
    let out = openssl(dir, &args);
    assert!(out.contains("Response verify OK"), "{out}");
    out
}

fn ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

/// openssl prints serials in upper case.
fn upper(serial: &str) -> String {
    serial.to_uppercase()
}

async fn a_user_certificate_lives_and_is_revoked_as_openssl_sees_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let karen_request = pb::CreateUserRequest {
        first_name: "Karen".into(),
        surname: "Ærøskøbing".into(),
        signing_right: true,
        ..new_user(&fixture.org.id, "Karen", &[])
    };
    let karen_cpr = karen_request.cpr.clone();
    let (karen, karen_session) = app.create_and_activate(&fixture.admin_token, karen_request).await;

    // Order: ORDERED, a pickup mail with a token, an in-app notification
    // that does not carry the token.
    let ordered = order(
        &app,
        &fixture.admin_token,
        pb::OrderCertificateRequest {
            email: karen.email.clone(),
            ..user_order(
                &fixture.org.id,
                &karen,
                &[pb::CertificateUsage::Authentication, pb::CertificateUsage::Signing],
            )
        },
    )
    .await
    .unwrap();
    assert_eq!(ordered.state(), pb::CertificateState::Ordered);
    assert_eq!(ordered.contact_id, karen.id, "the holder is the contact by default");
    assert!(ordered.certificate_pem.is_empty());
    let pickup = app.mailed_token("certificate_pickup", &karen.email).await;
    let notes = app
        .notes()
        .list_notifications(req(&karen_session, pb::ListNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .notifications;
    let note = notes
        .iter()
        .find(|n| n.kind() == pb::NotificationKind::Certificate)
        .expect("an in-app notification of the order");
    assert!(
        !note.body.contains(&pickup),
        "the in-app notification never holds the token"
    );

    // Someone else of the organisation cannot pick it up with the token.
    let other = issue(&app, &fixture.admin_token, &pickup, &csr(&dir, "stranger", "p256")).await;
    assert_code(other, Code::PermissionDenied);

    // Karen picks it up: the subject is ours, not the CSR's.
    let issued = issue(&app, &karen_session, &pickup, &csr(&dir, "karen", "p256"))
        .await
        .unwrap();
    let certificate = issued.certificate.clone().unwrap();
    assert_eq!(certificate.state(), pb::CertificateState::Issued);
    assert_eq!(certificate.key_algorithm, "ECDSA P-256");
    let text = verify(&dir, "karen", &issued);
    for expected in [
        "C = DK",
        &format!("organizationIdentifier = NTRDK-{}", fixture.org.cvr),
        &format!("O = {}", fixture.org.name),
        &format!("serialNumber = UI:DK-E:G:{}", karen.id),
        "GN = Karen",
        "SN = Ærøskøbing",
        "Digital Signature, Non Repudiation",
        "TLS Web Client Authentication",
        &format!("email:{}", karen.email),
        "CA:FALSE",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
        "X509v3 CRL Distribution Points",
        "OCSP - URI:http://127.0.0.1/ocsp",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
    assert!(
        !text.contains("Anything I like"),
        "nothing of the CSR's subject is used"
    );
    let serial_line = openssl(
        &dir,
        &[
            "x509",
            "-in",
            dir.join("karen.pem").to_str().unwrap(),
            "-noout",
            "-serial",
        ],
    );
    assert_eq!(
        serial_line.trim(),
        format!("serial={}", upper(&certificate.serial)),
        "the stored serial is the certificate's"
    );
    assert!(certificate.serial.len() >= 16, "at least 64 random bits");
    let validity = openssl(
        &dir,
        &[
            "x509",
            "-in",
            dir.join("karen.pem").to_str().unwrap(),
            "-noout",
            "-enddate",
        ],
    );
    let not_after = ms(&certificate.not_after.unwrap());
    // Three calendar years: the same date three years on (3 × 365 days
    // ended a day early across a 29 February), within the minutes this
    // test has taken.
    let anniversary = chrono::Utc::now()
        .checked_add_months(chrono::Months::new(36))
        .unwrap()
        .timestamp_millis();
    assert!(
        (0..10 * 60 * 1000).contains(&(anniversary - not_after)),
        "three years: {validity}, {not_after} against {anniversary}"
    );

    // OCSP says good now; a serial this CA never issued is unknown.
    let chain = dir.join("chain.pem");
    let karen_pem = dir.join("karen.pem");
    let good = ocsp(&app, &dir, &chain, &["-cert", karen_pem.to_str().unwrap()]);
    assert!(good.contains(": good"), "{good}");
    let unknown = ocsp(&app, &dir, &chain, &["-serial", "0x1234567890abcdef"]);
    assert!(unknown.contains(": unknown"), "{unknown}");

    // The token works once.
    let again = issue(&app, &karen_session, &pickup, &csr(&dir, "again", "p256")).await;
    assert_eq!(
        reason(&assert_code(again, Code::FailedPrecondition)),
        "CERTIFICATE_PICKUP_USED"
    );

    // Found by the serial as openssl prints it, by subject text in any case,
    // by usage and by expiry range.
    let colons = upper(&certificate.serial)
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let by_serial = search(
        &app,
        &fixture.admin_token,
        pb::SearchCertificatesRequest {
            organisation_id: fixture.org.id.clone(),
            serial: colons,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_serial.len(), 1);
    assert_eq!(by_serial[0].id, certificate.id);
    for (query, expected) in [
        (
            pb::SearchCertificatesRequest {
                subject_text: "ÆRØSKØBING".into(),
                ..Default::default()
            },
            1,
        ),
        (
            pb::SearchCertificatesRequest {
                usage: pb::CertificateUsage::Signing as i32,
                ..Default::default()
            },
            1,
        ),
        // Taken literally: `%` and `_` are no wildcards.
        (
            pb::SearchCertificatesRequest {
                subject_text: "%".into(),
                ..Default::default()
            },
            0,
        ),
        (
            pb::SearchCertificatesRequest {
                subject_text: "k_ren".into(),
                ..Default::default()
            },
            0,
        ),
        (
            pb::SearchCertificatesRequest {
                usage: pb::CertificateUsage::EmailEncryption as i32,
                ..Default::default()
            },
            0,
        ),
        // By e-mail address in any case, as the order compared it.
        (
            pb::SearchCertificatesRequest {
                email: karen.email.to_uppercase(),
                ..Default::default()
            },
            1,
        ),
        (
            pb::SearchCertificatesRequest {
                expire_time_from: Some(in_ms(3 * YEAR_MS - 2 * DAY_MS)),
                expire_time_to: Some(in_ms(3 * YEAR_MS + 2 * DAY_MS)),
                ..Default::default()
            },
            1,
        ),
        (
            pb::SearchCertificatesRequest {
                expire_time_to: Some(in_ms(YEAR_MS)),
                ..Default::default()
            },
            0,
        ),
        (
            pb::SearchCertificatesRequest {
                holder_id: karen.id.clone(),
                state: pb::CertificateState::Issued as i32,
                ..Default::default()
            },
            1,
        ),
    ] {
        let found = search(
            &app,
            &fixture.admin_token,
            pb::SearchCertificatesRequest {
                organisation_id: fixture.org.id.clone(),
                ..query.clone()
            },
        )
        .await;
        assert_eq!(found.len(), expected, "{query:?}");
    }
    // Karen reads her own certificate; a plain colleague does not.
    assert_eq!(
        get(&app, &karen_session, &certificate.id).await.unwrap().id,
        certificate.id
    );
    let (_, colleague) = app.member(&fixture, "Kollega", &[]).await;
    assert_code(get(&app, &colleague, &certificate.id).await, Code::PermissionDenied);

    // A relying party that revalidates its copy of the CRL by its ETag is
    // told 304 without the list while nothing changed; each form has its own.
    let (head, _) = http_get(&app, "/crl").await;
    let etag_before = header_value(&head, "etag").expect("an ETag on the CRL");
    assert_eq!(header_value(&head, "cache-control").as_deref(), Some("no-cache"));
    let (head, body) = app.http("GET", "/crl", &[("If-None-Match", &etag_before)], b"").await;
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");
    assert!(body.is_empty());
    let (head, _) = app
        .http("GET", "/crl.pem", &[("If-None-Match", &etag_before)], b"")
        .await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "the PEM is another representation: {head}"
    );

    // Revoked: final, told to Karen, in the CRL at once with its reason.
    let revoked = revoke(
        &app,
        &fixture.admin_token,
        &certificate.id,
        pb::RevocationReason::KeyCompromised,
    )
    .await
    .unwrap();
    assert_eq!(revoked.state(), pb::CertificateState::Revoked);
    assert_eq!(revoked.revocation_reason(), pb::RevocationReason::KeyCompromised);
    // Served by the next fetch, with no wait: the CRL this process signed
    // goes to the HTTP cache (which had just looked at the database above).
    let (_, now_served) = http_get(&app, "/crl").await;
    let serial_bytes = hex::decode(&certificate.serial).unwrap();
    assert!(
        now_served.windows(serial_bytes.len()).any(|w| w == serial_bytes),
        "the revoked serial is in the CRL served right after the revocation"
    );
    let twice = revoke(
        &app,
        &fixture.admin_token,
        &certificate.id,
        pb::RevocationReason::HolderLeft,
    )
    .await;
    assert_eq!(
        reason(&assert_code(twice, Code::FailedPrecondition)),
        "CERTIFICATE_REVOKED"
    );
    let renew_revoked = app
        .certs()
        .renew_certificate(req(
            &karen_session,
            pb::RenewCertificateRequest {
                certificate_id: certificate.id.clone(),
                csr_pem: csr(&dir, "renew-revoked", "p256"),
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(renew_revoked, Code::FailedPrecondition)),
        "CERTIFICATE_NOT_RENEWABLE"
    );
    let serial = upper(&certificate.serial);
    let text = crl_text(&app, &dir, &issued.chain_pem, |t| t.contains(&serial)).await;
    let entry = &text[text.find(&serial).unwrap()..];
    assert!(entry.contains("Key Compromise"), "{text}");
    // The copy from before the revocation is stale: the whole new CRL.
    let (head, body) = app.http("GET", "/crl", &[("If-None-Match", &etag_before)], b"").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!body.is_empty());
    assert_ne!(header_value(&head, "etag"), Some(etag_before));
    let revoked_now = ocsp(&app, &dir, &chain, &["-cert", karen_pem.to_str().unwrap()]);
    assert!(
        revoked_now.contains(": revoked") && revoked_now.contains("keyCompromise"),
        "{revoked_now}"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM outbox_mails WHERE kind = 'certificate_revoked' AND recipient = '{}'",
            karen.email
        ))
        .await,
        1
    );

    // GetCrl gives the same CRL, numbered, with the chain.
    let crl = app
        .certs()
        .get_crl(req(&karen_session, pb::GetCrlRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(crl.crl_number >= 1);
    assert_eq!(crl.revoked_count, 1);
    assert!(crl.crl_pem.starts_with("-----BEGIN X509 CRL-----"));
    assert!(!crl.crl_der.is_empty());
    assert_eq!(crl.crl_url, "http://127.0.0.1/crl", "the distribution point");
    let pem_path = write(&dir, "grpc.crl.pem", &crl.crl_pem);
    let chain = write(&dir, "grpc-chain.pem", &crl.ca_chain_pem);
    let grpc_text = openssl(
        &dir,
        &[
            "crl",
            "-in",
            pem_path.to_str().unwrap(),
            "-CAfile",
            chain.to_str().unwrap(),
            "-noout",
            "-text",
        ],
    );
    assert!(
        grpc_text.contains("verify OK") && grpc_text.contains(&serial),
        "{grpc_text}"
    );
    let (head, ca) = http_get(&app, "/ca.pem").await;
    assert!(head.starts_with("HTTP/1.1 200"));
    assert_eq!(String::from_utf8(ca).unwrap(), crl.ca_chain_pem);

    // Every step is in the certificate's history, with who did it.
    let events = history(&app, &fixture.admin_token, &certificate.id).await;
    let activities: Vec<_> = events.iter().map(|e| e.activity()).collect();
    assert_eq!(
        activities,
        [
            pb::HistoryActivity::CertificateRevoked,
            pb::HistoryActivity::CertificateIssued,
            pb::HistoryActivity::CertificateOrdered,
        ]
    );
    assert_eq!(
        events[1].actor,
        format!("user:{}", karen.id),
        "Karen picked it up herself"
    );
    assert_eq!(events[0].actor, format!("user:{}", fixture.admin.id));
    // Times in history are instants (RFC 3339), as everywhere; it was a
    // raw count of milliseconds.
    let not_after = changed_to(&events[1], "not_after").expect("the certificate's end");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(not_after)
            .expect("an RFC 3339 time")
            .timestamp(),
        certificate.not_after.as_ref().unwrap().seconds
    );

    // No CPR number anywhere in the certificate.
    let printed = openssl(
        &dir,
        &[
            "x509",
            "-in",
            dir.join("karen.pem").to_str().unwrap(),
            "-noout",
            "-text",
        ],
    );
    let digits: String = karen_cpr.chars().filter(|c| c.is_ascii_digit()).collect();
    assert!(!printed.contains(&digits) && !printed.contains(&karen_cpr), "{printed}");
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The ids of every page of a search, one page after another, and the
/// tokens that led on; fails if the pages do not end (a token that does
/// not move on).
async fn walk_pages(
    app: &TestApp,
    session: &str,
    request: impl Fn(String) -> pb::SearchCertificatesRequest,
) -> (Vec<String>, Vec<String>) {
    let (mut ids, mut tokens) = (Vec::new(), Vec::<String>::new());
    loop {
        let page = app
            .certs()
            .search_certificates(req(session, request(tokens.last().cloned().unwrap_or_default())))
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.certificates.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            return (ids, tokens);
        }
        assert!(tokens.len() < 100, "the pages do not end: {ids:?}");
        tokens.push(page.next_page_token);
    }
}

async fn every_key_type_and_the_organisation_certificate(backend: Backend) {
    let app = TestApp::start(backend).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    allow_kinds(
        &app,
        &fixture,
        &[pb::CertificateKind::Employee, pb::CertificateKind::Organisation],
    )
    .await;
    let (bo, bo_session) = app.member(&fixture, "Bo", &[]).await;

    let mut issued = Vec::new();
    for (kind, described) in [("p384", "ECDSA P-384"), ("ed25519", "Ed25519"), ("rsa2048", "RSA 2048")] {
        let usages = if kind == "ed25519" {
            vec![pb::CertificateUsage::Authentication]
        } else {
            // Bo has no signing right: with AUTHENTICATION this would be a
            // mail-signing certificate (`withdrawing_the_signing_right_revokes_what_signs`).
            vec![pb::CertificateUsage::EmailEncryption]
        };
        let one = issued_user_certificate(&app, &fixture, &bo, &bo_session, &usages, &dir, kind).await;
        let text = verify(&dir, kind, &one);
        assert_eq!(one.certificate.as_ref().unwrap().key_algorithm, described);
        if kind == "rsa2048" {
            assert!(
                text.contains("Key Encipherment"),
                "RSA encrypts by key encipherment: {text}"
            );
            assert!(text.contains("E-mail Protection"), "{text}");
        }
        if kind == "p384" {
            assert!(text.contains("Key Agreement"), "EC encrypts by key agreement: {text}");
        }
        issued.push(one);
    }

    // With an expiry bound, the soonest to expire first, page by page, and
    // not the order they were made in: the oldest is set to expire last.
    use sea_orm::ConnectionTrait;
    let ids: Vec<String> = issued
        .iter()
        .map(|one| one.certificate.as_ref().unwrap().id.clone())
        .collect();
    let soon = now_millis() + 100 * DAY_MS;
    // By serial: a text column on both databases (SQLite keeps ids as blobs).
    for (one, days) in issued.iter().zip([30, 10, 20]) {
        app.domain
            .db()
            .execute_unprepared(&format!(
                "UPDATE certificates SET not_after = {} WHERE serial = '{}'",
                soon + days * DAY_MS,
                one.certificate.as_ref().unwrap().serial
            ))
            .await
            .unwrap();
    }
    // One request page after page (AIP-158): the bound is read once.
    let from = in_ms(0);
    let by_expiry = |page_token: String| pb::SearchCertificatesRequest {
        organisation_id: fixture.org.id.clone(),
        holder_id: bo.id.clone(),
        expire_time_from: Some(from),
        page_size: 1,
        page_token,
        ..Default::default()
    };
    let (walked, tokens) = walk_pages(&app, &fixture.admin_token, &by_expiry).await;
    // A token of the expiry order does not continue the newest-first one.
    for token in tokens {
        let elsewhere = app
            .certs()
            .search_certificates(req(
                &fixture.admin_token,
                pb::SearchCertificatesRequest {
                    expire_time_from: None,
                    ..by_expiry(token)
                },
            ))
            .await;
        assert_eq!(
            bad_fields(&assert_code(elsewhere, Code::InvalidArgument)),
            ["page_token"]
        );
    }
    assert_eq!(walked, [ids[1].clone(), ids[2].clone(), ids[0].clone()], "by expiry");
    let newest_first: Vec<String> = search(
        &app,
        &fixture.admin_token,
        pb::SearchCertificatesRequest {
            organisation_id: fixture.org.id.clone(),
            holder_id: bo.id.clone(),
            ..Default::default()
        },
    )
    .await
    .into_iter()
    .map(|c| c.id)
    .collect();
    assert_eq!(
        newest_first,
        [ids[2].clone(), ids[1].clone(), ids[0].clone()],
        "without a bound, newest first"
    );
    // The same by subject text, a page of one at a time: the page's ids are
    // found first, then the rows (the token's id bounds the first step).
    let by_text = |page_token: String| pb::SearchCertificatesRequest {
        organisation_id: fixture.org.id.clone(),
        holder_id: bo.id.clone(),
        subject_text: bo.surname.to_uppercase(),
        page_size: 1,
        page_token,
        ..Default::default()
    };
    let (walked, _) = walk_pages(&app, &fixture.admin_token, &by_text).await;
    assert_eq!(
        walked,
        [ids[2].clone(), ids[1].clone(), ids[0].clone()],
        "by subject text, newest first, page by page"
    );

    // One token picked up twice at once: one certificate, the other call
    // told the token is used (on PostgreSQL both read the order, and the
    // second UPDATE finds it taken).
    order(
        &app,
        &fixture.admin_token,
        user_order(&fixture.org.id, &bo, &[pb::CertificateUsage::Authentication]),
    )
    .await
    .unwrap();
    let pickup = app.mailed_token("certificate_pickup", &bo.email).await;
    let (first_csr, second_csr) = (csr(&dir, "race-a", "p256"), csr(&dir, "race-b", "p256"));
    let (a, b) = tokio::join!(
        issue(&app, &bo_session, &pickup, &first_csr),
        issue(&app, &bo_session, &pickup, &second_csr)
    );
    let (won, lost) = if a.is_ok() { (a, b) } else { (b, a) };
    let won = won.unwrap().certificate.unwrap();
    assert_eq!(
        reason(&assert_code(lost, Code::FailedPrecondition)),
        "CERTIFICATE_PICKUP_USED"
    );
    let activities: Vec<_> = history(&app, &fixture.admin_token, &won.id)
        .await
        .iter()
        .map(|e| e.activity())
        .collect();
    assert_eq!(
        activities,
        [
            pb::HistoryActivity::CertificateIssued,
            pb::HistoryActivity::CertificateOrdered
        ]
    );

    // A user created anonymous (R-USR-10) is named by a stable pseudonym,
    // never by their name.
    let (anonymous, anonymous_session) = app
        .create_and_activate(
            &fixture.admin_token,
            pb::CreateUserRequest {
                first_name: "Hemmelig".into(),
                surname: "Person".into(),
                anonymous: true,
                ..new_user(&fixture.org.id, "Hemmelig", &[])
            },
        )
        .await;
    let mut pseudonyms = Vec::new();
    for round in 0..2 {
        let one = issued_user_certificate(
            &app,
            &fixture,
            &anonymous,
            &anonymous_session,
            &[pb::CertificateUsage::Authentication],
            &dir,
            "p256",
        )
        .await;
        let text = verify(&dir, &format!("anonymous-{round}"), &one);
        assert!(
            !text.contains("Hemmelig") && !text.contains("GN =") && !text.contains("SN ="),
            "{text}"
        );
        let start = text.find("pseudonym = ").expect("a pseudonym in the subject");
        pseudonyms.push(
            text[start..]
                .lines()
                .next()
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(pseudonyms[0], pseudonyms[1], "the same pseudonym every time");
    // Nor their address, which would name them again.
    let before = app.fingerprint().await;
    let with_address = order(
        &app,
        &fixture.admin_token,
        pb::OrderCertificateRequest {
            email: anonymous.email.clone(),
            ..user_order(&fixture.org.id, &anonymous, &[pb::CertificateUsage::Authentication])
        },
    )
    .await;
    assert_eq!(bad_fields(&assert_code(with_address, Code::InvalidArgument)), ["email"]);
    assert!(app.fingerprint().await == before, "a refused order changed something");

    // Authentication and e-mail encryption in one certificate sign mail
    // (digitalSignature with emailProtection): Bo has no signing right.
    let mail_signing = order(
        &app,
        &fixture.admin_token,
        user_order(
            &fixture.org.id,
            &bo,
            &[
                pb::CertificateUsage::Authentication,
                pb::CertificateUsage::EmailEncryption,
            ],
        ),
    )
    .await;
    let status = assert_code(mail_signing, Code::FailedPrecondition);
    assert_eq!(reason(&status), "SIGNING_RIGHT_MISSING", "{status:?}");
    assert!(status.message().contains("two certificates"), "{}", status.message());
    assert!(app.fingerprint().await == before, "a refused order changed something");

    // An Ed25519 key cannot encrypt: refused, the order still waits.
    order(
        &app,
        &fixture.admin_token,
        user_order(&fixture.org.id, &bo, &[pb::CertificateUsage::EmailEncryption]),
    )
    .await
    .unwrap();
    let pickup = app.mailed_token("certificate_pickup", &bo.email).await;
    let refused = issue(&app, &bo_session, &pickup, &csr(&dir, "ed-enc", "ed25519")).await;
    assert_eq!(bad_fields(&assert_code(refused, Code::InvalidArgument)), ["csr_pem"]);
    let rsa1024 = issue(&app, &bo_session, &pickup, &csr(&dir, "weak", "rsa1024")).await;
    let status = assert_code(rsa1024, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["csr_pem"]);
    assert!(status.message().contains("2048"), "{}", status.message());
    // A CSR whose signature does not verify: one byte of its body changed.
    let good = csr(&dir, "tamper", "p256");
    let body: String = good.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64_decode(&body);
    let at = der.len() - 10;
    der[at] ^= 0x5a;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64_encode(&der)
    );
    let bad_signature = issue(&app, &bo_session, &pickup, &tampered).await;
    let status = assert_code(bad_signature, Code::InvalidArgument);
    assert!(status.message().contains("signature"), "{}", status.message());
    let waiting = search(
        &app,
        &fixture.admin_token,
        pb::SearchCertificatesRequest {
            organisation_id: fixture.org.id.clone(),
            state: pb::CertificateState::Ordered as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(waiting.len(), 1, "the refused pickups left the order waiting");

    // An order is deleted before pickup, and only then.
    app.certs()
        .delete_certificate_order(req(
            &fixture.admin_token,
            pb::DeleteCertificateOrderRequest {
                certificate_id: waiting[0].id.clone(),
            },
        ))
        .await
        .unwrap();
    assert_code(get(&app, &fixture.admin_token, &waiting[0].id).await, Code::NotFound);
    let issued_id = issued[0].certificate.as_ref().unwrap().id.clone();
    let delete_issued = app
        .certs()
        .delete_certificate_order(req(
            &fixture.admin_token,
            pb::DeleteCertificateOrderRequest {
                certificate_id: issued_id.clone(),
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(delete_issued, Code::FailedPrecondition)),
        "CERTIFICATE_NOT_ORDERED"
    );

    // Renewal: a new certificate over a new key; the old one SUPERSEDED and
    // in the CRL as superseded.
    let renewed = app
        .certs()
        .renew_certificate(req(
            &bo_session,
            pb::RenewCertificateRequest {
                certificate_id: issued_id.clone(),
                csr_pem: csr(&dir, "renewal", "p256"),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let new = renewed.certificate.clone().unwrap();
    assert_eq!(new.renews_id, issued_id);
    assert_eq!(new.state(), pb::CertificateState::Issued);
    verify(
        &dir,
        "renewed",
        &pb::IssueCertificateResponse {
            certificate: renewed.certificate.clone(),
            certificate_pem: renewed.certificate_pem.clone(),
            chain_pem: renewed.chain_pem.clone(),
        },
    );
    let old = get(&app, &fixture.admin_token, &issued_id).await.unwrap();
    assert_eq!(old.state(), pb::CertificateState::Superseded);
    let old_serial = upper(&old.serial);
    let crl = crl_text(&app, &dir, &renewed.chain_pem, |t| t.contains(&old_serial)).await;
    assert!(crl[crl.find(&old_serial).unwrap()..].contains("Superseded"), "{crl}");

    // Signing through the organisation certificate needs one that seals.
    let (signe, _) = app
        .create_and_activate(
            &fixture.admin_token,
            pb::CreateUserRequest {
                signing_right: true,
                ..new_user(&fixture.org.id, "Signe", &[])
            },
        )
        .await;
    let too_early = set_signing(&app, &fixture.admin_token, &signe.id, true).await;
    assert_eq!(
        reason(&assert_code(too_early, Code::FailedPrecondition)),
        "NO_SEALING_CERTIFICATE"
    );

    // The organisation certificate: ordered by the organisation
    // administrator, picked up by its contact person (the orderer).
    let org_order = order(
        &app,
        &fixture.admin_token,
        pb::OrderCertificateRequest {
            organisation_id: fixture.org.id.clone(),
            kind: pb::CertificateKind::Organisation as i32,
            label: "Lønsystem".into(),
            usages: vec![
                pb::CertificateUsage::ServiceAccess as i32,
                pb::CertificateUsage::Sealing as i32,
            ],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(org_order.contact_id, fixture.admin.id);
    let pickup = app.mailed_token("certificate_pickup", &fixture.admin.email).await;
    let org_cert = issue(&app, &fixture.admin_token, &pickup, &csr(&dir, "org", "p256"))
        .await
        .unwrap();
    let text = verify(&dir, "org", &org_cert);
    assert!(
        text.contains(&format!("serialNumber = UI:DK-O:G:{}", org_order.id)),
        "{text}"
    );
    assert!(text.contains("Non Repudiation") && text.contains("TLS Web Client Authentication"));
    assert!(text.contains("CN = Lønsystem"), "{text}");

    // Now Signe may sign through it (organisation administrators decide);
    // Bo, without the signing right, may not; a user administrator cannot
    // decide it. Taking Signe's signing right away ends it, in her history.
    let (_, user_admin) = app.member(&fixture, "Brugeradm", &[pb::Role::UserAdmin]).await;
    assert_code(
        set_signing(&app, &user_admin, &signe.id, true).await,
        Code::PermissionDenied,
    );
    let allowed = set_signing(&app, &fixture.admin_token, &signe.id, true).await.unwrap();
    assert!(allowed.signs_with_organisation_certificate);
    // Nobody allows themselves (two keys): an organisation administrator
    // with the signing right asks a colleague, who may.
    let (oda, oda_session) = app
        .create_and_activate(
            &fixture.admin_token,
            pb::CreateUserRequest {
                signing_right: true,
                ..new_user(&fixture.org.id, "Oda", &[pb::Role::OrganisationAdmin])
            },
        )
        .await;
    let before = app.fingerprint().await;
    let own = assert_code(
        set_signing(&app, &oda_session, &oda.id, true).await,
        Code::PermissionDenied,
    );
    assert!(own.message().contains("two keys"), "{}", own.message());
    assert_eq!(app.fingerprint().await, before, "a refused allowance changed data");
    set_signing(&app, &fixture.admin_token, &oda.id, true)
        .await
        .expect("a colleague allows Oda");
    set_signing(&app, &oda_session, &oda.id, false)
        .await
        .expect("stopping oneself is one's own call");
    let no_right = set_signing(&app, &fixture.admin_token, &bo.id, true).await;
    assert_eq!(
        reason(&assert_code(no_right, Code::FailedPrecondition)),
        "SIGNING_RIGHT_MISSING"
    );
    let without = app
        .users()
        .update_user(req(
            &fixture.admin_token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    signing_right: false,
                    ..allowed.clone()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["signing_right".into()],
                }),
                cpr: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(!without.signs_with_organisation_certificate);
    let history = app
        .users()
        .list_user_history(req(
            &fixture.admin_token,
            pb::ListUserHistoryRequest {
                user_id: signe.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let flag_changes: Vec<(String, String)> = history
        .iter()
        .flat_map(|e| e.changes.iter())
        .filter(|c| c.field == "signs_with_organisation_certificate")
        .map(|c| (c.before.clone(), c.after.clone()))
        .collect();
    assert_eq!(
        flag_changes,
        [
            ("true".to_owned(), "false".to_owned()),
            ("false".to_owned(), "true".to_owned())
        ]
    );

    // Export: a PEM bundle of every issued certificate, a CSV listing.
    let bundle = export(&app, &fixture, pb::ExportFormat::PemBundle).await;
    let bundle = String::from_utf8(bundle).unwrap();
    let issued_now = app
        .count("SELECT COUNT(*) FROM certificates WHERE der IS NOT NULL")
        .await;
    assert_eq!(bundle.matches("-----BEGIN CERTIFICATE-----").count() as i64, issued_now);
    assert_eq!(issued_now, 8);
    let csv = export(&app, &fixture, pb::ExportFormat::Csv).await;
    assert!(
        csv.starts_with(b"\xEF\xBB\xBF"),
        "Excel reads UTF-8 by its byte-order mark"
    );
    let csv = String::from_utf8(csv[3..].to_vec()).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("id;kind;state;serial;subject"));
    assert_eq!(lines.len() - 1, 8, "one line per certificate: {csv}");
    assert!(csv.contains("SUPERSEDED") && csv.contains("Lønsystem"));

    // Once no sealing organisation certificate is left (revoked here), Oda
    // no longer signs through one: left standing, her permission applied
    // again, unasked, to the next sealing certificate issued.
    set_signing(&app, &fixture.admin_token, &oda.id, true)
        .await
        .expect("Oda allowed again");
    let issued_organisation_certificates = {
        use sea_orm::ConnectionTrait;
        let db = app.domain.db();
        db.query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT id FROM certificates WHERE kind = 'ORGANISATION' AND state = 'ISSUED'",
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.try_get_by_index::<uuid::Uuid>(0).unwrap().to_string())
        .collect::<Vec<_>>()
    };
    assert!(!issued_organisation_certificates.is_empty());
    for id in &issued_organisation_certificates {
        revoke(&app, &fixture.admin_token, id, pb::RevocationReason::KeyCompromised)
            .await
            .expect("revoked");
    }
    assert!(
        !app.user(&fixture.admin_token, &oda.id)
            .await
            .signs_with_organisation_certificate
    );
    let flag_history = app
        .history_of(&fixture.admin_token, &oda.id, pb::HistoryActivity::UserUpdated)
        .await;
    assert!(
        flag_history.first().is_some_and(|event| event
            .changes
            .iter()
            .any(|c| c.field == "signs_with_organisation_certificate" && c.after == "false")),
        "the end of Oda's permission is in her history: {flag_history:?}"
    );
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

async fn set_signing(app: &TestApp, token: &str, user_id: &str, allowed: bool) -> Result<pb::User, Status> {
    app.certs()
        .set_organisation_signing(req(
            token,
            pb::SetOrganisationSigningRequest {
                user_id: user_id.to_owned(),
                allowed,
                etag: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner().user.unwrap())
}

async fn export(app: &TestApp, fixture: &OrgFixture, format: pb::ExportFormat) -> Vec<u8> {
    use tokio_stream::StreamExt;
    let mut stream = app
        .certs()
        .export_certificates(req(
            &fixture.admin_token,
            pb::ExportCertificatesRequest {
                organisation_id: fixture.org.id.clone(),
                format: format as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend(chunk.unwrap().chunk);
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn refusals_change_nothing(backend: Backend) {
    let settings = orgadmin_domain::DomainSettings {
        certificates: orgadmin_domain::services::certificates::CertificateSettings {
            pickup_ttl_ms: 1500,
            ..Default::default()
        },
        ..Default::default()
    };
    let app = TestApp::start_with(backend, settings).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let other = app.org_with_admin().await;
    let (plain, plain_session) = app.member(&fixture, "Plain", &[]).await;
    let coded = app
        .users()
        .create_user(req(
            &fixture.admin_token,
            pb::CreateUserRequest {
                cpr: String::new(),
                birth_date: "1991-02-03".into(),
                ..new_user(&fixture.org.id, "Kode", &[])
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let unverified = app
        .users()
        .activate_user(req(
            "",
            pb::ActivateUserRequest {
                code: coded.activation_code,
                birth_date: "1991-02-03".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let pending = app
        .users()
        .create_user(req(&fixture.admin_token, new_user(&fixture.org.id, "Venter", &[])))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();

    let before = app.fingerprint().await;
    let refusals: Vec<(&str, pb::OrderCertificateRequest, Code, &str)> = vec![
        (
            "a kind the organisation does not allow",
            pb::OrderCertificateRequest {
                organisation_id: fixture.org.id.clone(),
                kind: pb::CertificateKind::Organisation as i32,
                label: "Integration".into(),
                usages: vec![pb::CertificateUsage::ServiceAccess as i32],
                ..Default::default()
            },
            Code::FailedPrecondition,
            "CERTIFICATE_KIND_NOT_ALLOWED",
        ),
        (
            "signing without the signing right",
            user_order(&fixture.org.id, &plain, &[pb::CertificateUsage::Signing]),
            Code::FailedPrecondition,
            "SIGNING_RIGHT_MISSING",
        ),
        (
            "a non-ASCII e-mail",
            pb::OrderCertificateRequest {
                email: "søren@firma.dk".into(),
                ..user_order(&fixture.org.id, &plain, &[pb::CertificateUsage::Authentication])
            },
            Code::InvalidArgument,
            "",
        ),
        (
            "an e-mail that was never verified",
            pb::OrderCertificateRequest {
                email: unverified.email.clone(),
                ..user_order(&fixture.org.id, &unverified, &[pb::CertificateUsage::Authentication])
            },
            Code::FailedPrecondition,
            "EMAIL_NOT_VERIFIED",
        ),
        (
            "a holder not yet activated",
            user_order(&fixture.org.id, &pending, &[pb::CertificateUsage::Authentication]),
            Code::FailedPrecondition,
            "USER_NOT_ACTIVE",
        ),
        (
            "an organisation usage on a user certificate",
            user_order(&fixture.org.id, &plain, &[pb::CertificateUsage::Sealing]),
            Code::InvalidArgument,
            "",
        ),
    ];
    for (what, request, code, expected) in refusals {
        let refused = order(&app, &fixture.admin_token, request).await;
        let status = assert_code(refused, code);
        if !expected.is_empty() {
            assert_eq!(reason(&status), expected, "{what}");
        }
    }
    // Another organisation's administrator, and a plain user.
    let foreign = order(
        &app,
        &other.admin_token,
        user_order(&fixture.org.id, &plain, &[pb::CertificateUsage::Authentication]),
    )
    .await;
    assert_code(foreign, Code::PermissionDenied);
    let by_plain = order(
        &app,
        &plain_session,
        user_order(&fixture.org.id, &plain, &[pb::CertificateUsage::Authentication]),
    )
    .await;
    assert_code(by_plain, Code::PermissionDenied);
    let unknown = issue(&app, &plain_session, "oat_nonsense", &csr(&dir, "x", "p256")).await;
    assert_eq!(
        reason(&assert_code(unknown, Code::FailedPrecondition)),
        "CERTIFICATE_PICKUP_UNKNOWN"
    );
    assert_eq!(app.fingerprint().await, before, "a refused call changes nothing");

    // A certificate of this organisation, acted on from the other one: it
    // reads as missing; revoking a mere order is refused.
    let ordered = order(
        &app,
        &fixture.admin_token,
        user_order(&fixture.org.id, &plain, &[pb::CertificateUsage::Authentication]),
    )
    .await
    .unwrap();
    assert_code(get(&app, &other.admin_token, &ordered.id).await, Code::NotFound);
    assert_code(
        revoke(&app, &other.admin_token, &ordered.id, pb::RevocationReason::HolderLeft).await,
        Code::NotFound,
    );
    let too_early = revoke(
        &app,
        &fixture.admin_token,
        &ordered.id,
        pb::RevocationReason::HolderLeft,
    )
    .await;
    assert_eq!(
        reason(&assert_code(too_early, Code::FailedPrecondition)),
        "CERTIFICATE_NOT_ISSUED"
    );
    let chosen_superseded = revoke(
        &app,
        &fixture.admin_token,
        &ordered.id,
        pb::RevocationReason::Superseded,
    )
    .await;
    assert_eq!(
        bad_fields(&assert_code(chosen_superseded, Code::InvalidArgument)),
        ["reason"]
    );
    let pickup = app.mailed_token("certificate_pickup", &plain.email).await;
    // The other organisation's administrator holding the token learns nothing.
    let foreign_pickup = issue(&app, &other.admin_token, &pickup, &csr(&dir, "f", "p256")).await;
    assert_eq!(
        reason(&assert_code(foreign_pickup, Code::FailedPrecondition)),
        "CERTIFICATE_PICKUP_UNKNOWN"
    );
    // The token expires.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let late = issue(&app, &plain_session, &pickup, &csr(&dir, "late", "p256")).await;
    assert_eq!(
        reason(&assert_code(late, Code::FailedPrecondition)),
        "CERTIFICATE_PICKUP_EXPIRED"
    );
    assert_eq!(
        get(&app, &fixture.admin_token, &ordered.id).await.unwrap().state(),
        pb::CertificateState::Ordered
    );

    // A deactivated holder cannot pick up (signed out with the deactivation);
    // deleting a holder revokes their certificates (holder left) and
    // deletes their open orders.
    let (leaver, leaver_session, issued, open_order) =
        member_with_certificate_and_order(&app, &fixture, "Leaver", &dir).await;
    let leaver_pickup = app.mailed_token("certificate_pickup", &leaver.email).await;
    // Nor does anyone but the holder renew: the CSR's key would be the
    // administrator's, in a certificate in the holder's name.
    let renew_for_them = app
        .certs()
        .renew_certificate(req(
            &fixture.admin_token,
            pb::RenewCertificateRequest {
                certificate_id: issued.id.clone(),
                csr_pem: csr(&dir, "for-them", "p256"),
            },
        ))
        .await;
    assert_code(renew_for_them, Code::PermissionDenied);
    let written = app
        .row_where(
            "SELECT COUNT(*) FROM certificates WHERE state <> 'ORDERED' AND holder_id =",
            uuid::Uuid::parse_str(&leaver.id).unwrap(),
        )
        .await
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(written, 1, "a refused renewal wrote nothing");
    app.users()
        .deactivate_user(req(
            &fixture.admin_token,
            pb::DeactivateUserRequest {
                id: leaver.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let deactivated_pickup = issue(&app, &leaver_session, &leaver_pickup, &csr(&dir, "gone", "p256")).await;
    assert_code(deactivated_pickup, Code::Unauthenticated);
    assert_eq!(
        get(&app, &fixture.admin_token, &open_order.id).await.unwrap().state(),
        pb::CertificateState::Ordered
    );
    app.delete_user(&fixture.admin_token, &leaver.id).await.unwrap();
    assert_ended_with_their_holder(&app, &fixture.admin_token, &issued, &open_order).await;
    let serial = upper(&issued.serial);
    let text = crl_text(&app, &dir, test_ca().chain_pem(), |t| t.contains(&serial)).await;
    assert!(
        text[text.find(&serial).unwrap()..].contains("Affiliation Changed"),
        "{text}"
    );
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

async fn expiry_warnings_go_once_and_certificates_expire(backend: Backend) {
    let app = TestApp::start(backend).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (eva, eva_session) = app.member(&fixture, "Eva", &[]).await;
    let issued = issued_user_certificate(
        &app,
        &fixture,
        &eva,
        &eva_session,
        &[pb::CertificateUsage::Authentication],
        &dir,
        "p256",
    )
    .await;
    let certificate = issued.certificate.unwrap();
    let not_after = ms(&certificate.not_after.unwrap());
    let mails = |kind: &'static str| {
        let app = &app;
        async move {
            app.count(&format!("SELECT COUNT(*) FROM outbox_mails WHERE kind = '{kind}'"))
                .await
        }
    };
    let domain = &app.domain;

    // Not yet within 30 days: nothing.
    assert_eq!(
        domain
            .warn_expiring_certificates(not_after - 31 * DAY_MS)
            .await
            .unwrap(),
        0
    );
    // 30 days before: the holder and the user administrator, once.
    assert_eq!(
        domain
            .warn_expiring_certificates(not_after - 29 * DAY_MS)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        mails("certificate_expiring").await,
        2,
        "holder (also the contact) and the user administrator"
    );
    assert_eq!(
        domain
            .warn_expiring_certificates(not_after - 28 * DAY_MS)
            .await
            .unwrap(),
        0
    );
    // 7 days before: once more, once.
    assert_eq!(
        domain.warn_expiring_certificates(not_after - 6 * DAY_MS).await.unwrap(),
        1
    );
    assert_eq!(
        domain.warn_expiring_certificates(not_after - 5 * DAY_MS).await.unwrap(),
        0
    );
    assert_eq!(mails("certificate_expiring").await, 4);
    // Two sweeps at once (two replicas) send each warning once.
    let (eva2, _, second, second_end) = member_with_certificate(&app, &fixture, "Eva2", &dir).await;
    let (a, b) = tokio::join!(
        domain.warn_expiring_certificates(second_end - 3 * DAY_MS),
        domain.warn_expiring_certificates(second_end - 3 * DAY_MS)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 1, "one 7-day warning, no 30-day one after it");
    assert_eq!(mails("certificate_expiring").await, 6);
    // It names the days left, not its window's.
    let subjects = app.mail_subjects("certificate_expiring", &eva2.email).await;
    assert!(
        !subjects.is_empty() && subjects.iter().all(|t| t.contains(" 3 ")),
        "{subjects:?}"
    );

    // Past notAfter: EXPIRED, in history, and not revocable any more.
    assert_eq!(domain.expire_certificates(not_after - DAY_MS).await.unwrap(), 0);
    assert_eq!(domain.expire_certificates(not_after).await.unwrap(), 1);
    let expired = get(&app, &fixture.admin_token, &certificate.id).await.unwrap();
    assert_eq!(expired.state(), pb::CertificateState::Expired);
    let refused = revoke(
        &app,
        &fixture.admin_token,
        &certificate.id,
        pb::RevocationReason::HolderLeft,
    )
    .await;
    assert_eq!(
        reason(&assert_code(refused, Code::FailedPrecondition)),
        "CERTIFICATE_NOT_ISSUED"
    );
    let events = history(&app, &fixture.admin_token, &certificate.id).await;
    assert_eq!(events[0].activity(), pb::HistoryActivity::CertificateExpired);
    assert_eq!(events[0].actor, "system:certificate-expiry");

    // The worker's CRL look: the first CRL, then nothing until half its
    // life is gone.
    let now = now_millis();
    assert!(domain.refresh_crl_if_due(now).await.unwrap());
    assert!(!domain.refresh_crl_if_due(now + 1000).await.unwrap());
    // A revocation whose own publication failed (written here behind the
    // domain's back) is caught by the next look.
    use sea_orm::ConnectionTrait;
    domain
        .db()
        .execute_unprepared(&format!(
            "UPDATE certificates SET state = 'REVOKED', revoked_at = {now}, revocation_reason = 'KEY_COMPROMISED' WHERE serial = '{}'",
            second.serial
        ))
        .await
        .unwrap();
    assert!(domain.refresh_crl_if_due(now + 2000).await.unwrap());
    assert!(!domain.refresh_crl_if_due(now + 3000).await.unwrap());
    assert!(domain.refresh_crl_if_due(now + 13 * 60 * 60 * 1000).await.unwrap());
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

async fn without_a_ca_certificate_calls_say_so(backend: Backend) {
    let app = TestApp::start_without_ca(backend).await;
    let fixture = app.org_with_admin().await;
    let before = app.fingerprint().await;
    let refused = order(
        &app,
        &fixture.admin_token,
        user_order(&fixture.org.id, &fixture.admin, &[pb::CertificateUsage::Authentication]),
    )
    .await;
    assert_eq!(
        reason(&assert_code(refused, Code::FailedPrecondition)),
        "CA_NOT_CONFIGURED"
    );
    let crl = app
        .certs()
        .get_crl(req(&fixture.admin_token, pb::GetCrlRequest {}))
        .await;
    assert_eq!(reason(&assert_code(crl, Code::FailedPrecondition)), "CA_NOT_CONFIGURED");
    let (head, _) = http_get(&app, "/ca.pem").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = http_get(&app, "/crl").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert_eq!(app.fingerprint().await, before);
    app.finish().await;
}

/// A pickup and the deletion of its holder never interleave: the pickup
/// reads its holder `FOR SHARE`, so one behind a deletion in progress waits
/// for it and is then refused, and no certificate is left to a deleted
/// person. Interleaved, the deletion had read the order as ORDERED and
/// deleted the row the pickup had just issued: a valid certificate no row
/// could revoke. (The deletion in progress is played by a session that has
/// written the holder's row and not yet committed.) SQLite has one writer at
/// a time, so only PostgreSQL can interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pickup_behind_its_holders_deletion_is_refused() {
    let refused = pickup_behind_a_change_of_its_holder(&[pb::CertificateUsage::Authentication], |holder, org| {
        vec![
            format!("UPDATE users SET state = 'DELETED', version = version + 1 WHERE id = '{holder}'"),
            // A deletion gives the person's licence back, as DeleteUser does.
            format!("UPDATE organisations SET licences_used = licences_used - 1 WHERE id = '{org}'"),
        ]
    })
    .await;
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
}

/// The same for a holder deactivated, or whose signing right is taken
/// away, while their certificate is signed: the pickup waits for the change
/// and is refused for the rule it breaks. It checked only that the holder
/// was not deleted, so a person who had just left or lost the right to
/// sign for the company walked away with a fresh certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pickup_behind_its_holders_deactivation_or_lost_signing_right_is_refused() {
    let deactivated = pickup_behind_a_change_of_its_holder(&[pb::CertificateUsage::Authentication], |holder, org| {
        vec![
            format!("UPDATE users SET state = 'DEACTIVATED', version = version + 1 WHERE id = '{holder}'"),
            // Deactivated without an end, the person gives their licence back.
            format!("UPDATE organisations SET licences_used = licences_used - 1 WHERE id = '{org}'"),
        ]
    })
    .await;
    assert_eq!(reason(&deactivated), "USER_NOT_ACTIVE", "{deactivated:?}");
    let unsigned = pickup_behind_a_change_of_its_holder(&[pb::CertificateUsage::Signing], |holder, _| {
        vec![format!(
            "UPDATE users SET signing_right = false, version = version + 1 WHERE id = '{holder}'"
        )]
    })
    .await;
    assert_eq!(reason(&unsigned), "SIGNING_RIGHT_MISSING", "{unsigned:?}");
}

/// An order for a holder whose deletion is in progress waits for it and is
/// refused: no order, and no pickup mail, for a person who left. Ordered
/// unlocked, it slipped behind the deletion's look at the holder's
/// certificates and stayed ORDERED for a deleted person. (PostgreSQL only,
/// as above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_behind_its_holders_deletion_is_refused() {
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let (holder, _) = app.member(&fixture, "Gaaende", &[]).await;
    let deletion = app
        .in_progress(&[
            format!(
                "UPDATE users SET state = 'DELETED', version = version + 1 WHERE id = '{}'",
                holder.id
            ),
            format!(
                "UPDATE organisations SET licences_used = licences_used - 1 WHERE id = '{}'",
                fixture.org.id
            ),
        ])
        .await;
    let ordering = {
        let (mut certs, token) = (app.certs(), fixture.admin_token.clone());
        let request = user_order(&fixture.org.id, &holder, &[pb::CertificateUsage::Authentication]);
        tokio::spawn(async move { certs.order_certificate(req(&token, request)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !ordering.is_finished(),
        "the order did not wait for the deletion in progress"
    );
    deletion.commit().await;
    assert_code(ordering.await.unwrap(), Code::NotFound);
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM certificates WHERE holder_id = '{}'",
            holder.id
        ))
        .await,
        0
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM outbox_mails WHERE kind = 'certificate_pickup' AND recipient = '{}'",
            holder.email
        ))
        .await,
        0,
        "no pickup mail"
    );
    app.finish().await;
}

/// A certificate revoked while the expiry sweep works through its batch
/// gets no expiry warning: the sweep read it as ISSUED and then claimed it
/// whatever had happened since, so its holder was told that a certificate
/// they had just revoked expires soon. (The revocation in progress is played
/// by a session that has written the row and not committed.) PostgreSQL
/// only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_revoked_during_the_expiry_sweep_gets_no_warning() {
    let app = TestApp::start(Backend::Postgres).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (_, _, certificate, not_after) = member_with_certificate(&app, &fixture, "Eva", &dir).await;
    let revocation = app
        .in_progress(&[format!(
            "UPDATE certificates SET state = 'REVOKED', revoked_at = 1, revocation_reason = 'KEY_COMPROMISED', \
             version = version + 1 WHERE id = '{}'",
            certificate.id
        )])
        .await;
    let sweeping = {
        let domain = app.domain.clone();
        tokio::spawn(async move { domain.warn_expiring_certificates(not_after - 29 * DAY_MS).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !sweeping.is_finished(),
        "the sweep did not wait for the revocation in progress"
    );
    revocation.commit().await;
    assert_eq!(sweeping.await.unwrap().unwrap(), 0, "nothing warned");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox_mails WHERE kind = 'certificate_expiring'")
            .await,
        0
    );
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// An expiry warning goes to the contact person as they are when it is
/// sent: the sweep read its batch, a contact change committed, and the
/// warning (sent once) went to the contact the batch had named, so the new
/// one never heard. (The contact change in progress is played by a session
/// that has written the row and not committed; the sweep's claim waits for
/// it.) PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_warning_goes_to_the_contact_of_the_moment() {
    let app = TestApp::start(Backend::Postgres).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (_, _, certificate, not_after) = member_with_certificate(&app, &fixture, "Eva", &dir).await;
    let (carl, _) = app.member(&fixture, "Carl", &[]).await;
    let contact_change = contact_change_in_progress(&app, &certificate, &carl).await;
    let sweeping = {
        let domain = app.domain.clone();
        tokio::spawn(async move { domain.warn_expiring_certificates(not_after - 29 * DAY_MS).await })
    };
    app.until_waiting_on_a_lock("certificates").await;
    contact_change.commit().await;
    assert_eq!(sweeping.await.unwrap().unwrap(), 1, "one warning");
    assert_eq!(
        app.mail_texts("certificate_expiring", &carl.email).await.len(),
        1,
        "the new contact is told"
    );
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The expiry sweep reads the certificates due and then writes each one
/// EXPIRED, on condition only that it is still ISSUED. A contact change
/// that commits between the read and the write has moved the version on;
/// the sweep must move it on again from there. It wrote the version it had
/// read plus one, the one the change had written: the certificate expired
/// under an ETag a client already held for it as ISSUED. (The contact
/// change in progress is played by a session that has written the row and
/// not committed; the sweep's write waits for it.) PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_behind_a_contact_change_moves_the_version_on_from_it() {
    let app = TestApp::start(Backend::Postgres).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (_, _, certificate, not_after) = member_with_certificate(&app, &fixture, "Eva", &dir).await;
    let (carl, _) = app.member(&fixture, "Carl", &[]).await;
    let contact_change = contact_change_in_progress(&app, &certificate, &carl).await;
    let sweeping = {
        let domain = app.domain.clone();
        tokio::spawn(async move { domain.expire_certificates(not_after).await })
    };
    app.until_waiting_on_a_lock("certificates").await;
    contact_change.commit().await;
    assert_eq!(sweeping.await.unwrap().unwrap(), 1, "the certificate expired");
    let expired = get(&app, &fixture.admin_token, &certificate.id).await.unwrap();
    assert_eq!(expired.state(), pb::CertificateState::Expired);
    assert_eq!(
        version(&expired),
        version(&certificate) + 2,
        "one version for the contact change, one for the expiry"
    );
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The same for the certificate a renewal supersedes: the renewal writes
/// it SUPERSEDED on condition only that it is still ISSUED (and under the
/// contact person the renewal copied), and a contact change committed
/// meanwhile must not leave it at the change's version. The holder's
/// renewal goes on with the new contact person: it had copied the one
/// the change replaced, and kept them, which no serial order gives.
/// PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supersession_behind_a_contact_change_moves_the_version_on_from_it() {
    let app = TestApp::start(Backend::Postgres).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (_, session, certificate, _) = member_with_certificate(&app, &fixture, "Eva", &dir).await;
    let (carl, _) = app.member(&fixture, "Carl", &[]).await;
    let contact_change = contact_change_in_progress(&app, &certificate, &carl).await;
    let renewing = renewal_started(&app, &session, &certificate, csr(&dir, "eva-2", "p256"));
    app.until_waiting_on_a_lock("certificates").await;
    contact_change.commit().await;
    let renewed = renewing.await.unwrap().expect("the renewal").certificate.unwrap();
    assert_eq!(renewed.contact_id, carl.id, "the renewal has the new contact person");
    let stored = get(&app, &fixture.admin_token, &renewed.id).await.unwrap();
    assert_eq!(stored.contact_id, carl.id, "as stored too");
    let superseded = get(&app, &fixture.admin_token, &certificate.id).await.unwrap();
    assert_eq!(superseded.state(), pb::CertificateState::Superseded);
    assert_eq!(
        version(&superseded),
        version(&certificate) + 2,
        "one version for the contact change, one for the supersession"
    );
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// An organisation certificate's contact person who renews it while it is
/// handed to someone else is refused once the change commits, as if they
/// had come after it: the renewal is the contact person's, and they are no
/// longer that. Before, the renewal superseded it on condition only that
/// it was still ISSUED: the certificate the new contact person had just
/// been told was theirs to look after was SUPERSEDED, by a new one in the
/// hands of the person it was taken from. (The contact change in progress
/// is played by a session that has written the row and not committed.)
/// PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_behind_a_change_of_its_contact_person_is_refused() {
    let app = TestApp::start(Backend::Postgres).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (_, olga_session, certificate) = olgas_organisation_certificate(&app, &dir, &fixture).await;
    let (per, _) = app.member(&fixture, "Per", &[]).await;
    let contact_change = contact_change_in_progress(&app, &certificate, &per).await;
    let renewing = renewal_started(&app, &olga_session, &certificate, csr(&dir, "olga-2", "p256"));
    app.until_waiting_on_a_lock("certificates").await;
    contact_change.commit().await;
    assert_code(renewing.await.unwrap(), Code::PermissionDenied);
    let unchanged = get(&app, &fixture.admin_token, &certificate.id).await.unwrap();
    assert_eq!(unchanged.state(), pb::CertificateState::Issued);
    assert_eq!(unchanged.contact_id, per.id);
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM certificates WHERE renews_id = '{}'",
            certificate.id
        ))
        .await,
        0,
        "no renewal"
    );
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A user certificate's contact person deleted while the holder's renewal
/// commits: the deletion hands the renewal to the holder too. The renewal
/// had superseded the old certificate, so the deletion's handover of that
/// one waited for it, and then found it ended. Read once before, the
/// deletion had looked for what to hand over while the renewal was not yet
/// committed: the renewal kept the deleted person as its contact, and its
/// own renewal was refused (CERTIFICATE_CONTACT_NOT_ACTIVE) until an
/// administrator named another. (The renewal in progress is played by a
/// session that has written the new certificate and superseded the old
/// one, and not committed.) PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_committed_during_its_contacts_deletion_is_handed_over_too() {
    let app = TestApp::start(Backend::Postgres).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (bo, bo_session) = app.member(&fixture, "Bo", &[]).await;
    let (carl, _) = app.member(&fixture, "Carl", &[]).await;
    let with_carl = pb::OrderCertificateRequest {
        contact_id: carl.id.clone(),
        ..user_order(&fixture.org.id, &bo, &[pb::CertificateUsage::Authentication])
    };
    order(&app, &fixture.admin_token, with_carl).await.unwrap();
    let pickup = app.mailed_token("certificate_pickup", &bo.email).await;
    let certificate = issue(&app, &bo_session, &pickup, &csr(&dir, "bo-1", "p256"))
        .await
        .unwrap()
        .certificate
        .unwrap();
    let (renewal, renewal_id) = renewal_in_progress(&app, &certificate).await;
    let deleting = {
        let (app_users, token, id) = (app.users(), fixture.admin_token.clone(), carl.id.clone());
        tokio::spawn(async move {
            let mut users = app_users;
            users
                .delete_user(req(
                    &token,
                    pb::DeleteUserRequest {
                        id,
                        ..Default::default()
                    },
                ))
                .await
        })
    };
    app.until_waiting_on_a_lock("certificates").await;
    renewal.commit().await;
    deleting.await.unwrap().expect("Carl leaves");
    let renewed = get(&app, &fixture.admin_token, &renewal_id).await.unwrap();
    assert_eq!(renewed.contact_id, bo.id, "the renewal is handed to its holder");
    let superseded = get(&app, &fixture.admin_token, &certificate.id).await.unwrap();
    assert_eq!(superseded.state(), pb::CertificateState::Superseded);
    assert_eq!(
        superseded.contact_id, carl.id,
        "an ended certificate is left as it ended"
    );
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// `RenewCertificate` of `certificate` as `session` over the key of
/// `csr_pem`, started in the background: a renewal that waits on a write
/// in progress.
fn renewal_started(
    app: &TestApp,
    session: &str,
    certificate: &pb::Certificate,
    csr_pem: String,
) -> tokio::task::JoinHandle<Result<pb::RenewCertificateResponse, Status>> {
    let (mut certs, session) = (app.certs(), session.to_owned());
    let request = pb::RenewCertificateRequest {
        certificate_id: certificate.id.clone(),
        csr_pem,
    };
    tokio::spawn(async move {
        certs
            .renew_certificate(req(&session, request))
            .await
            .map(|r| r.into_inner())
    })
}

/// A RenewCertificate of `certificate` that has written the new
/// certificate (a copy of the old one under another id and serial, with
/// no pickup token) and superseded the old one, as that call does, and
/// not committed; with the new certificate's id.
async fn renewal_in_progress(app: &TestApp, certificate: &pb::Certificate) -> (InProgress, String) {
    let renewal_id = uuid::Uuid::now_v7();
    let in_progress = app
        .in_progress(&[
            format!(
                "CREATE TEMPORARY TABLE renewal ON COMMIT DROP AS SELECT * FROM certificates WHERE id = '{}'",
                certificate.id
            ),
            format!(
                "UPDATE renewal SET id = '{renewal_id}', renews_id = id, serial = '{}', \
                 pickup_token_hash = NULL, pickup_expires_at = NULL, version = 2",
                renewal_id.simple()
            ),
            "INSERT INTO certificates SELECT * FROM renewal".to_owned(),
            format!(
                "UPDATE certificates SET state = 'SUPERSEDED', revoked_at = {}, revocation_reason = 'SUPERSEDED', \
                 version = version + 1 WHERE id = '{}'",
                now_millis(),
                certificate.id
            ),
        ])
        .await;
    (in_progress, renewal_id.to_string())
}

/// A ChangeCertificateContact of `certificate` to `contact` that has
/// written the row, as that call does, and not committed.
async fn contact_change_in_progress(app: &TestApp, certificate: &pb::Certificate, contact: &pb::User) -> InProgress {
    app.in_progress(&[format!(
        "UPDATE certificates SET contact_id = '{}', version = version + 1 WHERE id = '{}'",
        contact.id, certificate.id
    )])
    .await
}

/// A certificate's version, as its ETag carries it.
fn version(certificate: &pb::Certificate) -> i64 {
    certificate.etag.parse().expect("an ETag is the version")
}

/// A person named as a certificate's contact while their deletion is in
/// progress: the change reads the person FOR SHARE, so it waits for the
/// deletion and is refused as for any deleted contact, the certificate left
/// as it was. Read unlocked, the person was still ACTIVE; the change
/// committed after the deletion had looked for the certificates it hands
/// over, and the certificate's pickup and renewal failed
/// CERTIFICATE_CONTACT_NOT_ACTIVE. (The deletion in progress is played by a
/// session that has written the person's row and not committed.)
/// PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_named_during_their_deletion_is_refused() {
    let app = TestApp::start(Backend::Postgres).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (eva, _, certificate, _) = member_with_certificate(&app, &fixture, "Eva", &dir).await;
    let (carl, _) = app.member(&fixture, "Carl", &[]).await;
    let deletion = deletion_in_progress(&app, &carl).await;
    let changing = {
        let (app_certs, token) = (app.certs(), fixture.admin_token.clone());
        let request = pb::ChangeCertificateContactRequest {
            certificate_id: certificate.id.clone(),
            contact_id: carl.id.clone(),
            etag: certificate.etag.clone(),
        };
        tokio::spawn(async move {
            let mut certs = app_certs;
            certs.change_certificate_contact(req(&token, request)).await
        })
    };
    app.until_waiting_on_a_lock("users").await;
    deletion_committed(&app, &fixture, deletion).await;
    assert_code(changing.await.unwrap(), Code::NotFound);
    let unchanged = get(&app, &fixture.admin_token, &certificate.id).await.unwrap();
    assert_eq!(unchanged.contact_id, eva.id);
    assert_eq!(unchanged.etag, certificate.etag);
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The same for an order naming as its contact a person whose deletion is
/// in progress: no order is left with a deleted contact. PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_naming_a_contact_during_their_deletion_is_refused() {
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let (eva, _) = app.member(&fixture, "Eva", &[]).await;
    let (carl, _) = app.member(&fixture, "Carl", &[]).await;
    let deletion = deletion_in_progress(&app, &carl).await;
    let ordering = {
        let (mut certs, token) = (app.certs(), fixture.admin_token.clone());
        let request = pb::OrderCertificateRequest {
            contact_id: carl.id.clone(),
            ..user_order(&fixture.org.id, &eva, &[pb::CertificateUsage::Authentication])
        };
        tokio::spawn(async move { certs.order_certificate(req(&token, request)).await })
    };
    app.until_waiting_on_a_lock("users").await;
    deletion_committed(&app, &fixture, deletion).await;
    assert_code(ordering.await.unwrap(), Code::NotFound);
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM certificates WHERE holder_id = '{}'",
            eva.id
        ))
        .await,
        0
    );
    app.finish().await;
}

/// DeleteUser of `person` that has written their row and not committed.
/// Only the person's row: with the organisation's row (DeleteUser locks it
/// and gives the licence back), the call under test would wait on the
/// organisation and never reach the person's row, whose lock is what is
/// tested. `deletion_committed` gives the licence back afterwards.
async fn deletion_in_progress(app: &TestApp, person: &pb::User) -> InProgress {
    app.in_progress(&[format!(
        "UPDATE users SET state = 'DELETED', version = version + 1 WHERE id = '{}'",
        person.id
    )])
    .await
}

/// Commits `deletion` and gives the deleted person's licence back, as
/// DeleteUser does in the same transaction.
async fn deletion_committed(app: &TestApp, fixture: &OrgFixture, deletion: InProgress) {
    deletion.commit().await;
    app.execute_bound(
        &format!(
            "UPDATE organisations SET licences_used = licences_used - 1 WHERE id = '{}'",
            fixture.org.id
        ),
        Vec::new(),
    )
    .await;
}

/// A CRL is read and signed outside its write transaction (on SQLite that
/// transaction holds every other write), then stored only if nothing it
/// signed has changed. A revocation that commits while the publisher waits
/// to store must not be left out of the newest CRL: the publisher signs
/// again. (The revocation is played by a session that holds the
/// publishers' lock and has written the row, not yet committed.)
/// PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_committed_while_a_crl_is_signed_is_in_it() {
    let app = TestApp::start(Backend::Postgres).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (_, _, certificate, _) = member_with_certificate(&app, &fixture, "Eva", &dir).await;
    let revocation = app
        .in_progress(&[
            "SELECT pg_advisory_xact_lock(5280)".to_owned(),
            format!(
                "UPDATE certificates SET state = 'REVOKED', revoked_at = {}, revocation_reason = 'KEY_COMPROMISED', \
                 version = version + 1 WHERE id = '{}'",
                chrono::Utc::now().timestamp_millis(),
                certificate.id
            ),
        ])
        .await;
    let publishing = {
        let domain = app.domain.clone();
        tokio::spawn(async move { domain.publish_crl(chrono::Utc::now().timestamp_millis()).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!publishing.is_finished(), "the publisher did not wait for its turn");
    revocation.commit().await;
    let published = publishing.await.unwrap().expect("a CRL");
    assert_eq!(published.revoked_count, 1, "the revocation is in the CRL");
    let newest = app.domain.current_crl().await.unwrap();
    assert_eq!((newest.number, newest.revoked_count), (published.number, 1));
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A holder with an order of `usages` picks it up while another session
/// has made `change(holder id, organisation id)` to their rows and not yet
/// committed: the pickup must wait for the change, then be refused (its
/// error is returned) and leave nothing ISSUED.
async fn pickup_behind_a_change_of_its_holder(
    usages: &[pb::CertificateUsage],
    change: impl Fn(&str, &str) -> Vec<String>,
) -> Status {
    let app = TestApp::start(Backend::Postgres).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (holder, session) = app
        .create_and_activate(
            &fixture.admin_token,
            pb::CreateUserRequest {
                signing_right: true,
                ..new_user(&fixture.org.id, "Afgaaende", &[])
            },
        )
        .await;
    order(&app, &fixture.admin_token, user_order(&fixture.org.id, &holder, usages))
        .await
        .unwrap();
    let pickup = app.mailed_token("certificate_pickup", &holder.email).await;
    let request = csr(&dir, "afgaaende", "p256");

    let changing = app.in_progress(&change(&holder.id, &fixture.org.id)).await;
    let picking = {
        let (app_certs, session, pickup) = (app.certs(), session.clone(), pickup.clone());
        tokio::spawn(async move {
            let mut certs = app_certs;
            certs
                .issue_certificate(req(
                    &session,
                    pb::IssueCertificateRequest {
                        token: pickup,
                        csr_pem: request,
                    },
                ))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    if picking.is_finished() {
        let answer = picking.await.unwrap().map(|_| "issued");
        panic!("the pickup did not wait for the change in progress: {answer:?}");
    }
    changing.commit().await;
    let answer = picking.await.unwrap();
    let refused = answer
        .map(|_| "issued")
        .expect_err("a pickup behind a change that breaks a rule");
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM certificates WHERE holder_id = '{}' AND state = 'ISSUED'",
            holder.id
        ))
        .await,
        0
    );
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
    refused
}

/// R-USR-10 closes the old profile when the person is re-created anonymous:
/// its certificates end with it, as with any deleted user (revoked, holder
/// left; open orders deleted). Left ISSUED, they stayed valid for years in
/// the name the person asked to be rid of. And the closing is a removal
/// (R-ORG-5): the organisation's last active administrator is not closed,
/// since the new profile is only pending.
async fn an_anonymity_approval_ends_the_old_profiles_certificates(backend: Backend) {
    let app = TestApp::start(backend).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (_, decider) = app.member(&fixture, "Anden", &[pb::Role::UserAdmin]).await;
    let (_, holder_session, issued, open_order) =
        member_with_certificate_and_order(&app, &fixture, "Skjult", &dir).await;
    let asked = app.ask_anonymity(&holder_session).await;
    app.approve_anonymity(&decider, &asked).await.expect("approved");
    assert_ended_with_their_holder(&app, &fixture.admin_token, &issued, &open_order).await;

    let asked = app.ask_anonymity(&fixture.admin_token).await;
    let last_admin = app.approve_anonymity(&decider, &asked).await;
    assert_eq!(
        reason(&assert_code(last_admin, Code::FailedPrecondition)),
        "LAST_ORGANISATION_ADMIN"
    );
    let admin = app
        .users()
        .get_user(req(
            &decider,
            pb::GetUserRequest {
                id: fixture.admin.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(admin.state(), pb::UserState::Active, "the refusal closed nothing");
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// R-CERT-2: signing needs the holder's signing right. Withdrawn, the
/// certificates that sign are revoked at once (CONTENT_INCORRECT, in the
/// CRL, the holder told) and orders for one are deleted; the rest stay.
/// Before, a signing certificate stayed valid for its three years, and the
/// person went on signing for the organisation.
async fn withdrawing_the_signing_right_revokes_what_signs(backend: Backend) {
    let app = TestApp::start(backend).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (karen, session) = app
        .create_and_activate(
            &fixture.admin_token,
            pb::CreateUserRequest {
                signing_right: true,
                ..new_user(&fixture.org.id, "Karen", &[])
            },
        )
        .await;
    let usages = [pb::CertificateUsage::Authentication, pb::CertificateUsage::Signing];
    let signing = issued_user_certificate(&app, &fixture, &karen, &session, &usages, &dir, "p256").await;
    let signing_certificate = signing.certificate.clone().unwrap();
    // Authentication with e-mail encryption signs mail as S/MIME clients
    // see it (openssl's smimesign purpose accepts it): it signs, too.
    let mail_usages = [
        pb::CertificateUsage::Authentication,
        pb::CertificateUsage::EmailEncryption,
    ];
    let mail_signing = issued_user_certificate(&app, &fixture, &karen, &session, &mail_usages, &dir, "p256").await;
    let mail_pem = write(&dir, "mail-signing.pem", &mail_signing.certificate_pem);
    let chain_pem = write(&dir, "mail-chain.pem", &mail_signing.chain_pem);
    let purpose = openssl(
        &dir,
        &[
            "verify",
            "-purpose",
            "smimesign",
            "-CAfile",
            chain_pem.to_str().unwrap(),
            mail_pem.to_str().unwrap(),
        ],
    );
    assert!(purpose.contains(": OK"), "an S/MIME signing certificate: {purpose}");
    let mail_signing = mail_signing.certificate.unwrap();
    let authenticating = issued_user_certificate(
        &app,
        &fixture,
        &karen,
        &session,
        &[pb::CertificateUsage::Authentication],
        &dir,
        "p256",
    )
    .await
    .certificate
    .unwrap();
    let admin = &fixture.admin_token;
    let signing_order = order(&app, admin, user_order(&fixture.org.id, &karen, &usages))
        .await
        .unwrap();
    let plain_order = order(
        &app,
        admin,
        user_order(&fixture.org.id, &karen, &[pb::CertificateUsage::Authentication]),
    )
    .await
    .unwrap();

    app.users()
        .update_user(req(
            admin,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: karen.id.clone(),
                    signing_right: false,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["signing_right".into()],
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("the signing right withdrawn");

    let revoked = get(&app, admin, &signing_certificate.id).await.unwrap();
    assert_eq!(revoked.state(), pb::CertificateState::Revoked);
    assert_eq!(revoked.revocation_reason(), pb::RevocationReason::ContentIncorrect);
    let revoked_mail = get(&app, admin, &mail_signing.id).await.unwrap();
    assert_eq!(revoked_mail.state(), pb::CertificateState::Revoked);
    assert_code(get(&app, admin, &signing_order.id).await, Code::NotFound);
    let kept = get(&app, admin, &authenticating.id).await.unwrap();
    assert_eq!(kept.state(), pb::CertificateState::Issued);
    let kept_order = get(&app, admin, &plain_order.id).await.unwrap();
    assert_eq!(kept_order.state(), pb::CertificateState::Ordered);
    let serial = upper(&signing_certificate.serial);
    let text = crl_text(&app, &dir, &signing.chain_pem, |t| t.contains(&serial)).await;
    assert!(!text.contains(&upper(&authenticating.serial)), "{text}");
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM outbox_mails WHERE kind = 'certificate_revoked' AND recipient = '{}'",
            karen.email
        ))
        .await,
        2
    );
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The subject line escapes its values as RFC 4514 asks: a name with a
/// comma is one value, and a first name written to look like a second
/// common name cannot pass for one. The search finds names as written.
/// Before, the line read `GN=Karen, CN=Root, SN=...`: two common names to
/// anyone who split it, as a client parsing RFC 4514 does.
async fn a_subject_line_reads_back_as_its_names(backend: Backend) {
    let app = TestApp::start(backend).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (karen, session) = app
        .create_and_activate(
            &fixture.admin_token,
            pb::CreateUserRequest {
                first_name: "Karen, CN=Root".into(),
                surname: "+Hansen".into(),
                email: unique_email("karen"),
                ..new_user(&fixture.org.id, "Karen", &[])
            },
        )
        .await;
    let issued = issued_user_certificate(
        &app,
        &fixture,
        &karen,
        &session,
        &[pb::CertificateUsage::Authentication],
        &dir,
        "p256",
    )
    .await;
    let certificate = issued.certificate.clone().unwrap();
    for expected in [r"GN=Karen\, CN=Root", r"SN=\+Hansen", r"CN=Karen\, CN=Root \+Hansen"] {
        assert!(
            certificate.subject.contains(expected),
            "{expected:?} missing from {:?}",
            certificate.subject
        );
    }
    // The certificate itself holds one common name, as openssl writes it
    // in RFC 2253 form: the same escapes.
    let pem = write(&dir, "karen.pem", &issued.certificate_pem);
    let rfc2253 = openssl(
        &dir,
        &[
            "x509",
            "-in",
            pem.to_str().unwrap(),
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
        ],
    );
    assert!(rfc2253.contains(r"CN=Karen\, CN=Root \+Hansen,"), "{rfc2253}");
    // Names past X.520's 64 characters for a common name: the given name
    // and surname whole, the common name cut to 64 (which OpenSSL re-encodes).
    let long_first = "Anne-Marie Kristine Elisabeth Sofie".to_owned();
    let long_surname = "Østergaard-Vestergaard Christensen-Møller".to_owned();
    let (long, long_session) = app
        .create_and_activate(
            &fixture.admin_token,
            pb::CreateUserRequest {
                first_name: long_first.clone(),
                surname: long_surname.clone(),
                ..new_user(&fixture.org.id, "Lang", &[])
            },
        )
        .await;
    let long_issued = issued_user_certificate(
        &app,
        &fixture,
        &long,
        &long_session,
        &[pb::CertificateUsage::Authentication],
        &dir,
        "p256",
    )
    .await;
    let long_pem = write(&dir, "long.pem", &long_issued.certificate_pem);
    let fields = openssl(
        &dir,
        &[
            "x509",
            "-in",
            long_pem.to_str().unwrap(),
            "-noout",
            "-subject",
            "-nameopt",
            "sep_multiline,utf8,sname",
        ],
    );
    let field = |name: &str| {
        fields
            .lines()
            .find_map(|line| line.trim().strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing from {fields}"))
            .to_owned()
    };
    assert_eq!(field("GN"), long_first);
    assert_eq!(field("SN"), long_surname);
    let common = field("CN");
    assert_eq!(common.chars().count(), 64, "{common:?}");
    assert!(format!("{long_first} {long_surname}").starts_with(&common));
    openssl(
        &dir,
        &[
            "x509",
            "-in",
            long_pem.to_str().unwrap(),
            "-out",
            "long-again.der",
            "-outform",
            "DER",
        ],
    );
    let rfc2253 = rfc2253.trim().trim_start_matches("subject=");
    for line in [rfc2253, certificate.subject.as_str()] {
        let common_names = unescaped_parts(line)
            .iter()
            .filter(|part| part.trim_start().starts_with("CN="))
            .count();
        assert_eq!(common_names, 1, "one common name in {line:?}");
    }
    let found = search(
        &app,
        &fixture.admin_token,
        pb::SearchCertificatesRequest {
            organisation_id: fixture.org.id.clone(),
            subject_text: "karen, cn=root +hansen".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(found.len(), 1, "found by the name as written");
}

/// The attributes of a subject line: split at each comma no backslash
/// escapes.
fn unescaped_parts(line: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                part.push(c);
                part.extend(chars.next());
            }
            ',' => parts.push(std::mem::take(&mut part)),
            _ => part.push(c),
        }
    }
    parts.push(part);
    parts
}

/// An organisation certificate's serialNumber (`UI:DK-O:G:<id>`) is the
/// identity relying parties key on: every renewal keeps the first
/// certificate's. Before, the second renewal took the first renewal's id.
async fn an_organisation_certificate_keeps_its_identity_through_renewals(backend: Backend) {
    let app = TestApp::start(backend).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    allow_kinds(&app, &fixture, &[pb::CertificateKind::Organisation]).await;
    let token = &fixture.admin_token;
    let first = order(
        &app,
        token,
        pb::OrderCertificateRequest {
            organisation_id: fixture.org.id.clone(),
            kind: pb::CertificateKind::Organisation as i32,
            label: "Lønsystem".into(),
            usages: vec![pb::CertificateUsage::ServiceAccess as i32],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let pickup = app.mailed_token("certificate_pickup", &fixture.admin.email).await;
    let mut current = issue(&app, token, &pickup, &csr(&dir, "org-0", "p256"))
        .await
        .unwrap()
        .certificate
        .unwrap();
    let identity = format!("serialNumber=UI:DK-O:G:{}", first.id);
    for renewal in 1..=3 {
        assert!(
            current.subject.contains(&identity),
            "{identity} in {:?}",
            current.subject
        );
        let renewed = app
            .certs()
            .renew_certificate(req(
                token,
                pb::RenewCertificateRequest {
                    certificate_id: current.id.clone(),
                    csr_pem: csr(&dir, &format!("org-{renewal}"), "p256"),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let pem = write(&dir, &format!("org-{renewal}.pem"), &renewed.certificate_pem);
        let text = openssl(&dir, &["x509", "-in", pem.to_str().unwrap(), "-noout", "-subject"]);
        assert!(
            text.contains(&format!("serialNumber = UI:DK-O:G:{}", first.id)),
            "renewal {renewal}: {text}"
        );
        current = renewed.certificate.unwrap();
    }
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Two keys (R-ACC-4) for the signing right as for roles: a user
/// administrator cannot give it to themselves (and then order themselves a
/// SIGNING certificate); a colleague gives it, and giving it up is one's
/// own call.
async fn nobody_gives_themselves_the_signing_right(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (ulla, ulla_session) = app.member(&fixture, "Ulla", &[pb::Role::UserAdmin]).await;
    let signing = |allowed: bool| pb::UpdateUserRequest {
        user: Some(pb::User {
            id: ulla.id.clone(),
            signing_right: allowed,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["signing_right".into()],
        }),
        ..Default::default()
    };
    let before = app.fingerprint().await;
    let own = app.users().update_user(req(&ulla_session, signing(true))).await;
    let status = assert_code(own, Code::PermissionDenied);
    assert!(status.message().contains("two keys"), "{status:?}");
    assert_eq!(
        app.fingerprint().await,
        before,
        "a refused self-grant changed something"
    );
    let given = app
        .users()
        .update_user(req(&fixture.admin_token, signing(true)))
        .await
        .expect("a colleague gives it")
        .into_inner()
        .user
        .unwrap();
    assert!(given.signing_right);
    let given_up = app
        .users()
        .update_user(req(&ulla_session, signing(false)))
        .await
        .expect("giving it up is her own call")
        .into_inner()
        .user
        .unwrap();
    assert!(!given_up.signing_right);
    app.finish().await;
}

/// R-CERT-3: the contact person is told of a revocation, also when it
/// comes from the holder's deletion; the holder who left is told nothing.
/// Before, a holder's deletion revoked in silence.
async fn the_contact_person_learns_the_holder_left(backend: Backend) {
    let app = TestApp::start(backend).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (bo, bo_session) = app.member(&fixture, "Bo", &[]).await;
    order(
        &app,
        &fixture.admin_token,
        pb::OrderCertificateRequest {
            contact_id: fixture.admin.id.clone(),
            ..user_order(&fixture.org.id, &bo, &[pb::CertificateUsage::Authentication])
        },
    )
    .await
    .unwrap();
    let pickup = app.mailed_token("certificate_pickup", &bo.email).await;
    issue(&app, &bo_session, &pickup, &csr(&dir, "bo", "p256"))
        .await
        .unwrap();
    app.users()
        .delete_user(req(
            &fixture.admin_token,
            pb::DeleteUserRequest {
                id: bo.id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .expect("deleted");
    let told = |email: String| {
        let app = &app;
        async move {
            app.count(&format!(
                "SELECT COUNT(*) FROM outbox_mails WHERE kind = 'certificate_revoked' AND recipient = '{email}'"
            ))
            .await
        }
    };
    assert_eq!(told(fixture.admin.email.clone()).await, 1, "the contact person is told");
    assert_eq!(told(bo.email.clone()).await, 0, "the holder who left is not");
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// `RenewCertificate` of `id` over the key of `csr_pem`, as `token`.
async fn renew(app: &TestApp, token: &str, id: &str, csr_pem: &str) -> Result<pb::RenewCertificateResponse, Status> {
    app.certs()
        .renew_certificate(req(
            token,
            pb::RenewCertificateRequest {
                certificate_id: id.to_owned(),
                csr_pem: csr_pem.to_owned(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// `ChangeCertificateContact` of `id` to `contact_id`, as `token`.
async fn change_contact(
    app: &TestApp,
    token: &str,
    id: &str,
    contact_id: &str,
    etag: &str,
) -> Result<pb::Certificate, Status> {
    app.certs()
        .change_certificate_contact(req(
            token,
            pb::ChangeCertificateContactRequest {
                certificate_id: id.to_owned(),
                contact_id: contact_id.to_owned(),
                etag: etag.to_owned(),
            },
        ))
        .await
        .map(|r| r.into_inner().certificate.unwrap())
}

/// A user certificate whose contact person is someone else: their
/// deletion hands the contact to the holder, in history. Before, the
/// holder's pickup and renewal failed NOT_FOUND for ever (the contact was
/// read as a person of the organisation, and nothing could change it).
async fn a_user_certificates_contact_who_leaves_hands_it_to_the_holder(backend: Backend) {
    let app = TestApp::start(backend).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (bo, bo_session) = app.member(&fixture, "Bo", &[]).await;
    let (carl, _) = app.member(&fixture, "Carl", &[]).await;
    let with_carl = || pb::OrderCertificateRequest {
        contact_id: carl.id.clone(),
        ..user_order(&fixture.org.id, &bo, &[pb::CertificateUsage::Authentication])
    };
    order(&app, &fixture.admin_token, with_carl()).await.unwrap();
    let first_pickup = app.mailed_token("certificate_pickup", &bo.email).await;
    let issued = issue(&app, &bo_session, &first_pickup, &csr(&dir, "bo-1", "p256"))
        .await
        .unwrap()
        .certificate
        .unwrap();
    let open_order = order(&app, &fixture.admin_token, with_carl()).await.unwrap();
    let pickup = app.mailed_token("certificate_pickup", &bo.email).await;
    assert_eq!(open_order.contact_id, carl.id);

    app.delete_user(&fixture.admin_token, &carl.id)
        .await
        .expect("Carl leaves");

    let picked_up = issue(&app, &bo_session, &pickup, &csr(&dir, "bo-2", "p256"))
        .await
        .expect("the holder picks up after the contact person left");
    assert_eq!(picked_up.certificate.unwrap().contact_id, bo.id);
    let renewed = renew(&app, &bo_session, &issued.id, &csr(&dir, "bo-3", "p256"))
        .await
        .expect("the holder renews after the contact person left");
    assert_eq!(renewed.certificate.unwrap().contact_id, bo.id);
    for certificate in [&issued, &open_order] {
        let events = history(&app, &fixture.admin_token, &certificate.id).await;
        let handed_over = events
            .iter()
            .find(|e| e.activity() == pb::HistoryActivity::CertificateContactChanged)
            .expect("the handover is in the certificate's history");
        assert_eq!(changed_to(handed_over, "contact_id"), Some(bo.id.as_str()));
    }
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// An organisation certificate for service access, ordered by `token`
/// (its contact person unless `contact_id` says otherwise).
fn organisation_order(org: &str, label: &str) -> pb::OrderCertificateRequest {
    pb::OrderCertificateRequest {
        organisation_id: org.to_owned(),
        kind: pb::CertificateKind::Organisation as i32,
        label: label.into(),
        usages: vec![pb::CertificateUsage::ServiceAccess as i32],
        ..Default::default()
    }
}

/// Olga, an organisation administrator, with the organisation certificate
/// "Løn" she ordered and picked up (its contact person).
async fn olgas_organisation_certificate(
    app: &TestApp,
    dir: &Path,
    fixture: &OrgFixture,
) -> (pb::User, String, pb::Certificate) {
    allow_kinds(app, fixture, &[pb::CertificateKind::Organisation]).await;
    let (olga, olga_session) = app.member(fixture, "Olga", &[pb::Role::OrganisationAdmin]).await;
    order(app, &olga_session, organisation_order(&fixture.org.id, "Løn"))
        .await
        .unwrap();
    let first_pickup = app.mailed_token("certificate_pickup", &olga.email).await;
    let issued = issue(app, &olga_session, &first_pickup, &csr(dir, "olga-1", "p256"))
        .await
        .unwrap()
        .certificate
        .unwrap();
    (olga, olga_session, issued)
}

/// The contact person a certificate is taken from is told, naming the new
/// one, unless they made the change themselves; the new one is told too.
/// Before, the previous contact heard nothing: a certificate could be
/// moved away from them without a word.
async fn the_previous_contact_person_is_told_of_a_change(backend: Backend) {
    let app = TestApp::start(backend).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (olga, _, issued) = olgas_organisation_certificate(&app, &dir, &fixture).await;
    let admin = &fixture.admin_token;
    let (per, per_session) = app.member(&fixture, "Per", &[pb::Role::OrganisationAdmin]).await;
    let replaced = |to: String| {
        let app = &app;
        async move { app.mail_texts("certificate_contact_replaced", &to).await }
    };
    // The administrator hands it to Per: Olga is told, by name of Per.
    change_contact(&app, admin, &issued.id, &per.id, "")
        .await
        .expect("Per is the contact person");
    let told = replaced(olga.email.clone()).await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains(&format!("{} {}", per.first_name, per.surname)),
        "{}",
        told[0]
    );
    assert!(told[0].contains("Løn"), "{}", told[0]);
    assert_eq!(app.mail_texts("certificate_contact", &per.email).await.len(), 1);
    // Per hands it back himself: he is not told of his own change.
    change_contact(&app, &per_session, &issued.id, &olga.id, "")
        .await
        .expect("Olga is the contact person again");
    assert!(replaced(per.email.clone()).await.is_empty());
    assert_eq!(app.mail_texts("certificate_contact", &olga.email).await.len(), 1);
    app.finish().await;
}

/// The contact person of an organisation certificate picks it up and
/// renews it. Deleted or deactivated, they cannot: pickup and renewal say
/// so (FAILED_PRECONDITION, naming ChangeCertificateContact) instead of a
/// bare refusal, and an organisation administrator hands the certificate
/// to another person, who gets a new pickup token (the old one is dead)
/// or, for an issued certificate, a notice.
async fn an_organisation_certificates_contact_who_left_is_replaced(backend: Backend) {
    let app = TestApp::start(backend).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (olga, olga_session, issued) = olgas_organisation_certificate(&app, &dir, &fixture).await;
    let admin = &fixture.admin_token;
    let open_order = order(&app, &olga_session, organisation_order(&fixture.org.id, "Faktura"))
        .await
        .unwrap();
    let old_pickup = app.mailed_token("certificate_pickup", &olga.email).await;
    assert_eq!(open_order.contact_id, olga.id);

    app.delete_user(admin, &olga.id).await.expect("Olga leaves");

    let before = app.fingerprint().await;
    let pickup = issue(&app, admin, &old_pickup, &csr(&dir, "admin-1", "p256")).await;
    let refused = assert_code(pickup, Code::FailedPrecondition);
    assert_eq!(reason(&refused), "CERTIFICATE_CONTACT_NOT_ACTIVE", "{refused:?}");
    assert!(refused.message().contains("ChangeCertificateContact"), "{refused:?}");
    let renewal = renew(&app, admin, &issued.id, &csr(&dir, "admin-2", "p256")).await;
    let refused = assert_code(renewal, Code::FailedPrecondition);
    assert_eq!(reason(&refused), "CERTIFICATE_CONTACT_NOT_ACTIVE", "{refused:?}");
    assert!(refused.message().contains("deleted"), "{refused:?}");
    assert_eq!(app.fingerprint().await, before, "a refusal changed something");
    // Someone who manages no organisation certificates learns nothing of
    // their contact person.
    let (_, bo_session) = app.member(&fixture, "Bo", &[]).await;
    let before = app.fingerprint().await;
    let renewal = renew(&app, &bo_session, &issued.id, &csr(&dir, "bo", "p256")).await;
    assert_code(renewal, Code::PermissionDenied);
    assert_eq!(app.fingerprint().await, before, "a refusal changed something");

    // A deactivated contact person cannot sign in to pick up either.
    let (pia, pia_session) = app.member(&fixture, "Pia", &[pb::Role::OrganisationAdmin]).await;
    order(&app, &pia_session, organisation_order(&fixture.org.id, "Arkiv"))
        .await
        .unwrap();
    let pias_pickup = app.mailed_token("certificate_pickup", &pia.email).await;
    app.users()
        .deactivate_user(req(
            admin,
            pb::DeactivateUserRequest {
                id: pia.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("Pia is deactivated");
    let before = app.fingerprint().await;
    let pickup = issue(&app, admin, &pias_pickup, &csr(&dir, "admin-3", "p256")).await;
    let refused = assert_code(pickup, Code::FailedPrecondition);
    assert_eq!(reason(&refused), "CERTIFICATE_CONTACT_NOT_ACTIVE", "{refused:?}");
    assert!(refused.message().contains("DEACTIVATED"), "{refused:?}");
    assert_eq!(app.fingerprint().await, before, "a refusal changed something");

    // What ChangeCertificateContact refuses, changing nothing.
    let before = app.fingerprint().await;
    let refusals = [
        ("", "", Code::InvalidArgument, "INVALID_ARGUMENT"),
        (olga.id.as_str(), "", Code::InvalidArgument, "INVALID_ARGUMENT"),
        (pia.id.as_str(), "", Code::FailedPrecondition, "USER_NOT_ACTIVE"),
        (fixture.admin.id.as_str(), "999", Code::Aborted, "STALE_ETAG"),
    ];
    for (contact_id, etag, code, expected) in refusals {
        let change = change_contact(&app, admin, &open_order.id, contact_id, etag).await;
        let refused = assert_code(change, code);
        assert_eq!(reason(&refused), expected, "{contact_id:?}: {refused:?}");
        if code == Code::InvalidArgument {
            assert_eq!(bad_fields(&refused), ["contact_id"], "{refused:?}");
        }
    }
    assert_eq!(app.fingerprint().await, before, "a refusal changed something");
    let (carl, _) = app.member(&fixture, "Carl", &[]).await;
    app.delete_user(admin, &carl.id).await.expect("Carl leaves");
    let before_plain = app.fingerprint().await;
    let deleted = change_contact(&app, admin, &open_order.id, &carl.id, "").await;
    assert_code(deleted, Code::NotFound);
    let plain = change_contact(&app, &bo_session, &open_order.id, &fixture.admin.id, "").await;
    assert_code(plain, Code::PermissionDenied);
    assert_eq!(app.fingerprint().await, before_plain, "a refusal changed something");

    // An organisation administrator names another contact person: the
    // order's pickup is theirs now, over a new token; the old one is dead.
    let changed = change_contact(&app, admin, &open_order.id, &fixture.admin.id, &open_order.etag)
        .await
        .expect("another contact person for the order");
    assert_eq!(changed.contact_id, fixture.admin.id);
    assert_ne!(changed.etag, open_order.etag);
    let stale = issue(&app, admin, &old_pickup, &csr(&dir, "admin-4", "p256")).await;
    assert_eq!(
        reason(&assert_code(stale, Code::FailedPrecondition)),
        "CERTIFICATE_PICKUP_UNKNOWN"
    );
    let new_pickup = app.mailed_token("certificate_pickup", &fixture.admin.email).await;
    let picked_up = issue(&app, admin, &new_pickup, &csr(&dir, "admin-5", "p256"))
        .await
        .expect("the new contact person picks up")
        .certificate
        .unwrap();
    assert_eq!(picked_up.state(), pb::CertificateState::Issued);

    // Of the issued one they are told, and renew it.
    let notices_sql = format!(
        "SELECT COUNT(*) FROM outbox_mails WHERE kind = 'certificate_contact' AND recipient = '{}'",
        fixture.admin.email
    );
    let notices = || app.count(&notices_sql);
    assert_eq!(notices().await, 0);
    change_contact(&app, admin, &issued.id, &fixture.admin.id, "")
        .await
        .expect("another contact person for the certificate");
    assert_eq!(notices().await, 1, "the new contact person is told");
    renew(&app, admin, &issued.id, &csr(&dir, "admin-6", "p256"))
        .await
        .expect("the new contact person renews");
    let events = history(&app, admin, &issued.id).await;
    let change = events
        .iter()
        .find(|e| e.activity() == pb::HistoryActivity::CertificateContactChanged)
        .expect("the change is in the certificate's history");
    assert_eq!(changed_to(change, "contact_id"), Some(fixture.admin.id.as_str()));
    // The renewed certificate is SUPERSEDED: final.
    let before = app.fingerprint().await;
    let superseded = change_contact(&app, admin, &issued.id, &pia.id, "").await;
    assert_eq!(
        reason(&assert_code(superseded, Code::FailedPrecondition)),
        "CERTIFICATE_REVOKED"
    );
    assert_eq!(app.fingerprint().await, before, "a refusal changed something");
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// An organisation certificate that carries an e-mail address carries its
/// contact person's. Handed to another contact person, it carries theirs:
/// left as it was, the new contact's pickup found the address no longer
/// the contact's (EMAIL_NOT_VERIFIED, "order again").
async fn a_new_contact_person_takes_over_the_certificates_address(backend: Backend) {
    let app = TestApp::start(backend).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    allow_kinds(&app, &fixture, &[pb::CertificateKind::Organisation]).await;
    let admin = &fixture.admin_token;
    let (olga, olga_session) = app.member(&fixture, "Olga", &[pb::Role::OrganisationAdmin]).await;
    let (pia, pia_session) = app.member(&fixture, "Pia", &[pb::Role::OrganisationAdmin]).await;
    let ordered = order(
        &app,
        &olga_session,
        pb::OrderCertificateRequest {
            email: olga.email.clone(),
            ..organisation_order(&fixture.org.id, "Post")
        },
    )
    .await
    .unwrap();
    let changed = change_contact(&app, admin, &ordered.id, &pia.id, "").await.unwrap();
    assert_eq!(changed.contact_id, pia.id);
    assert_eq!(changed.email, pia.email);
    let pickup = app.mailed_token("certificate_pickup", &pia.email).await;
    let issued = issue(&app, &pia_session, &pickup, &csr(&dir, "pia", "p256"))
        .await
        .expect("the new contact picks it up, with her own address")
        .certificate
        .unwrap();
    assert_eq!(issued.email, pia.email);
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// An address whose domain is an IDN is stored in its Unicode form; a
/// certificate must carry it in ASCII, so the order names it in Punycode,
/// and that is the holder's own address (it was compared as typed, and
/// refused). Signing in with the Punycode form finds the person too.
async fn an_address_with_an_idn_domain_is_named_in_punycode(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    allow_kinds(&app, &fixture, &[pb::CertificateKind::Employee]).await;
    let local = unique_email("anna").split('@').next().unwrap().to_owned();
    let (anna, _) = app
        .member_with_password_from(
            &fixture.admin_token,
            pb::CreateUserRequest {
                email: format!("{local}@æblegården.dk"),
                ..new_user(&fixture.org.id, "Anna", &[])
            },
        )
        .await;
    assert_eq!(anna.email, format!("{local}@æblegården.dk"));
    let ascii = format!("{local}@xn--blegrden-d0af.dk");
    let ordered = order(
        &app,
        &fixture.admin_token,
        pb::OrderCertificateRequest {
            email: ascii.to_uppercase(),
            ..user_order(&fixture.org.id, &anna, &[pb::CertificateUsage::Authentication])
        },
    )
    .await
    .expect("the holder's own address, in ASCII (and in capitals)");
    assert_eq!(ordered.state(), pb::CertificateState::Ordered);
    // The certificate carries the address as the person's, not as typed.
    assert_eq!(ordered.email, ascii);
    app.login(&ascii, TEST_PASSWORD)
        .await
        .expect("signed in by the address's ASCII form");
    app.finish().await;
}

/// A certificate ends no later than the CA that signs it: a relying party
/// rejects a chain whose CA expired, so a user certificate of three years
/// from a CA with a month left stopped working after a month, its expiry
/// warnings and renewal still years away.
async fn no_certificate_outlives_its_ca(backend: Backend) {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Udløbende CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_end = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    params.not_after = ca_end;
    let certificate = params.self_signed(&key).unwrap();
    let ca = orgadmin_domain::ca::CertificateAuthority::from_pem(&key.serialize_pem(), &certificate.pem(), "", "", "")
        .expect("a CA with a month left");
    let app = TestApp::start_with_ca(backend, std::sync::Arc::new(ca)).await;
    let fixture = app.org_with_admin().await;
    let dir = fresh_dir();
    let (_, _, issued, not_after) = member_with_certificate(&app, &fixture, "Kortlivet", &dir).await;
    assert_eq!(issued.state, pb::CertificateState::Issued as i32);
    let ca_end_ms = ca_end.unix_timestamp() * 1000;
    assert!(
        not_after <= ca_end_ms && not_after > ca_end_ms - DAY_MS,
        "the certificate ends {not_after}, its CA {ca_end_ms}"
    );
    app.finish().await;
}

/// OCSP by GET (RFC 6960 A.1, RFC 5019): the request's DER, base64 and
/// URL-encoded, after `/ocsp/`, as Windows, macOS and Java ask for short
/// requests. They got 405 and fell back to soft-fail, so a revoked
/// certificate passed with them. Both encodings clients use: `/` encoded,
/// and left as it is.
async fn ocsp_is_answered_by_get_too(backend: Backend) {
    use base64::Engine;
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let dir = fresh_dir();
    let (member, session) = app.member(&fixture, "Opslag", &[]).await;
    let issued = issued_user_certificate(
        &app,
        &fixture,
        &member,
        &session,
        &[pb::CertificateUsage::Authentication],
        &dir,
        "p256",
    )
    .await;
    let certificate = write(&dir, "get.pem", &issued.certificate_pem);
    let chain = write(&dir, "get-chain.pem", &issued.chain_pem);
    let (certificate, chain) = (certificate.to_str().unwrap(), chain.to_str().unwrap());
    let ask = |state: &'static str| {
        let app = &app;
        let dir = dir.clone();
        async move {
            // A request with a nonce: its base64 holds `+`, `/` or `=` now
            // and then; several tries make one with each likely.
            for attempt in 0..8 {
                let request = format!("get-{attempt}.der");
                openssl(
                    &dir,
                    &["ocsp", "-issuer", chain, "-cert", certificate, "-reqout", &request],
                );
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(std::fs::read(dir.join(&request)).unwrap());
                let url_encoded = encoded.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
                for path in [url_encoded, encoded.replace('=', "%3D")] {
                    let (head, body) = http_get(app, &format!("/ocsp/{path}")).await;
                    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                    assert_eq!(
                        header_value(&head, "content-type").as_deref(),
                        Some("application/ocsp-response")
                    );
                    let response = write(&dir, "get-response.der", &body);
                    let out = openssl(
                        &dir,
                        &[
                            "ocsp",
                            "-respin",
                            response.to_str().unwrap(),
                            // The answer's status for this certificate
                            // (its nonce echoes the request's: not compared).
                            "-no_nonce",
                            "-issuer",
                            chain,
                            "-CAfile",
                            chain,
                            "-cert",
                            certificate,
                        ],
                    );
                    assert!(out.contains("Response verify OK"), "{out}");
                    assert!(out.contains(&format!(": {state}")), "{out}");
                }
            }
        }
    };
    ask("good").await;
    revoke(
        &app,
        &fixture.admin_token,
        &issued.certificate.as_ref().unwrap().id,
        pb::RevocationReason::KeyCompromised,
    )
    .await
    .unwrap();
    ask("revoked").await;
    let (head, _) = http_get(&app, "/ocsp/ikke-base64!").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    app.finish().await;
}

/// A key reported compromised is not certified again, and a renewal is
/// over a new key (R-CERT-4): picking up a new order with the CSR of a
/// certificate revoked as KEY_COMPROMISED gave the attacker who holds the
/// key a valid certificate again, and a renewal kept the old key.
async fn a_compromised_key_is_not_certified_again(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let dir = fresh_dir();
    let (member, session) = app.member(&fixture, "Kompromitteret", &[]).await;
    let usages = [pb::CertificateUsage::Authentication];
    let old_key = csr(&dir, "gammel", "p256");
    order(
        &app,
        &fixture.admin_token,
        user_order(&fixture.org.id, &member, &usages),
    )
    .await
    .unwrap();
    let pickup = app.mailed_token("certificate_pickup", &member.email).await;
    let issued = issue(&app, &session, &pickup, &old_key)
        .await
        .unwrap()
        .certificate
        .unwrap();
    let renew = |csr_pem: String| {
        let (mut certs, session, id) = (app.certs(), session.clone(), issued.id.clone());
        async move {
            certs
                .renew_certificate(req(
                    &session,
                    pb::RenewCertificateRequest {
                        certificate_id: id,
                        csr_pem,
                    },
                ))
                .await
        }
    };
    let before = app.fingerprint().await;
    let same_key = assert_code(renew(old_key.clone()).await, Code::FailedPrecondition);
    assert_eq!(reason(&same_key), "CERTIFICATE_KEY_NOT_NEW");
    assert_eq!(app.fingerprint().await, before, "a refused renewal changed data");

    // A certificate from before keys were hashed (migration 80): its hash
    // comes from its DER as it is revoked.
    // By serial: a text column on both databases (SQLite keeps ids as blobs).
    let unhash = format!(
        "UPDATE certificates SET public_key_hash = NULL WHERE serial = '{}'",
        issued.serial
    );
    let unhashed = || async {
        use sea_orm::ConnectionTrait;
        app.domain
            .db()
            .execute_unprepared(&unhash)
            .await
            .unwrap()
            .rows_affected()
    };
    assert_eq!(unhashed().await, 1);
    revoke(&app, &session, &issued.id, pb::RevocationReason::KeyCompromised)
        .await
        .unwrap();
    let hashed = format!(
        "SELECT COUNT(*) FROM certificates WHERE serial = '{}' AND public_key_hash IS NOT NULL",
        issued.serial
    );
    assert_eq!(app.count(&hashed).await, 1, "the revocation hashed the key");
    // As a pod of the release before would have left it, during the
    // upgrade: without the hash. The check finds it by its DER.
    assert_eq!(unhashed().await, 1);
    order(
        &app,
        &fixture.admin_token,
        user_order(&fixture.org.id, &member, &usages),
    )
    .await
    .unwrap();
    let pickup = app.mailed_token("certificate_pickup", &member.email).await;
    let before = app.fingerprint().await;
    let compromised = assert_code(issue(&app, &session, &pickup, &old_key).await, Code::FailedPrecondition);
    assert_eq!(reason(&compromised), "CERTIFICATE_KEY_COMPROMISED");
    assert_eq!(app.fingerprint().await, before, "a refused pickup changed data");
    // A new key is certified, with the same token.
    let fresh = issue(&app, &session, &pickup, &csr(&dir, "ny", "p256")).await.unwrap();
    assert_eq!(fresh.certificate.unwrap().state, pb::CertificateState::Issued as i32);
    // One revoked before the upgrade: migration 81 hashes its key.
    app.undo_migrations_from("m20261207_000081_hash_compromised_keys").await;
    {
        use orgadmin_migrations::{Migrator, MigratorTrait};
        Migrator::up(app.domain.db(), None).await.expect("up again");
    }
    assert_eq!(app.count(&hashed).await, 1, "migration 81 hashed the key");
    app.finish().await;
}

/// A revoked certificate stays on one regularly scheduled CRL issued after
/// it expired (RFC 5280 §3.3), then leaves: it left the very first CRL
/// signed after its end.
async fn a_revoked_certificate_stays_on_one_crl_after_it_expires(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let dir = fresh_dir();
    let (_, _, certificate, not_after) = member_with_certificate(&app, &fixture, "Udløbet", &dir).await;
    revoke(
        &app,
        &fixture.admin_token,
        &certificate.id,
        pb::RevocationReason::HolderLeft,
    )
    .await
    .expect("revoked");
    let listed = |app: &TestApp| {
        let mut certs = app.certs();
        let token = fixture.admin_token.clone();
        async move {
            certs
                .get_crl(req(&token, pb::GetCrlRequest {}))
                .await
                .unwrap()
                .into_inner()
                .revoked_count
        }
    };
    assert_eq!(listed(&app).await, 1);
    let period = orgadmin_domain::services::certificates::CertificateSettings::default().crl_validity_ms;
    // Signed an hour after the certificate's end: still listed.
    assert!(app.domain.refresh_crl_if_due(not_after + 60 * 60 * 1000).await.unwrap());
    assert_eq!(listed(&app).await, 1, "gone from the first CRL after its end");
    // A period later: gone.
    assert!(app.domain.refresh_crl_if_due(not_after + 2 * period).await.unwrap());
    assert_eq!(listed(&app).await, 0);
    app.finish().await;
}

/// AIP-155: an order whose answer was lost (a timeout, UNAVAILABLE after
/// the commit) is sent again with its request id: the retry gets the first
/// order, and the holder one pickup mail; a second order would mail a
/// second token that works for the whole pickup period. The same id with
/// another request, or from another caller, is refused.
async fn a_retried_order_is_made_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (holder, _) = app.member(&fixture, "Holger", &[]).await;
    let (_, other_admin) = app.member(&fixture, "Olga", &[pb::Role::UserAdmin]).await;
    let asked = pb::OrderCertificateRequest {
        request_id: "ordre-2026-0042".into(),
        ..user_order(&fixture.org.id, &holder, &[pb::CertificateUsage::Authentication])
    };
    let first = order(&app, &fixture.admin_token, asked.clone()).await.expect("ordered");
    let again = order(&app, &fixture.admin_token, asked.clone())
        .await
        .expect("the retry");
    assert_eq!(again.id, first.id, "a retry made a second order");
    let orders = app
        .row_where(
            "SELECT COUNT(*) FROM certificates WHERE holder_id =",
            holder.id.parse().unwrap(),
        )
        .await
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(orders, 1);
    assert_eq!(app.mail_texts("certificate_pickup", &holder.email).await.len(), 1);

    let before = app.fingerprint().await;
    for (token, request) in [
        (
            &fixture.admin_token,
            pb::OrderCertificateRequest {
                usages: vec![pb::CertificateUsage::Signing as i32],
                ..asked.clone()
            },
        ),
        (&other_admin, asked.clone()),
    ] {
        let reused = assert_code(order(&app, token, request).await, Code::AlreadyExists);
        assert_eq!(reason(&reused), "REQUEST_ID_REUSED");
    }
    let long = assert_code(
        order(
            &app,
            &fixture.admin_token,
            pb::OrderCertificateRequest {
                request_id: "x".repeat(101),
                ..asked.clone()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&long), ["request_id"]);
    assert_eq!(app.fingerprint().await, before, "a refused retry changed data");
    app.finish().await;
}

/// R-CERT-4, R-ORG-3: where people are deactivated, never deleted, an
/// import's delete row still says the person left. Their certificates end
/// as a deletion's do (revoked, holder left; open orders gone); before,
/// they stayed valid, and OCSP answered good, for years.
async fn a_bulk_deletion_under_deactivate_only_ends_the_leavers_certificates(backend: Backend) {
    let app = TestApp::start(backend).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    app.change_settings(&fixture, "deletion_policy", |s| {
        s.deletion_policy = pb::DeletionPolicy::DeactivateOnly as i32
    })
    .await;
    let (leaver, _, issued, open_order) = member_with_certificate_and_order(&app, &fixture, "Leaver", &dir).await;
    let rows = vec![crate::imports::row(&[(0, &leaver.id), (3, &leaver.email)])];
    let job = crate::imports::deleted_from(&app, &fixture.admin_token, &fixture.org.id, &rows).await;
    assert_eq!(app.import_job(&fixture.admin_token, &job.id).await.applied, 1);
    assert_eq!(
        app.user(&fixture.admin_token, &leaver.id).await.state,
        pb::UserState::Deactivated as i32
    );
    assert_ended_with_their_holder(&app, &fixture.admin_token, &issued, &open_order).await;
    // The leaver, no longer reading their work mail, is not told (a
    // deleted leaver never was); they were their own contact person here.
    assert!(app.mail_subjects("certificate_revoked", &leaver.email).await.is_empty());

    // One deactivated by hand first (an open-ended deactivation keeps the
    // certificates), then named in the delete file: the row ends them too,
    // though there is nothing left to deactivate.
    let (gone, _, issued, open_order) = member_with_certificate_and_order(&app, &fixture, "Gone", &dir).await;
    app.users()
        .deactivate_user(req(
            &fixture.admin_token,
            pb::DeactivateUserRequest {
                id: gone.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("deactivated by hand");
    let rows = vec![crate::imports::row(&[(0, &gone.id), (3, &gone.email)])];
    let job = crate::imports::deleted_from(&app, &fixture.admin_token, &fixture.org.id, &rows).await;
    assert_eq!(app.import_job(&fixture.admin_token, &job.id).await.applied, 1);
    assert_ended_with_their_holder(&app, &fixture.admin_token, &issued, &open_order).await;
    assert!(app.mail_subjects("certificate_revoked", &gone.email).await.is_empty());
    app.finish().await;
}

/// A CRL the worker did not renew (it is down, or far behind) is renewed by
/// whoever serves it once less than a quarter of its life is left: served
/// as it was, it passed its nextUpdate and relying parties that check it
/// (OpenSSL's crl_check, Windows) refused every certificate of the CA.
/// The overdue CRL is one signed a year ago (`publish_crl` at that time);
/// no worker runs here.
async fn an_overdue_crl_is_renewed_by_whoever_serves_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    let year_ago = orgadmin_domain::model::now_millis() - YEAR_MS;
    let overdue = app.domain.publish_crl(year_ago).await.expect("a CRL signed a year ago");
    let publications = "SELECT COUNT(*) FROM crl_publications";
    assert_eq!(app.count(publications).await, 1);

    let (head, served) = http_get(&app, "/crl").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(served != overdue.der, "the overdue CRL was served");
    assert_eq!(app.count(publications).await, 2, "one new CRL");
    let renewed = app.domain.current_crl().await.expect("the newest CRL");
    assert!(served == renewed.der, "the newest CRL was not the one served");
    assert!(renewed.next_update > orgadmin_domain::model::now_millis());
    // Served again, it is not renewed again.
    let (_, again) = http_get(&app, "/crl").await;
    assert!(again == served, "served again, the CRL changed");
    assert_eq!(app.count(publications).await, 2);
    app.finish().await;
}

/// The expiry warning's "in N days" counts by the dates the mail names: a
/// warning sent just after midnight the day before a certificate ends said
/// "udløber om 2 dage" (more than 24 hours were left) beside tomorrow's
/// date. PostgreSQL only (the count is the same on both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_warning_counts_the_days_its_date_names() {
    let app = TestApp::start(Backend::Postgres).await;
    let dir = fresh_dir();
    let fixture = app.org_with_admin().await;
    let (member, _, _, not_after) = member_with_certificate(&app, &fixture, "Eva", &dir).await;
    // One second past midnight (UTC) of the day before it ends.
    let last_day_starts = not_after - not_after.rem_euclid(DAY_MS);
    let now = last_day_starts - DAY_MS + 1000;
    assert!(not_after - now > DAY_MS, "more than 24 hours left");
    assert_eq!(app.domain.warn_expiring_certificates(now).await.unwrap(), 1);
    let subjects = app.mail_subjects("certificate_expiring", &member.email).await;
    assert!(
        subjects.len() == 1 && subjects[0].contains("udløber om 1 dag hos"),
        "{subjects:?}"
    );
    app.finish().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// R-CERT-4: an order whose pickup token expired unused can never be
/// picked up; left ORDERED it stood in every list as waiting, for ever.
/// The worker's sweep deletes it as DeleteCertificateOrder would, with a
/// history event saying why; a live order is left alone.
async fn an_order_nobody_picked_up_ends_with_its_token(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (member, _) = app.member(&fixture, "Otto", &[]).await;
    let ordered = order(
        &app,
        &fixture.admin_token,
        user_order(&fixture.org.id, &member, &[pb::CertificateUsage::Authentication]),
    )
    .await
    .unwrap();
    let ends = ms(ordered.pickup_expire_time.as_ref().expect("a pickup end"));
    assert_eq!(app.domain.end_unclaimed_orders(ends - 1000).await.unwrap(), 0);
    assert_eq!(
        get(&app, &fixture.admin_token, &ordered.id).await.unwrap().state(),
        pb::CertificateState::Ordered
    );
    assert_eq!(app.domain.end_unclaimed_orders(ends).await.unwrap(), 1);
    assert_code(get(&app, &fixture.admin_token, &ordered.id).await, Code::NotFound);
    let id: uuid::Uuid = ordered.id.parse().unwrap();
    let events = app
        .row_where(
            "SELECT COUNT(*) AS n FROM history_events WHERE activity = 'CERTIFICATE_ORDER_DELETED' AND changes LIKE '%pickup expired%' AND subject_id =",
            id,
        )
        .await;
    assert_eq!(events.try_get::<i64>("", "n").unwrap(), 1, "one history event");
    assert_eq!(app.domain.end_unclaimed_orders(ends).await.unwrap(), 0, "once");
    app.finish().await;
}
