//! `agentkeysctl agent list`: the caller's (or `--owner`'s) agents.

use agentkeysd::api::dict::{Dict, get_i64, get_str, get_strs};
use clap::Args;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, Subject, daemon_error};
use crate::output::{Out, Table, dicts_to_json, format_opt_utc, join_or_dash};

#[derive(Args, Debug)]
pub struct ListArgs {}

pub async fn run(g: &Global, _args: &ListArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect(g).await?;
    let agents = client.agents().await?;
    let op = client.op("list agents", Subject::Other);
    let mut list = match client.list_owner() {
        Some(uid) => agents.list_for(uid).await,
        None => agents.list().await,
    }
    .map_err(|e| daemon_error(e, &op))?;
    list.sort_by_key(|d| field(d, "name"));
    if out.json {
        return out.json(&dicts_to_json(&list));
    }
    out.table(&table(&list))
}

fn table(list: &[Dict]) -> Table {
    let mut t = Table::new(&["ID", "NAME", "STATE", "SCOPE", "CREATED"]);
    for d in list {
        t.row(vec![
            field(d, "id"),
            field(d, "name"),
            field(d, "state"),
            join_or_dash(&get_strs(d, "scope").ok().flatten().unwrap_or_default())
                .replace(", ", ","),
            format_opt_utc(get_i64(d, "created").ok().flatten()),
        ]);
    }
    t
}

fn field(d: &Dict, key: &str) -> String {
    get_str(d, key)
        .ok()
        .flatten()
        .unwrap_or_else(|| "-".to_owned())
}
