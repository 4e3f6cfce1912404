//! Bulk imports (R-BULK-1..6): files in three encodings, every kind of bad
//! row, edit, delete (both deletion policies), legacy, validate-only,
//! licences, cancel, limits and bulk activation. Jobs are uploaded over real
//! gRPC and run by the worker's own domain functions in this process; the
//! worker binary's runs (killed mid-job, two replicas) are in workers.rs.

use orgadmin_domain::DomainSettings;
use orgadmin_domain::services::imports::ImportSettings;
use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost_types::FieldMask;
use tonic::Code;

both_backends!(
    a_report_lists_at_most_its_share_of_errors,
    create_files_in_three_encodings_land_every_row,
    every_kind_of_bad_row_is_reported_and_the_good_ones_land,
    licences_and_validate_only,
    validate_only_counts_the_admin_seats_of_earlier_batches,
    licences_go_to_the_rows_that_can_be_created,
    edit_and_delete_files,
    rows_after_one_that_ends_the_requester_run_on_what_is_left,
    legacy_files_bring_deactivated_users_and_administrators,
    cancel_limits_and_broken_files,
    bulk_activation_mails_cpr_users_and_lists_the_others,
    an_import_that_keeps_failing_ends_failed,
    a_long_upload_is_not_taken_for_abandoned,
    a_retried_upload_returns_the_first_job,
    uploads_in_progress_take_their_places,
    a_long_report_comes_in_pieces,
    rows_are_named_as_a_spreadsheet_shows_them,
    a_watch_of_a_job_that_never_moves_ends,
);

pub const HEADER_DA: &str = "Bruger-ID;CPR-nummer;Fødselsdato;E-mail;Fornavn;Efternavn;Brugernavn;Telefon;Enhed;Sprog;Roller;Tegningsret;Identifikationsmidler;Eksternt ID;RID-nummer";
const HEADER_SV: &str = "Användar-ID;Personnummer;Födelsedatum;E-post;Förnamn;Efternamn;Användarnamn;Telefon;Enhet;Språk;Roller;Firmateckningsrätt;Identifieringsmetoder;Externt ID;RID-nummer";
const HEADER_EN: &str = "User ID;CPR number;Birth date;E-mail;First name;Surname;Username;Phone;Unit;Language;Roles;Signing right;Identification means;External ID;RID number";

const FIRST_NAMES: &[&str] = &[
    "Søren", "Åse", "Ærling", "Øjvind", "Märta", "Björn", "Åsa", "Örjan", "Line", "Mads",
];
const SURNAMES: &[&str] = &[
    "Ærø",
    "Østergård",
    "Ågren",
    "Lindqvist",
    "Nørgaard",
    "Sjöberg",
    "Hansen",
    "Bäckström",
];

/// A row of the 15 columns, from (column index, value) pairs.
pub fn row(cells: &[(usize, &str)]) -> String {
    let mut out = vec![String::new(); 15];
    for (i, value) in cells {
        out[*i] = value.to_string();
    }
    out.join(";")
}

/// A CPR number no other row of the file has (a real date, 19xx).
pub fn nth_cpr(i: usize) -> String {
    format!(
        "{:02}{:02}{:02}{:04}",
        1 + i % 28,
        1 + (i / 28) % 12,
        60 + (i / 336) % 40,
        1000 + i % 2000
    )
}

/// `n` good create rows: Danish and Swedish names, every other one with a
/// CPR number, the others with a birth date.
pub fn create_rows(n: usize, tag: &str) -> Vec<String> {
    create_rows_from(0, n, tag)
}

/// `create_rows` whose CPR numbers start at the `offset`-th.
pub fn create_rows_from(offset: usize, n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let first = FIRST_NAMES[i % FIRST_NAMES.len()];
            let surname = SURNAMES[i % SURNAMES.len()];
            let email = format!("bruger{i}.{tag}@firma.dk");
            let cpr = nth_cpr(offset + i);
            if i.is_multiple_of(2) {
                row(&[(1, &cpr), (3, &email), (4, first), (5, surname), (9, "da")])
            } else {
                row(&[
                    (2, "1990-05-17"),
                    (3, &email),
                    (4, first),
                    (5, surname),
                    (9, "sv"),
                    (11, "ja"),
                ])
            }
        })
        .collect()
}

pub fn file(header: &str, rows: &[String]) -> String {
    let mut text = String::from(header);
    for r in rows {
        text.push_str("\r\n");
        text.push_str(r);
    }
    text.push_str("\r\n");
    text
}

pub fn spec(org: &str, kind: pb::ImportKind) -> pb::ImportSpec {
    pb::ImportSpec {
        organisation_id: org.to_owned(),
        kind: kind as i32,
        file_name: "brugere.csv".into(),
        ..Default::default()
    }
}

/// Uploads a file as `token`, runs the queue as the worker would, and
/// returns the job as it ended.
async fn imported(app: &TestApp, token: &str, spec: pb::ImportSpec, file: &[u8], piece: usize) -> pb::ImportJob {
    let job = app.upload_import(token, spec, file, piece).await.expect("upload");
    app.run_imports().await;
    app.import_job(token, &job.id).await
}

/// A retried upload (the same `request_id`, say after a lost answer)
/// returns the job the first one made: one job, its rows created once.
async fn a_retried_upload_returns_the_first_job(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let text = file(HEADER_DA, &create_rows(3, "gentaget"));
    let retried = pb::ImportSpec {
        request_id: "upload-gentaget".into(),
        ..spec(&fixture.org.id, pb::ImportKind::Create)
    };
    let first = app
        .upload_import(&token, retried.clone(), text.as_bytes(), 1 << 20)
        .await
        .expect("upload");
    let again = app
        .upload_import(&token, retried.clone(), text.as_bytes(), 1 << 20)
        .await
        .expect("the retry");
    assert_eq!(again.id, first.id);
    assert_eq!(app.count("SELECT COUNT(*) FROM import_jobs").await, 1);
    // The same id with another request is refused, not answered with the
    // first one's job: a real run after a check (nothing would be
    // imported, and nothing said), a DELETE under a CREATE's id.
    for other in [
        pb::ImportSpec {
            validate_only: true,
            ..retried.clone()
        },
        pb::ImportSpec {
            kind: pb::ImportKind::Delete as i32,
            ..retried.clone()
        },
    ] {
        let refused = app
            .upload_import(&token, other, text.as_bytes(), 1 << 20)
            .await
            .expect_err("the same request id with another request");
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (Code::AlreadyExists, "REQUEST_ID_REUSED")
        );
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM import_jobs").await, 1);
    app.run_imports().await;
    assert_eq!(app.import_job(&token, &first.id).await.applied, 3);

    // Two uploads with one request id at once (a client that retried while
    // its first upload was still streaming): the one that finishes second
    // meets the first's job at its end, and answers with it.
    let at_once = pb::ImportSpec {
        request_id: "upload-samtidig".into(),
        ..spec(&fixture.org.id, pb::ImportKind::Create)
    };
    let text = file(HEADER_DA, &create_rows(2, "samtidig"));
    let (send, receive) = tokio::sync::mpsc::channel(4);
    for part in [
        pb::create_import_request::Part::Spec(at_once.clone()),
        pb::create_import_request::Part::Chunk(text.as_bytes().to_vec()),
    ] {
        send.send(pb::CreateImportRequest { part: Some(part) }).await.unwrap();
    }
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(receive));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut imports = app.imports();
    let streaming = tokio::spawn(async move { imports.create_import(request).await });
    let mut waited = 0;
    while app.count("SELECT COUNT(*) FROM import_jobs").await < 2 {
        waited += 1;
        assert!(waited < 200, "the streaming upload never began");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let finished_first = app
        .upload_import(&token, at_once, text.as_bytes(), 1 << 20)
        .await
        .expect("the upload that finishes first");
    drop(send);
    let second = streaming
        .await
        .unwrap()
        .expect("the upload that finishes second answers with the first's job")
        .into_inner()
        .job
        .expect("job");
    assert_eq!(second.id, finished_first.id);
    app.finish().await;
}

/// A file of `kind` with these rows (Danish header), run to its end.
async fn run_rows(app: &TestApp, token: &str, org: &str, kind: pb::ImportKind, rows: &[String]) -> pb::ImportJob {
    imported(app, token, spec(org, kind), file(HEADER_DA, rows).as_bytes(), 1 << 20).await
}

/// A create file of these rows, run to its end.
pub(crate) async fn created_from(app: &TestApp, token: &str, org: &str, rows: &[String]) -> pb::ImportJob {
    run_rows(app, token, org, pb::ImportKind::Create, rows).await
}

/// A delete file of these rows, run to its end.
pub(crate) async fn deleted_from(app: &TestApp, token: &str, org: &str, rows: &[String]) -> pb::ImportJob {
    run_rows(app, token, org, pb::ImportKind::Delete, rows).await
}

async fn users_of(app: &TestApp, token: &str, org: &str) -> Vec<pb::User> {
    let mut users = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .users()
            .list_users(req(
                token,
                pb::ListUsersRequest {
                    organisation_id: org.to_owned(),
                    page_size: 500,
                    page_token,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        users.extend(page.users);
        if page.next_page_token.is_empty() {
            return users;
        }
        page_token = page.next_page_token;
    }
}

fn errors_of(errors: &[pb::ImportRowError]) -> Vec<(i64, &str, &str)> {
    errors
        .iter()
        .map(|e| (e.row, e.column.as_str(), e.reason.as_str()))
        .collect()
}

async fn create_files_in_three_encodings_land_every_row(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin_limits(Some(100_000), None).await;
    let token = fixture.admin_token.clone();
    let n = 1000;
    let utf8 = file(HEADER_DA, &create_rows_from(0, n, "u8")).into_bytes();
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(file(HEADER_SV, &create_rows_from(n, n, "bom")).into_bytes());
    let ansi_text = file(HEADER_EN, &create_rows_from(2 * n, n, "ansi"));
    let (cp1252, _, lossy) = encoding_rs::WINDOWS_1252.encode(&ansi_text);
    assert!(!lossy, "the test file must be representable in Windows-1252");
    let cases = [
        (utf8, pb::FileEncoding::Utf8),
        (bom, pb::FileEncoding::Utf8Bom),
        (cp1252.into_owned(), pb::FileEncoding::Windows1252),
    ];
    let mut jobs = Vec::new();
    for (bytes, _) in &cases {
        // Pieces that split characters and quoted cells alike.
        let job = app
            .upload_import(&token, spec(&fixture.org.id, pb::ImportKind::Create), bytes, 7_777)
            .await
            .expect("upload");
        assert_eq!(job.state, pb::ImportState::Queued as i32);
        assert_eq!(job.file_bytes, bytes.len() as i64);
        jobs.push(job);
    }
    app.run_imports().await;
    for (job, (_, encoding)) in jobs.iter().zip(&cases) {
        let done = app.import_job(&token, &job.id).await;
        assert_eq!(done.state, pb::ImportState::Succeeded as i32, "{done:?}");
        assert_eq!(done.encoding, *encoding as i32, "{done:?}");
        let errors = app.import_errors(&token, &job.id).await;
        assert!(errors.is_empty(), "{:#?}", &errors[..errors.len().min(3)]);
        assert_eq!(
            (done.rows, done.applied, done.failed, done.skipped),
            (n as i64, n as i64, 0, 0)
        );
        assert_eq!(done.requester_id, fixture.admin.id);
    }
    let users = users_of(&app, &token, &fixture.org.id).await;
    assert_eq!(users.len(), 3 * n + 1);
    // Letters intact in every encoding; imported users wait for activation
    // without mail (R-BULK-4).
    for tag in ["u8", "bom", "ansi"] {
        let user = users
            .iter()
            .find(|u| u.email == format!("bruger7.{tag}@firma.dk"))
            .expect("imported user");
        assert_eq!(
            (user.first_name.as_str(), user.surname.as_str()),
            ("Örjan", "Bäckström")
        );
        assert_eq!(user.state, pb::UserState::PendingActivation as i32);
        assert!(user.signing_right);
        assert_eq!(user.language, pb::Language::Sv as i32);
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox_mails WHERE kind = 'activation'")
            .await,
        1,
        "an import sends no activation: the one mail is the administrator's own"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM history_events WHERE activity = 'USER_CREATED'")
            .await,
        3 * n as i64 + 1,
        "every imported user has its history"
    );
    // R-BULK-6: the requester is told, once per job, in their language.
    let notes = app
        .notes()
        .list_notifications(req(&token, pb::ListNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .notifications;
    let finished: Vec<_> = notes
        .iter()
        .filter(|n| n.kind == pb::NotificationKind::ImportFinished as i32)
        .collect();
    assert_eq!(finished.len(), 3);
    assert!(
        finished
            .iter()
            .all(|n| n.body.contains(&n.subject_id) && n.body.contains("1000"))
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox_mails WHERE kind = 'import_finished'")
            .await,
        3
    );
    app.finish().await;
}

async fn every_kind_of_bad_row_is_reported_and_the_good_ones_land(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let unit = app
        .orgs()
        .create_unit(req(
            &token,
            pb::CreateUnitRequest {
                organisation_id: fixture.org.id.clone(),
                kind: pb::UnitKind::ProductionUnit as i32,
                name: "Fabrikken".into(),
                number: "1012345678".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .unit
        .unwrap();
    // R-ORG-3: MitID and passwords allowed, NemLog-in not.
    app.change_settings(&fixture, "allowed_identification_means", |s| {
        s.allowed_identification_means = vec![
            pb::IdentificationMeans::Mitid as i32,
            pb::IdentificationMeans::Password as i32,
        ]
    })
    .await;
    let long_name = "L".repeat(101);
    let rows = vec![
        // 2: good, placed in the unit by its P-number.
        row(&[
            (1, &nth_cpr(1)),
            (3, "god.en@firma.dk"),
            (4, "Åse"),
            (5, "Ågren"),
            (8, "1012345678"),
        ]),
        // 3: a column missing.
        row(&[(1, &nth_cpr(2)), (3, "kort@firma.dk"), (4, "Kort"), (5, "Række")])[1..].to_string(),
        // 4: no such date.
        row(&[(1, "3102851234"), (3, "cpr@firma.dk"), (4, "Forkert"), (5, "Cpr")]),
        // 5: not an address.
        row(&[(1, &nth_cpr(4)), (3, "ikke-en-adresse"), (4, "Forkert"), (5, "Mail")]),
        // 6: no such unit.
        row(&[
            (1, &nth_cpr(5)),
            (3, "enhed@firma.dk"),
            (4, "Ukendt"),
            (5, "Enhed"),
            (8, "99999999"),
        ]),
        // 7 and 8: the same address twice in the file (case aside).
        row(&[(1, &nth_cpr(6)), (3, "dobbelt@firma.dk"), (4, "Først"), (5, "Dobbelt")]),
        row(&[(1, &nth_cpr(7)), (3, "DOBBELT@firma.dk"), (4, "Sidst"), (5, "Dobbelt")]),
        // 9: the administrator's address, already in the database.
        row(&[(1, &nth_cpr(8)), (3, &fixture.admin.email), (4, "Optaget"), (5, "Mail")]),
        // 10: a name too long.
        row(&[(1, &nth_cpr(9)), (3, "lang@firma.dk"), (4, &long_name), (5, "Navn")]),
        // 11: an unknown role and a bad yes/no.
        row(&[
            (1, &nth_cpr(10)),
            (3, "rolle@firma.dk"),
            (4, "Rolle"),
            (5, "Forkert"),
            (10, "CHEF"),
            (11, "måske"),
        ]),
        // 12: an empty row is skipped.
        row(&[]),
        // 13: good, birth date, English language, identification means.
        row(&[
            (2, "1975-12-24"),
            (3, "god.to@firma.dk"),
            (4, "Märta"),
            (5, "Sjöberg"),
            (9, "en"),
            (12, "MITID,PASSWORD"),
        ]),
        // 14: a quoted cell with a semicolon and a line break in a name.
        "\"\";;1980-01-01;citat@firma.dk;\"Anne;\r\nMarie\";Citat;;;;;;;;;".to_string(),
        // 15: an id in a create file; a RID outside a legacy file.
        row(&[
            (0, "0191b4a0-0000-7000-8000-000000000000"),
            (1, &nth_cpr(11)),
            (3, "id@firma.dk"),
            (4, "Med"),
            (5, "Id"),
            (14, "RID-1"),
        ]),
        // 16: a means the organisation does not allow.
        row(&[
            (1, &nth_cpr(12)),
            (3, "nemlog@firma.dk"),
            (4, "Nem"),
            (5, "Log"),
            (12, "MITID,NEMLOG_IN"),
        ]),
    ];
    let job = imported(
        &app,
        &token,
        spec(&fixture.org.id, pb::ImportKind::Create),
        file(HEADER_DA, &rows).as_bytes(),
        100,
    )
    .await;
    let done = app.import_job(&token, &job.id).await;
    assert_eq!(done.state, pb::ImportState::Succeeded as i32);
    let errors = app.import_errors(&token, &job.id).await;
    assert_eq!(
        errors_of(&errors),
        vec![
            (3, "", "INVALID_ARGUMENT"),
            (4, "cpr", "INVALID_ARGUMENT"),
            (5, "email", "INVALID_ARGUMENT"),
            (6, "unit", "INVALID_ARGUMENT"),
            (7, "email", "DUPLICATE_IN_FILE"),
            (8, "email", "DUPLICATE_IN_FILE"),
            (9, "email", "EMAIL_TAKEN"),
            (10, "first_name", "INVALID_ARGUMENT"),
            (11, "roles", "INVALID_ARGUMENT"),
            (11, "signing_right", "INVALID_ARGUMENT"),
            (14, "first_name", "INVALID_ARGUMENT"),
            (15, "legacy_id", "INVALID_ARGUMENT"),
            (15, "user_id", "INVALID_ARGUMENT"),
            (16, "identification_means", "INVALID_ARGUMENT"),
        ],
        "{errors:#?}"
    );
    assert!(errors[4].message.contains("row 8"), "{:?}", errors[4]);
    assert!(errors[5].message.contains("row 7"), "{:?}", errors[5]);
    assert!(errors.iter().all(|e| !e.applied && !e.message.is_empty()));
    assert_eq!((done.rows, done.applied, done.failed, done.skipped), (15, 2, 12, 1));
    let users = users_of(&app, &token, &fixture.org.id).await;
    let first = users.iter().find(|u| u.email == "god.en@firma.dk").expect("good row 2");
    assert_eq!(first.unit_id, unit.id);
    let second = users
        .iter()
        .find(|u| u.email == "god.to@firma.dk")
        .expect("good row 13");
    assert_eq!(second.birth_date, "1975-12-24");
    assert_eq!(second.identification_means.len(), 2);
    assert_eq!(users.len(), 3);

    // The report opens in Excel: a byte-order mark, semicolons, the
    // requester's language, one line per error.
    let mut stream = app
        .imports()
        .get_import_report(req(&token, pb::GetImportReportRequest { id: job.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    let mut report = Vec::new();
    while let Some(piece) = stream.message().await.unwrap() {
        report.extend(piece.chunk);
    }
    assert!(report.starts_with(b"\xEF\xBB\xBF"));
    let text = String::from_utf8(report[3..].to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Række;Kolonne;Årsag;Besked;Udført");
    assert_eq!(lines.len(), 1 + errors.len());
    assert!(lines[1].starts_with("3;;INVALID_ARGUMENT;"), "{}", lines[1]);
    app.finish().await;
}

async fn licences_and_validate_only(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin_limits(Some(4), None).await;
    let org = fixture.org.clone();
    let token = fixture.admin_token.clone();
    // One licence is the administrator's: 3 are free for 5 rows.
    let rows = create_rows(5, "lic");
    let check = imported(
        &app,
        &token,
        pb::ImportSpec {
            validate_only: true,
            ..spec(&org.id, pb::ImportKind::Create)
        },
        file(HEADER_DA, &rows).as_bytes(),
        1 << 20,
    )
    .await;
    let checked = app.import_job(&token, &check.id).await;
    assert!(checked.validate_only);
    assert_eq!((checked.applied, checked.failed), (3, 2), "{checked:?}");
    assert_eq!(
        users_of(&app, &token, &org.id).await.len(),
        1,
        "validate_only applies nothing"
    );
    let expected = vec![(5, "", "LICENCE_LIMIT_REACHED"), (6, "", "LICENCE_LIMIT_REACHED")];
    assert_eq!(errors_of(&app.import_errors(&token, &check.id).await), expected);

    let real = created_from(&app, &token, &org.id, &rows).await;
    let done = app.import_job(&token, &real.id).await;
    assert_eq!((done.applied, done.failed), (3, 2));
    let errors = app.import_errors(&token, &real.id).await;
    assert_eq!(errors_of(&errors), expected, "the check said what the run did");
    assert!(errors[0].message.contains("all 4 licences"), "{:?}", errors[0]);
    assert_eq!(users_of(&app, &token, &org.id).await.len(), 4);
    app.finish().await;
}

/// A validate-only check rolls each batch back; the administrator seats
/// its earlier batches took count as taken, as the licences do, so the
/// check says what applying the file would. Before, every batch saw the
/// seats of before the file: the check passed an administrator row that
/// the run then refused.
async fn validate_only_counts_the_admin_seats_of_earlier_batches(backend: Backend) {
    let app = app_with_imports(
        backend,
        ImportSettings {
            create_batch_size: 2,
            ..ImportSettings::default()
        },
    )
    .await;
    // Two administrator seats, one the fixture's: one is free.
    let fixture = app.org_with_admin_limits(Some(100), Some(2)).await;
    let (org, token) = (fixture.org.id.clone(), fixture.admin_token.clone());
    let mut rows = create_rows(4, "seat");
    for admin_row in [0, 2] {
        let mut cells: Vec<String> = rows[admin_row].split(';').map(str::to_owned).collect();
        cells.resize(15, String::new());
        cells[10] = "ORGANISATION_ADMIN".into();
        rows[admin_row] = cells.join(";");
    }
    let check = imported(
        &app,
        &token,
        pb::ImportSpec {
            validate_only: true,
            ..spec(&org, pb::ImportKind::Create)
        },
        file(HEADER_DA, &rows).as_bytes(),
        1 << 20,
    )
    .await;
    let checked = app.import_job(&token, &check.id).await;
    let expected = vec![(4, "roles", "MAX_ADMINISTRATORS_REACHED")];
    assert_eq!((checked.applied, checked.failed), (3, 1), "{checked:?}");
    assert_eq!(errors_of(&app.import_errors(&token, &check.id).await), expected);
    let real = created_from(&app, &token, &org, &rows).await;
    assert_eq!((real.applied, real.failed), (3, 1), "{real:?}");
    assert_eq!(
        errors_of(&app.import_errors(&token, &real.id).await),
        expected,
        "the check said what the run did"
    );
    app.finish().await;
}

/// The rows of a batch are created together: a row refused for another
/// reason (an e-mail address taken, a unit unknown) takes no licence from
/// the rows after it, and the free licences go to the first rows that can
/// be created, in file order, as if each row were created alone.
async fn licences_go_to_the_rows_that_can_be_created(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin_limits(Some(5), None).await;
    let org = fixture.org.clone();
    let token = fixture.admin_token.clone();
    let rows = create_rows(6, "share");
    // Row 3's address is someone's already: 3 of the 5 licences stay free.
    app.users()
        .create_user(req(
            &token,
            pb::CreateUserRequest {
                email: "BRUGER1.share@firma.dk".into(),
                ..new_user(&org.id, "Tove", &[])
            },
        ))
        .await
        .unwrap();
    let mut rows = rows;
    // Row 4 names a unit the organisation does not have.
    rows[2] = row(&[
        (1, &nth_cpr(2)),
        (3, "bruger2.share@firma.dk"),
        (4, "Ukendt"),
        (5, "Enhed"),
        (8, "99999999"),
    ]);
    let job = created_from(&app, &token, &org.id, &rows).await;
    assert_eq!((job.applied, job.failed), (3, 3), "{job:?}");
    let errors = app.import_errors(&token, &job.id).await;
    assert_eq!(
        errors_of(&errors),
        vec![
            (3, "email", "EMAIL_TAKEN"),
            (4, "unit", "INVALID_ARGUMENT"),
            (7, "", "LICENCE_LIMIT_REACHED")
        ],
        "{errors:?}"
    );
    let emails: Vec<String> = users_of(&app, &token, &org.id)
        .await
        .into_iter()
        .map(|u| u.email)
        .collect();
    for created in [
        "bruger0.share@firma.dk",
        "bruger3.share@firma.dk",
        "bruger4.share@firma.dk",
    ] {
        assert!(emails.iter().any(|e| e == created), "{created} in {emails:?}");
    }
    assert_eq!(app.licences_used(&token, &org.id).await, 5);
    app.finish().await;
}

async fn edit_and_delete_files(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let mut made = Vec::new();
    let mut cprs = Vec::new();
    for name in ["Anna", "Bent", "Carl", "Dorte", "Erik"] {
        let request = pb::CreateUserRequest {
            phone: "+45 12 34 56 78".into(),
            ..new_user(&fixture.org.id, name, &[])
        };
        cprs.push(request.cpr.clone());
        let user = app
            .users()
            .create_user(req(&token, request))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        made.push(user);
    }
    let [anna, bent, carl, dorte, erik] = [&made[0], &made[1], &made[2], &made[3], &made[4]];
    let edit = vec![
        // 2: by id and e-mail: new surname, phone cleared.
        row(&[(0, &anna.id), (3, &anna.email), (5, "Ærøsen"), (7, "#RYD")]),
        // 3: by id and e-mail of two different users.
        row(&[(0, &bent.id), (3, &carl.email), (5, "Forkert")]),
        // 4: one identifying column only.
        row(&[(1, &cprs[3]), (5, "Alene")]),
        // 5: nothing to change.
        row(&[(0, &erik.id), (3, &erik.email), (4, &erik.first_name)]),
        // 6: an id no user has.
        row(&[
            (0, "0191b4a0-0000-7000-8000-000000000000"),
            (3, &dorte.email),
            (5, "Ingen"),
        ]),
    ];
    let job = imported(
        &app,
        &token,
        spec(&fixture.org.id, pb::ImportKind::Edit),
        file(HEADER_EN, &edit).as_bytes(),
        64,
    )
    .await;
    let done = app.import_job(&token, &job.id).await;
    let errors = app.import_errors(&token, &job.id).await;
    assert_eq!(
        (done.applied, done.failed, done.skipped),
        (1, 3, 1),
        "{done:?} {errors:#?}"
    );
    assert_eq!(
        errors_of(&app.import_errors(&token, &job.id).await),
        vec![
            (3, "", "USER_MISMATCH"),
            (4, "", "INVALID_ARGUMENT"),
            (6, "user_id", "NOT_FOUND")
        ]
    );
    let get = |id: &str| {
        let id = id.to_owned();
        let app = &app;
        let token = token.clone();
        async move {
            app.users()
                .get_user(req(&token, pb::GetUserRequest { id }))
                .await
                .unwrap()
                .into_inner()
                .user
                .unwrap()
        }
    };
    let anna_now = get(&anna.id).await;
    assert_eq!((anna_now.surname.as_str(), anna_now.phone.as_str()), ("Ærøsen", ""));
    assert_eq!(
        get(&bent.id).await.surname,
        bent.surname,
        "a refused row changes nothing"
    );

    // Delete under ALLOW_DELETE. A row whose e-mail names someone else (or
    // no one) beside the user id and CPR number deletes nobody: on an edit
    // row it is the new address, but a deletion is for good, and the row
    // is not what its writer meant.
    let delete = vec![
        row(&[(0, &erik.id), (1, &cprs[4]), (3, &dorte.email)]),
        row(&[(0, &dorte.id), (1, &cprs[3]), (3, "ingen@firma.dk")]),
    ];
    let job = deleted_from(&app, &token, &fixture.org.id, &delete).await;
    let done = app.import_job(&token, &job.id).await;
    assert_eq!((done.applied, done.failed), (0, 2), "{done:?}");
    assert_eq!(
        errors_of(&app.import_errors(&token, &job.id).await),
        vec![(2, "", "USER_MISMATCH"), (3, "email", "NOT_FOUND")]
    );
    for kept in [erik, dorte] {
        assert_eq!(get(&kept.id).await.state, pb::UserState::PendingActivation as i32);
    }
    // By CPR number and e-mail.
    let delete = vec![row(&[(1, &cprs[1]), (3, &bent.email)])];
    let job = deleted_from(&app, &token, &fixture.org.id, &delete).await;
    assert_eq!(app.import_job(&token, &job.id).await.applied, 1);
    assert_eq!(get(&bent.id).await.state, pb::UserState::Deleted as i32);

    // Under DEACTIVATE_ONLY the same file deactivates, and says so.
    app.orgs()
        .update_organisation_settings(req(
            &token,
            pb::UpdateOrganisationSettingsRequest {
                settings: Some(pb::OrganisationSettings {
                    organisation_id: fixture.org.id.clone(),
                    deletion_policy: pb::DeletionPolicy::DeactivateOnly as i32,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["deletion_policy".into()],
                }),
            },
        ))
        .await
        .unwrap();
    let delete = vec![row(&[(0, &carl.id), (3, &carl.email)])];
    let job = deleted_from(&app, &token, &fixture.org.id, &delete).await;
    let done = app.import_job(&token, &job.id).await;
    assert_eq!((done.applied, done.failed), (1, 0));
    let notices = app.import_errors(&token, &job.id).await;
    assert_eq!(errors_of(&notices), vec![(2, "", "DEACTIVATED_NOT_DELETED")]);
    assert!(notices[0].applied);
    assert_eq!(get(&carl.id).await.state, pb::UserState::Deactivated as i32);
    // A token its person was just seen with (so cached) acts no more once
    // an import row has deactivated them, as after DeactivateUser.
    let (frida, frida_token) = app.member(&fixture, "Frida", &[]).await;
    app.who_am_i(&frida_token).await.expect("Frida signed in");
    let delete = vec![row(&[(0, &frida.id), (3, &frida.email)])];
    let job = deleted_from(&app, &token, &fixture.org.id, &delete).await;
    assert_eq!(app.import_job(&token, &job.id).await.applied, 1);
    assert_code(app.who_am_i(&frida_token).await, Code::Unauthenticated);
    app.finish().await;
}

/// A row may end the requester themselves (here a user administrator's
/// delete file names them first): the rows after it in the same batch run
/// on what is left of their rights, which is none, and change nothing.
async fn rows_after_one_that_ends_the_requester_run_on_what_is_left(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let admin = fixture.admin_token.clone();
    let (ulla, ulla_token) = app.member(&fixture, "Ulla", &[pb::Role::UserAdmin]).await;
    let (lars, _) = app.member(&fixture, "Lars", &[]).await;
    let (ida, _) = app.member(&fixture, "Ida", &[]).await;
    let rows: Vec<String> = [&ulla, &lars, &ida]
        .iter()
        .map(|u| row(&[(0, &u.id), (3, &u.email)]))
        .collect();
    let job = app
        .upload_import(
            &ulla_token,
            spec(&fixture.org.id, pb::ImportKind::Delete),
            file(HEADER_DA, &rows).as_bytes(),
            1 << 20,
        )
        .await
        .expect("upload");
    app.run_imports().await;
    let done = app.import_job(&admin, &job.id).await;
    assert_eq!((done.applied, done.failed, done.skipped), (1, 2, 0), "{done:?}");
    let errors = app.import_errors(&admin, &job.id).await;
    assert_eq!(
        errors_of(&errors),
        vec![
            (3, "", "IMPORT_REQUESTER_CANNOT_ACT"),
            (4, "", "IMPORT_REQUESTER_CANNOT_ACT"),
        ]
    );
    let live: Vec<String> = users_of(&app, &admin, &fixture.org.id)
        .await
        .into_iter()
        .filter(|u| u.state != pb::UserState::Deleted as i32)
        .map(|u| u.id)
        .collect();
    assert!(!live.contains(&ulla.id), "the requester's own row applied");
    assert!(
        live.contains(&lars.id) && live.contains(&ida.id),
        "rows after it changed nothing"
    );
    app.finish().await;
}

async fn legacy_files_bring_deactivated_users_and_administrators(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    // A user administrator may import users, but not from a legacy system.
    let (user_admin, user_admin_token) = app.member(&fixture, "Brugeradmin", &[pb::Role::UserAdmin]).await;
    let used_before = app.licences_used(&token, &fixture.org.id).await;
    let activation_mails = app
        .count("SELECT COUNT(*) FROM outbox_mails WHERE kind = 'activation'")
        .await;
    let rows = vec![
        row(&[
            (1, &nth_cpr(1)),
            (3, "gammel.en@firma.dk"),
            (4, "Gammel"),
            (5, "Bruger"),
            (14, "RID-1001"),
        ]),
        row(&[
            (2, "1970-02-03"),
            (3, "gammel.admin@firma.dk"),
            (4, "Gammel"),
            (5, "Admin"),
            (10, "USER_ADMIN"),
            (14, "RID-1002"),
        ]),
        // A legacy row must keep its RID number, of at most 64 characters.
        row(&[(1, &nth_cpr(3)), (3, "uden.rid@firma.dk"), (4, "Uden"), (5, "Rid")]),
        row(&[
            (1, &nth_cpr(4)),
            (3, "lang.rid@firma.dk"),
            (4, "Lang"),
            (5, "Rid"),
            (14, &"R".repeat(65)),
        ]),
    ];
    let refused = app
        .upload_import(
            &user_admin_token,
            spec(&fixture.org.id, pb::ImportKind::LegacyCreate),
            file(HEADER_DA, &rows).as_bytes(),
            1 << 20,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let job = imported(
        &app,
        &token,
        spec(&fixture.org.id, pb::ImportKind::LegacyCreate),
        file(HEADER_DA, &rows).as_bytes(),
        1 << 20,
    )
    .await;
    let done = app.import_job(&token, &job.id).await;
    assert_eq!((done.applied, done.failed), (2, 2));
    assert_eq!(
        errors_of(&app.import_errors(&token, &job.id).await),
        vec![
            (4, "legacy_id", "INVALID_ARGUMENT"),
            (5, "legacy_id", "INVALID_ARGUMENT")
        ]
    );
    let users = users_of(&app, &token, &fixture.org.id).await;
    let admin = users.iter().find(|u| u.email == "gammel.admin@firma.dk").unwrap();
    assert_eq!(admin.state, pb::UserState::Deactivated as i32);
    assert_eq!(admin.legacy_id, "RID-1002");
    assert!(admin.roles.contains(&(pb::Role::UserAdmin as i32)));
    let plain = users.iter().find(|u| u.email == "gammel.en@firma.dk").unwrap();
    assert_eq!(
        (plain.state, plain.legacy_id.as_str()),
        (pb::UserState::Deactivated as i32, "RID-1001")
    );
    // Deactivated for good: no licence taken, no activation started.
    let used_after = app.licences_used(&token, &fixture.org.id).await;
    assert_eq!(used_after, used_before);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox_mails WHERE kind = 'activation'")
            .await,
        activation_mails
    );

    // Rows run with the requester's rights as they are when the worker
    // gets there: a requester deactivated meanwhile applies nothing.
    let queued = app
        .upload_import(
            &user_admin_token,
            spec(&fixture.org.id, pb::ImportKind::Create),
            file(HEADER_DA, &create_rows(3, "efter")).as_bytes(),
            1 << 20,
        )
        .await
        .unwrap();
    app.users()
        .deactivate_user(req(
            &token,
            pb::DeactivateUserRequest {
                id: user_admin.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let users_before = users_of(&app, &token, &fixture.org.id).await.len();
    app.run_imports().await;
    let failed = app.import_job(&token, &queued.id).await;
    assert_eq!(
        (failed.state, failed.failure_reason.as_str(), failed.applied),
        (pb::ImportState::Failed as i32, "IMPORT_REQUESTER_CANNOT_ACT", 0)
    );
    assert_eq!(users_of(&app, &token, &fixture.org.id).await.len(), users_before);
    app.finish().await;
}

async fn cancel_limits_and_broken_files(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        DomainSettings {
            imports: ImportSettings {
                max_file_bytes: 64 * 1024,
                max_rows: 50,
                max_open_per_organisation: 2,
                batch_size: 10,
                ..ImportSettings::default()
            },
            ..DomainSettings::default()
        },
    )
    .await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let org = fixture.org.id.clone();
    let small = file(HEADER_DA, &create_rows(20, "lille"));

    // A queued job is cancelled at once and applies nothing.
    let queued = app
        .upload_import(&token, spec(&org, pb::ImportKind::Create), small.as_bytes(), 1 << 20)
        .await
        .unwrap();
    let cancelled = app
        .imports()
        .cancel_import(req(&token, pb::CancelImportRequest { id: queued.id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(cancelled.state, pb::ImportState::Cancelled as i32);
    // R-BULK-6: its requester is told it ended, as of a running one.
    let told = app.mail_texts("import_finished", &fixture.admin.email).await;
    assert_eq!(
        told.iter().filter(|text| text.contains(&queued.id)).count(),
        1,
        "the requester of a cancelled queued import was not told: {told:?}"
    );
    let again = app
        .imports()
        .cancel_import(req(&token, pb::CancelImportRequest { id: queued.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(
        (again.code(), reason(&again).as_str()),
        (Code::FailedPrecondition, "IMPORT_FINISHED")
    );

    // A running job stops between batches; its first batch stays.
    let running = app
        .upload_import(&token, spec(&org, pb::ImportKind::Create), small.as_bytes(), 1 << 20)
        .await
        .unwrap();
    let id = app.domain.claim_import("w1").await.unwrap().unwrap().id;
    assert_eq!(id.to_string(), running.id);
    app.imports()
        .cancel_import(req(&token, pb::CancelImportRequest { id: running.id.clone() }))
        .await
        .unwrap();
    app.domain.run_import(id, "w1", &|| false).await.unwrap();
    let stopped = app.import_job(&token, &running.id).await;
    assert_eq!(stopped.state, pb::ImportState::Cancelled as i32);
    assert!(stopped.cancel_requested);
    assert_eq!(stopped.applied, 0, "cancelled before its first batch");

    // Two open jobs at most.
    for _ in 0..2 {
        app.upload_import(&token, spec(&org, pb::ImportKind::Create), small.as_bytes(), 1 << 20)
            .await
            .unwrap();
    }
    let full = app
        .upload_import(&token, spec(&org, pb::ImportKind::Create), small.as_bytes(), 1 << 20)
        .await
        .unwrap_err();
    assert_eq!(
        (full.code(), reason(&full).as_str()),
        (Code::FailedPrecondition, "IMPORTS_QUEUE_FULL")
    );
    app.run_imports().await;

    // Too large: refused while uploading, nothing kept.
    let big = file(HEADER_DA, &create_rows(1000, "stor"));
    let before = app.count("SELECT COUNT(*) FROM import_jobs").await;
    let too_large = app
        .upload_import(&token, spec(&org, pb::ImportKind::Create), big.as_bytes(), 16 * 1024)
        .await
        .unwrap_err();
    assert_eq!(
        (too_large.code(), reason(&too_large).as_str()),
        (Code::FailedPrecondition, "IMPORT_TOO_LARGE")
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM import_jobs").await, before);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM import_chunks WHERE job_id NOT IN (SELECT id FROM import_jobs)")
            .await,
        0
    );

    // A file in two encodings at once ("Søren" in UTF-8, "Ærø" in
    // Windows-1252, as when rows are pasted in from another file): read
    // as Windows-1252, Søren was stored as "SÃ¸ren" with no error. Refused
    // whole while uploading, nothing kept.
    let mut mixed = file(HEADER_DA, &create_rows(2, "blandet")).into_bytes();
    mixed.extend_from_slice(b";;;blandet@firma.dk;\xC6r\xF8;Hansen;;;;da;;;;;\r\n");
    let refused = app
        .upload_import(&token, spec(&org, pb::ImportKind::Create), &mixed, 1 << 20)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("CSV UTF-8"), "{}", refused.message());
    assert_eq!(app.count("SELECT COUNT(*) FROM import_jobs").await, before);

    // Too many rows, or no header: the job fails before applying anything.
    let users_before = users_of(&app, &token, &org).await.len();
    let many = app
        .upload_import(
            &token,
            spec(&org, pb::ImportKind::Create),
            file(HEADER_DA, &create_rows(51, "mange")).as_bytes(),
            1 << 20,
        )
        .await
        .unwrap();
    let headless = app
        .upload_import(
            &token,
            spec(&org, pb::ImportKind::Create),
            file(&create_rows(1, "x")[0], &create_rows(3, "hoved")).as_bytes(),
            1 << 20,
        )
        .await
        .unwrap();
    app.run_imports().await;
    let many = app.import_job(&token, &many.id).await;
    assert_eq!(
        (many.state, many.failure_reason.as_str()),
        (pb::ImportState::Failed as i32, "IMPORT_TOO_MANY_ROWS")
    );
    let headless = app.import_job(&token, &headless.id).await;
    assert_eq!(
        (headless.state, headless.failure_reason.as_str()),
        (pb::ImportState::Failed as i32, "IMPORT_HEADER_INVALID")
    );
    assert!(headless.failure_message.contains("column 1"), "{headless:?}");
    assert_eq!(users_of(&app, &token, &org).await.len(), users_before);
    // A row no spreadsheet writes: a thousand cells (or, in the reader's
    // own test, a row past 64 KiB or a quote left open to the end of a
    // large file). Read whole, such a row ran the worker out of memory, and
    // the next worker that claimed the job after it.
    let mut wide = file(HEADER_DA, &create_rows(2, "bred")).into_bytes();
    wide.extend(std::iter::repeat_n(b';', 1000));
    wide.extend_from_slice(b"\r\n");
    let wide = app
        .upload_import(&token, spec(&org, pb::ImportKind::Create), &wide, 1 << 20)
        .await
        .unwrap();
    app.run_imports().await;
    let wide = app.import_job(&token, &wide.id).await;
    assert_eq!(
        (wide.state, wide.failure_reason.as_str(), wide.applied),
        (pb::ImportState::Failed as i32, "IMPORT_TOO_LARGE", 0),
        "{wide:?}"
    );
    assert!(wide.failure_message.contains("after row 3"), "{wide:?}");

    // A chunk over 1 MiB, a missing spec, an unspecified kind.
    let huge = vec![b'x'; (1 << 20) + 1];
    let status = app
        .upload_import(&token, spec(&org, pb::ImportKind::Create), &huge, huge.len())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&status)[0], "chunk");
    let status = app
        .upload_import(
            &token,
            spec(&org, pb::ImportKind::Unspecified),
            small.as_bytes(),
            1 << 20,
        )
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status)[0], "spec.kind");

    // The list shows every job, newest first, a page at a time.
    let listed = app
        .imports()
        .list_imports(req(
            &token,
            pb::ListImportsRequest {
                organisation_id: org.clone(),
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.jobs.len(), 2);
    assert!(!listed.next_page_token.is_empty());
    assert_eq!(listed.jobs[0].id, wide.id);

    // A week on, the files of finished jobs are deleted; their reports stay.
    let finished_jobs = app
        .count("SELECT COUNT(*) FROM import_jobs WHERE finished_at IS NOT NULL")
        .await;
    let week_on = chrono::Utc::now().timestamp_millis() + 8 * 24 * 60 * 60 * 1000;
    let purged = app.domain.purge_import_files(week_on).await.unwrap();
    assert_eq!(purged as i64, finished_jobs);
    assert_eq!(app.count("SELECT COUNT(*) FROM import_chunks").await, 0);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM import_jobs WHERE file_deleted_at IS NULL")
            .await,
        0
    );
    let still = app.import_job(&token, &headless.id).await;
    assert_eq!(still.failure_reason, "IMPORT_HEADER_INVALID");
    app.finish().await;
}

async fn bulk_activation_mails_cpr_users_and_lists_the_others(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let rows = create_rows(6, "akt");
    let job = imported(
        &app,
        &token,
        spec(&fixture.org.id, pb::ImportKind::Create),
        file(HEADER_DA, &rows).as_bytes(),
        1 << 20,
    )
    .await;
    let sent = app
        .imports()
        .batch_send_activation(req(
            &token,
            pb::BatchSendActivationRequest {
                organisation_id: fixture.org.id.clone(),
                import_id: job.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((sent.queued_user_ids.len(), sent.needs_code_user_ids.len()), (3, 3));
    // Each CPR user can activate with their own mailed link.
    let token_of_first = app.mailed_token("activation", "bruger0.akt@firma.dk").await;
    assert!(!token_of_first.is_empty());
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox_mails WHERE kind = 'activation'")
            .await,
        3 + 1
    );
    // Asked again by user id: an active user is skipped.
    let again = app
        .imports()
        .batch_send_activation(req(
            &token,
            pb::BatchSendActivationRequest {
                organisation_id: fixture.org.id.clone(),
                user_ids: vec![fixture.admin.id.clone(), sent.queued_user_ids[0].clone()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.skipped_user_ids, vec![fixture.admin.id.clone()]);
    assert_eq!(again.queued_user_ids, vec![sent.queued_user_ids[0].clone()]);
    // Its link went out a moment ago: nothing is sent again, and that link
    // still works (a batch retried after its deadline mailed everyone of
    // its first pieces twice, each new link ending the one just received).
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox_mails WHERE kind = 'activation'")
            .await,
        3 + 1
    );
    assert_eq!(
        app.mailed_token("activation", "bruger0.akt@firma.dk").await,
        token_of_first
    );
    let both = app
        .imports()
        .batch_send_activation(req(
            &token,
            pb::BatchSendActivationRequest {
                organisation_id: fixture.org.id.clone(),
                user_ids: vec![fixture.admin.id.clone()],
                import_id: job.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&both)[0], "user_ids");
    // The template of each kind and language reads back as a header row.
    for language in [pb::Language::Da, pb::Language::Sv, pb::Language::En] {
        let template = app
            .imports()
            .get_import_template(req(
                &token,
                pb::GetImportTemplateRequest {
                    kind: pb::ImportKind::Create as i32,
                    language: language as i32,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let text = String::from_utf8(template.content[3..].to_vec()).unwrap();
        let expected = match language {
            pb::Language::Da => HEADER_DA,
            pb::Language::Sv => HEADER_SV,
            _ => HEADER_EN,
        };
        assert_eq!(text.lines().next().unwrap(), expected);
    }
    app.finish().await;
}

/// A run that ends in an error (here the stored job cannot be read) is
/// retried after its lease, but not for ever: after five such runs in a row
/// the job ends FAILED (IMPORT_RUN_FAILED), and its place among the
/// organisation's open jobs is free again. It used to be claimed again every
/// lease, for good.
async fn an_import_that_keeps_failing_ends_failed(backend: Backend) {
    let app = app_with_imports(
        backend,
        ImportSettings {
            lease_ms: 1,
            ..ImportSettings::default()
        },
    )
    .await;
    let fixture = app.org_with_admin_limits(Some(100), None).await;
    let job = app
        .upload_import(
            &fixture.admin_token,
            spec(&fixture.org.id, pb::ImportKind::Create),
            file(HEADER_DA, &create_rows(3, "brudt")).as_bytes(),
            1 << 20,
        )
        .await
        .unwrap();
    let id: uuid::Uuid = job.id.parse().unwrap();
    let db = app.domain.db();
    sea_orm::ConnectionTrait::execute_unprepared(db, "UPDATE import_jobs SET kind = 'NO_SUCH_KIND'")
        .await
        .unwrap();
    let mut runs = 0;
    while let Some(claimed) = app.domain.claim_import("stubborn-worker").await.unwrap() {
        assert_eq!(claimed.id, id);
        runs += 1;
        assert!(runs <= 5, "claimed a sixth time");
        let ran = app.domain.run_import(claimed.id, "stubborn-worker", &|| false).await;
        // The fifth ends the job: that run answers Ok.
        assert_eq!(ran.is_ok(), runs == 5, "run {runs}: {ran:?}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(runs, 5);
    let row = app
        .row_where(
            "SELECT state, failure_reason, failure_message FROM import_jobs WHERE id =",
            id,
        )
        .await;
    let (state, reason, message): (String, String, String) = (
        row.try_get_by_index(0).unwrap(),
        row.try_get_by_index(1).unwrap(),
        row.try_get_by_index(2).unwrap(),
    );
    assert_eq!((state.as_str(), reason.as_str()), ("FAILED", "IMPORT_RUN_FAILED"));
    assert!(message.contains("5 times in a row"), "{message}");
    // What went wrong inside stays in the worker's log: the requester is
    // told it was an internal error, not its detail.
    assert!(message.contains("worker's log"), "{message}");
    assert!(
        !message.contains("NO_SUCH_KIND"),
        "an internal detail reached the requester: {message}"
    );

    // One whose requester asked to cancel it ends CANCELLED at its first
    // failed run, whatever keeps its runs from the cancel check.
    let job = app
        .upload_import(
            &fixture.admin_token,
            spec(&fixture.org.id, pb::ImportKind::Create),
            file(HEADER_DA, &create_rows(3, "afbrudt")).as_bytes(),
            1 << 20,
        )
        .await
        .unwrap();
    let id: uuid::Uuid = job.id.parse().unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        db,
        "UPDATE import_jobs SET kind = 'NO_SUCH_KIND' WHERE state = 'QUEUED'",
    )
    .await
    .unwrap();
    let claimed = app.domain.claim_import("stubborn-worker").await.unwrap().unwrap();
    assert_eq!(claimed.id, id);
    sea_orm::ConnectionTrait::execute_unprepared(
        db,
        "UPDATE import_jobs SET cancel_requested = TRUE WHERE state = 'RUNNING'",
    )
    .await
    .unwrap();
    app.domain
        .run_import(claimed.id, "stubborn-worker", &|| false)
        .await
        .expect("the run that ends the job");
    let state: String = app
        .row_where("SELECT state FROM import_jobs WHERE id =", id)
        .await
        .try_get_by_index(0)
        .unwrap();
    assert_eq!(state, "CANCELLED");
    app.finish().await;
}

/// An upload still sending is alive, however long it takes: the purge of
/// abandoned uploads (nothing received for `upload_idle_ms`) leaves it
/// alone, and it finishes. One that stops sending is purged, and a piece
/// sent after that is refused (IMPORT_UPLOAD_ABANDONED) instead of being
/// stored for nobody. The purge used to go by the upload's start alone.
async fn a_long_upload_is_not_taken_for_abandoned(backend: Backend) {
    use orgadmin_domain::services::imports::BeganImport;
    let (app, fixture, caller) = app_whose_uploads_idle_fast(backend).await;
    let spec = || create_spec(&fixture, "langsom.csv");
    let text = file(HEADER_DA, &create_rows(20, "langsom"));
    let BeganImport::Upload(mut slow) = app.domain.begin_import(&caller, spec()).await.unwrap() else {
        panic!("a new upload")
    };
    // Twenty pieces 50 ms apart: a second in all, the idle limit 400 ms.
    let pieces: Vec<&[u8]> = text.as_bytes().chunks(text.len() / 20 + 1).collect();
    for piece in pieces {
        slow.push(piece).await.expect("a piece of a live upload");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        app.domain
            .purge_import_files(orgadmin_domain::model::now_millis())
            .await
            .unwrap();
    }
    let job = slow.finish().await.expect("the upload finishes");
    app.run_imports().await;
    let done = app.import_job(&fixture.admin_token, &job.id.to_string()).await;
    assert_eq!((done.state, done.applied), (pb::ImportState::Succeeded as i32, 20));

    // An upload that falls silent is purged; its next piece is refused.
    let BeganImport::Upload(mut silent) = app.domain.begin_import(&caller, spec()).await.unwrap() else {
        panic!("a new upload")
    };
    silent.push(&text.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        app.domain
            .purge_import_files(orgadmin_domain::model::now_millis())
            .await
            .unwrap(),
        1
    );
    let refused = silent.push(&text.as_bytes()[10..20]).await.unwrap_err();
    assert!(refused.to_string().contains("idle too long"), "{refused}");
    let orgadmin_domain::DomainError::FailedPrecondition { reason, .. } = &refused else {
        panic!("{refused:?}")
    };
    assert_eq!(reason.as_str(), "IMPORT_UPLOAD_ABANDONED");

    // Its end, sent after the purge, is refused the same way (it used to be
    // answered NOT_FOUND, as if the job had never been).
    let BeganImport::Upload(mut late) = app.domain.begin_import(&caller, spec()).await.unwrap() else {
        panic!("a new upload")
    };
    late.push(text.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    app.domain
        .purge_import_files(orgadmin_domain::model::now_millis())
        .await
        .unwrap();
    let Err(orgadmin_domain::DomainError::FailedPrecondition { reason, .. }) = late.finish().await else {
        panic!("the end of a purged upload is refused")
    };
    assert_eq!(reason.as_str(), "IMPORT_UPLOAD_ABANDONED");
    app.finish().await;
}

/// Links sent in bulk to a user whose deletion is in progress wait for it,
/// and the deleted user is skipped: no link that cannot work is mailed to
/// someone who left. (The deletion in progress is played by a session that
/// holds the organisation's lock, as DeleteUser does, and has written the
/// user's row.) PostgreSQL only, as SQLite has one writer at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_links_behind_a_deletion_skip_the_deleted_user() {
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let pending = app
        .users()
        .create_user(req(&fixture.admin_token, new_user(&fixture.org.id, "Ventende", &[])))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let links = format!(
        "SELECT COUNT(*) FROM outbox_mails WHERE kind = 'activation' AND recipient = '{}'",
        pending.email
    );
    let links_before = app.count(&links).await;
    let deletion = app
        .in_progress(&[
            format!(
                "SELECT id FROM organisations WHERE id = '{}' FOR UPDATE",
                fixture.org.id
            ),
            format!(
                "UPDATE users SET state = 'DELETED', version = version + 1 WHERE id = '{}'",
                pending.id
            ),
            format!(
                "UPDATE organisations SET licences_used = licences_used - 1 WHERE id = '{}'",
                fixture.org.id
            ),
        ])
        .await;
    let sending = {
        let (mut imports, token) = (app.imports(), fixture.admin_token.clone());
        let request = pb::BatchSendActivationRequest {
            organisation_id: fixture.org.id.clone(),
            user_ids: vec![pending.id.clone()],
            ..Default::default()
        };
        tokio::spawn(async move { imports.batch_send_activation(req(&token, request)).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !sending.is_finished(),
        "the links did not wait for the deletion in progress"
    );
    deletion.commit().await;
    let sent = sending.await.unwrap().unwrap().into_inner();
    assert_eq!(sent.skipped_user_ids, vec![pending.id.clone()]);
    assert_eq!(app.count(&links).await, links_before, "no link for the deleted user");
    app.finish().await;
}

/// An upload that speaks while the purge takes it for abandoned is kept.
/// The purge read it as idle, then deleted it whatever had happened since:
/// a piece's keep-alive committed in between lost the upload and the
/// pieces just stored, and the pieces after it (no keep-alive for a
/// quarter of the idle limit) were stored for no job, never purged. (The
/// keep-alive in progress is played by a session that has touched the job
/// and not yet committed.) SQLite has one writer at a time, so only
/// PostgreSQL can interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_speaks_while_the_purge_takes_it_is_kept() {
    use orgadmin_domain::services::imports::{BeganImport, ImportKind, ImportSpec};
    let (app, fixture, caller) = app_whose_uploads_idle_fast(Backend::Postgres).await;
    let text = file(HEADER_DA, &create_rows(3, "vaagen"));
    let spec = ImportSpec {
        organisation_id: fixture.org.id.parse().unwrap(),
        kind: ImportKind::Create,
        validate_only: false,
        file_name: "vaagen.csv".into(),
        request_id: None,
    };
    let BeganImport::Upload(mut upload) = app.domain.begin_import(&caller, spec).await.unwrap() else {
        panic!("a new upload")
    };
    upload.push(&text.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let speaking = app
        .in_progress(&[format!(
            "UPDATE import_jobs SET updated_at = {} WHERE id = '{}'",
            orgadmin_domain::model::now_millis(),
            upload.job_id()
        )])
        .await;
    let purging = {
        let domain = app.domain.clone();
        tokio::spawn(async move { domain.purge_import_files(orgadmin_domain::model::now_millis()).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !purging.is_finished(),
        "the purge did not wait for the upload's keep-alive"
    );
    speaking.commit().await;
    assert_eq!(purging.await.unwrap().unwrap(), 0, "nothing was purged");
    upload.push(&text.as_bytes()[10..]).await.expect("the upload goes on");
    let job = upload.finish().await.expect("and finishes");
    app.run_imports().await;
    let done = app.import_job(&fixture.admin_token, &job.id.to_string()).await;
    assert_eq!((done.state, done.applied), (pb::ImportState::Succeeded as i32, 3));
    app.finish().await;
}

/// A server whose uploads count as abandoned after 400 ms of silence, an
/// organisation, and its administrator as the caller.
async fn app_whose_uploads_idle_fast(backend: Backend) -> (TestApp, OrgFixture, orgadmin_domain::policy::Caller) {
    let app = app_with_imports(
        backend,
        ImportSettings {
            upload_idle_ms: 400,
            ..ImportSettings::default()
        },
    )
    .await;
    let fixture = app.org_with_admin_limits(Some(100), None).await;
    let caller = app.domain.authenticate(&fixture.admin_token).await.unwrap();
    (app, fixture, caller)
}

/// A create import of `file_name` into the fixture's organisation, as the
/// domain takes it (for tests that hold an upload open).
fn create_spec(fixture: &OrgFixture, file_name: &str) -> orgadmin_domain::services::imports::ImportSpec {
    orgadmin_domain::services::imports::ImportSpec {
        organisation_id: fixture.org.id.parse().unwrap(),
        kind: orgadmin_domain::services::imports::ImportKind::Create,
        validate_only: false,
        file_name: file_name.into(),
        request_id: None,
    }
}

/// A server whose imports run with `imports`.
async fn app_with_imports(backend: Backend, imports: ImportSettings) -> TestApp {
    TestApp::start_with(
        backend,
        DomainSettings {
            imports,
            ..DomainSettings::default()
        },
    )
    .await
}

/// Uploads in progress count toward the organisation's open jobs. Before,
/// only queued and running jobs did: any number of uploads could be stored
/// at once, each up to the file limit, and all but the last few were
/// refused only when they finished.
async fn uploads_in_progress_take_their_places(backend: Backend) {
    use orgadmin_domain::services::imports::BeganImport;
    let app = app_with_imports(
        backend,
        ImportSettings {
            max_open_per_organisation: 2,
            ..ImportSettings::default()
        },
    )
    .await;
    let fixture = app.org_with_admin_limits(Some(100), None).await;
    let caller = app.domain.authenticate(&fixture.admin_token).await.unwrap();
    let spec = || create_spec(&fixture, "samtidig.csv");
    let text = file(HEADER_DA, &create_rows(3, "samtidig"));
    let mut uploads = Vec::new();
    for _ in 0..2 {
        let BeganImport::Upload(mut upload) = app.domain.begin_import(&caller, spec()).await.unwrap() else {
            panic!("a new upload")
        };
        upload.push(text.as_bytes()).await.unwrap();
        uploads.push(upload);
    }
    let before = app.count("SELECT COUNT(*) FROM import_jobs").await;
    let Err(orgadmin_domain::DomainError::FailedPrecondition { reason, .. }) =
        app.domain.begin_import(&caller, spec()).await
    else {
        panic!("a third upload beside two is refused")
    };
    assert_eq!(reason.as_str(), "IMPORTS_QUEUE_FULL");
    assert_eq!(app.count("SELECT COUNT(*) FROM import_jobs").await, before);
    // An upload dropped unfinished (its call cancelled, its deadline
    // passed) gives its place back at once, not at the purge an hour on.
    drop(uploads.pop());
    let started = std::time::Instant::now();
    let replacement = loop {
        match app.domain.begin_import(&caller, spec()).await {
            Ok(BeganImport::Upload(upload)) => break upload,
            Ok(BeganImport::Existing(_)) => panic!("a new upload"),
            Err(refused) => assert!(
                started.elapsed() < std::time::Duration::from_secs(3),
                "the dropped upload kept its place: {refused}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    uploads.push(replacement);
    uploads[1].push(text.as_bytes()).await.unwrap();
    // Each of the two is queued: an upload's own place is its own.
    for upload in uploads {
        upload.finish().await.expect("queued in its own place");
    }
    app.run_imports().await;
    app.finish().await;
}

/// A report longer than one piece (1,000 problems) comes as several, read
/// one at a time, and reads as one file: one byte-order mark, one header,
/// every problem once and in order. It used to be read and built whole: a
/// million bad rows took hundreds of megabytes of the service's memory.
async fn a_long_report_comes_in_pieces(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let rows: Vec<String> = create_rows(1001, "rapport")
        .into_iter()
        .map(|row| row.replace("@firma.dk", ""))
        .collect();
    let job = imported(
        &app,
        &token,
        spec(&fixture.org.id, pb::ImportKind::Create),
        file(HEADER_DA, &rows).as_bytes(),
        1 << 20,
    )
    .await;
    assert_eq!(job.failed, 1001);
    let mut stream = app
        .imports()
        .get_import_report(req(&token, pb::GetImportReportRequest { id: job.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    let (mut report, mut pieces) = (Vec::new(), 0);
    while let Some(piece) = stream.message().await.unwrap() {
        report.extend(piece.chunk);
        pieces += 1;
    }
    assert_eq!(pieces, 2);
    assert!(report.starts_with(b"\xEF\xBB\xBF"));
    let text = String::from_utf8(report[3..].to_vec()).unwrap();
    assert!(!text.contains('\u{feff}'), "a second byte-order mark");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Række;Kolonne;Årsag;Besked;Udført");
    let numbers: Vec<i64> = lines[1..]
        .iter()
        .map(|line| line.split(';').next().unwrap().parse().expect("a row number"))
        .collect();
    assert_eq!(
        numbers,
        (2..=1002).collect::<Vec<i64>>(),
        "every problem once, in order"
    );
    app.finish().await;
}

/// Error messages name rows as Excel shows the file: a blank line is a row
/// there too. Before, every row after a blank line was named one too low,
/// and a user fixing "row 4" fixed the wrong person.
async fn rows_are_named_as_a_spreadsheet_shows_them(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let good = row(&[(1, &nth_cpr(61)), (3, "blank.en@firma.dk"), (4, "Bo"), (5, "Blank")]);
    let bad = row(&[(1, &nth_cpr(62)), (3, "ikke-en-adresse"), (4, "Forkert"), (5, "Mail")]);
    let twin = row(&[(1, &nth_cpr(63)), (3, "tvilling@firma.dk"), (4, "Tvilling"), (5, "En")]);
    // 1 header, 2 good, 3 blank, 4 bad, 5 and 6 blank, 7 and 8 the same address.
    let text = format!("{HEADER_DA}\r\n{good}\r\n\r\n{bad}\r\n\r\n\r\n{twin}\r\n{twin}\r\n");
    let job = imported(
        &app,
        &token,
        spec(&fixture.org.id, pb::ImportKind::Create),
        text.as_bytes(),
        7,
    )
    .await;
    assert_eq!(job.state, pb::ImportState::Succeeded as i32);
    let errors = app.import_errors(&token, &job.id).await;
    assert_eq!(
        errors_of(&errors),
        vec![
            (4, "email", "INVALID_ARGUMENT"),
            (7, "cpr", "DUPLICATE_IN_FILE"),
            (7, "email", "DUPLICATE_IN_FILE"),
            (8, "cpr", "DUPLICATE_IN_FILE"),
            (8, "email", "DUPLICATE_IN_FILE"),
        ],
        "{errors:#?}"
    );
    let duplicate = errors.iter().find(|e| e.row == 7 && e.column == "email").unwrap();
    assert!(duplicate.message.contains("row 8"), "{:?}", duplicate.message);
    app.finish().await;
}

/// A watch ends after the most time one watch lasts: it polls the job until
/// the job ends, and one queued with no worker to take it never does (each
/// such stream ran for ever, outside the in-flight bound).
async fn a_watch_of_a_job_that_never_moves_ends(backend: Backend) {
    use std::time::Duration;

    use tokio_stream::StreamExt;
    let app = app_with_imports(
        backend,
        ImportSettings {
            watch_lifetime_ms: 1500,
            ..ImportSettings::default()
        },
    )
    .await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let job = app
        .upload_import(
            &token,
            spec(&fixture.org.id, pb::ImportKind::Create),
            file(HEADER_DA, &create_rows(1, "venter")).as_bytes(),
            1 << 20,
        )
        .await
        .expect("upload");
    let mut watch = app
        .imports()
        .watch_import(req(&token, pb::WatchImportRequest { id: job.id.clone() }))
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("the job as it is").expect("a job");
    assert_eq!(first.job.unwrap().state, pb::ImportState::Queued as i32);
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch ended by itself");
    assert_code(ended.expect("an answer").map(drop), Code::DeadlineExceeded);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    app.finish().await;
}

/// A file refused row by row (a wrong export) lists at most
/// `max_report_errors` errors, the first ones, while the job counts every
/// failed row. It had written an error per row and column, kept for ever.
async fn a_report_lists_at_most_its_share_of_errors(backend: Backend) {
    let app = app_with_imports(
        backend,
        ImportSettings {
            create_batch_size: 2,
            max_report_errors: 3,
            ..ImportSettings::default()
        },
    )
    .await;
    let fixture = app.org_with_admin_limits(Some(100), None).await;
    let token = fixture.admin_token.clone();
    let mut rows = create_rows(7, "loft");
    // Rows 2 to 6 (file rows 3 to 7) with an address that is none.
    for bad in rows.iter_mut().take(6).skip(1) {
        *bad = bad.replace("@firma.dk", "-uden-domæne");
    }
    let job = imported(
        &app,
        &token,
        spec(&fixture.org.id, pb::ImportKind::Create),
        file(HEADER_DA, &rows).as_bytes(),
        100,
    )
    .await;
    let done = app.import_job(&token, &job.id).await;
    assert_eq!((done.applied, done.failed), (2, 5), "{done:?}");
    let errors = app.import_errors(&token, &job.id).await;
    assert_eq!(
        errors_of(&errors),
        vec![
            (3, "email", "INVALID_ARGUMENT"),
            (4, "email", "INVALID_ARGUMENT"),
            (5, "email", "INVALID_ARGUMENT"),
        ],
        "the first three"
    );
    app.finish().await;
}
