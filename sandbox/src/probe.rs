//! What this kernel offers the sandbox, asked for real: each probe makes the call the
//! runner will make and reports what happened, as a typed answer that says
//! why a feature is missing — never a bare `bool`. `agentkeysctl doctor` turns these into
//! findings; the daemon reports some of them in its `Features` property.
//!
//! Probes change nothing about the calling process: the user-namespace probe runs in a
//! forked child; the others ask the kernel a question (`landlock_create_ruleset` with the
//! VERSION flag, `seccomp(SECCOMP_GET_ACTION_AVAIL)`) or create and close a descriptor.

use std::io;

use super::cgroups::{self, CgroupLayout};
use super::sys::{self, UsernsStep};

/// The Landlock ABI this kernel offers.
#[derive(Debug)]
pub enum Landlock {
    /// Landlock is enabled; the highest ABI version (1 = Linux 5.13, 4 = 6.7 adds TCP, 6 = 6.12 adds scopes, 7 = 6.15).
    Abi(u32),
    /// `ENOSYS`: the kernel was built without `CONFIG_SECURITY_LANDLOCK`.
    NotBuilt,
    /// `EOPNOTSUPP`: built in, but not among the LSMs enabled at boot (`lsm=`).
    Disabled,
    /// Any other error (e.g. `EPERM` from a seccomp filter around this process).
    Error(io::Error),
}

impl Landlock {
    /// The ABI version, `None` when Landlock cannot be used.
    pub fn abi(&self) -> Option<u32> {
        match self {
            Landlock::Abi(v) => Some(*v),
            _ => None,
        }
    }
}

/// What each Landlock ABI adds, for people ("filesystem, TCP, scopes").
pub fn landlock_abi_covers(abi: u32) -> &'static str {
    match abi {
        0 => "nothing",
        1 => "filesystem",
        2 => "filesystem with rename/link across directories",
        3 => "filesystem incl. truncate",
        4 => "filesystem, TCP bind/connect",
        5 => "filesystem incl. device ioctl, TCP bind/connect",
        6 => "filesystem, TCP bind/connect, signal and abstract-socket scopes",
        _ => "filesystem, TCP bind/connect, signal and abstract-socket scopes, audit logging",
    }
}

/// Asks the kernel for its Landlock ABI version.
pub fn landlock() -> Landlock {
    match sys::landlock_abi_version() {
        Ok(v) => Landlock::Abi(v),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOSYS) => Landlock::NotBuilt,
            Some(libc::EOPNOTSUPP) => Landlock::Disabled,
            _ => Landlock::Error(e),
        },
    }
}

/// Outcome of creating a user namespace in a child.
#[derive(Debug)]
pub enum UserNamespaces {
    /// `unshare(CLONE_NEWUSER)` and a uid map worked for this uid.
    Available { uid: u32 },
    /// The kernel refused at `step` (e.g. `ENOSPC` when `user.max_user_namespaces` is 0,
    /// `EPERM` from a sysctl or LSM that forbids unprivileged ones).
    Refused {
        uid: u32,
        step: &'static str,
        error: io::Error,
        /// `/proc/sys/user/max_user_namespaces`, when readable.
        max_user_namespaces: Option<u64>,
    },
    /// The probe itself could not run (fork or pipe failed).
    ProbeFailed(io::Error),
}

/// Creates a user namespace for real, in a forked child.
pub fn user_namespaces() -> UserNamespaces {
    let uid = nix::unistd::getuid().as_raw();
    match sys::probe_user_namespace() {
        Ok(Ok(())) => UserNamespaces::Available { uid },
        Ok(Err((step, error))) => UserNamespaces::Refused {
            uid,
            step: match step {
                UsernsStep::Unshare => "unshare(CLONE_NEWUSER)",
                UsernsStep::Setgroups => "writing /proc/self/setgroups",
                UsernsStep::UidMap => "writing /proc/self/uid_map",
            },
            error,
            max_user_namespaces: std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        },
        Err(e) => UserNamespaces::ProbeFailed(e),
    }
}

/// What seccomp offers.
#[derive(Debug)]
pub struct Seccomp {
    /// Filter mode with the actions the runner's policy uses (`SECCOMP_RET_ERRNO`,
    /// `SECCOMP_RET_KILL_PROCESS`): `Ok`, or the refusal.
    pub filter: Result<(), io::Error>,
    /// This process's own seccomp mode (`/proc/self/status`: 0 none, 1 strict, 2 filter);
    /// `None` when the kernel has no seccomp at all or the file is unreadable.
    pub current_mode: Option<u32>,
    /// How many filters already sit on this process.
    pub current_filters: Option<u32>,
}

/// Asks whether seccomp filter mode supports the actions the runner uses.
pub fn seccomp() -> Seccomp {
    let filter = sys::seccomp_action_available(libc::SECCOMP_RET_ERRNO)
        .and_then(|()| sys::seccomp_action_available(libc::SECCOMP_RET_KILL_PROCESS));
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    Seccomp {
        filter,
        current_mode: status_field(&status, "Seccomp"),
        current_filters: status_field(&status, "Seccomp_filters"),
    }
}

/// A numeric field of `/proc/PID/status` (`Seccomp:\t2`).
fn status_field(status: &str, key: &str) -> Option<u32> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Where cgroups are mounted and which controllers each hierarchy has.
pub fn cgroups() -> io::Result<CgroupLayout> {
    cgroups::read_layout()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_by_exact_key() {
        let status = "Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t3\nNoNewPrivs:\t1\n";
        assert_eq!(status_field(status, "Seccomp"), Some(2));
        assert_eq!(status_field(status, "Seccomp_filters"), Some(3));
        assert_eq!(status_field(status, "Missing"), None);
        assert_eq!(status_field("Seccomp:\tx\n", "Seccomp"), None);
    }

    #[test]
    fn every_abi_is_described() {
        for abi in 0..10 {
            assert!(!landlock_abi_covers(abi).is_empty());
        }
        assert!(landlock_abi_covers(7).contains("scopes"));
        assert!(landlock_abi_covers(4).contains("TCP"));
    }
}
