//! `portcullis commands watch|restore|list`: the mitigation commands of the continuous
//! scanning service.
//!
//! `watch` (connector key) is what a connector does, for testing and for scripts: it opens
//! the command stream with a hello, prints each command as one JSON line (flushed as it
//! arrives), then acks it DONE. Commands are at-least-once: an id already printed in this
//! run (among the last 100,000) is acked again but not printed again. The watch ends on SIGINT/SIGTERM, after
//! `--count N` commands, when standard input is a pipe and it closes (the parent went
//! away), or when standard output is closed; a broken stream is reopened with backoff
//! (0.5 s doubling to 30 s), while a refusal (bad key, unknown cluster) ends it.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Write as _};
use std::time::Duration;

use clap::Subcommand;
use portcullis_proto::common::v1::PodKey;
use portcullis_proto::continuous::v1 as pc;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::super::output::{Format, OutputArg, Table, print_json, print_table, render_fields, time_cell};
use super::super::{Ctx, all_pages, by_name, next_token};
use super::{
    COMMAND_HEADERS, ContinuousServerArg, StateArg, command_cells, command_json, command_json_with_state, connect,
    origin_name, state_name,
};
use crate::client::error::ClientError;

/// First pause before reopening a broken stream.
const BACKOFF_START: Duration = Duration::from_millis(500);

/// Longest pause before reopening a broken stream.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Acks queued towards the service.
const ACK_QUEUE: usize = 64;

/// Command ids remembered for de-duplication: a redelivery comes soon after (a reconnect
/// resends what was not acked), so the most recent ones suffice, and memory stays bounded
/// however long the watch runs.
const SEEN_IDS: usize = 100_000;

/// The most recent `cap` ids seen, the oldest forgotten first.
#[derive(Debug)]
pub struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl RecentIds {
    /// An empty memory of at most `cap` ids.
    pub fn new(cap: usize) -> RecentIds {
        RecentIds {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Whether `id` is remembered.
    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Remembers `id`, forgetting the oldest beyond the cap.
    pub fn insert(&mut self, id: String) {
        if self.set.contains(&id) {
            return;
        }
        if self.order.len() >= self.cap
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.set.insert(id.clone());
        self.order.push_back(id);
    }
}

/// `commands` subcommands.
#[derive(Debug, Subcommand)]
pub enum CommandsCommand {
    /// Receives commands as a connector does (connector key): one JSON line each, acked DONE.
    Watch {
        /// The cluster by name (default: the connector key's own cluster).
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
        /// Stops after this many commands (each printed and acked).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        #[command(flatten)]
        server: ContinuousServerArg,
    },
    /// Lifts a pod's isolation (a restore-isolation command; editor or admin key).
    Restore {
        /// The pod's name.
        #[arg(value_name = "POD")]
        pod: String,
        /// The pod's namespace.
        #[arg(short = 'n', long, default_value = "default", value_name = "NAMESPACE")]
        namespace: String,
        /// The cluster, by name.
        #[arg(long, value_name = "NAME")]
        cluster: String,
        /// The pod's uid (default: looked up in the cluster's inventory).
        #[arg(long, value_name = "UID")]
        uid: Option<String>,
        /// Why, for the audit trail.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[command(flatten)]
        server: ContinuousServerArg,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Lists mitigation commands, newest first.
    List {
        /// Only this cluster's commands, by name.
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
        /// Only commands in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Only commands for pods of this namespace.
        #[arg(short = 'n', long, value_name = "NAMESPACE")]
        namespace: Option<String>,
        /// Only commands for this pod (needs --namespace).
        #[arg(long, value_name = "POD", requires = "namespace")]
        pod: Option<String>,
        #[command(flatten)]
        server: ContinuousServerArg,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl CommandsCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            CommandsCommand::Watch { .. } => "watch",
            CommandsCommand::Restore { .. } => "restore",
            CommandsCommand::List { .. } => "list",
        }
    }
}

/// Runs a `commands` subcommand.
pub async fn run(ctx: &Ctx<'_>, command: &CommandsCommand) -> Result<(), ClientError> {
    match command {
        CommandsCommand::Watch { cluster, count, server } => watch(ctx, cluster.as_deref(), *count, server).await,
        CommandsCommand::Restore {
            pod,
            namespace,
            cluster,
            uid,
            reason,
            server,
            out,
        } => {
            let (conn, mut client) = connect(ctx, server, true).await?;
            let uid = match uid {
                Some(uid) => uid.clone(),
                None => {
                    let found = client
                        .get_pod(pc::GetPodRequest {
                            cluster: by_name(cluster),
                            namespace: namespace.clone(),
                            name: pod.clone(),
                        })
                        .await;
                    match found {
                        Ok(r) => r.into_inner().uid,
                        // A pod isolated at runtime may not be in the inventory yet; the
                        // command then names it by namespace and name only.
                        Err(s) if s.code() == Code::NotFound => {
                            let _ = writeln!(
                                io::stderr(),
                                "portcullis: commands restore: warning: {namespace}/{pod} is not in the inventory of {cluster}; the command names it without a uid"
                            );
                            String::new()
                        }
                        Err(s) => return Err(conn.error(s)),
                    }
                }
            };
            let response = client
                .issue_command(pc::IssueCommandRequest {
                    cluster: by_name(cluster),
                    pod: Some(PodKey {
                        namespace: namespace.clone(),
                        name: pod.clone(),
                        uid,
                    }),
                    r#type: pc::CommandType::Restore as i32,
                    reason: reason.clone().unwrap_or_default(),
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            let command = response.command.ok_or_else(super::super::missing("command"))?;
            let (json, problem) = command_json_with_state(&command);
            warn(problem);
            match out.output {
                Format::Json => print_json(&Value::Object(json)),
                Format::Table => super::super::output::print(&command_fields(&command)),
            }
        }
        CommandsCommand::List {
            cluster,
            state,
            namespace,
            pod,
            server,
            out,
        } => {
            let (conn, client) = connect(ctx, server, true).await?;
            let template = pc::ListCommandsRequest {
                page: None,
                cluster: cluster.as_deref().and_then(by_name),
                state: state.map_or(pc::CommandState::Unspecified, StateArg::proto) as i32,
                namespace: namespace.clone().unwrap_or_default(),
                pod: pod.clone().unwrap_or_default(),
            };
            let commands = all_pages(None, |page| {
                let mut client = client.clone();
                let mut request = template.clone();
                request.page = Some(page);
                async move {
                    let response = client.list_commands(request).await?.into_inner();
                    Ok((response.commands, next_token(response.page)))
                }
            })
            .await
            .map_err(|s| conn.error(s))?;
            match out.output {
                Format::Json => {
                    let mut items = Vec::with_capacity(commands.len());
                    for c in &commands {
                        let (json, problem) = command_json_with_state(c);
                        warn(problem);
                        items.push(Value::Object(json));
                    }
                    print_json(&Value::Array(items))
                }
                Format::Table => print_table(&commands_table(&commands), "No commands."),
            }
        }
    }
}

/// The commands as a table under [`COMMAND_HEADERS`].
pub fn commands_table(commands: &[pc::MitigationCommand]) -> Table {
    let mut table = Table::new(&COMMAND_HEADERS).cut("REASON");
    for c in commands {
        table.row(command_cells(c));
    }
    table
}

/// One command as labelled lines.
fn command_fields(c: &pc::MitigationCommand) -> String {
    let pod = c.pod.clone().unwrap_or_default();
    render_fields(&[
        ("Id", c.command_id.clone()),
        ("Cluster", c.cluster_id.clone()),
        ("Pod", format!("{}/{}", pod.namespace, pod.name)),
        ("Uid", pod.uid),
        ("Type", super::command_type_name(c.r#type)),
        ("Origin", origin_name(c.origin)),
        ("State", state_name(c.state)),
        ("Issued", time_cell(c.issued_at.as_ref())),
        ("Reason", c.reason.clone()),
    ])
}

/// A warning about a command's content on stderr.
fn warn(problem: Option<String>) {
    if let Some(problem) = problem {
        let _ = writeln!(io::stderr(), "portcullis: commands: warning: {problem}");
    }
}

/// One command as the line `watch` prints (compact JSON, no newline).
pub fn watch_line(command: &pc::MitigationCommand) -> (String, Option<String>) {
    let (json, problem) = command_json(command);
    (Value::Object(json).to_string(), problem)
}

pub use portcullis_simulator::protocol::retryable;

/// The pause before the next attempt after `pause`: doubled, at most [`BACKOFF_MAX`].
pub fn next_backoff(pause: Duration) -> Duration {
    portcullis_simulator::protocol::next_backoff(pause, BACKOFF_MAX)
}

/// What ended one stream.
enum StreamEnd {
    /// The watch is over (count reached, signal, stdin or stdout closed).
    Done,
    /// The stream broke; reopen it.
    Broken(String),
}

/// Whether standard input is a pipe, whose closing then ends the watch. A terminal or
/// `/dev/null` never ends it.
fn stdin_is_pipe() -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    std::fs::metadata("/dev/stdin").is_ok_and(|m| m.file_type().is_fifo())
}

/// Resolves when standard input, a pipe, reaches its end; never otherwise.
async fn stdin_closed(pipe: bool) {
    if !pipe {
        return std::future::pending().await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // A blocking read on a thread of its own: tokio's stdin would hold the runtime open.
    let spawned = std::thread::Builder::new().name("stdin-watch".into()).spawn(move || {
        let mut sink = [0u8; 1024];
        let mut stdin = io::stdin().lock();
        loop {
            match io::Read::read(&mut stdin, &mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    if spawned.is_err() {
        return std::future::pending().await;
    }
    let _ = rx.await;
}

/// Writes one line and flushes it; `false` when standard output is closed.
fn emit(line: &str) -> Result<bool, ClientError> {
    let mut out = io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(ClientError::Output(e)),
    }
}

async fn watch(
    ctx: &Ctx<'_>,
    cluster: Option<&str>,
    count: Option<u64>,
    server: &ContinuousServerArg,
) -> Result<(), ClientError> {
    if count == Some(0) {
        return Ok(());
    }
    let mut seen = RecentIds::new(SEEN_IDS);
    let mut printed = 0u64;
    let mut pause = BACKOFF_START;
    let stop = async {
        tokio::select! {
            () = portcullis_kit::shutdown_signal() => {}
            () = stdin_closed(stdin_is_pipe()) => {}
        }
    };
    tokio::pin!(stop);
    loop {
        let attempt = watch_once(ctx, cluster, count, server, &mut seen, &mut printed, &mut pause);
        let end = tokio::select! {
            end = attempt => end?,
            () = &mut stop => return Ok(()),
        };
        match end {
            StreamEnd::Done => return Ok(()),
            StreamEnd::Broken(why) => {
                let _ = writeln!(
                    io::stderr(),
                    "portcullis: commands watch: {why}; reconnecting in {}",
                    super::super::duration::format_duration(pause)
                );
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = &mut stop => return Ok(()),
                }
                pause = next_backoff(pause);
            }
        }
    }
}

/// One stream: hello, then commands until it ends. A refusal is an error; a break is
/// [`StreamEnd::Broken`].
async fn watch_once(
    ctx: &Ctx<'_>,
    cluster: Option<&str>,
    count: Option<u64>,
    server: &ContinuousServerArg,
    seen: &mut RecentIds,
    printed: &mut u64,
    pause: &mut Duration,
) -> Result<StreamEnd, ClientError> {
    let step = ctx.global.timeout;
    let (conn, mut client) = match connect(ctx, server, false).await {
        Ok(c) => c,
        Err(ClientError::Connect { server, reason }) => {
            return Ok(StreamEnd::Broken(format!("cannot reach {server}: {reason}")));
        }
        Err(e) => return Err(e),
    };
    let (tx, rx) = mpsc::channel(ACK_QUEUE);
    let hello = portcullis_simulator::protocol::hello(
        cluster.and_then(by_name),
        format!("portcullis-cli {}", env!("CARGO_PKG_VERSION")),
    );
    tx.send(hello)
        .await
        .map_err(|_| ClientError::input("the command stream closed before its hello"))?;
    let opened = tokio::time::timeout(step, client.commands(ReceiverStream::new(rx))).await;
    let mut stream = match opened {
        Err(_) => return Ok(StreamEnd::Broken("the service did not open the stream in time".into())),
        Ok(Err(status)) if retryable(status.code()) => return Ok(StreamEnd::Broken(conn.error(status).to_string())),
        Ok(Err(status)) => return Err(conn.error(status)),
        Ok(Ok(response)) => response.into_inner(),
    };
    loop {
        let command = match stream.message().await {
            Ok(Some(command)) => command,
            Ok(None) => return Ok(StreamEnd::Broken("the service ended the stream".into())),
            Err(status) if retryable(status.code()) => {
                return Ok(StreamEnd::Broken(conn.error(status).to_string()));
            }
            Err(status) => return Err(conn.error(status)),
        };
        // A stream that delivers is a healthy one: the next break starts the backoff over.
        *pause = BACKOFF_START;
        if !seen.contains(&command.command_id) {
            let (line, problem) = watch_line(&command);
            warn(problem);
            if !emit(&line)? {
                // Nobody reads any more: the command stays un-acked for the next connector.
                return Ok(StreamEnd::Done);
            }
            seen.insert(command.command_id.clone());
            *printed += 1;
        }
        let ack = portcullis_simulator::protocol::done(command.command_id.clone(), String::new());
        if tokio::time::timeout(step, tx.send(ack)).await.is_err() {
            return Ok(StreamEnd::Broken("the service takes no acks".into()));
        }
        if count.is_some_and(|n| *printed >= n) {
            // Half-close, then wait (bounded) for the service to end the stream, so that the
            // last ack is on the wire before the process exits.
            drop(tx);
            let _ = tokio::time::timeout(step, async { while let Ok(Some(_)) = stream.message().await {} }).await;
            return Ok(StreamEnd::Done);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::super::tests::isolate_command;
    use super::*;

    #[test]
    fn a_watch_line_is_one_line_of_json() {
        let mut command = isolate_command();
        command.reason = "two\nlines".into();
        let (line, problem) = watch_line(&command);
        assert!(problem.is_none());
        assert!(!line.contains('\n'), "{line}");
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["id"], "cmd-1");
        assert_eq!(parsed["reason"], "two\nlines");
        assert_eq!(parsed["networkPolicy"]["spec"]["podSelector"], serde_json::json!({}));
    }

    #[test]
    fn the_commands_table_has_a_row_per_command() {
        let mut done = isolate_command();
        done.command_id = "cmd-2".into();
        done.state = pc::CommandState::Done as i32;
        let text = commands_table(&[isolate_command(), done]).render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("ID     CLUSTER  NAMESPACE  POD    TYPE     ORIGIN      STATE"));
        assert!(lines[1].contains("pending"), "{text}");
        assert!(lines[2].contains("done"), "{text}");
    }

    #[test]
    fn the_seen_ids_are_bounded_and_forget_the_oldest_first() {
        let mut seen = RecentIds::new(2);
        seen.insert("a".into());
        seen.insert("b".into());
        seen.insert("a".into());
        assert!(seen.contains("a") && seen.contains("b"));
        seen.insert("c".into());
        assert!(!seen.contains("a"), "the oldest is forgotten");
        assert!(seen.contains("b") && seen.contains("c"));
        assert_eq!(seen.order.len(), 2);
        assert_eq!(seen.set.len(), 2);
    }

    #[test]
    fn refusals_end_the_watch_and_breaks_are_retried_with_growing_pauses() {
        assert!(retryable(Code::Unavailable));
        assert!(retryable(Code::Cancelled));
        assert!(!retryable(Code::Unauthenticated));
        assert!(!retryable(Code::PermissionDenied));
        assert!(!retryable(Code::NotFound));
        assert!(!retryable(Code::InvalidArgument));
        assert!(!retryable(Code::Aborted), "a replaced stream is not taken back");
        let mut pause = BACKOFF_START;
        let mut pauses = Vec::new();
        for _ in 0..8 {
            pauses.push(pause.as_millis());
            pause = next_backoff(pause);
        }
        assert_eq!(pauses, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    }
}
