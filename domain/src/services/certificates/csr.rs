//! A holder's certificate signing request: its signature proves they hold
//! the private key; only its public key is used. The subject always comes
//! from our records, never from the CSR.

use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509CertificationRequest};

/// The key types holders may use (R-CERT-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderKey {
    P256,
    P384,
    Ed25519,
    Rsa { bits: usize },
}

impl HolderKey {
    pub fn describe(self) -> String {
        match self {
            Self::P256 => "ECDSA P-256".into(),
            Self::P384 => "ECDSA P-384".into(),
            Self::Ed25519 => "Ed25519".into(),
            Self::Rsa { bits } => format!("RSA {bits}"),
        }
    }

    /// Whether the key can encrypt (or agree keys), for the encryption usages.
    pub fn encrypts(self) -> bool {
        !matches!(self, Self::Ed25519)
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa { .. })
    }
}

/// The public key of a verified CSR: its DER SubjectPublicKeyInfo and type.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    pub public_key_der: Vec<u8>,
    pub key: HolderKey,
}

/// Smallest RSA modulus accepted.
const MIN_RSA_BITS: usize = 2048;

/// Reads a PEM CSR, verifies its signature and checks its key. The error is
/// the rule that failed, for the `csr_pem` field.
pub fn check_csr(pem_text: &str) -> Result<CheckedCsr, String> {
    let der = pem_body(pem_text)?;
    let (rest, request) = X509CertificationRequest::from_der(&der)
        .map_err(|_| "is not a PKCS#10 certificate signing request".to_owned())?;
    if !rest.is_empty() {
        return Err("has bytes after the certificate signing request".into());
    }
    let spki = &request.certification_request_info.subject_pki;
    let algorithm = &spki.algorithm.algorithm;
    let key = if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        match curve {
            Some(oid) if oid == OID_EC_P256 => HolderKey::P256,
            Some(oid) if oid == OID_NIST_EC_P384 => HolderKey::P384,
            _ => return Err("has an elliptic-curve key on a curve other than P-256 or P-384".into()),
        }
    } else if *algorithm == OID_SIG_ED25519 {
        HolderKey::Ed25519
    } else if *algorithm == OID_PKCS1_RSAENCRYPTION {
        let bits = spki
            .parsed()
            .map_err(|_| "has an RSA key that cannot be read".to_owned())?
            .key_size();
        if bits < MIN_RSA_BITS {
            return Err(format!(
                "has an RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"
            ));
        }
        HolderKey::Rsa { bits }
    } else {
        return Err("has a key type other than ECDSA P-256, P-384, Ed25519 or RSA".into());
    };
    // After the key check: a key too weak is refused as that, not as a
    // signature the verifier will not check (RSA under 2048 bits).
    request
        .verify_signature()
        .map_err(|_| "has a signature that does not verify with its own public key".to_owned())?;
    // The key as the signer reads it, now: the verifier above ignores the
    // algorithm's parameters, the signer wants them exactly as the
    // standard has them (an Ed25519 key with a NULL, an RSA key without
    // one), and its refusal at issue time was INTERNAL, retried for ever.
    rcgen::SubjectPublicKeyInfo::from_der(spki.raw).map_err(|_| {
        "has a public key whose algorithm parameters are not the standard ones for its type; make the request with a standard tool (openssl req)".to_owned()
    })?;
    Ok(CheckedCsr {
        public_key_der: spki.raw.to_vec(),
        key,
    })
}

fn pem_body(text: &str) -> Result<Vec<u8>, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.trim().as_bytes())
        .map_err(|_| "must be PEM starting with -----BEGIN CERTIFICATE REQUEST-----".to_owned())?;
    if pem.label != "CERTIFICATE REQUEST" && pem.label != "NEW CERTIFICATE REQUEST" {
        return Err(format!(
            "must be PEM starting with -----BEGIN CERTIFICATE REQUEST-----, not {}",
            pem.label
        ));
    }
    Ok(pem.contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_for(key: &rcgen::KeyPair) -> String {
        let params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn accepts_p256_p384_and_ed25519() {
        for (alg, expected) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, HolderKey::P256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, HolderKey::P384),
            (&rcgen::PKCS_ED25519, HolderKey::Ed25519),
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let checked = check_csr(&csr_for(&key)).unwrap();
            assert_eq!(checked.key, expected);
            assert_eq!(
                checked.public_key_der,
                rcgen::PublicKeyData::subject_public_key_info(&key)
            );
        }
    }

    #[test]
    fn refuses_a_changed_request_and_garbage() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = csr_for(&key);
        // Flip one bit of the body's middle: the signature no longer fits.
        let mut der = pem_body(&pem).unwrap();
        let middle = der.len() / 2;
        der[middle] ^= 0x01;
        let tampered = crate::ca::pem("CERTIFICATE REQUEST", &der);
        assert!(check_csr(&tampered).is_err());
        assert!(check_csr("hello").unwrap_err().contains("PEM"));
    }
}
