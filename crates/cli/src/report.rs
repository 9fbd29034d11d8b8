//! How `portcullis eval` prints decisions: JSON Lines for machines, a table for people.

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
    properties: serde_json::Map<String, serde_json::Value>,
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
        properties: v
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
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
}

impl<W: Write> Reporter<W> {
    /// A reporter writing to `out`; `colour` only applies to tables.
    pub fn new(out: W, format: OutputFormat, colour: bool) -> Self {
        Reporter { out, format, colour }
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
                serde_json::to_writer(&mut self.out, &line)?;
                self.out.write_all(b"\n")
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
