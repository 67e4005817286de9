//! One file per subcommand (STYLE §2). Commands that need the daemon are `async` and run
//! on one current-thread runtime; `completions` and `man` never touch the bus.
//!
//! A command validates its local input first (exit 2 without a daemon), then connects.

pub mod agent;
pub mod approve;
pub mod audit;
pub mod completions;
pub mod deny;
pub mod doctor;
pub mod grant;
pub mod list;
pub mod man;
pub mod mcp;
pub mod pair;
pub mod pending;
pub mod read;
pub mod rm;
pub mod run;
pub mod status;
pub mod store;
pub mod ungrant;
pub mod usage;
pub mod whoami;

use crate::cli::{AgentCommand, AuditCommand, Cli, Command, Global};
use crate::errors::{CliError, Exit};
use crate::output::Out;

/// Runs the parsed command line; everything it printed is flushed before returning.
pub fn run(mut cli: Cli) -> Result<(), CliError> {
    check_agent_flag(&mut cli)?;
    check_owner_flag(&cli)?;
    let mut out = Out::new(cli.global.json);
    let result = dispatch(&cli, &mut out);
    let flushed = out.flush();
    result.and(flushed)
}

/// `--agent` applies to the commands an agent may run. An exported AGENTKEYS_AGENT is
/// ignored by the others (the owner's shell may well export it), an explicit flag is not.
fn check_agent_flag(cli: &mut Cli) -> Result<(), CliError> {
    if cli.global.agent.is_none() || cli.command.takes_agent() {
        return Ok(());
    }
    if cli.global.agent_from_env {
        cli.global.agent = None;
        return Ok(());
    }
    Err(
        CliError::usage("--agent works only with read, whoami and run")
            .cause("the other commands act as you, the owner, never as an agent")
            .fix("drop --agent, e.g. agentkeysctl --agent ci-bot read github"),
    )
}

/// `approve`, `deny` and `pending` act on the requests waiting for the caller (root's
/// `pending` lists every owner's); nobody, root included, decides another owner's request,
/// so `--owner` is refused there rather than silently ignored.
fn check_owner_flag(cli: &Cli) -> Result<(), CliError> {
    let name = match cli.command {
        Command::Approve(_) => "approve",
        Command::Deny(_) => "deny",
        Command::Pending(_) => "pending",
        _ => return Ok(()),
    };
    if cli.global.owner.is_none() {
        return Ok(());
    }
    Err(CliError::usage(format!("--owner does not work with {name}"))
        .cause("it acts on the requests waiting for you: only the owner a request asks decides it (root approves only its own)")
        .fix(format!(
            "drop --owner; the owner the request asks runs agentkeysctl {name} from their own login"
        )))
}

fn dispatch(cli: &Cli, out: &mut Out) -> Result<(), CliError> {
    match &cli.command {
        Command::Completions(a) => completions::run(a, out),
        Command::Man(a) => man::run(a, out),
        Command::Mcp(a) => mcp::run(a),
        cmd => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    CliError::new(Exit::Error, "cannot start the I/O runtime")
                        .cause(e.to_string())
                        .fix("check the process limits (ulimit -n, ulimit -u)")
                })?;
            rt.block_on(with_daemon(&cli.global, cmd, out))
        }
    }
}

async fn with_daemon(g: &Global, cmd: &Command, out: &mut Out) -> Result<(), CliError> {
    match cmd {
        Command::Status(a) => status::run(g, a, out).await,
        Command::Store(a) => store::run(g, a, out).await,
        Command::Read(a) => read::run(g, a, out).await,
        Command::List(a) => list::run(g, a, out).await,
        Command::Rm(a) => rm::run(g, a, out).await,
        Command::Run(a) => run::run(g, a, out).await,
        Command::Agent(sub) => match sub {
            AgentCommand::Create(a) => agent::create::run(g, a, out).await,
            AgentCommand::List(a) => agent::list::run(g, a, out).await,
            AgentCommand::Show(a) => agent::show::run(g, a, out).await,
            AgentCommand::Link(a) => agent::link::run(g, a, out).await,
            AgentCommand::Revoke(a) => agent::revoke::run(g, a, out).await,
            AgentCommand::Teardown(a) => agent::teardown::run(g, a, out).await,
        },
        Command::Grant(a) => grant::run(g, a, out).await,
        Command::Ungrant(a) => ungrant::run(g, a, out).await,
        Command::Pair(a) => pair::run(g, a, out).await,
        Command::Pending(a) => pending::run(g, a, out).await,
        Command::Approve(a) => approve::run(g, a, out).await,
        Command::Deny(a) => deny::run(g, a, out).await,
        Command::Usage(a) => usage::run(g, a, out).await,
        Command::Audit(sub) => match sub {
            AuditCommand::List(a) => audit::list::run(g, a, out).await,
            AuditCommand::Verify(a) => audit::verify::run(g, a, out).await,
        },
        Command::Whoami(a) => whoami::run(g, a, out).await,
        Command::Doctor(a) => doctor::run(g, a, out).await,
        Command::Completions(a) => completions::run(a, out),
        Command::Man(a) => man::run(a, out),
        Command::Mcp(a) => mcp::run(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_from;

    #[test]
    fn an_explicit_agent_flag_is_refused_where_it_means_nothing() {
        let mut cli = parse_from(["agentkeysctl", "--agent", "x", "list"]).unwrap();
        assert_eq!(check_agent_flag(&mut cli).unwrap_err().exit(), Exit::Usage);
        let mut cli = parse_from(["agentkeysctl", "--agent", "x", "read", "github"]).unwrap();
        assert!(check_agent_flag(&mut cli).is_ok());
        assert_eq!(cli.global.agent.as_deref(), Some("x"));
    }

    #[test]
    fn owner_is_refused_where_only_the_caller_decides() {
        for argv in [
            &["agentkeysctl", "--owner", "alice", "approve", "ABCD-EFGH"][..],
            &["agentkeysctl", "deny", "ABCD-EFGH", "--owner", "1000"],
            &["agentkeysctl", "--owner", "0", "pending", "--watch"],
        ] {
            let cli = parse_from(argv).unwrap();
            assert_eq!(
                check_owner_flag(&cli).unwrap_err().exit(),
                Exit::Usage,
                "{argv:?}"
            );
        }
        for argv in [
            &["agentkeysctl", "approve", "ABCD-EFGH"][..],
            &["agentkeysctl", "--owner", "alice", "pair"],
            &["agentkeysctl", "--owner", "alice", "list"],
        ] {
            assert!(
                check_owner_flag(&parse_from(argv).unwrap()).is_ok(),
                "{argv:?}"
            );
        }
    }

    #[test]
    fn an_exported_agent_is_ignored_where_it_means_nothing() {
        let mut cli = parse_from(["agentkeysctl", "--agent", "x", "approve", "ABCD-EFGH"]).unwrap();
        cli.global.agent_from_env = true;
        assert!(check_agent_flag(&mut cli).is_ok());
        assert_eq!(cli.global.agent, None);
    }
}
