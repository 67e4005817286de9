//! `sandbox/data/seccomp.toml`: syscalls the agent may not make, each with its errno and
//! an optional condition on one argument, compiled to one BPF program by [`super::bpf`].

use serde::Deserialize;

use super::bpf::{Program, TooLarge};
use super::{PolicyError, check_why};

const FILE: &str = "seccomp.toml";
const SHIPPED: &str = include_str!(concat!(env!("OUT_DIR"), "/seccomp.json"));

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    rule: Vec<RawRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    syscall: String,
    errno: String,
    why: String,
    arg: Option<u8>,
    #[serde(default)]
    any_bit: Vec<String>,
    #[serde(default)]
    equals: Vec<String>,
}

/// The errno a denied call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Errno {
    /// "Operation not permitted": the call exists, the sandbox forbids it.
    Eperm,
    /// "Function not implemented": makes libc fall back to an older call (clone3 → clone).
    Enosys,
}

impl Errno {
    pub(super) fn raw(self) -> u32 {
        match self {
            Errno::Eperm => libc::EPERM as u32,
            Errno::Enosys => libc::ENOSYS as u32,
        }
    }
}

/// When a rule applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Always.
    Always,
    /// Argument `arg` has any of these bits set.
    AnyBit { arg: u8, bits: Vec<u64> },
    /// Argument `arg` (as a 32-bit value) equals one of these.
    Equals { arg: u8, values: Vec<u64> },
}

/// One checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub syscall: String,
    pub nr: i64,
    pub errno: Errno,
    pub condition: Condition,
}

/// The whole policy.
#[derive(Debug, Clone)]
pub struct SeccompPolicy {
    pub rules: Vec<Rule>,
}

impl SeccompPolicy {
    /// The shipped policy.
    pub fn shipped() -> Result<Self, PolicyError> {
        Self::check(super::decode(FILE, SHIPPED, true)?)
    }

    /// Parses and checks a policy as written (TOML).
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        Self::check(super::decode(FILE, text, false)?)
    }

    fn check(file: File) -> Result<Self, PolicyError> {
        let mut rules = Vec::with_capacity(file.rule.len());
        for r in file.rule {
            let bad = |problem: &str| PolicyError::Rule {
                file: FILE,
                rule: r.syscall.clone(),
                problem: problem.to_owned(),
            };
            check_why(FILE, &r.syscall, &r.why)?;
            let nr = syscall_number(&r.syscall).ok_or_else(|| bad("unknown syscall name"))?;
            let errno = match r.errno.as_str() {
                "EPERM" => Errno::Eperm,
                "ENOSYS" => Errno::Enosys,
                _ => return Err(bad("errno must be EPERM or ENOSYS")),
            };
            let names = |list: &[String]| -> Result<Vec<u64>, PolicyError> {
                list.iter()
                    .map(|n| constant(n).ok_or_else(|| bad(&format!("unknown constant {n}"))))
                    .collect()
            };
            let condition = match (r.arg, r.any_bit.is_empty(), r.equals.is_empty()) {
                (None, true, true) => Condition::Always,
                (Some(arg), false, true) if arg < 6 => Condition::AnyBit {
                    arg,
                    bits: names(&r.any_bit)?,
                },
                (Some(arg), true, false) if arg < 6 => Condition::Equals {
                    arg,
                    values: names(&r.equals)?,
                },
                _ => {
                    return Err(bad(
                        "a condition is `arg` (0-5) with exactly one of `any_bit` or `equals`",
                    ));
                }
            };
            if rules.iter().any(|x: &Rule| x.nr == nr) {
                return Err(bad("listed twice; merge the rules"));
            }
            rules.push(Rule {
                syscall: r.syscall,
                nr,
                errno,
                condition,
            });
        }
        Ok(SeccompPolicy { rules })
    }

    /// The one BPF program that enforces this policy ([`super::bpf`]).
    pub fn program(&self) -> Result<Program, TooLarge> {
        super::bpf::compile(&self.rules)
    }
}

/// Flag and request constants rules may name.
fn constant(name: &str) -> Option<u64> {
    Some(match name {
        "CLONE_NEWNS" => libc::CLONE_NEWNS as u64,
        "CLONE_NEWUSER" => libc::CLONE_NEWUSER as u64,
        "CLONE_NEWPID" => libc::CLONE_NEWPID as u64,
        "CLONE_NEWNET" => libc::CLONE_NEWNET as u64,
        "CLONE_NEWIPC" => libc::CLONE_NEWIPC as u64,
        "CLONE_NEWUTS" => libc::CLONE_NEWUTS as u64,
        "CLONE_NEWCGROUP" => libc::CLONE_NEWCGROUP as u64,
        "TIOCSTI" => libc::TIOCSTI,
        "TIOCLINUX" => libc::TIOCLINUX,
        _ => return None,
    })
}

/// The syscalls a rule may name, by name (libc's per-architecture numbers).
fn syscall_number(name: &str) -> Option<i64> {
    macro_rules! table {
        ($($n:ident),* $(,)?) => {
            match name {
                $(stringify!($n) => Some(sysnum::$n),)*
                _ => arch_only(name),
            }
        };
    }
    table!(
        ptrace,
        process_vm_readv,
        process_vm_writev,
        kcmp,
        pidfd_getfd,
        keyctl,
        add_key,
        request_key,
        bpf,
        perf_event_open,
        userfaultfd,
        io_uring_setup,
        io_uring_enter,
        io_uring_register,
        mount,
        umount2,
        pivot_root,
        chroot,
        move_mount,
        open_tree,
        fsopen,
        fsconfig,
        fsmount,
        fspick,
        mount_setattr,
        unshare,
        setns,
        clone,
        clone3,
        ioctl,
        kexec_load,
        kexec_file_load,
        init_module,
        finit_module,
        delete_module,
        open_by_handle_at,
        name_to_handle_at,
        swapon,
        swapoff,
        reboot,
        acct,
        quotactl,
        settimeofday,
        clock_settime,
        clock_adjtime,
        adjtimex,
        syslog,
        vhangup,
        personality,
    )
}

/// Calls that exist only on some architectures.
fn arch_only(name: &str) -> Option<i64> {
    #[cfg(target_arch = "x86_64")]
    {
        match name {
            "iopl" => Some(libc::SYS_iopl),
            "ioperm" => Some(libc::SYS_ioperm),
            "lookup_dcookie" => Some(libc::SYS_lookup_dcookie),
            "uselib" => Some(libc::SYS_uselib),
            _ => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        None
    }
}

/// `libc::SYS_<name>` under the plain name, for [`syscall_number`]'s table.
#[allow(non_upper_case_globals)]
mod sysnum {
    pub use libc::{
        SYS_acct as acct, SYS_add_key as add_key, SYS_adjtimex as adjtimex, SYS_bpf as bpf,
        SYS_chroot as chroot, SYS_clock_adjtime as clock_adjtime,
        SYS_clock_settime as clock_settime, SYS_clone as clone, SYS_clone3 as clone3,
        SYS_delete_module as delete_module, SYS_finit_module as finit_module,
        SYS_fsconfig as fsconfig, SYS_fsmount as fsmount, SYS_fsopen as fsopen,
        SYS_fspick as fspick, SYS_init_module as init_module, SYS_io_uring_enter as io_uring_enter,
        SYS_io_uring_register as io_uring_register, SYS_io_uring_setup as io_uring_setup,
        SYS_ioctl as ioctl, SYS_kcmp as kcmp, SYS_kexec_file_load as kexec_file_load,
        SYS_kexec_load as kexec_load, SYS_keyctl as keyctl, SYS_mount as mount,
        SYS_mount_setattr as mount_setattr, SYS_move_mount as move_mount,
        SYS_name_to_handle_at as name_to_handle_at, SYS_open_by_handle_at as open_by_handle_at,
        SYS_open_tree as open_tree, SYS_perf_event_open as perf_event_open,
        SYS_personality as personality, SYS_pidfd_getfd as pidfd_getfd,
        SYS_pivot_root as pivot_root, SYS_process_vm_readv as process_vm_readv,
        SYS_process_vm_writev as process_vm_writev, SYS_ptrace as ptrace, SYS_quotactl as quotactl,
        SYS_reboot as reboot, SYS_request_key as request_key, SYS_setns as setns,
        SYS_settimeofday as settimeofday, SYS_swapoff as swapoff, SYS_swapon as swapon,
        SYS_syslog as syslog, SYS_umount2 as umount2, SYS_unshare as unshare,
        SYS_userfaultfd as userfaultfd, SYS_vhangup as vhangup,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_compiles() {
        let p = SeccompPolicy::shipped().unwrap();
        assert!(p.program().unwrap().len() > p.rules.len());
        for name in [
            "ptrace",
            "keyctl",
            "bpf",
            "mount",
            "io_uring_setup",
            "userfaultfd",
        ] {
            assert!(p.rules.iter().any(|r| r.syscall == name), "{name}");
        }
        let clone3 = p.rules.iter().find(|r| r.syscall == "clone3").unwrap();
        assert_eq!(clone3.errno, Errno::Enosys);
    }

    #[test]
    fn bad_rules_are_refused() {
        let cases = [
            (
                "syscall = \"nosuch\"\nerrno = \"EPERM\"\nwhy = \"because\"",
                "unknown syscall",
            ),
            ("syscall = \"bpf\"\nerrno = \"EPERM\"\nwhy = \"\"", "why"),
            (
                "syscall = \"bpf\"\nerrno = \"EIO\"\nwhy = \"because\"",
                "errno",
            ),
            (
                "syscall = \"clone\"\nerrno = \"EPERM\"\nwhy = \"because\"\nany_bit = [\"CLONE_NEWNS\"]",
                "condition",
            ),
            (
                "syscall = \"clone\"\nerrno = \"EPERM\"\nwhy = \"because\"\narg = 0\nany_bit = [\"NOPE\"]",
                "unknown constant",
            ),
        ];
        for (rule, want) in cases {
            let text = format!("[[rule]]\n{rule}\n");
            let err = SeccompPolicy::parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
        let twice = "[[rule]]\nsyscall = \"bpf\"\nerrno = \"EPERM\"\nwhy = \"because\"\n".repeat(2);
        assert!(
            SeccompPolicy::parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(SeccompPolicy::parse("[[rule]]\nsyscall = 1\n").is_err());
    }
}
