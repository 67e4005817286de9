//! `agentkeysctl list`: the caller's (or `--owner`'s) credentials, metadata only.

use agentkeysd::api::dict::{Dict, get_i64, get_u32};
use clap::Args;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, Subject, daemon_error};
use crate::output::{Out, Table, dicts_to_json, format_opt_utc, text};

#[derive(Args, Debug)]
pub struct ListArgs {}

pub async fn run(g: &Global, _args: &ListArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect(g).await?;
    let creds = client.credentials().await?;
    let op = client.op("list credentials", Subject::Other);
    let mut list = match client.list_owner() {
        Some(uid) => creds.list_for(uid).await,
        None => creds.list().await,
    }
    .map_err(|e| daemon_error(e, &op))?;
    list.sort_by_key(|d| text(d, "name"));
    if out.json {
        return out.json(&dicts_to_json(&list));
    }
    out.table(&table(&list))
}

fn table(list: &[Dict]) -> Table {
    let mut t = Table::new(&["NAME", "ENV", "LAST4", "VERSION", "UPDATED", "EXPIRES"]);
    for d in list {
        t.row(vec![
            text(d, "name"),
            text(d, "env"),
            text(d, "last4"),
            get_u32(d, "version")
                .ok()
                .flatten()
                .map_or_else(|| "-".to_owned(), |v| v.to_string()),
            format_opt_utc(get_i64(d, "updated").ok().flatten()),
            format_opt_utc(get_i64(d, "expires").ok().flatten()),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use agentkeysd::api::dict::DictBuilder;

    use super::*;

    #[test]
    fn the_table_shows_metadata_with_utc_times() {
        let d = DictBuilder::new()
            .str("name", "github")
            .u32("owner", 1000)
            .str("env", "GITHUB_TOKEN")
            .str("last4", "x9Qz")
            .u32("version", 2)
            .i64("created", 0)
            .i64("updated", 1_795_257_727)
            .build();
        let text = table(&[d]).render();
        assert_eq!(
            text,
            "NAME    ENV           LAST4  VERSION  UPDATED                  EXPIRES\n\
             github  GITHUB_TOKEN  x9Qz   2        2026-11-21 10:42:07 UTC  -\n"
        );
    }
}
