//! PSA's message helpers: quoting, joining and pluralising exactly as its Go code does.

use std::fmt::Write as _;

/// `singular` for a count of one, else `plural` (PSA's `pluralize`).
pub(super) fn pluralize(singular: &'static str, plural: &'static str, count: usize) -> &'static str {
    if count == 1 { singular } else { plural }
}

/// `"a", "b"`; empty for no items (PSA's `joinQuote`, which does not escape).
pub(super) fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    let mut out = String::new();
    push_join_quote(&mut out, items);
    out
}

/// [`join_quote`], appended to `out`.
fn push_join_quote<S: AsRef<str>>(out: &mut String, items: &[S]) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('"');
        out.push_str(item.as_ref());
        out.push('"');
    }
}

/// `"<kind> \"a\", \"b\""`, the `container "x"` / `containers "x", "y"` phrase.
pub(super) fn named<S: AsRef<str>>(singular: &'static str, plural: &'static str, items: &[S]) -> String {
    // One buffer sized up front (quotes and separators counted): these phrases are in
    // most PSA messages.
    let kind = pluralize(singular, plural, items.len());
    let quoted: usize = items.iter().map(|i| i.as_ref().len() + 4).sum();
    let mut out = String::with_capacity(kind.len() + 1 + quoted);
    out.push_str(kind);
    out.push(' ');
    push_join_quote(&mut out, items);
    out
}

/// Sorts and de-duplicates, as Go's `sets.String.List()` returns a set's members.
pub(super) fn sorted_set(mut items: Vec<&str>) -> Vec<&str> {
    items.sort_unstable();
    items.dedup();
    items
}

/// Names once each, keeping the first-seen (visiting) order.
pub(super) fn once_each(names: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if !out.iter().any(|n| n == name) {
            out.push((*name).to_owned());
        }
    }
    out
}

/// Quotes a string as Go's `%q` (`strconv.Quote`) does.
///
/// Go escapes characters that are not printable by its own Unicode tables; here every ASCII
/// case is exact, and outside ASCII control, space-separator and the common format
/// characters are escaped (the rest of Go's table has no std counterpart).
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if !c.is_ascii() && not_printable(c) => {
                let code = c as u32;
                if code <= 0xffff {
                    let _ = write!(out, "\\u{code:04x}");
                } else {
                    let _ = write!(out, "\\U{code:08x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Non-ASCII characters Go's `strconv.IsPrint` rejects (see [`go_quote`]).
fn not_printable(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        || matches!(
            c,
            '\u{ad}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{feff}'
        )
}
