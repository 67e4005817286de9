//! `selinux`: the SELinux mode, and — where SELinux is active — whether the agentkeysd
//! policy module is installed (without it the daemon runs unconfined). SELinux not active
//! (Debian, Ubuntu) is fine: there is nothing to check.
//!
//! The mode is the running kernel's (`/sys/fs/selinux/enforce`); the module store is an
//! installed file, looked for under `--root`.

use std::path::Path;

use super::{Finding, Root};

const CHECK: &str = "selinux";

const ENFORCE: &str = "/sys/fs/selinux/enforce";

pub fn check(root: &Root) -> Finding {
    let mode = match std::fs::read_to_string(ENFORCE) {
        Err(_) => return Finding::ok(CHECK, "not active on this kernel: nothing to confine with"),
        Ok(t) if t.trim() == "1" => "enforcing",
        Ok(_) => "permissive",
    };
    let policy = std::fs::read_to_string(root.path("/etc/selinux/config"))
        .ok()
        .and_then(|t| policy_type(&t))
        .unwrap_or_else(|| "targeted".to_owned());
    let store = root.path(&format!("/var/lib/selinux/{policy}/active/modules"));
    if module_installed(&store, "agentkeysd") {
        return Finding::ok(
            CHECK,
            format!("{mode}; the agentkeysd module is installed ({policy})"),
        );
    }
    Finding::warn(
        CHECK,
        format!(
            "{mode}, but no agentkeysd module in {}: the daemon runs unconfined",
            store.display()
        ),
        "sudo semodule -i /usr/share/selinux/packages/agentkeysd.pp && \
         sudo restorecon -R /usr/sbin/agentkeysd /var/lib/agentkeys /run/agentkeys (see selinux/README.md)",
    )
}

/// `SELINUXTYPE=targeted` from `/etc/selinux/config`.
fn policy_type(config: &str) -> Option<String> {
    config.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k.trim() == "SELINUXTYPE").then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// The store keeps modules as `<store>/<priority>/<name>/`.
fn module_installed(store: &Path, name: &str) -> bool {
    std::fs::read_dir(store)
        .map(|prios| prios.flatten().any(|p| p.path().join(name).is_dir()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_type_is_read_from_the_config() {
        let cfg = "# comment\nSELINUX=enforcing\nSELINUXTYPE=mls\n";
        assert_eq!(policy_type(cfg).as_deref(), Some("mls"));
        assert_eq!(policy_type("SELINUX=permissive\n"), None);
    }

    #[test]
    fn modules_are_found_at_any_priority() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!module_installed(dir.path(), "agentkeysd"));
        std::fs::create_dir_all(dir.path().join("400/agentkeysd")).unwrap();
        assert!(module_installed(dir.path(), "agentkeysd"));
    }
}
