//! `portcullis attestor ...`: attestors, by name.

use clap::Subcommand;
use portcullis_engine::attestor::Attestor as EngineDocument;
use portcullis_engine::policy::FieldError;
use portcullis_proto::common::v1::PageRequest;
use portcullis_proto::policystore::v1 as pb;
use serde_json::json;
use tonic::Status;

use super::error::ClientError;
use super::named_document::{self, NamedDocument, Stored};
use super::output::OutputArg;
use super::{Conn, Ctx, by_name, next_token};

/// `attestor` subcommands.
#[derive(Debug, Subcommand)]
pub enum AttestorCommand {
    /// Creates the attestor named in the document, or updates the one of that name
    /// (checked locally by the engine first).
    Apply {
        /// The attestor document, JSON or YAML (`-` for standard input).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
        /// Refuse the change unless the attestor is at this revision.
        #[arg(long, value_name = "REV")]
        expected_revision: Option<u64>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Shows a attestor (`-o json`: the document with `id` and `revision`).
    Get {
        /// The attestor's name.
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Lists the tenant's attestors.
    List {
        /// Only attestors whose name contains this text.
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Deletes a attestor (refused while a policy refers to it).
    Delete {
        /// The attestor's name.
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl AttestorCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            AttestorCommand::Apply { .. } => "apply",
            AttestorCommand::Get { .. } => "get",
            AttestorCommand::List { .. } => "list",
            AttestorCommand::Delete { .. } => "delete",
        }
    }
}

/// The attestor resource for the shared named-document commands.
struct Attestors;

impl NamedDocument for Attestors {
    const KIND: &'static str = "attestor";
    const NONE_LISTED: &'static str = "No attestors.";
    const EXTRA_COLUMN: &'static str = "TYPE";
    const EXTRA_KEY: &'static str = "type";
    type Engine = EngineDocument;
    type Record = pb::Attestor;
    type Client = pb::attestor_service_client::AttestorServiceClient<super::Svc>;

    fn validate(parsed: &EngineDocument) -> Result<(), Vec<FieldError>> {
        parsed.validate()
    }

    fn stored(r: &pb::Attestor) -> Stored {
        Stored {
            id: r.id.clone(),
            name: r.name.clone(),
            revision: r.revision,
            document_json: r.document_json.clone(),
            description: r.description.clone(),
            author_key_id: r.author_key_id.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            extra_json: json!(r.attestor_type),
            extra_cell: r.attestor_type.clone(),
        }
    }

    fn client(conn: &Conn) -> Self::Client {
        conn.attestors()
    }

    async fn apply(
        mut client: Self::Client,
        document_json: String,
        expected_revision: Option<u64>,
    ) -> Result<(Option<pb::Attestor>, bool, bool), Status> {
        let r = client
            .apply_attestor(pb::ApplyAttestorRequest {
                document_json,
                expected_revision,
            })
            .await?
            .into_inner();
        Ok((r.attestor, r.created, r.changed))
    }

    async fn get(mut client: Self::Client, name: &str) -> Result<Option<pb::Attestor>, Status> {
        let r = client
            .get_attestor(pb::GetAttestorRequest {
                attestor: by_name(name),
            })
            .await?
            .into_inner();
        Ok(r.attestor)
    }

    async fn list(
        mut client: Self::Client,
        page: PageRequest,
        name_filter: String,
    ) -> Result<(Vec<pb::Attestor>, String), Status> {
        let r = client
            .list_attestors(pb::ListAttestorsRequest {
                page: Some(page),
                name_filter,
            })
            .await?
            .into_inner();
        Ok((r.attestors, next_token(r.page)))
    }

    async fn delete(mut client: Self::Client, name: &str) -> Result<String, Status> {
        let r = client
            .delete_attestor(pb::DeleteAttestorRequest {
                attestor: by_name(name),
            })
            .await?
            .into_inner();
        Ok(r.id)
    }
}

/// Runs a `attestor` subcommand.
pub async fn run(ctx: &Ctx<'_>, command: &AttestorCommand) -> Result<(), ClientError> {
    match command {
        AttestorCommand::Apply {
            file,
            expected_revision,
            out,
        } => named_document::apply::<Attestors>(ctx, file, *expected_revision, out.output).await,
        AttestorCommand::Get { name, out } => named_document::get::<Attestors>(ctx, name, out.output).await,
        AttestorCommand::List { filter, out } => {
            named_document::list::<Attestors>(ctx, filter.as_deref(), out.output).await
        }
        AttestorCommand::Delete { name, out } => named_document::delete::<Attestors>(ctx, name, out.output).await,
    }
}
