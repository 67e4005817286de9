//! `state_dir`: `/var/lib/agentkeys` holds the database and the host master key, so it must
//! be root's and 0700, and `master.key` (when the key is not a systemd credential) 0600.
//!
//! Someone other than root cannot look inside a correct state directory: that is said,
//! not failed. A directory not yet created warns: the first start creates it
//! (`StateDirectory=`, tmpfiles.d).

use std::fs::Metadata;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Finding, Root, describe_io};

const CHECK: &str = "state_dir";

const STATE_DIR: &str = "/var/lib/agentkeys";

pub fn check(root: &Root) -> Finding {
    let dir = root.path(STATE_DIR);
    let shown = dir.display().to_string();
    let meta = match std::fs::metadata(&dir) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Finding::warn(
                CHECK,
                format!("{shown} does not exist yet"),
                "it is created at the first start: sudo systemctl start agentkeysd \
                 (or sudo systemd-tmpfiles --create agentkeys.conf)",
            );
        }
        Err(e) => {
            return Finding::skip(CHECK, format!("cannot stat {shown}: {}", describe_io(&e)));
        }
    };
    if let Some(bad) = judge_dir(&shown, &meta) {
        return bad;
    }
    let dmode = meta.mode() & 0o7777;
    let key = dir.join("master.key");
    match std::fs::metadata(&key) {
        Ok(m) => judge_key(&format!("{shown} is root's, mode {dmode:04o}"), &key, &m),
        Err(e) if e.kind() == ErrorKind::NotFound => Finding::ok(
            CHECK,
            format!(
                "{shown} is root's, mode {dmode:04o}; no master.key (the key comes from the systemd \
                 credential agentkeys.master, or is created at the first start)"
            ),
        ),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Finding::ok(
            CHECK,
            format!(
                "{shown} is root's, mode {dmode:04o}; uid {} cannot look inside (as intended): \
                 run doctor as root to check master.key",
                nix::unistd::geteuid()
            ),
        ),
        Err(e) => Finding::skip(
            CHECK,
            format!("cannot stat {}: {}", key.display(), describe_io(&e)),
        ),
    }
}

/// The directory's own owner and mode; `None` when they are right.
fn judge_dir(shown: &str, m: &Metadata) -> Option<Finding> {
    let mode = m.mode() & 0o7777;
    if !m.is_dir() {
        return Some(Finding::fail(
            CHECK,
            format!("{shown} is not a directory"),
            format!(
                "move it away and let agentkeysd create the directory: sudo mv {shown} {shown}.old"
            ),
        ));
    }
    if m.uid() != 0 {
        return Some(Finding::fail(
            CHECK,
            format!(
                "{shown} is owned by uid {}, not root: that user can read the key store",
                m.uid()
            ),
            format!("sudo chown -R root:root {shown}"),
        ));
    }
    if mode & 0o077 != 0 {
        return Some(Finding::fail(
            CHECK,
            format!("{shown} has mode {mode:04o}: other users can reach the database and keys"),
            format!("sudo chmod 0700 {shown}"),
        ));
    }
    None
}

fn judge_key(dir_ok: &str, key: &Path, m: &Metadata) -> Finding {
    let shown = key.display();
    let mode = m.mode() & 0o7777;
    if m.uid() != 0 {
        return Finding::fail(
            CHECK,
            format!("{shown} is owned by uid {}, not root", m.uid()),
            format!("sudo chown root:root {shown}"),
        );
    }
    if mode & 0o077 != 0 {
        return Finding::fail(
            CHECK,
            format!("{shown} has mode {mode:04o}: the host master key is exposed"),
            format!("sudo chmod 0600 {shown}"),
        );
    }
    Finding::ok(CHECK, format!("{dir_ok}; master.key mode {mode:04o}"))
}
