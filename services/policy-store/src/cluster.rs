//! ClusterService.

use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::cluster_service_server::ClusterService;
use portcullis_server::Caller;
use portcullis_storage::credentials::Secret;
use portcullis_storage::{ClusterQuery, NewCluster, RegistryCredential, ResourceRef};
use tonic::{Request, Response, Status};

use crate::PolicyStore;
use crate::convert::{
    acting, bounded_text, cluster_to_proto, duration_from, new_settings, optional_ref, optional_time, page,
    page_response, required_ref, seed_trusted_images, settings_update, with_registries,
};
use crate::error::OrStatus;

/// The longest version a connector reports (`v1.33.1-gke.1234567` is 19 bytes).
pub const MAX_VERSION_BYTES: usize = 128;

#[tonic::async_trait]
impl ClusterService for PolicyStore {
    async fn register_cluster(
        &self,
        request: Request<pb::RegisterClusterRequest>,
    ) -> Result<Response<pb::RegisterClusterResponse>, Status> {
        let (tenant, actor) = acting(&request)?;
        let req = request.get_ref();
        let mut settings = new_settings(req.settings.clone())?;
        seed_trusted_images(&mut settings, &self.default_trusted_images)?;
        let new = NewCluster {
            name: req.name.clone(),
            description: req.description.clone(),
            policy: optional_ref("policy", req.policy.clone())?,
            settings,
            connector_key_expires_at: optional_time("connector_key_expires_at", req.connector_key_expires_at.as_ref())?,
        };
        let registered = self.store.register_cluster(tenant, &actor, &new).await.or_status()?;
        Ok(Response::new(pb::RegisterClusterResponse {
            cluster: Some(cluster_to_proto(registered.cluster)),
            connector_key_id: registered.connector_key.key.id.clone(),
            connector_key: registered.connector_key.secret,
        }))
    }

    async fn get_cluster(
        &self,
        request: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::GetClusterResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?;
        let cluster_ref = required_ref("cluster", request.get_ref().cluster.clone())?;
        let cluster = self.store.get_cluster(tenant, &cluster_ref).await.or_status()?;
        // The registries with credentials (never the secrets), by the cluster's id.
        let registries = self
            .store
            .list_registry_credentials(tenant, &ResourceRef::id(&cluster.id))
            .await
            .or_status()?;
        Ok(Response::new(pb::GetClusterResponse {
            cluster: Some(with_registries(cluster_to_proto(cluster), registries)),
        }))
    }

    async fn list_clusters(
        &self,
        request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?;
        let req = request.get_ref();
        let query = ClusterQuery {
            page: page(req.page.clone()),
            name_filter: req.name_filter.clone(),
            policy: optional_ref("policy", req.policy.clone())?,
        };
        let listed = self.store.list_clusters(tenant, &query).await.or_status()?;
        // One read for the page's registries, not one per cluster.
        let ids: Vec<String> = listed.items.iter().map(|c| c.id.clone()).collect();
        let mut registries = self
            .store
            .list_registry_credentials_of(tenant, &ids)
            .await
            .or_status()?;
        Ok(Response::new(pb::ListClustersResponse {
            clusters: listed
                .items
                .into_iter()
                .map(|c| {
                    let of = registries.remove(&c.id).unwrap_or_default();
                    with_registries(cluster_to_proto(c), of)
                })
                .collect(),
            page: page_response(listed.next_token),
        }))
    }

    async fn assign_policy(
        &self,
        request: Request<pb::AssignPolicyRequest>,
    ) -> Result<Response<pb::AssignPolicyResponse>, Status> {
        let (tenant, actor) = acting(&request)?;
        let req = request.get_ref();
        let cluster_ref = required_ref("cluster", req.cluster.clone())?;
        let policy_ref = optional_ref("policy", req.policy.clone())?;
        let cluster = self
            .store
            .assign_policy(tenant, &actor, &cluster_ref, policy_ref.as_ref())
            .await
            .or_status()?;
        Ok(Response::new(pb::AssignPolicyResponse {
            cluster: Some(cluster_to_proto(cluster)),
        }))
    }

    async fn update_cluster_settings(
        &self,
        request: Request<pb::UpdateClusterSettingsRequest>,
    ) -> Result<Response<pb::UpdateClusterSettingsResponse>, Status> {
        let (tenant, actor) = acting(&request)?;
        let req = request.get_ref();
        let cluster_ref = required_ref("cluster", req.cluster.clone())?;
        let update = settings_update(req.settings.clone(), req.update_mask.clone())?;
        let cluster = self
            .store
            .update_cluster_settings(tenant, &actor, &cluster_ref, &update, req.expected_generation)
            .await
            .or_status()?;
        Ok(Response::new(pb::UpdateClusterSettingsResponse {
            cluster: Some(cluster_to_proto(cluster)),
        }))
    }

    /// Replaces the cluster's whole set of credentials (an empty list removes them all), or
    /// with `merge` changes only the registries named.
    async fn set_registry_credentials(
        &self,
        request: Request<pb::SetRegistryCredentialsRequest>,
    ) -> Result<Response<pb::SetRegistryCredentialsResponse>, Status> {
        let (tenant, actor) = acting(&request)?;
        let keys = self
            .credential_keys()
            .ok_or_else(|| Status::failed_precondition("no registry credential key is configured"))?;
        let req = request.get_ref();
        let cluster_ref = required_ref("cluster", req.cluster.clone())?;
        let credentials: Vec<RegistryCredential> = req
            .credentials
            .iter()
            .map(|c| RegistryCredential {
                registry: c.registry.clone(),
                username: c.username.clone(),
                secret: Secret::new(c.password.clone()),
            })
            .collect();
        let stored = if req.merge {
            self.store
                .update_registry_credentials(tenant, &actor, &cluster_ref, &credentials, &req.remove_registries, keys)
                .await
                .or_status()?
        } else if !req.remove_registries.is_empty() {
            return Err(Status::invalid_argument(
                "remove_registries: only with merge (without it, credentials is the whole set)",
            ));
        } else {
            self.store
                .replace_registry_credentials(tenant, &actor, &cluster_ref, &credentials, keys)
                .await
                .or_status()?
        };
        let cluster = self.store.get_cluster(tenant, &cluster_ref).await.or_status()?;
        Ok(Response::new(pb::SetRegistryCredentialsResponse {
            cluster: Some(with_registries(cluster_to_proto(cluster), stored)),
        }))
    }

    /// The service credential's read, decrypted, for the tenant the request names.
    async fn get_registry_credentials(
        &self,
        request: Request<pb::GetRegistryCredentialsRequest>,
    ) -> Result<Response<pb::GetRegistryCredentialsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.get_ref();
        let tenant = caller.tenant_for(&req.tenant_id)?;
        // Without keys nothing can have been stored: the signature service reads
        // UNIMPLEMENTED as "no stored credentials".
        let keys = self
            .credential_keys()
            .ok_or_else(|| Status::unimplemented("no registry credential key is configured"))?;
        let cluster_ref = required_ref("cluster", req.cluster.clone())?;
        let cluster = self.store.get_cluster(tenant, &cluster_ref).await.or_status()?;
        let credentials = self
            .store
            .get_registry_credentials(tenant, &ResourceRef::id(&cluster.id), None, keys)
            .await
            .or_status()?;
        Ok(Response::new(pb::GetRegistryCredentialsResponse {
            credentials: credentials
                .into_iter()
                .map(|c| pb::RegistryCredential {
                    registry: c.registry,
                    username: c.username,
                    password: c.secret.expose().to_owned(),
                })
                .collect(),
            cluster_generation: cluster.generation,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let caller = Caller::of(&request)?;
        let tenant = caller.tenant()?;
        let req = request.get_ref();
        let requested = optional_ref("cluster", req.cluster.clone())?;
        // Written on every heartbeat: bounded, as real versions are far shorter.
        let connector_version = bounded_text("connector_version", &req.connector_version, MAX_VERSION_BYTES)?;
        let kubernetes_version = bounded_text("kubernetes_version", &req.kubernetes_version, MAX_VERSION_BYTES)?;
        let cluster = self.cluster_of_caller(caller, tenant, requested).await?;
        let info = self
            .store
            .heartbeat(tenant, &cluster, connector_version, kubernetes_version)
            .await
            .or_status()?;
        Ok(Response::new(pb::HeartbeatResponse {
            server_time: Some(portcullis_storage::events::timestamp(info.server_time)),
            policy_id: info.policy_id.unwrap_or_default(),
            policy_revision: info.policy_revision,
            cluster_generation: info.cluster_generation,
        }))
    }

    async fn rotate_connector_key(
        &self,
        request: Request<pb::RotateConnectorKeyRequest>,
    ) -> Result<Response<pb::RotateConnectorKeyResponse>, Status> {
        let (tenant, actor) = acting(&request)?;
        let req = request.get_ref();
        let cluster_ref = required_ref("cluster", req.cluster.clone())?;
        let grace = req
            .grace_period
            .as_ref()
            .map(|d| duration_from("grace_period", d))
            .transpose()?;
        let expires_at = optional_time("expires_at", req.expires_at.as_ref())?;
        let rotation = self
            .store
            .rotate_connector_key(tenant, &actor, &cluster_ref, grace, expires_at)
            .await
            .or_status()?;
        Ok(Response::new(pb::RotateConnectorKeyResponse {
            connector_key_id: rotation.new_key.key.id.clone(),
            connector_key: rotation.new_key.secret,
            previous_keys_expire_at: Some(portcullis_storage::events::timestamp(rotation.previous_keys_expire_at)),
            previous_key_ids: rotation.previous_key_ids,
        }))
    }

    async fn delete_cluster(
        &self,
        request: Request<pb::DeleteClusterRequest>,
    ) -> Result<Response<pb::DeleteClusterResponse>, Status> {
        let (tenant, actor) = acting(&request)?;
        let cluster_ref = required_ref("cluster", request.get_ref().cluster.clone())?;
        let deleted = self
            .store
            .delete_cluster(tenant, &actor, &cluster_ref)
            .await
            .or_status()?;
        Ok(Response::new(pb::DeleteClusterResponse {
            id: deleted.id,
            revoked_key_ids: deleted.revoked_key_ids,
        }))
    }
}
