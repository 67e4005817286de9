//! `agentkeysctl ungrant AGENT CREDENTIAL`: takes a grant back. The agent's reads of the
//! credential are denied from the next one on; the name stays in its scope, so granting
//! it again needs no new approval.

use clap::Args;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::CliError;
use crate::output::Out;

use super::grant::grant_error;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    agentkeysctl ungrant ci-bot github\n  \
    agentkeysctl agent revoke ci-bot       (take everything from an agent at once)")]
pub struct UngrantArgs {
    /// The agent: its id (agt_…), name, alias or e-mail
    pub agent: String,

    /// The credential it may no longer read
    pub credential: String,
}

pub async fn run(g: &Global, args: &UngrantArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect(g).await?;
    let target = client.qualify(&args.agent)?;
    let creds = client.credentials().await?;
    let action = format!(
        "take credential '{}' from agent '{}'",
        args.credential, args.agent
    );
    creds
        .ungrant(&target, &args.credential)
        .await
        .map_err(|e| grant_error(e, &client, action, &args.agent))?;
    out.line(format!(
        "ungranted '{}' from agent '{}': its reads of it are denied from now on",
        args.credential, args.agent
    ))
}
