//! The certificate authority (R-CERT-1): its key and certificate, and the
//! two things it signs, holders' certificates and CRLs. No database and no
//! rules here: `services::certificates` decides what goes into a certificate;
//! this module only turns that into X.509 with rcgen.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use time::OffsetDateTime;

use crate::model::Millis;

/// The issuing CA: its signing key and certificate, and the chain above it.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
    /// The CA certificate and, when it is an intermediate, the certificates
    /// above it up to the root: what a holder installs beside their own.
    chain_pem: String,
    crl_url: Option<String>,
    /// The OCSP responder named in every certificate (Authority Information
    /// Access).
    ocsp_url: Option<String>,
    /// The CA certificate's subject (DER) and public key (the BIT STRING's
    /// bytes): what an OCSP request's CertID names it by, hashed.
    subject_der: Vec<u8>,
    public_key_bits: Vec<u8>,
    /// The end of the CA certificate's validity: no certificate it signs
    /// may outlive it (a relying party would reject it from then on).
    not_after: Millis,
    /// How the CRL names its issuer's key (Authority Key Identifier): the
    /// CA certificate's own Subject Key Identifier when it has one.
    crl_key_identifier: KeyIdMethod,
}

/// The key never shows: not in logs, not in panics.
impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("certificate_pem", &"…")
            .field("crl_url", &self.crl_url)
            .finish_non_exhaustive()
    }
}

/// Where the CA comes from, as configuration gives it.
#[derive(Debug, Clone, Default)]
pub struct CaSource {
    /// PEM of the issuing key (PKCS#8).
    pub key_file: String,
    /// PEM of the issuing certificate.
    pub certificate_file: String,
    /// PEM of the certificates above the issuing one (intermediates, root);
    /// may be empty for a self-signed CA.
    pub chain_file: String,
    /// The CRL distribution point written into every certificate.
    pub crl_url: String,
    /// The OCSP responder written into every certificate.
    pub ocsp_url: String,
}

/// One certificate to sign, with everything decided by the rules.
pub struct LeafProfile {
    pub subject: Vec<(SubjectAttribute, String)>,
    pub email: Option<String>,
    pub key_usages: Vec<KeyUsagePurpose>,
    pub extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    pub not_before: Millis,
    pub not_after: Millis,
    /// Big-endian, positive (top bit clear), not zero.
    pub serial: Vec<u8>,
}

/// The subject attributes of an OCES3-shaped certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectAttribute {
    Country,
    OrganizationIdentifier,
    Organization,
    SerialNumber,
    GivenName,
    Surname,
    Pseudonym,
    CommonName,
}

impl SubjectAttribute {
    fn dn_type(self) -> DnType {
        match self {
            Self::Country => DnType::CountryName,
            Self::Organization => DnType::OrganizationName,
            Self::CommonName => DnType::CommonName,
            // X.520 attribute types rcgen has no name for.
            Self::OrganizationIdentifier => DnType::CustomDnType(vec![2, 5, 4, 97]),
            Self::SerialNumber => DnType::CustomDnType(vec![2, 5, 4, 5]),
            Self::GivenName => DnType::CustomDnType(vec![2, 5, 4, 42]),
            Self::Surname => DnType::CustomDnType(vec![2, 5, 4, 4]),
            Self::Pseudonym => DnType::CustomDnType(vec![2, 5, 4, 65]),
        }
    }

    /// How `openssl x509 -subject` names it, for the stored subject text.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Country => "C",
            Self::OrganizationIdentifier => "organizationIdentifier",
            Self::Organization => "O",
            Self::SerialNumber => "serialNumber",
            Self::GivenName => "GN",
            Self::Surname => "SN",
            Self::Pseudonym => "pseudonym",
            Self::CommonName => "CN",
        }
    }

    /// countryName and serialNumber are PrintableString in X.520; the rest
    /// are UTF8String (names with æ, ø, å).
    fn value(self, text: &str) -> Result<DnValue, String> {
        match self {
            Self::Country | Self::SerialNumber => rcgen::string::PrintableString::try_from(text)
                .map(DnValue::PrintableString)
                .map_err(|e| format!("{text:?} is not a PrintableString: {e}")),
            _ => Ok(DnValue::Utf8String(text.to_owned())),
        }
    }
}

/// A revoked certificate as the CRL lists it.
pub struct RevokedEntry {
    pub serial: Vec<u8>,
    pub revoked_at: Millis,
    pub reason: RevocationReason,
}

/// The Authority Information Access extension naming the OCSP responder,
/// encoded by the `der` crate's types (rcgen has no field for it).
fn authority_information_access(url: &str) -> Result<rcgen::CustomExtension, String> {
    use der::Encode;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
    let location = der::asn1::Ia5String::new(url).map_err(|e| format!("the OCSP URL {url:?}: {e}"))?;
    let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
        access_method: const_oid::db::rfc5280::ID_AD_OCSP,
        access_location: GeneralName::UniformResourceIdentifier(location),
    }]);
    let content = aia.to_der().map_err(|e| e.to_string())?;
    // id-pe-authorityInfoAccess
    Ok(rcgen::CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 5, 5, 7, 1, 1],
        content,
    ))
}

/// What orgadmin reads of the CA certificate itself.
struct CaCertificate {
    subject_der: Vec<u8>,
    public_key_bits: Vec<u8>,
    not_after: Millis,
    subject_key_identifier: Option<Vec<u8>>,
    is_ca: bool,
}

/// The parts of a PEM CA certificate `from_pem` checks and keeps.
fn read_ca_certificate(certificate_pem: &str) -> Result<CaCertificate, String> {
    use x509_parser::extensions::ParsedExtension;
    let (_, pem) = x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes())
        .map_err(|e| format!("the CA certificate is not PEM: {e}"))?;
    let certificate = pem
        .parse_x509()
        .map_err(|e| format!("the CA certificate cannot be read: {e}"))?;
    let mut subject_key_identifier = None;
    let mut is_ca = false;
    for extension in certificate.tbs_certificate.extensions() {
        match extension.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => subject_key_identifier = Some(id.0.to_vec()),
            ParsedExtension::BasicConstraints(constraints) => is_ca = constraints.ca,
            _ => {}
        }
    }
    Ok(CaCertificate {
        subject_der: certificate.tbs_certificate.subject.as_raw().to_vec(),
        public_key_bits: certificate.tbs_certificate.subject_pki.subject_public_key.data.to_vec(),
        not_after: certificate.validity().not_after.timestamp().saturating_mul(1000),
        subject_key_identifier,
        is_ca,
    })
}

/// The least validity a configured CA must have left at start: a day.
const MIN_CA_LIFE_MS: Millis = 24 * 60 * 60 * 1000;

fn to_time(at: Millis) -> Result<OffsetDateTime, String> {
    OffsetDateTime::from_unix_timestamp(at.div_euclid(1000)).map_err(|e| format!("time {at} out of range: {e}"))
}

impl CertificateAuthority {
    /// Reads the CA from PEM text: the key, its certificate, the chain above.
    pub fn from_pem(
        key_pem: &str,
        certificate_pem: &str,
        chain_pem: &str,
        crl_url: &str,
        ocsp_url: &str,
    ) -> Result<Self, String> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| format!("the CA key is not a PKCS#8 PEM key: {e}"))?;
        let issuer = Issuer::from_ca_cert_pem(certificate_pem, key)
            .map_err(|e| format!("the CA certificate cannot be read: {e}"))?;
        let usages = issuer.key_usages();
        let signs_both = usages.contains(&KeyUsagePurpose::KeyCertSign) && usages.contains(&KeyUsagePurpose::CrlSign);
        // No KeyUsage at all allows every use.
        if !usages.is_empty() && !signs_both {
            return Err("the CA certificate's key usage must allow keyCertSign and cRLSign".into());
        }
        let read = read_ca_certificate(certificate_pem)?;
        // A key and certificate that do not belong together (files mixed
        // up at a CA renewal) signed certificates, CRLs and OCSP answers no
        // client could verify, each pickup spending its single-use token.
        if issuer.key().public_key_raw() != read.public_key_bits.as_slice() {
            return Err("the CA key does not belong to the CA certificate (their public keys differ)".into());
        }
        if !read.is_ca {
            return Err("the CA certificate is not a CA certificate (basicConstraints cA is not TRUE)".into());
        }
        if read.not_after <= crate::model::now_millis() + MIN_CA_LIFE_MS {
            return Err(format!(
                "the CA certificate expires on {} (or within a day): every certificate it signs would stop working then",
                crate::mail::date(read.not_after)
            ));
        }
        // The CRL's Authority Key Identifier must equal the CA's Subject Key
        // Identifier, however the CA computed it: rcgen derives it from the
        // key with its own method otherwise, and a CA made by openssl (SHA-1
        // identifiers) got CRLs no client matched to it ("unable to get
        // certificate CRL").
        let crl_key_identifier = match read.subject_key_identifier {
            Some(id) => KeyIdMethod::PreSpecified(id),
            None => KeyIdMethod::Sha256,
        };
        let certificate_pem = certificate_pem.trim().to_owned() + "\n";
        let chain_pem = if chain_pem.trim().is_empty() {
            certificate_pem.clone()
        } else {
            format!("{certificate_pem}{}\n", chain_pem.trim())
        };
        let ca = Self {
            issuer,
            certificate_pem,
            chain_pem,
            crl_url: (!crl_url.is_empty()).then(|| crl_url.to_owned()),
            ocsp_url: (!ocsp_url.is_empty()).then(|| ocsp_url.to_owned()),
            subject_der: read.subject_der,
            public_key_bits: read.public_key_bits,
            not_after: read.not_after,
            crl_key_identifier,
        };
        ca.ensure_issuer_name_kept()?;
        Ok(ca)
    }

    /// Signs a throwaway certificate and checks that it names its issuer
    /// exactly as the CA certificate names itself. The signer (rcgen)
    /// writes the issuer name again from its parsed form, which keeps one
    /// value per attribute type: a subject that repeats one (two DC or two
    /// OU, as Active Directory CAs have) came out shorter, so no client
    /// matched any certificate or CRL to the CA. Refused at start, with the
    /// reason, instead of signing what nobody can verify.
    fn ensure_issuer_name_kept(&self) -> Result<(), String> {
        let probe_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let now = crate::model::now_millis();
        let probe = LeafProfile {
            subject: Vec::new(),
            email: None,
            key_usages: Vec::new(),
            extended_key_usages: Vec::new(),
            not_before: now,
            not_after: now + 60_000,
            serial: random_serial(),
        };
        let der = self.issue(&probe, &rcgen::PublicKeyData::subject_public_key_info(&probe_key))?;
        let (_, probe) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("a probe certificate cannot be read: {e}"))?;
        if probe.tbs_certificate.issuer.as_raw() != self.subject_der.as_slice() {
            return Err("the CA certificate's subject cannot be written back as it is (it repeats an attribute type, such as two DC or two OU): every certificate and CRL would name another issuer, and no client would match them to the CA; use a CA whose subject names each attribute type once".into());
        }
        Ok(())
    }

    /// When the CA certificate ends: what a certificate it signs may last
    /// until at most.
    pub fn not_after(&self) -> Millis {
        self.not_after
    }

    /// The CA certificate's subject Name, DER.
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// The CA's public key as its certificate carries it (the BIT STRING's
    /// contents).
    pub fn public_key_bits(&self) -> &[u8] {
        &self.public_key_bits
    }

    /// Signs `data` with the CA key (an OCSP response's ResponseData).
    /// Returns the signature and the DER AlgorithmIdentifier's OID and
    /// whether it takes NULL parameters (RSA).
    pub fn sign(&self, data: &[u8]) -> Result<(Vec<u8>, &'static str, bool), String> {
        use rcgen::SigningKey;
        let key = self.issuer.key();
        let algorithm = key.algorithm();
        let (oid, null_parameters) = if algorithm == &rcgen::PKCS_ECDSA_P256_SHA256 {
            ("1.2.840.10045.4.3.2", false)
        } else if algorithm == &rcgen::PKCS_ECDSA_P384_SHA384 {
            ("1.2.840.10045.4.3.3", false)
        } else if algorithm == &rcgen::PKCS_ED25519 {
            ("1.3.101.112", false)
        } else if algorithm == &rcgen::PKCS_RSA_SHA256 {
            ("1.2.840.113549.1.1.11", true)
        } else {
            return Err("the CA key's algorithm cannot sign OCSP responses here".into());
        };
        let signature = key.sign(data).map_err(|e| format!("signing failed: {e}"))?;
        Ok((signature, oid, null_parameters))
    }

    /// A new self-signed CA with an ECDSA P-256 key, valid 20 years. Returns
    /// the key and certificate as PEM, for the embedded default to keep.
    pub fn generate(common_name: &str) -> Result<(String, String), String> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CountryName,
            DnValue::PrintableString("DK".try_into().map_err(|e| format!("{e}"))?),
        );
        name.push(DnType::OrganizationName, "orgadmin");
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        // Issues holders' certificates only, no further CAs.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = crate::model::now_millis();
        params.not_before = to_time(now - 60 * 60 * 1000)?;
        params.not_after = to_time(now + 20 * 365 * 24 * 60 * 60 * 1000)?;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        params.key_identifier_method = KeyIdMethod::Sha256;
        let certificate = params.self_signed(&key).map_err(|e| e.to_string())?;
        Ok((key.serialize_pem(), certificate.pem()))
    }

    /// The CA as configured; on the embedded default (no key file named) one
    /// generated at first start into `data_dir/ca`, the key readable by the
    /// owner only. `None`: not configured and not embedded (certificate RPCs
    /// then answer that no CA is configured).
    pub fn from_config(source: &CaSource, embedded_dir: Option<&Path>) -> Result<Option<Self>, String> {
        let read = |path: &str, what: &str| {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read the CA {what} {path}: {e}"))
        };
        if !source.key_file.is_empty() || !source.certificate_file.is_empty() {
            if source.key_file.is_empty() || source.certificate_file.is_empty() {
                return Err("ORGADMIN_CA_KEY_FILE and ORGADMIN_CA_CERTIFICATE_FILE must be set together".into());
            }
            let chain = if source.chain_file.is_empty() {
                String::new()
            } else {
                read(&source.chain_file, "chain")?
            };
            return Self::from_pem(
                &read(&source.key_file, "key")?,
                &read(&source.certificate_file, "certificate")?,
                &chain,
                &source.crl_url,
                &source.ocsp_url,
            )
            .map(Some);
        }
        let Some(dir) = embedded_dir else {
            return Ok(None);
        };
        // Key and certificate in one file, published whole: a service and a
        // worker starting together over one data folder must end up with
        // one CA, never a key of one and a certificate of the other.
        let dir = dir.join("ca");
        let path = dir.join("ca-key-and-certificate.pem");
        if !path.exists() {
            let (key, certificate) = Self::generate("orgadmin embedded CA")?;
            let draft = dir.join(format!(".draft-{}", uuid::Uuid::now_v7().simple()));
            crate::config::write_private_file(&draft, &format!("{key}{certificate}"))?;
            // A hard link never replaces: whoever links first wins.
            let published = std::fs::hard_link(&draft, &path);
            let _ = std::fs::remove_file(&draft);
            match published {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
            }
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let split = text
            .find("-----BEGIN CERTIFICATE-----")
            .ok_or_else(|| format!("{} holds no certificate", path.display()))?;
        let (key, certificate) = text.split_at(split);
        Self::from_pem(key, certificate, "", &source.crl_url, &source.ocsp_url).map(Some)
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The CRL distribution point written into every certificate, if any.
    pub fn crl_url(&self) -> Option<&str> {
        self.crl_url.as_deref()
    }

    /// Signs a holder's certificate over `public_key` (the DER
    /// SubjectPublicKeyInfo from their CSR). Returns the DER.
    pub fn issue(&self, profile: &LeafProfile, public_key_der: &[u8]) -> Result<Vec<u8>, String> {
        let public_key = SubjectPublicKeyInfo::from_der(public_key_der)
            .map_err(|e| format!("the public key cannot be used: {e}"))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        for (attribute, text) in &profile.subject {
            name.push(attribute.dn_type(), attribute.value(text)?);
        }
        params.distinguished_name = name;
        if let Some(email) = &profile.email {
            let email = rcgen::string::Ia5String::try_from(email.as_str()).map_err(|e| e.to_string())?;
            params.subject_alt_names = vec![SanType::Rfc822Name(email)];
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = profile.key_usages.clone();
        params.extended_key_usages = profile.extended_key_usages.clone();
        params.not_before = to_time(profile.not_before)?;
        params.not_after = to_time(profile.not_after)?;
        params.serial_number = Some(SerialNumber::from_slice(&profile.serial));
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        if let Some(url) = &self.crl_url {
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        if let Some(url) = &self.ocsp_url {
            params.custom_extensions.push(authority_information_access(url)?);
        }
        let certificate = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok(certificate.der().to_vec())
    }

    /// Signs a CRL (RFC 5280 v2, with CRL number and authority key id).
    pub fn sign_crl(
        &self,
        number: i64,
        this_update: Millis,
        next_update: Millis,
        revoked: &[RevokedEntry],
    ) -> Result<Vec<u8>, String> {
        let params = CertificateRevocationListParams {
            this_update: to_time(this_update)?,
            next_update: to_time(next_update)?,
            crl_number: SerialNumber::from_slice(minimal(&number.to_be_bytes())),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|entry| {
                    Ok(RevokedCertParams {
                        serial_number: SerialNumber::from_slice(&entry.serial),
                        revocation_time: to_time(entry.revoked_at)?,
                        reason_code: Some(entry.reason),
                        invalidity_date: None,
                    })
                })
                .collect::<Result<_, String>>()?,
            key_identifier_method: self.crl_key_identifier.clone(),
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|e| format!("signing the CRL failed: {e}"))?;
        Ok(crl.der().to_vec())
    }
}

/// A big-endian number without its leading zero bytes (DER integers are
/// minimal).
fn minimal(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len() - 1);
    &bytes[first..]
}

/// 16 random bytes, positive and with a non-zero first byte: 126 bits of
/// randomness (RFC 5280 allows 20 octets; CA/B asks for at least 64 bits).
pub fn random_serial() -> Vec<u8> {
    use rand::RngCore;
    let mut bytes = vec![0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    bytes
}

/// PEM armour of DER (`CERTIFICATE`, `X509 CRL`).
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA certificate as another tool would make it: `ski` as its Subject
    /// Key Identifier (openssl uses SHA-1), valid for `days` from now,
    /// `is_ca` or not. Returns its key and certificate, PEM.
    fn foreign_ca(ski: Vec<u8>, days: i64, is_ca: bool) -> (String, String) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "Firma CA");
        params.distinguished_name = name;
        params.is_ca = if is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = crate::model::now_millis();
        params.not_before = to_time(now - 2 * 24 * 60 * 60 * 1000).unwrap();
        params.not_after = to_time(now + days * 24 * 60 * 60 * 1000).unwrap();
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski);
        let certificate = params.self_signed(&key).unwrap();
        (key.serialize_pem(), certificate.pem())
    }

    #[test]
    fn a_crl_names_the_ca_key_as_the_ca_certificate_does() {
        let (key, certificate) = foreign_ca(vec![7; 20], 365, true);
        let ca = CertificateAuthority::from_pem(&key, &certificate, "", "", "").unwrap();
        let der = ca
            .sign_crl(1, crate::model::now_millis(), crate::model::now_millis() + 60_000, &[])
            .unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
        let aki = crl
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => None,
            })
            .expect("the CRL names its issuer's key");
        assert_eq!(aki, vec![7; 20]);
    }

    /// A CA made by openssl, as an operator would: one with an ordinary
    /// subject is taken, one whose subject repeats an attribute type is
    /// refused (rcgen would name another issuer in all it signs).
    #[test]
    fn a_ca_whose_name_cannot_be_kept_is_refused_at_start() {
        let dir = std::env::temp_dir().join(format!("orgadmin-ca-name-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let made_by_openssl = |subject: &str| {
            let run = |args: &[&str]| {
                let out = std::process::Command::new("openssl")
                    .args(args)
                    .current_dir(&dir)
                    .output()
                    .expect("openssl must be installed");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            };
            run(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "365",
                "-subj",
                subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            run(&["pkcs8", "-topk8", "-nocrypt", "-in", "ca.key", "-out", "ca.p8"]);
            let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
            CertificateAuthority::from_pem(&read("ca.p8"), &read("ca.pem"), "", "", "")
        };
        made_by_openssl("/C=DK/O=Firma A\\/S/CN=Firma CA").expect("an ordinary subject");
        let refused = made_by_openssl("/DC=dk/DC=firma/O=Firma/CN=Firma CA").unwrap_err();
        assert!(refused.contains("repeats an attribute type"), "{refused}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_ca_that_cannot_sign_for_long_is_refused_at_start() {
        let (key, certificate) = foreign_ca(vec![1; 20], 365, true);
        let ca = CertificateAuthority::from_pem(&key, &certificate, "", "", "").unwrap();
        let year = 365 * 24 * 60 * 60 * 1000;
        assert!((ca.not_after() - crate::model::now_millis() - year).abs() < 60 * 60 * 1000);
        // Expired, or about to.
        let (key, certificate) = foreign_ca(vec![1; 20], 0, true);
        let refused = CertificateAuthority::from_pem(&key, &certificate, "", "", "").unwrap_err();
        assert!(refused.contains("expires"), "{refused}");
        // Not a CA.
        let (key, certificate) = foreign_ca(vec![1; 20], 365, false);
        let refused = CertificateAuthority::from_pem(&key, &certificate, "", "", "").unwrap_err();
        assert!(refused.contains("not a CA"), "{refused}");
        // A key of another CA.
        let (other_key, _) = foreign_ca(vec![2; 20], 365, true);
        let (_, certificate) = foreign_ca(vec![1; 20], 365, true);
        let refused = CertificateAuthority::from_pem(&other_key, &certificate, "", "", "").unwrap_err();
        assert!(refused.contains("does not belong"), "{refused}");
    }

    /// Service and worker starting at once over one data folder: one CA.
    #[test]
    fn processes_starting_together_share_one_generated_ca() {
        let dir = std::env::temp_dir().join(format!("orgadmin-ca-{}", uuid::Uuid::now_v7().simple()));
        let source = CaSource::default();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (dir, source) = (dir.clone(), source.clone());
                std::thread::spawn(move || {
                    CertificateAuthority::from_config(&source, Some(&dir))
                        .unwrap()
                        .unwrap()
                        .certificate_pem()
                        .to_owned()
                })
            })
            .collect();
        let certificates: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(certificates.windows(2).all(|w| w[0] == w[1]), "one CA for all");
        let file = dir.join("ca").join("ca-key-and-certificate.pem");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o077, 0);
        }
        assert_eq!(std::fs::read_dir(dir.join("ca")).unwrap().count(), 1, "no drafts left");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_key_never_shows_in_debug() {
        let (key, certificate) = CertificateAuthority::generate("t").unwrap();
        let ca = CertificateAuthority::from_pem(&key, &certificate, "", "", "").unwrap();
        let body = key.lines().nth(1).unwrap();
        assert!(!format!("{ca:?}").contains(body));
    }
}
