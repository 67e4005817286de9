//! The command tree (clap derive). Each subcommand's arguments live beside its code in
//! `commands/`; this file only assembles them and holds the global flags.

use agentkeysd::api::bus::{BUS_ENV, BusChoice};
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::commands::{
    agent, approve, audit, completions, deny, doctor, grant, list, man, mcp, pair, pending, read,
    rm, run, status, store, ungrant, usage, whoami,
};
use crate::errors::EXIT_CODES_HELP;

/// Manage the API keys AI agents use, kept by agentkeysd in secret memory.
#[derive(Parser, Debug)]
#[command(
    name = "agentkeysctl",
    version,
    about = "Manage the API keys AI agents use, kept by agentkeysd in secret memory",
    long_about = "agentkeysctl talks to agentkeysd over D-Bus: it stores credentials (API keys) \
                  without ever putting them on a command line, reads them back, and manages the \
                  agents allowed to use them and the audit trail of every use.",
    after_help = EXIT_CODES_HELP,
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Bus agentkeysd is on: system, session, or a D-Bus address such as
    /// unix:path=/run/agentkeys/bus
    #[arg(long, global = true, env = BUS_ENV, default_value = "system", value_name = "BUS")]
    pub bus: BusChoice,

    /// Print JSON instead of tables and text (status, list, agent list/show, audit
    /// list/verify, whoami, pending, usage; pair prints JSON lines)
    #[arg(long, global = true)]
    pub json: bool,

    /// Act for another owner (root): a user name or numeric uid. For pair: the owner
    /// whose approval is asked
    #[arg(long, global = true, value_name = "USER")]
    pub owner: Option<String>,

    /// Act as a paired agent (read, whoami): its id (agt_…) or the name it was paired
    /// under; its identity is read from ~/.config/agentkeys/agents/
    // Its own id: subcommands have positionals called `agent` (grant AGENT …), and a
    // global argument of the same id would swallow their values.
    #[arg(id = AGENT_ARG, long = "agent", global = true, env = AGENT_ENV, value_name = "AGENT")]
    pub agent: Option<String>,

    /// Whether `agent` came from the environment rather than the command line: other
    /// commands ignore an exported AGENTKEYS_AGENT but refuse an explicit --agent.
    #[arg(skip)]
    pub agent_from_env: bool,
}

/// The environment variable behind `--agent`.
pub const AGENT_ENV: &str = "AGENTKEYS_AGENT";

/// The clap id of `--agent`.
const AGENT_ARG: &str = "as_agent";

/// Parses argv, recording where `--agent` came from.
pub fn parse() -> Result<Cli, clap::Error> {
    parse_from(std::env::args_os())
}

pub fn parse_from<I, T>(argv: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(argv)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    cli.global.agent_from_env = agent_source(&matches) == Some(ValueSource::EnvVariable);
    if cli
        .global
        .agent
        .as_deref()
        .is_some_and(|a| a.trim().is_empty())
    {
        cli.global.agent = None;
    }
    Ok(cli)
}

/// Where `--agent` came from; global flags are recorded on the deepest subcommand.
fn agent_source(matches: &clap::ArgMatches) -> Option<ValueSource> {
    let mut m = matches;
    let mut source = m.value_source(AGENT_ARG);
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
        if let Some(s) = m.value_source(AGENT_ARG) {
            source = Some(s);
        }
    }
    source
}

impl Command {
    /// May this command run as a paired agent (`--agent`)?
    pub fn takes_agent(&self) -> bool {
        matches!(
            self,
            Command::Read(_) | Command::Whoami(_) | Command::Run(_)
        )
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the daemon's version, secret memory and features, and your counts
    Status(status::StatusArgs),

    /// Store a credential; the secret comes from the terminal (no echo) or stdin
    #[command(after_help = store::AFTER_HELP)]
    Store(store::StoreArgs),

    /// Write a credential's secret to stdout, exactly as stored
    Read(read::ReadArgs),

    /// Run a command (an AI agent) in the hardened sandbox with the agent's keys: --agent
    /// NAME names the agent it runs as
    #[command(after_help = run::AFTER_HELP)]
    Run(run::RunArgs),

    /// List your credentials (metadata only, never secrets)
    List(list::ListArgs),

    /// Delete a credential
    #[command(visible_alias = "delete")]
    Rm(rm::RmArgs),

    /// Manage agents: the identities that may use credentials
    #[command(subcommand)]
    Agent(AgentCommand),

    /// Let an agent read one of your credentials
    Grant(grant::GrantArgs),

    /// Take a grant back
    Ungrant(ungrant::UngrantArgs),

    /// Pair this agent with its owner: show a code, wait for approval, store the identity
    Pair(pair::PairArgs),

    /// List the auth requests waiting for your decision (--watch: follow them)
    Pending(pending::PendingArgs),

    /// Approve an auth request by the code the agent's terminal shows
    Approve(approve::ApproveArgs),

    /// Deny an auth request by its code
    Deny(deny::DenyArgs),

    /// Show how often each agent read each credential, and its denials
    Usage(usage::UsageArgs),

    /// Read and verify the audit trail
    #[command(subcommand)]
    Audit(AuditCommand),

    /// Show who the daemon thinks you are
    Whoami(whoami::WhoamiArgs),

    /// Check this host for agentkeysd: kernel features, the daemon, installed files;
    /// each failing check prints its fix (exit 1 if any failed)
    Doctor(doctor::DoctorArgs),

    /// Serve this agent's MCP tools on stdin/stdout (inside `agentkeysctl run`; for
    /// Claude Code's .mcp.json and other MCP clients)
    Mcp(mcp::McpArgs),

    /// Print a shell completion script to stdout
    Completions(completions::CompletionsArgs),

    /// Write man pages (to stdout, or one file per command into a directory)
    Man(man::ManArgs),
}

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Create an agent and print its id
    Create(agent::create::CreateArgs),
    /// List your agents
    List(agent::list::ListArgs),
    /// Show one agent (by id, name, alias or e-mail)
    Show(agent::show::ShowArgs),
    /// Link an alias or an e-mail address to an agent
    Link(agent::link::LinkArgs),
    /// Revoke an agent: from now on it gets nothing
    Revoke(agent::revoke::RevokeArgs),
    /// Revoke an agent and delete its grants and links
    Teardown(agent::teardown::TeardownArgs),
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// List audit rows
    List(audit::list::ListArgs),
    /// Verify the audit hash chain end to end (root: it covers every owner)
    Verify(audit::verify::VerifyArgs),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_renders_and_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "Exit status:",
            "0  success",
            "2  usage",
            "3  access denied",
            "4  not found",
            "5  expired",
            "6  daemon unreachable",
            "7  locked",
            "--bus",
            "AGENTKEYS_BUS",
            "--json",
            "--owner",
        ] {
            assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
        }
    }

    #[test]
    fn every_subcommand_help_renders() {
        fn walk(cmd: &mut clap::Command) {
            let _ = cmd.render_long_help().to_string();
            for sub in cmd.get_subcommands_mut() {
                walk(sub);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        walk(&mut cmd);
    }

    #[test]
    fn store_help_says_secrets_never_come_from_argv() {
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("store")
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        assert!(
            help.contains("printf %s \"$KEY\" | agentkeysctl store openai"),
            "{help}"
        );
        assert!(
            help.contains("agentkeysctl store openai < keyfile"),
            "{help}"
        );
        assert!(help.contains("never"), "{help}");
    }

    #[test]
    fn store_has_no_way_to_pass_a_secret_on_the_command_line() {
        let cmd = Cli::command();
        let store = cmd.find_subcommand("store").cloned().unwrap();
        let positionals: Vec<_> = store
            .get_positionals()
            .map(|a| a.get_id().to_string())
            .collect();
        assert_eq!(positionals, ["name"]);
        assert!(Cli::try_parse_from(["agentkeysctl", "store", "github", "sk-secret"]).is_err());
        for flag in ["secret", "value", "key", "password"] {
            assert!(
                store.get_arguments().all(|a| a.get_long() != Some(flag)),
                "--{flag}"
            );
        }
    }

    #[test]
    fn global_flags_parse_anywhere() {
        let cli =
            Cli::try_parse_from(["agentkeysctl", "list", "--json", "--bus", "session"]).unwrap();
        assert!(cli.global.json);
        assert_eq!(cli.global.bus, BusChoice::Session);
        let cli = Cli::try_parse_from([
            "agentkeysctl",
            "--bus",
            "unix:path=/tmp/b",
            "--owner",
            "alice",
            "agent",
            "show",
            "x",
        ])
        .unwrap();
        assert_eq!(
            cli.global.bus,
            BusChoice::Address("unix:path=/tmp/b".into())
        );
        assert_eq!(cli.global.owner.as_deref(), Some("alice"));
    }

    #[test]
    fn usage_errors_are_clap_errors() {
        for argv in [
            &["agentkeysctl", "--bus", "bogus", "list"][..],
            &["agentkeysctl", "frobnicate"],
            &["agentkeysctl", "read"],
            &["agentkeysctl", "agent", "link", "x"],
            &[
                "agentkeysctl",
                "agent",
                "link",
                "x",
                "--alias",
                "a",
                "--email",
                "b@c",
            ],
            &["agentkeysctl", "audit", "list", "--limit", "0"],
            &["agentkeysctl", "audit", "list", "--limit", "1001"],
            &["agentkeysctl", "completions", "tcsh"],
        ] {
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert!(err.use_stderr(), "{argv:?}");
        }
    }

    #[test]
    fn agent_is_a_global_flag_from_the_command_line_or_the_environment() {
        for argv in [
            &["agentkeysctl", "--agent", "ci-bot", "read", "github"][..],
            &["agentkeysctl", "read", "github", "--agent", "ci-bot"],
        ] {
            let cli = parse_from(argv).unwrap();
            assert_eq!(cli.global.agent.as_deref(), Some("ci-bot"), "{argv:?}");
            assert!(!cli.global.agent_from_env, "{argv:?}");
            assert!(cli.command.takes_agent());
        }
        let cli = parse_from(["agentkeysctl", "--agent", " ", "whoami"]).unwrap();
        assert_eq!(cli.global.agent, None);
        let cli = parse_from(["agentkeysctl", "store", "x"]).unwrap();
        assert!(!cli.command.takes_agent());
        // Positionals called `agent` stay theirs.
        let cli = parse_from(["agentkeysctl", "grant", "ci-bot", "github"]).unwrap();
        assert_eq!(cli.global.agent, None);
        assert!(matches!(cli.command, Command::Grant(ref a) if a.agent == "ci-bot"));
        let cli = parse_from(["agentkeysctl", "--agent", "me", "agent", "show", "x"]).unwrap();
        assert_eq!(cli.global.agent.as_deref(), Some("me"));
        assert!(matches!(
            cli.command,
            Command::Agent(AgentCommand::Show(ref a)) if a.agent == "x"
        ));
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("AGENTKEYS_AGENT"), "{help}");
    }

    #[test]
    fn new_commands_parse() {
        for argv in [
            &["agentkeysctl", "pair", "--name", "ci-bot", "--scope", "a,b"][..],
            &[
                "agentkeysctl",
                "pair",
                "--recover",
                "agt_x",
                "--timeout",
                "30",
            ],
            &["agentkeysctl", "--owner", "alice", "pair"],
            &["agentkeysctl", "pending", "--watch"],
            &["agentkeysctl", "approve", "ABCD-EFGH", "--yes"],
            &["agentkeysctl", "deny", "ABCD-EFGH"],
            &[
                "agentkeysctl",
                "grant",
                "ci-bot",
                "github",
                "--mode",
                "confirm",
            ],
            &["agentkeysctl", "ungrant", "ci-bot", "github"],
            &["agentkeysctl", "usage"],
            &["agentkeysctl", "usage", "ci-bot", "--json"],
        ] {
            assert!(parse_from(argv).is_ok(), "{argv:?}");
        }
    }

    #[test]
    fn rm_is_also_delete() {
        let cli = Cli::try_parse_from(["agentkeysctl", "delete", "github"]).unwrap();
        assert!(matches!(cli.command, Command::Rm(_)));
    }
}
