//! `portcullis dead-letter list`: events the bus refused for good (operator key).

use clap::Subcommand;
use portcullis_proto::policystore::v1 as pb;
use serde_json::{Value, json};

use super::error::ClientError;
use super::output::{Format, OutputArg, Table, print_json, print_table, time_cell, time_json};
use super::{Ctx, KeyChoice, all_pages, next_token};

/// `dead-letter` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// Lists dead letters, oldest first: outbox events the bus refused for good (too large,
    /// an invalid subject), set aside so that the other events still go out.
    List {
        /// Most dead letters to show.
        #[arg(long, default_value_t = 100, value_name = "N")]
        limit: usize,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl DeadLetterCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            DeadLetterCommand::List { .. } => "list",
        }
    }
}

/// Runs a `dead-letter` subcommand.
pub async fn run(ctx: &Ctx<'_>, command: &DeadLetterCommand) -> Result<(), ClientError> {
    match command {
        DeadLetterCommand::List { limit, out } => {
            let conn = ctx.connect(KeyChoice::Operator).await?;
            let client = conn.operator();
            let letters = all_pages(Some(*limit), |page| {
                let mut client = client.clone();
                let request = pb::ListDeadLettersRequest { page: Some(page) };
                async move {
                    let r = client.list_dead_letters(request).await?.into_inner();
                    Ok((r.dead_letters, next_token(r.page)))
                }
            })
            .await
            .map_err(|s| conn.error(s))?;
            match out.output {
                Format::Json => print_json(&Value::Array(letters.iter().map(letter_json).collect())),
                Format::Table => {
                    let mut table =
                        Table::new(&["DEAD AT", "TENANT", "TOPIC", "EVENT", "BYTES", "REASON"]).cut("REASON");
                    for d in &letters {
                        table.row(vec![
                            time_cell(d.dead_at.as_ref()),
                            d.tenant_id.clone(),
                            d.topic.clone(),
                            d.event_id.clone(),
                            d.payload_bytes.to_string(),
                            d.reason.clone(),
                        ]);
                    }
                    print_table(&table, "No dead letters.")
                }
            }
        }
    }
}

fn letter_json(d: &pb::DeadLetter) -> Value {
    json!({
        "id": d.id,
        "eventId": d.event_id,
        "tenant": d.tenant_id,
        "topic": d.topic,
        "payloadBytes": d.payload_bytes,
        "reason": d.reason,
        "created": time_json(d.created_at.as_ref()),
        "deadAt": time_json(d.dead_at.as_ref()),
    })
}
