//! Writes a JSON Lines corpus of generated AdmissionReviews (one compact review a line) for
//! the process-level benchmark: `portcullis eval` against the `regorus_eval` example.
//!
//! `cargo run --release -p portcullis-engine --example make_corpus -- OUT.jsonl [COUNT]`
//! (COUNT defaults to 100000). Review `i` is the same as in the criterion benchmark and the
//! equivalence test, whose corpus is the first 400.

use portcullis_corpus as corpus;

use std::io::{BufWriter, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: make_corpus OUT.jsonl [COUNT]")?;
    let count: u64 = args.next().map_or(Ok(100_000), |n| n.parse())?;
    let mut w = BufWriter::new(std::fs::File::create(&out)?);
    let (mut bytes, mut blocks) = (0usize, 0u64);
    for i in 0..count {
        let g = corpus::review(i);
        bytes += g.json.len() + 1;
        blocks += u64::from(g.workload && g.variant.violates());
        w.write_all(g.json.as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    eprintln!(
        "{out}: {count} reviews, {bytes} bytes ({} bytes a review on average), {blocks} expected blocks \
         with the three-check policy",
        bytes / usize::try_from(count.max(1))?
    );
    Ok(())
}
