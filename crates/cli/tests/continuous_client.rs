//! The continuous service's client commands against a scripted ContinuousService in this
//! test process (a test double, not the real service: it records what the binary sends and
//! answers as the proto says the service does). What is checked is the client's side of the
//! protocol: the messages, sequences, acks, hello, paging and deadlines it sends, and what
//! it prints of the answers. The real service's end-to-end tests are in `continuous.rs`
//! once the service exists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use common::{Run, TempDir, run_with};
use portcullis_proto::common::v1::{ItemError, Mitigation, PageResponse, PodKey, Violation, resource_ref};
use portcullis_proto::continuous::v1 as pc;
use portcullis_proto::continuous::v1::continuous_service_server::{ContinuousService, ContinuousServiceServer};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What the fake service was sent.
#[derive(Default)]
struct Log {
    updates: Vec<pc::InventoryUpdate>,
    hellos: Vec<pc::ConnectorHello>,
    /// Each ack with the number (from 1) of the stream it came on.
    acks: Vec<(usize, pc::CommandAck)>,
    /// `grpc-timeout` of each Commands call.
    commands_timeouts: Vec<Option<String>>,
    /// `grpc-timeout` of each ListFindings call.
    findings_timeouts: Vec<Option<String>>,
    findings_requests: Vec<pc::ListFindingsRequest>,
    get_pod: Vec<pc::GetPodRequest>,
    issued: Vec<pc::IssueCommandRequest>,
    previews: Vec<pc::PreviewPolicyRequest>,
    authorization: Vec<String>,
}

/// The scripted service.
#[derive(Clone, Default)]
struct Fake {
    log: Arc<Mutex<Log>>,
    /// Answers the message of this sequence with a resync request.
    resync_at: Option<u64>,
    /// The commands each Commands stream sends, one entry a stream; every stream but the last
    /// ends after its commands (a break), the last stays open until the client closes.
    streams: Arc<Mutex<VecDeque<Vec<pc::MitigationCommand>>>>,
}

impl Fake {
    fn record<T>(&self, request: &Request<T>) {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.log.lock().unwrap().authorization.push(auth);
    }
}

fn timeout_of<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn pod(namespace: &str, name: &str, uid: &str) -> Option<PodKey> {
    Some(PodKey {
        namespace: namespace.into(),
        name: name.into(),
        uid: uid.into(),
    })
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn finding(name: &str, resolved: bool) -> pc::Finding {
    pc::Finding {
        id: format!("f-{name}"),
        cluster_id: "cluster-1".into(),
        pod: pod("shop", name, &format!("uid-{name}")),
        violation: Some(Violation {
            rule_type: "podSecurityContext".into(),
            mitigation: Mitigation::Isolate as i32,
            ..Violation::default()
        }),
        state: if resolved {
            pc::FindingState::Resolved as i32
        } else {
            pc::FindingState::Open as i32
        },
        first_seen_at: ts(1_700_000_000),
        last_seen_at: ts(1_700_000_100),
        resolved_at: if resolved { ts(1_700_000_200) } else { None },
        rule: "podSecurityContext { hostNetwork:true }".into(),
        ..pc::Finding::default()
    }
}

fn command(id: &str, kind: pc::CommandType) -> pc::MitigationCommand {
    pc::MitigationCommand {
        command_id: id.into(),
        cluster_id: "cluster-1".into(),
        pod: pod("shop", "web-1", "uid-web-1"),
        r#type: kind as i32,
        origin: pc::CommandOrigin::Continuous as i32,
        reason: "hostNetwork".into(),
        rules: vec!["podSecurityContext { hostNetwork:true }".into()],
        issued_at: ts(1_700_000_000),
        state: pc::CommandState::Pending as i32,
        network_policy_json: if kind == pc::CommandType::Isolate {
            r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","spec":{"podSelector":{"matchLabels":{"portcullis.io/isolated":"true"}},"policyTypes":["Ingress","Egress"]}}"#.into()
        } else {
            String::new()
        },
        isolation_label: "portcullis.io/isolated".into(),
        ..pc::MitigationCommand::default()
    }
}

#[tonic::async_trait]
impl ContinuousService for Fake {
    type SyncInventoryStream = Out<pc::InventoryAck>;
    type CommandsStream = Out<pc::MitigationCommand>;

    async fn sync_inventory(
        &self,
        request: Request<Streaming<pc::InventoryUpdate>>,
    ) -> Result<Response<Self::SyncInventoryStream>, Status> {
        self.record(&request);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(update)) = inbound.next().await {
                fake.log.lock().unwrap().updates.push(update.clone());
                let mut ack = pc::InventoryAck {
                    sequence: update.sequence,
                    ..pc::InventoryAck::default()
                };
                if fake.resync_at == Some(update.sequence) {
                    ack.resync = true;
                    ack.resync_reason = "sequence gap".into();
                }
                match update.update {
                    Some(pc::inventory_update::Update::Upserts(batch)) => {
                        for (i, json) in batch.pods_json.iter().enumerate() {
                            let value: Value = serde_json::from_slice(json).unwrap();
                            if value["metadata"]["name"] == "broken" {
                                ack.errors.push(ItemError {
                                    code: 3,
                                    message: "spec.containers: missing".into(),
                                    field: format!("pods_json[{i}]"),
                                });
                            } else {
                                ack.pods_upserted += 1;
                            }
                        }
                    }
                    Some(pc::inventory_update::Update::SnapshotEnd(_)) => ack.pods_removed = 3,
                    _ => {}
                }
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn commands(
        &self,
        request: Request<Streaming<pc::ConnectorMessage>>,
    ) -> Result<Response<Self::CommandsStream>, Status> {
        self.record(&request);
        self.log.lock().unwrap().commands_timeouts.push(timeout_of(&request));
        if request
            .metadata()
            .get("authorization")
            .is_some_and(|v| v == "Bearer wrong")
        {
            return Err(Status::unauthenticated("unknown key"));
        }
        let mut inbound = request.into_inner();
        let first = inbound.next().await;
        let Some(Ok(pc::ConnectorMessage {
            message: Some(pc::connector_message::Message::Hello(hello)),
        })) = first
        else {
            return Err(Status::invalid_argument("the stream must open with a hello"));
        };
        let number = {
            let mut log = self.log.lock().unwrap();
            log.hellos.push(hello);
            log.hellos.len()
        };
        let (script, last) = {
            let mut streams = self.streams.lock().unwrap();
            let script = streams.pop_front().unwrap_or_default();
            (script, streams.is_empty())
        };
        let (tx, rx) = mpsc::channel(16);
        let fake = self.clone();
        tokio::spawn(async move {
            for c in script {
                let _ = tx.send(Ok(c)).await;
            }
            if !last {
                // A break: the stream ends; acks still arriving are recorded below.
                drop(tx);
                while let Some(Ok(message)) = inbound.next().await {
                    if let Some(pc::connector_message::Message::Ack(ack)) = message.message {
                        fake.log.lock().unwrap().acks.push((number, ack));
                    }
                }
                return;
            }
            while let Some(Ok(message)) = inbound.next().await {
                if let Some(pc::connector_message::Message::Ack(ack)) = message.message {
                    fake.log.lock().unwrap().acks.push((number, ack));
                }
            }
            // The client closed its side: end ours.
            drop(tx);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_findings(
        &self,
        request: Request<pc::ListFindingsRequest>,
    ) -> Result<Response<pc::ListFindingsResponse>, Status> {
        self.record(&request);
        self.log.lock().unwrap().findings_timeouts.push(timeout_of(&request));
        let request = request.into_inner();
        self.log.lock().unwrap().findings_requests.push(request.clone());
        let token = request.page.map(|p| p.page_token).unwrap_or_default();
        // Two pages whatever the page size asked: the client must follow the token.
        let (findings, next) = if token.is_empty() {
            (vec![finding("web-1", false), finding("web-2", false)], "2")
        } else {
            (vec![finding("web-3", true)], "")
        };
        Ok(Response::new(pc::ListFindingsResponse {
            findings,
            page: Some(PageResponse {
                next_page_token: next.into(),
            }),
        }))
    }

    async fn get_pod(&self, request: Request<pc::GetPodRequest>) -> Result<Response<pc::GetPodResponse>, Status> {
        self.record(&request);
        let request = request.into_inner();
        self.log.lock().unwrap().get_pod.push(request.clone());
        if request.name != "web-1" {
            return Err(Status::not_found("no such pod"));
        }
        Ok(Response::new(pc::GetPodResponse {
            cluster_id: "cluster-1".into(),
            uid: "uid-web-1".into(),
            ..pc::GetPodResponse::default()
        }))
    }

    async fn issue_command(
        &self,
        request: Request<pc::IssueCommandRequest>,
    ) -> Result<Response<pc::IssueCommandResponse>, Status> {
        self.record(&request);
        let request = request.into_inner();
        self.log.lock().unwrap().issued.push(request.clone());
        let mut made = command("cmd-restore", pc::CommandType::Restore);
        made.pod = request.pod;
        made.origin = pc::CommandOrigin::Manual as i32;
        made.reason = request.reason;
        Ok(Response::new(pc::IssueCommandResponse { command: Some(made) }))
    }

    async fn list_commands(
        &self,
        request: Request<pc::ListCommandsRequest>,
    ) -> Result<Response<pc::ListCommandsResponse>, Status> {
        self.record(&request);
        let request = request.into_inner();
        let mut done = command("cmd-2", pc::CommandType::Terminate);
        done.state = pc::CommandState::Done as i32;
        let all = vec![command("cmd-1", pc::CommandType::Isolate), done];
        let commands = all
            .into_iter()
            .filter(|c| request.state == 0 || c.state == request.state)
            .collect();
        Ok(Response::new(pc::ListCommandsResponse { commands, page: None }))
    }

    async fn preview_policy(
        &self,
        request: Request<pc::PreviewPolicyRequest>,
    ) -> Result<Response<pc::PreviewPolicyResponse>, Status> {
        self.record(&request);
        self.log.lock().unwrap().previews.push(request.into_inner());
        let mut new = finding("web-1", false);
        new.id.clear();
        Ok(Response::new(pc::PreviewPolicyResponse {
            findings: vec![
                pc::PreviewFinding {
                    change: pc::PreviewChange::New as i32,
                    finding: Some(new),
                },
                pc::PreviewFinding {
                    change: pc::PreviewChange::Resolved as i32,
                    finding: Some(finding("web-3", true)),
                },
            ],
            commands: vec![{
                let mut c = command("", pc::CommandType::Isolate);
                c.state = 0;
                c
            }],
            cluster_ids: vec!["cluster-1".into()],
            pods_evaluated: 3,
            skipped: vec![pc::PreviewSkipped {
                cluster_id: "cluster-2".into(),
                reason: "no inventory yet".into(),
            }],
        }))
    }
}

/// Starts the fake on a free loopback port; returns its URL.
async fn serve(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ContinuousServiceServer::new(fake))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    url
}

/// Runs the binary against `url` with key `k`, off the runtime's threads.
async fn cli(url: &str, args: &[&str]) -> Run {
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.extend([
        "--continuous-server".into(),
        url.to_owned(),
        "--api-key".into(),
        "k".into(),
    ]);
    // `--server` points nowhere: the continuous commands must use --continuous-server.
    all.extend(["--server".into(), "http://127.0.0.1:1".into()]);
    let run = tokio::task::spawn_blocking(move || run_with(&all, None, &[]))
        .await
        .unwrap();
    run.assert_no_panic();
    run
}

const PODS: &str = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: web-1, namespace: shop, uid: uid-web-1}
  spec:
    hostNetwork: true
    containers: [{name: web, image: nginx:1.27}]
  status:
    containerStatuses: [{name: web, imageID: 'docker.io/library/nginx@sha256:aaaa'}]
- apiVersion: v1
  kind: Pod
  metadata: {name: web-2, namespace: shop}
  spec:
    containers: [{name: web, image: nginx:1.27}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
";

fn kinds(updates: &[pc::InventoryUpdate]) -> Vec<String> {
    updates
        .iter()
        .map(|u| match u.update.as_ref().unwrap() {
            pc::inventory_update::Update::SnapshotStart(s) => format!("start {}", s.expected_pods),
            pc::inventory_update::Update::Upserts(b) => format!("pods {}", b.pods_json.len()),
            pc::inventory_update::Update::Deletions(_) => "deletions".into(),
            pc::inventory_update::Update::SnapshotEnd(_) => "end".into(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_sync_sends_one_snapshot_and_prints_what_the_acks_say() {
    let fake = Fake::default();
    let url = serve(fake.clone()).await;
    let dir = TempDir::new("inventory");
    let file = dir.write("pods.yaml", PODS);
    let run = cli(
        &url,
        &[
            "inventory",
            "sync",
            "-f",
            file.to_str().unwrap(),
            "--cluster",
            "prod",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let summary: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["podsSent"], 2);
    assert_eq!(summary["podsUpserted"], 2);
    assert_eq!(summary["podsRemoved"], 3);
    assert_eq!(summary["skipped"]["Service"], 1);
    assert!(
        run.stderr
            .contains("warning: skipped objects that are not Pods: Service (1)"),
        "{}",
        run.stderr
    );
    let log = fake.log.lock().unwrap();
    assert_eq!(kinds(&log.updates), ["start 2", "pods 2", "end"]);
    let sequences: Vec<u64> = log.updates.iter().map(|u| u.sequence).collect();
    assert_eq!(sequences, [1, 2, 3]);
    let cluster = log.updates[0].cluster.as_ref().and_then(|c| c.r#ref.clone());
    assert_eq!(cluster, Some(resource_ref::Ref::Name("prod".into())));
    let Some(pc::inventory_update::Update::Upserts(batch)) = &log.updates[1].update else {
        panic!("no pods")
    };
    let first: Value = serde_json::from_slice(&batch.pods_json[0]).unwrap();
    assert_eq!(first["spec"]["hostNetwork"], true);
    assert_eq!(
        first["status"]["containerStatuses"][0]["imageID"],
        "docker.io/library/nginx@sha256:aaaa"
    );
    assert_eq!(log.authorization, ["Bearer k"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_request_or_a_refused_pod_fails_the_sync() {
    let fake = Fake {
        resync_at: Some(2),
        ..Fake::default()
    };
    let url = serve(fake.clone()).await;
    let dir = TempDir::new("inventory");
    let file = dir.write("pods.yaml", PODS);
    let run = cli(&url, &["inventory", "sync", "-f", file.to_str().unwrap()]).await;
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .contains("portcullis: inventory sync: the service asked for a new snapshot at message 2 (sequence gap)"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");

    let fake = Fake::default();
    let url = serve(fake.clone()).await;
    let broken = "kind: Pod\nmetadata: {name: ok}\n---\nkind: Pod\nmetadata: {name: broken}\n";
    let file = dir.write("broken.yaml", broken);
    let run = cli(&url, &["inventory", "sync", "-f", file.to_str().unwrap()]).await;
    assert_eq!(run.code, Some(2));
    assert!(run.stdout.contains("Pods upserted:    1\n"), "{}", run.stdout);
    assert!(
        run.stdout.contains("error: pods_json[1]: spec.containers: missing\n"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("1 pod(s) could not be stored"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_for_an_unreadable_or_empty_file() {
    let fake = Fake::default();
    let url = serve(fake.clone()).await;
    let dir = TempDir::new("inventory");
    let bad = dir.write("bad.yaml", "kind: Pod\nmetadata: {name: a}\n---\nkind: [oops\n");
    let run = cli(&url, &["inventory", "sync", "-f", bad.to_str().unwrap()]).await;
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("bad.yaml:2:"), "{}", run.stderr);
    let empty = dir.write("empty.yaml", "kind: Service\nmetadata: {name: s}\n");
    let run = cli(&url, &["inventory", "sync", "-f", empty.to_str().unwrap()]).await;
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--allow-empty"), "{}", run.stderr);
    assert!(fake.log.lock().unwrap().updates.is_empty());
    let run = cli(
        &url,
        &["inventory", "sync", "-f", empty.to_str().unwrap(), "--allow-empty"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(kinds(&fake.log.lock().unwrap().updates), ["start 0", "end"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_watch_prints_each_command_once_acks_it_and_survives_a_break() {
    let fake = Fake::default();
    // The first stream sends cmd-1 then breaks; the second sends cmd-1 again (not acked in
    // time, as at-least-once allows) and cmd-2.
    fake.streams.lock().unwrap().extend([
        vec![command("cmd-1", pc::CommandType::Isolate)],
        vec![
            command("cmd-1", pc::CommandType::Isolate),
            command("cmd-2", pc::CommandType::Terminate),
        ],
    ]);
    let url = serve(fake.clone()).await;
    let run = cli(&url, &["commands", "watch", "--cluster", "prod", "--count", "2"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines = run.json_lines();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert_eq!(lines[0]["id"], "cmd-1");
    assert_eq!(lines[0]["type"], "isolate");
    assert_eq!(lines[0]["networkPolicy"]["kind"], "NetworkPolicy");
    assert_eq!(lines[0]["isolationLabel"], "portcullis.io/isolated");
    assert_eq!(lines[0]["pod"], "web-1");
    assert_eq!(lines[0]["issuedAt"], "2023-11-14T22:13:20Z");
    assert_eq!(lines[1]["id"], "cmd-2");
    assert_eq!(lines[1]["type"], "terminate");
    assert_eq!(lines[1]["networkPolicy"], Value::Null);
    let mut keys: Vec<&str> = lines[0].as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cluster",
            "id",
            "isolationLabel",
            "issuedAt",
            "namespace",
            "networkPolicy",
            "origin",
            "pod",
            "reason",
            "rules",
            "type",
            "uid"
        ]
    );
    assert!(run.stderr.contains("reconnecting"), "{}", run.stderr);
    let log = fake.log.lock().unwrap();
    assert_eq!(log.hellos.len(), 2, "one hello per stream");
    assert!(
        log.hellos
            .iter()
            .all(|h| h.cluster.as_ref().and_then(|c| c.r#ref.clone()) == Some(resource_ref::Ref::Name("prod".into())))
    );
    // The stream lives as long as the watch: no call deadline on it.
    assert_eq!(log.commands_timeouts, [None, None]);
    assert!(log.acks.iter().all(|(_, a)| a.state == pc::CommandState::Done as i32));
    // On the second stream the repeated cmd-1 is acked again, though not printed again (the
    // first stream's ack may have been lost with it), then cmd-2.
    let second: Vec<&str> = log
        .acks
        .iter()
        .filter(|(n, _)| *n == 2)
        .map(|(_, a)| a.command_id.as_str())
        .collect();
    assert_eq!(second, ["cmd-1", "cmd-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_watch_ends_with_exit_2_instead_of_retrying() {
    let fake = Fake::default();
    let url = serve(fake.clone()).await;
    let run = tokio::task::spawn_blocking(move || {
        run_with(
            &["commands", "watch", "--continuous-server", &url, "--api-key", "wrong"],
            None,
            &[],
        )
    })
    .await
    .unwrap();
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("portcullis: commands watch: unknown key"),
        "{}",
        run.stderr
    );
    assert_eq!(fake.log.lock().unwrap().commands_timeouts.len(), 1, "no retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_list_follows_the_pages_and_prints_the_documented_fields() {
    let fake = Fake::default();
    let url = serve(fake.clone()).await;
    let run = cli(&url, &["findings", "list", "--cluster", "prod", "-o", "json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let items: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    let pods: Vec<&str> = items.iter().map(|f| f["pod"].as_str().unwrap()).collect();
    assert_eq!(pods, ["web-1", "web-2", "web-3"]);
    let mut keys: Vec<&str> = items[0].as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cluster",
            "firstSeen",
            "lastSeen",
            "mitigation",
            "namespace",
            "pod",
            "resolved",
            "rule",
            "uid"
        ]
    );
    assert_eq!(items[0]["mitigation"], "isolate");
    assert_eq!(items[0]["resolved"], Value::Null);
    assert_eq!(items[2]["resolved"], "2023-11-14T22:16:40Z");
    assert_eq!(items[0]["firstSeen"], "2023-11-14T22:13:20Z");

    let run = cli(&url, &["findings", "list", "--open", "-n", "shop"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.starts_with("CLUSTER "), "{}", run.stdout);
    assert_eq!(run.stdout.lines().count(), 4, "{}", run.stdout);

    let log = fake.log.lock().unwrap();
    let all = pc::FindingState::Open as i32;
    let resolved = pc::FindingState::Resolved as i32;
    assert_eq!(log.findings_requests[0].states, [all, resolved]);
    assert_eq!(log.findings_requests[1].page.as_ref().unwrap().page_token, "2");
    assert_eq!(log.findings_requests[2].states, [all]);
    assert_eq!(log.findings_requests[2].namespace, "shop");
    assert!(
        log.findings_timeouts.iter().all(Option::is_some),
        "every call has a deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_restore_looks_the_uid_up_and_issues_a_restore() {
    let fake = Fake::default();
    let url = serve(fake.clone()).await;
    let run = cli(
        &url,
        &[
            "commands",
            "restore",
            "web-1",
            "-n",
            "shop",
            "--cluster",
            "prod",
            "--reason",
            "cleared",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let printed: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(printed["type"], "restore-isolation");
    assert_eq!(printed["origin"], "manual");
    assert_eq!(printed["state"], "pending");
    // A pod the inventory does not hold is named without a uid, with a warning.
    let run = cli(
        &url,
        &["commands", "restore", "ghost", "-n", "shop", "--cluster", "prod"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("warning: shop/ghost is not in the inventory"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("restore-isolation"), "{}", run.stdout);
    let log = fake.log.lock().unwrap();
    assert_eq!(log.issued.len(), 2);
    let first = &log.issued[0];
    assert_eq!(first.r#type, pc::CommandType::Restore as i32);
    assert_eq!(first.reason, "cleared");
    assert_eq!(first.pod, pod("shop", "web-1", "uid-web-1"));
    assert_eq!(log.issued[1].pod, pod("shop", "ghost", ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_list_filters_by_state() {
    let fake = Fake::default();
    let url = serve(fake.clone()).await;
    let run = cli(&url, &["commands", "list", "--state", "done", "-o", "json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let items: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], "cmd-2");
    assert_eq!(items[0]["state"], "done");
    let run = cli(&url, &["commands", "list"]).await;
    assert_eq!(run.stdout.lines().count(), 3, "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_apply_preview_applies_nothing_and_prints_the_changes() {
    let fake = Fake::default();
    let url = serve(fake.clone()).await;
    let policy = common::example_policy();
    let run = cli(
        &url,
        &[
            "policy",
            "apply",
            "-f",
            &policy,
            "--preview",
            "--cluster",
            "prod",
            "-o",
            "json",
        ],
    )
    .await;
    // `--server` points nowhere: had it applied, it would have failed to connect.
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let items: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    let changes: Vec<(&str, &str)> = items
        .iter()
        .map(|f| (f["change"].as_str().unwrap(), f["pod"].as_str().unwrap()))
        .collect();
    assert_eq!(changes, [("new", "web-1"), ("resolved", "web-3")]);
    assert!(
        run.stderr
            .contains("warning: cluster cluster-2 not previewed: no inventory yet"),
        "{}",
        run.stderr
    );
    let run = cli(&url, &["policy", "apply", "-f", &policy, "--preview"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("Pods evaluated:  3\n"), "{}", run.stdout);
    assert!(run.stdout.contains("Mitigations it would order:\n"), "{}", run.stdout);
    let log = fake.log.lock().unwrap();
    assert_eq!(log.previews.len(), 2);
    let document: Value = serde_json::from_str(&log.previews[0].document).unwrap();
    assert_eq!(document["name"], "prod.strict");
    let clusters: Vec<_> = log.previews[0].clusters.iter().map(|c| c.r#ref.clone()).collect();
    assert_eq!(clusters, [Some(resource_ref::Ref::Name("prod".into()))]);
    assert!(log.previews[1].clusters.is_empty());
}

/// Starts `commands watch` (no --count) against `url`, stdin a pipe when `pipe`, and returns
/// the child with a channel of its stdout lines as they come.
fn spawn_watch(url: &str, pipe: bool) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(common::BIN)
        .args(["commands", "watch", "--continuous-server", url, "--api-key", "k"])
        .stdin(if pipe { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits for the child's exit, killing it (by its id) if it runs past a minute.
fn exit_code(mut child: std::process::Child) -> Option<i32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the watch did not end");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_line_is_out_while_the_watch_runs_and_a_closed_stdin_or_sigint_ends_it() {
    let limit = std::time::Duration::from_secs(60);
    for by_signal in [false, true] {
        let fake = Fake::default();
        fake.streams
            .lock()
            .unwrap()
            .push_back(vec![command("cmd-1", pc::CommandType::Isolate)]);
        let url = serve(fake.clone()).await;
        let (mut child, lines) = spawn_watch(&url, !by_signal);
        let first = tokio::task::spawn_blocking(move || lines.recv_timeout(limit))
            .await
            .unwrap()
            .expect("a line while the watch still runs (flushed as it arrives)");
        let line: Value = serde_json::from_str(&first).unwrap();
        assert_eq!(line["id"], "cmd-1");
        assert!(child.try_wait().unwrap().is_none(), "the watch goes on without --count");
        if by_signal {
            let status = std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        } else {
            drop(child.stdin.take());
        }
        let code = tokio::task::spawn_blocking(move || exit_code(child)).await.unwrap();
        assert_eq!(code, Some(0), "by signal: {by_signal}");
    }
}
