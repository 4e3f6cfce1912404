//! Time-based one-time passwords (RFC 6238 over RFC 4226): HMAC-SHA1, six
//! digits, 30-second steps, the parameters every authenticator app uses by
//! default. Pure functions; the enrolment and its replay guard live in
//! `services::second_factor`.

use ring::hmac;

/// Seconds per step.
pub const STEP_SECONDS: i64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Secret length (RFC 4226 recommends 160 bits).
pub const SECRET_BYTES: usize = 20;

/// The time step `unix_seconds` falls in.
pub fn step_at(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(STEP_SECONDS)
}

/// The code of `step` for `secret`, zero-padded (RFC 4226 §5.3).
pub fn code_for_step(secret: &[u8], step: i64, digits: u32) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = hmac::sign(&key, &step.to_be_bytes());
    let mac = mac.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = (u32::from(mac[offset]) & 0x7f) << 24
        | u32::from(mac[offset + 1]) << 16
        | u32::from(mac[offset + 2]) << 8
        | u32::from(mac[offset + 3]);
    let code = binary % 10u32.pow(digits);
    format!("{code:0width$}", width = digits as usize)
}

/// The step among `now`'s and its neighbours (a phone's clock may be a
/// step off) whose code is `code`; `now` first: a code taken as the next
/// step would make the person's real current code count as used.
pub fn matching_step(secret: &[u8], code: &str, unix_seconds: i64) -> Option<i64> {
    let now = step_at(unix_seconds);
    [now, now - 1, now + 1]
        .into_iter()
        .find(|step| crate::secrets::constant_time_eq(code_for_step(secret, *step, DIGITS).as_bytes(), code.as_bytes()))
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding, as `otpauth://` URIs carry secrets.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            out.push(BASE32[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The inverse of [`base32`]; case and spaces are forgiven (people copy
/// secrets by hand).
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let value = BASE32.iter().position(|b| *b as char == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The `otpauth://totp/` URI authenticator apps read (from a QR code or
/// pasted): `issuer:account`, the secret and the parameters.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        percent_encode(issuer),
        percent_encode(account),
        base32(secret),
        percent_encode(issuer),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (eight digits there; six are their
    /// last six).
    #[test]
    fn rfc_6238_vectors() {
        let secret = b"12345678901234567890";
        for (time, code) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code_for_step(secret, step_at(time), 8), code, "time {time}");
            assert_eq!(code_for_step(secret, step_at(time), 6), &code[2..], "time {time}");
        }
    }

    #[test]
    fn neighbouring_steps_match_and_others_do_not() {
        let secret = b"12345678901234567890";
        let now = 1_234_567_890;
        let code = code_for_step(secret, step_at(now - 30), DIGITS);
        assert_eq!(matching_step(secret, &code, now), Some(step_at(now) - 1));
        let old = code_for_step(secret, step_at(now - 90), DIGITS);
        assert_eq!(matching_step(secret, &old, now), None);
    }

    #[test]
    fn base32_round_trips_and_matches_rfc_4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"12345678901234567890"), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(base32_decode("mzxw 6ytb oi").unwrap(), b"foobar");
        assert_eq!(base32_decode("MZXW6YTBOI======").unwrap(), b"foobar");
        assert!(base32_decode("M1").is_none());
    }

    #[test]
    fn otpauth_uri_encodes_the_label() {
        let uri = otpauth_uri("Acme A/S", "anna@acme.dk", b"foobar");
        assert_eq!(
            uri,
            "otpauth://totp/Acme%20A%2FS:anna%40acme.dk?secret=MZXW6YTBOI&issuer=Acme%20A%2FS&algorithm=SHA1&digits=6&period=30"
        );
    }
}
