//! Evaluation of compiled policies.
