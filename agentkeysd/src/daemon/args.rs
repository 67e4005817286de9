//! Command line of `agentkeysd`.

use std::path::PathBuf;

use clap::Parser;

use crate::api::bus::{BUS_ENV, BusChoice};

/// The AgentKeys daemon: keeps API keys for AI agents in secret memory and serves them
/// over D-Bus to the owners and agents allowed to have them.
///
/// Normally started by systemd (agentkeysd.service). For a throw-away instance on a
/// private bus, as the tests and scripts/quickstart do:
///
///   agentkeysd --bus unix:path=/tmp/x/bus.sock --state-dir /tmp/x/state --runtime-dir /tmp/x/run
#[derive(Debug, Parser)]
#[command(name = "agentkeysd", version, about, long_about, verbatim_doc_comment)]
pub struct Args {
    /// Bus to serve on: system, session, or a D-Bus address.
    #[arg(long, env = BUS_ENV, default_value = "system", value_name = "BUS")]
    pub bus: BusChoice,

    /// Configuration file; drop-ins are read from FILE.d/*.toml in name order.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/agentkeys/agentkeysd.toml"
    )]
    pub config: PathBuf,

    /// Where the database and master key live (created 0700 if missing).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/agentkeys")]
    pub state_dir: PathBuf,

    /// Where runtime sockets live (created 0755 if missing).
    #[arg(long, value_name = "DIR", default_value = "/run/agentkeys")]
    pub runtime_dir: PathBuf,

    /// systemd credentials directory holding `agentkeys.master` (set by
    /// LoadCredentialEncrypted=); when absent, STATE_DIR/master.key is used.
    #[arg(long, env = "CREDENTIALS_DIRECTORY", value_name = "DIR")]
    pub credentials_dir: Option<PathBuf>,

    /// Load and validate the configuration, print the effective settings, and exit
    /// (0 when valid, 1 when not). Touches no state and no bus.
    #[arg(long)]
    pub check_config: bool,
}

impl Args {
    /// True when `--config` was left at its default, so a missing file means defaults.
    pub fn config_is_default(&self) -> bool {
        self.config == std::path::Path::new("/etc/agentkeys/agentkeysd.toml")
    }
}
