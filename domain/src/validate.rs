//! Field rules of SPEC R-ORG-1 and R-USR-1. Each check returns the violation
//! for its field; callers collect them so one reply names every broken field.

use chrono::{Datelike, NaiveDate};

use crate::error::{DomainError, FieldViolation};

/// Collects field violations and turns them into one `InvalidArgument`.
#[derive(Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn check(&mut self, field: &str, result: Result<(), String>) {
        if let Err(description) = result {
            self.0.push(FieldViolation::new(field, description));
        }
    }

    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    pub fn into_result(self) -> Result<(), DomainError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DomainError::InvalidArgument(self.0))
        }
    }
}

fn all_digits(value: &str, len: usize) -> bool {
    value.len() == len && value.bytes().all(|b| b.is_ascii_digit())
}

/// CVR: 8 digits, first not 0, weighted sum (2,7,6,5,4,3,2,1) divisible by 11.
pub fn cvr(value: &str) -> Result<(), String> {
    if !all_digits(value, 8) {
        return Err("must be exactly 8 digits".into());
    }
    if value.starts_with('0') {
        return Err("must not start with 0".into());
    }
    const WEIGHTS: [u32; 8] = [2, 7, 6, 5, 4, 3, 2, 1];
    let sum: u32 = value.bytes().zip(WEIGHTS).map(|(b, w)| u32::from(b - b'0') * w).sum();
    if !sum.is_multiple_of(11) {
        return Err("fails the CVR modulus-11 check".into());
    }
    Ok(())
}

/// EAN/GLN: 13 digits with the GS1 check digit.
pub fn ean(value: &str) -> Result<(), String> {
    if !all_digits(value, 13) {
        return Err("must be exactly 13 digits".into());
    }
    let digits: Vec<u32> = value.bytes().map(|b| u32::from(b - b'0')).collect();
    let sum: u32 = digits[..12]
        .iter()
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { *d } else { d * 3 })
        .sum();
    if (10 - sum % 10) % 10 != digits[12] {
        return Err("fails the EAN check digit".into());
    }
    Ok(())
}

pub fn p_number(value: &str) -> Result<(), String> {
    if all_digits(value, 10) {
        Ok(())
    } else {
        Err("a P-number is exactly 10 digits".into())
    }
}

pub fn se_number(value: &str) -> Result<(), String> {
    if all_digits(value, 8) {
        Ok(())
    } else {
        Err("an SE-number is exactly 8 digits".into())
    }
}

/// The birth date a CPR number encodes: DDMMYY plus the century the 7th digit
/// implies. There is no modulus-11 rule: it stopped holding in 2007. Written
/// `DDMMYYXXXX` or `DDMMYY-XXXX`, nothing else: a number typed with dashes
/// elsewhere is more likely mistyped than meant.
pub fn cpr_birth_date(value: &str) -> Result<NaiveDate, String> {
    let digits = match value.len() {
        10 => value.to_owned(),
        11 if value.as_bytes()[6] == b'-' => format!("{}{}", &value[..6], &value[7..]),
        _ => String::new(),
    };
    if !all_digits(&digits, 10) {
        return Err("must be written DDMMYYXXXX or DDMMYY-XXXX".into());
    }
    let value = digits;
    let n = |range: std::ops::Range<usize>| value[range].parse::<u32>().unwrap_or(0);
    let (day, month, year, seventh) = (n(0..2), n(2..4), n(4..6), n(6..7));
    let century = match seventh {
        0..=3 => 1900,
        4 | 9 => {
            if year <= 36 {
                2000
            } else {
                1900
            }
        }
        _ => {
            if year <= 57 {
                2000
            } else {
                1800
            }
        }
    };
    NaiveDate::from_ymd_opt((century + year) as i32, month, day)
        .ok_or_else(|| "the first six digits are not a real date (DDMMYY)".to_string())
}

/// The CPR number without a dash, once valid and of someone already born.
pub fn normalise_cpr(value: &str) -> Result<String, String> {
    normalise_cpr_on(value, chrono::Utc::now().date_naive())
}

fn normalise_cpr_on(value: &str, today: NaiveDate) -> Result<String, String> {
    if cpr_birth_date(value)? > today {
        return Err("encodes a birth date in the future".into());
    }
    Ok(value.replace('-', ""))
}

/// `DDMMYY-XXXX`: the most of a CPR number any reply or log may show.
pub fn mask_cpr(normalised: &str) -> String {
    format!("{}-XXXX", &normalised[..6.min(normalised.len())])
}

/// A birth date, written `YYYY-MM-DD` exactly (`1990-05-17`; not `1990-5-17`
/// or `+1990-05-17`, which chrono's `%Y-%m-%d` would take): one written form,
/// so what is stored is [`canonical_date`] of it and compares as typed.
pub fn birth_date(value: &str, today: NaiveDate) -> Result<NaiveDate, String> {
    let bytes = value.as_bytes();
    let shaped = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let date = shaped
        .then(|| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| "must be a real date written YYYY-MM-DD, such as 1990-05-17".to_string())?;
    if date > today {
        return Err("must not be in the future".into());
    }
    if date.year() < 1900 {
        return Err("must be 1900 or later".into());
    }
    Ok(date)
}

/// The one stored form of a date: `YYYY-MM-DD`.
pub fn canonical_date(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// Whether a stored birth date is `date`: compared as dates, so a row written
/// before dates were canonical (`1990-5-17`) still matches.
pub fn is_stored_date(stored: Option<&str>, date: &str) -> bool {
    let read = |text: &str| NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok();
    matches!((stored.and_then(read), read(date)), (Some(a), Some(b)) if a == b)
}

/// The address rule of `crate::email::Email` (the mailer uses the same).
pub fn email(value: &str) -> Result<(), String> {
    crate::email::Email::parse(value).map(drop)
}

/// Names and other short free texts: not blank, at most `max` characters.
/// A client-chosen request id of a create (AIP-155): 1 to 100 characters.
/// An empty one means none (the handlers pass `None`).
pub fn request_id(value: &str) -> Result<(), String> {
    if !(1..=100).contains(&value.chars().count()) {
        return Err("must be 1 to 100 characters".into());
    }
    no_control_characters(value)
}

/// No control character: PostgreSQL cannot store or compare a NUL (the
/// call failed as INTERNAL there, and passed on SQLite), and the others
/// have no place in a key, an id or a search.
pub fn no_control_characters(value: &str) -> Result<(), String> {
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// A legacy system's id (RID number): printable, 1 to 64 characters.
pub fn legacy_id(value: &str) -> Result<(), String> {
    if !(1..=64).contains(&value.chars().count()) {
        return Err("must be 1 to 64 characters".into());
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// Characters that show nothing: spaces, and Unicode's default-ignorable
/// code points (zero-width spaces and joiners, direction marks, the soft
/// hyphen, the byte-order mark, variation selectors, tag characters, the
/// Hangul fillers), and the blank Braille pattern, which renders as a
/// space. A name of only these read as blank to every administrator.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFF8}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// The characters that reorder the text around them (Unicode's explicit
/// bidirectional formatting): in a name they make a mail's greeting, a
/// page or a certificate subject show something else than what is stored
/// ("Trojan Source", CVE-2021-42574). Right-to-left names need none of them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

const NO_BIDI_CONTROLS: &str =
    "must not contain bidirectional control characters (U+202A-U+202E, U+2066-U+2069 and the marks)";

pub fn text(value: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if value.chars().all(is_invisible) {
        return Err("must contain a visible character".into());
    }
    line_of_text(value, max)
}

/// A person's first name or surname: [`text`], and no `<` or `>`. Mails
/// and history show a person as `name <address>`; a name holding its own
/// `<someone@else>` made a request read as someone else's.
pub fn person_name(value: &str, max: usize) -> Result<(), String> {
    text(value, max)?;
    if value.contains(['<', '>']) {
        return Err("must not contain < or >".into());
    }
    Ok(())
}

/// Free text a person writes over one or more lines (a reason, a note, an
/// address): `min` to `max` characters once trimmed, and no control
/// character but line breaks and tabs. PostgreSQL cannot store a NUL (the
/// write failed as INTERNAL), and the other controls have no place in text
/// somebody reads.
pub fn lines_of_text(value: &str, min: usize, max: usize) -> Result<(), String> {
    let count = value.trim().chars().count();
    // Counted trimmed, so that blank lines around the text do not count
    // against it; but stored as sent, so the blank around it has a bound
    // too (megabytes of spaces went into history whole).
    let padded = value.chars().count() > max.saturating_mul(2).max(max + 100);
    if count < min || count > max || padded {
        return Err(if min == 0 {
            format!("must be at most {max} characters")
        } else {
            format!("must be {min} to {max} characters")
        });
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("must not contain control characters other than line breaks and tabs".into());
    }
    // A reason or a note goes into mails as it is: reordered, a link or a
    // file name reads as something else than what was written.
    if value.chars().any(is_bidi_control) {
        return Err(NO_BIDI_CONTROLS.into());
    }
    Ok(())
}

/// Optional free text on one line (a billing name, a reference): at most
/// `max` characters, no control character at all.
pub fn line_of_text(value: &str, max: usize) -> Result<(), String> {
    if value.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    // Unicode's line and paragraph separators are not controls, but every
    // mail reader and certificate viewer breaks the line there: one line
    // (a greeting's name, a subject) would show as several.
    if value.contains(['\u{2028}', '\u{2029}']) {
        return Err("must be one line (no line or paragraph separator, U+2028 or U+2029)".into());
    }
    if value.chars().any(is_bidi_control) {
        return Err(NO_BIDI_CONTROLS.into());
    }
    Ok(())
}

/// A username is a login id beside the e-mail address, compared by the same
/// key: it holds no `@`, so it can never equal anybody's address. One that
/// did (a user administrator naming a user "boss@firma.dk") made that
/// address name two people, and a login id naming two people opens no
/// login: the administrator whose address it was was locked out of Login
/// and of the self-service reset.
pub fn username(value: &str) -> Result<(), String> {
    let ok_len = (3..=64).contains(&value.chars().count());
    let ok_chars = value
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok_len || !ok_chars {
        return Err(
            "must be 3 to 64 letters, digits or . _ - (no @: an e-mail address is a login id of its own)".into(),
        );
    }
    Ok(())
}

pub fn phone(value: &str) -> Result<(), String> {
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let ok_chars = value
        .chars()
        .enumerate()
        .all(|(i, c)| c.is_ascii_digit() || c == ' ' || (c == '+' && i == 0));
    if !ok_chars || !(6..=15).contains(&digits) {
        return Err("must be 6 to 15 digits, optionally with a leading + and spaces".into());
    }
    Ok(())
}

pub fn external_ids(values: &[String]) -> Result<(), String> {
    if values.len() > 3 {
        return Err("at most three external ids".into());
    }
    for value in values {
        text(value, 100).map_err(|e| format!("each external id {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cvr_modulus_11() {
        assert!(cvr("10150817").is_ok()); // a real CVR number
        assert!(cvr("10150818").is_err());
        assert!(cvr("1015081").is_err());
        assert!(cvr("0150817x").is_err());
    }

    #[test]
    fn cpr_dates_and_centuries() {
        assert_eq!(
            cpr_birth_date("0101001234").unwrap(),
            NaiveDate::from_ymd_opt(1900, 1, 1).unwrap()
        );
        assert_eq!(
            cpr_birth_date("290200-4000").unwrap(),
            NaiveDate::from_ymd_opt(2000, 2, 29).unwrap()
        );
        // 29 Feb 1900 never happened.
        assert!(cpr_birth_date("2902001234").is_err());
        assert!(cpr_birth_date("3213901234").is_err());
        assert!(cpr_birth_date("12345").is_err());
        // One dash, after the date, or none.
        assert!(cpr_birth_date("010180-1234").is_ok());
        assert!(cpr_birth_date("01-01-80-12-34").is_err());
        assert!(cpr_birth_date("0101-801234").is_err());
        assert!(cpr_birth_date("010180--1234").is_err());
        assert!(cpr_birth_date("٠١٠١٨٠١٢٣٤").is_err());
        // Born 1 January 2030 (7th digit 4, year 30: the 2000s).
        let today = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        assert!(normalise_cpr_on("0101304123", today).is_err());
        assert_eq!(normalise_cpr_on("010180-1234", today).unwrap(), "0101801234");
        assert_eq!(mask_cpr("0101001234"), "010100-XXXX");
    }

    #[test]
    fn names_need_a_visible_character() {
        assert!(text("\u{200B}\u{200D}\u{FEFF}", 100).is_err());
        assert!(text(" \u{200B} ", 100).is_err());
        assert!(text("Ærø\u{200B}", 100).is_ok());
        // Blank-looking letters and default-ignorables: Hangul fillers, the
        // blank Braille pattern, tag characters, a variation selector.
        for blank in [
            "\u{3164}",
            "\u{115F}\u{1160}",
            "\u{FFA0}",
            "\u{2800}\u{2800}",
            "\u{E0041}\u{E0042}",
            "\u{FE0F}",
        ] {
            assert!(text(blank, 100).is_err(), "{blank:?}");
        }
        assert!(text("Ji-\u{D6C8}", 100).is_ok(), "a Hangul syllable shows");
    }

    #[test]
    fn ean_check_digit() {
        assert!(ean("5798000416604").is_ok());
        assert!(ean("5798000416605").is_err());
    }

    #[test]
    fn email_shapes() {
        assert!(email("anna@firma.dk").is_ok());
        assert!(email("anna.firma.dk").is_err());
        assert!(email("anna@firma").is_err());
        assert!(email("an na@firma.dk").is_err());
        assert!(email("x<evil@attacker.dk>").is_err());
    }

    #[test]
    fn birth_dates_have_one_written_form() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        assert_eq!(
            birth_date("1990-05-17", today).unwrap(),
            NaiveDate::from_ymd_opt(1990, 5, 17).unwrap()
        );
        for bad in [
            "1990-5-17",
            "+1990-05-17",
            "1990-05-7",
            " 1990-05-17",
            "1990/05/17",
            "1990-02-30",
            "19900517",
        ] {
            assert!(birth_date(bad, today).is_err(), "{bad:?} accepted");
        }
        assert!(birth_date("2027-01-01", today).is_err());
        assert_eq!(
            canonical_date(NaiveDate::from_ymd_opt(1990, 5, 7).unwrap()),
            "1990-05-07"
        );
        assert!(is_stored_date(Some("1990-5-17"), "1990-05-17"));
        assert!(is_stored_date(Some("1990-05-17"), "1990-05-17"));
        assert!(!is_stored_date(Some("1990-05-18"), "1990-05-17"));
        assert!(!is_stored_date(None, "1990-05-17"));
    }
}
