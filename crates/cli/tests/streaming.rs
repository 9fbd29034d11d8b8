//! Large inputs stream: every document is answered, in order, and memory stays flat
//! whatever the number of documents.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// One line of the generated corpus: every 7th pod is privileged (blocked by the example
/// policy), every 5th document is a ConfigMap (allowed without evaluation).
fn document(i: usize) -> String {
    if i % 5 == 4 {
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm-{i}","namespace":"ns"}},"data":{{"k":"v"}}}}"#
        )
    } else {
        pod_json(
            &format!("pod-{i}"),
            "ns",
            "registry.example.com/shop/web:1.4.2",
            i % 7 == 3,
        )
    }
}

fn expected(i: usize) -> (String, &'static str) {
    if i % 5 == 4 {
        (format!("cm-{i}"), "allow")
    } else {
        (format!("pod-{i}"), if i % 7 == 3 { "block" } else { "allow" })
    }
}

fn corpus(n: usize) -> String {
    let mut s = String::with_capacity(n * 200);
    for i in 0..n {
        s.push_str(&document(i));
        s.push('\n');
    }
    s
}

/// Checks that `stdout` answers documents `0..n` in order, one line each.
fn assert_answers_in_order(stdout: &str, n: usize) {
    let mut count = 0;
    for (i, line) in stdout.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (name, decision) = expected(i);
        assert_eq!(v["name"], name.as_str(), "line {i}");
        assert_eq!(v["decision"], decision, "line {i}");
        count += 1;
    }
    assert_eq!(count, n, "one line per document");
}

#[test]
fn twenty_thousand_json_lines_from_a_file_are_answered_in_order() {
    let n = 20_000;
    let dir = TempDir::new("stream-file");
    let file = dir.write("bulk.jsonl", corpus(n));
    let run = portcullis(&["eval", "--policy", &example_policy(), &file.display().to_string()]);
    run.assert_no_panic();
    assert_eq!(run.stderr, "");
    assert_eq!(run.code, Some(1));
    assert_answers_in_order(&run.stdout, n);
}

#[test]
fn twenty_thousand_documents_on_stdin_are_answered_in_order_before_the_input_ends() {
    let n = 20_000;
    let mut child = Command::new(BIN)
        .args(["eval", "--policy", &example_policy(), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let reader = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            for (i, line) in BufReader::new(stdout).lines().enumerate() {
                let line = line.unwrap();
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let (name, decision) = expected(i);
                assert_eq!(v["name"], name.as_str(), "line {i}");
                assert_eq!(v["decision"], decision, "line {i}");
                seen.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // Half the input, then wait for answers while standard input is still open: a CLI that
    // read all its input before answering would never answer here.
    for i in 0..n / 2 {
        writeln!(stdin, "{}", document(i)).unwrap();
    }
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let answered_early = seen.load(Ordering::SeqCst);
    assert!(answered_early > 0, "no answer before the end of the input");
    assert!(answered_early <= n / 2);
    for i in n / 2..n {
        writeln!(stdin, "{}", document(i)).unwrap();
    }
    drop(stdin);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(stderr, "");
    assert_eq!(status.code(), Some(1));
    assert_eq!(seen.load(Ordering::SeqCst), n, "one line per document");
}

/// The child's peak resident set (VmHWM, kB), sampled from /proc while it runs: the high
/// water mark only grows, so the last sample before exit is (nearly) the peak.
fn peak_rss_kb(file: &std::path::Path) -> (u64, usize) {
    let mut child = Command::new(BIN)
        .args(["eval", "--policy", &example_policy(), &file.display().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || BufReader::new(stdout).lines().count());
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            // A zombie has no VmHWM line any more: keep the last value seen.
            if let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    (peak, reader.join().unwrap())
}

/// A coarse check that memory does not grow with the number of documents: ten times the
/// documents must cost less than twice the peak memory. A CLI that kept its input or its
/// output in memory would need about 10x more for the larger run (20,000 documents are
/// about 4 MB of input and 2.5 MB of output, well above the process's baseline).
#[test]
fn peak_memory_is_flat_in_the_number_of_documents() {
    let dir = TempDir::new("stream-rss");
    let small = dir.write("small.jsonl", corpus(2_000));
    let large = dir.write("large.jsonl", corpus(20_000));
    let (small_kb, small_lines) = peak_rss_kb(&small);
    let (large_kb, large_lines) = peak_rss_kb(&large);
    assert_eq!(small_lines, 2_000);
    assert_eq!(large_lines, 20_000);
    assert!(
        small_kb > 0 && large_kb > 0,
        "VmHWM was read ({small_kb} kB, {large_kb} kB)"
    );
    println!("peak RSS: 2,000 documents {small_kb} kB, 20,000 documents {large_kb} kB");
    assert!(
        large_kb < 2 * small_kb,
        "peak RSS {large_kb} kB for 20,000 documents vs {small_kb} kB for 2,000"
    );
}
