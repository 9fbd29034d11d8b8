//! The Portcullis policy engine.
//!
//! One library, no I/O, no clock of its own: the policy document and its validation
//! ([`policy`]), the lean Kubernetes views it reads ([`k8s`], [`input`]), the compiled
//! evaluator ([`evaluate`]), the Pod Security Standards ([`pss`]), image references
//! ([`image_ref`]), scan results ([`scan`]), runtime rulesets and attestors ([`runtime`],
//! [`attestor`]). Every service, the CLI and the tests call it; nothing re-implements a rule.

pub mod attestor;
pub mod evaluate;
pub mod image_ref;
pub mod input;
pub mod k8s;
pub mod limits;
pub mod policy;
pub mod projection;
pub mod pss;
pub mod replay;
pub mod runtime;
pub mod scan;
mod serde_util;
pub mod yaml;
