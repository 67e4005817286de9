//! `dbus_policy`: the busconfig that lets root own `dev.agentkeys.Daemon1` and everyone
//! call it. Without it the system bus refuses the daemon its name (it cannot start) and
//! refuses clients their calls. The activation file is checked too: without it the daemon
//! is not started on demand (a warning).

use std::path::PathBuf;

use super::{Finding, Root, describe_io};

const CHECK: &str = "dbus_policy";

/// Where dbus-daemon and dbus-broker read system-bus policies: the package's place first.
const POLICY_PATHS: [&str; 2] = [
    "/usr/share/dbus-1/system.d/dev.agentkeys.Daemon1.conf",
    "/etc/dbus-1/system.d/dev.agentkeys.Daemon1.conf",
];

const ACTIVATION_PATH: &str = "/usr/share/dbus-1/system-services/dev.agentkeys.Daemon1.service";

const BUS_NAME: &str = "dev.agentkeys.Daemon1";

const REINSTALL: &str = "reinstall the agentkeys package (it ships \
    /usr/share/dbus-1/system.d/dev.agentkeys.Daemon1.conf), or copy systemd/dev.agentkeys.Daemon1.conf \
    from the source tree there; then reload the bus: sudo systemctl reload dbus";

pub fn check(root: &Root) -> Finding {
    let Some((path, text)) = POLICY_PATHS.iter().find_map(|p| {
        let path = root.path(p);
        std::fs::read_to_string(&path).ok().map(|t| (path, t))
    }) else {
        let why = std::fs::read_to_string(root.path(POLICY_PATHS[0]))
            .err()
            .map(|e| describe_io(&e))
            .unwrap_or_default();
        return Finding::fail(
            CHECK,
            format!(
                "no policy for {BUS_NAME} in {} or {} ({why}): the bus will not let agentkeysd own its name",
                root.path(POLICY_PATHS[0]).display(),
                root.path(POLICY_PATHS[1]).display()
            ),
            REINSTALL,
        );
    };
    let problems = judge(&text);
    if !problems.is_empty() {
        return Finding::fail(
            CHECK,
            format!("{} {}", path.display(), problems.join(" and ")),
            REINSTALL,
        );
    }
    let activation: PathBuf = root.path(ACTIVATION_PATH);
    if !activation.is_file() {
        return Finding::warn(
            CHECK,
            format!(
                "{} installed, but {} is missing: agentkeysd is not started on demand",
                path.display(),
                activation.display()
            ),
            "reinstall the agentkeys package, or start the daemon yourself: sudo systemctl enable --now agentkeysd",
        );
    }
    Finding::ok(
        CHECK,
        format!("{} installed (with the activation file)", path.display()),
    )
}

/// What a policy text lacks: an `own` rule and a `send_destination` rule for the name.
/// (Attribute quotes may be single or double.)
fn judge(text: &str) -> Vec<&'static str> {
    let t = text.replace('\'', "\"");
    let mut problems = Vec::new();
    if !t.contains(&format!("own=\"{BUS_NAME}\"")) {
        problems.push("does not let root own dev.agentkeys.Daemon1");
    }
    if !t.contains(&format!("send_destination=\"{BUS_NAME}\"")) {
        problems.push("does not let anyone call it");
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_needs_own_and_send_rules() {
        let good = r#"<busconfig>
  <policy user="root"><allow own="dev.agentkeys.Daemon1"/></policy>
  <policy context="default"><allow send_destination='dev.agentkeys.Daemon1'/></policy>
</busconfig>"#;
        assert!(judge(good).is_empty());
        assert_eq!(judge("<busconfig/>").len(), 2);
        assert_eq!(
            judge(r#"<allow own="dev.agentkeys.Daemon1"/>"#),
            ["does not let anyone call it"]
        );
    }
}
