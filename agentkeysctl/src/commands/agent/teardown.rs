//! `agentkeysctl agent teardown AGENT`: revoke, and delete the agent's grants and links;
//! the revoked record stays for the audit trail.

use clap::Args;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, daemon_error};
use crate::output::Out;

use super::{op, resolve};

#[derive(Args, Debug)]
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
    out.line(format!("tore down agent '{}' ({})", args.agent, agent.id))
}
