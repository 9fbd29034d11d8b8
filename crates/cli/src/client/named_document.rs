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
use super::{Conn, Ctx, KeyChoice, all_pages, missing};
use portcullis_proto::common::v1::PageRequest;

/// A stored document's fields as the commands show them.
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
    /// Id of the key that made the last change.
    pub author_key_id: String,
    /// When it was created.
    pub created_at: Option<Timestamp>,
    /// When it last changed.
    pub updated_at: Option<Timestamp>,
    /// The resource's own listing column, as JSON.
    pub extra_json: Value,
    /// The resource's own listing column, as a table cell.
    pub extra_cell: String,
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
                    m.insert(R::EXTRA_KEY.into(), r.extra_json.clone());
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
                    r.extra_cell.clone(),
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
