//! `seccomp`: filter mode with the actions the runner's policy uses (`SECCOMP_RET_ERRNO`,
//! `SECCOMP_RET_KILL_PROCESS`). Missing fails: the last step before an agent's exec
//! installs the filter. A filter already on this process is mentioned, not failed: the
//! kernel stacks filters.

use agentkeysd::sandbox::probe;

use super::Finding;

const CHECK: &str = "seccomp";

pub fn check() -> Finding {
    let s = probe::seccomp();
    let current = match (s.current_mode, s.current_filters) {
        (Some(2), Some(n)) => format!("; this process already runs under {n} filter(s)"),
        (Some(1), _) => "; this process is in strict mode".to_owned(),
        _ => String::new(),
    };
    match s.filter {
        Ok(()) => Finding::ok(
            CHECK,
            format!("filter mode with errno and kill-process actions{current}"),
        ),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
            Finding::fail(
                CHECK,
                format!("the seccomp() call itself was refused ({e}){current}"),
                "a filter or LSM around this process denies seccomp(); run agentkeysctl doctor \
                 outside any sandbox (for agentkeysd.service: SystemCallFilter= must allow seccomp)",
            )
        }
        Err(e) if s.current_mode.is_none() => Finding::fail(
            CHECK,
            format!("not in this kernel ({e})"),
            "use a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y",
        ),
        Err(e) => Finding::fail(
            CHECK,
            format!("filter mode lacks the errno or kill-process action ({e}){current}"),
            "use Linux >= 4.14 built with CONFIG_SECCOMP_FILTER=y",
        ),
    }
}
