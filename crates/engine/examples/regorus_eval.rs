//! The regorus side of the process-level benchmark: judges every review of a JSON Lines
//! file with a Rego policy, as `portcullis eval` does with ours, and writes one JSON line
//! per review on stdout (`{"decision":"allow"|"block","violations":[...]}`).
//!
//! `regorus_eval [--rvm] POLICY.rego CORPUS.jsonl`: the policy's `data.portcullis.bench.deny`
//! set decides (non-empty blocks). The policy is prepared once; each line is parsed into a
//! regorus `Value` and evaluated. Exit status 1 when anything is blocked, as `portcullis eval`.

#[path = "../benches/support/rego.rs"]
mod rego;

use std::io::{BufRead, BufReader, BufWriter, Write};

enum Runner {
    Interpreter(rego::Interpreter),
    Vm(rego::Vm),
}

fn main() -> Result<std::process::ExitCode, rego::BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let use_vm = args.iter().any(|a| a == "--rvm");
    let files: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [policy, corpus] = files.as_slice() else {
        return Err("usage: regorus_eval [--rvm] POLICY.rego CORPUS.jsonl".into());
    };
    let rego_text = std::fs::read_to_string(policy)?;
    let mut runner = if use_vm {
        Runner::Vm(rego::Vm::new(&rego_text)?)
    } else {
        Runner::Interpreter(rego::Interpreter::new(&rego_text)?)
    };
    let mut reader = BufReader::with_capacity(256 * 1024, std::fs::File::open(corpus)?);
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut any_block = false;
    // One line buffer for the whole file and the read buffer `portcullis eval` uses, so
    // that reading costs regorus no more than it costs us.
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let deny = match &mut runner {
            Runner::Interpreter(i) => i.deny(&line)?,
            Runner::Vm(v) => v.deny(&line)?,
        };
        let block = rego::blocks(&deny)?;
        any_block |= block;
        out.write_all(if block {
            br#"{"decision":"block","violations":"#
        } else {
            br#"{"decision":"allow","violations":"#
        })?;
        serde_json::to_writer(&mut out, &deny)?;
        out.write_all(b"}\n")?;
    }
    out.flush()?;
    Ok(if any_block {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}
