//! `user_namespaces`: can this kernel create a user namespace? Probed for real: a forked
//! child unshares one and writes its uid map (`agentkeysd::sandbox::probe`). Missing fails:
//! every agent runs in its own.

use agentkeysd::sandbox::probe::{self, UserNamespaces};

use super::Finding;

const CHECK: &str = "user_namespaces";

pub fn check() -> Finding {
    match probe::user_namespaces() {
        UserNamespaces::Available { uid } => {
            Finding::ok(CHECK, format!("created one with a uid map, as uid {uid}"))
        }
        UserNamespaces::Refused {
            uid,
            step,
            error,
            max_user_namespaces,
        } => {
            let fix = match (error.raw_os_error(), max_user_namespaces) {
                (Some(libc::ENOSPC), Some(0)) => {
                    "user.max_user_namespaces is 0: sysctl -w user.max_user_namespaces=15000 \
                     (and set it in /etc/sysctl.d/)"
                        .to_owned()
                }
                (Some(libc::ENOSPC), _) => {
                    "the user-namespace limit is used up: raise user.max_user_namespaces".to_owned()
                }
                (Some(libc::EPERM), _) if uid != 0 => {
                    "unprivileged user namespaces are off here (kernel.unprivileged_userns_clone=0 \
                     or an AppArmor restriction); agentkeysd creates them as root, so run \
                     agentkeysctl doctor as root to check what the runner gets"
                        .to_owned()
                }
                (Some(libc::EINVAL), _) | (Some(libc::ENOSYS), _) => {
                    "use a kernel built with CONFIG_USER_NS=y".to_owned()
                }
                _ => "check the kernel log and any LSM policy that restricts user namespaces"
                    .to_owned(),
            };
            Finding::fail(
                CHECK,
                format!("cannot create one as uid {uid}: {step} failed: {error}"),
                fix,
            )
        }
        UserNamespaces::ProbeFailed(e) => Finding::skip(
            CHECK,
            format!("the probe could not run (fork/pipe/wait: {e})"),
        ),
    }
}
