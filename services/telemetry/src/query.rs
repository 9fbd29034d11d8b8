//! The search filter language.
//!
//! A query is space-separated terms, all of which must hold (AND); the empty query matches
//! everything.
//!
//! - `field:value` tests a field; the value may be quoted (`rule:"Terminal shell in
//!   container"`). Fields:
//!   - `type`: the source, one of `runtime`, `admission`, `finding`, `mitigation`,
//!     `signature`;
//!   - `cluster`: the cluster id, exactly;
//!   - `namespace`, `pod`: exactly;
//!   - `workload`: the workload's name exactly (`workload:web`), or kind and name
//!     (`workload:Deployment/web`, kind compared without case);
//!   - `image`: the image reference exactly, its repository (the reference without its tag
//!     or digest), or the digest;
//!   - `rule`: the rule exactly;
//!   - `action`: one of the actions of [`crate::event`] (`block`, `log`, `isolate`, ...);
//!   - `severity`: at least this severity (`severity:high` is high or critical).
//! - A bare word is free text, matched by words: a word of the summary is a run of ASCII
//!   letters and digits (ASCII case ignored); every other character, non-ASCII included,
//!   separates words. `shell` matches "A shell was spawned" but not "shellcode"; a term that
//!   is several words once split (`web-42`, `10:42`, `/etc/shadow`) matches them consecutively
//!   (`web-42` matches "pod web-42" and "web 42", not "web-420"). A trailing `*` makes the
//!   last word a prefix: `shell*` also matches "shellcode", `web-4*` "web-420". A term with
//!   no letter or digit is refused. A word is taken as a field term when the part before its
//!   first `:` is all ASCII letters, so `http://x` must be quoted to be searched as text;
//!   `10:42` is text.
//! - Double quotes group words into one free-text phrase (`"shell spawned"`: the two words
//!   consecutively), or one value.
//!
//! Words rather than substrings because that is what an analyst names (a binary, a user, a
//! pod, a rule word), and because a word index is what keeps search fast over millions of
//! events (see `storage::events`) without paying a trigram index on every insert.
//!
//! Limits: at most [`MAX_QUERY_BYTES`] bytes and [`MAX_TERMS`] terms. Errors carry the byte
//! offset (from 0) where the problem is.

use std::fmt;
use std::str::FromStr;

use crate::event::{Action, SecurityEvent, Severity, Source};

/// Longest query, in bytes.
pub const MAX_QUERY_BYTES: usize = 1024;
/// Most terms in a query.
pub const MAX_TERMS: usize = 32;

/// A parsed query: every term must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    /// The terms, in the order written.
    pub terms: Vec<Term>,
}

/// One term of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// `type:`: the event's source is this one.
    Type(Source),
    /// `cluster:`: the cluster id equals this.
    Cluster(String),
    /// `namespace:`: the namespace equals this.
    Namespace(String),
    /// `workload:`: the workload's name equals `name`, and its kind equals `kind` (ASCII case
    /// ignored) when given.
    Workload {
        /// The kind, when the value was `Kind/name`.
        kind: Option<String>,
        /// The name.
        name: String,
    },
    /// `pod:`: the pod's name equals this.
    Pod(String),
    /// `image:`: the image reference, its repository or the digest equals this.
    Image(String),
    /// `rule:`: the rule equals this.
    Rule(String),
    /// `action:`: the action is this one.
    Action(Action),
    /// `severity:`: the severity is at least this one.
    MinSeverity(Severity),
    /// Free text: the summary has these words consecutively (module documentation), ASCII
    /// case ignored. Kept as written in ASCII lowercase; [`text_words`] splits it.
    Text(String),
}

/// What is wrong with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryErrorKind {
    /// Longer than [`MAX_QUERY_BYTES`].
    TooLong(usize),
    /// More than [`MAX_TERMS`] terms.
    TooManyTerms,
    /// A `field:` that is not one of the fields.
    UnknownField(String),
    /// A field without a value, or an empty quoted phrase.
    EmptyValue(String),
    /// A `"` without its closing one.
    UnbalancedQuote,
    /// A `"` inside a word.
    UnexpectedQuote,
    /// Free text without a letter or digit (it names no word).
    NoWords,
    /// A value the field does not take.
    InvalidValue {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// A query that cannot be parsed; the API answers it with InvalidArgument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid query at position {position}: {kind}")]
pub struct QueryError {
    /// Byte offset (from 0) of the problem in the query.
    pub position: usize,
    /// What is wrong.
    pub kind: QueryErrorKind,
}

impl fmt::Display for QueryErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong(n) => write!(f, "the query is {n} bytes, more than {MAX_QUERY_BYTES}"),
            Self::TooManyTerms => write!(f, "more than {MAX_TERMS} terms"),
            Self::UnknownField(name) => write!(
                f,
                "unknown field `{name}`; fields are type, cluster, namespace, workload, pod, image, rule, action, severity (quote text that contains `:`)"
            ),
            Self::EmptyValue(field) if field.is_empty() => write!(f, "empty quoted phrase"),
            Self::EmptyValue(field) => write!(f, "field `{field}` has no value"),
            Self::UnbalancedQuote => write!(f, "unbalanced quote"),
            Self::UnexpectedQuote => write!(f, "a quote inside a word (quote the whole phrase)"),
            Self::InvalidValue { field, reason } => write!(f, "invalid value for `{field}`: {reason}"),
            Self::NoWords => write!(f, "free text without a letter or digit (text is matched by words)"),
        }
    }
}

impl FromStr for Query {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// One lexed token: an optional field name and a value, with their positions.
struct Token<'a> {
    start: usize,
    field: Option<&'a str>,
    value: &'a str,
    value_start: usize,
}

fn err(position: usize, kind: QueryErrorKind) -> QueryError {
    QueryError { position, kind }
}

/// Reads a quoted string whose opening quote is at `open`; returns the content and the
/// offset after the closing quote.
fn quoted(input: &str, open: usize) -> Result<(&str, usize), QueryError> {
    let body_start = open + 1;
    let rest = input.get(body_start..).unwrap_or("");
    match rest.find('"') {
        Some(len) => Ok((rest.get(..len).unwrap_or(""), body_start + len + 1)),
        None => Err(err(open, QueryErrorKind::UnbalancedQuote)),
    }
}

fn lex(input: &str) -> Result<Vec<Token<'_>>, QueryError> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let Some(&b) = bytes.get(i) else { break };
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if tokens.len() == MAX_TERMS {
            return Err(err(i, QueryErrorKind::TooManyTerms));
        }
        let start = i;
        if b == b'"' {
            let (value, end) = quoted(input, i)?;
            tokens.push(Token {
                start,
                field: None,
                value,
                value_start: start + 1,
            });
            i = end;
            // A phrase must be followed by a space or the end.
            if let Some(&next) = bytes.get(i)
                && !next.is_ascii_whitespace()
            {
                return Err(err(i, QueryErrorKind::UnexpectedQuote));
            }
            continue;
        }
        // A bare word: up to whitespace; a quote is allowed only right after `field:`.
        let mut end = i;
        while let Some(&c) = bytes.get(end) {
            if c.is_ascii_whitespace() || c == b'"' {
                break;
            }
            end += 1;
        }
        let word = input.get(start..end).unwrap_or("");
        let field = word
            .split_once(':')
            .map(|(f, _)| f)
            .filter(|f| !f.is_empty() && f.bytes().all(|c| c.is_ascii_alphabetic()));
        match (field, bytes.get(end)) {
            (Some(f), Some(b'"')) if word.len() == f.len() + 1 => {
                let (value, after) = quoted(input, end)?;
                tokens.push(Token {
                    start,
                    field: Some(f),
                    value,
                    value_start: end + 1,
                });
                i = after;
                if let Some(&next) = bytes.get(i)
                    && !next.is_ascii_whitespace()
                {
                    return Err(err(i, QueryErrorKind::UnexpectedQuote));
                }
            }
            (_, Some(b'"')) => return Err(err(end, QueryErrorKind::UnexpectedQuote)),
            (Some(f), _) => {
                let value_start = start + f.len() + 1;
                tokens.push(Token {
                    start,
                    field: Some(f),
                    value: input.get(value_start..end).unwrap_or(""),
                    value_start,
                });
                i = end;
            }
            (None, _) => {
                tokens.push(Token {
                    start,
                    field: None,
                    value: word,
                    value_start: start,
                });
                i = end;
            }
        }
    }
    Ok(tokens)
}

impl Query {
    /// Parses a query (module documentation for the language).
    pub fn parse(input: &str) -> Result<Self, QueryError> {
        if input.len() > MAX_QUERY_BYTES {
            return Err(err(MAX_QUERY_BYTES, QueryErrorKind::TooLong(input.len())));
        }
        let tokens = lex(input)?;
        let mut terms = Vec::with_capacity(tokens.len());
        for t in tokens {
            let Some(field) = t.field else {
                if t.value.trim().is_empty() {
                    return Err(err(t.start, QueryErrorKind::EmptyValue(String::new())));
                }
                let text = t.value.to_ascii_lowercase();
                if text_words(&text).0.is_empty() {
                    return Err(err(t.start, QueryErrorKind::NoWords));
                }
                terms.push(Term::Text(text));
                continue;
            };
            let field_lower = field.to_ascii_lowercase();
            if t.value.is_empty() {
                return Err(err(t.value_start, QueryErrorKind::EmptyValue(field_lower)));
            }
            let v = t.value;
            let invalid = |field: &'static str, reason: String| {
                err(t.value_start, QueryErrorKind::InvalidValue { field, reason })
            };
            let term = match field_lower.as_str() {
                "type" => Term::Type(
                    v.parse()
                        .map_err(|e: crate::event::UnknownName| invalid("type", e.to_string()))?,
                ),
                "cluster" => Term::Cluster(v.to_owned()),
                "namespace" => Term::Namespace(v.to_owned()),
                "workload" => match v.split_once('/') {
                    Some((kind, name)) if !kind.is_empty() && !name.is_empty() => Term::Workload {
                        kind: Some(kind.to_owned()),
                        name: name.to_owned(),
                    },
                    Some(_) => return Err(invalid("workload", format!("`{v}` is neither `name` nor `Kind/name`"))),
                    None => Term::Workload {
                        kind: None,
                        name: v.to_owned(),
                    },
                },
                "pod" => Term::Pod(v.to_owned()),
                "image" => Term::Image(v.to_owned()),
                "rule" => Term::Rule(v.to_owned()),
                "action" => Term::Action(
                    v.parse()
                        .map_err(|e: crate::event::UnknownName| invalid("action", e.to_string()))?,
                ),
                "severity" => Term::MinSeverity(
                    v.parse()
                        .map_err(|e: crate::event::UnknownName| invalid("severity", e.to_string()))?,
                ),
                _ => return Err(err(t.start, QueryErrorKind::UnknownField(field.to_owned()))),
            };
            terms.push(term);
        }
        Ok(Self { terms })
    }

    /// True when `event` satisfies every term.
    pub fn matches(&self, event: &SecurityEvent) -> bool {
        self.terms.iter().all(|t| t.matches(event))
    }
}

/// Free function form of [`Query::matches`].
pub fn matches(query: &Query, event: &SecurityEvent) -> bool {
    query.matches(event)
}

/// The repository of an image reference: without its `@digest` and `:tag` (a `:` after the
/// last `/` is a tag; one before it is a registry port).
pub fn image_repository(image: &str) -> &str {
    let no_digest = image.split_once('@').map_or(image, |(r, _)| r);
    let last_slash = no_digest.rfind('/').map_or(0, |i| i + 1);
    match no_digest.get(last_slash..).and_then(|tail| tail.find(':')) {
        Some(colon) => no_digest.get(..last_slash + colon).unwrap_or(no_digest),
        None => no_digest,
    }
}

/// The words of a text (runs of ASCII letters and digits), as written.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// The words of a free-text term (ASCII lowercase) and whether the last one is a prefix (the
/// term ends with `*` right after a letter or digit).
pub fn text_words(term: &str) -> (Vec<&str>, bool) {
    let prefix = term
        .strip_suffix('*')
        .and_then(|t| t.chars().last())
        .is_some_and(|c| c.is_ascii_alphanumeric());
    (words(term).collect(), prefix)
}

/// True when `text` has `term_words` (ASCII lowercase) consecutively among its words, ASCII
/// case ignored, the last one as a prefix when `prefix`.
pub fn has_words(text: &str, term_words: &[&str], prefix: bool) -> bool {
    let Some((last, init)) = term_words.split_last() else {
        return false;
    };
    let mut window: std::collections::VecDeque<&str> = std::collections::VecDeque::with_capacity(term_words.len());
    for w in words(text) {
        if window.len() == term_words.len() {
            window.pop_front();
        }
        window.push_back(w);
        if window.len() == term_words.len()
            && window.iter().zip(init).all(|(a, b)| a.eq_ignore_ascii_case(b))
            && window.back().is_some_and(|l| {
                if prefix {
                    l.len() >= last.len() && l.get(..last.len()).is_some_and(|p| p.eq_ignore_ascii_case(last))
                } else {
                    l.eq_ignore_ascii_case(last)
                }
            })
        {
            return true;
        }
    }
    false
}

/// True when `haystack` contains `needle_lower` (ASCII lowercase), ASCII case ignored.
pub fn contains_ignore_ascii_case(haystack: &str, needle_lower: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle_lower.as_bytes());
    let Some((&first, rest)) = n.split_first() else {
        return true;
    };
    if h.len() < n.len() {
        return false;
    }
    let last_start = h.len() - n.len();
    let mut i = 0;
    while i <= last_start {
        if h.get(i).is_some_and(|b| b.to_ascii_lowercase() == first)
            && h.get(i + 1..i + n.len())
                .is_some_and(|w| w.iter().zip(rest).all(|(a, b)| a.to_ascii_lowercase() == *b))
        {
            return true;
        }
        i += 1;
    }
    false
}

impl Term {
    /// True when `event` satisfies this term.
    pub fn matches(&self, e: &SecurityEvent) -> bool {
        match self {
            Self::Type(s) => e.source == *s,
            Self::Cluster(c) => e.cluster_id == c.as_str(),
            Self::Namespace(n) => e.namespace == n.as_str(),
            Self::Workload { kind, name } => e.workload.as_ref().is_some_and(|w| {
                w.name == name.as_str() && kind.as_ref().is_none_or(|k| w.kind.eq_ignore_ascii_case(k))
            }),
            Self::Pod(p) => e.pod == p.as_str(),
            Self::Image(i) => {
                !i.is_empty()
                    && (e.image == *i
                        || e.digest == i.as_str()
                        || (!e.image.is_empty() && image_repository(&e.image) == i))
            }
            Self::Rule(r) => e.rule == r.as_str(),
            Self::Action(a) => e.action == *a,
            Self::MinSeverity(s) => e.severity >= *s,
            Self::Text(t) => {
                let (words, prefix) = text_words(t);
                has_words(&e.summary, &words, prefix)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;
    use crate::event::tests::sample_event;

    fn q(s: &str) -> Query {
        Query::parse(s).unwrap()
    }

    fn error(s: &str) -> QueryError {
        Query::parse(s).unwrap_err()
    }

    #[test]
    fn parses_fields_text_and_phrases() {
        let query = q(
            r#"pod:web-1 type:runtime "shell spawned" Root severity:HIGH workload:Deployment/web rule:"Terminal shell in container""#,
        );
        assert_eq!(
            query.terms,
            vec![
                Term::Pod("web-1".into()),
                Term::Type(Source::Runtime),
                Term::Text("shell spawned".into()),
                Term::Text("root".into()),
                Term::MinSeverity(Severity::High),
                Term::Workload {
                    kind: Some("Deployment".into()),
                    name: "web".into()
                },
                Term::Rule("Terminal shell in container".into()),
            ]
        );
        assert_eq!(q("").terms, vec![]);
        assert_eq!(q("   ").terms, vec![]);
        assert_eq!(q("10:42").terms, vec![Term::Text("10:42".into())]);
        assert_eq!(
            q("image:registry:5000/web:1").terms,
            vec![Term::Image("registry:5000/web:1".into())]
        );
        assert_eq!(q("action:block").terms, vec![Term::Action(Action::Block)]);
    }

    #[test]
    fn errors_carry_the_position() {
        assert_eq!(
            error("pod:web shoe:x"),
            QueryError {
                position: 8,
                kind: QueryErrorKind::UnknownField("shoe".into())
            }
        );
        assert_eq!(
            error("type:runtime pod:"),
            QueryError {
                position: 17,
                kind: QueryErrorKind::EmptyValue("pod".into())
            }
        );
        assert_eq!(error(r#"pod:"""#).kind, QueryErrorKind::EmptyValue("pod".into()));
        assert_eq!(
            error(r#"a "shell spawned"#),
            QueryError {
                position: 2,
                kind: QueryErrorKind::UnbalancedQuote
            }
        );
        assert_eq!(
            error(r#"pod:"web"#),
            QueryError {
                position: 4,
                kind: QueryErrorKind::UnbalancedQuote
            }
        );
        assert_eq!(
            error(r#"ab"cd""#),
            QueryError {
                position: 2,
                kind: QueryErrorKind::UnexpectedQuote
            }
        );
        assert_eq!(
            error(r#""a"b"#),
            QueryError {
                position: 3,
                kind: QueryErrorKind::UnexpectedQuote
            }
        );
        assert_eq!(error(r#""  ""#).kind, QueryErrorKind::EmptyValue(String::new()));
        assert!(matches!(
            error("type:batch").kind,
            QueryErrorKind::InvalidValue { field: "type", .. }
        ));
        assert!(matches!(
            error("severity:loud").kind,
            QueryErrorKind::InvalidValue { field: "severity", .. }
        ));
        assert!(matches!(
            error("action:jump").kind,
            QueryErrorKind::InvalidValue { field: "action", .. }
        ));
        assert!(matches!(
            error("workload:/web").kind,
            QueryErrorKind::InvalidValue { field: "workload", .. }
        ));
        let e = error("http://example");
        assert_eq!(e.kind, QueryErrorKind::UnknownField("http".into()));
        assert!(
            e.to_string()
                .starts_with("invalid query at position 0: unknown field `http`"),
            "{e}"
        );
    }

    #[test]
    fn limits_are_enforced() {
        let long = "a".repeat(MAX_QUERY_BYTES + 1);
        assert_eq!(error(&long).kind, QueryErrorKind::TooLong(MAX_QUERY_BYTES + 1));
        assert!(Query::parse(&"a".repeat(MAX_QUERY_BYTES)).is_ok());
        let at_limit = vec!["w"; MAX_TERMS].join(" ");
        assert_eq!(q(&at_limit).terms.len(), MAX_TERMS);
        let over = vec!["w"; MAX_TERMS + 1].join(" ");
        assert_eq!(
            error(&over),
            QueryError {
                position: 2 * MAX_TERMS,
                kind: QueryErrorKind::TooManyTerms
            }
        );
    }

    #[test]
    fn matches_every_field() {
        let e = sample_event();
        let yes = [
            "",
            "type:runtime",
            "cluster:c1",
            "namespace:prod",
            "workload:web",
            "workload:deployment/web",
            "pod:web-7c9f8d6b5-x2x4q",
            "image:registry.example/web:1.2",
            "image:registry.example/web",
            "image:sha256:aa",
            r#"rule:"Terminal shell in container""#,
            "action:notice",
            "severity:high",
            "severity:medium",
            "SHELL",
            r#""shell was spawned""#,
            r#"pod:web-7c9f8d6b5-x2x4q type:runtime "shell was spawned""#,
        ];
        for s in yes {
            assert!(q(s).matches(&e), "{s} should match");
        }
        let no = [
            "type:admission",
            "cluster:c2",
            "namespace:dev",
            "workload:api",
            "workload:StatefulSet/web",
            "pod:web-1",
            "image:registry.example/api",
            "image:registry.example",
            "rule:Terminal",
            "action:block",
            "severity:critical",
            "miner",
            r#""spawned shell""#,
            "pod:web-7c9f8d6b5-x2x4q type:admission",
        ];
        for s in no {
            assert!(!q(s).matches(&e), "{s} should not match");
        }
        let mut bare = e.clone();
        bare.workload = None;
        assert!(!q("workload:web").matches(&bare));
    }

    #[test]
    fn image_repository_strips_tag_and_digest_not_port() {
        assert_eq!(image_repository("nginx:1.25"), "nginx");
        assert_eq!(
            image_repository("registry:5000/team/web:1@sha256:ab"),
            "registry:5000/team/web"
        );
        assert_eq!(image_repository("registry:5000/web"), "registry:5000/web");
        assert_eq!(image_repository("web@sha256:ab"), "web");
    }

    #[test]
    fn free_text_matches_words_not_substrings() {
        let summary = "Shell spawned in pod web-42 (user=root cmd=/bin/sh) 10:42 café-Ünïx";
        let hit = |t: &str| {
            let term = q(t).terms.remove(0);
            let Term::Text(text) = term else {
                panic!("{t} is not text")
            };
            let (words, prefix) = text_words(&text);
            has_words(summary, &words, prefix)
        };
        for yes in [
            "shell",
            "SHELL",
            "root",
            "web-42",
            "\"web:42\"",
            "\"web 42\"",
            "/bin/sh",
            "bin",
            "10:42",
            "shel*",
            "web-4*",
            "\"spawned in\"",
            "user=root",
            "caf",
            "café",
            "x",
            "n",
            "\"caf n x\"",
        ] {
            assert!(hit(yes), "{yes} should match");
        }
        for no in [
            "shel",
            "web-4",
            "web-420",
            "\"in spawned\"",
            "spawn",
            "ell*",
            "\"caf nx\"",
            "10:4",
            "roo t",
        ] {
            assert!(!hit(no), "{no} should not match");
        }
        assert_eq!(text_words("web-4*"), (vec!["web", "4"], true));
        assert_eq!(text_words("web-4 *"), (vec!["web", "4"], false));
        assert_eq!(error("*").kind, QueryErrorKind::NoWords);
        assert_eq!(error(r#"x "::" "#).position, 2);
    }

    #[test]
    fn case_insensitive_contains() {
        assert!(contains_ignore_ascii_case("A Shell Spawned", "shell"));
        assert!(contains_ignore_ascii_case("abc", ""));
        assert!(!contains_ignore_ascii_case("ab", "abc"));
        assert!(contains_ignore_ascii_case("xxabc", "abc"));
        assert!(!contains_ignore_ascii_case("xxabd", "abc"));
    }
}
