//! `agentkeysctl agent revoke AGENT`: from now on the agent gets nothing.

use clap::Args;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, daemon_error};
use crate::output::Out;

use super::{op, resolve};

#[derive(Args, Debug)]
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
    out.line(format!("revoked agent '{}' ({})", args.agent, agent.id))
}
