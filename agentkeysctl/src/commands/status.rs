//! `agentkeysctl status`: what the daemon is, where it keeps secrets, and how many
//! credentials and agents the caller (or `--owner`) has.

use clap::Args;
use serde_json::json;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, Subject, daemon_error};
use crate::output::{Out, describe_uid, dict_to_json, variant_to_text};

#[derive(Args, Debug)]
pub struct StatusArgs {}

/// Said whenever the daemon had to fall back from `memfd_secret`.
const MLOCK_NOTE: &str = "decrypted secrets are in mlocked memory, not memfd_secret";

pub async fn run(g: &Global, _args: &StatusArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect(g).await?;
    let op = client.op("report its status", Subject::Other);
    let daemon = client.daemon().await?;
    let version = daemon
        .version()
        .await
        .map_err(|e| daemon_error(e.into(), &op))?;
    let memory = daemon
        .secret_memory()
        .await
        .map_err(|e| daemon_error(e.into(), &op))?;
    let features = daemon
        .features()
        .await
        .map_err(|e| daemon_error(e.into(), &op))?;

    let creds = client.credentials().await?;
    let op = client.op("count credentials", Subject::Other);
    let credentials = match client.list_owner() {
        Some(uid) => creds.list_for(uid).await,
        None => creds.list().await,
    }
    .map_err(|e| daemon_error(e, &op))?
    .len();
    let agents = client.agents().await?;
    let op = client.op("count agents", Subject::Other);
    let agent_count = match client.list_owner() {
        Some(uid) => agents.list_for(uid).await,
        None => agents.list().await,
    }
    .map_err(|e| daemon_error(e, &op))?
    .len();

    let note = (memory != "memfd_secret").then_some(MLOCK_NOTE);
    if out.json {
        return out.json(&json!({
            "version": version,
            "secret_memory": memory,
            "note": note,
            "features": dict_to_json(&features),
            "bus": client.bus.to_string(),
            "owner": client.owner.uid,
            "credentials": credentials,
            "agents": agent_count,
        }));
    }

    let mut rows = vec![
        ("agentkeysd", version),
        ("bus", client.bus.to_string()),
        ("secret memory", memory),
    ];
    if let Some(note) = note {
        rows.push(("", format!("note: {note}")));
    }
    let mut keys: Vec<&String> = features.keys().collect();
    keys.sort();
    for (i, k) in keys.into_iter().enumerate() {
        let value = features
            .get(k)
            .map(|v| variant_to_text(v))
            .unwrap_or_default();
        rows.push((if i == 0 { "features" } else { "" }, format!("{k}={value}")));
    }
    rows.push(("owner", describe_uid(client.owner.uid)));
    rows.push(("credentials", credentials.to_string()));
    rows.push(("agents", agent_count.to_string()));
    out.key_values(&rows)
}
