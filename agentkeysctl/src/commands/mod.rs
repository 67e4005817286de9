//! One file per subcommand (STYLE §2). Commands that need the daemon are `async` and run
//! on one current-thread runtime; `completions` and `man` never touch the bus.
//!
//! A command validates its local input first (exit 2 without a daemon), then connects.

pub mod agent;
pub mod audit;
pub mod completions;
pub mod list;
pub mod man;
pub mod read;
pub mod rm;
pub mod status;
pub mod store;
pub mod whoami;

use crate::cli::{AgentCommand, AuditCommand, Cli, Command, Global};
use crate::errors::{CliError, Exit};
use crate::output::Out;

/// Runs the parsed command line; everything it printed is flushed before returning.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let mut out = Out::new(cli.global.json);
    let result = dispatch(&cli, &mut out);
    let flushed = out.flush();
    result.and(flushed)
}

fn dispatch(cli: &Cli, out: &mut Out) -> Result<(), CliError> {
    match &cli.command {
        Command::Completions(a) => completions::run(a, out),
        Command::Man(a) => man::run(a, out),
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
        Command::Agent(sub) => match sub {
            AgentCommand::Create(a) => agent::create::run(g, a, out).await,
            AgentCommand::List(a) => agent::list::run(g, a, out).await,
            AgentCommand::Show(a) => agent::show::run(g, a, out).await,
            AgentCommand::Link(a) => agent::link::run(g, a, out).await,
            AgentCommand::Revoke(a) => agent::revoke::run(g, a, out).await,
            AgentCommand::Teardown(a) => agent::teardown::run(g, a, out).await,
        },
        Command::Audit(sub) => match sub {
            AuditCommand::List(a) => audit::list::run(g, a, out).await,
            AuditCommand::Verify(a) => audit::verify::run(g, a, out).await,
        },
        Command::Whoami(a) => whoami::run(g, a, out).await,
        Command::Completions(a) => completions::run(a, out),
        Command::Man(a) => man::run(a, out),
    }
}
