//! `agentkeysctl deny CODE`: the owner's no to an auth request. The agent's `pair` ends
//! with "denied" (exit 3); nothing is created. No password is needed to refuse.

use agentkeysd::api::ErrorKind;
use clap::Args;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, Subject, daemon_error};
use crate::output::Out;

use super::approve::{fetch, parse_code};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    agentkeysctl deny ABCD-EFGH\n  \
    agentkeysctl pending                   (codes waiting for you)")]
pub struct DenyArgs {
    /// The pair code the agent's terminal shows (ABCD-EFGH; case and dashes do not matter)
    pub code: String,
}

pub async fn run(g: &Global, args: &DenyArgs, out: &mut Out) -> Result<(), CliError> {
    let code = parse_code(&args.code)?;
    let client = Client::connect(g).await?;
    let approvals = client.approvals().await?;
    let req = fetch(&client, &approvals, &code).await?;
    let op = client
        .op(format!("deny request {code}"), Subject::Other)
        .fix_for(
            ErrorKind::NotFound,
            "the request expired or was decided meanwhile; nothing is left to deny",
        )
        .fix_for(
            ErrorKind::AlreadyConsumed,
            "it was decided already: agentkeysctl pending shows what still waits",
        );
    approvals
        .deny(&req.id)
        .await
        .map_err(|e| daemon_error(e, &op))?;
    out.line(format!(
        "denied: {} for {} (request {})",
        req.type_name,
        req.subject(),
        req.id
    ))
}
