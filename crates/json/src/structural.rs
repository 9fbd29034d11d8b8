//! First pass: the structural index of a document, 64 bytes at a time (simdjson's first
//! stage): where each bracket, colon, comma, string and other scalar starts, outside strings.
//!
//! Errors found here: a control character inside a string, a bad escape, an unclosed string.

/// Bit masks of one 64-byte block, bit `i` for byte `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BlockMasks {
    /// `\`.
    pub backslash: u64,
    /// `"`.
    pub quote: u64,
    /// `{ } [ ] : ,`.
    pub operator: u64,
    /// Space, tab, line feed, carriage return (JSON's whitespace).
    pub whitespace: u64,
    /// Bytes below 0x20 (never allowed raw inside a string).
    pub control: u64,
}

/// The masks of a block, byte by byte: the definition the vectorised version is tested
/// against, and the version on CPUs without AVX2.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "avx2"))))]
pub(super) fn portable_block_masks(block: &[u8; 64]) -> BlockMasks {
    let mut m = BlockMasks {
        backslash: 0,
        quote: 0,
        operator: 0,
        whitespace: 0,
        control: 0,
    };
    for (i, &b) in block.iter().enumerate() {
        let bit = 1u64 << i;
        match b {
            b'\\' => m.backslash |= bit,
            b'"' => m.quote |= bit,
            b'{' | b'}' | b'[' | b']' | b':' | b',' => m.operator |= bit,
            b' ' | b'\t' | b'\n' | b'\r' => m.whitespace |= bit,
            _ => {}
        }
        if b < 0x20 {
            m.control |= bit;
        }
    }
    m
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
mod avx2 {
    //! AVX2 through `safe_arch`'s safe wrappers (the workspace forbids `unsafe`; the crate
    //! exposes each intrinsic only when the build enables its CPU feature).
    use safe_arch::{
        bitand_m256i, cmp_eq_mask_i8_m256i, cmp_gt_mask_i8_m256i, m256i, max_u8_m256i, move_mask_i8_m256i,
        set_splat_i8_m256i, shr_imm_u16_m256i, shuffle_av_i8z_half_m256i, zeroed_m256i,
    };

    use super::BlockMasks;

    /// Classes by low and high nibble (simdjson's lookup): a byte's class is the AND of its
    /// two entries. Bits 1, 2, 4: comma, colon, brackets; 8: space; 16: tab, LF, CR.
    const LOW_NIBBLE: [u8; 32] = [
        8, 0, 0, 0, 0, 0, 0, 0, 0, 16, 18, 4, 1, 20, 0, 0, //
        8, 0, 0, 0, 0, 0, 0, 0, 0, 16, 18, 4, 1, 20, 0, 0,
    ];
    const HIGH_NIBBLE: [u8; 32] = [
        16, 0, 9, 2, 0, 4, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, //
        16, 0, 9, 2, 0, 4, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    fn mask(v: m256i) -> u64 {
        u64::from(move_mask_i8_m256i(v) as u32)
    }

    fn eq(v: m256i, byte: u8) -> u64 {
        mask(cmp_eq_mask_i8_m256i(v, set_splat_i8_m256i(byte as i8)))
    }

    fn half(v: m256i) -> [u64; 5] {
        let nibble = set_splat_i8_m256i(0x0f);
        let low = bitand_m256i(v, nibble);
        let high = bitand_m256i(shr_imm_u16_m256i::<4>(v), nibble);
        let class = bitand_m256i(
            shuffle_av_i8z_half_m256i(m256i::from(LOW_NIBBLE), low),
            shuffle_av_i8z_half_m256i(m256i::from(HIGH_NIBBLE), high),
        );
        let zero = zeroed_m256i();
        let operator = mask(cmp_gt_mask_i8_m256i(bitand_m256i(class, set_splat_i8_m256i(7)), zero));
        let whitespace = mask(cmp_gt_mask_i8_m256i(bitand_m256i(class, set_splat_i8_m256i(24)), zero));
        // Unsigned `v <= 0x1f` as `max(v, 0x1f) == 0x1f`.
        let limit = set_splat_i8_m256i(0x1f);
        let control = mask(cmp_eq_mask_i8_m256i(max_u8_m256i(v, limit), limit));
        [eq(v, b'\\'), eq(v, b'"'), operator, whitespace, control]
    }

    /// [`super::portable_block_masks`], vectorised.
    pub(crate) fn block_masks(block: &[u8; 64]) -> BlockMasks {
        let (first, second) = block.split_at(32);
        let as_vector = |bytes: &[u8]| {
            let mut array = [0u8; 32];
            array.copy_from_slice(bytes);
            m256i::from(array)
        };
        let [backslash, quote, operator, whitespace, control] = half(as_vector(first));
        let [backslash_hi, quote_hi, operator_hi, whitespace_hi, control_hi] = half(as_vector(second));
        BlockMasks {
            backslash: backslash | (backslash_hi << 32),
            quote: quote | (quote_hi << 32),
            operator: operator | (operator_hi << 32),
            whitespace: whitespace | (whitespace_hi << 32),
            control: control | (control_hi << 32),
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
pub(super) use avx2::block_masks;

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
pub(super) use portable_block_masks as block_masks;

/// Every bit that is set in `x` or in an odd number of the bits below it: the bytes from an
/// opening quote up to (not including) its closing one.
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// Why the first pass refused a document (the caller reads it again with serde_json, whose
/// error is the one reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Malformed;

/// The structural index of a document (see [`index`]).
#[derive(Debug, Default)]
pub(super) struct Index {
    /// Offsets of the structural bytes in the first `len` slots; the buffer only grows, so
    /// a thread's later documents reuse it without clearing it.
    slots: Vec<u32>,
    /// How many slots hold offsets.
    len: usize,
    /// Offsets of every backslash, in order (rare in admission objects): a string without one
    /// between its quotes is read in place.
    pub backslashes: Vec<u32>,
}

impl Index {
    /// Bytes held by the buffers.
    pub(super) fn footprint(&self) -> usize {
        (self.slots.capacity() + self.backslashes.capacity()) * size_of::<u32>()
    }

    /// The offsets of the structural bytes, in order.
    #[inline]
    pub(super) fn offsets(&self) -> &[u32] {
        self.slots.get(..self.len).unwrap_or_default()
    }
}

/// Indexes `json`: the offset of every structural byte (brackets, colons, commas, the
/// opening quote of each string and the first byte of each other scalar: numbers, `true`,
/// `false`, `null`, and any stray bytes, which the second pass refuses), and of every
/// backslash.
pub(super) fn index(json: &[u8], out: &mut Index) -> Result<(), Malformed> {
    out.len = 0;
    out.backslashes.clear();
    // Offsets are `u32`, and the second pass marks entries with the top bit: documents of
    // 2 GiB or more are left to serde_json.
    if json.len() >= 1 << 31 {
        return Err(Malformed);
    }
    // Room for a structural byte in four (admission objects have one in five or six),
    // grown by the blocks when a document has more.
    let room = json.len() / 4 + 64;
    if out.slots.len() < room {
        out.slots.resize(room, 0);
    }
    let mut scan = Scan::default();
    let mut chunks = json.chunks_exact(64);
    let mut base = 0usize;
    for chunk in chunks.by_ref() {
        let block: &[u8; 64] = chunk.try_into().map_err(|_| Malformed)?;
        scan.block(json, base, block, u64::MAX, out)?;
        base += 64;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // Padded with spaces; the padding's bits are masked off.
        let mut tail = [b' '; 64];
        let (head, _) = tail.split_at_mut(rest.len());
        head.copy_from_slice(rest);
        scan.block(json, base, &tail, (1u64 << rest.len()) - 1, out)?;
    }
    if scan.bad != 0 || scan.prev_in_string != 0 {
        return Err(Malformed);
    }
    Ok(())
}

/// What carries from one block to the next.
#[derive(Default)]
struct Scan {
    /// Whether the first byte of the next block is escaped.
    prev_escaped: u64,
    /// All ones when the next block starts inside a string.
    prev_in_string: u64,
    /// Whether the last byte was part of a scalar other than a quote.
    prev_scalar: u64,
    /// Control characters found inside strings.
    bad: u64,
}

impl Scan {
    #[inline(always)]
    fn block(
        &mut self,
        json: &[u8],
        base: usize,
        block: &[u8; 64],
        valid: u64,
        out: &mut Index,
    ) -> Result<(), Malformed> {
        let m = block_masks(block);
        let escaped = if m.backslash | self.prev_escaped == 0 {
            0
        } else {
            let escaped = self.escaped(m.backslash);
            check_escapes(json, base, escaped)?;
            let mut backslashes = m.backslash & valid;
            while backslashes != 0 {
                out.backslashes
                    .push((base + backslashes.trailing_zeros() as usize) as u32);
                backslashes &= backslashes - 1;
            }
            escaped
        };
        let quote = m.quote & !escaped;
        let in_string = prefix_xor(quote) ^ self.prev_in_string;
        self.prev_in_string = ((in_string as i64) >> 63) as u64;
        self.bad |= m.control & in_string;
        // Inside strings, closing quotes included, opening ones not.
        let string_tail = in_string ^ quote;
        let scalar = !(m.operator | m.whitespace);
        let nonquote_scalar = scalar & !quote;
        let follows_nonquote_scalar = (nonquote_scalar << 1) | self.prev_scalar;
        self.prev_scalar = nonquote_scalar >> 63;
        let scalar_start = scalar & !follows_nonquote_scalar;
        let structurals = (m.operator | scalar_start) & !string_tail & valid;
        // Offsets are written eight at a time, unconditionally (past the last one too, into
        // the 64 slots made sure of here): fewer branches than one write per offset.
        if out.slots.len() < out.len + 64 {
            let grown = (out.slots.len() * 2).max(out.len + 64);
            out.slots.resize(grown, 0);
        }
        let slots = out.slots.get_mut(out.len..out.len + 64).ok_or(Malformed)?;
        let mut bits = structurals;
        let base32 = base as u32;
        for eight in slots.chunks_exact_mut(8) {
            if bits == 0 {
                break;
            }
            for slot in eight {
                *slot = base32.wrapping_add(bits.trailing_zeros());
                bits &= bits.wrapping_sub(1);
            }
        }
        out.len += structurals.count_ones() as usize;
        Ok(())
    }

    /// Bytes escaped by a backslash: odd-length backslash runs escape the byte after them
    /// (simdjson's carry-aware formulation).
    fn escaped(&mut self, backslash: u64) -> u64 {
        const EVEN: u64 = 0x5555_5555_5555_5555;
        let backslash = backslash & !self.prev_escaped;
        let follows_escape = (backslash << 1) | self.prev_escaped;
        let odd_starts = backslash & !EVEN & !follows_escape;
        let (sequences_on_even, overflow) = odd_starts.overflowing_add(backslash);
        let invert = sequences_on_even << 1;
        self.prev_escaped = u64::from(overflow);
        (EVEN ^ invert) & follows_escape
    }
}

/// Each escaped byte (bit set in `escaped`, the block at `base`) is one JSON allows after a
/// backslash; `\u` takes four hex digits. Escapes are rare, so this runs per escape.
fn check_escapes(json: &[u8], base: usize, mut escaped: u64) -> Result<(), Malformed> {
    while escaped != 0 {
        let at = base + escaped.trailing_zeros() as usize;
        match json.get(at) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
            Some(b'u')
                if json
                    .get(at + 1..at + 5)
                    .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) => {}
            // A backslash at the very end escapes padding: an unclosed string, refused.
            _ => return Err(Malformed),
        }
        escaped &= escaped - 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The vectorised masks are the byte-by-byte ones, on any block (biased to JSON's
        /// special bytes so every class is exercised).
        #[test]
        fn block_masks_match_the_definition(
            bytes in proptest::collection::vec(
                prop_oneof![
                    Just(b'"'), Just(b'\\'), Just(b'{'), Just(b'}'), Just(b'['), Just(b']'),
                    Just(b':'), Just(b','), Just(b' '), Just(b'\t'), Just(b'\n'), Just(b'\r'),
                    any::<u8>(),
                ],
                64,
            )
        ) {
            let block: [u8; 64] = bytes.try_into().unwrap();
            prop_assert_eq!(block_masks(&block), portable_block_masks(&block));
        }
    }

    fn structurals(json: &str) -> Vec<u8> {
        let mut out = Index::default();
        index(json.as_bytes(), &mut out).unwrap();
        out.offsets().iter().map(|&i| json.as_bytes()[i as usize]).collect()
    }

    #[test]
    fn strings_hide_their_contents() {
        assert_eq!(structurals(r#"{"a{,":[1, "x\"]"]}"#), b"{\":[1,\"]}");
    }

    #[test]
    fn escaped_backslashes_end_strings() {
        assert_eq!(structurals(r#"["a\\", 2]"#), b"[\",2]");
    }

    #[test]
    fn strings_and_escapes_across_blocks() {
        let long = format!(r#"["{}\"{}", true]"#, "x".repeat(62), "y".repeat(100));
        assert_eq!(structurals(&long), b"[\",t]");
        let run = format!(r#"["{}\\\\", 1]"#, "x".repeat(61));
        assert_eq!(structurals(&run), b"[\",1]");
    }

    #[test]
    fn refuses_bad_strings() {
        let mut out = Index::default();
        for bad in [
            "\"abc",
            "[\"a\tb\"]",
            r#"["\x"]"#,
            r#"["\u12G4"]"#,
            r#"["\u12"]"#,
            "\"abc\\",
        ] {
            assert_eq!(index(bad.as_bytes(), &mut out), Err(Malformed), "{bad:?}");
        }
        assert_eq!(index(br#"["\u12aF\n\/"]"#, &mut out), Ok(()));
    }
}
