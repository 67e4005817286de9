//! `agentkeysd/data/seccomp.toml`: syscalls the agent may not make, each with its errno and
//! an optional condition on one argument, compiled to BPF with `seccompiler`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Deserialize;

use super::{PolicyError, check_why};

const FILE: &str = "seccomp.toml";
const SHIPPED: &str = include_str!("../../../data/seccomp.toml");

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
    fn raw(self) -> u32 {
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
        Self::parse(SHIPPED)
    }

    /// Parses and checks a policy text.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let file: File =
            toml::from_str(text).map_err(|source| PolicyError::Parse { file: FILE, source })?;
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

    /// One BPF program per errno (seccompiler gives a filter one match action), plus the
    /// guard that refuses foreign-ABI syscall numbers; the kernel runs them all and the
    /// strictest answer wins.
    pub fn compile(&self) -> Result<Vec<BpfProgram>, seccompiler::BackendError> {
        let arch = TargetArch::try_from(std::env::consts::ARCH)?;
        let mut by_errno: BTreeMap<Errno, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
        for r in &self.rules {
            let chain = match &r.condition {
                Condition::Always => Vec::new(),
                Condition::AnyBit { arg, bits } => bits
                    .iter()
                    .map(|b| {
                        SeccompRule::new(vec![SeccompCondition::new(
                            *arg,
                            SeccompCmpArgLen::Qword,
                            SeccompCmpOp::MaskedEq(*b),
                            *b,
                        )?])
                    })
                    .collect::<Result<_, _>>()?,
                Condition::Equals { arg, values } => values
                    .iter()
                    .map(|v| {
                        SeccompRule::new(vec![SeccompCondition::new(
                            *arg,
                            SeccompCmpArgLen::Dword,
                            SeccompCmpOp::Eq,
                            *v,
                        )?])
                    })
                    .collect::<Result<_, _>>()?,
            };
            by_errno.entry(r.errno).or_default().insert(r.nr, chain);
        }
        let mut out = vec![x32_guard()];
        for (errno, rules) in by_errno {
            let filter = SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno.raw()),
                arch,
            )?;
            out.push(filter.try_into()?);
        }
        Ok(out)
    }
}

/// On x86-64 the same arch token also carries the x32 ABI (syscall numbers with bit 30
/// set), which a name-keyed filter does not see: `ptrace` through x32 would slip past. This
/// program answers ENOSYS to any number ≥ 0x4000_0000 (elsewhere it allows everything).
fn x32_guard() -> BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = 0x20;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    let errno = 0x0005_0000 | libc::ENOSYS as u32; // SECCOMP_RET_ERRNO | ENOSYS
    let allow = 0x7fff_0000; // SECCOMP_RET_ALLOW
    if cfg!(target_arch = "x86_64") {
        vec![
            // seccomp_data.nr is at offset 0.
            sock_filter {
                code: LD_W_ABS,
                jt: 0,
                jf: 0,
                k: 0,
            },
            sock_filter {
                code: JGE_K,
                jt: 0,
                jf: 1,
                k: 0x4000_0000,
            },
            sock_filter {
                code: RET_K,
                jt: 0,
                jf: 0,
                k: errno,
            },
            sock_filter {
                code: RET_K,
                jt: 0,
                jf: 0,
                k: allow,
            },
        ]
    } else {
        vec![sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: allow,
        }]
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
        let progs = p.compile().unwrap();
        // x32 guard, EPERM, ENOSYS.
        assert_eq!(progs.len(), 3);
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
