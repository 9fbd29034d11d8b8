//! The client commands: `policy`, `ruleset`, `attestor`, `cluster`, `scan`, `tenant`, `key`,
//! `audit` and `dead-letter`, talking gRPC to a running server (`portcullis up` or the policy store),
//! and `inventory`, `findings` and `commands`, talking to the continuous scanning service.
//!
//! Every resource is addressed by name. Exit status 0 on success, 2 on any error, with one
//! line per problem on stderr: `portcullis: <command>: <what>`. Secrets that a command
//! creates (connector keys, admin keys, API keys) are printed alone on stdout so that a
//! script can capture them.

mod attestor;
mod audit;
mod cluster;
mod connection;
mod continuous;
mod dead_letter;
mod document;
mod duration;
mod error;
mod exceptions;
pub mod health;
mod key;
mod named_document;
mod output;
mod policy;
mod registry;
pub mod review;
mod ruleset;
mod scan;
pub mod simulate;
mod telemetry;
mod tenant;
pub mod verify;

use std::collections::HashSet;
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use portcullis_proto::common::v1::{PageRequest, ResourceRef, resource_ref};
use portcullis_proto::policystore::v1 as pb;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use self::connection::{BearerAuth, parse_server};
use self::error::ClientError;
use crate::ExitStatus;

/// Largest response the client accepts (policy listings with documents can be large).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Items asked for per page when listing everything.
const PAGE_SIZE: u32 = 500;

/// The connection flags, accepted before or after any subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Server: `http://HOST:PORT`, `https://HOST:PORT`, or `HOST:PORT` (http).
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_SERVER",
        default_value = "http://127.0.0.1:50051",
        value_name = "URL"
    )]
    pub server: String,
    /// API key of the tenant (admin, editor or viewer).
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// Operator key; when set, what the `tenant` and `dead-letter` commands use.
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_OPERATOR_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub operator_key: Option<String>,
    /// CA certificate(s), PEM, to trust for an https server (e.g. a self-signed one).
    #[arg(long, global = true, env = "PORTCULLIS_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Sends keys over plain-text `http://` to a server off this host (refused otherwise:
    /// anyone on the path could read the key). Only where the network encrypts on its own.
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Deadline of every call to the server, e.g. `30s`, `2m`.
    #[arg(long, global = true, default_value = "30s", value_name = "DURATION", value_parser = duration::parse_timeout)]
    pub timeout: Duration,
}

/// The client subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Manages protection policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Manages runtime rulesets.
    #[command(subcommand)]
    Ruleset(ruleset::RulesetCommand),
    /// Manages attestors (the keys image signatures are verified with).
    #[command(subcommand)]
    Attestor(attestor::AttestorCommand),
    /// Registers clusters, assigns policies, changes settings, rotates connector keys.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Uploads image scan results.
    #[command(subcommand)]
    Scan(scan::ScanCommand),
    /// Manages tenants (operator key).
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Manages the tenant's API keys (admin key).
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Reads the tenant's audit log (admin key).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Lists events the bus refused for good (operator key).
    #[command(subcommand)]
    DeadLetter(dead_letter::DeadLetterCommand),
    /// Sends a cluster's pods to the continuous scanning service (connector key).
    #[command(subcommand)]
    Inventory(continuous::inventory::InventoryCommand),
    /// Lists the continuous scanning service's findings.
    #[command(subcommand)]
    Findings(continuous::findings::FindingsCommand),
    /// Receives, restores and lists mitigation commands.
    #[command(subcommand)]
    Commands(continuous::commands::CommandsCommand),
    /// Sends runtime detections to the telemetry service (connector key).
    #[command(subcommand)]
    Runtime(telemetry::RuntimeCommand),
    /// Searches the tenant's security events.
    #[command(subcommand)]
    Events(telemetry::EventsCommand),
    /// Lists, shows, acknowledges and closes correlated alerts.
    #[command(subcommand)]
    Alerts(telemetry::AlertsCommand),
    /// Shows the clusters' risk scores (the sum over open alerts by severity).
    Risk(telemetry::RiskArgs),
}

impl ClientCommand {
    /// The command as the user typed it, e.g. `policy apply`, for error lines.
    fn what(&self) -> String {
        let (group, verb) = match self {
            ClientCommand::Policy(c) => ("policy", c.verb()),
            ClientCommand::Ruleset(c) => ("ruleset", c.verb()),
            ClientCommand::Attestor(c) => ("attestor", c.verb()),
            ClientCommand::Cluster(c) => ("cluster", c.verb()),
            ClientCommand::Scan(c) => ("scan", c.verb()),
            ClientCommand::Tenant(c) => ("tenant", c.verb()),
            ClientCommand::Key(c) => ("key", c.verb()),
            ClientCommand::Audit(c) => ("audit", c.verb()),
            ClientCommand::DeadLetter(c) => ("dead-letter", c.verb()),
            ClientCommand::Inventory(c) => ("inventory", c.verb()),
            ClientCommand::Findings(c) => ("findings", c.verb()),
            ClientCommand::Commands(c) => ("commands", c.verb()),
            ClientCommand::Runtime(c) => ("runtime", c.verb()),
            ClientCommand::Events(c) => ("events", c.verb()),
            ClientCommand::Alerts(c) => ("alerts", c.verb()),
            ClientCommand::Risk(_) => ("risk", ""),
        };
        format!("{group} {verb}").trim_end().to_owned()
    }
}

/// Runs a client command on a current-thread runtime; errors are printed here.
pub fn run(global: &GlobalArgs, command: &ClientCommand) -> ExitStatus {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::input(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| {
            let ctx = Ctx { global };
            runtime.block_on(dispatch(&ctx, command))
        });
    match result {
        Ok(()) => ExitStatus::Ok,
        Err(error) => {
            let what = command.what();
            let mut stderr = std::io::stderr().lock();
            for line in error.lines() {
                let _ = writeln!(stderr, "portcullis: {what}: {line}");
            }
            ExitStatus::Invalid
        }
    }
}

async fn dispatch(ctx: &Ctx<'_>, command: &ClientCommand) -> Result<(), ClientError> {
    match command {
        ClientCommand::Policy(c) => policy::run(ctx, c).await,
        ClientCommand::Ruleset(c) => ruleset::run(ctx, c).await,
        ClientCommand::Attestor(c) => attestor::run(ctx, c).await,
        ClientCommand::Cluster(c) => cluster::run(ctx, c).await,
        ClientCommand::Scan(c) => scan::run(ctx, c).await,
        ClientCommand::Tenant(c) => tenant::run(ctx, c).await,
        ClientCommand::Key(c) => key::run(ctx, c).await,
        ClientCommand::Audit(c) => audit::run(ctx, c).await,
        ClientCommand::DeadLetter(c) => dead_letter::run(ctx, c).await,
        ClientCommand::Inventory(c) => continuous::inventory::run(ctx, c).await,
        ClientCommand::Findings(c) => continuous::findings::run(ctx, c).await,
        ClientCommand::Commands(c) => continuous::commands::run(ctx, c).await,
        ClientCommand::Runtime(c) => telemetry::run_runtime(ctx, c).await,
        ClientCommand::Events(c) => telemetry::run_events(ctx, c).await,
        ClientCommand::Alerts(c) => telemetry::run_alerts(ctx, c).await,
        ClientCommand::Risk(c) => telemetry::run_risk(ctx, c).await,
    }
}

/// Which key a command authenticates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyChoice {
    /// The tenant's API key.
    Tenant,
    /// The operator key when set, else the API key (the `tenant` and `dead-letter` commands).
    Operator,
}

/// What a command needs to reach the server.
struct Ctx<'a> {
    global: &'a GlobalArgs,
}

impl Ctx<'_> {
    /// Connects with the chosen key. Local checks (URL, key) come before any dialing.
    async fn connect(&self, choice: KeyChoice) -> Result<Conn, ClientError> {
        self.connect_to(&self.global.server, choice, true).await
    }

    /// Connects to `server` (a URL as `--server` takes it) with the chosen key; without
    /// `deadline`, calls carry no `grpc-timeout` (long-lived streams bound their own steps).
    async fn connect_to(&self, server: &str, choice: KeyChoice, deadline: bool) -> Result<Conn, ClientError> {
        let server = parse_server(server).map_err(ClientError::Input)?;
        let auth = if deadline {
            self.auth(choice)?
        } else {
            let (key, flag) = self.key(choice)?;
            BearerAuth::without_deadline(key, flag)?
        };
        let channel = connection::connect(
            &server,
            self.global.ca_cert.as_deref(),
            self.global.insecure,
            self.global.timeout,
        )
        .await?;
        Ok(Conn {
            channel,
            auth,
            timeout: self.global.timeout,
        })
    }

    fn auth(&self, choice: KeyChoice) -> Result<BearerAuth, ClientError> {
        let (key, flag) = self.key(choice)?;
        BearerAuth::new(key, flag, self.global.timeout)
    }

    /// The key the command authenticates with, and the flag it came from.
    fn key(&self, choice: KeyChoice) -> Result<(&str, &'static str), ClientError> {
        let operator = self.global.operator_key.as_deref().filter(|k| !k.trim().is_empty());
        let api = self.global.api_key.as_deref().filter(|k| !k.trim().is_empty());
        match (choice, operator, api) {
            (KeyChoice::Operator, Some(key), _) => Ok((key, "--operator-key")),
            (_, _, Some(key)) => Ok((key, "--api-key")),
            (KeyChoice::Operator, None, None) => Err(ClientError::input(
                "no key: set --operator-key or PORTCULLIS_OPERATOR_KEY",
            )),
            (KeyChoice::Tenant, _, None) => Err(ClientError::input("no API key: set --api-key or PORTCULLIS_API_KEY")),
        }
    }
}

/// The intercepted channel every generated client runs on.
type Svc = InterceptedService<Channel, BearerAuth>;

/// An open connection.
struct Conn {
    channel: Channel,
    auth: BearerAuth,
    timeout: Duration,
}

/// A generated client over the connection, with the larger response limit.
macro_rules! client_fn {
    ($fn_name:ident, $module:ident :: $client:ident) => {
        fn $fn_name(&self) -> pb::$module::$client<Svc> {
            pb::$module::$client::with_interceptor(self.channel.clone(), self.auth.clone())
                .max_decoding_message_size(MAX_MESSAGE)
        }
    };
}

impl Conn {
    client_fn!(policies, policy_service_client::PolicyServiceClient);
    client_fn!(rulesets, ruleset_service_client::RulesetServiceClient);
    client_fn!(attestors, attestor_service_client::AttestorServiceClient);
    client_fn!(clusters, cluster_service_client::ClusterServiceClient);
    client_fn!(scans, scan_result_service_client::ScanResultServiceClient);
    client_fn!(tenants, tenant_service_client::TenantServiceClient);
    client_fn!(auth, auth_service_client::AuthServiceClient);
    client_fn!(audit, audit_service_client::AuditServiceClient);
    client_fn!(operator, operator_service_client::OperatorServiceClient);

    /// A failed call as a client error.
    fn error(&self, status: Status) -> ClientError {
        ClientError::Rpc {
            status: Box::new(status),
            timeout: self.timeout,
        }
    }
}

/// A reference to a resource by name.
fn by_name(name: &str) -> Option<ResourceRef> {
    Some(ResourceRef {
        r#ref: Some(resource_ref::Ref::Name(name.to_owned())),
    })
}

/// The error for a response that lacks a field the proto promises.
fn missing(field: &'static str) -> impl FnOnce() -> ClientError {
    move || ClientError::input(format!("the server's answer has no {field}"))
}

/// Fetches pages until the last one, or until `limit` items. `fetch` gets the page request
/// and returns the page's items and its next-page token. A server that repeats a token is
/// an error rather than an endless loop.
async fn all_pages<T, F, Fut>(limit: Option<usize>, mut fetch: F) -> Result<Vec<T>, Status>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), Status>>,
{
    let mut items = Vec::new();
    let mut token = String::new();
    let mut seen = HashSet::new();
    loop {
        let wanted = limit.map_or(PAGE_SIZE as usize, |l| l.saturating_sub(items.len()));
        let page_size = u32::try_from(wanted).unwrap_or(PAGE_SIZE).min(PAGE_SIZE);
        let (mut batch, next) = fetch(PageRequest {
            page_size,
            page_token: token.clone(),
        })
        .await?;
        items.append(&mut batch);
        if let Some(limit) = limit
            && items.len() >= limit
        {
            items.truncate(limit);
            break;
        }
        if next.is_empty() {
            break;
        }
        if !seen.insert(next.clone()) {
            return Err(Status::internal("the server repeated a page token; listing stopped"));
        }
        token = next;
    }
    Ok(items)
}

/// The next-page token of a response's paging, empty when there is none.
fn next_token(page: Option<portcullis_proto::common::v1::PageResponse>) -> String {
    page.map(|p| p.next_page_token).unwrap_or_default()
}

/// Lower-case names of the shared enums, as the documents and flags spell them.
mod names {
    use portcullis_proto::common::v1::{FailureMode, Role, ScanType, Severity};

    /// `admin`, `editor`, ...; empty when unspecified.
    pub fn role(value: i32) -> String {
        match Role::try_from(value) {
            Ok(Role::Admin) => "admin".into(),
            Ok(Role::Editor) => "editor".into(),
            Ok(Role::Viewer) => "viewer".into(),
            Ok(Role::Connector) => "connector".into(),
            Ok(Role::Unspecified) => String::new(),
            Err(_) => format!("role {value}"),
        }
    }

    /// `fail-open` or `fail-closed`; empty when unspecified.
    pub fn failure_mode(value: i32) -> String {
        match FailureMode::try_from(value) {
            Ok(FailureMode::FailOpen) => "fail-open".into(),
            Ok(FailureMode::FailClosed) => "fail-closed".into(),
            Ok(FailureMode::Unspecified) => String::new(),
            Err(_) => format!("failure mode {value}"),
        }
    }

    /// `vulnerability`, `malware` or `secret`.
    pub fn scan_type(value: i32) -> String {
        match ScanType::try_from(value) {
            Ok(ScanType::Vulnerability) => "vulnerability".into(),
            Ok(ScanType::Malware) => "malware".into(),
            Ok(ScanType::Secret) => "secret".into(),
            Ok(ScanType::Unspecified) => String::new(),
            Err(_) => format!("scan type {value}"),
        }
    }

    /// `critical`, `high`, ...; empty when unspecified (no findings).
    pub fn severity(value: i32) -> String {
        match Severity::try_from(value) {
            Ok(Severity::Unspecified) => String::new(),
            Ok(s) => s.as_str_name().trim_start_matches("SEVERITY_").to_ascii_lowercase(),
            Err(_) => format!("severity {value}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// A fake server listing of `total` items, `page_size` (capped at 3) a page.
    fn fake_pages(
        total: usize,
        log: &RefCell<Vec<PageRequest>>,
    ) -> impl FnMut(PageRequest) -> std::future::Ready<Result<(Vec<usize>, String), Status>> + '_ {
        move |page: PageRequest| {
            log.borrow_mut().push(page.clone());
            let start: usize = if page.page_token.is_empty() {
                0
            } else {
                page.page_token.parse().unwrap()
            };
            let end = (start + (page.page_size as usize).min(3)).min(total);
            let next = if end < total { end.to_string() } else { String::new() };
            std::future::ready(Ok(((start..end).collect(), next)))
        }
    }

    #[test]
    fn every_page_is_fetched_in_order() {
        let log = RefCell::new(Vec::new());
        let items = block_on(all_pages(None, fake_pages(8, &log))).unwrap();
        assert_eq!(items, (0..8).collect::<Vec<_>>());
        let tokens: Vec<String> = log.borrow().iter().map(|p| p.page_token.clone()).collect();
        assert_eq!(tokens, ["", "3", "6"]);
    }

    #[test]
    fn a_limit_stops_early_and_asks_for_no_more_than_it_needs() {
        let log = RefCell::new(Vec::new());
        let items = block_on(all_pages(Some(4), fake_pages(100, &log))).unwrap();
        assert_eq!(items, vec![0, 1, 2, 3]);
        let sizes: Vec<u32> = log.borrow().iter().map(|p| p.page_size).collect();
        assert_eq!(sizes, [4, 1]);
    }

    #[test]
    fn a_repeated_page_token_is_an_error_not_a_loop() {
        let result = block_on(all_pages(None, |_page: PageRequest| {
            std::future::ready(Ok((vec![1], "same".to_owned())))
        }));
        assert_eq!(result.unwrap_err().code(), tonic::Code::Internal);
    }

    fn global(api: Option<&str>, operator: Option<&str>) -> GlobalArgs {
        GlobalArgs {
            server: "http://127.0.0.1:1".into(),
            api_key: api.map(str::to_owned),
            operator_key: operator.map(str::to_owned),
            ca_cert: None,
            insecure: false,
            timeout: Duration::from_secs(1),
        }
    }

    fn header(auth: BearerAuth) -> String {
        use tonic::service::Interceptor as _;
        let mut auth = auth;
        let request = auth.call(tonic::Request::new(())).unwrap();
        request
            .metadata()
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn tenant_commands_prefer_the_operator_key() {
        let both = global(Some("api"), Some("op"));
        let ctx = Ctx { global: &both };
        assert_eq!(header(ctx.auth(KeyChoice::Operator).unwrap()), "Bearer op");
        assert_eq!(header(ctx.auth(KeyChoice::Tenant).unwrap()), "Bearer api");
        let api_only = global(Some("api"), None);
        let ctx = Ctx { global: &api_only };
        assert_eq!(header(ctx.auth(KeyChoice::Operator).unwrap()), "Bearer api");
    }

    #[test]
    fn a_missing_key_says_which_flag_to_set() {
        let operator_only = global(None, Some("op"));
        let ctx = Ctx { global: &operator_only };
        let err = ctx.auth(KeyChoice::Tenant).unwrap_err();
        assert!(err.to_string().contains("--api-key"), "{err}");
        let none = global(Some("  "), None);
        let ctx = Ctx { global: &none };
        assert!(
            ctx.auth(KeyChoice::Operator)
                .unwrap_err()
                .to_string()
                .contains("--operator-key")
        );
    }

    #[test]
    fn an_unreachable_server_is_one_connect_error() {
        // Bind then drop a port so that nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut args = global(Some("k"), None);
        args.server = format!("127.0.0.1:{port}");
        let ctx = Ctx { global: &args };
        let err = block_on(ctx.connect(KeyChoice::Tenant)).err().unwrap();
        let lines = err.lines();
        assert_eq!(lines.len(), 1);
        assert!(
            lines
                .first()
                .unwrap()
                .starts_with(&format!("cannot reach http://127.0.0.1:{port}")),
            "{lines:?}"
        );
    }

    fn parse(args: &[&str]) -> Result<crate::Cli, clap::Error> {
        use clap::Parser as _;
        crate::Cli::try_parse_from(std::iter::once("portcullis").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory as _;
        crate::Cli::command().debug_assert();
    }

    #[test]
    fn connection_flags_go_before_or_after_the_subcommand() {
        for args in [
            &["--server", "h:1", "--timeout", "5s", "policy", "list"][..],
            &["policy", "list", "--server", "h:1", "--timeout", "5s"][..],
        ] {
            let cli = parse(args).unwrap();
            assert_eq!(cli.client.server, "h:1");
            assert_eq!(cli.client.timeout, Duration::from_secs(5));
            assert!(matches!(
                cli.command,
                crate::Command::Client(ClientCommand::Policy(policy::PolicyCommand::List { .. }))
            ));
        }
        assert!(parse(&["--timeout", "soon", "policy", "list"]).is_err());
    }

    #[test]
    fn client_commands_default_to_tables_and_eval_validate_to_json() {
        use crate::report::OutputFormat;
        let cli = parse(&["policy", "get", "prod"]).unwrap();
        let crate::Command::Client(ClientCommand::Policy(policy::PolicyCommand::Get { name, out })) = cli.command
        else {
            panic!("not policy get")
        };
        assert_eq!((name.as_str(), out.output), ("prod", output::Format::Table));
        let cli = parse(&["policy", "history", "prod", "-o", "json"]).unwrap();
        let crate::Command::Client(ClientCommand::Policy(policy::PolicyCommand::History { out, .. })) = cli.command
        else {
            panic!("not policy history")
        };
        assert_eq!(out.output, output::Format::Json);
        let cli = parse(&["validate", "p.yaml"]).unwrap();
        let crate::Command::Validate(args) = cli.command else {
            panic!("not validate")
        };
        assert_eq!(args.output, OutputFormat::Json);
    }

    #[test]
    fn repeated_flags_and_exclusive_flags() {
        let cli = parse(&[
            "cluster",
            "settings",
            "c",
            "--exclude-namespace",
            "a",
            "--exclude-namespace",
            "b",
        ])
        .unwrap();
        let crate::Command::Client(ClientCommand::Cluster(cluster::ClusterCommand::Settings {
            exclude_namespaces,
            ..
        })) = cli.command
        else {
            panic!("not cluster settings")
        };
        assert_eq!(exclude_namespaces, ["a", "b"]);
        assert!(parse(&["cluster", "assign", "c"]).is_err());
        assert!(parse(&["cluster", "assign", "c", "--policy", "p", "--none"]).is_err());
        assert!(parse(&["cluster", "rotate-key", "c", "--grace", "1x"]).is_err());
        assert!(parse(&["key", "create", "--role", "root"]).is_err());
        assert!(parse(&["policy", "duplicate", "src", "--name", "copy"]).is_ok());
    }

    #[test]
    fn a_registry_password_comes_only_from_standard_input() {
        let set = ["cluster", "registry", "set", "c", "ghcr.io", "--username", "u"];
        assert!(parse(&[&set[..], &["--password-stdin"]].concat()).is_ok());
        // Without the flag, and with a password on the command line: refused by the parser.
        assert!(parse(&set).is_err());
        assert!(parse(&[&set[..], &["--password", "pw"]].concat()).is_err());
        let token = ["cluster", "registry", "set", "c", "ghcr.io", "--identity-token-stdin"];
        assert!(parse(&token).is_ok());
        assert!(parse(&[&token[..], &["--username", "u"]].concat()).is_err());
        assert!(parse(&[&set[..2], &["set", "c", "ghcr.io", "--password-stdin"]].concat()).is_err());
        assert!(parse(&["cluster", "registry", "list", "c", "-o", "json"]).is_ok());
        assert!(parse(&["cluster", "registry", "delete", "c"]).is_err());
    }

    #[test]
    fn enum_names_are_lower_case() {
        use portcullis_proto::common::v1::{FailureMode, Role, ScanType, Severity};
        assert_eq!(names::role(Role::Connector as i32), "connector");
        assert_eq!(names::failure_mode(FailureMode::FailClosed as i32), "fail-closed");
        assert_eq!(names::scan_type(ScanType::Secret as i32), "secret");
        assert_eq!(names::severity(Severity::Critical as i32), "critical");
        assert_eq!(names::severity(Severity::Unspecified as i32), "");
        assert_eq!(names::role(99), "role 99");
    }
}
