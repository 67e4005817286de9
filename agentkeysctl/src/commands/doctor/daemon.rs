//! `daemon`: does agentkeysd answer on the bus (`--bus`), and is it the version of this
//! CLI? Unreachable fails (with the fix `status` would print); a different version warns
//! (an upgrade installed but the daemon not restarted, or a mixed install). The daemon's
//! own view of Landlock and seccomp (its `Features`) is compared with this shell's: under
//! the unit's `SystemCallFilter=` they can differ, and the runner inherits the daemon's.

use std::time::Duration;

use agentkeysd::api::dict::get_u32;
use agentkeysd::api::names::BUS_NAME;
use agentkeysd::sandbox::probe;

use super::Finding;
use crate::cli::Global;
use crate::client::{Client, DaemonFacts, describe_bus};
use crate::errors::{CliError, Exit, Report, Subject, unreachable_report};

const CHECK: &str = "daemon";

/// Doctor should answer promptly even when the daemon hangs.
const TIMEOUT: Duration = Duration::from_secs(15);

/// This CLI's version.
const CLI_VERSION: &str = env!("CARGO_PKG_VERSION");

pub async fn check(g: &Global) -> Finding {
    match tokio::time::timeout(TIMEOUT, ask(g)).await {
        Ok(Ok(facts)) => judge(&facts, probe::landlock().abi()),
        Ok(Err(CliError::Report(r))) => failed(&r),
        Ok(Err(CliError::BrokenPipe | CliError::Status(_))) => {
            Finding::skip(CHECK, "stdout closed")
        }
        Err(_) => Finding::fail(
            CHECK,
            format!("agentkeysd did not answer within {}s", TIMEOUT.as_secs()),
            "see why it hangs: journalctl -u agentkeysd; then sudo systemctl restart agentkeysd",
        ),
    }
}

async fn ask(g: &Global) -> Result<DaemonFacts, CliError> {
    let client = Client::connect(g).await?;
    // Asked first so that doctor observes rather than acts: a call to an unowned name
    // would make the bus activate the daemon.
    let unreachable =
        |e: String| CliError::Report(unreachable_report(&describe_bus(&client.bus), e));
    let name = zbus::names::BusName::try_from(BUS_NAME).map_err(|e| unreachable(e.to_string()))?;
    let bus = zbus::fdo::DBusProxy::new(&client.conn)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let owned = bus
        .name_has_owner(name)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !owned {
        return Err(CliError::new(
            Exit::Unreachable,
            format!("agentkeysd is not running on {}", describe_bus(&client.bus)),
        )
        .cause(format!("nobody owns {BUS_NAME}"))
        .fix(
            "start it: sudo systemctl start agentkeysd (journalctl -u agentkeysd says why it stopped), \
             or point --bus / AGENTKEYS_BUS at the bus it runs on",
        ));
    }
    let op = client.op("report its version", Subject::Other);
    client.daemon_facts(&op).await
}

/// An error report as a failed check: the problem and cause as the detail, its fix.
fn failed(r: &Report) -> Finding {
    let detail = match &r.cause {
        Some(c) => format!("{} ({c})", r.problem),
        None => r.problem.clone(),
    };
    Finding::fail(
        CHECK,
        detail,
        r.fix
            .clone()
            .unwrap_or_else(|| "see the daemon's log: journalctl -u agentkeysd".to_owned()),
    )
}

fn judge(f: &DaemonFacts, local_landlock: Option<u32>) -> Finding {
    let base = format!(
        "agentkeysd {} answers; secret memory {}",
        f.version, f.memory
    );
    if f.version != CLI_VERSION {
        return Finding::warn(
            CHECK,
            format!("{base}; but this agentkeysctl is {CLI_VERSION}"),
            "install matching versions, or restart the daemon after an upgrade: sudo systemctl restart agentkeysd",
        );
    }
    // Only a daemon that says (0.1.0 onwards) is compared; 0 means it cannot use Landlock.
    if let (Ok(Some(0)), Some(abi)) = (get_u32(&f.features, "landlock_abi"), local_landlock) {
        return Finding::warn(
            CHECK,
            format!("{base}; but it cannot use Landlock, which this shell can (ABI {abi})"),
            "its unit's SystemCallFilter= must allow landlock_create_ruleset, landlock_add_rule and landlock_restrict_self",
        );
    }
    Finding::ok(CHECK, format!("{base} (same version as agentkeysctl)"))
}

#[cfg(test)]
mod tests {
    use agentkeysd::api::dict::DictBuilder;

    use super::*;
    use crate::commands::doctor::Status;

    fn facts(version: &str, landlock_abi: u32) -> DaemonFacts {
        DaemonFacts {
            version: version.to_owned(),
            memory: "memfd_secret".to_owned(),
            features: DictBuilder::new().u32("landlock_abi", landlock_abi).build(),
        }
    }

    #[test]
    fn same_version_is_ok_and_names_it() {
        let f = judge(&facts(CLI_VERSION, 7), Some(7));
        assert_eq!(f.status, Status::Ok);
        assert!(f.detail.contains(CLI_VERSION), "{}", f.detail);
    }

    #[test]
    fn another_version_warns_with_a_restart_fix() {
        let f = judge(&facts("0.0.1", 7), Some(7));
        assert_eq!(f.status, Status::Warn);
        assert!(f.detail.contains("0.0.1"));
        assert!(
            f.fix
                .unwrap_or_default()
                .contains("systemctl restart agentkeysd")
        );
    }

    #[test]
    fn a_daemon_without_landlock_warns_when_this_shell_has_it() {
        assert_eq!(judge(&facts(CLI_VERSION, 0), Some(7)).status, Status::Warn);
        assert_eq!(judge(&facts(CLI_VERSION, 0), None).status, Status::Ok);
    }
}
