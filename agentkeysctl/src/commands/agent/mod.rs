//! `agentkeysctl agent …`: agent identities. Every command that names an existing agent
//! accepts its id, name, alias or e-mail and resolves it with `Resolve` first, then acts
//! on the id, so all four spellings behave the same.

pub mod create;
pub mod link;
pub mod list;
pub mod revoke;
pub mod show;
pub mod teardown;

use agentkeysd::api::names::split_owner;
use agentkeysd::api::proxies::AgentsProxy;

use crate::client::Client;
use crate::errors::{CliError, Op, Subject, daemon_error};

/// An agent named on the command line, resolved.
#[derive(Debug)]
pub struct Resolved {
    /// `agt_…`.
    pub id: String,
    /// The id as the next call must name it (`UID:agt_…` when acting for another owner).
    pub target: String,
}

/// Resolves `arg` (id, name, alias or e-mail; `UID:` prefix or `--owner` for root).
pub async fn resolve(
    client: &Client,
    agents: &AgentsProxy<'_>,
    arg: &str,
) -> Result<Resolved, CliError> {
    let identity = client.qualify(arg)?;
    let op = client.op(
        format!("find agent '{arg}'"),
        Subject::Agent(arg.to_owned()),
    );
    let id = agents
        .resolve(&identity)
        .await
        .map_err(|e| daemon_error(e, &op))?;
    let target = match split_owner(&identity) {
        Some((Some(uid), _)) => format!("{uid}:{id}"),
        _ => id.clone(),
    };
    Ok(Resolved { id, target })
}

/// The [`Op`] for acting on a resolved agent.
pub fn op(client: &Client, action: &str, arg: &str) -> Op {
    client.op(
        format!("{action} agent '{arg}'"),
        Subject::Agent(arg.to_owned()),
    )
}
