//! Runtime rulesets (POLICY.md section 5) and the catalogue of known runtime rule ids.
