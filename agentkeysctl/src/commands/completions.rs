//! `agentkeysctl completions SHELL`: a completion script on stdout.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::errors::CliError;
use crate::output::Out;

#[derive(Args, Debug)]
#[command(after_help = "Install, for example:\n  \
    agentkeysctl completions bash > /etc/bash_completion.d/agentkeysctl\n  \
    agentkeysctl completions zsh > \"${fpath[1]}/_agentkeysctl\"\n  \
    agentkeysctl completions fish > ~/.config/fish/completions/agentkeysctl.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: &CompletionsArgs, out: &mut Out) -> Result<(), CliError> {
    // Generated into memory first: clap_complete panics when its writer fails, and a
    // closed stdout must be a clean exit.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "agentkeysctl", &mut script);
    out.bytes(&script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "agentkeysctl", &mut script);
            let text = String::from_utf8_lossy(&script);
            assert!(text.contains("agentkeysctl"), "{shell}");
            assert!(text.contains("teardown"), "{shell}");
        }
    }
}
