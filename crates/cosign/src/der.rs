//! The few DER operations x509-parser does not offer: removing one extension from a
//! TBSCertificate (to rebuild the precertificate an SCT signs) and reading a UTF8String.

/// One TLV: its tag, the whole encoding, and its contents.
struct Tlv<'a> {
    tag: u8,
    whole: &'a [u8],
    contents: &'a [u8],
}

/// Reads the TLV at the start of `input`; returns it and the rest. Short tags, definite
/// lengths only (DER).
fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2usize)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..count {
            len = (len << 8) | usize::from(*input.get(2 + i)?);
        }
        (len, 2 + count)
    };
    let end = header.checked_add(len)?;
    let whole = input.get(..end)?;
    let contents = input.get(header..end)?;
    Some((Tlv { tag, whole, contents }, input.get(end..)?))
}

fn children(mut contents: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    while !contents.is_empty() {
        let (tlv, rest) = read_tlv(contents)?;
        out.push(tlv);
        contents = rest;
    }
    Some(out)
}

pub(crate) fn encode(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(contents);
    out
}

/// The TBSCertificate DER `tbs` without the extension whose OID contents are `oid`;
/// `None` when `tbs` is not DER of that shape.
pub(crate) fn tbs_without_extension(tbs: &[u8], oid: &[u8]) -> Option<Vec<u8>> {
    let (outer, rest) = read_tlv(tbs)?;
    if outer.tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let mut body = Vec::with_capacity(tbs.len());
    for field in children(outer.contents)? {
        if field.tag != 0xa3 {
            body.extend_from_slice(field.whole);
            continue;
        }
        // [3] EXPLICIT Extensions ::= SEQUENCE OF Extension
        let (seq, after) = read_tlv(field.contents)?;
        if seq.tag != 0x30 || !after.is_empty() {
            return None;
        }
        let mut kept = Vec::with_capacity(seq.contents.len());
        for ext in children(seq.contents)? {
            let (ext_oid, _) = read_tlv(ext.contents)?;
            if !(ext_oid.tag == 0x06 && ext_oid.contents == oid) {
                kept.extend_from_slice(ext.whole);
            }
        }
        body.extend_from_slice(&encode(0xa3, &encode(0x30, &kept)));
    }
    Some(encode(0x30, &body))
}

/// The text of a DER UTF8String (the OIDC issuer extension `1.3.6.1.4.1.57264.1.8`).
pub(crate) fn utf8_string(der: &[u8]) -> Option<&str> {
    let (tlv, rest) = read_tlv(der)?;
    if tlv.tag != 0x0c || !rest.is_empty() {
        return None;
    }
    std::str::from_utf8(tlv.contents).ok()
}

/// The `genTime` (Unix seconds) of an RFC 3161 TimeStampResp or bare token (CMS ContentInfo
/// holding SignedData whose encapsulated content is a TSTInfo); `None` when it is not of that
/// shape. Only read, never trusted: the TSA's signature is not verified here.
pub(crate) fn rfc3161_gen_time(der: &[u8]) -> Option<i64> {
    let seq = |tlv: &Tlv<'_>| (tlv.tag == 0x30).then_some(());
    let (outer, _) = read_tlv(der)?;
    seq(&outer)?;
    let mut info = children(outer.contents)?;
    // TimeStampResp ::= SEQUENCE { status PKIStatusInfo (a SEQUENCE), timeStampToken }
    if info.first().is_some_and(|t| t.tag == 0x30) {
        let token = info.get(1)?;
        seq(token)?;
        info = children(token.contents)?;
    }
    // ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT SignedData }
    let signed = info.get(1).filter(|t| t.tag == 0xa0)?;
    let (signed, _) = read_tlv(signed.contents)?;
    seq(&signed)?;
    // SignedData ::= SEQUENCE { version, digestAlgorithms, encapContentInfo, ... }
    let signed = children(signed.contents)?;
    let encap = signed.get(2)?;
    seq(encap)?;
    let encap = children(encap.contents)?;
    let explicit = encap.get(1).filter(|t| t.tag == 0xa0)?;
    let (octets, _) = read_tlv(explicit.contents)?;
    let (tst, _) = read_tlv(octets.contents).filter(|_| octets.tag == 0x04)?;
    seq(&tst)?;
    // TSTInfo ::= SEQUENCE { version, policy, messageImprint, serialNumber, genTime, ... }
    let tst = children(tst.contents)?;
    let gen_time = tst.get(4).filter(|t| t.tag == 0x18)?;
    generalized_time(std::str::from_utf8(gen_time.contents).ok()?)
}

/// `YYYYMMDDHHMMSS[.fff]Z` as Unix seconds.
fn generalized_time(text: &str) -> Option<i64> {
    let digits = text.get(..14)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !text.ends_with('Z') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<u16>().ok());
    let month = time::Month::try_from(u8::try_from(n(4..6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(i32::from(n(0..4)?), month, u8::try_from(n(6..8)?).ok()?).ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(n(8..10)?).ok()?,
        u8::try_from(n(10..12)?).ok()?,
        u8::try_from(n(12..14)?).ok()?,
    )
    .ok()?;
    Some(time::PrimitiveDateTime::new(date, clock).assume_utc().unix_timestamp())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ext(oid: &[u8], value_len: usize) -> Vec<u8> {
        encode(
            0x30,
            &[encode(0x06, oid), encode(0x04, &vec![0xab; value_len])].concat(),
        )
    }

    #[test]
    fn removes_only_the_named_extension_and_fixes_lengths() {
        let (keep, drop) = (&[0x55, 0x1d, 0x0f][..], &[0x2b, 0x06, 0x01][..]);
        for value_len in [3, 200, 70_000] {
            let tbs = |exts: &[Vec<u8>]| {
                encode(
                    0x30,
                    &[encode(0x02, &[2]), encode(0xa3, &encode(0x30, &exts.concat()))].concat(),
                )
            };
            let with = tbs(&[ext(keep, 5), ext(drop, value_len), ext(keep, value_len)]);
            let without = tbs(&[ext(keep, 5), ext(keep, value_len)]);
            assert_eq!(tbs_without_extension(&with, drop).unwrap(), without);
            assert_eq!(tbs_without_extension(&without, drop).unwrap(), without);
        }
        assert_eq!(tbs_without_extension(&[0x30, 0x05, 0x02], drop), None);
        assert_eq!(tbs_without_extension(&[], drop), None);
    }

    #[test]
    fn generalized_times() {
        assert_eq!(generalized_time("20230201000000Z"), Some(1_675_209_600));
        assert_eq!(generalized_time("20230201000000.123Z"), Some(1_675_209_600));
        assert_eq!(generalized_time("20231301000000Z"), None);
        assert_eq!(generalized_time("2023020100000Z"), None);
        assert_eq!(generalized_time("20230201000000"), None);
    }
}
