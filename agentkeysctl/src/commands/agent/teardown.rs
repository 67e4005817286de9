//! `agentkeysctl agent teardown AGENT`: revoke, and delete the agent's grants and links;
//! the revoked record stays for the audit trail.

use clap::Args;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, daemon_error};
use crate::output::Out;

use super::{op, resolve};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    agentkeysctl agent teardown ci-bot\n  \
    agentkeysctl agent revoke ci-bot       (keep its grants and links on record)")]
pub struct TeardownArgs {
    /// The agent: its id (agt_…), name, alias or e-mail
    pub agent: String,
}

pub async fn run(g: &Global, args: &TeardownArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect(g).await?;
    let agents = client.agents().await?;
    let agent = resolve(&client, &agents, &args.agent).await?;
    agents
        .teardown(&agent.target)
        .await
        .map_err(|e| daemon_error(e, &op(&client, "tear down", &args.agent)))?;
    out.line(format!(
        "tore down agent '{}' ({}): revoked, its sessions ended, its grants and links deleted",
        args.agent, agent.id
    ))
}
