//! `agentkeysctl agent show AGENT`: one agent, by id, name, alias or e-mail.

use agentkeysd::api::dict::{Dict, get_bool, get_i64, get_str, get_strs, get_u32};
use clap::Args;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, daemon_error};
use crate::output::{Out, describe_uid, dict_to_json, format_utc, join_or_dash};

use super::{op, resolve};

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The agent: its id (agt_…), name, alias or e-mail
    pub agent: String,
}

pub async fn run(g: &Global, args: &ShowArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect(g).await?;
    let agents = client.agents().await?;
    let agent = resolve(&client, &agents, &args.agent).await?;
    let rec = agents
        .get(&agent.target)
        .await
        .map_err(|e| daemon_error(e, &op(&client, "show", &args.agent)))?;
    if out.json {
        return out.json(&dict_to_json(&rec));
    }
    out.key_values(&rows(&rec))
}

fn rows(d: &Dict) -> Vec<(&'static str, String)> {
    let s = |k: &str| {
        get_str(d, k)
            .ok()
            .flatten()
            .unwrap_or_else(|| "-".to_owned())
    };
    let list = |k: &str| join_or_dash(&get_strs(d, k).ok().flatten().unwrap_or_default());
    let mut rows = vec![("id", s("id")), ("name", s("name")), ("state", s("state"))];
    if let Some(owner) = get_u32(d, "owner").ok().flatten() {
        rows.push(("owner", describe_uid(owner)));
    }
    rows.push(("scope", list("scope")));
    let read_only = get_bool(d, "read_only").ok().flatten().unwrap_or(false);
    rows.push(("read-only", if read_only { "yes" } else { "no" }.to_owned()));
    if let Some(t) = get_i64(d, "created").ok().flatten() {
        rows.push(("created", format_utc(t)));
    }
    if let Some(t) = get_i64(d, "revoked_at").ok().flatten() {
        let by = get_u32(d, "revoked_by")
            .ok()
            .flatten()
            .map(|uid| format!(" by {}", describe_uid(uid)))
            .unwrap_or_default();
        rows.push(("revoked", format!("{}{by}", format_utc(t))));
    }
    rows.push(("aliases", list("aliases")));
    rows.push(("emails", list("emails")));
    rows
}

#[cfg(test)]
mod tests {
    use agentkeysd::api::dict::DictBuilder;

    use super::*;

    #[test]
    fn a_revoked_agent_shows_when_and_by_whom() {
        let d = DictBuilder::new()
            .str("id", "agt_x")
            .str("name", "ci-bot")
            .str("state", "revoked")
            .strs("scope", &["github".into()])
            .i64("created", 0)
            .i64("revoked_at", 1_795_257_727)
            .u32("revoked_by", 4_000_000_000)
            .strs("aliases", &[])
            .build();
        let rows = rows(&d);
        let get = |k: &str| {
            rows.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("state").as_deref(), Some("revoked"));
        assert_eq!(get("scope").as_deref(), Some("github"));
        assert_eq!(get("read-only").as_deref(), Some("no"));
        assert_eq!(
            get("revoked").as_deref(),
            Some("2026-11-21 10:42:07 UTC by uid 4000000000")
        );
        assert_eq!(get("aliases").as_deref(), Some("-"));
        assert_eq!(get("emails").as_deref(), Some("-"));
    }
}
