//! `agentkeysctl agent revoke AGENT`: from now on the agent gets nothing. Its sessions end
//! at once (the next read on any of them is denied), its grants and links stay on record;
//! `pair --recover` can give the identity a new key and session later.

use clap::Args;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, daemon_error};
use crate::output::Out;

use super::{op, resolve};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    agentkeysctl agent revoke ci-bot\n  \
    agentkeysctl agent teardown ci-bot     (also delete its grants and links)")]
pub struct RevokeArgs {
    /// The agent: its id (agt_…), name, alias or e-mail
    pub agent: String,
}

pub async fn run(g: &Global, args: &RevokeArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect(g).await?;
    let agents = client.agents().await?;
    let agent = resolve(&client, &agents, &args.agent).await?;
    agents
        .revoke(&agent.target)
        .await
        .map_err(|e| daemon_error(e, &op(&client, "revoke", &args.agent)))?;
    out.line(format!(
        "revoked agent '{}' ({}): its sessions have ended and it gets nothing from now on",
        args.agent, agent.id
    ))
}
