//! Second pass: the grammar of JSON checked over the structural index, numbers and literals
//! checked, and every opening bracket paired with its closing one, so that a reader skips a
//! value of any size in one step.

use super::structural::{self, Malformed};

/// A checked document's structural index.
#[derive(Debug, Default)]
pub(super) struct Tape {
    /// The structural bytes (see [`structural::index`]).
    pub index: structural::Index,
    /// For the entry of an opening bracket, the entry of its closing one (others hold stale
    /// values; the buffer only grows).
    jump: Vec<u32>,
    /// Open brackets while checking: entry, and [`OBJECT`] for `{`.
    stack: Vec<u32>,
}

/// Marks an object in [`Tape::stack`].
const OBJECT: u32 = 1 << 31;

/// JSON's whitespace.
#[inline]
pub(super) fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl Tape {
    /// Indexes and checks `json`: `Ok` only for exactly one valid JSON value (RFC 8259),
    /// surrounded by whitespace at most. UTF-8 is the caller's to check.
    pub(super) fn build(&mut self, json: &[u8]) -> Result<(), Malformed> {
        structural::index(json, &mut self.index)?;
        let entries = self.index.offsets().len();
        if self.jump.len() < entries {
            self.jump.resize(entries, 0);
        }
        self.stack.clear();
        self.check(json)
    }

    /// Bytes held by the buffers.
    pub(super) fn footprint(&self) -> usize {
        self.index.footprint() + (self.jump.capacity() + self.stack.capacity()) * size_of::<u32>()
    }

    /// The offsets of the structural bytes.
    #[inline]
    pub(super) fn offsets(&self) -> &[u32] {
        self.index.offsets()
    }

    /// The byte at entry `i`, 0 past the end.
    #[inline]
    pub(super) fn byte(&self, json: &[u8], i: usize) -> u8 {
        self.offsets()
            .get(i)
            .and_then(|&at| json.get(at as usize))
            .copied()
            .unwrap_or(0)
    }

    /// For the entry of an opening bracket, the entry of its closing one.
    #[inline]
    pub(super) fn closing(&self, i: usize) -> Option<usize> {
        self.jump.get(i).map(|&close| close as usize)
    }

    /// The end (exclusive) of the string or scalar token at entry `i`: the token runs up to
    /// the next structural byte, less whitespace (stage one makes any other byte after a
    /// token a structural of its own).
    #[inline]
    pub(super) fn token_end(&self, json: &[u8], i: usize) -> usize {
        token_end(json, self.offsets(), i)
    }

    /// Runs the grammar's automaton over the structural bytes: a table gives the next
    /// state, or an action, for each state and byte; brackets also push or pop the
    /// container stack.
    fn check(&mut self, json: &[u8]) -> Result<(), Malformed> {
        let Tape { index, jump, stack } = self;
        let offsets = index.offsets();
        // The state after a value in the innermost container (the end, at the top level).
        let mut after = END;
        let mut state = VALUE;
        for (i, &at) in offsets.iter().enumerate() {
            let byte = json.get(at as usize).copied().unwrap_or(0);
            // The index is below 16 * 256 (masked, so no bounds check).
            let next = STEP
                .get((usize::from(state & 15) << 8) | usize::from(byte))
                .copied()
                .unwrap_or(ERROR);
            if next < AFTER {
                state = next;
                continue;
            }
            match next {
                AFTER => {
                    if byte != b'"' {
                        let end = token_end(json, offsets, i);
                        if !json.get(at as usize..end).is_some_and(is_literal_or_number) {
                            return Err(Malformed);
                        }
                    }
                    state = after;
                }
                OPEN_OBJECT | OPEN_ARRAY => {
                    stack.push(i as u32 | if next == OPEN_OBJECT { OBJECT } else { 0 });
                    (state, after) = if next == OPEN_OBJECT {
                        (KEY_OR_CLOSE, NEXT_IN_OBJECT)
                    } else {
                        (VALUE_OR_CLOSE, NEXT_IN_ARRAY)
                    };
                }
                CLOSE => {
                    let open = stack.pop().ok_or(Malformed)?;
                    pair(jump, (open & !OBJECT) as usize, i)?;
                    after = match stack.last() {
                        None => END,
                        Some(&top) if top & OBJECT != 0 => NEXT_IN_OBJECT,
                        Some(_) => NEXT_IN_ARRAY,
                    };
                    state = after;
                }
                _ => return Err(Malformed),
            }
        }
        if state == END { Ok(()) } else { Err(Malformed) }
    }
}

// States of the grammar's automaton, and the table's actions.
/// A value.
const VALUE: u8 = 0;
/// A value or `]` (just after `[`).
const VALUE_OR_CLOSE: u8 = 1;
/// A key or `}` (just after `{`).
const KEY_OR_CLOSE: u8 = 2;
/// A key (after a comma in an object).
const KEY: u8 = 3;
/// The colon after a key.
const COLON: u8 = 4;
/// `,` or `}`.
const NEXT_IN_OBJECT: u8 = 5;
/// `,` or `]`.
const NEXT_IN_ARRAY: u8 = 6;
/// Nothing more: the top-level value is complete.
const END: u8 = 7;
/// Action: a value is complete; the state is the container's `after`.
const AFTER: u8 = 8;
/// Action: `{` opens an object.
const OPEN_OBJECT: u8 = 9;
/// Action: `[` opens an array.
const OPEN_ARRAY: u8 = 10;
/// Action: the bracket closes the innermost container (the table admits only the right one).
const CLOSE: u8 = 11;
/// Action: the byte is not allowed here.
const ERROR: u8 = 12;

// Classes of structural bytes.
const C_OPEN_OBJECT: u8 = 0;
const C_CLOSE_OBJECT: u8 = 1;
const C_OPEN_ARRAY: u8 = 2;
const C_CLOSE_ARRAY: u8 = 3;
const C_COLON: u8 = 4;
const C_COMMA: u8 = 5;
const C_STRING: u8 = 6;
/// The first byte of a number or literal (checked whole when met).
const C_SCALAR: u8 = 7;
/// Anything else (a stray byte).
const C_OTHER: u8 = 8;

/// The class of each byte.
#[allow(clippy::indexing_slicing, reason = "evaluated at compile time")]
static CLASS: [u8; 256] = {
    let mut class = [C_OTHER; 256];
    class[b'{' as usize] = C_OPEN_OBJECT;
    class[b'}' as usize] = C_CLOSE_OBJECT;
    class[b'[' as usize] = C_OPEN_ARRAY;
    class[b']' as usize] = C_CLOSE_ARRAY;
    class[b':' as usize] = C_COLON;
    class[b',' as usize] = C_COMMA;
    class[b'"' as usize] = C_STRING;
    class[b't' as usize] = C_SCALAR;
    class[b'f' as usize] = C_SCALAR;
    class[b'n' as usize] = C_SCALAR;
    class[b'-' as usize] = C_SCALAR;
    let mut digit = b'0';
    while digit <= b'9' {
        class[digit as usize] = C_SCALAR;
        digit += 1;
    }
    class
};

/// The action or next state for each state and byte, at `state << 8 | byte`.
#[allow(clippy::indexing_slicing, reason = "evaluated at compile time")]
static STEP: [u8; 16 * 256] = {
    let mut table = [[ERROR; 16]; 16];
    let next = &mut table;
    let mut s = 0;
    while s < 2 {
        // VALUE and VALUE_OR_CLOSE.
        next[s][C_OPEN_OBJECT as usize] = OPEN_OBJECT;
        next[s][C_OPEN_ARRAY as usize] = OPEN_ARRAY;
        next[s][C_STRING as usize] = AFTER;
        next[s][C_SCALAR as usize] = AFTER;
        s += 1;
    }
    next[VALUE_OR_CLOSE as usize][C_CLOSE_ARRAY as usize] = CLOSE;
    next[KEY_OR_CLOSE as usize][C_STRING as usize] = COLON;
    next[KEY_OR_CLOSE as usize][C_CLOSE_OBJECT as usize] = CLOSE;
    next[KEY as usize][C_STRING as usize] = COLON;
    next[COLON as usize][C_COLON as usize] = VALUE;
    next[NEXT_IN_OBJECT as usize][C_COMMA as usize] = KEY;
    next[NEXT_IN_OBJECT as usize][C_CLOSE_OBJECT as usize] = CLOSE;
    next[NEXT_IN_ARRAY as usize][C_COMMA as usize] = VALUE;
    next[NEXT_IN_ARRAY as usize][C_CLOSE_ARRAY as usize] = CLOSE;
    let mut flat = [ERROR; 16 * 256];
    let mut i = 0;
    while i < 16 * 256 {
        flat[i] = table[i >> 8][CLASS[i & 255] as usize];
        i += 1;
    }
    flat
};

/// Records that the bracket at entry `open` closes at entry `close`.
fn pair(jump: &mut [u32], open: usize, close: usize) -> Result<(), Malformed> {
    *jump.get_mut(open).ok_or(Malformed)? = close as u32;
    Ok(())
}

/// [`Tape::token_end`].
#[inline]
fn token_end(json: &[u8], offsets: &[u32], i: usize) -> usize {
    let limit = offsets.get(i + 1).map_or(json.len(), |&at| at as usize);
    let start = offsets.get(i).map_or(limit, |&at| at as usize);
    let mut end = limit;
    while end > start && json.get(end - 1).is_some_and(|&b| is_whitespace(b)) {
        end -= 1;
    }
    end
}

/// `true`, `false`, `null` or a number in JSON's grammar
/// (`-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`).
fn is_literal_or_number(token: &[u8]) -> bool {
    if matches!(token, b"true" | b"false" | b"null") {
        return true;
    }
    let digits = |from: usize| {
        token
            .get(from..)
            .map_or(0, |rest| rest.iter().take_while(|b| b.is_ascii_digit()).count())
    };
    let mut i = usize::from(token.first() == Some(&b'-'));
    match token.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i += digits(i),
        _ => return false,
    }
    if token.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n == 0 {
            return false;
        }
        i += 1 + n;
    }
    if matches!(token.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(token.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return false;
        }
        i += n;
    }
    i == token.len()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn valid(json: &str) -> bool {
        Tape::default().build(json.as_bytes()).is_ok()
    }

    #[test]
    fn accepts_valid_json() {
        for ok in [
            "0",
            "-0",
            "1.5e-3",
            "-12E+4",
            "true",
            " null ",
            "\"\"",
            "[]",
            "{}",
            "[[],{}]",
            r#"{"a":[1,{"b":null}],"c":"d"}"#,
            " { \"a\" : [ 1 , 2 ] } \n",
        ] {
            assert!(valid(ok), "{ok:?}");
        }
    }

    #[test]
    fn refuses_invalid_json() {
        for bad in [
            "",
            " ",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "tru",
            "truex",
            "nul",
            "[1,]",
            "[,1]",
            "{\"a\":1,}",
            "{\"a\"}",
            "{\"a\" 1}",
            "{1:2}",
            "[1 2]",
            "[\"a\" \"b\"]",
            "[\"a\"\"b\"]",
            "\"a\"b",
            "[1}",
            "{\"a\":1]",
            "[[]",
            "[]]",
            "{} {}",
            "1 2",
            "[1\"a\"]",
            "[1,\"a\\\"]",
            "'a'",
            "[NaN]",
            "\u{feff}{}",
        ] {
            assert!(!valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn pairs_brackets() {
        let json = br#"{"a":[1,[2]],"b":{}}"#;
        let mut tape = Tape::default();
        tape.build(json).unwrap();
        let close = |i: usize| json[tape.offsets()[tape.closing(i).unwrap()] as usize];
        assert_eq!(close(0), b'}');
        assert_eq!(tape.closing(0).unwrap(), tape.offsets().len() - 1);
        assert_eq!(close(3), b']');
        assert_eq!(tape.offsets()[tape.closing(3).unwrap()], 11);
        // `{}` and `[]` pair too.
        tape.build(b"[{},[]]").unwrap();
        assert_eq!(tape.closing(1), Some(2));
        assert_eq!(tape.closing(4), Some(5));
    }
}
