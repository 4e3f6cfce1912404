//! The import file (R-BULK-1): 15 semicolon-separated columns in a fixed
//! order with a header row in Danish, Swedish or English; UTF-8 with or
//! without a byte-order mark, else Windows-1252. Read incrementally with the
//! csv project's parser core, so a file of any size streams from the
//! database in bounded memory.

use encoding_rs::{Decoder, UTF_8, WINDOWS_1252};

use crate::model::Language;

crate::string_enum_pub!(
    /// How the worker read a file's bytes.
    FileEncoding {
        Utf8 => "UTF8",
        Utf8Bom => "UTF8_BOM",
        Windows1252 => "WINDOWS_1252",
    }
);

/// The 15 columns, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    UserId,
    Cpr,
    BirthDate,
    Email,
    FirstName,
    Surname,
    Username,
    Phone,
    Unit,
    Language,
    Roles,
    SigningRight,
    IdentificationMeans,
    ExternalId,
    LegacyId,
}

impl Column {
    pub const ALL: [Column; 15] = [
        Column::UserId,
        Column::Cpr,
        Column::BirthDate,
        Column::Email,
        Column::FirstName,
        Column::Surname,
        Column::Username,
        Column::Phone,
        Column::Unit,
        Column::Language,
        Column::Roles,
        Column::SigningRight,
        Column::IdentificationMeans,
        Column::ExternalId,
        Column::LegacyId,
    ];

    /// The name errors and reports use (English, stable).
    pub fn key(self) -> &'static str {
        match self {
            Column::UserId => "user_id",
            Column::Cpr => "cpr",
            Column::BirthDate => "birth_date",
            Column::Email => "email",
            Column::FirstName => "first_name",
            Column::Surname => "surname",
            Column::Username => "username",
            Column::Phone => "phone",
            Column::Unit => "unit",
            Column::Language => "language",
            Column::Roles => "roles",
            Column::SigningRight => "signing_right",
            Column::IdentificationMeans => "identification_means",
            Column::ExternalId => "external_id",
            Column::LegacyId => "legacy_id",
        }
    }

    /// The header cell in each language: Danish, Swedish, English.
    fn headers(self) -> [&'static str; 3] {
        match self {
            Column::UserId => ["Bruger-ID", "Användar-ID", "User ID"],
            Column::Cpr => ["CPR-nummer", "Personnummer", "CPR number"],
            Column::BirthDate => ["Fødselsdato", "Födelsedatum", "Birth date"],
            Column::Email => ["E-mail", "E-post", "E-mail"],
            Column::FirstName => ["Fornavn", "Förnamn", "First name"],
            Column::Surname => ["Efternavn", "Efternamn", "Surname"],
            Column::Username => ["Brugernavn", "Användarnamn", "Username"],
            Column::Phone => ["Telefon", "Telefon", "Phone"],
            Column::Unit => ["Enhed", "Enhet", "Unit"],
            Column::Language => ["Sprog", "Språk", "Language"],
            Column::Roles => ["Roller", "Roller", "Roles"],
            Column::SigningRight => ["Tegningsret", "Firmateckningsrätt", "Signing right"],
            Column::IdentificationMeans => ["Identifikationsmidler", "Identifieringsmetoder", "Identification means"],
            Column::ExternalId => ["Eksternt ID", "Externt ID", "External ID"],
            Column::LegacyId => ["RID-nummer", "RID-nummer", "RID number"],
        }
    }

    pub fn header(self, language: Language) -> &'static str {
        let [da, sv, en] = self.headers();
        match language {
            Language::Da => da,
            Language::Sv => sv,
            Language::En => en,
        }
    }

    /// Whether `cell` names this column in any of the three languages (or by
    /// its key): case, spaces, hyphens and underscores do not matter.
    fn is_named_by(self, cell: &str) -> bool {
        let wanted = header_key(cell);
        self.headers()
            .iter()
            .chain(std::iter::once(&self.key()))
            .any(|name| header_key(name) == wanted)
    }
}

fn header_key(text: &str) -> String {
    text.trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Checks a header row: 15 cells, each naming its column. The error names
/// the first cell that does not.
pub fn check_header(cells: &[String]) -> Result<(), String> {
    if cells.len() != Column::ALL.len() {
        return Err(format!(
            "the header row has {} columns; the file format has {} (see GetImportTemplate)",
            cells.len(),
            Column::ALL.len()
        ));
    }
    for (i, (cell, column)) in cells.iter().zip(Column::ALL).enumerate() {
        if !column.is_named_by(cell) {
            return Err(format!(
                "column {} of the header is {cell:?}; expected {:?} (or {:?}, {:?})",
                i + 1,
                column.header(Language::Da),
                column.header(Language::Sv),
                column.header(Language::En)
            ));
        }
    }
    Ok(())
}

/// A cell that clears an optional field in an edit file (an empty cell
/// leaves the field as it is).
pub fn is_clear_marker(cell: &str) -> bool {
    matches!(cell.trim().to_uppercase().as_str(), "#CLEAR" | "#RYD" | "#RENSA")
}

/// A spreadsheet would run a cell starting with one of these as a formula.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Prefixes a formula's start with an apostrophe, which shows the text as
/// it is: at the start of the cell, and after every comma (spaces aside).
/// An Excel whose list separator is the comma (English locales; the file's
/// is the semicolon, as in Danish and Swedish ones) splits the line there,
/// and the piece after a comma in a name (`x,=HYPERLINK(…)`) became a cell
/// of its own that ran.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    let piece_is_formula = |piece: &str| piece.trim_start_matches(' ').starts_with(FORMULA_STARTS);
    if !cell.starts_with(FORMULA_STARTS) && !cell.split(',').skip(1).any(piece_is_formula) {
        return std::borrow::Cow::Borrowed(cell);
    }
    let mut out = String::with_capacity(cell.len() + 4);
    for (i, piece) in cell.split(',').enumerate() {
        if i > 0 {
            out.push(',');
        }
        let formula = if i == 0 {
            piece.starts_with(FORMULA_STARTS)
        } else {
            piece_is_formula(piece)
        };
        if formula {
            let spaces = piece.len() - piece.trim_start_matches(' ').len();
            out.push_str(&piece[..spaces]);
            out.push('\'');
            out.push_str(&piece[spaces..]);
        } else {
            out.push_str(piece);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A CSV file for Excel: UTF-8 with a byte-order mark, semicolons, CRLF,
/// every cell neutralised.
pub fn excel_csv(rows: impl IntoIterator<Item = Vec<String>>) -> Vec<u8> {
    let mut out = b"\xEF\xBB\xBF".to_vec();
    {
        let mut writer = csv::WriterBuilder::new()
            .delimiter(b';')
            .terminator(csv::Terminator::CRLF)
            .from_writer(&mut out);
        for row in rows {
            // Writing to a Vec cannot fail.
            let _ = writer.write_record(row.iter().map(|c| neutralise(c).into_owned()));
        }
        let _ = writer.flush();
    }
    out
}

/// The template of an import kind: the header row in `language` and one
/// example row.
pub fn template(kind: super::ImportKind, language: Language) -> Vec<u8> {
    let header: Vec<String> = Column::ALL.iter().map(|c| c.header(language).to_owned()).collect();
    let cells: &[(Column, &str)] = match kind {
        super::ImportKind::Create => &[
            (Column::BirthDate, "1985-03-14"),
            (Column::Email, "karen.jensen@example.dk"),
            (Column::FirstName, "Karen"),
            (Column::Surname, "Jensen"),
            (Column::Language, "da"),
            (Column::Roles, "USER"),
        ],
        super::ImportKind::LegacyCreate => &[
            (Column::BirthDate, "1985-03-14"),
            (Column::Email, "karen.jensen@example.dk"),
            (Column::FirstName, "Karen"),
            (Column::Surname, "Jensen"),
            (Column::Language, "da"),
            (Column::Roles, "USER"),
            (Column::LegacyId, "RID-12345"),
        ],
        super::ImportKind::Edit => &[
            (Column::UserId, "00000000-0000-0000-0000-000000000000"),
            (Column::Email, "karen.jensen@example.dk"),
            (Column::Surname, "Jensen-Holm"),
            (Column::Phone, "#CLEAR"),
        ],
        super::ImportKind::Delete => &[
            (Column::UserId, "00000000-0000-0000-0000-000000000000"),
            (Column::Email, "karen.jensen@example.dk"),
        ],
    };
    let example = Column::ALL
        .iter()
        .map(|column| {
            cells
                .iter()
                .find(|(c, _)| c == column)
                .map_or(String::new(), |(_, value)| (*value).to_owned())
        })
        .collect();
    excel_csv([header, example])
}

/// Tracks whether the bytes of an upload, seen chunk by chunk, are valid
/// UTF-8 (a character may be split between two chunks), and whether they
/// hold UTF-8's letters beyond ASCII.
#[derive(Debug, Default)]
pub struct EncodingSniffer {
    carry: Vec<u8>,
    invalid: bool,
    /// A character of more than one byte was valid UTF-8 (`ø` as C3 B8).
    multibyte: bool,
    /// The file's first three bytes (a byte-order mark?).
    head: Vec<u8>,
}

/// The refusal of a file in two encodings at once.
pub const MIXED_ENCODINGS: &str = "mixes UTF-8 (e.g. ø as two bytes) with another encoding (e.g. ø as one byte, Windows-1252): read either way, some names would be stored garbled; save the file again as \"CSV UTF-8\"";

impl EncodingSniffer {
    pub fn push(&mut self, chunk: &[u8]) {
        if self.head.len() < 3 {
            let take = (3 - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(chunk);
        // On past each invalid byte: a file that is mostly Windows-1252 may
        // still hold UTF-8's letters, which that reading would garble.
        let mut rest = &bytes[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    self.multibyte |= !valid.is_ascii();
                    return;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    self.multibyte |= !valid.is_ascii();
                    match e.error_len() {
                        None => {
                            self.carry = after.to_vec();
                            return;
                        }
                        Some(bad) => {
                            self.invalid = true;
                            rest = &after[bad..];
                        }
                    }
                }
            }
        }
    }

    /// The encoding, once the whole file was pushed; refused
    /// ([`MIXED_ENCODINGS`]) when the file is both UTF-8 and not.
    pub fn finish(self) -> Result<FileEncoding, &'static str> {
        let invalid = self.invalid || !self.carry.is_empty();
        match (invalid, self.head == b"\xEF\xBB\xBF") {
            (true, _) if self.multibyte => Err(MIXED_ENCODINGS),
            (true, _) => Ok(FileEncoding::Windows1252),
            (false, true) => Ok(FileEncoding::Utf8Bom),
            (false, false) => Ok(FileEncoding::Utf8),
        }
    }
}

/// What the reader needs or found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A record: its cells (decoded, untrimmed).
    Record(Vec<String>),
    /// The next record is longer than `MAX_RECORD_BYTES` or has more than
    /// `MAX_CELLS` cells: no file of this format has one, and reading it
    /// whole took memory without bound (a 500 MiB line of semicolons, or an
    /// unclosed quote, ran a worker out of memory, and the next one that
    /// claimed the job after it). The reader stops there.
    TooLong,
    /// Feed the next chunk with `push`, or call `finish` when there is none.
    NeedInput,
    End,
}

/// The longest record a file may hold (15 cells of names, addresses and
/// ids take a few hundred bytes), and the most cells.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
pub const MAX_CELLS: usize = 64;

/// An incremental CSV reader: push the file's bytes in any pieces, take
/// records as they complete. Memory holds one chunk and one record.
pub struct RecordReader {
    decoder: Decoder,
    parser: csv_core::Reader,
    /// Decoded UTF-8 not yet parsed.
    input: Vec<u8>,
    at: usize,
    finished: bool,
    record: Vec<u8>,
    record_len: usize,
    ends: Vec<usize>,
    ends_len: usize,
    /// The row of the last record returned, as a spreadsheet numbers it:
    /// blank lines count (csv_core skips them), a quoted cell's line breaks
    /// do not.
    row: i64,
    /// Blank lines read since the last record.
    blank: i64,
    /// The last byte read was a CR: a LF right after it ends the same line.
    after_cr: bool,
    /// No byte of the next record is read yet: a line break here ends a
    /// blank line (inside a record, even before its first cell's first
    /// character, as in `"\r..."`, it is the record's).
    between_records: bool,
}

impl RecordReader {
    pub fn new(encoding: FileEncoding) -> Self {
        let decoder = match encoding {
            FileEncoding::Utf8 | FileEncoding::Utf8Bom => UTF_8.new_decoder_with_bom_removal(),
            FileEncoding::Windows1252 => WINDOWS_1252.new_decoder_without_bom_handling(),
        };
        Self {
            decoder,
            parser: csv_core::ReaderBuilder::new().delimiter(b';').build(),
            input: Vec::new(),
            at: 0,
            finished: false,
            record: vec![0; 1024],
            record_len: 0,
            ends: vec![0; 32],
            ends_len: 0,
            row: 0,
            blank: 0,
            after_cr: false,
            between_records: true,
        }
    }

    /// The row of the record `next_record` returned last (the first line
    /// is row 1), as a spreadsheet shows the file: what error messages name.
    pub fn row(&self) -> i64 {
        self.row
    }

    /// The next piece of the file's bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.decode(bytes, false);
    }

    /// No more bytes: the rest is decoded and the last record completes.
    pub fn finish(&mut self) {
        self.decode(&[], true);
        self.finished = true;
    }

    fn decode(&mut self, bytes: &[u8], last: bool) {
        self.input.drain(..self.at);
        self.at = 0;
        let room = self
            .decoder
            .max_utf8_buffer_length(bytes.len())
            .unwrap_or(bytes.len() * 3 + 16);
        let start = self.input.len();
        self.input.resize(start + room, 0);
        // Invalid UTF-8 cannot reach here (such a file is read as
        // Windows-1252, where every byte is a character); were it to, the
        // replacement character shows where.
        let (_, _, written, _) = self.decoder.decode_to_utf8(bytes, &mut self.input[start..], last);
        self.input.truncate(start + written);
    }

    pub fn next_record(&mut self) -> Next {
        loop {
            if self.between_records {
                self.skip_blank_lines();
            }
            let input = &self.input[self.at..];
            if input.is_empty() && !self.finished {
                return Next::NeedInput;
            }
            let (result, read, written, ended) = self.parser.read_record(
                input,
                &mut self.record[self.record_len..],
                &mut self.ends[self.ends_len..],
            );
            if read > 0 {
                self.after_cr = input[read - 1] == b'\r';
                self.between_records = false;
            }
            self.at += read;
            self.record_len += written;
            self.ends_len += ended;
            match result {
                csv_core::ReadRecordResult::InputEmpty => {
                    if !self.finished {
                        return Next::NeedInput;
                    }
                }
                csv_core::ReadRecordResult::OutputFull => {
                    if self.record.len() >= MAX_RECORD_BYTES {
                        return Next::TooLong;
                    }
                    let len = (self.record.len() * 2).min(MAX_RECORD_BYTES);
                    self.record.resize(len, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    if self.ends.len() >= MAX_CELLS {
                        return Next::TooLong;
                    }
                    let len = (self.ends.len() * 2).min(MAX_CELLS);
                    self.ends.resize(len, 0);
                }
                csv_core::ReadRecordResult::Record => {
                    let mut cells = Vec::with_capacity(self.ends_len);
                    let mut from = 0;
                    for &end in &self.ends[..self.ends_len] {
                        cells.push(String::from_utf8_lossy(&self.record[from..end]).into_owned());
                        from = end;
                    }
                    self.record_len = 0;
                    self.ends_len = 0;
                    self.row += self.blank + 1;
                    self.blank = 0;
                    self.between_records = true;
                    return Next::Record(cells);
                }
                csv_core::ReadRecordResult::End => return Next::End,
            }
        }
    }

    /// Between records: reads the line breaks of blank lines, counting
    /// them (CR LF, LF and CR each end one line, as csv_core reads them).
    fn skip_blank_lines(&mut self) {
        while let Some(&byte) = self.input.get(self.at) {
            match byte {
                // The LF of the CR LF that ended the line before.
                b'\n' if self.after_cr => {}
                b'\n' | b'\r' => self.blank += 1,
                _ => return,
            }
            self.after_cr = byte == b'\r';
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn read_all(bytes: &[u8], encoding: FileEncoding, piece: usize) -> Vec<Vec<String>> {
        let mut reader = RecordReader::new(encoding);
        let mut pieces = bytes.chunks(piece.max(1));
        let mut records = Vec::new();
        loop {
            match reader.next_record() {
                Next::Record(cells) => records.push(cells),
                Next::NeedInput => match pieces.next() {
                    Some(p) => reader.push(p),
                    None => reader.finish(),
                },
                Next::End | Next::TooLong => return records,
            }
        }
    }

    /// The rows (as `RecordReader::row` gives them) of every record.
    fn rows_of(bytes: &[u8], piece: usize) -> Vec<(i64, String)> {
        let mut reader = RecordReader::new(FileEncoding::Utf8);
        let mut pieces = bytes.chunks(piece.max(1));
        let mut rows = Vec::new();
        loop {
            match reader.next_record() {
                Next::Record(cells) => rows.push((reader.row(), cells.join(","))),
                Next::NeedInput => match pieces.next() {
                    Some(p) => reader.push(p),
                    None => reader.finish(),
                },
                Next::End | Next::TooLong => return rows,
            }
        }
    }

    /// Error messages name rows as a spreadsheet shows the file: blank
    /// lines count, whatever ends them, and a quoted cell's line breaks do
    /// not. Before, rows after a blank line were named one too low.
    #[test]
    fn rows_are_numbered_as_a_spreadsheet_shows_them() {
        let file = b"\r\nh;1\r\n\r\na;2\n\nb;3\rc;4\r\r\n\"x\r\ny\";5\nz;6";
        for piece in [1, 2, 3, 5, 1000] {
            assert_eq!(
                rows_of(file, piece),
                vec![
                    (2, "h,1".to_owned()),
                    (4, "a,2".to_owned()),
                    (6, "b,3".to_owned()),
                    (7, "c,4".to_owned()),
                    (9, "x\r\ny,5".to_owned()),
                    (10, "z,6".to_owned()),
                ],
                "pieces of {piece}"
            );
            // A line break at the start of a quoted first cell is the
            // cell's, not a blank line.
            assert_eq!(
                rows_of(b"\"\r\";1\r\n\"\n\";2", piece),
                vec![(1, "\r,1".to_owned()), (2, "\n,2".to_owned())],
                "pieces of {piece}"
            );
        }
    }

    fn sniff(bytes: &[u8], piece: usize) -> FileEncoding {
        sniffed(bytes, piece).expect("one encoding")
    }

    fn sniffed(bytes: &[u8], piece: usize) -> Result<FileEncoding, &'static str> {
        let mut sniffer = EncodingSniffer::default();
        for p in bytes.chunks(piece.max(1)) {
            sniffer.push(p);
        }
        sniffer.finish()
    }

    #[test]
    fn a_file_in_two_encodings_is_refused() {
        // "Søren" in UTF-8, "Ærø" in Windows-1252, in one file.
        let mixed = b"S\xC3\xB8ren;\xC6r\xF8\r\n";
        for piece in [1, 2, 3, 1000] {
            assert_eq!(sniffed(mixed, piece), Err(MIXED_ENCODINGS), "pieces of {piece}");
            // Either alone is one encoding.
            assert_eq!(sniffed(b"S\xC3\xB8ren;\r\n", piece), Ok(FileEncoding::Utf8));
            assert_eq!(sniffed(b"\xC6r\xF8;S\xF8ren\r\n", piece), Ok(FileEncoding::Windows1252));
        }
        // A byte-order mark is UTF-8 too.
        assert_eq!(sniffed(b"\xEF\xBB\xBFa;\xF8\r\n", 1000), Err(MIXED_ENCODINGS));
    }

    #[test]
    fn quoted_cells_semicolons_line_breaks_and_crlf() {
        let file = "a;b\r\n\"x;y\";\"line\r\nbreak\"\r\n\"say \"\"hi\"\"\";\r\n";
        for piece in [1, 2, 3, 7, 1000] {
            assert_eq!(
                read_all(file.as_bytes(), FileEncoding::Utf8, piece),
                vec![
                    vec!["a".to_string(), "b".into()],
                    vec!["x;y".into(), "line\r\nbreak".into()],
                    vec!["say \"hi\"".into(), "".into()],
                ],
                "piece {piece}"
            );
        }
    }

    #[test]
    fn bom_is_dropped_and_reported() {
        let file = "\u{FEFF}Æble;Øre\nå;ö\n".as_bytes();
        assert_eq!(sniff(file, 1), FileEncoding::Utf8Bom);
        assert_eq!(
            read_all(file, FileEncoding::Utf8Bom, 2)[0],
            vec!["Æble".to_string(), "Øre".into()]
        );
        assert_eq!(sniff("å;ö".as_bytes(), 1), FileEncoding::Utf8);
    }

    #[test]
    fn windows_1252_is_decoded() {
        // "Søren;Åse;Müller;Ölund" as Excel's "CSV (semikolonsepareret)" writes it.
        let (bytes, _, _) = WINDOWS_1252.encode("Søren;Åse;Müller;Ölund\r\n");
        assert_eq!(sniff(&bytes, 3), FileEncoding::Windows1252);
        assert_eq!(
            read_all(&bytes, FileEncoding::Windows1252, 3),
            vec![vec!["Søren".to_string(), "Åse".into(), "Müller".into(), "Ölund".into()]]
        );
    }

    #[test]
    fn a_character_split_between_chunks_is_still_utf8() {
        let file = "Ærø;Østergård\n".as_bytes();
        for piece in 1..6 {
            assert_eq!(sniff(file, piece), FileEncoding::Utf8);
        }
        // A file cut in the middle of a character is not UTF-8.
        assert_eq!(sniff(&file[..1], 1), FileEncoding::Windows1252);
    }

    #[test]
    fn headers_in_three_languages_and_mixed() {
        for language in Language::ALL {
            let cells: Vec<String> = Column::ALL.iter().map(|c| c.header(*language).to_owned()).collect();
            assert_eq!(check_header(&cells), Ok(()), "{language}");
        }
        let mut cells: Vec<String> = Column::ALL.iter().map(|c| c.key().to_uppercase()).collect();
        assert_eq!(check_header(&cells), Ok(()));
        cells[3] = "Mobil".into();
        let err = check_header(&cells).unwrap_err();
        assert!(err.contains("column 4") && err.contains("E-mail"), "{err}");
        assert!(check_header(&cells[..14]).unwrap_err().contains("14 columns"));
    }

    #[test]
    fn the_template_reads_back_with_its_own_header() {
        for kind in super::super::ImportKind::ALL {
            for language in Language::ALL {
                let file = template(*kind, *language);
                let records = read_all(&file, sniff(&file, 5), 5);
                assert_eq!(records.len(), 2);
                assert_eq!(check_header(&records[0]), Ok(()));
                assert_eq!(records[1].len(), 15);
            }
        }
    }

    /// A record past the bounds stops the reader, its buffers no larger
    /// than the bounds; the records before it are read.
    #[test]
    fn a_record_past_the_bounds_stops_the_reader() {
        let mut wide = b"a;b\r\n".to_vec();
        wide.extend(std::iter::repeat_n(b';', MAX_CELLS));
        let mut long = b"a;b\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + 1));
        let mut open_quote = b"a;b\r\n\"".to_vec();
        open_quote.extend(std::iter::repeat_n(b'x', 3 * MAX_RECORD_BYTES));
        for file in [wide, long, open_quote] {
            let mut reader = RecordReader::new(FileEncoding::Utf8);
            reader.push(&file);
            reader.finish();
            assert!(matches!(reader.next_record(), Next::Record(cells) if cells == ["a", "b"]));
            assert!(matches!(reader.next_record(), Next::TooLong));
            assert!(reader.record.len() <= MAX_RECORD_BYTES && reader.ends.len() <= MAX_CELLS);
        }
        // At the bounds exactly, a record is read.
        let mut most = vec![b'x'; MAX_RECORD_BYTES - MAX_CELLS];
        most.extend(std::iter::repeat_n(b';', MAX_CELLS - 1));
        assert_eq!(read_all(&most, FileEncoding::Utf8, 4096)[0].len(), MAX_CELLS);
    }

    #[test]
    fn formula_cells_are_neutralised() {
        for cell in ["=1+1", "+45", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert!(neutralise(cell).starts_with('\''), "{cell:?}");
        }
        assert_eq!(neutralise("Karen"), "Karen");
        // After a comma too, where an English Excel splits the line.
        assert_eq!(neutralise("x,=cmd|' /C calc'!A0,y"), "x,'=cmd|' /C calc'!A0,y");
        assert_eq!(neutralise("Ærø, @SUM(A1)"), "Ærø, '@SUM(A1)");
        assert_eq!(neutralise("=a,-b"), "'=a,'-b");
        assert_eq!(neutralise("Jensen, Karen"), "Jensen, Karen");
        let csv = String::from_utf8(excel_csv([vec!["=HYPERLINK(\"x\")".to_string()]])).unwrap();
        assert!(csv.contains("'=HYPERLINK"), "{csv}");
    }

    proptest! {
        // No input panics, whatever the bytes and however they are cut; the
        // reader always ends.
        #[test]
        fn any_bytes_read_to_the_end(bytes in proptest::collection::vec(any::<u8>(), 0..400), piece in 1usize..64) {
            // A file in two encodings at once is refused before it is read.
            let Ok(encoding) = sniffed(&bytes, piece) else {
                return Ok(());
            };
            let records = read_all(&bytes, encoding, piece);
            // Every byte but separators lands in some cell, so a non-empty
            // file without line breaks yields at least one record.
            if !bytes.is_empty() && !bytes.iter().any(|b| *b == b'\n' || *b == b'\r') {
                prop_assert!(!records.is_empty());
            }
        }

        // Cells written by the csv writer read back as they were, in any
        // encoding the sniffer picks.
        #[test]
        fn written_cells_read_back(rows in proptest::collection::vec(proptest::collection::vec("[a-zæøåÆØÅöä;\" \r\n]{0,8}", 15), 1..6), piece in 1usize..32) {
            let mut writer = csv::WriterBuilder::new().delimiter(b';').from_writer(Vec::new());
            for row in &rows {
                writer.write_record(row).unwrap();
            }
            let bytes = writer.into_inner().unwrap();
            let encoding = sniff(&bytes, piece);
            prop_assert_eq!(encoding, FileEncoding::Utf8);
            let read = read_all(&bytes, encoding, piece);
            prop_assert_eq!(read, rows);
        }
    }
}
