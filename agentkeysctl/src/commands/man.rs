//! `agentkeysctl man [--out-dir DIR]`: roff man pages from the command tree.
//!
//! `--out-dir` also writes `agentkeysd.8`, rendered from the daemon's own clap
//! [`agentkeysd::daemon::args::Args`], so the packages get the daemon's page from the very
//! struct the daemon parses (it cannot drift) without giving the daemon, which runs as
//! root, a man-page renderer or a hidden flag of its own.

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};
use clap_mangen::Man;

use crate::cli::Cli;
use crate::errors::{CliError, Exit};
use crate::output::Out;

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write agentkeysctl.1, one page per subcommand (agentkeysctl-store.1, …) and the
    /// daemon's agentkeysd.8 into DIR instead of printing the main page
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

pub fn run(args: &ManArgs, out: &mut Out) -> Result<(), CliError> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Builds display names such as agentkeysctl-agent-create for the subcommand pages.
    cmd.build();
    match &args.out_dir {
        None => {
            let mut page = Vec::new();
            Man::new(cmd)
                .render(&mut page)
                .map_err(|e| render_error("agentkeysctl", e))?;
            out.bytes(&page)
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
            let mut written = Vec::new();
            generate(&cmd, dir, &mut written)?;
            write_page(
                Man::new(daemon_command()).section("8"),
                "agentkeysd",
                dir,
                &mut written,
            )?;
            for path in written {
                out.line(format!("wrote {}", path.display()))?;
            }
            Ok(())
        }
    }
}

/// The page of `cmd`, then the pages of its subcommands, depth first.
fn generate(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<(), CliError> {
    write_page(Man::new(cmd.clone()), cmd.get_name(), dir, written)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        generate(sub, dir, written)?;
    }
    Ok(())
}

/// The daemon's command line, as `agentkeysd --help` shows it (section 8: a system daemon).
fn daemon_command() -> clap::Command {
    let mut cmd = agentkeysd::daemon::args::Args::command();
    cmd.build();
    cmd
}

fn write_page(
    man: Man,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), CliError> {
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page).map_err(|e| render_error(name, e))?;
    std::fs::write(&path, &page).map_err(|e| write_error(&path, e))?;
    written.push(path);
    Ok(())
}

fn render_error(name: &str, e: std::io::Error) -> CliError {
    CliError::new(Exit::Error, format!("cannot render the man page of {name}"))
        .cause(e.to_string())
        .fix("report this as a bug in agentkeysctl")
}

fn write_error(path: &Path, e: std::io::Error) -> CliError {
    CliError::new(Exit::Error, format!("cannot write {}", path.display()))
        .cause(e.to_string())
        .fix("pick a directory you can write to with --out-dir DIR")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_written_for_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Cli::command().disable_help_subcommand(true);
        cmd.build();
        let mut written = Vec::new();
        generate(&cmd, dir.path(), &mut written).unwrap();
        let names: Vec<String> = written
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for want in [
            "agentkeysctl.1",
            "agentkeysctl-store.1",
            "agentkeysctl-agent.1",
            "agentkeysctl-agent-create.1",
            "agentkeysctl-audit-verify.1",
            "agentkeysctl-man.1",
            "agentkeysctl-pair.1",
            "agentkeysctl-approve.1",
            "agentkeysctl-pending.1",
            "agentkeysctl-grant.1",
            "agentkeysctl-doctor.1",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        let main = std::fs::read_to_string(dir.path().join("agentkeysctl.1")).unwrap();
        assert!(main.contains(".TH"));
        assert!(main.contains("Exit status"));
    }

    #[test]
    fn out_dir_gets_the_daemons_section_8_page_from_its_own_args() {
        let dir = tempfile::tempdir().unwrap();
        let args = ManArgs {
            out_dir: Some(dir.path().to_path_buf()),
        };
        let mut out = Out::new(false);
        run(&args, &mut out).unwrap();
        let page = std::fs::read_to_string(dir.path().join("agentkeysd.8")).unwrap();
        assert!(page.contains(".TH agentkeysd 8"), "{page}");
        for option in ["check\\-config", "state\\-dir", "runtime\\-dir", "config"] {
            assert!(page.contains(option), "{option} missing from agentkeysd.8");
        }
    }
}
