//! `portcullis attestor ...`: attestors, by name (the shared named-document commands).

use portcullis_proto::policystore::v1 as pb;
use serde_json::json;

use super::named_document::named_document_cli;

named_document_cli! {
    Attestor / attestor / attestors, what: "attestor", engine: portcullis_engine::attestor::Attestor,
    extra: "TYPE" / "type", |r: &pb::Attestor| (json!(r.attestor_type), r.attestor_type.clone()),
}
