//! SMTP connections opened with TCP_NODELAY, pooled.
//!
//! lettre 0.11.23 writes a message's body and its closing `\r\n.\r\n` as two
//! writes on a socket with Nagle's algorithm on: the five closing bytes wait
//! for the server to acknowledge the body, and servers delay that ACK (40 ms
//! on Linux). Measured here: ~70 ms a mail on one connection whatever the
//! server does, 50 mails/s with four. (lettre fixed it upstream in PR #1159;
//! no release has it yet.) So for `smtp://` the worker opens the TCP
//! connection itself, turns Nagle off, and hands the socket to lettre's
//! connection, which does the SMTP: EHLO, STARTTLS, AUTH; the mail's own
//! commands the worker gives one by one, so that it knows which of them a
//! refusal answers (see [`classify`]).
//!
//! `smtp://[user:password@]host[:port][?tls=required|opportunistic]`; port 25
//! by default; without `tls` the connection stays plain (a relay on the same
//! network or a sidecar). `smtps://[user:password@]host[:port]`: TLS from the
//! first byte, port 465 by default (lettre opens that connection).
//!
//! Every wait on the server is bounded. lettre's own timeout covers only the
//! TCP connect, and its `abort` says QUIT and waits for the answer: a server
//! that accepts connections and then stops answering (a hung process, a
//! half-dead load balancer) held a send, and with it the whole outbox loop,
//! forever. A connection that did not answer in time is dropped without
//! QUIT: it would not answer that either, and a late reply to the mail must
//! not be read as QUIT's.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use orgadmin_domain::services::outbox::Failure;
use tokio::net::TcpStream;

/// Idle connections older than this are closed rather than reused (servers
/// drop idle clients after a minute or so).
const MAX_IDLE: Duration = Duration::from_secs(50);
/// Idle connections older than this are checked with NOOP before use.
const CHECK_AFTER: Duration = Duration::from_secs(2);
/// How long that NOOP, and QUIT at shutdown, may take.
const SHORT_ANSWER: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, PartialEq, Debug)]
enum StartTls {
    No,
    Opportunistic,
    Required,
}

pub struct SmtpPool {
    host: String,
    port: u16,
    /// `smtps://`: TLS from the first byte.
    implicit_tls: bool,
    starttls: StartTls,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

pub type SendError = (String, Failure);

fn transient(what: &str, e: impl std::fmt::Display) -> SendError {
    (format!("{what}: {e}"), Failure::Transient)
}

impl SmtpPool {
    pub fn from_url(smtp_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let url = url::Url::parse(smtp_url).map_err(|e| anyhow::anyhow!("SMTP_URL is not a URL: {e}"))?;
        let implicit_tls = match url.scheme() {
            "smtp" => false,
            "smtps" => true,
            other => anyhow::bail!("SMTP_URL: the scheme is smtp:// or smtps://, not {other}://"),
        };
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("SMTP_URL names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let mut starttls = StartTls::No;
        for (key, value) in url.query_pairs() {
            anyhow::ensure!(
                !implicit_tls,
                "SMTP_URL: smtps:// is TLS from the first byte and takes no options (tls= is for smtp://)"
            );
            match (key.as_ref(), value.as_ref()) {
                ("tls", "required") => starttls = StartTls::Required,
                ("tls", "opportunistic") => starttls = StartTls::Opportunistic,
                ("tls", "none") => starttls = StartTls::No,
                _ => anyhow::bail!("SMTP_URL: unknown option {key}={value} (known: tls=required|opportunistic|none)"),
            }
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let credentials = (!url.username().is_empty())
            .then(|| Credentials::new(decode(url.username()), decode(url.password().unwrap_or_default())));
        Ok(Self {
            port: url.port().unwrap_or(if implicit_tls { 465 } else { 25 }),
            implicit_tls,
            host,
            starttls,
            credentials,
            hello: ClientId::default(),
            timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The time limit of each step with the server.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A new connection, greeted, secured and logged in within the timeout.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        tokio::time::timeout(self.timeout, self.open())
            .await
            .map_err(|_| transient("connecting to the SMTP server", "no greeting, TLS or login in time"))?
    }

    /// Every refusal while connecting (greeting, EHLO, STARTTLS, AUTH) is
    /// about the server or our settings, not about the mail: transient, even
    /// a 5xx. A relay that answers 554 to new connections while busy, or a
    /// rotated password (535), must not park every mail of the batch after
    /// one try; the mails wait until the server or the settings are right.
    async fn open(&self) -> Result<AsyncSmtpConnection, SendError> {
        let mut conn = if self.implicit_tls {
            let tls = TlsParameters::new(self.host.clone()).map_err(|e| transient("TLS parameters", e))?;
            AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(self.timeout),
                &self.hello,
                Some(tls),
                None,
            )
            .await
            .map_err(|e| transient("connecting to the SMTP server", e))?
        } else {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| transient("connecting to the SMTP server", e))?;
            tcp.set_nodelay(true).map_err(|e| transient("setting TCP_NODELAY", e))?;
            let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                .await
                .map_err(|e| transient("greeting the SMTP server", e))?;
            let wants_tls = match self.starttls {
                StartTls::No => false,
                StartTls::Opportunistic => conn.can_starttls(),
                StartTls::Required => true,
            };
            if wants_tls {
                let tls = TlsParameters::new(self.host.clone()).map_err(|e| transient("TLS parameters", e))?;
                conn.starttls(tls, &self.hello)
                    .await
                    .map_err(|e| transient("STARTTLS with the SMTP server", e))?;
            }
            conn
        };
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|e| transient("logging in to the SMTP server", e))?;
        }
        Ok(conn)
    }

    /// A pooled connection that still answers, or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let next = self.idle.lock().unwrap().pop();
            let Some((mut conn, since)) = next else {
                return self.connect().await;
            };
            let idle_for = since.elapsed();
            let answers = idle_for <= CHECK_AFTER
                || (idle_for <= MAX_IDLE
                    && tokio::time::timeout(SHORT_ANSWER, conn.test_connected())
                        .await
                        .unwrap_or(false));
            if answers {
                return Ok(conn);
            }
            // Dropped, not QUIT: see the module's comment.
            drop(conn);
        }
    }

    pub async fn send(&self, envelope: &Envelope, body: &[u8]) -> Result<(), SendError> {
        let mut conn = self.checkout().await?;
        match tokio::time::timeout(self.timeout, transact(&mut conn, envelope, body)).await {
            Ok(Ok(())) => {
                self.idle.lock().unwrap().push((conn, Instant::now()));
                Ok(())
            }
            // `transact` ends the connection itself on a refusal (its QUIT
            // is inside this timeout); it is not reused.
            Ok(Err(e)) => Err(e),
            // Dropped, not QUIT: see the module's comment.
            Err(_) => Err(transient("SMTP", "the server did not answer in time")),
        }
    }

    /// Says QUIT on every idle connection (at shutdown), waiting a little
    /// for each answer.
    pub async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap());
        for (mut conn, _) in idle {
            let _ = tokio::time::timeout(SHORT_ANSWER, conn.quit()).await;
        }
    }
}

/// The command of a mail's transaction a reply answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// MAIL FROM: names nothing but our sender.
    Sender,
    /// RCPT TO: names this mail's recipient.
    Recipient,
    /// DATA, and the end of the message: this mail's content.
    Content,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sender => "MAIL FROM",
            Self::Recipient => "RCPT TO",
            Self::Content => "DATA",
        })
    }
}

/// One mail over `conn`: what lettre's `send` does (its SMTPUTF8 and
/// 8BITMIME checks, MAIL, RCPT, DATA, the message, QUIT after a refusal),
/// one command at a time, because lettre's error does not say which
/// command was refused, and that decides what the refusal is about (see
/// [`classify`]). Revisit when lettre is upgraded: its `send` may learn
/// something this does not.
async fn transact(conn: &mut AsyncSmtpConnection, envelope: &Envelope, body: &[u8]) -> Result<(), SendError> {
    let mut options = Vec::new();
    // An address with a UTF-8 local part (the validator allows letters of
    // any script) to a relay without SMTPUTF8, or a body that needs
    // 8BITMIME from a relay without it: this mail cannot pass this relay,
    // today or in two days (`mail_retry_hours`), while every other mail
    // can. Parked at once, as lettre's own check did.
    let mut addresses = envelope.from().into_iter().chain(envelope.to());
    if addresses.any(|address| !AsRef::<str>::as_ref(address).is_ascii()) {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err((
                "an address of this mail needs SMTPUTF8, which the SMTP server does not offer".into(),
                Failure::Permanent,
            ));
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !body.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return Err((
                "this mail needs 8BITMIME, which the SMTP server does not offer".into(),
                Failure::Permanent,
            ));
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let replies: Result<_, (Step, lettre::transport::smtp::Error)> = async {
        conn.command(Mail::new(envelope.from().cloned(), options))
            .await
            .map_err(|e| (Step::Sender, e))?;
        for recipient in envelope.to() {
            conn.command(Rcpt::new(recipient.clone(), Vec::new()))
                .await
                .map_err(|e| (Step::Recipient, e))?;
        }
        conn.command(Data).await.map_err(|e| (Step::Content, e))?;
        conn.message(body).await.map_err(|e| (Step::Content, e))
    }
    .await;
    if let Err((step, e)) = replies {
        conn.abort().await;
        return Err(classify(step, e));
    }
    Ok(())
}

/// What a refusal during a mail's transaction means for the mail. Only a
/// permanent refusal (5xx) about this mail itself, its recipient or its
/// content, parks it at once: trying again cannot help, and the other mails
/// go through. A permanent refusal about the relay or our settings (our
/// login, TLS, our sender address, a sending quota, a policy about us) is
/// the same for every mail: parked at once, every mail of the batch and
/// every later one would be FAILED after one try, and RetryMail puts them
/// back one at a time, so in effect they were lost. Those wait and are
/// tried again with back-off, like a 4xx, until someone fixes the relay or
/// the settings, and are parked only as a mail failing for a passing reason
/// is (`MailRetry::parks`). The refusals while connecting are transient for
/// the same reason (see `SmtpPool::open`).
pub fn classify(step: Step, e: lettre::transport::smtp::Error) -> SendError {
    let about_this_mail = match e.status() {
        Some(code) if e.is_permanent() => {
            // The reply's text, after its code: lettre keeps it as the source.
            let text = std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_default();
            refusal_names_the_mail(step, code.into(), EnhancedCode::leading(&text))
        }
        // A 4xx, a reply that does not parse, a broken connection: may pass.
        _ => false,
    };
    let failure = if about_this_mail {
        Failure::Permanent
    } else {
        Failure::Transient
    };
    (format!("{step}: {e}"), failure)
}

/// An enhanced status code (RFC 3463, `class.subject.detail`), without its
/// class (the reply code's first digit says as much).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EnhancedCode {
    subject: u16,
    detail: u16,
}

impl EnhancedCode {
    /// The code a reply's text starts with (`5.7.1 relaying denied`), if any.
    fn leading(text: &str) -> Option<Self> {
        let mut parts = text.split_whitespace().next()?.split('.');
        let class = parts.next()?;
        let mut number = || {
            parts
                .next()
                .filter(|digits| (1..=3).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse().ok())
        };
        let (subject, detail) = (number()?, number()?);
        (matches!(class, "2" | "4" | "5") && parts.next().is_none()).then_some(Self { subject, detail })
    }
}

/// Whether a permanent refusal (`reply`, 5xx) is about this mail rather
/// than about the relay or us. When unsure, it is not: a mail wrongly
/// retried is parked after `mail_retry_hours`, while a relay's refusal
/// wrongly taken for the mail's parks every mail at once.
fn refusal_names_the_mail(step: Step, reply: u16, enhanced: Option<EnhancedCode>) -> bool {
    // MAIL FROM names nothing but our sender, the same in every mail: a
    // login the relay wants first (530), a STARTTLS it wants first, a
    // sender address it does not let us use, a quota.
    if step == Step::Sender {
        return false;
    }
    match enhanced {
        // X.1.7 and X.1.8: the sender's address, which a relay may refuse
        // only at RCPT (Postfix does by default).
        Some(EnhancedCode {
            subject: 1,
            detail: 7 | 8,
        }) => false,
        // X.1: the recipient's address (5.1.1 no such user, 5.1.3 bad
        // syntax, 5.1.2 no such domain); X.2: their mailbox (disabled,
        // full, this mail over its limit); X.6: the content; X.3.4: this
        // mail too big.
        Some(EnhancedCode { subject: 1 | 2 | 6, .. } | EnhancedCode { subject: 3, detail: 4 }) => true,
        // X.0: "other", no more than the reply code says.
        Some(EnhancedCode { subject: 0, .. }) | None => !matches!(
            reply,
            // Command not recognised, not implemented, out of sequence,
            // parameter not implemented: our conversation, not the mail.
            500 | 502 | 503 | 504
                // The relay accepts no mail (RFC 7504).
                | 521
                // Authentication required, or refused.
                | 530 | 535
                // "Transaction failed": relays give it for a relay we may
                // not use, or a sender address not verified with them.
                | 554
        ),
        // X.7: security and policy (a login required, relaying denied, a
        // sender not ours, DMARC); X.3 but X.3.4: the relay's mail system
        // (full, not accepting mail); X.4: network and routing, and the
        // sending quota some relays give as 5.4.5; X.5: the protocol.
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(url: &str) -> anyhow::Result<SmtpPool> {
        SmtpPool::from_url(url, Duration::from_secs(1))
    }

    #[test]
    fn url_gives_host_port_tls_and_credentials() {
        let plain = pool("smtp://relay.example:2525").unwrap();
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.starttls),
            ("relay.example", 2525, StartTls::No)
        );
        assert!(plain.credentials.is_none());
        let tls = pool("smtp://mailer%40firma.dk:p%C3%A6ss%3Aword@relay.example?tls=required").unwrap();
        assert_eq!((tls.port, tls.starttls), (25, StartTls::Required));
        assert_eq!(
            tls.credentials.unwrap(),
            Credentials::new("mailer@firma.dk".into(), "pæss:word".into())
        );
        assert_eq!(pool("smtp://[::1]:25?tls=opportunistic").unwrap().host, "::1");
        let implicit = pool("smtps://mailer:secret@relay.example").unwrap();
        assert_eq!((implicit.port, implicit.implicit_tls), (465, true));
        assert!(implicit.credentials.is_some());
        assert_eq!(pool("smtps://relay.example:2465").unwrap().port, 2465);
    }

    /// `reply text` as a relay writes it, at `step`.
    fn names_the_mail(step: Step, reply: &str) -> bool {
        let (code, text) = reply.split_once(' ').unwrap();
        refusal_names_the_mail(step, code.parse().unwrap(), EnhancedCode::leading(text))
    }

    #[test]
    fn only_a_refusal_of_this_mail_is_permanent() {
        use Step::*;
        for (step, reply) in [
            (Recipient, "550 5.1.1 <x@firma.dk>: user unknown"),
            (Recipient, "501 5.1.3 bad recipient address syntax"),
            (Recipient, "550 5.2.1 mailbox disabled"),
            (Content, "552 5.3.4 message too big"),
            (Content, "554 5.6.0 message content rejected"),
            (Recipient, "550 no such user"),
            (Recipient, "553 mailbox name not allowed"),
            (Recipient, "556 5.1.10 domain does not accept mail"),
            (Content, "550 5.0.0 message rejected"),
        ] {
            assert!(names_the_mail(step, reply), "{step}: {reply}");
        }
        for (step, reply) in [
            (Sender, "530 5.7.0 Authentication required"),
            (Sender, "530 Must issue a STARTTLS command first"),
            (Sender, "550 sender rejected"),
            (Sender, "553 5.1.1 no such user"),
            (Recipient, "550 5.7.1 sender not owned"),
            (
                Recipient,
                "553 5.7.1 <x@firma.dk>: Sender address rejected: not owned by user",
            ),
            (Recipient, "554 5.7.1 <x@firma.dk>: Relay access denied"),
            (
                Recipient,
                "553 5.1.8 <noreply@firma.dk>: Sender address rejected: Domain not found",
            ),
            (Recipient, "550 5.4.5 Daily sending quota exceeded"),
            (Content, "554 5.7.0 rejected by policy"),
            (
                Content,
                "550 5.7.26 unauthenticated mail from firma.dk is not accepted due to DMARC",
            ),
            (Content, "554 Message rejected: Email address is not verified"),
            (Recipient, "530 Authentication required"),
            (Recipient, "535 5.7.8 authentication failed"),
            (Recipient, "503 bad sequence of commands"),
            (Content, "552 5.3.1 mail system full"),
        ] {
            assert!(!names_the_mail(step, reply), "{step}: {reply}");
        }
    }

    #[test]
    fn an_enhanced_code_is_read_from_the_start_of_the_text() {
        assert_eq!(
            EnhancedCode::leading("5.7.1 relaying denied"),
            Some(EnhancedCode { subject: 7, detail: 1 })
        );
        assert_eq!(
            EnhancedCode::leading("5.1.10 null MX"),
            Some(EnhancedCode { subject: 1, detail: 10 })
        );
        for text in [
            "",
            "relaying denied",
            "5.7 denied",
            "3.1.1 x",
            "5.7.1.2 x",
            "5.a.1 x",
            "5.1.1234 x",
        ] {
            assert_eq!(EnhancedCode::leading(text), None, "{text:?}");
        }
    }

    #[test]
    fn url_mistakes_are_named() {
        let unknown = pool("smtp://relay.example?tls=sometimes").err().unwrap().to_string();
        assert!(unknown.contains("tls=sometimes"), "{unknown}");
        assert!(pool("smtp://").is_err());
        let scheme = pool("imap://relay.example").err().unwrap().to_string();
        assert!(scheme.contains("smtp:// or smtps://"), "{scheme}");
        let option = pool("smtps://relay.example?tls=required").err().unwrap().to_string();
        assert!(option.contains("takes no options"), "{option}");
    }
}
