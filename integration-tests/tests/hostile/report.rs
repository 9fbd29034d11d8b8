//! Each test's row of SECURITY.md's attack table (see
//! `portcullis_integration_tests::security_report`).

use std::path::Path;

/// Records what the running test tried (`attack`, for finding `finding`) and measured.
pub fn row(finding: &str, attack: &str, attacker: &str, others: &str) {
    portcullis_integration_tests::security_report::write_row(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        finding,
        attack,
        attacker,
        others,
    );
}
