//! The one e-mail address rule of the RPC and the mailer (R-USR-1): a plain
//! `local@domain` and nothing else a mail header could read differently — no
//! display name, no angle brackets, no list, no quotes, no comments, no
//! address literal. The RPC parses every address with [`Email::parse`]; the
//! worker parses the stored recipient with the same function and sends to
//! [`Email::to_address`], so what was accepted is exactly where the mail goes.
//!
//! The local part is a dot-atom: ASCII `atext`, letters and digits of any
//! script (`søren`, sent with SMTPUTF8 where the server offers it), single
//! dots between them; the domain is a dotted host name in ASCII or Unicode
//! (IDN), sent in its ASCII (Punycode) form. lettre's own parser
//! ([`lettre::Address`]) must accept the result as well.

use std::fmt;

use lettre::Address;

use crate::normalise::{key, nfc};

/// A parsed e-mail address (see the module documentation).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email {
    /// NFC: the local part as typed, the domain in lower case, IDN in its
    /// Unicode form.
    text: String,
    /// The comparison key (`normalise::key`): addresses are login ids and
    /// compared without regard to case.
    key: String,
    /// What the mailer sends to: the domain in ASCII.
    address: Address,
}

const PLAIN: &str = "must be a plain address such as anna@firma.dk: no name, angle brackets, list, quotes or comments";

/// `atext` of RFC 5322 without the letters and digits.
const ATEXT_SYMBOLS: &str = "!#$%&'*+-/=?^_`{|}~";

impl Email {
    pub fn parse(input: &str) -> Result<Self, String> {
        let text = nfc(input.trim());
        if text.is_empty() {
            return Err("is required".into());
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces".into());
        }
        if text.contains(['<', '>', ',', ';', ':', '"', '(', ')', '[', ']', '\\']) {
            return Err(PLAIN.into());
        }
        let Some((local, domain)) = text.split_once('@') else {
            return Err("must contain @".into());
        };
        if domain.contains('@') {
            return Err("must contain exactly one @".into());
        }
        if local.is_empty() || local.len() > 64 {
            return Err("the part before @ must be 1 to 64 characters".into());
        }
        let atom_char = |c: char| c.is_alphanumeric() || ATEXT_SYMBOLS.contains(c);
        if !local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atom_char))
        {
            return Err(format!(
                "the part before @ must be letters, digits, single dots between them, or {ATEXT_SYMBOLS}"
            ));
        }
        let not_a_domain = || "the domain must be a dotted name such as firma.dk".to_string();
        let ascii = idna::domain_to_ascii_strict(domain).map_err(|_| not_a_domain())?;
        let labels: Vec<&str> = ascii.split('.').collect();
        if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
            return Err(not_a_domain());
        }
        if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
            return Err("the domain must be a name such as firma.dk, not an IP address".into());
        }
        let (unicode, result) = idna::domain_to_unicode(&ascii);
        if result.is_err() {
            return Err(not_a_domain());
        }
        // IDNA maps look-alikes (a full-width `ａ`, an ideographic full stop)
        // onto other characters: refuse what would be sent somewhere other
        // than it reads. A domain typed in ASCII (Punycode included) or in
        // its Unicode form, in any case, is fine. Both sides are keys because
        // IDNA's form need not be lower case (it folds Cherokee to capitals):
        // the stored form must parse back to itself.
        if ascii != domain.to_lowercase() && key(&unicode) != key(domain) {
            return Err("the domain must be written in its standard form, such as firma.dk".into());
        }
        if local.len() + 1 + ascii.len() > 254 {
            return Err("must be at most 254 characters".into());
        }
        let address =
            Address::new(local, &ascii).map_err(|e| format!("is not an address mail can be sent to ({e})"))?;
        let text = format!("{local}@{unicode}");
        Ok(Self {
            key: key(&text),
            text,
            address,
        })
    }

    /// The address as stored and shown.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The case-insensitive comparison key (`users.email_key`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The envelope address, with the domain in ASCII.
    pub fn to_address(&self) -> Address {
        self.address.clone()
    }
}

/// The comparison key of a login id or an address: an address's key
/// (its domain in Unicode form, however it was typed) when it reads as one,
/// else the text's. An address typed with its domain in Punycode
/// (`xn--…`, as a certificate must carry it) is the one stored in Unicode.
pub fn login_key(input: &str) -> String {
    match Email::parse(input) {
        Ok(email) => email.key,
        Err(_) => key(input.trim()),
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({:?})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ok(input: &str) -> Email {
        Email::parse(input).unwrap_or_else(|e| panic!("{input:?} refused: {e}"))
    }

    #[test]
    fn plain_addresses_are_accepted() {
        assert_eq!(ok("anna@firma.dk").as_str(), "anna@firma.dk");
        assert_eq!(ok(" anna@firma.dk ").as_str(), "anna@firma.dk");
        assert_eq!(
            ok("o'brien+ny@sub.firma.dk").to_address().to_string(),
            "o'brien+ny@sub.firma.dk"
        );
        assert_eq!(ok("S\u{D8}REN@firma.dk").key(), ok("s\u{F8}ren@firma.dk").key());
        // The local part keeps its case, the domain is lower-cased; the key folds both.
        let mixed = ok("Case.Test@Probe.DK");
        assert_eq!(mixed.as_str(), "Case.Test@probe.dk");
        assert_eq!(mixed.key(), "case.test@probe.dk");
        assert_eq!(mixed.key(), ok("case.test@probe.dk").key());
    }

    #[test]
    fn idn_domains_are_sent_in_ascii() {
        let idn = ok("anna@Æblegården.dk");
        assert_eq!(idn.as_str(), "anna@æblegården.dk");
        assert_eq!(idn.to_address().domain(), "xn--blegrden-d0af.dk");
        // Punycode, NFD and NFC are one address.
        assert_eq!(ok("anna@xn--blegrden-d0af.dk").key(), idn.key());
        assert_eq!(ok("anna@\u{C6}blega\u{30A}rden.dk").key(), idn.key());
        // A login id or a certificate's address typed in Punycode finds the
        // person stored in Unicode; a username keeps its own key.
        assert_eq!(login_key("Anna@xn--blegrden-d0af.dk"), idn.key());
        assert_eq!(login_key(" Karen.Hansen "), "karen.hansen");
    }

    #[test]
    fn the_stored_form_reads_back_as_itself() {
        // UTS 46 folds Cherokee to capital letters, `to_lowercase` to small ones.
        let cherokee = ok("anna@xn--58dc.com");
        assert_eq!(cherokee.as_str(), "anna@\u{13A0}\u{13A1}.com");
        assert_eq!(ok(cherokee.as_str()), cherokee);
        assert_eq!(ok("anna@\u{AB70}\u{AB71}.com"), cherokee);
    }

    proptest! {
        #[test]
        fn what_is_accepted_reads_back_as_itself(
            local in "[a-zA-Z0-9æØ+]{1,6}(\\.[a-z0-9]{1,4})?",
            domain in "[a-zA-Z0-9æÆßẞ\u{13A0}\u{13A1}\u{13F8}\u{AB70}\u{AB71}σΣςİı\u{212A}\u{FF41}ა-]{1,8}\\.(com|DK|ᏣᎳᎩ)",
        ) {
            let punycode = idna::domain_to_ascii(&domain).unwrap_or_default();
            for input in [format!("{local}@{domain}"), format!("{local}@{punycode}")] {
                if let Ok(first) = Email::parse(&input) {
                    prop_assert_eq!(Email::parse(first.as_str()), Ok(first));
                }
            }
        }
    }

    #[test]
    fn what_a_mailer_reads_differently_is_refused() {
        for bad in [
            "x<evil@attacker.dk>",
            "Anna <anna@firma.dk>",
            "a,evil@b.dk",
            "a@b.dk,evil@c.dk",
            "a@b.dk;evil@c.dk",
            "\"a b\"@firma.dk",
            "\"evil@attacker.dk\"@firma.dk",
            "anna(comment)@firma.dk",
            "anna@firma.dk(evil@attacker.dk)",
            "anna@[127.0.0.1]",
            "anna@127.0.0.1",
            "anna@localhost",
            "anna@@firma.dk",
            "a@b@firma.dk",
            ".anna@firma.dk",
            "an..na@firma.dk",
            "anna.@firma.dk",
            "x\u{FF1C}evil@attacker.dk\u{FF1E}",
            "anna\u{FF0C}evil@firma.dk",
            "anna@firma..dk",
            "anna@-firma.dk",
            "anna@firma_x.dk",
            "anna@ｆirma.dk",
            "anna@firma｡dk",
            "anna@firma.dk\r\nBcc: evil@attacker.dk",
            "anna.firma.dk",
            "anna@firma",
            "an na@firma.dk",
            "",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@firma.dk", "a".repeat(65))).is_err());
        assert!(Email::parse(&format!("a@{}.dk", "b".repeat(250))).is_err());
    }
}
