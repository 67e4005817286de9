//! `agentkeysctl rm NAME` (alias `delete`): deletes a credential and every grant of it.

use clap::Args;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, Subject, daemon_error};
use crate::output::Out;

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Credential name
    pub name: String,
}

pub async fn run(g: &Global, args: &RmArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect(g).await?;
    let target = client.qualify(&args.name)?;
    let creds = client.credentials().await?;
    let op = client.op(
        format!("delete credential '{}'", args.name),
        Subject::Credential(args.name.clone()),
    );
    creds
        .delete(&target)
        .await
        .map_err(|e| daemon_error(e, &op))?;
    out.line(format!("deleted '{}'", args.name))
}
