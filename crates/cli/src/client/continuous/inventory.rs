//! `portcullis inventory sync -f PODS.yaml [--cluster C]` (connector key): sends the pods of
//! a file as one full snapshot of the cluster's inventory, as a connector would, and prints
//! what the service made of it.
//!
//! The file is read as `portcullis eval` reads manifests (multi-document YAML, JSON, JSON
//! Lines); a `List` (`kubectl get pods -o yaml`) gives its items. Only `kind: Pod` objects
//! are sent; other objects (a Deployment in `kubectl get all -o yaml`) are skipped with a
//! warning that counts them by kind. A document that cannot be read, or a Pod without a
//! name, stops the command before anything is sent: a snapshot removes every pod it does
//! not carry, so a partly read file must not become one. An empty snapshot is refused
//! unless `--allow-empty` (it would empty the cluster's inventory).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use portcullis_proto::continuous::v1 as pc;
use portcullis_simulator::protocol::{SnapshotError, stream_snapshot};
use serde_json::{Value, json};

use super::super::by_name;
use super::super::output::{Format, OutputArg, print, print_json, render_fields};
use super::super::{Ctx, Svc};
use super::{ContinuousServerArg, connect};
use crate::client::error::ClientError;
use crate::documents::for_each_document;

/// Deepest nesting of Lists in Lists (Kubernetes never nests them; a bound all the same).
const MAX_LIST_DEPTH: usize = 4;

/// `inventory` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum InventoryCommand {
    /// Sends the pods of a file as a full snapshot of the cluster's inventory (connector
    /// key); pods of the cluster not in the file are removed.
    Sync {
        /// Pods: YAML (multi-document, or a `List` as `kubectl get pods -o yaml` prints),
        /// JSON or JSON Lines; `-` for standard input.
        #[arg(short = 'f', long = "file", value_name = "PODS")]
        file: String,
        /// The cluster by name (default: the connector key's own cluster).
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
        /// Sends a file without pods too (it removes every pod of the inventory).
        #[arg(long)]
        allow_empty: bool,
        #[command(flatten)]
        server: ContinuousServerArg,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl InventoryCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            InventoryCommand::Sync { .. } => "sync",
        }
    }
}

/// The pods of a file, as JSON, and what was skipped.
#[derive(Debug, Default)]
pub struct PodFile {
    /// Each Pod object as compact JSON.
    pub pods: Vec<Bytes>,
    /// Objects that are not Pods, counted by kind.
    pub skipped: BTreeMap<String, usize>,
}

/// Reads the pods of `path` (`-`: standard input). Errors name the file and the document.
pub fn read_pods(path: &str) -> Result<PodFile, ClientError> {
    let mut file = PodFile::default();
    let mut errors = Vec::new();
    let read = for_each_document(path, |doc| {
        let value = doc
            .json
            .and_then(|json| serde_json::from_slice::<Value>(&json).map_err(|e| e.to_string()));
        let collected = value.and_then(|v| collect(v, 0, "", &mut file));
        if let Err(e) = collected {
            errors.push(format!("{path}:{}: {e}", doc.index));
        }
    });
    read.map_err(|e| ClientError::input(format!("{path}: {e}")))?;
    match errors.len() {
        0 => Ok(file),
        1 => Err(ClientError::input(errors.concat())),
        n => Err(ClientError::input(format!(
            "{} (and {} more documents could not be read)",
            errors.first().map_or("", String::as_str),
            n - 1
        ))),
    }
}

/// Adds the Pods of one object (a Pod, or a List of them) to `file`.
fn collect(value: Value, depth: usize, at: &str, file: &mut PodFile) -> Result<(), String> {
    let Value::Object(mut object) = value else {
        return Err(format!("{}not an object", prefix(at)));
    };
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if kind.ends_with("List") {
        if depth >= MAX_LIST_DEPTH {
            return Err(format!("{}Lists nested too deeply", prefix(at)));
        }
        // `items: null` (or none) is an empty List, as Kubernetes reads it.
        let items = match object.remove("items") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(format!("{}items: not a list", prefix(at))),
        };
        for (i, item) in items.into_iter().enumerate() {
            collect(item, depth + 1, &format!("{at}items[{i}]."), file)?;
        }
        return Ok(());
    }
    if kind != "Pod" {
        let shown = if kind.is_empty() { "(no kind)".to_owned() } else { kind };
        *file.skipped.entry(shown).or_default() += 1;
        return Ok(());
    }
    let named = object
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !named {
        return Err(format!("{}metadata.name: a Pod needs a name", prefix(at)));
    }
    let json = serde_json::to_vec(&Value::Object(object)).map_err(|e| e.to_string())?;
    file.pods.push(Bytes::from(json));
    Ok(())
}

fn prefix(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("{} ", at.trim_end_matches('.'))
    }
}

/// The messages of one full snapshot (the connector protocol's: `snapshot_start`, pages of
/// at most `PAGE_PODS` pods and `PAGE_BYTES` bytes, `snapshot_end`, sequences 1..n); only
/// the first names the cluster.
pub fn snapshot_messages(pods: Vec<Bytes>, cluster: Option<&str>) -> Vec<pc::InventoryUpdate> {
    portcullis_simulator::protocol::snapshot_messages(pods, cluster.and_then(by_name))
}

/// What the service made of a snapshot, from its acks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncSummary {
    /// Pods sent.
    pub sent: usize,
    /// Pods the service added or changed.
    pub upserted: u64,
    /// Pods the service removed.
    pub removed: u64,
    /// Pods the service could not read, with why.
    pub errors: Vec<String>,
}

impl SyncSummary {
    /// Counts one ack, answering message `expected`. A resync request or an ack out of
    /// order is an error: the snapshot did not take.
    pub fn add(&mut self, ack: &pc::InventoryAck, expected: u64) -> Result<(), ClientError> {
        if ack.resync {
            let why = if ack.resync_reason.is_empty() {
                "no reason given".to_owned()
            } else {
                ack.resync_reason.clone()
            };
            return Err(ClientError::input(format!(
                "the service asked for a new snapshot at message {} ({why}); nothing more was applied",
                ack.sequence
            )));
        }
        if ack.sequence != expected {
            return Err(ClientError::input(format!(
                "the service acked message {} where {expected} was due",
                ack.sequence
            )));
        }
        self.upserted += ack.pods_upserted;
        self.removed += ack.pods_removed;
        for e in &ack.errors {
            let field = if e.field.is_empty() {
                String::new()
            } else {
                format!("{}: ", e.field)
            };
            self.errors.push(format!("{field}{}", e.message));
        }
        Ok(())
    }

    /// The summary as `Label: value` lines, then one `error:` line per pod refused.
    pub fn render(&self, skipped: &BTreeMap<String, usize>) -> String {
        let mut text = render_fields(&[
            ("Pods sent", self.sent.to_string()),
            ("Pods upserted", self.upserted.to_string()),
            ("Pods removed", self.removed.to_string()),
            ("Pod errors", self.errors.len().to_string()),
            ("Skipped objects", skipped_text(skipped)),
        ]);
        for e in &self.errors {
            text.push_str(&format!("error: {e}\n"));
        }
        text
    }

    /// The summary as JSON.
    pub fn json(&self, skipped: &BTreeMap<String, usize>) -> Value {
        json!({
            "podsSent": self.sent,
            "podsUpserted": self.upserted,
            "podsRemoved": self.removed,
            "errors": self.errors,
            "skipped": skipped,
        })
    }
}

/// `Deployment (2), Service (1)`; empty when nothing was skipped.
fn skipped_text(skipped: &BTreeMap<String, usize>) -> String {
    skipped
        .iter()
        .map(|(kind, n)| format!("{kind} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs an `inventory` subcommand.
pub async fn run(ctx: &Ctx<'_>, command: &InventoryCommand) -> Result<(), ClientError> {
    let InventoryCommand::Sync {
        file,
        cluster,
        allow_empty,
        server,
        out,
    } = command;
    let pods = read_pods(file)?;
    if !pods.skipped.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "portcullis: inventory sync: warning: skipped objects that are not Pods: {}",
            skipped_text(&pods.skipped)
        );
    }
    if pods.pods.is_empty() && !allow_empty {
        return Err(ClientError::input(format!(
            "{file}: no pods; an empty snapshot removes every pod of the cluster's inventory (pass --allow-empty to send it)"
        )));
    }
    let (conn, client) = connect(ctx, server, true).await?;
    let sent = pods.pods.len();
    let messages = snapshot_messages(pods.pods, cluster.as_deref());
    let mut summary = sync(client, messages, ctx.global.timeout).await.map_err(|e| match e {
        SyncError::Rpc(status) => conn.error(status),
        SyncError::Other(e) => e,
    })?;
    summary.sent = sent;
    match out.output {
        Format::Json => print_json(&summary.json(&pods.skipped))?,
        Format::Table => print(&summary.render(&pods.skipped))?,
    }
    if summary.errors.is_empty() {
        Ok(())
    } else {
        Err(ClientError::input(format!(
            "{} pod(s) could not be stored (listed above)",
            summary.errors.len()
        )))
    }
}

/// Why a sync failed.
enum SyncError {
    Rpc(tonic::Status),
    Other(ClientError),
}

/// Streams `messages` and reads an ack for each, each within `step`.
async fn sync(
    mut client: portcullis_proto::continuous::v1::continuous_service_client::ContinuousServiceClient<Svc>,
    messages: Vec<pc::InventoryUpdate>,
    step: Duration,
) -> Result<SyncSummary, SyncError> {
    let total = messages.len();
    let mut summary = SyncSummary::default();
    let streamed = stream_snapshot(
        |r| client.sync_inventory(r),
        messages,
        step,
        |ack, expected| summary.add(ack, expected),
    )
    .await;
    match streamed {
        Ok(()) => Ok(summary),
        Err(SnapshotError::Rpc(status)) => Err(SyncError::Rpc(status)),
        Err(SnapshotError::Ack(e)) => Err(SyncError::Other(e)),
        Err(SnapshotError::Ended(acked)) => Err(SyncError::Other(ClientError::input(format!(
            "the service ended the stream after {acked} of {total} acks"
        )))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use portcullis_simulator::protocol::PAGE_BYTES;

    fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pc-cli-inventory-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn names(file: &PodFile) -> Vec<String> {
        file.pods
            .iter()
            .map(|p| {
                let v: Value = serde_json::from_slice(p).unwrap();
                v["metadata"]["name"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    const KUBECTL_LIST: &str = "\
apiVersion: v1
items:
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-1
    namespace: shop
    uid: 0b1c
  spec:
    containers:
    - name: web
      image: nginx:1.27
  status:
    containerStatuses:
    - name: web
      imageID: docker.io/library/nginx@sha256:aaaa
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-2
    namespace: shop
  spec:
    containers:
    - name: web
      image: nginx:1.27
kind: List
metadata:
  resourceVersion: \"\"
";

    #[test]
    fn a_kubectl_list_gives_its_pods_with_their_status() {
        let path = temp_file("list.yaml", KUBECTL_LIST);
        let file = read_pods(path.to_str().unwrap()).unwrap();
        assert_eq!(names(&file), ["web-1", "web-2"]);
        let first: Value = serde_json::from_slice(&file.pods[0]).unwrap();
        assert_eq!(
            first["status"]["containerStatuses"][0]["imageID"],
            "docker.io/library/nginx@sha256:aaaa"
        );
        assert!(file.skipped.is_empty());
    }

    #[test]
    fn multi_document_yaml_keeps_pods_and_counts_the_rest() {
        let text = "kind: Pod\nmetadata: {name: a}\n---\nkind: Deployment\nmetadata: {name: d}\n---\n# only a comment\n---\nkind: PodList\nitems:\n- {kind: Pod, metadata: {name: b}}\n- {kind: Service, metadata: {name: s}}\n";
        let path = temp_file("multi.yaml", text);
        let file = read_pods(path.to_str().unwrap()).unwrap();
        assert_eq!(names(&file), ["a", "b"]);
        assert_eq!(file.skipped.get("Deployment"), Some(&1));
        assert_eq!(file.skipped.get("Service"), Some(&1));
    }

    #[test]
    fn json_and_json_lines_are_read_too() {
        let json = r#"{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"j1"}}]} {"kind":"Pod","metadata":{"name":"j2"}}"#;
        let path = temp_file("pods.json", json);
        assert_eq!(names(&read_pods(path.to_str().unwrap()).unwrap()), ["j1", "j2"]);
        let lines =
            "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"l1\"}}\n\n{\"kind\":\"Pod\",\"metadata\":{\"name\":\"l2\"}}\n";
        let path = temp_file("pods.jsonl", lines);
        assert_eq!(names(&read_pods(path.to_str().unwrap()).unwrap()), ["l1", "l2"]);
    }

    #[test]
    fn a_bad_document_or_a_nameless_pod_stops_everything() {
        let path = temp_file("bad.yaml", "kind: Pod\nmetadata: {name: ok}\n---\nkind: [unclosed\n");
        let err = read_pods(path.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("bad.yaml:2:"), "{err}");
        let path = temp_file("nameless.yaml", "kind: List\nitems:\n- kind: Pod\n  metadata: {}\n");
        let err = read_pods(path.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("items[0] metadata.name"), "{err}");
        let path = temp_file("scalar.yaml", "just text\n");
        assert!(read_pods(path.to_str().unwrap()).is_err());
        let missing = read_pods("/nonexistent/pods.yaml").unwrap_err().to_string();
        assert!(missing.starts_with("/nonexistent/pods.yaml: "), "{missing}");
    }

    fn pods(n: usize, size: usize) -> Vec<Bytes> {
        (0..n).map(|_| Bytes::from(vec![b'x'; size])).collect()
    }

    fn kinds(messages: &[pc::InventoryUpdate]) -> Vec<String> {
        use pc::inventory_update::Update;
        messages
            .iter()
            .map(|m| match m.update.as_ref().unwrap() {
                Update::SnapshotStart(s) => format!("start {}", s.expected_pods),
                Update::Upserts(b) => format!("pods {}", b.pods_json.len()),
                Update::Deletions(_) => "deletions".to_owned(),
                Update::SnapshotEnd(_) => "end".to_owned(),
            })
            .collect()
    }

    #[test]
    fn a_snapshot_is_start_pages_end_with_sequences_from_one() {
        let messages = snapshot_messages(pods(1201, 10), Some("prod"));
        assert_eq!(
            kinds(&messages),
            ["start 1201", "pods 500", "pods 500", "pods 201", "end"]
        );
        let sequences: Vec<u64> = messages.iter().map(|m| m.sequence).collect();
        assert_eq!(sequences, [1, 2, 3, 4, 5]);
        assert!(messages[0].cluster.is_some());
        assert!(messages[1..].iter().all(|m| m.cluster.is_none()));
        let empty = snapshot_messages(Vec::new(), None);
        assert_eq!(kinds(&empty), ["start 0", "end"]);
        assert!(empty[0].cluster.is_none());
    }

    #[test]
    fn pages_stay_under_the_byte_limit() {
        // Three pods of a third of the limit and a bit: two fit a page, not three.
        let messages = snapshot_messages(pods(3, PAGE_BYTES / 3 + 1), None);
        assert_eq!(kinds(&messages), ["start 3", "pods 2", "pods 1", "end"]);
        // A pod larger than the limit still goes, alone.
        let messages = snapshot_messages(pods(2, PAGE_BYTES + 1), None);
        assert_eq!(kinds(&messages), ["start 2", "pods 1", "pods 1", "end"]);
    }

    fn ack(sequence: u64, upserted: u64, removed: u64) -> pc::InventoryAck {
        pc::InventoryAck {
            sequence,
            pods_upserted: upserted,
            pods_removed: removed,
            ..pc::InventoryAck::default()
        }
    }

    #[test]
    fn acks_add_up_and_per_pod_errors_are_kept() {
        let mut summary = SyncSummary::default();
        summary.add(&ack(1, 0, 0), 1).unwrap();
        let mut with_error = ack(2, 2, 0);
        with_error.errors.push(portcullis_proto::common::v1::ItemError {
            code: 3,
            message: "not a Pod".into(),
            field: "pods_json[2]".into(),
        });
        summary.add(&with_error, 2).unwrap();
        summary.add(&ack(3, 0, 4), 3).unwrap();
        summary.sent = 3;
        assert_eq!((summary.upserted, summary.removed), (2, 4));
        assert_eq!(summary.errors, ["pods_json[2]: not a Pod"]);
        let text = summary.render(&BTreeMap::from([("Service".to_owned(), 1)]));
        assert!(text.contains("Pods sent:        3\n"), "{text}");
        assert!(text.contains("Skipped objects:  Service (1)\n"), "{text}");
        assert!(text.ends_with("error: pods_json[2]: not a Pod\n"), "{text}");
        assert_eq!(summary.json(&BTreeMap::new())["podsRemoved"], 4);
    }

    #[test]
    fn a_resync_request_or_an_ack_out_of_order_fails() {
        let mut summary = SyncSummary::default();
        let mut resync = ack(2, 0, 0);
        resync.resync = true;
        resync.resync_reason = "the service restarted".into();
        let err = summary.add(&resync, 2).unwrap_err().to_string();
        assert!(
            err.contains("new snapshot") && err.contains("the service restarted"),
            "{err}"
        );
        let err = summary.add(&ack(3, 0, 0), 2).unwrap_err().to_string();
        assert!(err.contains("acked message 3 where 2 was due"), "{err}");
    }
}
