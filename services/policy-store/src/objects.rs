//! RulesetService and AttestorService: CRUD by name of documents the engine validates.

use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::attestor_service_server::AttestorService;
use portcullis_proto::policystore::v1::ruleset_service_server::RulesetService;
use portcullis_server::Caller;
use portcullis_storage::NameQuery;
use tonic::{Request, Response, Status};

use crate::PolicyStore;
use crate::convert::{actor, attestor_to_proto, page, page_response, required_ref, required_text, ruleset_to_proto};
use crate::error::OrStatus;

#[tonic::async_trait]
impl RulesetService for PolicyStore {
    async fn create_ruleset(
        &self,
        request: Request<pb::CreateRulesetRequest>,
    ) -> Result<Response<pb::CreateRulesetResponse>, Status> {
        let caller = Caller::of(&request)?;
        let tenant = caller.tenant()?;
        let document = required_text("document_json", &request.get_ref().document_json)?;
        let ruleset = self
            .store
            .create_ruleset(tenant, &actor(caller), document)
            .await
            .or_status()?;
        Ok(Response::new(pb::CreateRulesetResponse {
            ruleset: Some(ruleset_to_proto(ruleset)),
        }))
    }

    async fn get_ruleset(
        &self,
        request: Request<pb::GetRulesetRequest>,
    ) -> Result<Response<pb::GetRulesetResponse>, Status> {
        let caller = Caller::of(&request)?;
        let tenant = caller.tenant()?;
        let ruleset_ref = required_ref("ruleset", request.get_ref().ruleset.clone())?;
        let ruleset = self.store.get_ruleset(tenant, &ruleset_ref).await.or_status()?;
        Ok(Response::new(pb::GetRulesetResponse {
            ruleset: Some(ruleset_to_proto(ruleset)),
        }))
    }

    async fn list_rulesets(
        &self,
        request: Request<pb::ListRulesetsRequest>,
    ) -> Result<Response<pb::ListRulesetsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let tenant = caller.tenant()?;
        let req = request.get_ref();
        let query = NameQuery {
            page: page(req.page.clone()),
            name_filter: req.name_filter.clone(),
        };
        let listed = self.store.list_rulesets(tenant, &query).await.or_status()?;
        Ok(Response::new(pb::ListRulesetsResponse {
            rulesets: listed.items.into_iter().map(ruleset_to_proto).collect(),
            page: page_response(listed.next_token),
        }))
    }

    async fn update_ruleset(
        &self,
        request: Request<pb::UpdateRulesetRequest>,
    ) -> Result<Response<pb::UpdateRulesetResponse>, Status> {
        let caller = Caller::of(&request)?;
        let tenant = caller.tenant()?;
        let req = request.get_ref();
        let ruleset_ref = required_ref("ruleset", req.ruleset.clone())?;
        let document = required_text("document_json", &req.document_json)?;
        let written = self
            .store
            .update_ruleset(tenant, &actor(caller), &ruleset_ref, document, req.expected_revision)
            .await
            .or_status()?;
        Ok(Response::new(pb::UpdateRulesetResponse {
            ruleset: Some(ruleset_to_proto(written.value)),
            changed: written.changed,
        }))
    }

    async fn apply_ruleset(
        &self,
        request: Request<pb::ApplyRulesetRequest>,
    ) -> Result<Response<pb::ApplyRulesetResponse>, Status> {
        let caller = Caller::of(&request)?;
        let tenant = caller.tenant()?;
        let req = request.get_ref();
        let document = required_text("document_json", &req.document_json)?;
        let written = self
            .store
            .apply_ruleset(tenant, &actor(caller), document, req.expected_revision)
            .await
            .or_status()?;
        Ok(Response::new(pb::ApplyRulesetResponse {
            ruleset: Some(ruleset_to_proto(written.value)),
            created: written.created,
            changed: written.changed,
        }))
    }

    async fn delete_ruleset(
        &self,
        request: Request<pb::DeleteRulesetRequest>,
    ) -> Result<Response<pb::DeleteRulesetResponse>, Status> {
        let caller = Caller::of(&request)?;
        let tenant = caller.tenant()?;
        let ruleset_ref = required_ref("ruleset", request.get_ref().ruleset.clone())?;
        let deleted = self
            .store
            .delete_ruleset(tenant, &actor(caller), &ruleset_ref)
            .await
            .or_status()?;
        Ok(Response::new(pb::DeleteRulesetResponse { id: deleted.id }))
    }
}

#[tonic::async_trait]
impl AttestorService for PolicyStore {
    async fn create_attestor(
        &self,
        request: Request<pb::CreateAttestorRequest>,
    ) -> Result<Response<pb::CreateAttestorResponse>, Status> {
        let caller = Caller::of(&request)?;
        let tenant = caller.tenant()?;
        let document = required_text("document_json", &request.get_ref().document_json)?;
        let attestor = self
            .store
            .create_attestor(tenant, &actor(caller), document)
            .await
            .or_status()?;
        Ok(Response::new(pb::CreateAttestorResponse {
            attestor: Some(attestor_to_proto(attestor)),
        }))
    }

    async fn get_attestor(
        &self,
        request: Request<pb::GetAttestorRequest>,
    ) -> Result<Response<pb::GetAttestorResponse>, Status> {
        let caller = Caller::of(&request)?;
        let tenant = caller.tenant()?;
        let attestor_ref = required_ref("attestor", request.get_ref().attestor.clone())?;
        let attestor = self.store.get_attestor(tenant, &attestor_ref).await.or_status()?;
        Ok(Response::new(pb::GetAttestorResponse {
            attestor: Some(attestor_to_proto(attestor)),
        }))
    }

    async fn list_attestors(
        &self,
        request: Request<pb::ListAttestorsRequest>,
    ) -> Result<Response<pb::ListAttestorsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let tenant = caller.tenant()?;
        let req = request.get_ref();
        let query = NameQuery {
            page: page(req.page.clone()),
            name_filter: req.name_filter.clone(),
        };
        let listed = self.store.list_attestors(tenant, &query).await.or_status()?;
        Ok(Response::new(pb::ListAttestorsResponse {
            attestors: listed.items.into_iter().map(attestor_to_proto).collect(),
            page: page_response(listed.next_token),
        }))
    }

    async fn update_attestor(
        &self,
        request: Request<pb::UpdateAttestorRequest>,
    ) -> Result<Response<pb::UpdateAttestorResponse>, Status> {
        let caller = Caller::of(&request)?;
        let tenant = caller.tenant()?;
        let req = request.get_ref();
        let attestor_ref = required_ref("attestor", req.attestor.clone())?;
        let document = required_text("document_json", &req.document_json)?;
        let written = self
            .store
            .update_attestor(tenant, &actor(caller), &attestor_ref, document, req.expected_revision)
            .await
            .or_status()?;
        Ok(Response::new(pb::UpdateAttestorResponse {
            attestor: Some(attestor_to_proto(written.value)),
            changed: written.changed,
        }))
    }

    async fn apply_attestor(
        &self,
        request: Request<pb::ApplyAttestorRequest>,
    ) -> Result<Response<pb::ApplyAttestorResponse>, Status> {
        let caller = Caller::of(&request)?;
        let tenant = caller.tenant()?;
        let req = request.get_ref();
        let document = required_text("document_json", &req.document_json)?;
        let written = self
            .store
            .apply_attestor(tenant, &actor(caller), document, req.expected_revision)
            .await
            .or_status()?;
        Ok(Response::new(pb::ApplyAttestorResponse {
            attestor: Some(attestor_to_proto(written.value)),
            created: written.created,
            changed: written.changed,
        }))
    }

    async fn delete_attestor(
        &self,
        request: Request<pb::DeleteAttestorRequest>,
    ) -> Result<Response<pb::DeleteAttestorResponse>, Status> {
        let caller = Caller::of(&request)?;
        let tenant = caller.tenant()?;
        let attestor_ref = required_ref("attestor", request.get_ref().attestor.clone())?;
        let deleted = self
            .store
            .delete_attestor(tenant, &actor(caller), &attestor_ref)
            .await
            .or_status()?;
        Ok(Response::new(pb::DeleteAttestorResponse { id: deleted.id }))
    }
}
