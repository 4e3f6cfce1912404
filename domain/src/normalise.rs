//! One stored form of text that people type (R-USR-1, R-USR-8): Unicode NFC,
//! so `Å` typed as one code point or as `A` + ring is the same name; and a
//! lower-cased key for what is compared case-insensitively (e-mail addresses
//! and usernames, which are login ids) or searched.
//!
//! The keys are computed here, in Rust, on every write and stored in their own
//! columns (`email_key`, `username_key`, `search_text`): SQLite's `lower()`
//! folds ASCII only and neither database normalises Unicode, so the unique
//! indexes and the text search work on these columns, the same on both.
//! Migration 15 computed the keys of rows that existed before it with the same
//! rules (`to_lowercase` of the NFC form).

use unicode_normalization::UnicodeNormalization;

/// The NFC form of `text`.
pub fn nfc(text: &str) -> String {
    text.nfc().collect()
}

/// The comparison key of a login id (e-mail address or username): NFC, then
/// Unicode lower case (`Ærø` and `ærø`, `ß` stays `ß`), then NFC again (a few
/// lower-case mappings leave decomposed sequences).
pub fn key(text: &str) -> String {
    nfc(&nfc(text).to_lowercase())
}

/// What the text filter of `ListUsers` searches: the keys of first name,
/// surname and e-mail address, separated by a space. A search word holds no
/// white space, so it never matches across two fields.
pub fn search_text(first_name: &str, surname: &str, email: &str) -> String {
    format!("{} {} {}", key(first_name), key(surname), key(email))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfd_and_nfc_are_one_form() {
        assert_eq!(nfc("A\u{30A}se"), "\u{C5}se");
        assert_eq!(key("A\u{30A}SE"), key("åse"));
        assert_eq!(key("ÆRØ"), "ærø");
        assert_eq!(key("Case.Test@Probe.dk"), key("case.test@probe.dk"));
    }

    #[test]
    fn search_text_holds_every_field_lower_cased() {
        assert_eq!(search_text("Karen", "ÆRØ", "K@Firma.dk"), "karen ærø k@firma.dk");
    }
}
