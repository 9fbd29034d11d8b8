//! YAML reading with a guard: the YAML parser spends time quadratic in the nesting depth of
//! flow collections, so deeply nested input is refused before it is parsed.

use serde::de::DeserializeOwned;

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

/// Parses one YAML document, refusing flow collections nested deeper than [`MAX_FLOW_DEPTH`].
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    check_depth(text)?;
    yaml_serde::from_str(text).map_err(|e| e.to_string())
}

/// Refuses text whose flow collections nest deeper than [`MAX_FLOW_DEPTH`].
pub fn check_depth(text: &str) -> Result<(), String> {
    if flow_depth_exceeds(text.as_bytes(), MAX_FLOW_DEPTH) {
        return Err(format!("collections nested more than {MAX_FLOW_DEPTH} deep"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
