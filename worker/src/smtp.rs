//! SMTP connections opened with TCP_NODELAY, pooled.
//!
//! lettre 0.11.23 writes a message's body and its closing `\r\n.\r\n` as two
//! writes on a socket with Nagle's algorithm on: the five closing bytes wait
//! for the server to acknowledge the body, and servers delay that ACK (40 ms
//! on Linux). Measured here: ~70 ms a mail on one connection whatever the
//! server does, 50 mails/s with four. (lettre fixed it upstream in PR #1159;
//! no release has it yet.) So for `smtp://` the worker opens the TCP
//! connection itself, turns Nagle off, and hands the socket to lettre's
//! connection, which does the SMTP: EHLO, STARTTLS, AUTH, the mail.
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
use lettre::transport::smtp::extension::ClientId;
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
        match tokio::time::timeout(self.timeout, conn.send(envelope, body)).await {
            Ok(Ok(_)) => {
                self.idle.lock().unwrap().push((conn, Instant::now()));
                Ok(())
            }
            // lettre ends the connection itself on an error (its QUIT is
            // inside this timeout); it is not reused.
            Ok(Err(e)) => Err(classify(e)),
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

/// 5xx: the server said no for good; anything else may pass later. So
/// does lettre when it refuses to send this mail to this server (a client
/// error at `send`: an address with a UTF-8 local part, which the validator
/// allows, to a relay without SMTPUTF8): retried, it failed the same way for
/// `mail_retry_hours` before it was parked.
pub fn classify(e: lettre::transport::smtp::Error) -> SendError {
    let failure = if e.is_permanent() || e.is_client() {
        Failure::Permanent
    } else {
        Failure::Transient
    };
    (e.to_string(), failure)
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
