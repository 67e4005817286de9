//! `agentkeysctl grant AGENT CREDENTIAL [--mode auto|confirm|once] [--expires WHEN]`: lets
//! an agent read one of your credentials. The credential joins the agent's scope; a grant
//! that exists already is replaced. Every grant also lives under the hard session TTL.

use std::collections::HashMap;

use agentkeysd::api::ErrorKind;
use agentkeysd::api::names::GrantMode;
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use zbus::Variant;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, NAME_RULE, Subject, daemon_error};
use crate::output::{Out, format_utc};

use super::store::check_expires;

#[derive(Args, Debug)]
#[command(after_help = "Modes:
  auto     every read by the agent is served (the default)
  confirm  each read opens a request you approve (agentkeysctl pending / approve)
  once     one read, then the grant is used up
Examples:
  agentkeysctl grant ci-bot github
  agentkeysctl grant ci-bot openai --mode once --expires 12h
  agentkeysctl grant agt_0123456789abcdefghjkmnpqrs anthropic --mode confirm
  agentkeysctl grant ci-bot github --until-logout   (ends at your last logout)
  agentkeysctl ungrant ci-bot github     (undo)")]
pub struct GrantArgs {
    /// The agent: its id (agt_…), name, alias or e-mail
    pub agent: String,

    /// The credential it may read (a name from agentkeysctl list)
    pub credential: String,

    /// How reads are served: auto, confirm (each read needs your approval) or once
    #[arg(long, value_name = "MODE", value_parser = mode_parser())]
    pub mode: Option<GrantMode>,

    /// When the grant ends: a duration (30d, 12h, 90m, 2w, 3600s) or a UTC date
    /// (2026-12-31, 2026-12-31T23:59:59Z)
    #[arg(long, value_name = "WHEN")]
    pub expires: Option<String>,

    /// Session-bound: the grant ends when your last login session closes (pam_agentkeys
    /// tells agentkeysd), like your login-class credentials lock
    #[arg(long)]
    pub until_logout: bool,
}

/// `--mode`: the daemon's spellings, listed in `--help` and checked by clap.
fn mode_parser() -> impl TypedValueParser<Value = GrantMode> {
    PossibleValuesParser::new(GrantMode::ALL.map(GrantMode::as_str))
        .try_map(|s| GrantMode::parse(&s).ok_or("not a grant mode"))
}

fn describe(mode: GrantMode) -> &'static str {
    match mode {
        GrantMode::Auto => "mode auto",
        GrantMode::Confirm => "mode confirm: each read needs your approval",
        GrantMode::Once => "mode once: a single read",
    }
}

pub async fn run(g: &Global, args: &GrantArgs, out: &mut Out) -> Result<(), CliError> {
    let expires = args.expires.as_deref().map(check_expires).transpose()?;
    let client = Client::connect(g).await?;
    let target = client.qualify(&args.agent)?;
    let creds = client.credentials().await?;
    let mut options: HashMap<&str, Variant<'_>> = HashMap::new();
    if let Some(mode) = args.mode {
        options.insert("mode", Variant::from(mode.as_str()));
    }
    if let Some(at) = expires {
        options.insert("expires", Variant::from(at));
    }
    if args.until_logout {
        options.insert("until_logout", Variant::from(true));
    }
    let action = format!(
        "grant credential '{}' to agent '{}'",
        args.credential, args.agent
    );
    creds
        .grant(&target, &args.credential, options)
        .await
        .map_err(|e| grant_error(e, &client, action, &args.agent))?;
    let mode = describe(args.mode.unwrap_or(GrantMode::Auto));
    let mut until = expires.map_or_else(String::new, |at| format!(", until {}", format_utc(at)));
    if args.until_logout {
        until.push_str(", until your last logout");
    }
    out.line(format!(
        "granted '{}' to agent '{}' ({mode}{until})",
        args.credential, args.agent
    ))
}

/// Maps a refusal of `Grant`/`Ungrant`: either name may be the one not found, and a
/// revoked agent gets the agent-specific report.
pub fn grant_error(
    e: agentkeysd::api::Error,
    client: &Client,
    action: String,
    agent: &str,
) -> CliError {
    let subject = if e.kind() == ErrorKind::Denied {
        Subject::Agent(agent.to_owned())
    } else {
        Subject::Other
    };
    let op = client.op(action, subject);
    let of = op.owner_flag.clone();
    let op = op
        .fix_for(
            ErrorKind::NotFound,
            format!(
                "check both names: agentkeysctl{of} agent list shows the agents, agentkeysctl{of} list the credentials"
            ),
        )
        .fix_for(
            ErrorKind::InvalidArgument,
            format!("modes are auto, confirm and once; {NAME_RULE}"),
        );
    daemon_error(e, &op)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn modes_and_expiry_parse() {
        let cli = Cli::try_parse_from([
            "agentkeysctl",
            "grant",
            "ci-bot",
            "github",
            "--mode",
            "once",
            "--expires",
            "12h",
        ])
        .unwrap();
        let Command::Grant(a) = cli.command else {
            panic!("not grant")
        };
        assert_eq!(a.mode, Some(GrantMode::Once));
        assert_eq!(a.expires.as_deref(), Some("12h"));
        assert!(
            Cli::try_parse_from(["agentkeysctl", "grant", "a", "b", "--mode", "always"]).is_err()
        );
        assert!(Cli::try_parse_from(["agentkeysctl", "grant", "a"]).is_err());
        assert_eq!(GrantMode::Confirm.as_str(), "confirm");
    }
}
