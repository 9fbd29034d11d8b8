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
