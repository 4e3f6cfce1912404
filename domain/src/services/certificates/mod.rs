//! Certificates (R-CERT): an inventory of every certificate from its order
//! on, issued by the internal CA (`crate::ca`).
//!
//! - `lifecycle`: order, pickup (issue), renew, delete an order, revoke.
//! - `csr`: reading and checking a holder's CSR.
//! - `queries`: get, search, export.
//! - `publication`: the CRL, status for OCSP, expiry and its warnings.

mod csr;
mod lifecycle;
mod ocsp;
mod publication;
mod queries;
mod signing;

pub use csr::{HolderKey, check_csr};
pub(crate) use lifecycle::HolderEnding;
pub use lifecycle::{CertificateOrder, IssuedCertificate};
pub use publication::{CertificateStatus, PublishedCrl};
pub use queries::{CertificateQuery, ExportFormat};

use uuid::Uuid;

use crate::error::{DomainError, DomainResult, Reason};
use crate::model::{CertificateKind, Millis};
use crate::persistence::entities::certificate;
use crate::persistence::mapping::parse;

crate::string_enum_pub!(
    /// Where a certificate is in its lifecycle (R-CERT-4). Only ORDERED
    /// moves to ISSUED; REVOKED, SUPERSEDED and EXPIRED are final.
    CertificateState {
        Ordered => "ORDERED",
        Issued => "ISSUED",
        Revoked => "REVOKED",
        Superseded => "SUPERSEDED",
        Expired => "EXPIRED",
    }
);

crate::string_enum_pub!(
    /// What a certificate may be used for: the first three for user
    /// certificates (R-CERT-2), the last three for organisation and system
    /// certificates (R-CERT-3).
    CertificateUsage {
        Authentication => "AUTHENTICATION",
        Signing => "SIGNING",
        EmailEncryption => "EMAIL_ENCRYPTION",
        ServiceAccess => "SERVICE_ACCESS",
        Encryption => "ENCRYPTION",
        Sealing => "SEALING",
    }
);

crate::string_enum_pub!(
    /// Why a certificate was revoked: the Danish state CA's list, plus
    /// SUPERSEDED for a certificate its renewal replaced.
    RevocationReason {
        ContentIncorrect => "CONTENT_INCORRECT",
        KeyAccessLost => "KEY_ACCESS_LOST",
        KeyCompromised => "KEY_COMPROMISED",
        KeyDestroyed => "KEY_DESTROYED",
        HolderLeft => "HOLDER_LEFT",
        Superseded => "SUPERSEDED",
    }
);

impl RevocationReason {
    /// The RFC 5280 reason code a CRL and OCSP give.
    /// - content no longer correct and holder left: affiliationChanged, "the
    ///   subject's name or other information in the certificate has been
    ///   modified";
    /// - key access lost and key destroyed: cessationOfOperation, the
    ///   certificate is no longer used, without suspicion;
    /// - suspected compromise: keyCompromise.
    pub fn rfc5280(self) -> rcgen::RevocationReason {
        match self {
            Self::ContentIncorrect | Self::HolderLeft => rcgen::RevocationReason::AffiliationChanged,
            Self::KeyAccessLost | Self::KeyDestroyed => rcgen::RevocationReason::CessationOfOperation,
            Self::KeyCompromised => rcgen::RevocationReason::KeyCompromise,
            Self::Superseded => rcgen::RevocationReason::Superseded,
        }
    }
}

impl CertificateUsage {
    /// Whether a certificate of `kind` may carry this usage.
    pub fn fits(self, kind: CertificateKind) -> bool {
        let for_users = matches!(self, Self::Authentication | Self::Signing | Self::EmailEncryption);
        for_users == (kind == CertificateKind::Employee)
    }

    /// Whether the usage needs a key that can encrypt (not Ed25519).
    pub fn encrypts(self) -> bool {
        matches!(self, Self::EmailEncryption | Self::Encryption)
    }
}

/// Tunables of the certificate lifecycle, from configuration.
#[derive(Debug, Clone)]
pub struct CertificateSettings {
    /// Validity per kind (R-CERT-4: three years by default).
    pub employee_validity: Validity,
    pub organisation_validity: Validity,
    pub system_validity: Validity,
    /// How long a pickup token works.
    pub pickup_ttl_ms: i64,
    /// The pickup link in the mail; `{token}` is replaced by the token.
    pub pickup_url_template: String,
    /// A CRL's nextUpdate after its thisUpdate; the worker re-signs it when
    /// half of that is left.
    pub crl_validity_ms: i64,
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// How long a new certificate is valid. Years are calendar years: a
/// three-year certificate issued on 10 March ends on 10 March three years
/// on. Counted as 3 × 365 days, one issued before a 29 February ended the
/// day before its anniversary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Days(u32),
    Years(u32),
}

impl Validity {
    /// When a certificate valid from `from` ends. A 29 February start ends
    /// on 28 February of a year without one (never in March: the holder was
    /// told "three years", not a day more).
    pub fn ends(self, from: crate::model::Millis) -> crate::model::Millis {
        match self {
            Validity::Days(days) => from + i64::from(days) * DAY_MS,
            Validity::Years(years) => chrono::DateTime::from_timestamp_millis(from)
                .and_then(|start| start.checked_add_months(chrono::Months::new(12 * years)))
                .map(|end| end.timestamp_millis())
                .unwrap_or(from + i64::from(years) * 365 * DAY_MS),
        }
    }
}

impl Default for CertificateSettings {
    fn default() -> Self {
        Self {
            employee_validity: Validity::Years(3),
            organisation_validity: Validity::Years(3),
            system_validity: Validity::Years(3),
            pickup_ttl_ms: 14 * DAY_MS,
            pickup_url_template: "http://localhost:8080/certificates/pickup?token={token}".into(),
            crl_validity_ms: DAY_MS,
        }
    }
}

impl CertificateSettings {
    pub fn validity(&self, kind: CertificateKind) -> Validity {
        match kind {
            CertificateKind::Employee => self.employee_validity,
            CertificateKind::Organisation => self.organisation_validity,
            CertificateKind::System => self.system_validity,
        }
    }
}

/// A certificate as the API shows it.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub kind: CertificateKind,
    pub state: CertificateState,
    pub holder_id: Option<Uuid>,
    pub contact_id: Uuid,
    pub label: Option<String>,
    pub usages: Vec<CertificateUsage>,
    pub email: Option<String>,
    pub renews_id: Option<Uuid>,
    /// Lower-case hex.
    pub serial: Option<String>,
    pub subject: Option<String>,
    pub key_algorithm: Option<String>,
    pub not_before: Option<Millis>,
    pub not_after: Option<Millis>,
    pub pickup_expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
    pub revocation_reason: Option<RevocationReason>,
    /// The certificate as PEM, once issued.
    pub pem: Option<String>,
    pub version: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

pub(crate) fn usages_to_text(usages: &[CertificateUsage]) -> String {
    usages.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(",")
}

fn usages_from_text(text: &str) -> DomainResult<Vec<CertificateUsage>> {
    text.split(',').filter(|s| !s.is_empty()).map(parse).collect()
}

pub(crate) fn to_certificate(row: certificate::Model) -> DomainResult<Certificate> {
    Ok(Certificate {
        id: row.id,
        organisation_id: row.organisation_id,
        kind: parse(&row.kind)?,
        state: parse(&row.state)?,
        holder_id: row.holder_id,
        contact_id: row.contact_id,
        label: row.label,
        usages: usages_from_text(&row.usages)?,
        email: row.email,
        renews_id: row.renews_id,
        serial: row.serial,
        subject: row.subject,
        key_algorithm: row.key_algorithm,
        not_before: row.not_before,
        not_after: row.not_after,
        pickup_expires_at: row.pickup_expires_at,
        revoked_at: row.revoked_at,
        revocation_reason: row.revocation_reason.as_deref().map(parse).transpose()?,
        pem: row.der.as_deref().map(|der| crate::ca::pem("CERTIFICATE", der)),
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// A serial number as people type it (`0A:1B…`, `0x0a1b…`, upper case) in
/// the stored form: lower-case hex without separators or leading zeros.
pub fn canonical_serial(text: &str) -> Result<String, String> {
    let digits: String = text
        .trim()
        .trim_start_matches("0x")
        .trim_start_matches("0X")
        .chars()
        .filter(|c| *c != ':' && *c != ' ')
        .collect::<String>()
        .to_ascii_lowercase();
    if digits.is_empty() || digits.len() > 40 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("must be a serial number in hexadecimal (at most 20 bytes)".into());
    }
    let trimmed = digits.trim_start_matches('0');
    Ok(if trimmed.is_empty() { "0".into() } else { trimmed.into() })
}

impl crate::Domain {
    /// The certificate service needs a CA; without one every call says so.
    pub(crate) fn ca(&self) -> DomainResult<&crate::ca::CertificateAuthority> {
        self.ca.as_deref().ok_or_else(|| {
            DomainError::precondition(
                Reason::CaNotConfigured,
                "no certificate authority is configured (ORGADMIN_CA_KEY_FILE and ORGADMIN_CA_CERTIFICATE_FILE)",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_read_as_typed() {
        assert_eq!(canonical_serial("0A:1B:ff").unwrap(), "a1bff");
        assert_eq!(canonical_serial("0x00ABC").unwrap(), "abc");
        assert!(canonical_serial("xyz").is_err());
        assert!(canonical_serial("").is_err());
    }

    #[test]
    fn usages_fit_their_kind() {
        assert!(CertificateUsage::Signing.fits(CertificateKind::Employee));
        assert!(!CertificateUsage::Signing.fits(CertificateKind::Organisation));
        assert!(CertificateUsage::Sealing.fits(CertificateKind::System));
        assert!(!CertificateUsage::Sealing.fits(CertificateKind::Employee));
    }
}

#[cfg(test)]
mod validity_tests {
    use super::*;

    fn at(text: &str) -> crate::model::Millis {
        chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
    }

    #[test]
    fn three_years_end_on_the_anniversary_across_a_leap_day() {
        let three = Validity::Years(3);
        assert_eq!(three.ends(at("2027-03-10T14:00:00Z")), at("2030-03-10T14:00:00Z"));
        // 2028 has a 29 February: 3 × 365 days ended on 9 March 2030.
        assert_eq!(
            Validity::Days(3 * 365).ends(at("2027-03-10T14:00:00Z")),
            at("2030-03-09T14:00:00Z")
        );
        // Started on a 29 February: the last day of February.
        assert_eq!(three.ends(at("2028-02-29T09:00:00Z")), at("2031-02-28T09:00:00Z"));
        assert_eq!(
            Validity::Days(30).ends(at("2027-01-31T00:00:00Z")),
            at("2027-03-02T00:00:00Z")
        );
    }
}
