//! `portcullis policy exceptions`: every exception of every policy of the tenant, with its
//! policy, definition, reason and expiry, soonest expiry first (POLICY.md section 1).
//!
//! A namespaced definition's exceptions are listed under its name only when it has its own;
//! one that inherits the default's (no `exceptions` key) adds no rows, so each exception is
//! listed once, under the definition that states it.

use std::time::Duration;

use portcullis_engine::policy::{PolicyDocument, ValidException, validate};
use portcullis_proto::policystore::v1 as pb;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use super::error::ClientError;
use super::named_document::list_all;
use super::output::{Format, Table, print_json, print_table};
use super::{Conn, Ctx, KeyChoice};

/// One exception of one definition of one policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionRow {
    /// The policy's name.
    pub policy: String,
    /// `default`, or the namespaced definition's name.
    pub definition: String,
    /// The exception's type as written (`imagePath`).
    pub exception_type: &'static str,
    /// The statement's operator (`starts-with`).
    pub operator: &'static str,
    /// The statement's value.
    pub value: String,
    /// The namespaces it holds in (`None`: all).
    pub namespaces: Option<Vec<String>>,
    /// Why it exists.
    pub reason: Option<String>,
    /// When it stops holding (`None`: never).
    pub expires_at: Option<OffsetDateTime>,
}

impl ExceptionRow {
    fn new(policy: &str, definition: &str, e: &ValidException) -> ExceptionRow {
        ExceptionRow {
            policy: policy.to_owned(),
            definition: definition.to_owned(),
            exception_type: e.field.as_str(),
            operator: e.operator.as_str(),
            value: e.value.clone(),
            namespaces: e.namespaces.clone(),
            reason: e.reason.clone(),
            expires_at: e.expires_at,
        }
    }

    /// Whether it has expired at `now` (its expiry is at or before `now`: it holds no more).
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// The exceptions stated in a stored policy document, in document order. A stored document
/// that this client's engine cannot read or refuses is an error naming the policy: listing
/// the others while leaving it out would pass over its exceptions silently.
pub fn rows_of(policy: &str, document_json: &str) -> Result<Vec<ExceptionRow>, ClientError> {
    let unreadable =
        |why: String| ClientError::input(format!("policy {policy}: its stored document cannot be read: {why}"));
    let doc = PolicyDocument::parse(document_json).map_err(|e| unreadable(e.to_string()))?;
    let valid = validate(&doc).map_err(|e| unreadable(e.to_string().replace('\n', "; ")))?;
    let mut rows = Vec::new();
    for def in std::iter::once(&valid.default).chain(&valid.namespaced) {
        let name = def.name.as_deref().unwrap_or("default");
        for e in def.exceptions.iter().flatten() {
            rows.push(ExceptionRow::new(policy, name, e));
        }
    }
    Ok(rows)
}

/// Keeps, with `expiring`, only the rows expiring within it from `now` (those already
/// expired included), and orders them soonest expiry first, rows without expiry last; rows
/// of equal expiry keep their order (policy by name, then document order).
pub fn select(mut rows: Vec<ExceptionRow>, expiring: Option<Duration>, now: OffsetDateTime) -> Vec<ExceptionRow> {
    if let Some(within) = expiring {
        // A window beyond what the time type holds covers every expiry.
        let horizon = time::Duration::try_from(within).ok().and_then(|d| now.checked_add(d));
        rows.retain(|r| r.expires_at.is_some_and(|t| horizon.is_none_or(|h| t <= h)));
    }
    rows.sort_by_key(|r| (r.expires_at.is_none(), r.expires_at));
    rows
}

/// An instant as RFC 3339 in UTC.
fn utc_text(t: OffsetDateTime) -> String {
    let utc = t.to_offset(UtcOffset::UTC);
    utc.format(&Rfc3339).unwrap_or_else(|_| utc.to_string())
}

/// A row as the JSON of `-o json`: the exception's fields as a document writes them, its
/// `expiresAt` in UTC, with `policy`, `definition` and `expired`.
pub fn row_json(r: &ExceptionRow, now: OffsetDateTime) -> Value {
    json!({
        "policy": r.policy,
        "definition": r.definition,
        "type": r.exception_type,
        "statement": {"properties": [{"key": r.operator, "value": r.value}]},
        "namespaces": r.namespaces,
        "reason": r.reason,
        "expiresAt": r.expires_at.map(utc_text),
        "expired": r.expired(now),
    })
}

/// The table: one row per exception; `EXPIRES` is `never` without expiry and ends in
/// `(expired)` once expired; `NAMESPACES` is `*` for an exception holding in every namespace.
pub fn table(rows: &[ExceptionRow], now: OffsetDateTime) -> Table {
    let mut table = Table::new(&[
        "POLICY",
        "DEFINITION",
        "TYPE",
        "STATEMENT",
        "NAMESPACES",
        "EXPIRES",
        "REASON",
    ])
    .cut("STATEMENT")
    .cut("REASON");
    for r in rows {
        let expires = match r.expires_at {
            None => "never".to_owned(),
            Some(t) if r.expired(now) => format!("{} (expired)", utc_text(t)),
            Some(t) => utc_text(t),
        };
        table.row(vec![
            r.policy.clone(),
            r.definition.clone(),
            r.exception_type.to_owned(),
            format!("{} {}", r.operator, r.value),
            r.namespaces.as_ref().map_or_else(|| "*".to_owned(), |n| n.join(",")),
            expires,
            r.reason.clone().unwrap_or_default(),
        ]);
    }
    table
}

/// Runs `policy exceptions`.
pub async fn run(ctx: &Ctx<'_>, expiring: Option<Duration>, format: Format) -> Result<(), ClientError> {
    let policies = list_all(
        ctx,
        KeyChoice::Tenant,
        Conn::policies,
        |mut client, page| {
            let request = pb::ListPoliciesRequest {
                page: Some(page),
                name_filter: String::new(),
                include_documents: true,
            };
            async move { client.list_policies(request).await }
        },
        |r| (r.policies, r.page),
    )
    .await?;
    let mut rows = Vec::new();
    for p in &policies {
        rows.extend(rows_of(&p.name, &p.document_json)?);
    }
    let now = OffsetDateTime::now_utc();
    let rows = select(rows, expiring, now);
    match format {
        Format::Json => print_json(&Value::Array(rows.iter().map(|r| row_json(r, now)).collect())),
        Format::Table => print_table(
            &table(&rows, now),
            if expiring.is_some() {
                "No exceptions expiring within that time."
            } else {
                "No exceptions."
            },
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2027-03-01 00:00 UTC);

    const DOC: &str = r#"{"name": "p", "default": {"rules": [], "exceptions": [
        {"type": "imagePath", "statement": {"properties": [{"key": "starts-with", "value": "r.example.com/platform/"}]},
         "namespaces": ["ops"], "expiresAt": "2027-03-31T02:00:00+02:00", "reason": "SEC-142"},
        {"type": "tag", "statement": {"properties": [{"key": "equals", "value": "debug"}]}},
        {"type": "registry", "statement": {"properties": [{"key": "equals", "value": "old.example.com"}]},
         "expiresAt": "2027-02-01T00:00:00Z"}
    ]}, "namespaced": [
        {"name": "dev", "namespaces": ["dev"], "rules": []},
        {"name": "lab", "namespaces": ["lab"], "rules": [], "exceptions": [
            {"type": "image", "statement": {"properties": [{"key": "contains", "value": "tools"}]},
             "expiresAt": "2027-03-05T00:00:00Z"}
        ]}
    ]}"#;

    fn keys(rows: &[ExceptionRow]) -> Vec<(String, String)> {
        rows.iter().map(|r| (r.definition.clone(), r.value.clone())).collect()
    }

    #[test]
    fn every_stated_exception_is_listed_once_soonest_expiry_first_without_expiry_last() {
        let rows = rows_of("p", DOC).unwrap();
        // `dev` inherits: its exceptions are the default's, listed once.
        assert_eq!(rows.len(), 4);
        let sorted = select(rows, None, NOW);
        assert_eq!(
            keys(&sorted),
            [
                ("default", "old.example.com"),
                ("lab", "tools"),
                ("default", "r.example.com/platform/"),
                ("default", "debug"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }

    #[test]
    fn expiring_keeps_those_within_the_window_expired_ones_included() {
        let rows = rows_of("p", DOC).unwrap();
        let week = select(rows.clone(), Some(Duration::from_secs(7 * 86_400)), NOW);
        assert_eq!(
            keys(&week),
            [("default", "old.example.com"), ("lab", "tools")].map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert!(week[0].expired(NOW) && !week[1].expired(NOW));
        // The window's end is included; a window beyond any date keeps every expiring one.
        let exact = select(rows.clone(), Some(Duration::from_secs(30 * 86_400)), NOW);
        assert_eq!(exact.len(), 3, "{exact:#?}");
        assert_eq!(select(rows, Some(Duration::MAX), NOW).len(), 3);
    }

    #[test]
    fn json_rows_carry_the_exception_as_written_with_its_expiry_in_utc() {
        let rows = select(rows_of("p", DOC).unwrap(), None, NOW);
        assert_eq!(
            row_json(&rows[2], NOW),
            json!({
                "policy": "p",
                "definition": "default",
                "type": "imagePath",
                "statement": {"properties": [{"key": "starts-with", "value": "r.example.com/platform/"}]},
                "namespaces": ["ops"],
                "reason": "SEC-142",
                "expiresAt": "2027-03-31T00:00:00Z",
                "expired": false,
            })
        );
        assert_eq!(row_json(&rows[0], NOW)["expired"], true);
        assert_eq!(row_json(&rows[3], NOW)["expiresAt"], Value::Null);
    }

    #[test]
    fn the_table_marks_expired_and_never_expiring_exceptions() {
        let rows = select(rows_of("p", DOC).unwrap(), None, NOW);
        let text = table(&rows, NOW).render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("POLICY"), "{text}");
        assert!(lines[1].contains("2027-02-01T00:00:00Z (expired)"), "{text}");
        assert!(lines[3].contains("ops") && lines[3].contains("SEC-142"), "{text}");
        assert!(lines[4].contains("never") && lines[4].contains(" * "), "{text}");
    }

    #[test]
    fn an_unreadable_stored_document_is_an_error_naming_its_policy() {
        let e = rows_of("broken", r#"{"name": "broken"}"#).unwrap_err();
        assert!(e.to_string().starts_with("policy broken: "), "{e}");
    }
}
