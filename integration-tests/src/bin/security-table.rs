//! Puts the hostile suite's attack table into SECURITY.md (see
//! `portcullis_integration_tests::security_report`). Run after the suite:
//!
//! ```text
//! cargo test -p portcullis-integration-tests --test hostile
//! cargo run -p portcullis-integration-tests --bin security-table [ROWS_FOLDER] [SECURITY.md]
//! ```
//!
//! The rows are read from `<target>/tmp/hostile-report` (the target folder is
//! `CARGO_TARGET_DIR` or the workspace's `target`) unless a folder is given.

use std::path::PathBuf;
use std::process::ExitCode;

use portcullis_integration_tests::security_report::{folder, splice, table};

fn main() -> ExitCode {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = std::env::args().skip(1);
    let rows = args.next().map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
        folder(&target.join("tmp"))
    });
    let document = args.next().map_or_else(|| workspace.join("SECURITY.md"), PathBuf::from);
    let table = match table(&rows) {
        Ok(table) => table,
        Err(e) => {
            eprintln!("security-table: reading the rows in {}: {e}", rows.display());
            return ExitCode::FAILURE;
        }
    };
    let text = match std::fs::read_to_string(&document) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("security-table: reading {}: {e}", document.display());
            return ExitCode::FAILURE;
        }
    };
    let Some(updated) = splice(&text, &table) else {
        eprintln!("security-table: {} has no attack-table markers", document.display());
        return ExitCode::FAILURE;
    };
    if let Err(e) = std::fs::write(&document, updated) {
        eprintln!("security-table: writing {}: {e}", document.display());
        return ExitCode::FAILURE;
    }
    println!(
        "security-table: {} rows from {} written to {}",
        table.lines().count().saturating_sub(2),
        rows.display(),
        document.display()
    );
    ExitCode::SUCCESS
}
