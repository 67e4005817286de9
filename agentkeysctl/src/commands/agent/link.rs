//! `agentkeysctl agent link AGENT (--alias NAME | --email ADDR)`: another name the agent
//! is known by, for `Resolve` and every command that takes an agent.

use clap::{ArgGroup, Args};

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, daemon_error};
use crate::output::Out;

use super::{op, resolve};

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("link").required(true).args(["alias", "email"])))]
pub struct LinkArgs {
    /// The agent: its id (agt_…), name, alias or e-mail
    pub agent: String,

    /// An alias: 1–64 characters from a-z 0-9 . _ -
    #[arg(long, value_name = "NAME")]
    pub alias: Option<String>,

    /// An e-mail address
    #[arg(long, value_name = "ADDR")]
    pub email: Option<String>,
}

pub async fn run(g: &Global, args: &LinkArgs, out: &mut Out) -> Result<(), CliError> {
    let (kind, value) = match (&args.alias, &args.email) {
        (Some(a), _) => ("alias", a.as_str()),
        (None, Some(e)) => ("email", e.as_str()),
        // clap's required group makes this unreachable; say so rather than panic.
        (None, None) => return Err(CliError::usage("give --alias NAME or --email ADDR")),
    };
    let client = Client::connect(g).await?;
    let agents = client.agents().await?;
    let agent = resolve(&client, &agents, &args.agent).await?;
    agents.link(&agent.target, kind, value).await.map_err(|e| {
        daemon_error(
            e,
            &op(&client, &format!("link {kind} '{value}' to"), &args.agent),
        )
    })?;
    out.line(format!(
        "linked {kind} '{value}' to agent '{}' ({})",
        args.agent, agent.id
    ))
}
