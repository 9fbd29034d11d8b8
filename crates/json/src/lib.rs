//! A fast JSON reader for typed views of large documents, made for the Portcullis engine's
//! views of admission objects.
//!
//! Most of an admission object is fields the engine never reads (`managedFields`,
//! annotations, env, resources, ...), so most of a typed parse used to be checking and
//! skipping them. This reader checks the whole document first, in two passes modelled on
//! simdjson: a vectorised pass finds every structural byte outside strings (and refuses
//! control characters and bad escapes in strings), and a pass over those offsets checks the
//! grammar, the numbers and the literals, and pairs each bracket with its closing one. The
//! typed read then runs over the offsets; a skipped value of any size costs one step.
//!
//! It reads exactly what serde_json reads, or refuses: every refusal (invalid JSON, or
//! something it leaves to serde_json, see `de.rs`) is the caller's cue to read the document
//! with serde_json, which reads it or reports the error. Tests and the fuzz target hold the
//! two to the same result on every input. UTF-8 is checked by the caller, once, before either
//! reader runs.
//!
//! The first pass uses AVX2 when the build enables it (`-C target-cpu=x86-64-v3`, as the
//! workspace's `.cargo/config.toml` does), and a portable loop otherwise; no `unsafe` either
//! way (`safe_arch`).

mod de;
mod structural;
mod tape;

use std::cell::RefCell;

use serde::Deserialize;

use tape::Tape;

thread_local! {
    /// The index of the last document read on this thread, kept for its capacity: a parse
    /// allocates nothing for the index once the thread has read a document as large.
    static TAPE: RefCell<Tape> = RefCell::new(Tape::default());
}

/// Index buffers larger than this are released after a read, so that one large document
/// (a `kubectl get -o json` List) does not pin its index to the thread. The index of a 1 MB
/// admission object takes under 2 MB.
const RETAINED_INDEX_BYTES: usize = 4 << 20;

/// Reads `json` as a `T`, or `None` when the document is not valid JSON or holds something
/// this reader leaves to serde_json. `Some` is always what serde_json would give.
pub fn from_str<'de, T: Deserialize<'de>>(json: &'de str) -> Option<T> {
    with_tape(|tape| read(json, tape))
}

/// Whether `json` is one valid JSON value (RFC 8259), as this reader's two passes judge it.
pub fn is_valid(json: &str) -> bool {
    with_tape(|tape| tape.build(json.as_bytes()).is_ok())
}

/// Runs `f` with this thread's index, released afterwards if it has grown large.
fn with_tape<R>(f: impl FnOnce(&mut Tape) -> R) -> R {
    TAPE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut tape) => {
            let result = f(&mut tape);
            if tape.footprint() > RETAINED_INDEX_BYTES {
                *tape = Tape::default();
            }
            result
        }
        // A read on this thread is under way (none is, today): use a fresh index.
        Err(_) => f(&mut Tape::default()),
    })
}

fn read<'de, T: Deserialize<'de>>(json: &'de str, tape: &mut Tape) -> Option<T> {
    tape.build(json.as_bytes()).ok()?;
    let mut reader = de::Reader::new(json, tape);
    let value = T::deserialize(&mut reader).ok()?;
    reader.at_end().then_some(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::Deserialize;
    use serde::de::IgnoredAny;

    use super::{from_str, is_valid};

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sample {
        #[serde(default)]
        name: String,
        #[serde(default)]
        count: Option<i64>,
        #[serde(default)]
        small: Option<u8>,
        #[serde(default)]
        flag: Option<bool>,
        #[serde(default)]
        list: Vec<String>,
        #[serde(default)]
        map: BTreeMap<String, Option<String>>,
        #[serde(default)]
        raw: Option<Box<serde_json::value::RawValue>>,
    }

    /// What serde_json reads, for comparison (`None` when it errs).
    fn reference(json: &str) -> Option<Sample> {
        serde_json::from_str(json).ok()
    }

    fn same(json: &str) -> Option<Sample> {
        let fast = from_str::<Sample>(json);
        if let Some(fast) = &fast {
            let reference = reference(json).unwrap_or_else(|| panic!("serde_json refuses {json:?}"));
            assert_eq!(fast.name, reference.name);
            assert_eq!(fast.count, reference.count);
            assert_eq!(fast.small, reference.small);
            assert_eq!(fast.flag, reference.flag);
            assert_eq!(fast.list, reference.list);
            assert_eq!(fast.map, reference.map);
            assert_eq!(
                fast.raw.as_ref().map(|r| r.get()),
                reference.raw.as_ref().map(|r| r.get())
            );
        }
        fast
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let json = r#" {"name":"a\"b\u00e9","count":-42,"small":7,"flag":true,
            "list":["x","y"],"map":{"k":null,"l":"v"},"skipped":{"deep":[[1.5e3,{}],"s"]},
            "raw": [ 1 , {"a":2} ] } "#;
        let sample = same(json).unwrap();
        assert_eq!(sample.name, "a\"bé");
        assert_eq!(sample.count, Some(-42));
        assert_eq!(sample.raw.unwrap().get(), r#"[ 1 , {"a":2} ]"#);
    }

    #[test]
    fn leaves_to_serde_json_what_it_does_not_read_the_same_way() {
        // serde_json reads each of these (or errs) in a way this reader does not attempt.
        for json in [
            r#"{"count":-0}"#,
            r#"{"count":1.0}"#,
            r#"{"count":1e2}"#,
            r#"{"count":9223372036854775808}"#,
            r#"{"small":256}"#,
            r#"{"count":99999999999999999999}"#,
            r#"["n"]"#,
            r#"{"name":1}"#,
            r#"{"name":"a","name":"b"}"#,
        ] {
            assert!(from_str::<Sample>(json).is_none(), "{json}");
        }
        assert_eq!(
            from_str::<Sample>(r#"{"count":-9223372036854775808}"#).unwrap().count,
            Some(i64::MIN)
        );
    }

    #[test]
    fn skips_values_of_any_depth() {
        let deep = format!(r#"{{"x":{}{}, "name":"n"}}"#, "[".repeat(5000), "]".repeat(5000));
        assert_eq!(same(&deep).unwrap().name, "n");
        assert!(from_str::<IgnoredAny>(&deep).is_some());
    }

    #[test]
    fn refuses_invalid_json_anywhere() {
        for json in [
            r#"{"name":"a","skipped":[1,]}"#,
            r#"{"name":"a","skipped":{"a":01}}"#,
            r#"{"name":"a"} x"#,
            r#"{"name":"a","skipped":"\q"}"#,
        ] {
            assert!(from_str::<Sample>(json).is_none(), "{json}");
            assert!(reference(json).is_none(), "{json}");
        }
    }

    #[test]
    fn large_indexes_are_released_after_the_read() {
        let large = format!("[{}1]", "1,".repeat(3_000_000));
        assert!(from_str::<IgnoredAny>(&large).is_some());
        let footprint = super::TAPE.with(|tape| tape.borrow().footprint());
        assert!(footprint <= super::RETAINED_INDEX_BYTES, "{footprint} bytes kept");
        // A small document's index is kept for the next read.
        assert!(from_str::<IgnoredAny>("[1,2,3]").is_some());
        assert!(super::TAPE.with(|tape| tape.borrow().footprint()) > 0);
    }

    #[test]
    fn strings_with_escapes_between_skipped_ones() {
        // The backslash cursor moves past escapes in skipped strings and values.
        let json = r#"{"skip":"a\\b","name":"x\u0041","s2":["\n"],"list":["p","q\"r"],"map":{"k\t":"v"}}"#;
        let sample = same(json).unwrap();
        assert_eq!(sample.name, "xA");
        assert_eq!(sample.list, ["p", "q\"r"]);
        assert_eq!(sample.map.get("k\t"), Some(&Some("v".to_owned())));
    }

    /// Bytes that matter to JSON's grammar, and a few that are never allowed.
    fn json_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("{"),
            Just("}"),
            Just("["),
            Just("]"),
            Just(":"),
            Just(","),
            Just("\""),
            Just("\\"),
            Just("u"),
            Just("0"),
            Just("1"),
            Just("-"),
            Just("."),
            Just("e"),
            Just("+"),
            Just("true"),
            Just("false"),
            Just("null"),
            Just(" "),
            Just("\n"),
            Just("\t"),
            Just("x"),
            Just("\u{1}"),
            Just("é"),
            Just("\"a\""),
            Just("\"k\":"),
            Just("12"),
            Just("0.5"),
            Just("1e9"),
            Just("\\u00e9"),
            Just("\\n"),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    /// Object keys: often one of [`Sample`]'s fields.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,6}",
            prop::sample::select(vec!["name", "count", "small", "flag", "list", "map", "raw"]).prop_map(str::to_owned),
        ]
    }

    /// Valid JSON, then possibly one byte changed, inserted or removed.
    fn near_json() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".{0,8}".prop_map(serde_json::Value::from),
        ];
        let value = leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(key(), inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        (value, any::<bool>(), 0..3u8, any::<prop::sample::Index>(), any::<u8>()).prop_map(
            |(value, pretty, edit, at, byte)| {
                let text = if pretty {
                    serde_json::to_string_pretty(&value).unwrap()
                } else {
                    value.to_string()
                };
                let mut bytes = text.into_bytes();
                let i = at.index(bytes.len() + 1);
                match edit {
                    0 => {}
                    1 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.push(byte),
                    _ if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => {}
                }
                String::from_utf8_lossy(&bytes).into_owned()
            },
        )
    }

    proptest! {
        // At least 2,000 cases; PROPTEST_CASES raises it.
        #![proptest_config(ProptestConfig {
            cases: ProptestConfig::default().cases.max(2000),
            ..ProptestConfig::default()
        })]

        /// The two passes accept exactly what serde_json accepts.
        #[test]
        fn accepts_exactly_what_serde_json_accepts(json in prop_oneof![json_like(), near_json()]) {
            let serde_json_accepts = serde_json::from_str::<IgnoredAny>(&json).is_ok();
            prop_assert_eq!(is_valid(&json), serde_json_accepts, "{:?}", json);
        }

        /// What the reader reads is what serde_json reads.
        #[test]
        fn reads_what_serde_json_reads_on_any_input(json in prop_oneof![json_like(), near_json()]) {
            let _ = same(&json);
        }
    }
}
