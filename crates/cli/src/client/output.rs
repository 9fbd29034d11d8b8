//! Rendering of client command results: aligned plain-text tables (never coloured, so
//! they read the same in a terminal, a pipe or a log) or JSON.

use std::io::{self, Write};

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::ClientError;

/// Output format of the client commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts: one object, or one array for listings.
    Json,
}

/// The `-o` flag of every client command.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct OutputArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Most characters a cell of a free-text column shows before it is cut.
const MAX_CELL: usize = 60;

/// A table: a header row and rows of cells, rendered with aligned columns.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<&'static str>,
    /// Per column: whether long cells are cut (free text); ids and digests never are.
    cut: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            cut: vec![false; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Cuts long cells of the column `header` (descriptions, details) at [`MAX_CELL`].
    pub fn cut(mut self, header: &str) -> Table {
        for (flag, h) in self.cut.iter_mut().zip(&self.headers) {
            if *h == header {
                *flag = true;
            }
        }
        self
    }

    /// Adds a row; missing cells are shown as `-`, surplus ones are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text: columns separated by two spaces, cells padded to the widest of
    /// their column, no trailing spaces, one line per row, empty cells shown as `-`.
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                (0..columns)
                    .map(|i| {
                        cell(
                            row.get(i).map_or("", String::as_str),
                            self.cut.get(i).copied().unwrap_or(false),
                        )
                    })
                    .collect()
            })
            .collect();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &cells {
            for (width, text) in widths.iter_mut().zip(row) {
                *width = (*width).max(text.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&cells) {
            let mut line = String::new();
            for (i, (text, width)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(text);
                let pad = width.saturating_sub(text.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Labelled values, one per line, the values aligned: `Name:      prod.strict`.
pub fn render_fields(fields: &[(&str, String)]) -> String {
    let width = fields
        .iter()
        .map(|(label, _)| label.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (label, value) in fields {
        let label = format!("{label}:");
        let pad = width.saturating_sub(label.chars().count()) + 2;
        let value = if value.is_empty() {
            "-".to_owned()
        } else {
            single_line(value)
        };
        out.push_str(&label);
        out.extend(std::iter::repeat_n(' ', pad));
        out.push_str(&value);
        out.push('\n');
    }
    out
}

/// One table cell: control characters as spaces, `-` when empty, so every row stays one
/// line and every column has a word; cut at [`MAX_CELL`] characters when `cut`.
fn cell(text: &str, cut: bool) -> String {
    let text = single_line(text);
    if text.is_empty() {
        return "-".to_owned();
    }
    if cut && text.chars().count() > MAX_CELL {
        let mut cut: String = text.chars().take(MAX_CELL - 1).collect();
        cut.push('…');
        return cut;
    }
    text
}

fn single_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A protobuf timestamp in RFC 3339 (UTC), with its fraction when it has one; `None` when
/// absent or out of range.
pub fn time_text(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    let ts = ts?;
    let nanos = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// A timestamp for a table cell: RFC 3339 to the second, empty when absent.
pub fn time_cell(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else {
        return String::new();
    };
    time_text(Some(&prost_types::Timestamp {
        seconds: ts.seconds,
        nanos: 0,
    }))
    .unwrap_or_default()
}

/// A timestamp as a JSON value: an RFC 3339 string, or null when absent.
pub fn time_json(ts: Option<&prost_types::Timestamp>) -> Value {
    time_text(ts).map_or(Value::Null, Value::String)
}

/// Writes `text` to standard output. A closed pipe (`| head`) ends output quietly.
pub fn print(text: &str) -> Result<(), ClientError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(ClientError::Output),
    }
}

/// Writes one line to standard output.
pub fn print_line(text: &str) -> Result<(), ClientError> {
    print(&format!("{text}\n"))
}

/// Writes a JSON value, pretty-printed, to standard output.
pub fn print_json(value: &Value) -> Result<(), ClientError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| ClientError::Output(io::Error::other(e)))?;
    print_line(&text)
}

/// Writes a table, or a note on standard error when it has no rows (so that stdout stays
/// empty for a script).
pub fn print_table(table: &Table, empty_note: &str) -> Result<(), ClientError> {
    if table.rows.is_empty() {
        note(empty_note);
        return Ok(());
    }
    print(&table.render())
}

/// A remark for people on standard error, only when it is a terminal.
pub fn note(text: &str) {
    use std::io::IsTerminal;
    let mut err = io::stderr();
    if err.is_terminal() {
        let _ = writeln!(err, "{text}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_to_their_widest_cell() {
        let mut t = Table::new(&["NAME", "REVISION", "DESCRIPTION"]);
        t.row(vec!["prod.strict".into(), "12".into(), "Production".into()]);
        t.row(vec!["dev".into(), "1".into(), String::new()]);
        assert_eq!(
            t.render(),
            "NAME         REVISION  DESCRIPTION\n\
             prod.strict  12        Production\n\
             dev          1         -\n"
        );
    }

    #[test]
    fn lines_have_no_trailing_spaces_and_missing_cells_are_dashes() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["xxxxx".into()]);
        t.row(vec!["y".into(), "z".into(), "dropped".into()]);
        let text = t.render();
        assert_eq!(text, "A      LONGER\nxxxxx  -\ny      z\n");
        assert!(text.lines().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn cells_stay_on_one_line_and_free_text_is_cut_when_long() {
        let mut t = Table::new(&["D", "DIGEST"]).cut("D");
        t.row(vec!["two\nlines\tand a tab".into(), "x".into()]);
        t.row(vec!["é".repeat(100), "d".repeat(100)]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("two lines and a tab  "), "{text}");
        let (long, digest) = lines[2].split_once("  ").unwrap();
        assert_eq!(long.chars().count(), MAX_CELL);
        assert!(long.ends_with('…'));
        assert_eq!(digest, "d".repeat(100), "an uncut column keeps its text");
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        let mut t = Table::new(&["N", "X"]);
        t.row(vec!["ééé".into(), "1".into()]);
        t.row(vec!["abc".into(), "2".into()]);
        assert_eq!(t.render(), "N    X\nééé  1\nabc  2\n");
    }

    #[test]
    fn fields_align_their_values() {
        let text = render_fields(&[("Name", "prod".to_owned()), ("Failure mode", String::new())]);
        assert_eq!(text, "Name:          prod\nFailure mode:  -\n");
    }

    #[test]
    fn timestamps_render_as_rfc3339_utc() {
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 500_000_000,
        };
        assert_eq!(time_text(Some(&ts)).as_deref(), Some("2023-11-14T22:13:20.5Z"));
        assert_eq!(time_cell(Some(&ts)), "2023-11-14T22:13:20Z");
        assert_eq!(time_cell(None), "");
        assert_eq!(time_json(None), Value::Null);
        let absurd = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(time_text(Some(&absurd)), None);
    }
}
