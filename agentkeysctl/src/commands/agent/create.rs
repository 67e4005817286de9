//! `agentkeysctl agent create NAME`: a new agent identity; prints its id alone, so
//! `id=$(agentkeysctl agent create ci-bot)` works.

use std::collections::HashMap;

use agentkeysd::api::ErrorKind;
use clap::Args;
use zbus::Variant;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, NAME_RULE, Subject, daemon_error};
use crate::output::Out;

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Agent name: 1–64 characters from a-z 0-9 . _ -
    pub name: String,

    /// Credentials the agent may ever ask for, comma-separated (e.g. github,openai)
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub scope: Vec<String>,

    /// The agent may read credentials but change nothing
    #[arg(long)]
    pub read_only: bool,
}

pub async fn run(g: &Global, args: &CreateArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect(g).await?;
    let target = client.qualify(&args.name)?;
    let agents = client.agents().await?;
    let mut options: HashMap<&str, Variant<'_>> = HashMap::new();
    let scope: Vec<String> = args
        .scope
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if !scope.is_empty() {
        options.insert("scope", Variant::from(scope));
    }
    if args.read_only {
        options.insert("read_only", Variant::from(true));
    }
    let op = client
        .op(
            format!("create agent '{}'", args.name),
            Subject::Agent(args.name.clone()),
        )
        .fix_for(
            ErrorKind::InvalidArgument,
            format!(
                "{NAME_RULE} (scope entries too); a name already taken needs another \
                 (agentkeysctl agent list shows them)"
            ),
        );
    let id = agents
        .create(&target, options)
        .await
        .map_err(|e| daemon_error(e, &op))?;
    out.line(id)
}
