//! Attestors (POLICY.md section 6): trusted cosign public keys.
