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

    /// The caller's address for history and attempt limits: the last entry
    /// of the configured trusted proxy header when one is configured (the
    /// proxy appends the address it saw), else the TCP peer. One rule for
    /// the RPCs and the pages.
    pub fn peer_address(&self, trusted_header_value: Option<&str>, remote: Option<std::net::IpAddr>) -> Option<String> {
        if !self.settings.trusted_peer_header.is_empty() {
            return trusted_header_value
                .and_then(|v| v.rsplit(',').next())
                .map(|v| v.trim().chars().take(64).collect());
        }
        remote.map(|addr| addr.to_string())
    }
}
