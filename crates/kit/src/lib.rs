//! The Portcullis service kit: one way to build a service. A service is a domain crate plus
//! thin adapters; everything they would otherwise each write for themselves lives here.

pub mod cache;
