//! The self-service pages the mails link to (R-AUTH-2, R-AUTH-3), served on
//! the HTTP port beside `/crl`: `/activate` (the link's token, then the CPR
//! number or birth date, then the new password), `/reset-password`,
//! `/forgot-password`, `/login` with its code step `/login/code`, and
//! `/account` with sign-out. Server-rendered HTML (askama, escaped by
//! default), in the person's language, with no JavaScript.
//!
//! They call the same domain functions as the RPCs, with the same attempt
//! limits. Safety: a strict Content-Security-Policy (nothing but this
//! origin's stylesheet; forms post only here; no framing), no referrer (a
//! link's token never leaks to another site), no caching; a link's token
//! is moved into a cookie and out of the URL on the first request; every
//! form carries a CSRF token that must match its cookie (double submit),
//! and the cookies are `__Host-`, HttpOnly, Secure and SameSite=Lax. So the
//! pages want HTTPS (an ingress) or localhost, where browsers keep Secure
//! cookies over plain HTTP.

mod texts;

use std::collections::HashMap;
use std::net::SocketAddr;

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use orgadmin_domain::error::Reason;
use orgadmin_domain::model::{Language, SecondFactorMethod};
use orgadmin_domain::passwords::{Password, check_new_password};
use orgadmin_domain::policy::Principal;
use orgadmin_domain::services::activation::{ActivationProof, ActivationSecret};
use orgadmin_domain::services::login::LoginAttempt;
use orgadmin_domain::services::pages::{LinkHolder, LinkKind, ProofKind};
use orgadmin_domain::services::second_factor::LoginOutcome;
use orgadmin_domain::{Domain, DomainError};
use texts::Texts;

/// Forms are a few fields; nothing honest comes near this.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// How long a link's token stays in its cookie, and a form's CSRF token.
const FLOW_SECONDS: i64 = 60 * 60;

const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const COOKIE_LINK: &str = "__Host-oa_link";
const COOKIE_CSRF: &str = "__Host-oa_csrf";
const COOKIE_SESSION: &str = "__Host-oa_session";
const COOKIE_CHALLENGE: &str = "__Host-oa_challenge";

/// The pages' routes, to be merged into the HTTP router.
pub fn router(domain: Domain) -> Router {
    Router::new()
        .route("/pages.css", get(stylesheet))
        .route("/activate", get(activate_page).post(activate_submit))
        .route("/reset-password", get(reset_page).post(reset_submit))
        .route("/forgot-password", get(forgot_page).post(forgot_submit))
        .route("/login", get(login_page).post(login_submit))
        .route("/login/code", get(code_page).post(code_submit))
        .route("/account", get(account_page))
        .route("/logout", axum::routing::post(logout_submit))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(domain)
}

struct Field {
    name: &'static str,
    label: &'static str,
    kind: &'static str,
    autocomplete: &'static str,
    numeric: bool,
    hint: Option<String>,
    /// May be left empty (every other field is `required`).
    optional: bool,
}

impl Field {
    fn new(name: &'static str, label: &'static str, kind: &'static str, autocomplete: &'static str) -> Self {
        Self {
            name,
            label,
            kind,
            autocomplete,
            numeric: false,
            hint: None,
            optional: false,
        }
    }

    /// The organisation's CVR number, needed only when the login id belongs
    /// to people in several organisations.
    fn organisation_cvr(t: &Texts) -> Self {
        Self {
            numeric: true,
            hint: Some(t.organisation_cvr_hint.to_owned()),
            optional: true,
            ..Self::new("organisation_cvr", t.organisation_cvr_label, "text", "off")
        }
    }
}

#[derive(Template)]
#[template(path = "pages/form.html")]
struct FormPage {
    t: &'static Texts,
    title: &'static str,
    greeting: Option<String>,
    intro: Option<String>,
    error: Option<String>,
    action: String,
    csrf: String,
    fields: Vec<Field>,
    button: &'static str,
    links: Vec<(String, &'static str)>,
}

#[derive(Template)]
#[template(path = "pages/message.html")]
struct MessagePage {
    t: &'static Texts,
    title: &'static str,
    text: String,
    link: Option<(String, &'static str)>,
}

/// What a request brought: its cookies, form, language and peer.
struct Visit {
    cookies: HashMap<String, String>,
    form: HashMap<String, String>,
    query: HashMap<String, String>,
    language: Language,
    peer: Option<String>,
    /// Cookies to set on the answer.
    set_cookies: Vec<String>,
}

impl Visit {
    fn new(domain: &Domain, headers: &HeaderMap, uri: &Uri, remote: Option<SocketAddr>, body: &[u8]) -> Self {
        let cookies = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let query: HashMap<String, String> = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
        let form = form_urlencoded::parse(body).into_owned().collect();
        let trusted = &domain.settings().trusted_peer_header;
        let header_value = (!trusted.is_empty())
            .then(|| headers.get_all(trusted.as_str()).iter().next_back())
            .flatten()
            .map(|v| v.as_bytes());
        Self {
            language: language(&query, headers),
            peer: domain.peer_address(header_value, remote.map(|r| r.ip())),
            cookies,
            form,
            query,
            set_cookies: Vec::new(),
        }
    }

    fn t(&self) -> &'static Texts {
        Texts::of(self.language)
    }

    fn field(&self, name: &str) -> &str {
        self.form.get(name).map(String::as_str).unwrap_or_default()
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn set_cookie(&mut self, name: &str, value: &str, max_age_seconds: i64) {
        self.set_cookies.push(format!(
            "{name}={value}; Path=/; Max-Age={max_age_seconds}; HttpOnly; Secure; SameSite=Lax"
        ));
    }

    fn clear_cookie(&mut self, name: &str) {
        self.set_cookie(name, "", 0);
    }

    /// The form's CSRF token: the cookie's, or a new one set now.
    fn csrf(&mut self) -> String {
        if let Some(token) = self.cookie(COOKIE_CSRF) {
            return token.to_owned();
        }
        let token = orgadmin_domain::secrets::new_token();
        self.set_cookie(COOKIE_CSRF, &token, FLOW_SECONDS);
        token
    }

    /// Whether a posted form carries the CSRF token of its cookie.
    fn csrf_matches(&self) -> bool {
        match (self.cookie(COOKIE_CSRF), self.form.get("csrf")) {
            (Some(cookie), Some(field)) => {
                orgadmin_domain::secrets::constant_time_eq(cookie.as_bytes(), field.as_bytes())
            }
            _ => false,
        }
    }

    /// `?lang=` to carry the language through a form's post.
    fn lang_query(&self) -> String {
        format!("?lang={}", self.language)
    }

    fn page(self, status: StatusCode, html: Result<String, askama::Error>) -> Response {
        let html = match html {
            Ok(html) => html,
            Err(error) => {
                tracing::error!(%error, "a page did not render");
                return (StatusCode::INTERNAL_SERVER_ERROR, "the page did not render\n").into_response();
            }
        };
        let mut response = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
        self.finish(&mut response);
        response
    }

    fn message(
        self,
        status: StatusCode,
        title: &'static str,
        text: &str,
        link: Option<(String, &'static str)>,
    ) -> Response {
        let page = MessagePage {
            t: self.t(),
            title,
            text: text.to_owned(),
            link,
        };
        let html = page.render();
        self.page(status, html)
    }

    /// A form page: 422 when it shows an error, so a client sees the refusal.
    fn form_page(self, page: FormPage) -> Response {
        let status = if page.error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        };
        let html = page.render();
        self.page(status, html)
    }

    fn redirect(self, location: &str) -> Response {
        let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, location.to_owned())]).into_response();
        self.finish(&mut response);
        response
    }

    /// A stale or forged form: nothing was done.
    fn form_expired(self, again: &str) -> Response {
        let t = self.t();
        self.message(
            StatusCode::FORBIDDEN,
            t.err_form_expired,
            "",
            Some((again.to_owned(), t.to_login)),
        )
    }

    fn finish(self, response: &mut Response) {
        let headers = response.headers_mut();
        for cookie in self.set_cookies {
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                headers.append(header::SET_COOKIE, value);
            }
        }
        for (name, value) in [
            ("content-security-policy", CONTENT_SECURITY_POLICY),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}

/// Every page handler gets its request as a `Visit`: cookies, query, form
/// (the body, for a post), language and peer, read once.
impl axum::extract::FromRequest<Domain> for Visit {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, domain: &Domain) -> Result<Self, Response> {
        let (parts, body) = request.into_parts();
        let remote = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let body = crate::http::body_within(body, MAX_FORM_BYTES, "a form is at most 16 KiB\n").await?;
        Ok(Visit::new(domain, &parts.headers, &parts.uri, remote, &body))
    }
}

/// `?lang=`, else the first of da, sv, en the browser accepts, else Danish.
fn language(query: &HashMap<String, String>, headers: &HeaderMap) -> Language {
    if let Some(language) = query.get("lang").and_then(|l| l.parse().ok()) {
        return language;
    }
    headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(',')
        .filter_map(|item| item.split(';').next())
        .filter_map(|tag| tag.trim().get(..2))
        .find_map(|primary| primary.to_ascii_lowercase().parse().ok())
        .unwrap_or(Language::Da)
}

/// What a refusal of the domain says to the person.
fn say(t: &Texts, error: &DomainError) -> String {
    let text = match error {
        DomainError::RateLimited { .. } => t.err_too_many,
        DomainError::Unauthenticated { .. } => t.err_login_refused,
        DomainError::FailedPrecondition { reason, .. } => match reason {
            Reason::UserNotActive => t.err_not_active,
            Reason::ActivationMismatch => t.err_proof_mismatch,
            Reason::ActivationExpired
            | Reason::ActivationLocked
            | Reason::ActivationReplaced
            | Reason::ActivationUnknown
            | Reason::ActivationUsed
            | Reason::PasswordResetExpired
            | Reason::PasswordResetUnknown
            | Reason::PasswordResetUsed => t.link_dead_text,
            _ => t.err_unexpected,
        },
        DomainError::InvalidArgument(violations)
            if violations.iter().any(|v| v.field == "cpr" || v.field == "birth_date") =>
        {
            t.err_proof_invalid
        }
        other => {
            tracing::warn!(error = %other, "a page's action failed");
            t.err_unexpected
        }
    };
    text.to_owned()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../templates/pages/pages.css"),
    )
        .into_response()
}

/// A link's page: on the first request the token moves from the URL into a
/// cookie (a redirect), so it is in no history, log or referrer.
async fn link_page(kind: LinkKind, path: &str, domain: Domain, mut visit: Visit) -> Response {
    if let Some(token) = visit.query.get("token").cloned() {
        // Only what a token can be goes into the cookie (no `;`, no
        // attributes smuggled in); anything else is a dead link.
        if token.is_empty()
            || token.len() > 200
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            let t = visit.t();
            return visit.message(StatusCode::GONE, t.link_dead_title, t.link_dead_text, None);
        }
        visit.set_cookie(COOKIE_LINK, &token, FLOW_SECONDS);
        return visit.redirect(path);
    }
    let holder = match visit.cookie(COOKIE_LINK) {
        Some(token) => domain.link_holder(kind, token).await,
        None => Ok(None),
    };
    match holder {
        Ok(Some(holder)) => link_form(visit, kind, path, &holder, None),
        Ok(None) => {
            let t = visit.t();
            visit.message(StatusCode::GONE, t.link_dead_title, t.link_dead_text, None)
        }
        Err(error) => {
            let text = say(visit.t(), &error);
            let t = visit.t();
            visit.message(StatusCode::SERVICE_UNAVAILABLE, t.err_unexpected, &text, None)
        }
    }
}

fn link_form(mut visit: Visit, kind: LinkKind, path: &str, holder: &LinkHolder, error: Option<String>) -> Response {
    visit.language = holder.language;
    let t = visit.t();
    let mut password = Field::new("password", t.new_password_label, "password", "new-password");
    password.hint = Some(t.password_hint.replace("{min}", &holder.min_password_chars.to_string()));
    let mut fields = Vec::new();
    let (title, intro, button) = match kind {
        LinkKind::Activation => {
            let mut proof = match holder.proof {
                ProofKind::Cpr => Field::new("cpr", t.cpr_label, "text", "off"),
                ProofKind::BirthDate => Field::new("birth_date", t.birth_date_label, "text", "bday"),
            };
            proof.numeric = holder.proof == ProofKind::Cpr;
            fields.push(proof);
            (t.activate_title, t.activate_intro, t.activate_button)
        }
        LinkKind::PasswordReset => (t.reset_title, t.reset_intro, t.reset_button),
    };
    fields.push(password);
    fields.push(Field::new(
        "password_again",
        t.password_again_label,
        "password",
        "new-password",
    ));
    let page = FormPage {
        t,
        title,
        greeting: Some(format!("{} {}", t.hello, holder.first_name)),
        intro: Some(intro.to_owned()),
        error,
        action: path.to_owned(),
        csrf: visit.csrf(),
        fields,
        button,
        links: Vec::new(),
    };
    visit.form_page(page)
}

/// A link's form posted: checks in the person's language first (both
/// passwords alike, the password rules), then the domain acts.
async fn link_submit(kind: LinkKind, path: &str, domain: Domain, mut visit: Visit) -> Response {
    if !visit.csrf_matches() {
        return visit.form_expired(path);
    }
    let Some(token) = visit.cookie(COOKIE_LINK).map(str::to_owned) else {
        let t = visit.t();
        return visit.message(StatusCode::GONE, t.link_dead_title, t.link_dead_text, None);
    };
    let holder = match domain.link_holder(kind, &token).await {
        Ok(Some(holder)) => holder,
        Ok(None) => {
            visit.clear_cookie(COOKIE_LINK);
            let t = visit.t();
            return visit.message(StatusCode::GONE, t.link_dead_title, t.link_dead_text, None);
        }
        Err(error) => {
            let text = say(visit.t(), &error);
            return link_form(visit, kind, path, &fallback_holder(), Some(text));
        }
    };
    let t = Texts::of(holder.language);
    let password = Password::new(visit.field("password"));
    if visit.field("password") != visit.field("password_again") {
        return link_form(visit, kind, path, &holder, Some(t.err_passwords_differ.to_owned()));
    }
    let login_ids: Vec<&str> = holder.login_ids.iter().map(String::as_str).collect();
    if let Err(rule) = check_new_password(&password, &login_ids, holder.min_password_chars) {
        return link_form(visit, kind, path, &holder, Some(t.password_rule(rule)));
    }
    let done = match kind {
        LinkKind::Activation => {
            let proof = match holder.proof {
                ProofKind::Cpr => ActivationProof::Cpr(visit.field("cpr").to_owned()),
                ProofKind::BirthDate => ActivationProof::BirthDate(visit.field("birth_date").trim().to_owned()),
            };
            let limited = domain.limit_sign_in_attempt("activate", None, visit.peer.as_deref());
            match limited {
                Ok(()) => domain
                    .activate_user(ActivationSecret::LinkToken(token), proof, Some(password))
                    .await
                    .map(drop),
                Err(e) => Err(e),
            }
        }
        LinkKind::PasswordReset => match domain.limit_sign_in_attempt("reset_password", None, visit.peer.as_deref()) {
            Ok(()) => domain.reset_password(&token, password, visit.peer.clone()).await,
            Err(e) => Err(e),
        },
    };
    match done {
        Ok(()) => {
            visit.language = holder.language;
            visit.clear_cookie(COOKIE_LINK);
            let login = format!("/login?lang={}", holder.language);
            let (title, text) = match kind {
                LinkKind::Activation => (t.activated_title, t.activated_text),
                LinkKind::PasswordReset => (t.reset_done_title, t.reset_done_text),
            };
            visit.message(StatusCode::OK, title, text, Some((login, t.to_login)))
        }
        Err(error) => {
            let text = say(t, &error);
            link_form(visit, kind, path, &holder, Some(text))
        }
    }
}

/// For an error before the holder is known: the general rule, Danish.
fn fallback_holder() -> LinkHolder {
    LinkHolder {
        first_name: String::new(),
        language: Language::Da,
        proof: ProofKind::Cpr,
        min_password_chars: 15,
        login_ids: Vec::new(),
    }
}

async fn activate_page(State(domain): State<Domain>, visit: Visit) -> Response {
    link_page(LinkKind::Activation, "/activate", domain, visit).await
}

async fn activate_submit(State(domain): State<Domain>, visit: Visit) -> Response {
    link_submit(LinkKind::Activation, "/activate", domain, visit).await
}

async fn reset_page(State(domain): State<Domain>, visit: Visit) -> Response {
    link_page(LinkKind::PasswordReset, "/reset-password", domain, visit).await
}

async fn reset_submit(State(domain): State<Domain>, visit: Visit) -> Response {
    link_submit(LinkKind::PasswordReset, "/reset-password", domain, visit).await
}

/// A form that is not a link's: its action keeps the page's language.
struct SimpleForm {
    title: &'static str,
    intro: Option<&'static str>,
    action: &'static str,
    fields: Vec<Field>,
    button: &'static str,
    links: Vec<(String, &'static str)>,
}

fn simple_form(mut visit: Visit, form: SimpleForm, error: Option<String>) -> Response {
    let page = FormPage {
        t: visit.t(),
        title: form.title,
        greeting: None,
        intro: form.intro.map(str::to_owned),
        action: format!("{}{}", form.action, visit.lang_query()),
        csrf: visit.csrf(),
        fields: form.fields,
        button: form.button,
        links: form.links,
        error,
    };
    visit.form_page(page)
}

/// The optional CVR number of the sign-in forms is empty or well formed: a
/// mistyped one is named as such, not refused as a wrong password.
fn cvr_well_formed(visit: &Visit) -> bool {
    let cvr = visit.field("organisation_cvr").trim();
    cvr.is_empty() || orgadmin_domain::validate::cvr(cvr).is_ok()
}

fn login_form(visit: Visit, error: Option<String>) -> Response {
    let t = visit.t();
    let forgot = format!("/forgot-password{}", visit.lang_query());
    let form = SimpleForm {
        title: t.login_title,
        intro: None,
        action: "/login",
        fields: vec![
            Field::new("login_id", t.login_id_label, "text", "username"),
            Field::new("password", t.password_label, "password", "current-password"),
            Field::organisation_cvr(t),
        ],
        button: t.login_button,
        links: vec![(forgot, t.forgot_link)],
    };
    simple_form(visit, form, error)
}

async fn login_page(visit: Visit) -> Response {
    login_form(visit, None)
}

async fn login_submit(State(domain): State<Domain>, mut visit: Visit) -> Response {
    if !visit.csrf_matches() {
        return visit.form_expired("/login");
    }
    if !cvr_well_formed(&visit) {
        let text = visit.t().err_cvr_invalid.to_owned();
        return login_form(visit, Some(text));
    }
    let outcome = async {
        let login_id = visit.field("login_id").to_owned();
        domain.limit_sign_in_attempt("login", Some(&login_id), visit.peer.as_deref())?;
        let organisation_id = domain.organisation_for_sign_in(visit.field("organisation_cvr")).await?;
        domain
            .login(LoginAttempt {
                login_id,
                password: Password::new(visit.field("password")),
                organisation_id,
                peer: visit.peer.clone(),
            })
            .await
    }
    .await;
    match outcome {
        Ok(LoginOutcome::LoggedIn(session)) => {
            let seconds = (session.session_expires_at - orgadmin_domain::model::now_millis()) / 1000;
            visit.set_cookie(COOKIE_SESSION, session.session_token.expose(), seconds.max(1));
            let account = format!("/account{}", visit.lang_query());
            visit.redirect(&account)
        }
        Ok(LoginOutcome::SecondFactor(challenge)) => {
            let seconds = (challenge.expires_at - orgadmin_domain::model::now_millis()) / 1000;
            let value = format!("{}.{}", challenge.method, challenge.challenge_token.expose());
            visit.set_cookie(COOKIE_CHALLENGE, &value, seconds.max(1));
            let code = format!("/login/code{}", visit.lang_query());
            visit.redirect(&code)
        }
        Err(error) => {
            // A login id left blank or a password past its bound: no login
            // can come of it, which is all the form says (as the forgotten-
            // password form), not "try again later".
            let text = match &error {
                DomainError::InvalidArgument(_) => visit.t().err_login_refused.to_owned(),
                other => say(visit.t(), other),
            };
            login_form(visit, Some(text))
        }
    }
}

/// The challenge in its cookie: method and token.
fn challenge(visit: &Visit) -> Option<(SecondFactorMethod, String)> {
    let (method, token) = visit.cookie(COOKIE_CHALLENGE)?.split_once('.')?;
    Some((method.parse().ok()?, token.to_owned()))
}

fn code_form(visit: Visit, method: SecondFactorMethod, error: Option<String>) -> Response {
    let t = visit.t();
    let mut code = Field::new("code", t.code_label, "text", "one-time-code");
    code.numeric = true;
    let intro = match method {
        SecondFactorMethod::MailCode => t.code_intro_mail,
        SecondFactorMethod::Totp => t.code_intro_app,
    };
    let form = SimpleForm {
        title: t.code_title,
        intro: Some(intro),
        action: "/login/code",
        fields: vec![code],
        button: t.code_button,
        links: Vec::new(),
    };
    simple_form(visit, form, error)
}

async fn code_page(visit: Visit) -> Response {
    match challenge(&visit) {
        Some((method, _)) => code_form(visit, method, None),
        None => {
            let login = format!("/login{}", visit.lang_query());
            visit.redirect(&login)
        }
    }
}

async fn code_submit(State(domain): State<Domain>, mut visit: Visit) -> Response {
    if !visit.csrf_matches() {
        return visit.form_expired("/login");
    }
    let Some((method, token)) = challenge(&visit) else {
        let login = format!("/login{}", visit.lang_query());
        return visit.redirect(&login);
    };
    let verified = match domain.limit_sign_in_attempt("login_code", None, visit.peer.as_deref()) {
        Ok(()) => {
            domain
                .verify_login_code(&token, visit.field("code"), visit.peer.clone())
                .await
        }
        Err(e) => Err(e),
    };
    match verified {
        Ok(session) => {
            let seconds = (session.session_expires_at - orgadmin_domain::model::now_millis()) / 1000;
            visit.clear_cookie(COOKIE_CHALLENGE);
            visit.set_cookie(COOKIE_SESSION, session.session_token.expose(), seconds.max(1));
            let account = format!("/account{}", visit.lang_query());
            visit.redirect(&account)
        }
        Err(error) => {
            let t = visit.t();
            let text = match error {
                DomainError::Unauthenticated { .. } | DomainError::InvalidArgument(_) => t.err_code_refused.to_owned(),
                other => say(t, &other),
            };
            code_form(visit, method, Some(text))
        }
    }
}

async fn account_page(State(domain): State<Domain>, visit: Visit) -> Response {
    let caller = match visit.cookie(COOKIE_SESSION) {
        Some(token) => domain.authenticate(token).await.ok(),
        None => None,
    };
    let Some(caller) = caller.filter(|c| matches!(c.principal, Principal::Member { .. })) else {
        let login = format!("/login{}", visit.lang_query());
        return visit.redirect(&login);
    };
    let mut visit = visit;
    let t = visit.t();
    let page = FormPage {
        t,
        title: t.account_title,
        greeting: None,
        intro: Some(format!("{} {}", t.signed_in_as, caller.display_name())),
        error: None,
        action: format!("/logout{}", visit.lang_query()),
        csrf: visit.csrf(),
        fields: Vec::new(),
        button: t.logout_button,
        links: Vec::new(),
    };
    let html = page.render();
    visit.page(StatusCode::OK, html)
}

async fn logout_submit(State(domain): State<Domain>, mut visit: Visit) -> Response {
    if !visit.csrf_matches() {
        return visit.form_expired("/account");
    }
    if let Some(token) = visit.cookie(COOKIE_SESSION).map(str::to_owned)
        && let Ok(caller) = domain.authenticate(&token).await
        && let Err(error) = domain.logout(&caller, &token).await
    {
        tracing::warn!(%error, "sign-out from the account page failed");
    }
    visit.clear_cookie(COOKIE_SESSION);
    let login = format!("/login{}", visit.lang_query());
    visit.redirect(&login)
}

async fn forgot_page(visit: Visit) -> Response {
    forgot_form(visit, None)
}

fn forgot_form(visit: Visit, error: Option<String>) -> Response {
    let t = visit.t();
    let form = SimpleForm {
        title: t.forgot_title,
        intro: Some(t.forgot_intro),
        action: "/forgot-password",
        fields: vec![
            Field::new("login_id", t.login_id_label, "text", "username"),
            Field::organisation_cvr(t),
        ],
        button: t.forgot_button,
        links: Vec::new(),
    };
    simple_form(visit, form, error)
}

async fn forgot_submit(State(domain): State<Domain>, visit: Visit) -> Response {
    if !visit.csrf_matches() {
        return visit.form_expired("/forgot-password");
    }
    if !cvr_well_formed(&visit) {
        let text = visit.t().err_cvr_invalid.to_owned();
        return forgot_form(visit, Some(text));
    }
    let asked = async {
        let login_id = visit.field("login_id");
        domain.limit_sign_in_attempt("reset", Some(login_id), visit.peer.as_deref())?;
        let organisation_id = domain.organisation_for_sign_in(visit.field("organisation_cvr")).await?;
        domain
            .request_password_reset(login_id, organisation_id, visit.peer.clone())
            .await
    }
    .await;
    match asked {
        Ok(()) => {
            let t = visit.t();
            let login = format!("/login{}", visit.lang_query());
            visit.message(
                StatusCode::OK,
                t.forgot_sent_title,
                t.forgot_sent_text,
                Some((login, t.to_login)),
            )
        }
        Err(error) => {
            let text = match &error {
                DomainError::InvalidArgument(_) => visit.t().err_login_refused.to_owned(),
                other => say(visit.t(), other),
            };
            forgot_form(visit, Some(text))
        }
    }
}
