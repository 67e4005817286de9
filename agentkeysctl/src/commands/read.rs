//! `agentkeysctl read NAME`: the secret's exact bytes on stdout and nothing else; a
//! newline is added only for a terminal, so `$(agentkeysctl read x)` and pipes get the
//! bytes as stored.

use std::os::fd::AsFd;

use agentkeysd::api::ErrorKind;
use clap::Args;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, Exit, Subject, daemon_error};
use crate::output::{Out, stdout_is_tty};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    OPENAI_API_KEY=\"$(agentkeysctl read openai)\" some-tool\n  \
    agentkeysctl read github | gh auth login --with-token\n  \
    agentkeysctl --agent ci-bot read github     (as a paired agent: its grants apply)")]
pub struct ReadArgs {
    /// Credential name
    pub name: String,
}

pub async fn run(g: &Global, args: &ReadArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect_maybe_as_agent(g).await?;
    let target = client.qualify(&args.name)?;
    let creds = client.credentials().await?;
    let mut op = client.op(
        format!("read credential '{}'", args.name),
        Subject::Credential(args.name.clone()),
    );
    let who = client
        .agent
        .as_ref()
        .map(|a| a.name.clone().unwrap_or_else(|| a.agent_id.clone()));
    if let Some(who) = &who {
        op = op.fix_for(
            ErrorKind::Denied,
            format!(
                "ask the owner to grant it: agentkeysctl grant {who} {}",
                args.name
            ),
        );
    }
    let fd = creds.read(&target).await.map_err(|e| match &who {
        // Revoked between Authenticate and Read: about the agent, not the credential.
        Some(who) if e.kind() == ErrorKind::Denied && e.message().contains("revoked") => {
            let op = client.op(
                format!("read credential '{}'", args.name),
                Subject::Agent(who.clone()),
            );
            daemon_error(e, &op)
        }
        _ => daemon_error(e, &op),
    })?;
    let secret = agentkeysd::vault::read_memfd_to_vec(fd.as_fd()).map_err(|e| {
        CliError::new(Exit::Error, format!("cannot read the secret of '{}'", args.name))
            .cause(format!("agentkeysd answered with a file descriptor that is not a usable sealed memfd: {e}"))
            .fix("agentkeysctl and agentkeysd versions may differ; agentkeysctl status shows the daemon's")
    })?;
    drop(fd);
    out.secret(&secret)?;
    if stdout_is_tty() {
        out.secret(b"\n")?;
    }
    Ok(())
}
