//! The `_mta-sts` TXT record grammar (RFC 8461 §3.1, RFC 8461 §3.1).
//!
//! ```text
//! sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
//! sts-field       = sts-id / sts-extension
//! sts-field-delim = *WSP ";" *WSP
//! sts-version     = %s"v=STSv1"
//! sts-id          = %s"id=" 1*32(ALPHA / DIGIT)
//! sts-extension   = sts-ext-name "=" sts-ext-value
//! sts-ext-name    = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
//! sts-ext-value   = 1*(%x21-3A / %x3C / %x3E-7E)
//! ```

/// The version tag every MTA-STS TXT record starts with (RFC 8461 §3.1).
const VERSION: &[u8] = b"v=STSv1";

/// Longest `id` value and extension name (RFC 8461 §3.1).
const MAX_ID_LEN: usize = 32;

/// A valid `_mta-sts` TXT record (RFC 8461 §3.1); extension fields are
/// accepted and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StsRecord {
    /// The policy id: 1 to 32 letters and digits.
    pub id: String,
}

/// Which rule of the RFC 8461 §3.1 grammar a record breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidReason {
    /// The record does not start with exactly `v=STSv1`.
    BadVersion,
    /// A field separator (`;`) is missing, doubled, or a field is empty.
    BadDelimiter,
    /// A field has no `=`.
    MissingEquals,
    /// An extension name is not `(ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")`.
    BadFieldName,
    /// An extension value is empty or has bytes outside `%x21-3A / %x3C / %x3E-7E`.
    BadFieldValue,
    /// The `id` value is not 1 to 32 letters and digits.
    BadId,
    /// More than one `id` field.
    DuplicateId,
    /// No `id` field.
    MissingId,
}

/// Why the TXT lookup gives no usable MTA-STS record (RFC 8461 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxtError {
    /// No record starts with `v=STSv1`.
    #[error("no v=STSv1 TXT record")]
    NoStsRecord,
    /// More than one record starts with `v=STSv1`: the domain has no policy
    /// (RFC 8461 §3.1: "If multiple TXT records ... are returned, ... the
    /// Policy Domain has no policy").
    #[error("multiple v=STSv1 TXT records")]
    MultipleStsRecords,
    /// The single STS record does not follow the grammar.
    #[error("invalid v=STSv1 TXT record: {0:?}")]
    Invalid(InvalidReason),
}

/// True for SP and HTAB, ABNF `WSP` (RFC 5234 Appendix B.1).
fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// True when `record` is an STS record at all: it starts with the version
/// field `v=STSv1` followed by a delimiter or the end (so `v=STSv10` is not
/// one, RFC 8461 §3.1).
fn is_sts_record(record: &[u8]) -> bool {
    match record.strip_prefix(VERSION) {
        Some(rest) => rest.first().is_none_or(|&b| b == b';' || is_wsp(b)),
        None => false,
    }
}

/// Picks the one STS record among the TXT records of `_mta-sts.<domain>`
/// (each already concatenated) and parses it (RFC 8461 §3.1). Records that
/// are not STS records (e.g. `v=spf1 ...`) are ignored.
pub fn parse_sts_records(records: &[Vec<u8>]) -> Result<StsRecord, TxtError> {
    let mut sts = records.iter().filter(|r| is_sts_record(r));
    match (sts.next(), sts.next()) {
        (None, _) => Err(TxtError::NoStsRecord),
        (Some(_), Some(_)) => Err(TxtError::MultipleStsRecords),
        (Some(record), None) => parse_sts_record(record),
    }
}

/// Parses one STS TXT record per the RFC 8461 §3.1 grammar. Trailing
/// whitespace without a final `;` is tolerated (the one leniency beyond the
/// ABNF); bytes outside printable ASCII make the record invalid.
pub fn parse_sts_record(record: &[u8]) -> Result<StsRecord, TxtError> {
    let invalid = |reason| Err(TxtError::Invalid(reason));
    if !is_sts_record(record) {
        return invalid(InvalidReason::BadVersion);
    }
    let mut rest = record.get(VERSION.len()..).unwrap_or_default();
    let mut id: Option<&[u8]> = None;
    loop {
        // sts-field-delim, or the end of the record.
        rest = trim_wsp(rest);
        if rest.is_empty() {
            break;
        }
        let Some(after) = rest.strip_prefix(b";") else {
            return invalid(InvalidReason::BadDelimiter);
        };
        rest = trim_wsp(after);
        if rest.is_empty() {
            break; // optional trailing delimiter
        }
        // sts-field: everything up to the next WSP or ";".
        let end = rest
            .iter()
            .position(|&b| b == b';' || is_wsp(b))
            .unwrap_or(rest.len());
        if end == 0 {
            return invalid(InvalidReason::BadDelimiter); // ";;": an empty field
        }
        let (field, tail) = rest.split_at(end);
        rest = tail;
        match parse_field(field)? {
            Field::Id(_) if id.is_some() => return invalid(InvalidReason::DuplicateId),
            Field::Id(value) => id = Some(value),
            Field::Extension => {}
        }
    }
    match id.map(std::str::from_utf8) {
        Some(Ok(id)) => Ok(StsRecord { id: id.to_owned() }),
        // Unreachable: parse_field only accepts ASCII alphanumeric ids.
        Some(Err(_)) => invalid(InvalidReason::BadId),
        None => invalid(InvalidReason::MissingId),
    }
}

/// One `sts-field`.
enum Field<'a> {
    /// `id=<value>`, value already validated.
    Id(&'a [u8]),
    /// A valid extension field, ignored (RFC 8461 §3.1).
    Extension,
}

/// Parses one field (no WSP or `;` inside) as `sts-id` or `sts-extension`.
/// A field named exactly `id` must be a valid `sts-id`: an over-long id
/// would otherwise pass as an extension and hide the error.
fn parse_field(field: &[u8]) -> Result<Field<'_>, TxtError> {
    let invalid = |reason| Err(TxtError::Invalid(reason));
    let mut parts = field.splitn(2, |&b| b == b'=');
    let (name, Some(value)) = (parts.next().unwrap_or_default(), parts.next()) else {
        return invalid(InvalidReason::MissingEquals);
    };
    if name == b"id" {
        if value.is_empty()
            || value.len() > MAX_ID_LEN
            || !value.iter().all(u8::is_ascii_alphanumeric)
        {
            return invalid(InvalidReason::BadId);
        }
        return Ok(Field::Id(value));
    }
    let name_ok = name.first().is_some_and(u8::is_ascii_alphanumeric)
        && name.len() <= MAX_ID_LEN
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !name_ok {
        return invalid(InvalidReason::BadFieldName);
    }
    let value_ok = !value.is_empty()
        && value
            .iter()
            .all(|&b| matches!(b, 0x21..=0x3a | 0x3c | 0x3e..=0x7e));
    if !value_ok {
        return invalid(InvalidReason::BadFieldValue);
    }
    Ok(Field::Extension)
}

/// `bytes` without leading WSP.
fn trim_wsp(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_wsp(b))
        .unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(s: &str) -> Result<StsRecord, TxtError> {
        Ok(StsRecord { id: s.to_owned() })
    }

    fn bad(r: InvalidReason) -> Result<StsRecord, TxtError> {
        Err(TxtError::Invalid(r))
    }

    #[test]
    fn rfc_example() {
        assert_eq!(
            parse_sts_record(b"v=STSv1; id=20160831085700Z;"),
            id("20160831085700Z")
        );
    }

    #[test]
    fn whitespace_variants() {
        for rec in [
            "v=STSv1;id=abc",
            "v=STSv1;id=abc;",
            "v=STSv1 ; id=abc ; ",
            "v=STSv1\t;\tid=abc",
            "v=STSv1;   id=abc   ;   ",
            "v=STSv1; id=abc ",
        ] {
            assert_eq!(parse_sts_record(rec.as_bytes()), id("abc"), "{rec:?}");
        }
    }

    #[test]
    fn invalid_records() {
        use InvalidReason::*;
        for (rec, why) in [
            ("v=STSv1", MissingId),
            ("v=STSv1;", MissingId),
            ("v=STSv1; ID=abc", MissingId),
            ("v=STSv1; id=", BadId),
            ("v=STSv1; id=abc-def", BadId),
            ("v=STSv1; id=abc_def", BadId),
            ("v=STSv1; id=a\u{e9}", BadId),
            ("v=STSv1; id=a; id=a", DuplicateId),
            ("v=STSv1; id=a;; x=1", BadDelimiter),
            ("v=STSv1; id=a b", BadDelimiter),
            ("v=STSv1 id=a", BadDelimiter),
            ("v=STSv1; id", MissingEquals),
            ("v=STSv1; id=a; =x", BadFieldName),
            ("v=STSv1; id=a; _x=1", BadFieldName),
            ("v=STSv1; id=a; x/y=1", BadFieldName),
            ("v=STSv1; id=a; x=", BadFieldValue),
            ("v=STSv1; id=a; x=a=b", BadFieldValue),
            ("v=STSv1; id=a; x=caf\u{e9}", BadFieldValue),
            (" v=STSv1; id=a", BadVersion),
            ("v=STSv10; id=a", BadVersion),
            ("v=stsv1; id=a", BadVersion),
            ("id=a; v=STSv1", BadVersion),
        ] {
            assert_eq!(parse_sts_record(rec.as_bytes()), bad(why), "{rec:?}");
        }
    }

    #[test]
    fn id_length_limits() {
        let max = "a1".repeat(16);
        let rec = format!("v=STSv1; id={max}");
        assert_eq!(parse_sts_record(rec.as_bytes()), id(&max));
        let rec = format!("v=STSv1; id={max}Z");
        assert_eq!(parse_sts_record(rec.as_bytes()), bad(InvalidReason::BadId));
    }

    #[test]
    fn extensions_are_ignored() {
        let name32 = format!("x{}", "_-.9".repeat(7) + "abc");
        assert_eq!(name32.len(), 32);
        let rec = format!("v=STSv1; ext.a-b_c=~!:<>?; id=42; {name32}=v;");
        assert_eq!(parse_sts_record(rec.as_bytes()), id("42"));
        let rec = format!("v=STSv1; id=42; {name32}z=v");
        assert_eq!(
            parse_sts_record(rec.as_bytes()),
            bad(InvalidReason::BadFieldName)
        );
    }

    #[test]
    fn non_ascii_bytes_are_invalid() {
        assert_eq!(
            parse_sts_record(b"v=STSv1; id=a\xff"),
            bad(InvalidReason::BadId)
        );
        assert_eq!(
            parse_sts_record(b"v=STSv1; id=a; x=\x00"),
            bad(InvalidReason::BadFieldValue)
        );
    }

    #[test]
    fn record_selection() {
        let spf = b"v=spf1 -all".to_vec();
        let one = b"v=STSv1; id=one".to_vec();
        let two = b"v=STSv1; id=two".to_vec();
        assert_eq!(parse_sts_records(&[]), Err(TxtError::NoStsRecord));
        assert_eq!(
            parse_sts_records(std::slice::from_ref(&spf)),
            Err(TxtError::NoStsRecord)
        );
        assert_eq!(parse_sts_records(&[spf.clone(), one.clone()]), id("one"));
        assert_eq!(
            parse_sts_records(&[one.clone(), spf.clone(), two]),
            Err(TxtError::MultipleStsRecords)
        );
        // v=STSv10 is not an STS record, so it neither counts nor conflicts.
        assert_eq!(
            parse_sts_records(&[b"v=STSv10; id=ten".to_vec(), one]),
            id("one")
        );
        assert_eq!(
            parse_sts_records(&[b"v=STSv10; id=ten".to_vec()]),
            Err(TxtError::NoStsRecord)
        );
        // The single STS record is invalid: the whole lookup is invalid.
        assert_eq!(
            parse_sts_records(&[spf, b"v=STSv1".to_vec()]),
            bad(InvalidReason::MissingId)
        );
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = parse_sts_record(&data);
            let mut prefixed = b"v=STSv1; ".to_vec();
            prefixed.extend_from_slice(&data);
            let _ = parse_sts_record(&prefixed);
        }

        #[test]
        fn records_never_panic(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4)
        ) {
            let _ = parse_sts_records(&records);
        }

        #[test]
        fn any_alnum_id_parses(
            value in "[A-Za-z0-9]{1,32}",
            sep in "[ \t]{0,2};[ \t]{0,2}",
            trailer in prop::option::of("[ \t]{0,2};[ \t]{0,2}"),
        ) {
            let rec = format!("v=STSv1{sep}id={value}{}", trailer.unwrap_or_default());
            prop_assert_eq!(parse_sts_record(rec.as_bytes()), Ok(StsRecord { id: value }));
        }
    }
}
