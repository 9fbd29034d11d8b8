//! PolicyService.

use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::policy_service_server::PolicyService;
use portcullis_server::Caller;
use portcullis_server::status::invalid_field;
use portcullis_storage::{PolicyQuery, ResourceRef, Store};
use tonic::{Request, Response, Status};

use crate::PolicyStore;
use crate::cache::Fetch;
use crate::convert::{acting, optional_ref, page, page_response, policy_to_proto, required_ref, required_text};
use crate::error::OrStatus;

#[tonic::async_trait]
impl PolicyService for PolicyStore {
    async fn create_policy(
        &self,
        request: Request<pb::CreatePolicyRequest>,
    ) -> Result<Response<pb::CreatePolicyResponse>, Status> {
        let (tenant, actor) = acting(&request)?;
        let req = request.get_ref();
        let document = required_text("document_json", &req.document_json)?;
        let policy = self.store.create_policy(tenant, &actor, document).await.or_status()?;
        Ok(Response::new(pb::CreatePolicyResponse {
            policy: Some(policy_to_proto(policy)),
        }))
    }

    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?;
        let policy_ref = required_ref("policy", request.get_ref().policy.clone())?;
        let policy = self.store.get_policy(tenant, &policy_ref).await.or_status()?;
        Ok(Response::new(pb::GetPolicyResponse {
            policy: Some(policy_to_proto(policy)),
        }))
    }

    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?;
        let req = request.get_ref();
        let query = PolicyQuery {
            page: page(req.page.clone()),
            name_filter: req.name_filter.clone(),
            include_documents: req.include_documents,
        };
        let listed = self.store.list_policies(tenant, &query).await.or_status()?;
        Ok(Response::new(pb::ListPoliciesResponse {
            policies: listed.items.into_iter().map(policy_to_proto).collect(),
            page: page_response(listed.next_token),
        }))
    }

    async fn update_policy(
        &self,
        request: Request<pb::UpdatePolicyRequest>,
    ) -> Result<Response<pb::UpdatePolicyResponse>, Status> {
        let (tenant, actor) = acting(&request)?;
        let req = request.get_ref();
        let policy_ref = required_ref("policy", req.policy.clone())?;
        let document = required_text("document_json", &req.document_json)?;
        if req.expected_revision == 0 {
            return Err(invalid_field(
                "expected_revision",
                "required: the revision the document was read at",
            ));
        }
        let written = self
            .store
            .update_policy(tenant, &actor, &policy_ref, document, req.expected_revision)
            .await
            .or_status()?;
        Ok(Response::new(pb::UpdatePolicyResponse {
            policy: Some(policy_to_proto(written.value)),
            changed: written.changed,
        }))
    }

    async fn apply_policy(
        &self,
        request: Request<pb::ApplyPolicyRequest>,
    ) -> Result<Response<pb::ApplyPolicyResponse>, Status> {
        let (tenant, actor) = acting(&request)?;
        let req = request.get_ref();
        let document = required_text("document_json", &req.document_json)?;
        let written = self
            .store
            .apply_policy(tenant, &actor, document, req.expected_revision)
            .await
            .or_status()?;
        Ok(Response::new(pb::ApplyPolicyResponse {
            policy: Some(policy_to_proto(written.value)),
            created: written.created,
            changed: written.changed,
        }))
    }

    async fn duplicate_policy(
        &self,
        request: Request<pb::DuplicatePolicyRequest>,
    ) -> Result<Response<pb::DuplicatePolicyResponse>, Status> {
        let (tenant, actor) = acting(&request)?;
        let req = request.get_ref();
        let policy_ref = required_ref("policy", req.policy.clone())?;
        let policy = self
            .store
            .duplicate_policy(tenant, &actor, &policy_ref, req.new_name.as_deref())
            .await
            .or_status()?;
        Ok(Response::new(pb::DuplicatePolicyResponse {
            policy: Some(policy_to_proto(policy)),
        }))
    }

    async fn delete_policy(
        &self,
        request: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        let (tenant, actor) = acting(&request)?;
        let req = request.get_ref();
        let policy_ref = required_ref("policy", req.policy.clone())?;
        let deleted = self
            .store
            .delete_policy(tenant, &actor, &policy_ref, req.expected_revision)
            .await
            .or_status()?;
        Ok(Response::new(pb::DeletePolicyResponse {
            id: deleted.id,
            revision: deleted.revision,
        }))
    }

    async fn list_policy_history(
        &self,
        request: Request<pb::ListPolicyHistoryRequest>,
    ) -> Result<Response<pb::ListPolicyHistoryResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?;
        let req = request.get_ref();
        let policy_ref = required_ref("policy", req.policy.clone())?;
        let history = self
            .store
            .policy_history(tenant, &policy_ref, &page(req.page.clone()))
            .await
            .or_status()?;
        Ok(Response::new(pb::ListPolicyHistoryResponse {
            policy_id: history.policy_id,
            revisions: history
                .revisions
                .items
                .into_iter()
                .map(|r| pb::PolicyRevisionInfo {
                    revision: r.revision,
                    author_key_id: r.author_key_id,
                    created_at: Some(portcullis_storage::events::timestamp(r.created_at)),
                    document_sha256: r.document_sha256,
                })
                .collect(),
            page: page_response(history.revisions.next_token),
        }))
    }

    async fn get_policy_revision(
        &self,
        request: Request<pb::GetPolicyRevisionRequest>,
    ) -> Result<Response<pb::GetPolicyRevisionResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?;
        let req = request.get_ref();
        let policy_ref = required_ref("policy", req.policy.clone())?;
        if req.revision == 0 {
            return Err(invalid_field("revision", "required: revisions start at 1"));
        }
        let policy = self
            .store
            .get_policy_revision(tenant, &policy_ref, req.revision)
            .await
            .or_status()?;
        Ok(Response::new(pb::GetPolicyRevisionResponse {
            policy: Some(policy_to_proto(policy)),
        }))
    }

    async fn get_effective_policy(
        &self,
        request: Request<pb::GetEffectivePolicyRequest>,
    ) -> Result<Response<pb::GetEffectivePolicyResponse>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.get_ref();
        let tenant = caller.tenant_for(&req.tenant_id)?;
        let requested = optional_ref("cluster", req.cluster.clone())?;
        let cluster = self.cluster_of_caller(caller, tenant, requested).await?;
        let read = || -> Fetch<pb::GetEffectivePolicyResponse> {
            Box::pin(read_effective(self.store.clone(), tenant.to_owned(), cluster.clone()))
        };
        let answer = match &cluster {
            // Connectors name their cluster by id (or not at all): those answers are cached.
            ResourceRef::Id(id) => self.caches.effective(tenant, id, read).get().await?,
            ResourceRef::Name(_) => read().await?,
        };
        Ok(Response::new(answer))
    }
}

/// The effective policy of the tenant's cluster, from the store.
async fn read_effective(
    store: Store,
    tenant: String,
    cluster: ResourceRef,
) -> Result<pb::GetEffectivePolicyResponse, Status> {
    let effective = store.effective_policy(&tenant, &cluster).await.or_status()?;
    Ok(pb::GetEffectivePolicyResponse {
        cluster_id: effective.cluster_id,
        cluster_name: effective.cluster_name,
        policy: effective.policy.map(policy_to_proto),
        settings: Some(effective.settings.to_proto()),
        cluster_generation: effective.cluster_generation,
    })
}
