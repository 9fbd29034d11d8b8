//! The `apply`/`get`/`list`/`delete` commands shared by the resources that are one named
//! JSON document each (rulesets, attestors); each resource supplies its gRPC calls.

use portcullis_engine::policy::FieldError;
use prost_types::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tonic::Status;

use super::document::{self, document_with_identity};
use super::error::ClientError;
use super::output::{Format, Table, print_json, print_line, print_table, render_fields, time_cell, time_json};
use super::policy::print_applied;
use super::{Conn, Ctx, KeyChoice, all_pages, missing, next_token};
use portcullis_proto::common::v1::{PageRequest, PageResponse};

/// A stored document's fields as the commands show them, in the order `list -o json` prints
/// them.
pub(super) struct Stored {
    /// Server-assigned id.
    pub id: String,
    /// The document's name.
    pub name: String,
    /// Current revision.
    pub revision: u64,
    /// The document as JSON text.
    pub document_json: String,
    /// The document's description.
    pub description: String,
    /// The resource's own listing column: as JSON, and as a table cell.
    pub extra: (Value, String),
    /// Id of the key that made the last change.
    pub author_key_id: String,
    /// When it was created.
    pub created_at: Option<Timestamp>,
    /// When it last changed.
    pub updated_at: Option<Timestamp>,
}

/// One resource kind: its names and its generated client calls.
pub(super) trait NamedDocument {
    /// The kind as messages name it (`ruleset`), also the response field name.
    const KIND: &'static str;
    /// What `list` prints when there is nothing.
    const NONE_LISTED: &'static str;
    /// The listing's own column header.
    const EXTRA_COLUMN: &'static str;
    /// The listing's own JSON key.
    const EXTRA_KEY: &'static str;
    /// The engine's document type, checked locally before `apply`.
    type Engine: DeserializeOwned;
    /// The stored record the server returns.
    type Record;
    /// The generated client.
    type Client: Clone;

    /// The engine's validation of the document.
    fn validate(parsed: &Self::Engine) -> Result<(), Vec<FieldError>>;
    /// The record's fields.
    fn stored(record: &Self::Record) -> Stored;
    /// The generated client over the connection.
    fn client(conn: &Conn) -> Self::Client;
    /// Applies: the record after the call, `created`, `changed`.
    async fn apply(
        client: Self::Client,
        document_json: String,
        expected_revision: Option<u64>,
    ) -> Result<(Option<Self::Record>, bool, bool), Status>;
    /// Gets one by name.
    async fn get(client: Self::Client, name: &str) -> Result<Option<Self::Record>, Status>;
    /// One page of the listing and the next-page token.
    async fn list(
        client: Self::Client,
        page: PageRequest,
        name_filter: String,
    ) -> Result<(Vec<Self::Record>, String), Status>;
    /// Deletes by name: the deleted id.
    async fn delete(client: Self::Client, name: &str) -> Result<String, Status>;
}

/// Every item of a listing: connects with `key`, then pages through `call` (one request a
/// page) and takes each answer's items and page with `split`. The one paging loop of the
/// CLI's `list` commands.
pub(super) async fn list_all<C, R, T, F, Fut>(
    ctx: &Ctx<'_>,
    key: KeyChoice,
    client_of: impl Fn(&Conn) -> C,
    mut call: F,
    split: impl Fn(R) -> (Vec<T>, Option<PageResponse>),
) -> Result<Vec<T>, ClientError>
where
    C: Clone,
    F: FnMut(C, PageRequest) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, Status>>,
{
    let conn = ctx.connect(key).await?;
    let client = client_of(&conn);
    all_pages(None, |page| {
        let answer = call(client.clone(), page);
        let split = &split;
        async move {
            let (items, page) = split(answer.await?.into_inner());
            Ok((items, next_token(page)))
        }
    })
    .await
    .map_err(|s| conn.error(s))
}

/// `apply -f FILE`.
pub(super) async fn apply<R: NamedDocument>(
    ctx: &Ctx<'_>,
    file: &str,
    expected_revision: Option<u64>,
    output: Format,
) -> Result<(), ClientError> {
    let doc = document::load(file)?;
    let parsed: R::Engine = document::to_engine(&doc)?;
    R::validate(&parsed).map_err(|errors| document::invalid(&doc, errors))?;
    let conn = ctx.connect(KeyChoice::Tenant).await?;
    let (record, created, changed) = R::apply(R::client(&conn), doc.json(), expected_revision)
        .await
        .map_err(|s| conn.error(s))?;
    let r = R::stored(&record.ok_or_else(missing(R::KIND))?);
    print_applied(R::KIND, &r.name, &r.id, r.revision, created, changed, output)
}

/// `get NAME`.
pub(super) async fn get<R: NamedDocument>(ctx: &Ctx<'_>, name: &str, output: Format) -> Result<(), ClientError> {
    let conn = ctx.connect(KeyChoice::Tenant).await?;
    let record = R::get(R::client(&conn), name).await.map_err(|s| conn.error(s))?;
    let r = R::stored(&record.ok_or_else(missing(R::KIND))?);
    let document = document_with_identity(&r.document_json, &r.id, r.revision)?;
    match output {
        Format::Json => print_json(&document),
        Format::Table => {
            let fields = render_fields(&[
                ("Name", r.name.clone()),
                ("Id", r.id.clone()),
                ("Revision", r.revision.to_string()),
                ("Description", r.description.clone()),
                ("Author", r.author_key_id.clone()),
                ("Created", time_cell(r.created_at.as_ref())),
                ("Updated", time_cell(r.updated_at.as_ref())),
            ]);
            let body: Value = serde_json::from_str(&r.document_json).unwrap_or(Value::Null);
            let body = serde_json::to_string_pretty(&body).unwrap_or_default();
            print_line(&format!("{fields}Document:\n{body}"))
        }
    }
}

/// `list [--filter TEXT]`.
pub(super) async fn list<R: NamedDocument>(
    ctx: &Ctx<'_>,
    filter: Option<&str>,
    output: Format,
) -> Result<(), ClientError> {
    let conn = ctx.connect(KeyChoice::Tenant).await?;
    let client = R::client(&conn);
    let name_filter = filter.map(str::to_owned).unwrap_or_default();
    let items = all_pages(None, |page| R::list(client.clone(), page, name_filter.clone()))
        .await
        .map_err(|s| conn.error(s))?;
    let items: Vec<Stored> = items.iter().map(R::stored).collect();
    match output {
        Format::Json => print_json(&Value::Array(
            items
                .iter()
                .map(|r| {
                    // Same keys, same order as each resource has always printed.
                    let mut m = Map::new();
                    m.insert("id".into(), json!(r.id));
                    m.insert("name".into(), json!(r.name));
                    m.insert("revision".into(), json!(r.revision));
                    m.insert("description".into(), json!(r.description));
                    m.insert(R::EXTRA_KEY.into(), r.extra.0.clone());
                    m.insert("author".into(), json!(r.author_key_id));
                    m.insert("created".into(), time_json(r.created_at.as_ref()));
                    m.insert("updated".into(), time_json(r.updated_at.as_ref()));
                    Value::Object(m)
                })
                .collect(),
        )),
        Format::Table => {
            let mut table =
                Table::new(&["NAME", "REVISION", R::EXTRA_COLUMN, "DESCRIPTION", "UPDATED", "ID"]).cut("DESCRIPTION");
            for r in &items {
                table.row(vec![
                    r.name.clone(),
                    r.revision.to_string(),
                    r.extra.1.clone(),
                    r.description.clone(),
                    time_cell(r.updated_at.as_ref()),
                    r.id.clone(),
                ]);
            }
            print_table(&table, R::NONE_LISTED)
        }
    }
}

/// `delete NAME`.
pub(super) async fn delete<R: NamedDocument>(ctx: &Ctx<'_>, name: &str, output: Format) -> Result<(), ClientError> {
    let conn = ctx.connect(KeyChoice::Tenant).await?;
    let id = R::delete(R::client(&conn), name).await.map_err(|s| conn.error(s))?;
    match output {
        Format::Json => print_json(&json!({"id": id, "name": name})),
        Format::Table => print_line(&format!("{} {name} deleted", R::KIND)),
    }
}

/// One named-document resource of the CLI: its `apply`/`get`/`list`/`delete` subcommands,
/// its [`NamedDocument`] calls and its `run`, from the names that differ per kind. Rulesets
/// and attestors are this one implementation.
macro_rules! named_document_cli {
    (
        $Kind:ident / $one:ident / $many:ident, what: $what:literal, engine: $engine:ty,
        extra: $extra_column:literal / $extra_key:literal, $extra:expr $(,)?
    ) => { pastey::paste! {
        #[doc = concat!("`", stringify!($one), "` subcommands.")]
        #[derive(Debug, clap::Subcommand)]
        pub enum [<$Kind Command>] {
            #[doc = concat!("Creates the ", $what, " named in the document, or updates the one of that name")]
            #[doc = "(checked locally by the engine first)."]
            Apply {
                #[doc = concat!("The ", $what, " document, JSON or YAML (`-` for standard input).")]
                #[arg(short = 'f', long = "file", value_name = "FILE")]
                file: String,
                #[doc = concat!("Refuse the change unless the ", $what, " is at this revision.")]
                #[arg(long, value_name = "REV")]
                expected_revision: Option<u64>,
                #[command(flatten)]
                out: $crate::client::output::OutputArg,
            },
            #[doc = concat!("Shows a ", $what, " (`-o json`: the document with `id` and `revision`).")]
            Get {
                #[doc = concat!("The ", $what, "'s name.")]
                name: String,
                #[command(flatten)]
                out: $crate::client::output::OutputArg,
            },
            #[doc = concat!("Lists the tenant's ", stringify!($many), ".")]
            List {
                #[doc = concat!("Only ", stringify!($many), " whose name contains this text.")]
                #[arg(long, value_name = "TEXT")]
                filter: Option<String>,
                #[command(flatten)]
                out: $crate::client::output::OutputArg,
            },
            #[doc = concat!("Deletes a ", $what, " (refused while a policy refers to it).")]
            Delete {
                #[doc = concat!("The ", $what, "'s name.")]
                name: String,
                #[command(flatten)]
                out: $crate::client::output::OutputArg,
            },
        }

        impl [<$Kind Command>] {
            /// The subcommand's name.
            pub fn verb(&self) -> &'static str {
                match self {
                    [<$Kind Command>]::Apply { .. } => "apply",
                    [<$Kind Command>]::Get { .. } => "get",
                    [<$Kind Command>]::List { .. } => "list",
                    [<$Kind Command>]::Delete { .. } => "delete",
                }
            }
        }

        #[doc = concat!("The ", stringify!($one), " resource for the shared named-document commands.")]
        struct [<$Kind s>];

        impl $crate::client::named_document::NamedDocument for [<$Kind s>] {
            const KIND: &'static str = stringify!($one);
            const NONE_LISTED: &'static str = concat!("No ", stringify!($many), ".");
            const EXTRA_COLUMN: &'static str = $extra_column;
            const EXTRA_KEY: &'static str = $extra_key;
            type Engine = $engine;
            type Record = pb::$Kind;
            type Client = pb::[<$one _service_client>]::[<$Kind ServiceClient>]<super::Svc>;

            fn validate(parsed: &$engine) -> Result<(), Vec<portcullis_engine::policy::FieldError>> {
                parsed.validate()
            }

            fn stored(r: &pb::$Kind) -> $crate::client::named_document::Stored {
                $crate::client::named_document::Stored {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    revision: r.revision,
                    document_json: r.document_json.clone(),
                    description: r.description.clone(),
                    extra: ($extra)(r),
                    author_key_id: r.author_key_id.clone(),
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                }
            }

            fn client(conn: &$crate::client::Conn) -> Self::Client {
                conn.$many()
            }

            async fn apply(
                mut client: Self::Client,
                document_json: String,
                expected_revision: Option<u64>,
            ) -> Result<(Option<pb::$Kind>, bool, bool), tonic::Status> {
                let r = client
                    .[<apply_ $one>](pb::[<Apply $Kind Request>] {
                        document_json,
                        expected_revision,
                    })
                    .await?
                    .into_inner();
                Ok((r.$one, r.created, r.changed))
            }

            async fn get(mut client: Self::Client, name: &str) -> Result<Option<pb::$Kind>, tonic::Status> {
                let r = client
                    .[<get_ $one>](pb::[<Get $Kind Request>] {
                        $one: $crate::client::by_name(name),
                    })
                    .await?
                    .into_inner();
                Ok(r.$one)
            }

            async fn list(
                mut client: Self::Client,
                page: portcullis_proto::common::v1::PageRequest,
                name_filter: String,
            ) -> Result<(Vec<pb::$Kind>, String), tonic::Status> {
                let r = client
                    .[<list_ $many>](pb::[<List $Kind s Request>] {
                        page: Some(page),
                        name_filter,
                    })
                    .await?
                    .into_inner();
                Ok((r.$many, $crate::client::next_token(r.page)))
            }

            async fn delete(mut client: Self::Client, name: &str) -> Result<String, tonic::Status> {
                let r = client
                    .[<delete_ $one>](pb::[<Delete $Kind Request>] {
                        $one: $crate::client::by_name(name),
                    })
                    .await?
                    .into_inner();
                Ok(r.id)
            }
        }

        #[doc = concat!("Runs a `", stringify!($one), "` subcommand.")]
        pub async fn run(
            ctx: &$crate::client::Ctx<'_>,
            command: &[<$Kind Command>],
        ) -> Result<(), $crate::client::error::ClientError> {
            use $crate::client::named_document as nd;
            match command {
                [<$Kind Command>]::Apply {
                    file,
                    expected_revision,
                    out,
                } => nd::apply::<[<$Kind s>]>(ctx, file, *expected_revision, out.output).await,
                [<$Kind Command>]::Get { name, out } => nd::get::<[<$Kind s>]>(ctx, name, out.output).await,
                [<$Kind Command>]::List { filter, out } => nd::list::<[<$Kind s>]>(ctx, filter.as_deref(), out.output).await,
                [<$Kind Command>]::Delete { name, out } => nd::delete::<[<$Kind s>]>(ctx, name, out.output).await,
            }
        }
    }};
}

pub(super) use named_document_cli;
