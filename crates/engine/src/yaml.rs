//! YAML reading with guards, each checked before yaml_serde builds anything:
//!
//! - the YAML parser spends time quadratic in the nesting depth of flow collections, so deeply
//!   nested input is refused;
//! - anchors and aliases are refused: yaml_serde bounds how many alias jumps a document makes,
//!   not how much each one expands, so a 50 KB document of one 10,000-item anchor referenced
//!   10,000 times becomes 10^8 values. Policy, ruleset and attestor documents (Vision One's
//!   among them) never use them. The event stream is read with `saphyr-parser`, which keeps
//!   an alias as one event;
//! - as a backstop should the two parsers ever disagree on what is an alias, the values a
//!   document expands to are counted (without building them) against a budget an alias-free
//!   document of its size cannot reach.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Flow collections (`[`, `{`) nested deeper than this are refused before YAML parsing: the
/// YAML parser spends time quadratic in the flow nesting depth (a 4 MB line of `{"a":` takes
/// minutes), and deserialization refuses more than 128 levels anyway.
pub const MAX_FLOW_DEPTH: usize = 128;

/// Whether `text` opens more than `max` nested flow collections, outside quoted scalars and
/// comments. An approximation of YAML's tokens: a quote or a comment counts only where a
/// token may start, so `it's` in a plain scalar opens no quote.
pub fn flow_depth_exceeds(text: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut prev = b'\n';
    let mut bytes = text.iter().copied();
    while let Some(b) = bytes.next() {
        match quote {
            Some(b'"') if b == b'\\' => {
                bytes.next();
            }
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => {
                let token_start = matches!(prev, b' ' | b'\t' | b'\r' | b'\n' | b'[' | b'{' | b',' | b':');
                match b {
                    b'"' | b'\'' if token_start => quote = Some(b),
                    b'#' if matches!(prev, b' ' | b'\t' | b'\r' | b'\n') => {
                        // A comment: skip to the end of the line.
                        for c in bytes.by_ref() {
                            if c == b'\n' {
                                break;
                            }
                        }
                        prev = b'\n';
                        continue;
                    }
                    b'[' | b'{' => {
                        depth += 1;
                        if depth > max {
                            return true;
                        }
                    }
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
        }
        prev = b;
    }
    false
}

/// Parses one YAML document after [`check`]: too deep flow nesting, anchors and aliases are
/// refused before parsing. (No size limit here: this also reads Kubernetes manifests, which
/// may be larger than a policy; policy, ruleset and attestor readers add the limit.)
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    check(text)?;
    yaml_serde::from_str(text).map_err(|e| e.to_string())
}

/// Every guard of this module on `text`: flow nesting, anchors and aliases, expansion.
pub fn check(text: &str) -> Result<(), String> {
    check_depth(text)?;
    check_no_aliases(text)?;
    check_expansion(text)
}

/// Refuses a document that declares an anchor (`&name`) or uses an alias (`*name`), naming
/// the line. Text the event parser cannot read is left to yaml_serde, whose error says why.
pub fn check_no_aliases(text: &str) -> Result<(), String> {
    use saphyr_parser::{Event, Parser};
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else {
            return Ok(());
        };
        let what = match event {
            Event::Alias(_) => "an alias (*name)",
            Event::Scalar(_, _, anchor, _) | Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _)
                if anchor != 0 =>
            {
                "an anchor (&name)"
            }
            Event::StreamEnd => return Ok(()),
            _ => continue,
        };
        return Err(format!(
            "line {}: {what}: YAML anchors and aliases are not accepted in policy, ruleset and attestor documents",
            span.start.line()
        ));
    }
    Ok(())
}

/// The most values an alias-free document of `len` bytes can hold, with room to spare: a
/// value takes at least one byte of text, except the implicit nulls of `?` and `[?]`, which
/// make at most two more per two bytes.
fn expansion_budget(len: usize) -> usize {
    len.saturating_mul(2).saturating_add(64)
}

/// Refuses a document that expands to more values than its text can hold without aliases
/// ([`expansion_budget`]); counts them through yaml_serde without building any, stopping at
/// the budget. Other errors are left to the real parse.
pub fn check_expansion(text: &str) -> Result<(), String> {
    let budget = expansion_budget(text.len());
    let mut counter = Counter { left: budget };
    match counter.deserialize(yaml_serde::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(OVER_BUDGET) => Err(format!(
            "the document expands to more than {budget} values (YAML aliases); refused"
        )),
        _ => Ok(()),
    }
}

const OVER_BUDGET: &str = "portcullis: expansion budget exceeded";

/// Counts the values of a document, failing once more than `left` are seen.
struct Counter {
    left: usize,
}

impl Counter {
    fn tick<E: de::Error>(&mut self) -> Result<(), E> {
        self.left = self.left.checked_sub(1).ok_or_else(|| E::custom(OVER_BUDGET))?;
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for &mut Counter {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Counter {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.tick()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.tick()
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.tick()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.tick()
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.tick()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.tick()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.tick()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.tick()?;
        while seq.next_element_seed(&mut *self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.tick()?;
        while map.next_key_seed(&mut *self)?.is_some() {
            map.next_value_seed(&mut *self)?;
        }
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value (`!tag value`): count the value under the tag.
        use de::VariantAccess as _;
        let ((), variant) = data.variant_seed(&mut *self)?;
        variant.newtype_variant_seed(&mut *self)
    }
}

/// Refuses text whose flow collections nest deeper than [`MAX_FLOW_DEPTH`].
pub fn check_depth(text: &str) -> Result<(), String> {
    if flow_depth_exceeds(text.as_bytes(), MAX_FLOW_DEPTH) {
        return Err(format!("collections nested more than {MAX_FLOW_DEPTH} deep"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// One anchor of `items` values referenced `refs` times, in the ignored `id` field.
    fn laughs(items: usize, refs: usize) -> String {
        format!(
            "name: p\nid:\n  a: &a [{}]\n  b: [{}]\ndefault:\n  rules: []\n",
            vec!["0"; items].join(","),
            vec!["*a"; refs].join(",")
        )
    }

    #[test]
    fn anchors_and_aliases_are_refused_naming_the_line() {
        let err = check_no_aliases(&laughs(3, 2)).unwrap_err();
        assert!(err.starts_with("line 3: an anchor (&name)"), "{err}");
        // An alias comes after its anchor, which is refused first; one with no anchor is an
        // error of its own.
        assert!(from_str::<serde_json::Value>("a: 1\nb: *x\n").is_err());
        let err = from_str::<serde_json::Value>("k: &a {x: 1}\n").unwrap_err();
        assert!(err.contains("anchors and aliases are not accepted"), "{err}");
        // `&` and `*` inside scalars are text.
        for text in [
            "a: Tom & Jerry\nb: '*x'\nc: x*y\nd: \"&a\"\n",
            "d: |\n  * a bullet\n  & more\n",
            "e: first line\n  *emphasis* on the next\n",
        ] {
            assert_eq!(check(text), Ok(()), "{text}");
            assert!(from_str::<serde_json::Value>(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn the_expansion_count_stops_at_the_budget() {
        // Read alone, the backstop refuses the expanding document (10^8 values) after counting
        // its budget, and passes an alias-free one and one whose aliases expand little.
        let err = check_expansion(&laughs(10_000, 10_000)).unwrap_err();
        assert!(err.contains("expands to more than"), "{err}");
        assert_eq!(check_expansion(&laughs(3, 2)), Ok(()));
        let flat = format!("a: [{}]\nb: {{?, ?}}\nc: [?, ?, ?]\n", vec!["x"; 5000].join(","));
        assert_eq!(check_expansion(&flat), Ok(()));
        assert_eq!(
            check_expansion("[?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?]"),
            Ok(())
        );
        // Syntax errors are the real parse's to report.
        assert_eq!(check_expansion("a: [1, 2"), Ok(()));
    }

    #[test]
    fn flow_depth_counts_open_collections() {
        assert!(!flow_depth_exceeds(b"a: [[[1]]]\nb: {c: {d: [2]}}\n", 3));
        assert!(flow_depth_exceeds(b"a: [[[[1]]]]\n", 3));
        // Closed collections do not add up.
        assert!(!flow_depth_exceeds("x: [[]]\n".repeat(100).as_bytes(), 2));
        assert!(flow_depth_exceeds(r#"{"a":{"a":{"a":{"a":1}}}}"#.as_bytes(), 3));
    }

    #[test]
    fn flow_depth_ignores_quoted_scalars_and_comments() {
        assert!(!flow_depth_exceeds(br#"a: "[[[[\"[[[["" # [[[["#, 1));
        assert!(!flow_depth_exceeds(b"a: '[[[[' # [[[[\nb: [1]\n", 1));
        assert!(!flow_depth_exceeds(b"# [[[[\n  # {{{{\nb: [1]\n", 1));
        // An apostrophe inside a plain scalar opens no quote: what follows is still counted.
        assert!(flow_depth_exceeds(b"a: it's\nb: [[[1]]]\n", 2));
        // `#` inside a plain scalar is not a comment.
        assert!(flow_depth_exceeds(b"a: x#y [[[1]]]\n", 2));
    }
}
