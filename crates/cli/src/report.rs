//! How `portcullis eval` prints decisions: JSON Lines for machines, a table for people.

use std::collections::BTreeMap;
use std::io::{self, Write};

use portcullis_engine::evaluate::{Decision, Unverified, Verdict, Violation};
use portcullis_engine::input::Subject;
use serde::Serialize;

/// Output format of `eval` and `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Table,
}

#[derive(Serialize)]
struct DecisionLine<'a> {
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
    decision: &'static str,
    policy: &'a str,
    violations: Vec<ViolationOut<'a>>,
    unverified: Vec<UnverifiedOut<'a>>,
}

#[derive(Serialize)]
struct ViolationOut<'a> {
    #[serde(rename = "type")]
    rule_type: &'a str,
    /// Sorted by key, the last of equal keys kept: as a JSON object map would have it,
    /// without copying the strings.
    properties: BTreeMap<&'a str, &'a str>,
    action: &'static str,
    containers: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    checks: &'a [&'static str],
    message: &'a str,
}

#[derive(Serialize)]
struct UnverifiedOut<'a> {
    rule: &'a str,
    image: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    attestors: &'a [String],
    containers: &'a [String],
}

fn violation_out(v: &Violation) -> ViolationOut<'_> {
    ViolationOut {
        rule_type: v.rule_type,
        properties: v.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        action: v.action.as_str(),
        containers: &v.containers,
        checks: &v.checks,
        message: &v.message,
    }
}

fn unverified_out(u: &Unverified) -> UnverifiedOut<'_> {
    UnverifiedOut {
        rule: &u.rule,
        image: &u.image,
        digest: u.digest.as_deref(),
        attestors: &u.attestors,
        containers: &u.containers,
    }
}

/// Writes decisions in the chosen format.
pub struct Reporter<W: Write> {
    out: W,
    format: OutputFormat,
    colour: bool,
    /// The JSON line being written (reused).
    line: Vec<u8>,
}

impl<W: Write> Reporter<W> {
    /// A reporter writing to `out`; `colour` only applies to tables.
    pub fn new(out: W, format: OutputFormat, colour: bool) -> Self {
        Reporter {
            out,
            format,
            colour,
            line: Vec::new(),
        }
    }

    /// Writes one decision.
    pub fn decision(&mut self, policy: &str, subject: &Subject, decision: &Decision) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => {
                let line = DecisionLine {
                    kind: &subject.kind,
                    namespace: &subject.namespace,
                    name: &subject.name,
                    decision: decision.verdict.as_str(),
                    policy,
                    violations: decision.violations.iter().map(violation_out).collect(),
                    unverified: decision.unverified.iter().map(unverified_out).collect(),
                };
                // sonic-rs escapes strings with SIMD; serde_json's byte loop was 7% of the
                // instructions of a bulk evaluation. The output is the same JSON.
                self.line.clear();
                sonic_rs::to_writer(&mut self.line, &line).map_err(io::Error::other)?;
                self.line.push(b'\n');
                self.out.write_all(&self.line)
            }
            OutputFormat::Table => self.table(subject, decision),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn table(&mut self, subject: &Subject, decision: &Decision) -> io::Result<()> {
        let verdict = match decision.verdict {
            Verdict::Allow => self.paint("32", "ALLOW"),
            Verdict::Block => self.paint("1;31", "BLOCK"),
        };
        let kind = if subject.group.is_empty() {
            subject.kind.as_str().to_owned()
        } else {
            format!("{}/{}", subject.group, subject.kind)
        };
        let note = decision
            .not_evaluated
            .map(|n| format!("  ({})", n.as_str()))
            .unwrap_or_default();
        let line = format!("{verdict}  {kind} {}/{}{note}\n", subject.namespace, subject.name);
        self.out.write_all(line.as_bytes())?;
        for v in &decision.violations {
            let action = match v.action.as_str() {
                "block" => self.paint("31", "block"),
                other => self.paint("33", other),
            };
            let line = format!("       {action}  {}\n", v.message);
            self.out.write_all(line.as_bytes())?;
        }
        for u in &decision.unverified {
            let line = format!(
                "       {}  signature rule {:?} for {} ({})\n",
                self.paint("36", "unverified"),
                u.rule,
                u.image,
                u.attestors.join(", ")
            );
            self.out.write_all(line.as_bytes())?;
        }
        Ok(())
    }

    /// Flushes the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The JSON lines are written with sonic-rs; they must be byte for byte what serde_json
    /// writes, whatever the strings hold.
    #[test]
    fn json_lines_are_what_serde_json_writes() {
        let nasty = [
            "",
            "plain",
            "quote \" backslash \\ slash /",
            "controls \u{0} \u{1} \u{8} \t \n \u{b} \u{c} \r \u{1f} \u{7f}",
            "unicode é ü ß 漢字 😀 \u{2028} \u{2029} \u{feff}",
            &"long ".repeat(100),
            &format!("{}\"{}", "x".repeat(31), "\n".repeat(33)),
        ];
        for text in nasty {
            let containers = vec![text.to_owned(), "app".to_owned()];
            let checks = ["privileged"];
            let line = DecisionLine {
                kind: text,
                namespace: "apps",
                name: text,
                decision: "block",
                policy: text,
                violations: vec![ViolationOut {
                    rule_type: "podSecurityContext",
                    properties: BTreeMap::from([(text, text), ("hostNetwork", "true")]),
                    action: "block",
                    containers: &containers,
                    checks: &checks,
                    message: text,
                }],
                unverified: vec![UnverifiedOut {
                    rule: text,
                    image: text,
                    digest: Some(text),
                    attestors: &containers,
                    containers: &containers,
                }],
            };
            let mut sonic = Vec::new();
            sonic_rs::to_writer(&mut sonic, &line).unwrap();
            assert_eq!(
                String::from_utf8(sonic).unwrap(),
                serde_json::to_string(&line).unwrap(),
                "{text:?}"
            );
        }
    }
}
