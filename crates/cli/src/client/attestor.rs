//! `portcullis attestor ...`: attestors, by name (the shared named-document commands).

use portcullis_proto::policystore::v1 as pb;
use serde_json::json;

use super::named_document::named_document_cli;

named_document_cli! {
    command: AttestorCommand, resource: Attestors,
    kind: "attestor", what: "attestor", plural: "attestors",
    extra: "TYPE" / "type", |r: &pb::Attestor| (json!(r.attestor_type), r.attestor_type.clone()),
    engine: portcullis_engine::attestor::Attestor, record: Attestor,
    client: pb::attestor_service_client::AttestorServiceClient<super::Svc>, conn: attestors,
    field: attestor / attestors,
    apply: apply_attestor(ApplyAttestorRequest),
    get: get_attestor(GetAttestorRequest),
    list: list_attestors(ListAttestorsRequest),
    delete: delete_attestor(DeleteAttestorRequest),
}
