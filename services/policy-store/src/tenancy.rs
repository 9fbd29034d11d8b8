//! TenantService (operator key), AuthService (API keys, introspection) and AuditService.

use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::audit_service_server::AuditService;
use portcullis_proto::policystore::v1::auth_service_server::AuthService;
use portcullis_proto::policystore::v1::tenant_service_server::TenantService;
use portcullis_server::status::invalid_field;
use portcullis_server::{Caller, Principal};
use portcullis_storage::events::timestamp;
use portcullis_storage::{ApiKeyQuery, AuditQuery, InactiveReason, NewApiKey, NewTenant, StoreError, ToProto};
use tonic::{Request, Response, Status};

use crate::PolicyStore;
use crate::convert::{
    acting, actor, api_key_to_proto, audit_to_proto, optional_ref, optional_time, page, page_response, required_text,
    role_from_proto, tenant_to_proto,
};
use crate::error::{OrStatus, store_status};

#[tonic::async_trait]
impl TenantService for PolicyStore {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::CreateTenantResponse>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.get_ref();
        let new = NewTenant {
            id: Some(req.id.clone()).filter(|id| !id.is_empty()),
            name: required_text("name", &req.name)?.to_owned(),
            admin_key_expires_at: optional_time("admin_key_expires_at", req.admin_key_expires_at.as_ref())?,
        };
        let created = self.store.create_tenant(&actor(caller), &new).await.or_status()?;
        Ok(Response::new(pb::CreateTenantResponse {
            tenant: Some(tenant_to_proto(created.tenant)),
            admin_key_id: created.admin_key.key.id.clone(),
            admin_key: created.admin_key.secret,
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::GetTenantResponse>, Status> {
        let id = required_text("id", &request.get_ref().id)?;
        let tenant = self.store.get_tenant(id).await.or_status()?;
        Ok(Response::new(pb::GetTenantResponse {
            tenant: Some(tenant_to_proto(tenant)),
        }))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let req = request.get_ref();
        let listed = self
            .store
            .list_tenants(&page(req.page.clone()), &req.name_filter)
            .await
            .or_status()?;
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: listed.items.into_iter().map(tenant_to_proto).collect(),
            page: page_response(listed.next_token),
        }))
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantResponse>, Status> {
        let caller = Caller::of(&request)?;
        let id = required_text("id", &request.get_ref().id)?;
        let deleted = self.store.delete_tenant(&actor(caller), id).await.or_status()?;
        Ok(Response::new(pb::DeleteTenantResponse { id: deleted.id }))
    }
}

#[tonic::async_trait]
impl AuthService for PolicyStore {
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let (tenant, actor) = acting(&request)?;
        let req = request.get_ref();
        let role = role_from_proto("role", req.role)?
            .ok_or_else(|| invalid_field("role", "required: admin, editor, viewer or connector"))?;
        let new = NewApiKey {
            role,
            cluster: optional_ref("cluster", req.cluster.clone())?,
            expires_at: optional_time("expires_at", req.expires_at.as_ref())?,
            description: req.description.clone(),
        };
        let issued = self.store.create_api_key(tenant, &actor, &new).await.or_status()?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            key: Some(api_key_to_proto(issued.key)),
            secret: issued.secret,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?;
        let req = request.get_ref();
        let query = ApiKeyQuery {
            page: page(req.page.clone()),
            role: role_from_proto("role", req.role)?,
            cluster: optional_ref("cluster", req.cluster.clone())?,
            include_inactive: req.include_inactive,
        };
        let listed = self.store.list_api_keys(tenant, &query).await.or_status()?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: listed.items.into_iter().map(api_key_to_proto).collect(),
            page: page_response(listed.next_token),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let (tenant, actor) = acting(&request)?;
        let key_id = required_text("key_id", &request.get_ref().key_id)?;
        let key = self.store.revoke_api_key(tenant, &actor, key_id).await.or_status()?;
        Ok(Response::new(pb::RevokeApiKeyResponse {
            key: Some(api_key_to_proto(key)),
        }))
    }

    async fn introspect(
        &self,
        request: Request<pb::IntrospectRequest>,
    ) -> Result<Response<pb::IntrospectResponse>, Status> {
        let key = required_text("key", &request.get_ref().key)?;
        let inactive = |reason: pb::InactiveReason| pb::IntrospectResponse {
            active: false,
            inactive_reason: reason as i32,
            ..pb::IntrospectResponse::default()
        };
        let answer = match self.store.introspect(key).await {
            Ok(identity) => pb::IntrospectResponse {
                active: true,
                tenant_id: identity.tenant_id,
                role: identity.role.to_proto() as i32,
                cluster_id: identity.cluster_id.unwrap_or_default(),
                key_id: identity.key_id,
                expires_at: identity.expires_at.map(timestamp),
                inactive_reason: pb::InactiveReason::Unspecified as i32,
            },
            Err(StoreError::Unauthenticated(InactiveReason::Unknown)) => inactive(pb::InactiveReason::Unknown),
            Err(StoreError::Unauthenticated(InactiveReason::Revoked)) => inactive(pb::InactiveReason::Revoked),
            Err(StoreError::Unauthenticated(InactiveReason::Expired)) => inactive(pb::InactiveReason::Expired),
            Err(e) => return Err(store_status(e)),
        };
        Ok(Response::new(answer))
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = Caller::of(&request)?;
        let answer = match &caller.principal {
            Principal::Key(key) => pb::WhoAmIResponse {
                tenant_id: key.tenant_id.clone(),
                role: key.role.to_proto() as i32,
                cluster_id: key.cluster_id.clone().unwrap_or_default(),
                key_id: key.key_id.clone(),
                expires_at: key.expires_at.map(timestamp),
            },
            // Neither has a key id or a role; the service credential's tenant is the one it
            // named, if any.
            Principal::Operator => pb::WhoAmIResponse {
                role: pc::Role::Unspecified as i32,
                ..pb::WhoAmIResponse::default()
            },
            Principal::Service { tenant } => pb::WhoAmIResponse {
                tenant_id: tenant.clone().unwrap_or_default(),
                role: pc::Role::Unspecified as i32,
                ..pb::WhoAmIResponse::default()
            },
        };
        Ok(Response::new(answer))
    }
}

#[tonic::async_trait]
impl AuditService for PolicyStore {
    async fn list_audit_entries(
        &self,
        request: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?;
        let req = request.get_ref();
        let range = req.time_range.unwrap_or_default();
        let text = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        let query = AuditQuery {
            page: page(req.page.clone()),
            since: optional_time("time_range.start", range.start.as_ref())?,
            until: optional_time("time_range.end", range.end.as_ref())?,
            actor_key_id: text(&req.actor_key_id),
            resource_type: text(&req.resource_type),
            resource_id: text(&req.resource_id),
            action: text(&req.action),
        };
        let listed = self.store.list_audit(tenant, &query).await.or_status()?;
        Ok(Response::new(pb::ListAuditEntriesResponse {
            entries: listed.items.into_iter().map(audit_to_proto).collect(),
            page: page_response(listed.next_token),
        }))
    }
}
