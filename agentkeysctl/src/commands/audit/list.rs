//! `agentkeysctl audit list`: audit rows, oldest first. Owners see rows about their own
//! objects; root sees its own, another owner's (`--owner`) or everyone's (`--all`).

use std::collections::HashMap;

use agentkeysd::api::dict::{Dict, get_i64, get_str, get_u32};
use clap::Args;
use zbus::Variant;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, Exit, Subject, daemon_error};
use crate::output::{Out, Table, dicts_to_json, format_utc, user_name};

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only rows after this sequence number (page with the last SEQ you saw)
    #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(i64).range(0..))]
    pub after: Option<i64>,

    /// At most N rows (1–1000) [default: 100]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,

    /// Every owner's rows (root only)
    #[arg(long)]
    pub all: bool,
}

pub async fn run(g: &Global, args: &ListArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect(g).await?;
    let owner = owner_filter(args.all, client.list_owner(), client.owner.uid)?;
    let mut options: HashMap<&str, Variant<'_>> = HashMap::new();
    if let Some(after) = args.after {
        options.insert("after", Variant::from(after));
    }
    if let Some(limit) = args.limit {
        options.insert("limit", Variant::from(limit));
    }
    if let Some(uid) = owner {
        options.insert("owner", Variant::from(uid));
    }
    let audit = client.audit().await?;
    let op = client.op("list audit rows", Subject::Other);
    let rows = audit
        .list(options)
        .await
        .map_err(|e| daemon_error(e, &op))?;
    if out.json {
        return out.json(&dicts_to_json(&rows));
    }
    out.table(&table(&rows))
}

/// The `owner` option: `--owner`'s uid; none with `--all` (root) or for a non-root caller
/// (the daemon then answers with the caller's rows); the caller's own uid for root, which
/// would otherwise get every owner's rows without asking for them.
fn owner_filter(all: bool, explicit: Option<u32>, me: u32) -> Result<Option<u32>, CliError> {
    match (all, explicit) {
        (true, Some(_)) => Err(CliError::usage("--all and --owner contradict each other")
            .fix("use --all for every owner's rows, or --owner USER for one owner's")),
        (true, None) if me != 0 => Err(CliError::new(
            Exit::Denied,
            "access denied — only root may list every owner's audit rows",
        )
        .cause(format!(
            "you are uid {me}; owners see the rows about their own objects"
        ))
        .fix("drop --all to see your rows, or run it as root: sudo agentkeysctl audit list --all")),
        (true, None) => Ok(None),
        (false, Some(uid)) => Ok(Some(uid)),
        (false, None) if me == 0 => Ok(Some(0)),
        (false, None) => Ok(None),
    }
}

fn table(rows: &[Dict]) -> Table {
    let mut t = Table::new(&[
        "SEQ", "TIME", "ACTOR", "ACTION", "SUBJECT", "OUTCOME", "DETAIL",
    ]);
    for d in rows {
        let s = |k: &str| {
            get_str(d, k)
                .ok()
                .flatten()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "-".to_owned())
        };
        t.row(vec![
            get_i64(d, "seq")
                .ok()
                .flatten()
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            get_i64(d, "ts_ms")
                .ok()
                .flatten()
                .map_or_else(|| "-".to_owned(), |ms| format_utc(ms.div_euclid(1000))),
            get_u32(d, "actor_uid").ok().flatten().map_or_else(
                || "-".to_owned(),
                |uid| user_name(uid).unwrap_or_else(|| uid.to_string()),
            ),
            s("action"),
            s("subject"),
            s("outcome"),
            s("detail"),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use agentkeysd::api::dict::DictBuilder;

    use super::*;

    #[test]
    fn root_sees_its_own_rows_unless_it_asks_for_all() {
        assert_eq!(owner_filter(false, None, 0).ok(), Some(Some(0)));
        assert_eq!(owner_filter(true, None, 0).ok(), Some(None));
        assert_eq!(owner_filter(false, Some(1000), 0).ok(), Some(Some(1000)));
        assert_eq!(owner_filter(false, None, 1000).ok(), Some(None));
        assert_eq!(
            owner_filter(true, None, 1000).unwrap_err().exit(),
            Exit::Denied
        );
        assert_eq!(
            owner_filter(true, Some(1), 0).unwrap_err().exit(),
            Exit::Usage
        );
    }

    #[test]
    fn rows_render_with_utc_times() {
        let d = DictBuilder::new()
            .i64("seq", 7)
            .i64("ts_ms", 1_795_257_727_999)
            .u32("actor_uid", 0)
            .str("action", "credential.read")
            .str("subject", "github")
            .str("outcome", "ok")
            .str("detail", "")
            .build();
        let text = table(&[d]).render();
        let row = text.lines().nth(1).unwrap_or_default();
        assert!(
            row.starts_with("7    2026-11-21 10:42:07 UTC  root"),
            "{row}"
        );
        assert!(row.ends_with("ok       -"), "{row}");
    }
}
