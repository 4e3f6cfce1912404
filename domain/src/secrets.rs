//! CPR protection (R-USR-9) and bearer-token hashing (R-AUTH-1).
//!
//! A CPR number is kept twice, neither readable from a dump: an HMAC-SHA256
//! under the look-up key (to find "is this person already here?") and an
//! AES-256-GCM ciphertext under the encryption key (to read it back, e.g. to
//! mask it). Tokens are random 256-bit values; only their SHA-256 is stored,
//! which is enough because they cannot be guessed.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::DomainError;

/// 32-byte keys, given in configuration as 64 hex digits.
#[derive(Clone)]
pub struct CprVault {
    lookup_key: [u8; 32],
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for CprVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CprVault(..)")
    }
}

impl CprVault {
    pub fn new(lookup_key: [u8; 32], encryption_key: [u8; 32]) -> Self {
        Self {
            lookup_key,
            cipher: Aes256Gcm::new(&encryption_key.into()),
        }
    }

    /// Hex HMAC of a normalised CPR number.
    pub fn lookup_hash(&self, cpr: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.lookup_key).expect("HMAC takes any key length");
        mac.update(cpr.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// base64(nonce || ciphertext).
    pub fn encrypt(&self, cpr: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), cpr.as_bytes())
            .expect("AES-GCM encryption of a short text cannot fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// nonce || AES-GCM ciphertext of `plain`, bound to `context` (so a
    /// sealed piece opens only where it was stored, not copied elsewhere).
    pub fn seal_bytes(&self, plain: &[u8], context: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                aes_gcm::aead::Payload {
                    msg: plain,
                    aad: context,
                },
            )
            .expect("AES-GCM encryption of a piece under 64 GiB cannot fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        out
    }

    /// The plain bytes `seal_bytes` sealed with the same `context`.
    pub fn open_bytes(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, DomainError> {
        if sealed.len() < 12 + 16 {
            return Err(DomainError::Internal("a sealed piece is truncated".into()));
        }
        let (nonce, sealed) = sealed.split_at(12);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                aes_gcm::aead::Payload {
                    msg: sealed,
                    aad: context,
                },
            )
            .map_err(|_| DomainError::Internal("a sealed piece does not open with the configured key".into()))
    }

    pub fn decrypt(&self, sealed: &str) -> Result<String, DomainError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| DomainError::Internal("stored CPR ciphertext is not base64".into()))?;
        if bytes.len() < 13 {
            return Err(DomainError::Internal("stored CPR ciphertext is truncated".into()));
        }
        let (nonce, sealed) = bytes.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| DomainError::Internal("stored CPR ciphertext does not open with the configured key".into()))?;
        String::from_utf8(plain).map_err(|_| DomainError::Internal("stored CPR is not UTF-8".into()))
    }
}

/// A bearer secret handed to its owner once (a session or API token, an
/// activation code). `Debug` redacts it, so no log line can print it by
/// accident; `expose` is the one way to read it, at the edge that returns it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_exposed(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Prefix that makes a leaked token recognisable in a log or a repository.
pub const TOKEN_PREFIX: &str = "oat_";

pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether two secrets (codes, hashes, CSRF tokens) are equal, compared
/// without stopping at the first difference, so timing tells nothing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |differs, (x, y)| differs | (x ^ y)) == 0
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key
}

pub fn parse_key(name: &str, hex_value: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(hex_value.trim()).map_err(|_| format!("{name} must be 64 hex digits"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{name} must be 64 hex digits (32 bytes)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_piece_opens_only_in_its_place() {
        let vault = CprVault::new([1; 32], [2; 32]);
        let plain = b";0703854821;;a@firma.dk;Karen";
        let sealed = vault.seal_bytes(plain, b"job 1, piece 0");
        assert!(!sealed.windows(10).any(|w| w == b"0703854821"));
        assert_eq!(vault.open_bytes(&sealed, b"job 1, piece 0").unwrap(), plain);
        assert!(
            vault.open_bytes(&sealed, b"job 2, piece 0").is_err(),
            "moved to another job"
        );
        assert!(vault.open_bytes(&sealed[..20], b"job 1, piece 0").is_err(), "truncated");
        let other_key = CprVault::new([1; 32], [3; 32]);
        assert!(other_key.open_bytes(&sealed, b"job 1, piece 0").is_err());
    }

    #[test]
    fn cpr_round_trip_and_stable_lookup() {
        let vault = CprVault::new([1; 32], [2; 32]);
        let sealed = vault.encrypt("0101001234");
        assert!(!sealed.contains("0101001234"));
        assert_eq!(vault.decrypt(&sealed).unwrap(), "0101001234");
        assert_eq!(vault.lookup_hash("0101001234"), vault.lookup_hash("0101001234"));
        assert_ne!(vault.lookup_hash("0101001234"), vault.lookup_hash("0101001235"));
        let other = CprVault::new([3; 32], [2; 32]);
        assert_ne!(vault.lookup_hash("0101001234"), other.lookup_hash("0101001234"));
    }
}
