//! RulesetService and AttestorService: CRUD by name of documents the engine validates. The
//! two services are one implementation, [`named_document_service!`], instantiated per kind.

use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::attestor_service_server::AttestorService;
use portcullis_proto::policystore::v1::ruleset_service_server::RulesetService;
use portcullis_server::Caller;
use portcullis_storage::NameQuery;
use tonic::{Request, Response, Status};

use crate::PolicyStore;
use crate::convert::{acting, attestor_to_proto, page, page_response, required_ref, required_text, ruleset_to_proto};
use crate::error::OrStatus;

/// One named-document service (create, get, list, update, apply, delete by name or id):
/// `$one` is the document's field in requests and responses, `$many` the listing's.
macro_rules! named_document_service {
    (
        $service:ident, $one:ident, $many:ident, $to_proto:path,
        create: $create:ident($create_req:ident) -> $create_res:ident,
        get: $get:ident($get_req:ident) -> $get_res:ident,
        list: $list:ident($list_req:ident) -> $list_res:ident,
        update: $update:ident($update_req:ident) -> $update_res:ident,
        apply: $apply:ident($apply_req:ident) -> $apply_res:ident,
        delete: $delete:ident($delete_req:ident) -> $delete_res:ident $(,)?
    ) => {
        #[tonic::async_trait]
        impl $service for PolicyStore {
            async fn $create(&self, request: Request<pb::$create_req>) -> Result<Response<pb::$create_res>, Status> {
                let (tenant, actor) = acting(&request)?;
                let document = required_text("document_json", &request.get_ref().document_json)?;
                let stored = self.store.$create(tenant, &actor, document).await.or_status()?;
                Ok(Response::new(pb::$create_res {
                    $one: Some($to_proto(stored)),
                }))
            }

            async fn $get(&self, request: Request<pb::$get_req>) -> Result<Response<pb::$get_res>, Status> {
                let tenant = Caller::tenant_of(&request)?;
                let reference = required_ref(stringify!($one), request.get_ref().$one.clone())?;
                let stored = self.store.$get(tenant, &reference).await.or_status()?;
                Ok(Response::new(pb::$get_res {
                    $one: Some($to_proto(stored)),
                }))
            }

            async fn $list(&self, request: Request<pb::$list_req>) -> Result<Response<pb::$list_res>, Status> {
                let tenant = Caller::tenant_of(&request)?;
                let req = request.get_ref();
                let query = NameQuery {
                    page: page(req.page.clone()),
                    name_filter: req.name_filter.clone(),
                };
                let listed = self.store.$list(tenant, &query).await.or_status()?;
                Ok(Response::new(pb::$list_res {
                    $many: listed.items.into_iter().map($to_proto).collect(),
                    page: page_response(listed.next_token),
                }))
            }

            async fn $update(&self, request: Request<pb::$update_req>) -> Result<Response<pb::$update_res>, Status> {
                let (tenant, actor) = acting(&request)?;
                let req = request.get_ref();
                let reference = required_ref(stringify!($one), req.$one.clone())?;
                let document = required_text("document_json", &req.document_json)?;
                let written = self
                    .store
                    .$update(tenant, &actor, &reference, document, req.expected_revision)
                    .await
                    .or_status()?;
                Ok(Response::new(pb::$update_res {
                    $one: Some($to_proto(written.value)),
                    changed: written.changed,
                }))
            }

            async fn $apply(&self, request: Request<pb::$apply_req>) -> Result<Response<pb::$apply_res>, Status> {
                let (tenant, actor) = acting(&request)?;
                let req = request.get_ref();
                let document = required_text("document_json", &req.document_json)?;
                let written = self
                    .store
                    .$apply(tenant, &actor, document, req.expected_revision)
                    .await
                    .or_status()?;
                Ok(Response::new(pb::$apply_res {
                    $one: Some($to_proto(written.value)),
                    created: written.created,
                    changed: written.changed,
                }))
            }

            async fn $delete(&self, request: Request<pb::$delete_req>) -> Result<Response<pb::$delete_res>, Status> {
                let (tenant, actor) = acting(&request)?;
                let reference = required_ref(stringify!($one), request.get_ref().$one.clone())?;
                let deleted = self.store.$delete(tenant, &actor, &reference).await.or_status()?;
                Ok(Response::new(pb::$delete_res { id: deleted.id }))
            }
        }
    };
}

named_document_service! {
    RulesetService, ruleset, rulesets, ruleset_to_proto,
    create: create_ruleset(CreateRulesetRequest) -> CreateRulesetResponse,
    get: get_ruleset(GetRulesetRequest) -> GetRulesetResponse,
    list: list_rulesets(ListRulesetsRequest) -> ListRulesetsResponse,
    update: update_ruleset(UpdateRulesetRequest) -> UpdateRulesetResponse,
    apply: apply_ruleset(ApplyRulesetRequest) -> ApplyRulesetResponse,
    delete: delete_ruleset(DeleteRulesetRequest) -> DeleteRulesetResponse,
}

named_document_service! {
    AttestorService, attestor, attestors, attestor_to_proto,
    create: create_attestor(CreateAttestorRequest) -> CreateAttestorResponse,
    get: get_attestor(GetAttestorRequest) -> GetAttestorResponse,
    list: list_attestors(ListAttestorsRequest) -> ListAttestorsResponse,
    update: update_attestor(UpdateAttestorRequest) -> UpdateAttestorResponse,
    apply: apply_attestor(ApplyAttestorRequest) -> ApplyAttestorResponse,
    delete: delete_attestor(DeleteAttestorRequest) -> DeleteAttestorResponse,
}
