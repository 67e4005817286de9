//! `pam_module`: `pam_agentkeys.so` is in the distribution's PAM module directory, owned by
//! root and writable by nobody else (a writable PAM module is root for whoever can write).

use std::os::unix::fs::MetadataExt;

use super::{Finding, Root};

const CHECK: &str = "pam_module";

/// Where distributions keep PAM modules: Debian's multiarch directories, Fedora's lib64,
/// then the generic ones.
const DIRS: [&str; 6] = [
    "/usr/lib/x86_64-linux-gnu/security",
    "/lib/x86_64-linux-gnu/security",
    "/usr/lib64/security",
    "/lib64/security",
    "/usr/lib/security",
    "/lib/security",
];

const MODULE: &str = "pam_agentkeys.so";

pub fn check(root: &Root) -> Finding {
    let found = DIRS
        .iter()
        .map(|d| root.path(d).join(MODULE))
        .find_map(|p| std::fs::metadata(&p).ok().map(|m| (p, m)));
    let Some((path, meta)) = found else {
        return Finding::fail(
            CHECK,
            format!(
                "{MODULE} is in none of {}: logins cannot unlock login-protected credentials",
                DIRS.join(", ")
            ),
            "install the agentkeys package (Debian: /usr/lib/x86_64-linux-gnu/security/pam_agentkeys.so, \
             Fedora: /usr/lib64/security/pam_agentkeys.so)",
        );
    };
    let shown = path.display();
    if !meta.is_file() {
        return Finding::fail(
            CHECK,
            format!("{shown} is not a regular file"),
            "reinstall the agentkeys package",
        );
    }
    if meta.uid() != 0 {
        return Finding::fail(
            CHECK,
            format!(
                "{shown} is owned by uid {}, not root: that user controls every login",
                meta.uid()
            ),
            format!("sudo chown root:root {shown}"),
        );
    }
    if meta.mode() & 0o022 != 0 {
        return Finding::fail(
            CHECK,
            format!(
                "{shown} is writable by group or others (mode {:04o}): they control every login",
                meta.mode() & 0o7777
            ),
            format!("sudo chmod 0644 {shown}"),
        );
    }
    Finding::ok(CHECK, format!("{shown} installed"))
}
