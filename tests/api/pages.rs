//! The self-service pages the mails link to (R-AUTH-2, R-AUTH-3, issue 12),
//! in a real headless browser (Chromium through ChromeDriver), in each
//! language: activation from the link in a mail read off the real SMTP
//! server, through to a successful `Login`; the login page with its
//! mailed-code step; sign-out; a forgotten password, reset with its link.
//! With ORGADMIN_UPDATE_SCREENSHOTS=1 the test also writes the screenshots
//! under docs/screenshots/; `every_page_has_a_screenshot_in_every_language`
//! checks they are all there.

use std::path::PathBuf;

use orgadmin_proto::v1 as pb;
use orgadmin_tests::browser::Browser;
use orgadmin_tests::*;
use tonic::Code;

both_backends!(
    a_person_activates_logs_in_and_resets_in_a_browser,
    a_forged_or_stale_form_changes_nothing,
    a_client_that_sends_or_reads_slowly_is_cut_off,
    a_body_too_large_or_broken_is_answered_for_what_it_is,
    a_login_id_in_two_organisations_signs_in_on_the_pages_by_cvr,
);

const LANGUAGES: [(pb::Language, &str); 3] = [
    (pb::Language::Da, "da"),
    (pb::Language::Sv, "sv"),
    (pb::Language::En, "en"),
];

/// Every page (or state of one) with a screenshot.
const PAGES: [&str; 9] = [
    "activate",
    "activate-refused",
    "activated",
    "login",
    "login-code",
    "account",
    "forgot-password",
    "reset-password",
    "link-used",
];

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
}

/// Takes a screenshot (a real PNG of the rendered page); keeps it under
/// docs/ when asked to.
fn shoot(browser: &Browser, page: &str, lang: &str) {
    assert!(PAGES.contains(&page), "{page} is not listed in PAGES");
    let png = browser.screenshot();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 2000,
        "{page}-{lang}: not a screenshot"
    );
    if std::env::var_os("ORGADMIN_UPDATE_SCREENSHOTS").is_some() {
        std::fs::create_dir_all(screenshots()).unwrap();
        std::fs::write(screenshots().join(format!("{page}-{lang}.png")), png).unwrap();
    }
}

#[test]
fn every_page_has_a_screenshot_in_every_language() {
    let mut missing = Vec::new();
    for page in PAGES {
        for (_, lang) in LANGUAGES {
            let path = screenshots().join(format!("{page}-{lang}.png"));
            match std::fs::read(&path) {
                Ok(png) if png.starts_with(b"\x89PNG") => {}
                _ => missing.push(format!("{page}-{lang}.png")),
            }
        }
    }
    assert!(
        missing.is_empty(),
        "screenshots missing under docs/screenshots (ORGADMIN_UPDATE_SCREENSHOTS=1 scripts/test -- pages::): {missing:?}"
    );
}

async fn a_person_activates_logs_in_and_resets_in_a_browser(backend: Backend) {
    let app = TestApp::start(backend).await;
    let sink = SmtpSink::start(0);
    let worker = TestWorker::start(&app, worker_config(&app, &sink.url()));
    let base = format!("http://localhost:{}", app.http_addr.port());
    let fixture = app.org_with_admin().await;
    // Every login needs the mailed code: the code step is a page too, and
    // passwords may be 8 characters long.
    app.require_second_factor(&fixture).await;
    let browser = Browser::start();

    for (language, lang) in LANGUAGES {
        let request = pb::CreateUserRequest {
            language: language as i32,
            ..new_user(&fixture.org.id, "Sanne", &[])
        };
        let (email, cpr) = (request.email.clone(), request.cpr.clone());
        app.users()
            .create_user(req(&fixture.admin_token, request))
            .await
            .expect("create user");

        // The activation mail, off the SMTP server; its link opens the page,
        // and the token leaves the address bar at once.
        let mail = sink.wait_for_mail_with(&email, "/activate?token=").await;
        let token = link_token(&mail);
        browser.goto(&format!("{base}/activate?token={token}"));
        assert_eq!(browser.url(), format!("{base}/activate"), "the token stays in the URL");
        let page = browser.source();
        assert!(page.contains(&format!("<html lang=\"{lang}\"")), "{lang}: {page}");
        assert!(page.contains("Sanne") && page.contains("id=\"cpr\""));
        shoot(&browser, "activate", lang);

        // A too short password is refused on the page, in the person's language.
        browser.fill("#cpr", &cpr);
        browser.fill("#password", "kort");
        browser.fill("#password_again", "kort");
        browser.click("button");
        assert!(browser.source().contains("class=\"error\""));
        assert!(browser.text(".error").contains('8'), "the rule names the minimum");
        shoot(&browser, "activate-refused", lang);

        let password = format!("Sommerhus {lang} 2026");
        browser.fill("#cpr", &cpr);
        browser.fill("#password", &password);
        browser.fill("#password_again", &password);
        browser.click("button");
        let done = browser.source();
        assert!(
            !done.contains("<form") && done.contains(&format!("/login?lang={lang}")),
            "{done}"
        );
        shoot(&browser, "activated", lang);

        // The password works over gRPC: the right password, then the mailed code.
        let challenge = app.login(&email, &password).await.expect("login after activation");
        assert_eq!(challenge.second_factor(), pb::SecondFactorMethod::MailCode);
        let code = sink.wait_for_login_code(&email, 1).await;
        app.auth()
            .verify_login_code(req(
                "",
                pb::VerifyLoginCodeRequest {
                    challenge_token: challenge.challenge_token,
                    code,
                },
            ))
            .await
            .expect("the mailed code completes the login");

        // The login page, its code step and the account page.
        browser.goto(&format!("{base}/login?lang={lang}"));
        shoot(&browser, "login", lang);
        browser.fill("#login_id", &email);
        browser.fill("#password", &password);
        browser.click("button");
        assert!(
            browser.url().starts_with(&format!("{base}/login/code")),
            "{}",
            browser.url()
        );
        shoot(&browser, "login-code", lang);
        let code = sink.wait_for_login_code(&email, 2).await;
        browser.fill("#code", &code);
        browser.click("button");
        assert!(
            browser.url().starts_with(&format!("{base}/account")),
            "{}",
            browser.url()
        );
        assert!(browser.text("main").contains("Sanne"));
        shoot(&browser, "account", lang);
        browser.click("button");
        assert!(
            browser.url().starts_with(&format!("{base}/login")),
            "signed out: {} {}",
            browser.url(),
            browser.source()
        );
        browser.goto(&format!("{base}/account?lang={lang}"));
        assert!(browser.url().starts_with(&format!("{base}/login")), "the session ended");

        // A forgotten password: the page mails a link; the link sets a new one.
        browser.goto(&format!("{base}/forgot-password?lang={lang}"));
        shoot(&browser, "forgot-password", lang);
        browser.fill("#login_id", &email);
        browser.click("button");
        assert!(!browser.source().contains("<form"));
        let mail = sink.wait_for_mail_with(&email, "/reset-password?token=").await;
        let reset = link_token(&mail);
        browser.goto(&format!("{base}/reset-password?token={reset}"));
        assert_eq!(browser.url(), format!("{base}/reset-password"));
        shoot(&browser, "reset-password", lang);
        let new_password = format!("Vinterbad {lang} 2027");
        browser.fill("#password", &new_password);
        browser.fill("#password_again", &new_password);
        browser.click("button");
        assert!(browser.source().contains(&format!("/login?lang={lang}")));
        // The link works once.
        browser.goto(&format!("{base}/reset-password?token={reset}"));
        assert!(!browser.source().contains("<form"), "a used link shows its form");
        shoot(&browser, "link-used", lang);
        assert_code(app.login(&email, &password).await, Code::Unauthenticated);
        let after = app.login(&email, &new_password).await.expect("the new password");
        assert_eq!(after.second_factor(), pb::SecondFactorMethod::MailCode);
    }
    drop(browser);
    worker.stop().await;
    app.finish().await;
}

/// A form's fields as `application/x-www-form-urlencoded`.
fn form_body(fields: &[(&str, &str)]) -> String {
    let encode = |value: &str| {
        value
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                b' ' => "+".to_owned(),
                other => format!("%{other:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(name, value)| format!("{name}={}", encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The pages have no organisation ids, so a login id held by people in two
/// organisations names neither there: the login and forgotten-password
/// pages take the organisation's CVR number, optional, to say which.
async fn a_login_id_in_two_organisations_signs_in_on_the_pages_by_cvr(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (first, second) = (app.org_with_admin().await, app.org_with_admin().await);
    let (anna, email) = app.member_with_password(&first, "Anna", &[]).await;
    let mut twin = new_user(&second.org.id, "Anna", &[]);
    twin.email = email.clone();
    let (anna_too, _) = app.member_with_password_from(&second.admin_token, twin).await;

    // A page's CSRF cookie and the form's token.
    let (head, page) = app.http("GET", "/login?lang=en", &[], b"").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.contains("id=\"organisation_cvr\"") && page.contains("several organisations"),
        "{page}"
    );
    let csrf_cookie = set_cookie(&head, "__Host-oa_csrf");
    let csrf = csrf_cookie.split_once('=').unwrap().1.to_owned();
    let post = |path: &'static str, fields: Vec<(&'static str, String)>| {
        let (app, csrf, csrf_cookie) = (&app, csrf.clone(), csrf_cookie.clone());
        async move {
            let mut all = vec![("csrf", csrf.as_str())];
            all.extend(fields.iter().map(|(name, value)| (*name, value.as_str())));
            let (head, page) = app
                .http(
                    "POST",
                    &format!("{path}?lang=en"),
                    &[
                        ("cookie", &csrf_cookie),
                        ("content-type", "application/x-www-form-urlencoded"),
                    ],
                    form_body(&all).as_bytes(),
                )
                .await;
            (head, String::from_utf8(page).unwrap())
        }
    };
    let log_in = |cvr: String| {
        post(
            "/login",
            vec![
                ("login_id", email.clone()),
                ("password", TEST_PASSWORD.to_owned()),
                ("organisation_cvr", cvr),
            ],
        )
    };

    // Without a CVR number, or with one of no organisation here: refused
    // alike. A malformed one is named as such.
    let before = app.fingerprint().await;
    let (head, ambiguous) = log_in(String::new()).await;
    assert!(
        head.starts_with("HTTP/1.1 422") && !head.contains("__Host-oa_session"),
        "{head}"
    );
    assert!(ambiguous.contains("class=\"error\""), "{ambiguous}");
    let (head, elsewhere) = log_in(unique_cvr()).await;
    assert!(!head.contains("__Host-oa_session"), "{head}");
    assert_eq!(
        elsewhere, ambiguous,
        "an unknown CVR number reads unlike an ambiguous login id"
    );
    let (head, malformed) = log_in("1234".into()).await;
    assert!(!head.contains("__Host-oa_session"), "{head}");
    assert!(malformed.contains("A CVR number has 8 digits"), "{malformed}");
    // A blank login id or a NUL in it can never log in: the form says the
    // login was refused, not "try again in a little while".
    for login_id in ["", "anna\0@example.dk"] {
        let (head, blank) = post(
            "/login",
            vec![
                ("login_id", login_id.to_owned()),
                ("password", TEST_PASSWORD.to_owned()),
                ("organisation_cvr", first.org.cvr.clone()),
            ],
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 422"), "{head}");
        assert!(
            blank.contains("username or password is wrong") && !blank.contains("Something went wrong"),
            "{login_id:?}: {blank}"
        );
    }
    assert_eq!(app.fingerprint().await, before, "a refused sign-in changed data");

    // With the second organisation's number: Anna of the second.
    let (head, _) = log_in(format!(" {} ", second.org.cvr)).await;
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let session = set_cookie(&head, "__Host-oa_session");
    let who = app
        .who_am_i(session.split_once('=').unwrap().1)
        .await
        .expect("the page's session");
    assert_eq!(who.user_id, anna_too.id);

    // A reset link asked for with the first organisation's number goes to
    // the first Anna only.
    let (head, _) = post(
        "/forgot-password",
        vec![("login_id", email.clone()), ("organisation_cvr", first.org.cvr.clone())],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for (fixture, person, asked) in [(&first, &anna, 1), (&second, &anna_too, 0)] {
        let sent = app
            .history_of(&fixture.admin_token, &person.id, pb::HistoryActivity::PasswordResetSent)
            .await;
        assert_eq!(sent.len(), asked, "{}: {sent:?}", person.id);
    }
    app.finish().await;
}

/// The `Set-Cookie` value (`name=value`) of `name` in an HTTP head.
fn set_cookie(head: &str, name: &str) -> String {
    head.lines()
        .filter_map(|line| line.strip_prefix("set-cookie: "))
        .find(|cookie| cookie.starts_with(&format!("{name}=")))
        .and_then(|cookie| cookie.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie in {head}"))
        .to_owned()
}

fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {head}"))
}

/// What the browser cannot show: the headers, and that a form posted
/// without its CSRF token (from another site, or a stale page) does nothing.
async fn a_forged_or_stale_form_changes_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let request = new_user(&fixture.org.id, "Ida", &[]);
    let (email, cpr) = (request.email.clone(), request.cpr.clone());
    let user = app.created_user(&fixture.admin_token, request).await;
    let token = app.activation_link_token(&email).await;

    // The link's token moves into a cookie (HttpOnly, Secure, SameSite) and
    // out of the address; every answer forbids framing, referrers, caching.
    let (head, _) = app.http("GET", &format!("/activate?token={token}"), &[], b"").await;
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    assert_eq!(header(&head, "location"), "/activate");
    let link_cookie = set_cookie(&head, "__Host-oa_link");
    assert!(head.contains("HttpOnly; Secure; SameSite=Lax"));
    assert!(header(&head, "content-security-policy").contains("default-src 'none'"));
    assert!(header(&head, "content-security-policy").contains("frame-ancestors 'none'"));
    assert_eq!(header(&head, "referrer-policy"), "no-referrer");
    assert_eq!(header(&head, "cache-control"), "no-store");

    // A "token" with cookie syntax in it never reaches a cookie.
    let (head, _) = app
        .http("GET", "/activate?token=x%3B%20Max-Age%3D99999999", &[], b"")
        .await;
    assert!(head.starts_with("HTTP/1.1 410"), "{head}");
    assert!(!head.contains("set-cookie: __Host-oa_link"), "{head}");

    let (head, page) = app.http("GET", "/activate", &[("cookie", &link_cookie)], b"").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let csrf_cookie = set_cookie(&head, "__Host-oa_csrf");
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.contains("<html lang=\"da\"") && !page.contains(&token),
        "the token is not in the page"
    );

    // Posted without the CSRF token, with another one, or without its
    // cookie: refused, and nothing changed.
    let before = app.fingerprint().await;
    let csrf = csrf_cookie.split_once('=').unwrap().1.to_owned();
    let form = |csrf: &str| {
        format!("csrf={csrf}&cpr={cpr}&password=Sommerhus+ved+havet+2026&password_again=Sommerhus+ved+havet+2026")
    };
    let both = format!("{link_cookie}; {csrf_cookie}");
    for (cookies, body) in [
        (both.as_str(), form("")),
        (both.as_str(), form("oat_forged")),
        (link_cookie.as_str(), form(&csrf)),
    ] {
        let (head, _) = app
            .http(
                "POST",
                "/activate",
                &[
                    ("cookie", cookies),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                body.as_bytes(),
            )
            .await;
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    }
    assert_eq!(app.fingerprint().await, before, "a forged form changed data");
    assert_eq!(
        app.user(&fixture.admin_token, &user.id).await.state(),
        pb::UserState::PendingActivation
    );

    // The same form with its token activates.
    let (head, _) = app
        .http(
            "POST",
            "/activate",
            &[("cookie", &both), ("content-type", "application/x-www-form-urlencoded")],
            form(&csrf).as_bytes(),
        )
        .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        app.user(&fixture.admin_token, &user.id).await.state(),
        pb::UserState::Active
    );
    app.login(&email, "Sommerhus ved havet 2026")
        .await
        .expect("login with the page's password");
    app.finish().await;
}

/// A client that sends its request's headers, or a form's or an OCSP
/// request's body, a little at a time (slowloris) is cut off: the headers
/// within 10 s, the body within 10 s of them; so is one that stops reading
/// the answers, 10 s after they stall. The HTTP port used to be served
/// without a timer: such a connection stayed open for ever, and enough of
/// them took every file descriptor of the process, gRPC's listener's too.
async fn a_client_that_sends_or_reads_slowly_is_cut_off(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::start(backend).await;
    let cut_off = |first: &'static [u8]| {
        let addr = app.http_addr;
        async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.write_all(first).await.expect("the first bytes");
            let mut answer = Vec::new();
            let read = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
            assert!(
                read.is_ok(),
                "still open after 20 s: {:?}",
                String::from_utf8_lossy(first)
            );
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    // A client that asks and never reads: pipelined requests whose answers
    // outgrow every buffer between it and the server. Once the server's
    // writes have waited 10 s, it closes the connection; before, it waited
    // for ever, and answered everything once the client read on.
    const ASKED: usize = 20_000;
    let never_reads = async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("a small receive buffer");
        let stream = socket.connect(app.http_addr).await.expect("connect");
        let (mut reader, mut writer) = stream.into_split();
        let asking = tokio::spawn(async move {
            let requests = b"GET /ca.pem HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(ASKED);
            // Cut off with the requests half sent: that is the point.
            let _ = writer.write_all(&requests).await;
            writer
        });
        tokio::time::sleep(std::time::Duration::from_secs(13)).await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), reader.read_to_end(&mut answer)).await;
        asking.abort();
        (
            read.is_ok(),
            String::from_utf8_lossy(&answer).matches("HTTP/1.1 200").count(),
        )
    };
    let (headers, form, ocsp, (closed, answered)) = tokio::join!(
        cut_off(b"GET /ca.pem HTTP/1.1\r\nHost: localhost\r\n"),
        cut_off(b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nab"),
        cut_off(b"POST /ocsp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nab"),
        never_reads,
    );
    assert!(headers.is_empty() || headers.starts_with("HTTP/1.1 408"), "{headers}");
    assert!(form.starts_with("HTTP/1.1 408"), "{form}");
    assert!(ocsp.starts_with("HTTP/1.1 408"), "{ocsp}");
    assert!(
        closed && answered < ASKED,
        "a client that never read was still served: closed {closed}, {answered} of {ASKED} answered"
    );
    // The port still serves everyone else.
    let (head, _) = app.http("GET", "/ca.pem", &[], b"").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    app.finish().await;
}

/// A body past the limit is 413; a body that cannot be read (a broken
/// chunk, here) is the client's error, 400, not "too large": every failure
/// to read a body was answered 413.
async fn a_body_too_large_or_broken_is_answered_for_what_it_is(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::start(backend).await;
    let answer = |request: Vec<u8>| {
        let addr = app.http_addr;
        async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            // The server may answer before it has read all of a body too
            // large, and close: a failed write is no failure here.
            let _ = stream.write_all(&request).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let sized = |path: &str, length: usize| {
        let mut request =
            format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {length}\r\n\r\n")
                .into_bytes();
        request.resize(request.len() + length, b'a');
        request
    };
    let broken = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\nnot a chunk size\r\n\r\n"
        )
        .into_bytes()
    };
    let too_large = answer(sized("/ocsp", 70 * 1024)).await;
    assert!(too_large.starts_with("HTTP/1.1 413"), "{too_large}");
    let too_large = answer(sized("/login", 20 * 1024)).await;
    assert!(too_large.starts_with("HTTP/1.1 413"), "{too_large}");
    for path in ["/ocsp", "/login"] {
        let unreadable = answer(broken(path)).await;
        assert!(unreadable.starts_with("HTTP/1.1 400"), "{path}: {unreadable}");
    }
    app.finish().await;
}
