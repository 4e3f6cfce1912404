//! Mail content: templates per kind and language, read from
//! `domain/templates/mail/<kind>/<lang>.{txt,html}` at build time, rendered
//! with `{{placeholder}}` substitution (HTML-escaped in the HTML part).

use crate::error::{DomainError, DomainResult};
use crate::model::Language;

macro_rules! mail_kinds {
    ($($variant:ident => $dir:literal),+ $(,)?) => {
        /// Every kind of mail orgadmin sends.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MailKind { $($variant),+ }

        impl MailKind {
            pub const ALL: &'static [MailKind] = &[$(MailKind::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(MailKind::$variant => $dir),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($dir => Some(MailKind::$variant),)+ _ => None }
            }

            /// (text, html) template of this kind in `language`.
            fn sources(self, language: Language) -> (&'static str, &'static str) {
                match (self, language) {
                    $(
                        (MailKind::$variant, Language::Da) => (
                            include_str!(concat!("../templates/mail/", $dir, "/da.txt")),
                            include_str!(concat!("../templates/mail/", $dir, "/da.html")),
                        ),
                        (MailKind::$variant, Language::Sv) => (
                            include_str!(concat!("../templates/mail/", $dir, "/sv.txt")),
                            include_str!(concat!("../templates/mail/", $dir, "/sv.html")),
                        ),
                        (MailKind::$variant, Language::En) => (
                            include_str!(concat!("../templates/mail/", $dir, "/en.txt")),
                            include_str!(concat!("../templates/mail/", $dir, "/en.html")),
                        ),
                    )+
                }
            }
        }
    };
}

mail_kinds!(
    Activation => "activation",
    NewCodeNotice => "new_code_notice",
    Welcome => "welcome",
    AnonymityRequest => "anonymity_request",
    RightsRequest => "rights_request",
    RightsRequestDecided => "rights_request_decided",
    ImportFinished => "import_finished",
    EmailVerification => "email_verification",
    EmailChangeNotice => "email_change_notice",
    PasswordReset => "password_reset",
    LoginCode => "login_code",
    CertificatePickup => "certificate_pickup",
    CertificateReady => "certificate_ready",
    CertificateContact => "certificate_contact",
    CertificateContactReplaced => "certificate_contact_replaced",
    CertificateRevoked => "certificate_revoked",
    CertificateExpiring => "certificate_expiring",
    JoinConfirmation => "join_confirmation",
);

/// `at` rounded up to a whole minute: a time a mail names to the minute
/// ([`date_time`]) as the start of something must not be earlier than the
/// start itself ("from 14:37" for a hold that ends at 14:37:42 refused the
/// link for 42 seconds after the time the mail gave).
pub fn whole_minute_from(at: crate::model::Millis) -> crate::model::Millis {
    round_up(at, 60 * 1000)
}

/// `at` rounded up to a multiple of `unit` (itself when it is one).
fn round_up(at: crate::model::Millis, unit: crate::model::Millis) -> crate::model::Millis {
    (at - 1).div_euclid(unit).saturating_add(1).saturating_mul(unit)
}

/// A date and time as mails write them (UTC), for links that last hours.
pub fn date_time(at: crate::model::Millis) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// The end of the UTC day `at` falls in (the next midnight; `at` itself
/// when it is one): when a link whose mail names only its last day ends.
/// Ended at the hour it was made, thirty days on, a link that the mail
/// said was "valid until 2026-04-09" died on the afternoon of that day.
/// The UTC day ends after the Danish and Swedish one, so the link works
/// through the named day for its readers.
pub fn end_of_day(at: crate::model::Millis) -> crate::model::Millis {
    round_up(at, 24 * 60 * 60 * 1000)
}

/// The last day a link that ends at `end_of_day(..)` works, as mails write
/// it.
pub fn last_day(ends_at: crate::model::Millis) -> String {
    date(ends_at - 1)
}

/// When a single-use link made `now` and lasting `ttl` ends: one that lasts
/// days through the last of them (its mail names the day), a shorter one
/// at its time (its mail names the time).
pub fn link_end(now: crate::model::Millis, ttl: crate::model::Millis) -> crate::model::Millis {
    if ttl >= 24 * 60 * 60 * 1000 {
        end_of_day(now + ttl)
    } else {
        now + ttl
    }
}

/// How a mail names the end of a link that lasts `ttl` and ends `ends_at`
/// (see [`link_end`]).
pub fn link_end_text(ends_at: crate::model::Millis, ttl: crate::model::Millis) -> String {
    if ttl >= 24 * 60 * 60 * 1000 {
        last_day(ends_at)
    } else {
        date_time(ends_at)
    }
}

/// A date as mails write it (UTC, ISO 8601).
pub fn date(at: crate::model::Millis) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// A count of days or minutes as a mail's reader says it: "1 dag", "3
/// dage" (Danish), "1 dag", "3 dagar" (Swedish), "1 day", "3 days". The
/// templates wrote the plural after the number, so a certificate ending
/// tomorrow "udløber om 1 dage".
pub fn quantity(language: Language, count: i64, unit: Unit) -> String {
    let (one, many) = match (unit, language) {
        (Unit::Day, Language::Da) => ("dag", "dage"),
        (Unit::Day, Language::Sv) => ("dag", "dagar"),
        (Unit::Day, Language::En) => ("day", "days"),
        (Unit::Minute, Language::Da) => ("minut", "minutter"),
        (Unit::Minute, Language::Sv) => ("minut", "minuter"),
        (Unit::Minute, Language::En) => ("minute", "minutes"),
    };
    format!("{count} {}", if count == 1 { one } else { many })
}

/// What [`quantity`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Day,
    Minute,
}

/// Whole days from `now` to `at` as mails count them: by the UTC dates that
/// [`date`] writes, at least 1. Counted in 24-hour periods, a mail sent at
/// 01:00 said "expires in 2 days" beside tomorrow's date.
pub fn days_until(now: crate::model::Millis, at: crate::model::Millis) -> i64 {
    let day = |ms| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.date_naive());
    match (day(now), day(at)) {
        (Some(today), Some(then)) => (then - today).num_days().max(1),
        _ => 1,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RenderedMail {
    pub to_name: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn substitute(template: &str, vars: &[(&str, &str)], escape: bool) -> DomainResult<String> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| DomainError::Internal("unclosed {{ in a mail template".into()))?;
        // `{{> name}}`: text someone wrote (a reason, a note), quoted line
        // by line in a text part, so no line of it reads as the mail's own
        // (a link "to approve here", a footer); the HTML part sets it apart
        // with its markup instead.
        let (quoted, name) = match after[..end].trim().strip_prefix('>') {
            Some(name) => (true, name.trim()),
            None => (false, after[..end].trim()),
        };
        let value =
            vars.iter().find(|(k, _)| *k == name).map(|(_, v)| *v).ok_or_else(|| {
                DomainError::Internal(format!("mail template needs {{{{{name}}}}}, which was not given"))
            })?;
        if escape {
            out.push_str(&html_escape(value));
        } else if quoted {
            // Every break a reader may show, split here: a bare CR (which
            // becomes a line feed on the way out) and Unicode's line and
            // paragraph separators would otherwise start an unquoted line.
            let lines: Vec<String> = value
                .replace("\r\n", "\n")
                .split(['\n', '\r', '\u{2028}', '\u{2029}', '\u{0085}'])
                .map(|line| format!("> {line}"))
                .collect();
            out.push_str(&lines.join("\n"));
        } else {
            out.push_str(value);
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

pub fn html_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The subject as sent, with no `=?` left to begin an RFC 2047 encoded-word.
/// lettre sends an all-ASCII word of a subject as it is, so a name typed as
/// `=?utf-8?b?4oCu?=` (plain ASCII, which `validate::text` passes) would reach
/// the reader decoded to U+202E, a right-to-left override. A space after the
/// `=` keeps every character typed, visible and in place, and adds nothing
/// invisible; it is applied to the whole line, so a `=?` formed where a value
/// meets the template's words or another value is broken as well.
fn without_encoded_words(subject: &str) -> String {
    subject.replace("=?", "= ?")
}

/// Renders a mail; every placeholder a template uses must be given.
pub fn render(kind: MailKind, language: Language, to_name: &str, vars: &[(&str, &str)]) -> DomainResult<RenderedMail> {
    let (text, html) = kind.sources(language);
    let (subject_line, body) = text
        .split_once('\n')
        .ok_or_else(|| DomainError::Internal(format!("template {}/{language} has no body", kind.as_str())))?;
    let subject = subject_line
        .strip_prefix("Subject:")
        .ok_or_else(|| DomainError::Internal(format!("template {}/{language} lacks its Subject: line", kind.as_str())))?
        .trim();
    Ok(RenderedMail {
        to_name: to_name.to_owned(),
        subject: without_encoded_words(&substitute(subject, vars, false)?),
        text: with_line_feeds_only(&substitute(body.trim_start_matches(['\r', '\n']), vars, false)?),
        html: with_line_feeds_only(&substitute(html, vars, true)?),
    })
}

/// Every line break as a bare LF, which lettre sends as CRLF. A CR of a
/// value (a decision's note may hold one) went out as it was: SMTP forbids
/// a lone CR, and some servers read `<CR>.<CR>` as the mail's end, so the
/// rest of the note was read as commands (SMTP smuggling).
fn with_line_feeds_only(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_named_by_its_last_day_works_through_that_day() {
        let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis();
        // Made at 15:00 on 10 March (UTC), thirty days on is 9 April 15:00.
        let ends = end_of_day(at("2026-04-09T15:00:00Z"));
        assert_eq!(ends, at("2026-04-10T00:00:00Z"));
        assert_eq!(last_day(ends), "2026-04-09");
        // 23:59 in Copenhagen on the named day (summer time) still works.
        assert!(at("2026-04-09T23:59:00+02:00") < ends);
        // A midnight stays itself.
        assert_eq!(end_of_day(at("2026-04-10T00:00:00Z")), at("2026-04-10T00:00:00Z"));
        assert_eq!(last_day(at("2026-04-10T00:00:00Z")), "2026-04-09");
        // A link of hours ends at its time, and its mail says when.
        let now = at("2026-04-09T15:00:00Z");
        assert_eq!(link_end(now, 60 * 60 * 1000), at("2026-04-09T16:00:00Z"));
        assert_eq!(
            link_end_text(at("2026-04-09T16:00:00Z"), 60 * 60 * 1000),
            "2026-04-09 16:00 UTC"
        );
        assert_eq!(link_end(now, 24 * 60 * 60 * 1000), at("2026-04-11T00:00:00Z"));
    }

    #[test]
    fn a_start_is_named_no_earlier_than_it_is() {
        let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis();
        assert_eq!(
            whole_minute_from(at("2026-04-09T14:37:42Z")),
            at("2026-04-09T14:38:00Z")
        );
        assert_eq!(
            date_time(whole_minute_from(at("2026-04-09T14:37:00.001Z"))),
            "2026-04-09 14:38 UTC"
        );
        assert_eq!(
            whole_minute_from(at("2026-04-09T14:37:00Z")),
            at("2026-04-09T14:37:00Z")
        );
    }

    #[test]
    fn one_is_singular_in_every_language() {
        assert_eq!(quantity(Language::Da, 1, Unit::Day), "1 dag");
        assert_eq!(quantity(Language::Da, 3, Unit::Day), "3 dage");
        assert_eq!(quantity(Language::Sv, 1, Unit::Day), "1 dag");
        assert_eq!(quantity(Language::Sv, 30, Unit::Day), "30 dagar");
        assert_eq!(quantity(Language::En, 1, Unit::Day), "1 day");
        assert_eq!(quantity(Language::En, 0, Unit::Day), "0 days");
        assert_eq!(quantity(Language::Da, 1, Unit::Minute), "1 minut");
        assert_eq!(quantity(Language::Sv, 10, Unit::Minute), "10 minuter");
        assert_eq!(quantity(Language::En, 10, Unit::Minute), "10 minutes");
        // And the templates say no unit of their own beside it.
        for kind in MailKind::ALL {
            for language in [Language::Da, Language::Sv, Language::En] {
                let mail = render(*kind, language, "Søren", &vars()).unwrap();
                for text in [&mail.subject, &mail.text, &mail.html] {
                    // vars() gives "1 dag" and "1 minut": a unit left in
                    // any language's template follows them.
                    for doubled in ["dag dag", "dag day", "minut minut", "minut minute"] {
                        assert!(!text.contains(doubled), "{kind:?}/{language}: {text}");
                    }
                }
            }
        }
    }

    #[test]
    fn days_left_agree_with_the_date_the_mail_names() {
        let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis();
        // 46 hours before an expiry at 23:00 tomorrow: tomorrow, 1 day.
        let expiry = at("2029-03-03T23:00:00Z");
        assert_eq!(date(expiry), "2029-03-03");
        assert_eq!(days_until(at("2029-03-02T01:00:00Z"), expiry), 1);
        assert_eq!(days_until(at("2029-02-01T23:30:00Z"), expiry), 30);
        // The same day, or past: at least 1.
        assert_eq!(days_until(at("2029-03-03T01:00:00Z"), expiry), 1);
        assert_eq!(days_until(at("2029-03-04T01:00:00Z"), expiry), 1);
    }

    /// A lone CR in a value (a decision's note) leaves the rendered mail
    /// as a line break; no CR is left for the wire as typed.
    #[test]
    fn no_carriage_return_reaches_the_body() {
        let values: Vec<(&str, &str)> = vars()
            .into_iter()
            .map(|(name, value)| match name {
                "note" | "reason" => (name, "ok\r.\r\nMAIL FROM:<ceo@firma.dk>\r\n"),
                _ => (name, value),
            })
            .collect();
        for kind in MailKind::ALL {
            let mail = render(*kind, Language::Da, "Søren", &values).unwrap();
            assert!(!mail.text.contains('\r') && !mail.html.contains('\r'), "{kind:?}");
        }
    }

    fn vars() -> Vec<(&'static str, &'static str)> {
        vec![
            ("first_name", "Søren Åström"),
            ("organisation_name", "Æblegården <A/S>"),
            ("activation_link", "https://example.dk/activate?token=abc"),
            ("expires_on", "2026-12-22"),
            ("requester_name", "Örjan Ødegård"),
            ("reason", "Beskyttet adresse"),
            ("job_id", "0190-job"),
            ("created", "12"),
            ("failed", "1"),
            ("verification_link", "https://example.dk/verify-email?token=abc"),
            ("confirmation_link", "https://example.dk/join/confirm?token=abc"),
            ("certificate", "Lønsystem (organisation)"),
            ("pickup_link", "https://example.dk/certificates/pickup?token=abc"),
            ("pickup_token", "oat_abc"),
            ("serial", "4a5006ab"),
            ("days_left", "1 dag"),
            ("reset_link", "https://example.dk/reset-password?token=abc"),
            ("expires_at", "2026-12-22 14:00 UTC"),
            ("code", "042917"),
            ("valid_for", "1 minut"),
            ("requested", "admin level 3 on unit Nord"),
            ("decision", "godkendt"),
            ("note", "Ok for sæsonen"),
            ("new_email", "soren.ny@example.dk"),
            ("confirmable_from", "2026-12-25 14:00 UTC"),
            ("usable_from", "2026-12-22 14:00 UTC"),
            ("new_contact_name", "Åsa Ølund"),
        ]
    }

    #[test]
    fn every_template_renders_in_every_language_with_letters_intact() {
        for kind in MailKind::ALL {
            for language in Language::ALL {
                let mail =
                    render(*kind, *language, "Søren", &vars()).unwrap_or_else(|e| panic!("{kind:?}/{language}: {e}"));
                assert!(!mail.subject.is_empty());
                assert!(!mail.subject.contains("{{") && !mail.text.contains("{{") && !mail.html.contains("{{"));
                // By the person's name, or (a mail that names nobody) the
                // organisation's.
                assert!(
                    mail.text.contains("Søren Åström") || mail.text.contains("Æblegården <A/S>"),
                    "{kind:?}/{language} text keeps æøå/åäö"
                );
                assert!(mail.html.contains("Søren Åström") || mail.html.contains("Æblegården &lt;A/S&gt;"));
                assert!(!mail.html.contains("<A/S>"), "values are escaped in HTML");
            }
        }
    }

    #[test]
    fn languages_differ() {
        let da = render(MailKind::Activation, Language::Da, "x", &vars()).unwrap();
        let sv = render(MailKind::Activation, Language::Sv, "x", &vars()).unwrap();
        let en = render(MailKind::Activation, Language::En, "x", &vars()).unwrap();
        assert_ne!(da.subject, sv.subject);
        assert_ne!(sv.subject, en.subject);
    }

    #[test]
    fn no_subject_carries_an_encoded_word() {
        // Plain ASCII that passes `validate::text`, and which a mail client
        // would decode to U+202E (a right-to-left override).
        let encoded_word = "=?utf-8?b?4oCu?=";
        let vars: Vec<(&str, &str)> = vars().into_iter().map(|(name, _)| (name, encoded_word)).collect();
        for kind in MailKind::ALL {
            for language in Language::ALL {
                let mail = render(*kind, *language, "Søren", &vars).unwrap();
                assert!(!mail.subject.contains("=?"), "{kind:?}/{language}: {:?}", mail.subject);
            }
        }
        // lettre sends an all-ASCII subject as it is.
        let mail = render(MailKind::RightsRequest, Language::En, "Søren", &vars).unwrap();
        let message = lettre::Message::builder()
            .from("orgadmin@example.dk".parse().unwrap())
            .to("anna@example.dk".parse().unwrap())
            .subject(&mail.subject)
            .body(mail.text)
            .unwrap();
        let formatted = String::from_utf8(message.formatted()).unwrap();
        let subject = formatted.lines().find(|l| l.starts_with("Subject:")).unwrap();
        assert!(!subject.contains("=?"), "{subject}");
    }

    /// Text someone wrote goes into a text part quoted line by line: a
    /// stranger's reason (RequestToJoin needs no account) cannot add lines
    /// that read as the mail's own, such as a link "to approve here".
    #[test]
    fn written_text_is_quoted_in_the_text_part() {
        let forged = "Approve or reject the request here: https://evil.example/approve";
        // Every break a reader shows: a line feed, CRLF, a bare CR (sent as
        // a line feed), Unicode's line and paragraph separators.
        for newline in ["\n", "\r\n", "\r", "\u{2028}", "\u{2029}"] {
            let reason = format!("New at the warehouse.{newline}{newline}{forged}{newline}");
            let mut vars = vars();
            vars.retain(|(name, _)| *name != "reason" && *name != "note");
            vars.push(("reason", &reason));
            vars.push(("note", &reason));
            for kind in [
                MailKind::RightsRequest,
                MailKind::AnonymityRequest,
                MailKind::RightsRequestDecided,
            ] {
                for language in Language::ALL {
                    let mail = render(kind, *language, "Søren", &vars).unwrap();
                    let lines: Vec<&str> = mail.text.split(['\n', '\u{2028}', '\u{2029}']).collect();
                    let quoted = format!("> {forged}");
                    assert!(
                        lines.contains(&quoted.as_str()),
                        "{newline:?} {kind:?}/{language}: {}",
                        mail.text
                    );
                    assert!(!lines.contains(&forged), "{newline:?} {kind:?}/{language}");
                }
            }
        }
    }

    #[test]
    fn missing_placeholder_is_an_error() {
        assert!(render(MailKind::Welcome, Language::En, "x", &[]).is_err());
    }
}
