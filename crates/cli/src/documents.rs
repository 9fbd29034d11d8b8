//! Streams the documents of manifest files: YAML (multi-document), JSON (one or more
//! concatenated values) and JSON Lines, one document at a time, so memory stays flat
//! whatever the number of documents.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// One document of an input: its 1-based position in the file and its JSON text, or why it
/// could not be read. JSON Lines and JSON documents borrow the reader's buffer (no copy
/// per document); YAML ones own their converted text.
pub struct Document<'a> {
    /// 1-based: the line number for JSON Lines, the document's ordinal otherwise.
    pub index: usize,
    /// The document as JSON, or a syntax error.
    pub json: Result<Cow<'a, [u8]>, String>,
    /// Whether `json` was converted from YAML: positions in errors about it point into the
    /// converted text, not into the file, so they are dropped.
    pub converted: bool,
}

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Yaml,
    Json,
    JsonLines,
}

/// Opens `path` (`-` for standard input) and streams its documents to `each`.
/// An I/O error ends the file; a bad document is reported and reading goes on.
pub fn for_each_document(path: &str, mut each: impl FnMut(Document<'_>)) -> io::Result<()> {
    let reader: Box<dyn Read> = if path == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path)?)
    };
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let format = match Path::new(path).extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "ndjson") => Format::JsonLines,
        Some("json") => Format::Json,
        Some("yaml" | "yml") => Format::Yaml,
        _ => sniff(&mut reader)?,
    };
    match format {
        Format::JsonLines => json_lines(reader, &mut each),
        Format::Json => json_stream(reader, &mut each),
        Format::Yaml => yaml_stream(reader, &mut each),
    }
}

/// JSON when the first non-blank byte opens an object or array, else YAML.
fn sniff(reader: &mut BufReader<Box<dyn Read>>) -> io::Result<Format> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(Format::Yaml);
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let first = buf.get(i).copied();
                return Ok(if matches!(first, Some(b'{' | b'[')) {
                    Format::Json
                } else {
                    Format::Yaml
                });
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

fn json_lines(mut reader: impl BufRead, each: &mut impl FnMut(Document<'_>)) -> io::Result<()> {
    // A line that lies whole in the reader's buffer is handed out from there, its end found
    // by memchr's SIMD search; only one that runs past the buffer's end is copied (into
    // `line`): with the 256 KiB buffer, one line in fifty of 5 KB reviews. `read_until` for
    // every line (a copy, and std's word-at-a-time search) was ~4% of the instructions of
    // a bulk evaluation.
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            // As `read_until` does: a signal is not the end of the input.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(());
        }
        number += 1;
        let Some(end) = memchr::memchr(b'\n', buf) else {
            line.clear();
            reader.read_until(b'\n', &mut line)?;
            json_line(number, &line, each);
            continue;
        };
        json_line(number, buf.get(..=end).unwrap_or(buf), each);
        reader.consume(end + 1);
    }
}

/// Hands line `number` (with its line end) to `each` unless it is blank.
fn json_line(number: usize, text: &[u8], each: &mut impl FnMut(Document<'_>)) {
    if !text.iter().all(u8::is_ascii_whitespace) {
        each(Document {
            index: number,
            json: Ok(Cow::Borrowed(text)),
            converted: false,
        });
    }
}

fn json_stream(reader: impl Read, each: &mut impl FnMut(Document<'_>)) -> io::Result<()> {
    let stream = serde_json::Deserializer::from_reader(reader).into_iter::<Box<serde_json::value::RawValue>>();
    for (i, value) in stream.enumerate() {
        match value {
            Ok(raw) => each(Document {
                index: i + 1,
                json: Ok(Cow::Borrowed(raw.get().as_bytes())),
                converted: false,
            }),
            Err(e) if e.is_io() => return Err(io::Error::other(e)),
            Err(e) => {
                // After a syntax error the rest of a JSON stream cannot be re-synchronised.
                each(Document {
                    index: i + 1,
                    json: Err(e.to_string()),
                    converted: false,
                });
                return Ok(());
            }
        }
    }
    Ok(())
}

fn yaml_stream(mut reader: impl BufRead, each: &mut impl FnMut(Document<'_>)) -> io::Result<()> {
    let mut doc: Vec<u8> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut index = 0;
    let mut emit = |doc: &mut Vec<u8>, index: &mut usize| {
        let bytes = std::mem::take(doc);
        let blank = bytes.split(|b| *b == b'\n').all(|l| {
            let t = l.trim_ascii();
            t.is_empty() || t.starts_with(b"#")
        });
        if blank {
            return;
        }
        *index += 1;
        let json = match String::from_utf8(bytes) {
            Ok(text) => yaml_to_json(&text),
            Err(_) => Err("the document is not valid UTF-8".to_owned()),
        };
        each(Document {
            index: *index,
            json: json.map(Cow::Owned),
            converted: true,
        });
    };
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            emit(&mut doc, &mut index);
            return Ok(());
        }
        let is_marker = |m: &[u8]| {
            line.starts_with(m)
                && line
                    .get(3..)
                    .is_none_or(|rest| rest.first().is_none_or(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n')))
        };
        if is_marker(b"---") {
            emit(&mut doc, &mut index);
            // `--- {inline: doc}` carries content on the marker line.
            if let Some(rest) = line.get(3..) {
                doc.extend_from_slice(rest);
            }
        } else if is_marker(b"...") {
            emit(&mut doc, &mut index);
        } else {
            doc.extend_from_slice(&line);
        }
    }
}

/// Converts one YAML document to JSON text.
pub fn yaml_to_json(text: &str) -> Result<Vec<u8>, String> {
    let value: serde_json::Value = portcullis_engine::yaml::from_str(text)?;
    serde_json::to_vec(&value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn json_lines_are_read_whole_across_buffer_ends() {
        let text = "{\"a\":1}\n\n   \n{\"b\":\"a line longer than the reader's buffer\"}\r\n{\"c\":3}\n{\"last\":true}";
        for capacity in [1, 7, 16, 64, 4096] {
            let reader = BufReader::with_capacity(capacity, text.as_bytes());
            let mut seen = Vec::new();
            json_lines(reader, &mut |doc: Document<'_>| {
                let json = doc.json.map(|j| String::from_utf8_lossy(&j).into_owned());
                seen.push((doc.index, json));
            })
            .unwrap();
            let expected = vec![
                (1, Ok("{\"a\":1}\n".to_owned())),
                (
                    4,
                    Ok("{\"b\":\"a line longer than the reader's buffer\"}\r\n".to_owned()),
                ),
                (5, Ok("{\"c\":3}\n".to_owned())),
                (6, Ok("{\"last\":true}".to_owned())),
            ];
            assert_eq!(seen, expected, "capacity {capacity}");
        }
    }

    /// A reader whose first read is interrupted by a signal.
    struct InterruptedOnce<'a> {
        interrupted: bool,
        rest: &'a [u8],
    }

    impl Read for InterruptedOnce<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if !self.interrupted {
                self.interrupted = true;
                return Err(io::ErrorKind::Interrupted.into());
            }
            self.rest.read(buf)
        }
    }

    #[test]
    fn json_lines_go_on_after_an_interrupted_read() {
        let reader = BufReader::new(InterruptedOnce {
            interrupted: false,
            rest: b"{\"a\":1}\n{\"b\":2}\n",
        });
        let mut seen = Vec::new();
        json_lines(reader, &mut |doc: Document<'_>| seen.push(doc.index)).unwrap();
        assert_eq!(seen, [1, 2]);
    }

    #[test]
    fn deep_flow_yaml_is_refused() {
        let text = format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
        let err = yaml_to_json(&text).err();
        assert_eq!(err.as_deref(), Some("collections nested more than 128 deep"));
        // 128 levels are still read (and then refused or not by the deserializer's own limit).
        let ok = format!("a: {}1{}", "[".repeat(100), "]".repeat(100));
        assert!(yaml_to_json(&ok).is_ok());
    }
}
