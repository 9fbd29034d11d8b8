//! `TelemetryService` over gRPC: thin handlers over the ingest step and the store. Who may
//! call what is the permission table's (`TELEMETRY_METHODS`); a connector key ingests only
//! for its own cluster, which the handler checks here.

use std::sync::Arc;
use std::time::Duration;

use portcullis_kit::upstream::ClusterSel;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::telemetry::v1 as pt;
use portcullis_proto::telemetry::v1::telemetry_service_server::TelemetryService;
use portcullis_server::Caller;
use time::OffsetDateTime;
use tonic::{Request, Response, Status, Streaming};

use crate::alert::AlertStatus;
use crate::convert::{time_of, timestamp};
use crate::error::TelemetryError;
use crate::event::{MAX_FUTURE_SKEW, Severity};
use crate::ingest::{IngestOutcome, Ingestor};
use crate::query::Query;
use crate::store::{AdmissionFilter, AlertFilter, PageRequest, StoredAlert, TelemetryStore, TimeRange};
use portcullis_engine::replay::{Outcome, ReplayReport, WorkloadChanges};

/// Item errors returned by one `IngestEvents` call at most (the counts stay exact).
const MAX_ITEM_ERRORS: usize = 100;

/// The service (cheap to clone).
#[derive(Clone)]
pub struct Telemetry {
    ingestor: Ingestor,
    store: Arc<dyn TelemetryStore>,
    retention: Duration,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

fn page_of(p: Option<&pc::PageRequest>) -> PageRequest {
    let p = p.cloned().unwrap_or_default();
    PageRequest {
        size: p.page_size,
        token: (!p.page_token.is_empty()).then_some(p.page_token),
    }
}

fn page_response(next: Option<String>) -> Option<pc::PageResponse> {
    Some(pc::PageResponse {
        next_page_token: next.unwrap_or_default(),
    })
}

/// The protobuf alert.
pub fn alert_to_proto(a: &StoredAlert) -> pt::Alert {
    let entity = |name: &str| {
        a.entity
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let workload = entity("workload");
    // The `pod` entity field is `namespace/name` (a pod name is unique only in its namespace).
    let pod = entity("pod");
    let (pod_namespace, pod) = match pod.split_once('/') {
        Some((namespace, name)) => (namespace.to_owned(), name.to_owned()),
        None => (entity("namespace"), pod),
    };
    let namespace = match entity("namespace") {
        n if n.is_empty() => pod_namespace.clone(),
        n => n,
    };
    pt::Alert {
        id: a.id.to_string(),
        title: a.title.clone(),
        severity: a.severity.to_proto() as i32,
        status: a.status.to_proto() as i32,
        cluster_ids: a.cluster_ids.iter().map(ToString::to_string).collect(),
        pod: (!pod.is_empty()).then(|| pc::PodKey {
            namespace: pod_namespace,
            name: pod,
            uid: String::new(),
        }),
        workload: workload.split_once('/').map(|(kind, name)| pt::Workload {
            kind: kind.to_owned(),
            name: name.to_owned(),
        }),
        rule: a.rule.to_string(),
        event_count: a.event_count,
        first_seen_at: Some(timestamp(a.first_event_at)),
        last_seen_at: Some(timestamp(a.last_event_at)),
        mitigation: pc::Mitigation::Unspecified as i32,
        status_changed_at: Some(timestamp(a.status_changed_at)),
        status_changed_by_key_id: String::new(),
        namespace,
        // The entity field holding the digest is `image` (rule.rs).
        digest: entity("image"),
        opened_at: Some(timestamp(a.created_at)),
        status_note: String::new(),
    }
}

impl Telemetry {
    /// The service over `ingestor` and `store`; searches without a range look back
    /// `retention`.
    pub fn new(ingestor: Ingestor, store: Arc<dyn TelemetryStore>, retention: Duration) -> Telemetry {
        Telemetry {
            ingestor,
            store,
            retention,
        }
    }

    /// The ingest step.
    pub fn ingestor(&self) -> &Ingestor {
        &self.ingestor
    }

    /// The id of the cluster `r` names in `tenant` (a name is looked up in the policy store).
    async fn cluster_id(&self, tenant: &str, r: Option<&pc::ResourceRef>) -> Result<Option<String>, TelemetryError> {
        match r.and_then(|r| r.r#ref.as_ref()) {
            None => Ok(None),
            Some(pc::resource_ref::Ref::Id(id)) if !id.trim().is_empty() => Ok(Some(id.clone())),
            Some(pc::resource_ref::Ref::Name(name)) if !name.trim().is_empty() => {
                let view = self
                    .ingestor
                    .policies()
                    .cluster(tenant, &ClusterSel::Name(name.clone()))
                    .await?;
                Ok(Some(view.cluster_id.clone()))
            }
            Some(_) => Err(TelemetryError::InvalidArgument("cluster: an empty id or name".into())),
        }
    }

    /// The cluster an ingest acts for: a connector key's own (a reference given must name
    /// it), or, for other callers, the one named.
    async fn ingest_cluster(
        &self,
        caller: &Caller,
        tenant: &str,
        r: Option<&pc::ResourceRef>,
    ) -> Result<String, TelemetryError> {
        let named = self.cluster_id(tenant, r).await?;
        match (caller.connector_cluster(), named) {
            (Some(own), None) => Ok(own.to_owned()),
            (Some(own), Some(id)) if id == own => Ok(id),
            (Some(_), Some(_)) => Err(TelemetryError::PermissionDenied(
                "cluster: a connector key acts only for its own cluster".into(),
            )),
            (None, Some(id)) => Ok(id),
            (None, None) => Err(TelemetryError::InvalidArgument("cluster: required".into())),
        }
    }

    fn time_range(&self, r: Option<&pc::TimeRange>) -> Result<TimeRange, TelemetryError> {
        let now = OffsetDateTime::now_utc();
        let default_from = now
            .checked_sub(time::Duration::try_from(self.retention).unwrap_or(time::Duration::MAX))
            .unwrap_or(time::PrimitiveDateTime::MIN.assume_utc());
        let default_to = now
            .checked_add(time::Duration::try_from(MAX_FUTURE_SKEW).unwrap_or(time::Duration::ZERO))
            .unwrap_or(now);
        let read = |ts: Option<&prost_types::Timestamp>, field: &str, default| match ts {
            None => Ok(default),
            Some(ts) => {
                time_of(ts).ok_or_else(|| TelemetryError::InvalidArgument(format!("time_range.{field}: out of range")))
            }
        };
        let range = TimeRange {
            from: read(r.and_then(|r| r.start.as_ref()), "start", default_from)?,
            to: read(r.and_then(|r| r.end.as_ref()), "end", default_to)?,
        };
        if range.to <= range.from {
            return Err(TelemetryError::InvalidArgument(
                "time_range: the end must be after the start".into(),
            ));
        }
        Ok(range)
    }
}

fn outcome_to_proto(o: Outcome) -> pt::ReplayOutcome {
    match o {
        Outcome::Allow => pt::ReplayOutcome::Allow,
        Outcome::Log => pt::ReplayOutcome::Log,
        Outcome::Block => pt::ReplayOutcome::Block,
    }
}

fn counts_to_proto(c: &WorkloadChanges) -> pt::ReplayCounts {
    pt::ReplayCounts {
        admissions: c.admissions,
        newly_blocked: c.newly_blocked,
        newly_logged: c.newly_logged,
        no_longer_blocked: c.no_longer_blocked,
        no_longer_logged: c.no_longer_logged,
        not_judged: c.not_judged,
        changes: c
            .outcome_changes()
            .into_iter()
            .map(|(decided, would_be, count)| pt::OutcomeChange {
                decided: outcome_to_proto(decided) as i32,
                would_be: outcome_to_proto(would_be) as i32,
                count,
            })
            .collect(),
    }
}

/// The protobuf replay answer: the workloads with a change, and the totals.
pub fn replay_to_proto(report: &ReplayReport) -> pt::ReplayPolicyResponse {
    let workloads: Vec<pt::WorkloadReplay> = report
        .workloads
        .iter()
        .filter(|(_, c)| c.changed())
        .map(|(k, c)| pt::WorkloadReplay {
            cluster_id: k.cluster_id.clone(),
            namespace: k.namespace.clone(),
            workload: Some(pt::Workload {
                kind: k.kind.clone(),
                name: k.name.clone(),
            }),
            counts: Some(counts_to_proto(c)),
        })
        .collect();
    pt::ReplayPolicyResponse {
        unchanged_workloads: (report.workloads.len() - workloads.len()) as u64,
        workloads,
        totals: Some(counts_to_proto(&report.totals())),
        replayed: report.replayed,
        unreadable: report.unreadable,
    }
}

fn add(total: &mut IngestOutcome, one: IngestOutcome) {
    total.accepted += one.accepted;
    total.rejected += one.rejected;
    total.refused += one.refused;
    total.not_stored += one.not_stored;
    total.mitigations += one.mitigations;
    let room = MAX_ITEM_ERRORS.saturating_sub(total.errors.len());
    total.errors.extend(one.errors.into_iter().take(room));
}

#[tonic::async_trait]
impl TelemetryService for Telemetry {
    async fn ingest_events(
        &self,
        request: Request<Streaming<pt::IngestEventsRequest>>,
    ) -> Result<Response<pt::IngestEventsResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let tenant = caller.tenant()?.to_owned();
        let mut inbound = request.into_inner();
        let mut total = IngestOutcome::default();
        let mut message_index = 0usize;
        while let Some(message) = inbound.message().await? {
            let cluster = self.ingest_cluster(&caller, &tenant, message.cluster.as_ref()).await?;
            let view = self
                .ingestor
                .policies()
                .cluster(&tenant, &ClusterSel::Id(cluster))
                .await?;
            let mut one = self.ingestor.runtime(&tenant, &view, &message.events_json).await?;
            if message_index > 0 {
                for e in &mut one.errors {
                    e.field = format!("message[{message_index}].{}", e.field);
                }
            }
            add(&mut total, one);
            message_index += 1;
        }
        Ok(Response::new(pt::IngestEventsResponse {
            accepted: total.accepted,
            rejected: total.rejected,
            mitigations: total.mitigations,
            errors: total.errors,
            refused: total.refused,
            not_stored: total.not_stored,
        }))
    }

    async fn search_events(
        &self,
        request: Request<pt::SearchEventsRequest>,
    ) -> Result<Response<pt::SearchEventsResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?.to_owned();
        let r = request.into_inner();
        let query = Query::parse(&r.query).map_err(|e| TelemetryError::InvalidArgument(format!("query: {e}")))?;
        let range = self.time_range(r.time_range.as_ref())?;
        let page = page_of(r.page.as_ref());
        let found = self
            .store
            .search(&tenant, &query, range, &page)
            .await
            .map_err(TelemetryError::from)?;
        Ok(Response::new(pt::SearchEventsResponse {
            events: found.events.iter().map(|e| e.to_proto(Vec::new())).collect(),
            page: page_response(found.next),
            total: found.total,
            total_is_lower_bound: found.total_is_lower_bound,
        }))
    }

    async fn list_alerts(
        &self,
        request: Request<pt::ListAlertsRequest>,
    ) -> Result<Response<pt::ListAlertsResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?.to_owned();
        let r = request.into_inner();
        let statuses = match r.status {
            0 => Vec::new(),
            v => vec![
                AlertStatus::from_proto(v).ok_or_else(|| TelemetryError::InvalidArgument("status: unknown".into()))?,
            ],
        };
        let min_severity = match r.min_severity {
            0 => None,
            v => Some(
                Severity::from_proto(v)
                    .ok_or_else(|| TelemetryError::InvalidArgument("min_severity: unknown".into()))?,
            ),
        };
        let filter = AlertFilter {
            cluster_id: self.cluster_id(&tenant, r.cluster.as_ref()).await?,
            statuses,
            min_severity,
        };
        let page = page_of(r.page.as_ref());
        let listed = self
            .store
            .list_alerts(&tenant, &filter, &page)
            .await
            .map_err(TelemetryError::from)?;
        Ok(Response::new(pt::ListAlertsResponse {
            alerts: listed
                .items
                .iter()
                .filter(|a| r.rule.is_empty() || a.rule == r.rule)
                .map(alert_to_proto)
                .collect(),
            page: page_response(listed.next),
        }))
    }

    async fn get_alert(&self, request: Request<pt::GetAlertRequest>) -> Result<Response<pt::GetAlertResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?.to_owned();
        let r = request.into_inner();
        let detail = self
            .store
            .alert(&tenant, &r.id)
            .await
            .map_err(TelemetryError::from)?
            .ok_or_else(|| TelemetryError::NotFound(format!("no alert {:?}", r.id)))?;
        let alert_id = vec![detail.alert.id.to_string()];
        Ok(Response::new(pt::GetAlertResponse {
            alert: Some(alert_to_proto(&detail.alert)),
            events: detail.events.iter().map(|e| e.to_proto(alert_id.clone())).collect(),
            events_page: page_response(None),
        }))
    }

    async fn update_alert_status(
        &self,
        request: Request<pt::UpdateAlertStatusRequest>,
    ) -> Result<Response<pt::UpdateAlertStatusResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?.to_owned();
        let r = request.into_inner();
        let status = AlertStatus::from_proto(r.status)
            .ok_or_else(|| TelemetryError::InvalidArgument("status: open, acknowledged or closed".into()))?;
        let before = self
            .store
            .alert(&tenant, &r.id)
            .await
            .map_err(TelemetryError::from)?
            .ok_or_else(|| TelemetryError::NotFound(format!("no alert {:?}", r.id)))?;
        let after = self
            .store
            .set_alert_status(&tenant, &r.id, status, OffsetDateTime::now_utc())
            .await
            .map_err(TelemetryError::from)?
            .ok_or_else(|| TelemetryError::NotFound(format!("no alert {:?}", r.id)))?;
        if status == AlertStatus::Closed {
            self.ingestor.pipeline().close_alert(&tenant, &r.id);
        }
        Ok(Response::new(pt::UpdateAlertStatusResponse {
            changed: before.alert.status != after.status,
            alert: Some(alert_to_proto(&after)),
        }))
    }

    async fn list_risk_scores(
        &self,
        request: Request<pt::ListRiskScoresRequest>,
    ) -> Result<Response<pt::ListRiskScoresResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?.to_owned();
        let r = request.into_inner();
        let cluster = self.cluster_id(&tenant, r.cluster.as_ref()).await?;
        let risks = self
            .store
            .risk_scores(&tenant, cluster.as_deref())
            .await
            .map_err(TelemetryError::from)?;
        let now = OffsetDateTime::now_utc();
        let mut scores = Vec::with_capacity(risks.len());
        for risk in risks.into_iter().filter(|r2| r2.score >= r.min_score) {
            // The per-severity counts, from the cluster's counting alerts.
            let filter = AlertFilter {
                cluster_id: Some(risk.cluster_id.clone()),
                statuses: vec![AlertStatus::Open, AlertStatus::Acknowledged],
                min_severity: None,
            };
            let mut counts = [0u64; 4];
            let mut page = PageRequest {
                size: 1000,
                token: None,
            };
            loop {
                let listed = self
                    .store
                    .list_alerts(&tenant, &filter, &page)
                    .await
                    .map_err(TelemetryError::from)?;
                for a in &listed.items {
                    match a.severity {
                        Severity::Critical => counts[0] += 1,
                        Severity::High => counts[1] += 1,
                        Severity::Medium => counts[2] += 1,
                        Severity::Low => counts[3] += 1,
                        Severity::Info => {}
                    }
                }
                match listed.next {
                    Some(next) => page.token = Some(next),
                    None => break,
                }
            }
            let name = match self
                .ingestor
                .policies()
                .cluster(&tenant, &ClusterSel::Id(risk.cluster_id.clone()))
                .await
            {
                Ok(view) => view.cluster_name.clone(),
                Err(e) => {
                    tracing::debug!(%tenant, cluster = %risk.cluster_id, error = %e, "no cluster name for a risk score");
                    String::new()
                }
            };
            let [critical, high, medium, low] = counts;
            scores.push(pt::RiskScore {
                cluster_id: risk.cluster_id,
                cluster_name: name,
                score: risk.score,
                critical_alerts: critical,
                high_alerts: high,
                medium_alerts: medium,
                low_alerts: low,
                computed_at: Some(timestamp(now)),
            });
        }
        Ok(Response::new(pt::ListRiskScoresResponse {
            scores,
            page: page_response(None),
        }))
    }

    async fn replay_policy(
        &self,
        request: Request<pt::ReplayPolicyRequest>,
    ) -> Result<Response<pt::ReplayPolicyResponse>, Status> {
        let tenant = Caller::tenant_of(&request)?.to_owned();
        let r = request.into_inner();
        let draft = crate::replay::compile_draft(&r.document)?;
        let since = match r.since.as_ref() {
            None => None,
            Some(ts) => Some(time_of(ts).ok_or_else(|| TelemetryError::InvalidArgument("since: out of range".into()))?),
        };
        let filter = AdmissionFilter {
            cluster_id: self.cluster_id(&tenant, r.cluster.as_ref()).await?,
            since,
        };
        let report =
            crate::replay::replay(self.store.as_ref(), self.ingestor.policies(), &tenant, draft, &filter).await?;
        Ok(Response::new(replay_to_proto(&report)))
    }
}
