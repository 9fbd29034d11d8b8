//! `ContinuousService` over gRPC: thin handlers over the evaluator, the store and the
//! command hub. Who may call what is the permission table's (`CONTINUOUS_METHODS`); a
//! connector key acts only for its own cluster, which the handlers check here.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use portcullis_engine::evaluate::{CompiledPolicy, EvalContext, Signatures};
use portcullis_kit::upstream::ClusterSel;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::continuous::v1 as pv;
use portcullis_proto::continuous::v1::continuous_service_server::ContinuousService;
use portcullis_server::Caller;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::commands::{CommandHub, manual_order, pod_key};
use crate::convert::{
    command_to_proto, finding_to_proto, mitigation_from_proto, mitigation_to_proto, state_from_proto,
    stored_finding_to_proto, timestamp,
};
use crate::error::ContinuousError;
use crate::evaluate::{Evaluator, Scope, new_command};
use crate::findings::{Isolation, PodAddress};
use crate::inventory::PodProjection;
use crate::policies::pod_digests;
use crate::store::{
    CommandFilter, CommandOrigin, CommandState, FindingFilter, InventoryWrite, NewCommand, PageRequest, StoredCommand,
};
use crate::sync::{Message, Resync, Step, SyncState};

/// How long a command stream may take to send its hello.
const HELLO_DEADLINE: Duration = Duration::from_secs(30);

/// The service (cheap to clone).
#[derive(Debug, Clone)]
pub struct Continuous {
    evaluator: Evaluator,
    hub: CommandHub,
    stream_queue: usize,
    stop: CancellationToken,
}

/// A stream of answers.
pub type AnswerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl Continuous {
    /// The service over `evaluator` and `hub`; streams end at `stop`.
    pub fn new(evaluator: Evaluator, hub: CommandHub, stream_queue: usize, stop: CancellationToken) -> Continuous {
        Continuous {
            evaluator,
            hub,
            stream_queue: stream_queue.max(1),
            stop,
        }
    }

    /// The evaluator.
    pub fn evaluator(&self) -> &Evaluator {
        &self.evaluator
    }

    /// The command hub.
    pub fn hub(&self) -> &CommandHub {
        &self.hub
    }

    /// The id of the cluster `r` names in `tenant` (a name is looked up in the policy store).
    async fn cluster_id(&self, tenant: &str, r: Option<&pc::ResourceRef>) -> Result<Option<String>, ContinuousError> {
        match r.and_then(|r| r.r#ref.as_ref()) {
            None => Ok(None),
            Some(pc::resource_ref::Ref::Id(id)) if !id.trim().is_empty() => Ok(Some(id.clone())),
            Some(pc::resource_ref::Ref::Name(name)) if !name.trim().is_empty() => {
                let policy = self
                    .evaluator
                    .policies()
                    .cluster(tenant, &ClusterSel::Name(name.clone()))
                    .await?;
                Ok(Some(policy.cluster_id))
            }
            Some(_) => Err(ContinuousError::InvalidArgument("cluster: an empty id or name".into())),
        }
    }

    /// The cluster a connector-facing call acts for: a connector key's own (a reference
    /// given must name it), or, for the service credential, the one named.
    async fn connector_cluster(
        &self,
        caller: &Caller,
        tenant: &str,
        r: Option<&pc::ResourceRef>,
    ) -> Result<String, ContinuousError> {
        let named = self.cluster_id(tenant, r).await?;
        match (caller.connector_cluster(), named) {
            (Some(own), None) => Ok(own.to_owned()),
            (Some(own), Some(id)) if id == own => Ok(id),
            (Some(_), Some(_)) => Err(ContinuousError::PermissionDenied(
                "cluster: a connector key acts only for its own cluster".into(),
            )),
            (None, Some(id)) => Ok(id),
            (None, None) => Err(ContinuousError::InvalidArgument("cluster: required".into())),
        }
    }

    /// Applies one accepted message and re-evaluates the pods it changed; the ack.
    async fn apply(
        &self,
        tenant: &str,
        cluster: &str,
        sequence: u64,
        message: Message,
        mut errors: Vec<pc::ItemError>,
    ) -> Result<pv::InventoryAck, ContinuousError> {
        let write = match message {
            Message::SnapshotStart => InventoryWrite::BeginSnapshot,
            Message::SnapshotPage(pods) | Message::Upsert(pods) => InventoryWrite::Upsert(pods),
            Message::SnapshotEnd => InventoryWrite::EndSnapshot,
            Message::Delete(uids) => InventoryWrite::Delete(uids),
        };
        let store = self.evaluator.store();
        let applied = store
            .write_inventory(tenant, cluster, write, OffsetDateTime::now_utc())
            .await?;
        let mut uids = applied.changed.clone();
        uids.extend(applied.removed.iter().cloned());
        if !uids.is_empty()
            && let Err(e) = self.evaluator.reevaluate(tenant, cluster, &Scope::Pods(uids)).await
        {
            // Stored, not judged: said in the ack; the next sweep judges them.
            tracing::warn!(%tenant, %cluster, error = %e, "re-evaluating synced pods failed");
            errors.push(pc::ItemError {
                code: e.kind().grpc_code() as u32,
                message: format!("the pods were stored but not judged yet (the next sweep will): {e}"),
                field: String::new(),
            });
        }
        Ok(pv::InventoryAck {
            sequence,
            resync: false,
            resync_reason: String::new(),
            errors,
            pods_upserted: applied.changed.len() as u64,
            pods_removed: applied.removed.len() as u64,
        })
    }

    /// Serves one inventory stream.
    async fn sync_stream(
        self,
        caller: Caller,
        tenant: String,
        mut inbound: Streaming<pv::InventoryUpdate>,
        out: mpsc::Sender<Result<pv::InventoryAck, Status>>,
    ) {
        let mut state = SyncState::new();
        let mut cluster: Option<String> = None;
        loop {
            let update = tokio::select! {
                () = self.stop.cancelled() => {
                    let _ = out.send(Err(Status::unavailable("the service is shutting down"))).await;
                    return;
                }
                update = inbound.message() => update,
            };
            let update = match update {
                Ok(Some(u)) => u,
                Ok(None) | Err(_) => return,
            };
            let cluster_id = match &cluster {
                Some(c) => c.clone(),
                None => match self.connector_cluster(&caller, &tenant, update.cluster.as_ref()).await {
                    Ok(c) => {
                        cluster = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        let _ = out.send(Err(e.into())).await;
                        return;
                    }
                },
            };
            let (message, errors) = read_update(&state, update.update);
            let Some(message) = message else {
                let _ = out
                    .send(Err(Status::invalid_argument("an inventory message without its update")))
                    .await;
                return;
            };
            let sequence = update.sequence;
            let answer = match state.accept(sequence, &message) {
                Step::Apply => match self.apply(&tenant, &cluster_id, sequence, message, errors).await {
                    Ok(ack) => Ok(ack),
                    Err(e) => {
                        // Not stored: the stream's view and the store's may now differ.
                        tracing::warn!(%tenant, cluster = %cluster_id, error = %e, "storing an inventory message failed");
                        state = SyncState::new();
                        Ok(resync_ack(
                            sequence,
                            format!("the message could not be stored ({e}); send a new snapshot"),
                        ))
                    }
                },
                Step::Duplicate => Ok(pv::InventoryAck {
                    sequence,
                    ..Default::default()
                }),
                Step::Resync(why) => Ok(resync_ack(sequence, resync_reason(why))),
            };
            if out.send(answer).await.is_err() {
                return;
            }
        }
    }

    /// The preview of `draft` on one cluster; `Err` says why it cannot be judged.
    async fn preview_cluster(
        &self,
        tenant: &str,
        cluster: &str,
        draft: &CompiledPolicy,
    ) -> Result<(Vec<pv::PreviewFinding>, Vec<pv::MitigationCommand>, u64), String> {
        let store = self.evaluator.store();
        let settings = self
            .evaluator
            .policies()
            .cluster(tenant, &ClusterSel::Id(cluster.to_owned()))
            .await
            .map_err(|e| e.to_string())?;
        let known = store.tenant_clusters(tenant).await.map_err(|e| e.to_string())?;
        if !known.iter().any(|c| c == cluster) {
            return Err("no inventory yet (no connector has synced it)".into());
        }
        let pods = store.pods(tenant, cluster, None).await.map_err(|e| e.to_string())?;
        let read = store.findings(tenant, cluster, None).await.map_err(|e| e.to_string())?;
        let digests: Vec<String> = pods.iter().flat_map(pod_digests).collect();
        let unavailable = match self.evaluator.policies().fetch_scans(tenant, digests).await {
            Ok(()) => "no scan summary could be read for it".to_owned(),
            Err(e) => format!("scan summaries could not be read: {e}"),
        };
        let now = OffsetDateTime::now_utc();
        let view = self.evaluator.policies().scans().view(tenant, Some(&unavailable));
        let ctx = EvalContext {
            now,
            scans: &view,
            digests: &portcullis_engine::evaluate::NoDigests,
            signatures: Signatures::Offline(None),
            excluded_namespaces: &settings.excluded_namespaces,
            trusted_images: &settings.trusted_images,
            failure_mode: settings.failure_mode,
        };
        let outcome = crate::preview::preview(cluster, &pods, &read.findings, draft, &ctx);
        let mut findings = Vec::new();
        let row = |change: pv::PreviewChange, f: &crate::findings::Finding| pv::PreviewFinding {
            change: change as i32,
            finding: Some(finding_to_proto("", f, "", 0)),
        };
        findings.extend(outcome.opened.iter().map(|f| row(pv::PreviewChange::New, f)));
        findings.extend(outcome.changed.iter().map(|f| row(pv::PreviewChange::Changed, f)));
        findings.extend(outcome.resolved.iter().map(|f| row(pv::PreviewChange::Resolved, f)));
        let commands = outcome
            .commands
            .into_iter()
            .map(|c| {
                command_to_proto(&StoredCommand {
                    id: String::new(),
                    cluster: cluster.to_owned(),
                    command: new_command(c),
                    issued_at: now,
                    state: CommandState::Pending,
                    state_changed_at: now,
                    ack_message: String::new(),
                })
            })
            .collect();
        Ok((findings, commands, pods.len() as u64))
    }
}

fn resync_ack(sequence: u64, reason: String) -> pv::InventoryAck {
    pv::InventoryAck {
        sequence,
        resync: true,
        resync_reason: reason,
        ..Default::default()
    }
}

fn resync_reason(why: Resync) -> String {
    match why {
        Resync::NoSnapshot => "no snapshot yet on this stream (or the service restarted): send a snapshot".into(),
        Resync::Gap { expected, got } => format!("message {expected} is missing (got {got}): send a new snapshot"),
        Resync::NotInSnapshot => "a snapshot page or end without a snapshot start: send a new snapshot".into(),
        Resync::DeltaInSnapshot => "a delta inside a snapshot: send a new snapshot".into(),
    }
}

/// The sequencing message of an update, and the pods that could not be read (the rest
/// apply). Upserts are snapshot pages until the first snapshot completes.
pub fn read_update(
    state: &SyncState,
    update: Option<pv::inventory_update::Update>,
) -> (Option<Message>, Vec<pc::ItemError>) {
    use pv::inventory_update::Update;
    let mut errors = Vec::new();
    let message = update.map(|u| match u {
        Update::SnapshotStart(_) => Message::SnapshotStart,
        Update::SnapshotEnd(_) => Message::SnapshotEnd,
        Update::Upserts(batch) => {
            let mut pods = Vec::with_capacity(batch.pods_json.len());
            for (i, json) in batch.pods_json.iter().enumerate() {
                match PodProjection::from_pod_json(json) {
                    Ok(p) => pods.push(p),
                    Err(e) => errors.push(pc::ItemError {
                        code: tonic::Code::InvalidArgument as u32,
                        message: e.to_string(),
                        field: format!("upserts.pods_json[{i}]"),
                    }),
                }
            }
            if state.is_live() {
                Message::Upsert(pods)
            } else {
                Message::SnapshotPage(pods)
            }
        }
        Update::Deletions(d) => Message::Delete(d.pods.into_iter().map(|p| p.uid).filter(|u| !u.is_empty()).collect()),
    });
    (message, errors)
}

fn page_request(page: Option<pc::PageRequest>) -> PageRequest {
    let page = page.unwrap_or_default();
    PageRequest {
        size: page.page_size,
        token: Some(page.page_token).filter(|t| !t.is_empty()),
    }
}

fn page_response(next: Option<String>) -> Option<pc::PageResponse> {
    Some(pc::PageResponse {
        next_page_token: next.unwrap_or_default(),
    })
}

#[tonic::async_trait]
impl ContinuousService for Continuous {
    type SyncInventoryStream = AnswerStream<pv::InventoryAck>;
    type CommandsStream = AnswerStream<pv::MitigationCommand>;

    async fn sync_inventory(
        &self,
        request: Request<Streaming<pv::InventoryUpdate>>,
    ) -> Result<Response<Self::SyncInventoryStream>, Status> {
        let caller = Caller::of(&request)?.clone();
        let tenant = caller.tenant()?.to_owned();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(self.stream_queue);
        tokio::spawn(self.clone().sync_stream(caller, tenant, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn commands(
        &self,
        request: Request<Streaming<pv::ConnectorMessage>>,
    ) -> Result<Response<Self::CommandsStream>, Status> {
        let caller = Caller::of(&request)?.clone();
        let tenant = caller.tenant()?.to_owned();
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_DEADLINE, inbound.message()).await {
            Ok(Ok(Some(pv::ConnectorMessage {
                message: Some(pv::connector_message::Message::Hello(hello)),
            }))) => hello,
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no hello within 30 s")),
            Ok(Ok(_)) => {
                return Err(
                    ContinuousError::FailedPrecondition("the command stream starts with a hello".into()).into(),
                );
            }
        };
        let cluster = self.connector_cluster(&caller, &tenant, hello.cluster.as_ref()).await?;
        let (tx, rx) = mpsc::channel(self.stream_queue);
        let (hub, stop) = (self.hub.clone(), self.stop.clone());
        tokio::spawn(async move { hub.serve_stream(tenant, cluster, inbound, tx, stop).await });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_findings(
        &self,
        request: Request<pv::ListFindingsRequest>,
    ) -> Result<Response<pv::ListFindingsResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?.to_owned();
        let r = request.into_inner();
        let open = {
            let open = r.states.contains(&(pv::FindingState::Open as i32));
            let resolved = r.states.contains(&(pv::FindingState::Resolved as i32));
            match (open, resolved) {
                (false, false) | (true, false) => Some(true),
                (false, true) => Some(false),
                (true, true) => None,
            }
        };
        let filter = FindingFilter {
            cluster: self.cluster_id(&tenant, r.cluster.as_ref()).await?,
            namespace: Some(r.namespace.as_str().into()).filter(|n: &compact_str::CompactString| !n.is_empty()),
            pod: Some(r.pod.as_str().into()).filter(|n: &compact_str::CompactString| !n.is_empty()),
            rule_type: Some(r.rule_type).filter(|t| !t.is_empty()),
            min_mitigation: mitigation_from_proto(r.min_mitigation),
            open,
        };
        let page = page_request(r.page);
        let found = self
            .evaluator
            .store()
            .list_findings(&tenant, &filter, &page)
            .await
            .map_err(ContinuousError::from)?;
        Ok(Response::new(pv::ListFindingsResponse {
            findings: found.items.iter().map(stored_finding_to_proto).collect(),
            page: page_response(found.next),
        }))
    }

    async fn get_pod(&self, request: Request<pv::GetPodRequest>) -> Result<Response<pv::GetPodResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?.to_owned();
        let r = request.into_inner();
        let cluster = self
            .cluster_id(&tenant, r.cluster.as_ref())
            .await?
            .ok_or_else(|| ContinuousError::InvalidArgument("cluster: required".into()))?;
        let store = self.evaluator.store();
        let Some(stored) = store
            .pod(&tenant, &cluster, &r.namespace, &r.name)
            .await
            .map_err(ContinuousError::from)?
        else {
            return Err(ContinuousError::NotFound(format!(
                "no pod {}/{} in the cluster's inventory",
                r.namespace, r.name
            ))
            .into());
        };
        let uid = stored.pod.uid().to_owned();
        let uids = [uid.clone()];
        let state = store
            .findings(&tenant, &cluster, Some(&uids))
            .await
            .map_err(ContinuousError::from)?
            .findings
            .pods
            .remove(&uid)
            .unwrap_or_default();
        let filter = FindingFilter {
            cluster: Some(cluster.clone()),
            namespace: Some(r.namespace.as_str().into()),
            pod: Some(r.name.as_str().into()),
            open: Some(true),
            ..FindingFilter::default()
        };
        let findings = store
            .list_findings(
                &tenant,
                &filter,
                &PageRequest {
                    size: 1000,
                    token: None,
                },
            )
            .await
            .map_err(ContinuousError::from)?
            .items;
        let findings: Vec<pv::Finding> = findings
            .iter()
            .filter(|f| f.finding.uid == uid)
            .map(stored_finding_to_proto)
            .collect();
        let pending: Vec<StoredCommand> = store
            .pending_commands(&tenant, &cluster)
            .await
            .map_err(ContinuousError::from)?
            .into_iter()
            .filter(|c| {
                c.command.pod.uid == uid || (c.command.pod.uid.is_empty() && c.command.pod.name == r.name.as_str())
            })
            .collect();
        // A runtime isolation holds until a restore: the last isolate or restore of the pod
        // decides.
        let commands = store
            .list_commands(
                &tenant,
                &CommandFilter {
                    cluster: Some(cluster.clone()),
                    namespace: Some(r.namespace.as_str().into()),
                    pod: Some(r.name.as_str().into()),
                    state: None,
                },
                &PageRequest {
                    size: 1000,
                    token: None,
                },
            )
            .await
            .map_err(ContinuousError::from)?
            .items;
        let runtime_isolation = commands
            .iter()
            .find(|c| {
                matches!(
                    c.command.order,
                    crate::findings::Order::Isolate { .. } | crate::findings::Order::RestoreIsolation
                ) && c.state != CommandState::Cancelled
            })
            .is_some_and(|c| {
                c.command.origin == CommandOrigin::Runtime
                    && matches!(c.command.order, crate::findings::Order::Isolate { .. })
            });
        let mitigation = state
            .open
            .iter()
            .map(|f| f.mitigation)
            .max()
            .map(mitigation_to_proto)
            .unwrap_or(pc::Mitigation::None);
        let pod_json = serde_json::to_vec(&stored.pod)
            .map_err(|e| ContinuousError::Internal(format!("the pod's projection: {e}")))?;
        let labels: BTreeMap<String, String> = stored.pod.labels.clone();
        Ok(Response::new(pv::GetPodResponse {
            cluster_id: cluster,
            pod_json: pod_json.into(),
            synced_at: Some(timestamp(stored.synced_at)),
            findings,
            mitigation: mitigation as i32,
            isolated: state.isolation == Isolation::Isolated || runtime_isolation,
            runtime_isolation,
            pending_commands: pending.iter().map(command_to_proto).collect(),
            uid,
            labels: labels.into_iter().collect(),
            owners: stored
                .pod
                .owners
                .iter()
                .map(|o| pc::OwnerRef {
                    api_version: o.api_version.to_string(),
                    kind: o.kind.to_string(),
                    name: o.name.to_string(),
                    uid: o.uid.clone(),
                })
                .collect(),
        }))
    }

    async fn issue_command(
        &self,
        request: Request<pv::IssueCommandRequest>,
    ) -> Result<Response<pv::IssueCommandResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?.to_owned();
        let r = request.into_inner();
        let cluster = self
            .cluster_id(&tenant, r.cluster.as_ref())
            .await?
            .ok_or_else(|| ContinuousError::InvalidArgument("cluster: required".into()))?;
        let pod = pod_key(r.pod.as_ref())?;
        let order = manual_order(r.r#type, &pod.namespace)?;
        let mut uid = pod.uid.clone();
        if uid.is_empty()
            && let Some(stored) = self
                .evaluator
                .store()
                .pod(&tenant, &cluster, &pod.namespace, &pod.name)
                .await
                .map_err(ContinuousError::from)?
        {
            uid = stored.pod.uid().to_owned();
        }
        let reason = if r.reason.trim().is_empty() {
            format!("{}: by hand", order.as_str())
        } else {
            r.reason
        };
        let command = NewCommand {
            pod: PodAddress {
                namespace: pod.namespace.as_str().into(),
                name: pod.name.as_str().into(),
                uid,
            },
            order,
            origin: CommandOrigin::Manual,
            reason,
            rules: Vec::new(),
            runtime_rule_ids: Vec::new(),
        };
        let stored = self.hub.issue(&tenant, &cluster, vec![command]).await?;
        let command = stored
            .first()
            .map(command_to_proto)
            .ok_or_else(|| ContinuousError::Internal("the store stored no command".into()))?;
        Ok(Response::new(pv::IssueCommandResponse { command: Some(command) }))
    }

    async fn list_commands(
        &self,
        request: Request<pv::ListCommandsRequest>,
    ) -> Result<Response<pv::ListCommandsResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?.to_owned();
        let r = request.into_inner();
        let filter = CommandFilter {
            cluster: self.cluster_id(&tenant, r.cluster.as_ref()).await?,
            state: state_from_proto(r.state),
            namespace: Some(r.namespace.as_str().into()).filter(|n: &compact_str::CompactString| !n.is_empty()),
            pod: Some(r.pod.as_str().into()).filter(|n: &compact_str::CompactString| !n.is_empty()),
        };
        let page = page_request(r.page);
        let found = self
            .evaluator
            .store()
            .list_commands(&tenant, &filter, &page)
            .await
            .map_err(ContinuousError::from)?;
        Ok(Response::new(pv::ListCommandsResponse {
            commands: found.items.iter().map(command_to_proto).collect(),
            page: page_response(found.next),
        }))
    }

    async fn preview_policy(
        &self,
        request: Request<pv::PreviewPolicyRequest>,
    ) -> Result<Response<pv::PreviewPolicyResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?.to_owned();
        let r = request.into_inner();
        let draft = CompiledPolicy::from_text(&r.document).map_err(|e| {
            ContinuousError::InvalidDocument(
                e.field_errors()
                    .into_iter()
                    .map(|f| {
                        (
                            format!("document.{}", f.path).trim_end_matches('.').to_owned(),
                            f.message,
                        )
                    })
                    .collect(),
            )
        })?;
        let mut clusters = Vec::new();
        if r.clusters.is_empty() {
            clusters = self
                .evaluator
                .policies()
                .clusters_of_policy(&tenant, draft.name())
                .await?;
        } else {
            for c in &r.clusters {
                if let Some(id) = self.cluster_id(&tenant, Some(c)).await? {
                    clusters.push(id);
                }
            }
        }
        clusters.sort();
        clusters.dedup();
        let mut answer = pv::PreviewPolicyResponse::default();
        for cluster in clusters {
            match self.preview_cluster(&tenant, &cluster, &draft).await {
                Ok((findings, commands, judged)) => {
                    answer.findings.extend(findings);
                    answer.commands.extend(commands);
                    answer.pods_evaluated += judged;
                    answer.cluster_ids.push(cluster);
                }
                Err(reason) => answer.skipped.push(pv::PreviewSkipped {
                    cluster_id: cluster,
                    reason,
                }),
            }
        }
        Ok(Response::new(answer))
    }
}
