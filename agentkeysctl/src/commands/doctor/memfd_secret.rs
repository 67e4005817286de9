//! `memfd_secret`: can decrypted secrets live outside the kernel's direct map?
//!
//! Missing is a warning, not a failure: with the default `secret_memory = "prefer"` the
//! daemon falls back to mlocked memory and says so in `agentkeysctl status`.

use agentkeysd::vault::{MemfdSecret, memfd_secret};

use super::Finding;

const CHECK: &str = "memfd_secret";

pub fn check() -> Finding {
    match memfd_secret() {
        MemfdSecret::Available => Finding::ok(
            CHECK,
            "available: secrets live in pages no other process, not even root, can read",
        ),
        MemfdSecret::Unavailable(e) => {
            let fix = match e.raw_os_error() {
                Some(libc::ENOSYS) => {
                    "use Linux >= 5.14 built with CONFIG_SECRETMEM=y; before 6.5 also boot with \
                     secretmem.enable=1 (until then agentkeysd keeps secrets in mlocked memory)"
                }
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    "a seccomp filter or LSM around this process denies memfd_secret; allow it \
                     (for agentkeysd.service: SystemCallFilter= must not exclude it)"
                }
                _ => {
                    "check RLIMIT_MEMLOCK (ulimit -l) and the kernel log; agentkeysd falls \
                     back to mlocked memory until this works"
                }
            };
            Finding::warn(
                CHECK,
                format!("not available ({e}): secrets would sit in mlocked memory instead"),
                fix,
            )
        }
    }
}
