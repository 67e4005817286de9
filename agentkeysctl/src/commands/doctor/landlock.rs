//! `landlock`: the Landlock ABI the runner confines agents with. Missing fails: the runner
//! refuses to start an agent it cannot confine (DESIGN §6 step 6) unless configured
//! best-effort. An ABI below 4 warns: TCP rules need 4.

use agentkeysd::sandbox::probe::{self, Landlock, landlock_abi_covers};

use super::Finding;

const CHECK: &str = "landlock";

/// The first ABI with TCP bind/connect rules (Linux 6.7).
const TCP_ABI: u32 = 4;

pub fn check() -> Finding {
    match probe::landlock() {
        Landlock::Abi(abi) if abi >= TCP_ABI => {
            Finding::ok(CHECK, format!("ABI {abi}: {}", landlock_abi_covers(abi)))
        }
        Landlock::Abi(abi) => Finding::warn(
            CHECK,
            format!(
                "ABI {abi} ({}): agents' network connections cannot be confined by Landlock",
                landlock_abi_covers(abi)
            ),
            "upgrade to Linux >= 6.7 (Landlock ABI 4) so TCP connect rules are enforced",
        ),
        Landlock::NotBuilt => Finding::fail(
            CHECK,
            "not in this kernel (ENOSYS): agents cannot be confined to their workspace",
            "use a kernel built with CONFIG_SECURITY_LANDLOCK=y (Linux >= 5.13; Debian and Fedora kernels have it)",
        ),
        Landlock::Disabled => Finding::fail(
            CHECK,
            "built in but not enabled at boot (EOPNOTSUPP)",
            "add landlock to the kernel's LSM list: boot with lsm=landlock,<the current list from /sys/kernel/security/lsm>",
        ),
        Landlock::Error(e) => Finding::fail(
            CHECK,
            format!("the kernel refused the ABI query: {e}"),
            "a seccomp filter around this process may deny landlock_create_ruleset; run doctor outside any sandbox",
        ),
    }
}
