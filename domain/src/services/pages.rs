//! What the self-service pages need to know before the person acts: whom a
//! link belongs to (their language and first name, and whether they prove
//! themselves with a CPR number or a birth date). Read-only: the actions
//! themselves are the RPCs' own domain functions.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::Domain;
use crate::error::DomainResult;
use crate::model::*;
use crate::persistence::entities::{activation_secret, user};
use crate::persistence::mapping::parse;
use crate::secrets::token_hash;
use crate::services::activation::{KIND_LINK, KIND_RESET};

/// How a person proves who they are at activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofKind {
    Cpr,
    BirthDate,
}

/// The person a live link belongs to, as much as its page shows.
#[derive(Debug, Clone)]
pub struct LinkHolder {
    pub first_name: String,
    pub language: Language,
    pub proof: ProofKind,
    /// The shortest password this person may choose.
    pub min_password_chars: usize,
    /// Their e-mail address and username, which a password may not contain.
    pub login_ids: Vec<String>,
}

/// Which link a page serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Activation,
    PasswordReset,
}

impl Domain {
    /// The holder of a live (unused, unexpired, not replaced) link of
    /// `kind`; `None` for any other token.
    pub async fn link_holder(&self, kind: LinkKind, token: &str) -> DomainResult<Option<LinkHolder>> {
        let kind = match kind {
            LinkKind::Activation => KIND_LINK,
            LinkKind::PasswordReset => KIND_RESET,
        };
        let Some(secret) = activation_secret::Entity::find()
            .filter(activation_secret::Column::SecretHash.eq(token_hash(token.trim())))
            .filter(activation_secret::Column::Kind.eq(kind))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        if self.ensure_secret_usable(&secret, now_millis()).is_err() {
            return Ok(None);
        }
        let Some(person) = user::Entity::find_by_id(secret.user_id).one(&self.db).await? else {
            return Ok(None);
        };
        let min_password_chars = self.min_password_chars(&self.db, &person).await?;
        Ok(Some(LinkHolder {
            min_password_chars,
            login_ids: [Some(person.email.clone()), person.username.clone()]
                .into_iter()
                .flatten()
                .collect(),
            first_name: person.first_name,
            language: parse(&person.language)?,
            proof: if person.cpr_hash.is_some() {
                ProofKind::Cpr
            } else {
                ProofKind::BirthDate
            },
        }))
    }

    /// The caller's address for history and attempt limits. One rule for
    /// the RPCs and the pages.
    ///
    /// With a trusted proxy header configured, `trusted_header_last_line`
    /// is its last line as sent (bytes: a client can send any) and the
    /// address is its last entry, the one the proxy itself added: a proxy
    /// appends to the line it got (Envoy, nginx) or adds a line of its own
    /// (HAProxy), and everything before that is the client's to choose.
    /// An entry that is no IP address (a client's stray byte before the
    /// proxy's comma, a header the proxy did not set) gives the TCP peer,
    /// the proxy: limited with everyone else who comes that way, never
    /// unlimited, and never a name the client made up in history.
    pub fn peer_address(
        &self,
        trusted_header_last_line: Option<&[u8]>,
        remote: Option<std::net::IpAddr>,
    ) -> Option<String> {
        let from_proxy = (!self.settings.trusted_peer_header.is_empty())
            .then_some(trusted_header_last_line)
            .flatten()
            .and_then(last_address);
        from_proxy.or(remote).map(|addr| addr.to_string())
    }
}

/// The last comma-separated entry of a forwarding header's line, if it is
/// an IP address (`192.0.2.1`, `2001:db8::1`, also with a port as some
/// proxies write it: `192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn last_address(line: &[u8]) -> Option<std::net::IpAddr> {
    let entry = line.rsplit(|b| *b == b',').next()?;
    let entry = std::str::from_utf8(entry).ok()?.trim();
    entry
        .parse::<std::net::IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::last_address;

    #[test]
    fn the_proxys_entry_is_the_last_and_must_be_an_address() {
        let ip = |s: &str| Some(s.parse().unwrap());
        assert_eq!(last_address(b"198.51.100.7"), ip("198.51.100.7"));
        assert_eq!(last_address(b"203.0.113.9, 198.51.100.7"), ip("198.51.100.7"));
        assert_eq!(last_address(b"1.2.3.4\xff, 198.51.100.7"), ip("198.51.100.7"));
        assert_eq!(last_address(b"2001:db8::1"), ip("2001:db8::1"));
        assert_eq!(last_address(b"[2001:db8::1]:4711"), ip("2001:db8::1"));
        assert_eq!(last_address(b"198.51.100.7:4711"), ip("198.51.100.7"));
        assert_eq!(last_address(b"198.51.100.7, evil"), None);
        assert_eq!(last_address(b"1.2.3.\xff"), None);
        assert_eq!(last_address(b""), None);
    }
}
