//! `portcullis ruleset ...`: runtime rulesets, by name.

use clap::Subcommand;
use portcullis_engine::policy::FieldError;
use portcullis_engine::runtime::Ruleset as EngineDocument;
use portcullis_proto::common::v1::PageRequest;
use portcullis_proto::policystore::v1 as pb;
use serde_json::json;
use tonic::Status;

use super::error::ClientError;
use super::named_document::{self, NamedDocument, Stored};
use super::output::OutputArg;
use super::{Conn, Ctx, by_name, next_token};

/// `ruleset` subcommands.
#[derive(Debug, Subcommand)]
pub enum RulesetCommand {
    /// Creates the runtime ruleset named in the document, or updates the one of that name
    /// (checked locally by the engine first).
    Apply {
        /// The runtime ruleset document, JSON or YAML (`-` for standard input).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
        /// Refuse the change unless the runtime ruleset is at this revision.
        #[arg(long, value_name = "REV")]
        expected_revision: Option<u64>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Shows a runtime ruleset (`-o json`: the document with `id` and `revision`).
    Get {
        /// The runtime ruleset's name.
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Lists the tenant's rulesets.
    List {
        /// Only rulesets whose name contains this text.
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Deletes a runtime ruleset (refused while a policy refers to it).
    Delete {
        /// The runtime ruleset's name.
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl RulesetCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            RulesetCommand::Apply { .. } => "apply",
            RulesetCommand::Get { .. } => "get",
            RulesetCommand::List { .. } => "list",
            RulesetCommand::Delete { .. } => "delete",
        }
    }
}

/// The ruleset resource for the shared named-document commands.
struct Rulesets;

impl NamedDocument for Rulesets {
    const KIND: &'static str = "ruleset";
    const NONE_LISTED: &'static str = "No rulesets.";
    const EXTRA_COLUMN: &'static str = "RULES";
    const EXTRA_KEY: &'static str = "rules";
    type Engine = EngineDocument;
    type Record = pb::Ruleset;
    type Client = pb::ruleset_service_client::RulesetServiceClient<super::Svc>;

    fn validate(parsed: &EngineDocument) -> Result<(), Vec<FieldError>> {
        parsed.validate()
    }

    fn stored(r: &pb::Ruleset) -> Stored {
        Stored {
            id: r.id.clone(),
            name: r.name.clone(),
            revision: r.revision,
            document_json: r.document_json.clone(),
            description: r.description.clone(),
            author_key_id: r.author_key_id.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            extra_json: json!(r.rule_count),
            extra_cell: r.rule_count.to_string(),
        }
    }

    fn client(conn: &Conn) -> Self::Client {
        conn.rulesets()
    }

    async fn apply(
        mut client: Self::Client,
        document_json: String,
        expected_revision: Option<u64>,
    ) -> Result<(Option<pb::Ruleset>, bool, bool), Status> {
        let r = client
            .apply_ruleset(pb::ApplyRulesetRequest {
                document_json,
                expected_revision,
            })
            .await?
            .into_inner();
        Ok((r.ruleset, r.created, r.changed))
    }

    async fn get(mut client: Self::Client, name: &str) -> Result<Option<pb::Ruleset>, Status> {
        let r = client
            .get_ruleset(pb::GetRulesetRequest { ruleset: by_name(name) })
            .await?
            .into_inner();
        Ok(r.ruleset)
    }

    async fn list(
        mut client: Self::Client,
        page: PageRequest,
        name_filter: String,
    ) -> Result<(Vec<pb::Ruleset>, String), Status> {
        let r = client
            .list_rulesets(pb::ListRulesetsRequest {
                page: Some(page),
                name_filter,
            })
            .await?
            .into_inner();
        Ok((r.rulesets, next_token(r.page)))
    }

    async fn delete(mut client: Self::Client, name: &str) -> Result<String, Status> {
        let r = client
            .delete_ruleset(pb::DeleteRulesetRequest { ruleset: by_name(name) })
            .await?
            .into_inner();
        Ok(r.id)
    }
}

/// Runs a `ruleset` subcommand.
pub async fn run(ctx: &Ctx<'_>, command: &RulesetCommand) -> Result<(), ClientError> {
    match command {
        RulesetCommand::Apply {
            file,
            expected_revision,
            out,
        } => named_document::apply::<Rulesets>(ctx, file, *expected_revision, out.output).await,
        RulesetCommand::Get { name, out } => named_document::get::<Rulesets>(ctx, name, out.output).await,
        RulesetCommand::List { filter, out } => {
            named_document::list::<Rulesets>(ctx, filter.as_deref(), out.output).await
        }
        RulesetCommand::Delete { name, out } => named_document::delete::<Rulesets>(ctx, name, out.output).await,
    }
}
