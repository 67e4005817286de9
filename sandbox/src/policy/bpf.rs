//! The seccomp policy compiled to one classic-BPF program, by hand rather than with a
//! filter library: one program is installed once (a library gives one program per errno,
//! each checked and JIT-compiled on its own, at every run's start), and the shape is the
//! simplest a reviewer can check:
//!
//! ```text
//!   arch != this arch            → KILL_PROCESS
//!   nr ≥ 0x4000_0000 (x32 ABI)   → ERRNO(ENOSYS)       (x86-64 only)
//!   a binary search on nr over the rules, sorted by nr:
//!     nr ≥ first nr of the upper half → search the upper half, else the lower half
//!   down to leaves of at most LEAF rules, each checked in turn:
//!     nr == rule.nr → [condition matches → ERRNO(rule.errno)] else ALLOW
//!   and a leaf none of whose rules matched: ALLOW
//! ```
//!
//! Why a search rather than one rule after the other: when the filter is installed, the
//! kernel runs it for every syscall number to find the calls it may allow without running
//! it again (`seccomp_cache_prepare`), with interrupts off, in the sandbox's start. A chain
//! of every rule made that about 150 µs here; the search visits a dozen instructions per
//! number instead of every rule's.
//!
//! Once a rule's number matched, no later rule can match (the policy refuses duplicates),
//! so a condition that does not hold ends in ALLOW without reloading the number. The tests
//! run the program in a small interpreter against `seccompiler`'s compilation of the same
//! rules, over every rule and a spread of arguments.

use super::seccomp::{Condition, Rule};

/// One classic-BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A whole program, ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
pub type Program = Vec<Insn>;

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;

/// Offsets into `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARGS: u32 = 16;

/// `AUDIT_ARCH_*` of the architecture this runner was built for.
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xc000_00b7;

/// Where the low and the high 32 bits of argument `arg` are (little-endian targets).
#[cfg(target_endian = "little")]
fn arg_words(arg: u8) -> (u32, u32) {
    let base = ARGS + 8 * u32::from(arg);
    (base, base + 4)
}

/// Most rules in a leaf of the search: checked one after the other, as cheap as one more
/// level of the search would be.
const LEAF: usize = 4;

/// Too large a rule for BPF's 8-bit jump offsets (never with the shipped policy).
#[derive(Debug, thiserror::Error)]
#[error("the seccomp rule for {syscall} is too large for one BPF jump ({len} instructions)")]
pub struct TooLarge {
    pub syscall: String,
    pub len: usize,
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// The program for `rules` (already checked by [`super::seccomp::SeccompPolicy`]).
pub fn compile(rules: &[Rule]) -> Result<Program, TooLarge> {
    let mut sorted: Vec<&Rule> = rules.iter().collect();
    sorted.sort_by_key(|r| r.nr);
    let mut p = vec![
        stmt(LD_W_ABS, ARCH),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, NR),
    ];
    if cfg!(target_arch = "x86_64") {
        // The x32 ABI shares the x86-64 arch token and sets bit 30 of the number: a
        // number-keyed rule would not see `ptrace` made through it.
        p.push(jump(JGE_K, 0x4000_0000, 0, 1));
        p.push(stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32));
    }
    p.extend(search(&sorted)?);
    Ok(p)
}

/// The search over `rules` (sorted by number, with the number loaded): the lower half
/// first, the upper half after it, each searched the same way down to a [`leaf`].
fn search(rules: &[&Rule]) -> Result<Vec<Insn>, TooLarge> {
    if rules.len() <= LEAF {
        return leaf(rules);
    }
    let (lower, upper) = rules.split_at(rules.len() / 2);
    let (below, above) = (search(lower)?, search(upper)?);
    let split = nr_word(upper[0].nr);
    let mut p = Vec::with_capacity(below.len() + above.len() + 2);
    match u8::try_from(below.len()) {
        // nr ≥ split: over the lower half, to the upper one.
        Ok(skip) => p.push(jump(JGE_K, split, skip, 0)),
        // Too far for a conditional jump's 8 bits: through an unconditional jump (32 bits).
        Err(_) => {
            let skip = u32::try_from(below.len()).map_err(|_| TooLarge {
                syscall: lower[0].syscall.clone(),
                len: below.len(),
            })?;
            p.push(jump(JGE_K, split, 0, 1));
            p.push(stmt(JA, skip));
        }
    }
    p.extend(below);
    p.extend(above);
    Ok(p)
}

/// A few rules checked one after the other, then ALLOW: the number is none of theirs.
fn leaf(rules: &[&Rule]) -> Result<Vec<Insn>, TooLarge> {
    let mut p = Vec::new();
    for r in rules {
        let deny = stmt(RET_K, RET_ERRNO | r.errno.raw());
        let body = match &r.condition {
            Condition::Always => vec![deny],
            Condition::AnyBit { arg, bits } => any_bits(*arg, bits, deny),
            Condition::Equals { arg, values } => equals(*arg, values, deny),
        };
        let skip = u8::try_from(body.len()).map_err(|_| TooLarge {
            syscall: r.syscall.clone(),
            len: body.len(),
        })?;
        // The number is not this rule's: jump over its body to the next rule.
        p.push(jump(JEQ_K, nr_word(r.nr), 0, skip));
        p.extend(body);
    }
    p.push(stmt(RET_K, RET_ALLOW));
    Ok(p)
}

/// A syscall number as the 32-bit word `seccomp_data.nr` holds.
fn nr_word(nr: i64) -> u32 {
    nr as u32
}

/// Denied when, for any `b` in `bits`, every bit of `b` is set in the 64-bit argument;
/// allowed otherwise. Each check: low word masked equals, then high word masked equals.
fn any_bits(arg: u8, bits: &[u64], deny: Insn) -> Vec<Insn> {
    let (lo_off, hi_off) = arg_words(arg);
    // Body: every check, then ALLOW, then DENY. A check fails over to the next check (the
    // last one to the ALLOW); its last compare succeeding jumps to the DENY.
    let checks: Vec<Vec<Insn>> = bits
        .iter()
        .map(|&b| {
            let (lo, hi) = (b as u32, (b >> 32) as u32);
            let mut c = Vec::new();
            for (off, word) in [(lo_off, lo), (hi_off, hi)] {
                if word != 0 {
                    c.push(stmt(LD_W_ABS, off));
                    c.push(stmt(AND_K, word));
                    c.push(jump(JEQ_K, word, 0, 0));
                }
            }
            c
        })
        .collect();
    let total: usize = checks.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total + 2);
    let mut done = 0;
    for c in checks {
        let n = c.len();
        for (i, mut insn) in c.into_iter().enumerate() {
            if insn.code == JEQ_K {
                let after_me = done + i + 1;
                let next_check = done + n;
                // Equal: the next word of this check, or (last word) the DENY, which sits
                // after every check and the ALLOW. Not equal: the next check.
                let to_deny = total - after_me + 1;
                let is_last_word = i + 1 == n;
                insn.jt = if is_last_word { to_u8(to_deny) } else { 0 };
                insn.jf = to_u8(next_check - after_me);
            }
            out.push(insn);
        }
        done += n;
    }
    out.push(stmt(RET_K, RET_ALLOW));
    out.push(deny);
    out
}

/// Denied when the argument's low 32 bits equal any of `values` (ioctl requests are
/// `unsigned int`: the kernel ignores the high half, so must the filter).
fn equals(arg: u8, values: &[u64], deny: Insn) -> Vec<Insn> {
    let (lo_off, _) = arg_words(arg);
    let n = values.len();
    let mut out = vec![stmt(LD_W_ABS, lo_off)];
    for (i, &v) in values.iter().enumerate() {
        // From compare i, the DENY is past the remaining compares and the ALLOW.
        out.push(jump(JEQ_K, v as u32, to_u8(n - i), 0));
    }
    out.push(stmt(RET_K, RET_ALLOW));
    out.push(deny);
    out
}

/// An offset inside one rule's body: always below the body's length, which [`compile`]
/// refuses above 255, so the saturation never happens in a program that is installed.
fn to_u8(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::seccomp::{Errno, SeccompPolicy};
    use super::*;

    /// `struct seccomp_data` as the interpreter reads it.
    fn data(arch: u32, nr: u32, args: [u64; 6]) -> [u8; 64] {
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&nr.to_le_bytes());
        d[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            d[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        d
    }

    /// Runs a classic-BPF program over `d` with the instructions seccomp programs use.
    fn run(p: &[(u16, u8, u8, u32)], d: &[u8; 64]) -> u32 {
        run_counted(p, d).0
    }

    /// [`run`], and how many instructions it took.
    fn run_counted(p: &[(u16, u8, u8, u32)], d: &[u8; 64]) -> (u32, usize) {
        let (mut a, mut pc, mut steps) = (0u32, 0usize, 0usize);
        loop {
            let (code, jt, jf, k) = p[pc];
            pc += 1;
            steps += 1;
            match code {
                0x20 => {
                    let o = k as usize;
                    a = u32::from_le_bytes(d[o..o + 4].try_into().unwrap());
                }
                0x54 => a &= k,
                0x05 => pc += k as usize,
                0x15 => pc += usize::from(if a == k { jt } else { jf }),
                0x25 => pc += usize::from(if a > k { jt } else { jf }),
                0x35 => pc += usize::from(if a >= k { jt } else { jf }),
                0x45 => pc += usize::from(if a & k != 0 { jt } else { jf }),
                0x06 => return (k, steps),
                other => panic!("instruction {other:#x} not interpreted"),
            }
        }
    }

    fn ours(p: &Program) -> Vec<(u16, u8, u8, u32)> {
        p.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect()
    }

    /// The kernel's answer for several programs: the strictest action wins.
    fn strictest(progs: &[Vec<(u16, u8, u8, u32)>], d: &[u8; 64]) -> u32 {
        let rank = |r: u32| match r & 0xffff_0000 {
            RET_KILL_PROCESS => 0,
            RET_ERRNO => 1,
            RET_ALLOW => 2,
            other => panic!("unexpected action {other:#x}"),
        };
        progs
            .iter()
            .map(|p| run(p, d))
            .min_by_key(|r| rank(*r))
            .unwrap()
    }

    /// The same rules through `seccompiler` (what the runner installed before): one
    /// program per errno plus the x32 guard.
    fn oracle(policy: &SeccompPolicy) -> Vec<Vec<(u16, u8, u8, u32)>> {
        use seccompiler::{
            SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
            SeccompRule, TargetArch,
        };
        use std::collections::BTreeMap;
        let mut by_errno: BTreeMap<Errno, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
        for r in &policy.rules {
            let chain = match &r.condition {
                Condition::Always => Vec::new(),
                Condition::AnyBit { arg, bits } => bits
                    .iter()
                    .map(|b| {
                        let c = SeccompCondition::new(
                            *arg,
                            SeccompCmpArgLen::Qword,
                            SeccompCmpOp::MaskedEq(*b),
                            *b,
                        );
                        SeccompRule::new(vec![c.unwrap()]).unwrap()
                    })
                    .collect(),
                Condition::Equals { arg, values } => values
                    .iter()
                    .map(|v| {
                        let c = SeccompCondition::new(
                            *arg,
                            SeccompCmpArgLen::Dword,
                            SeccompCmpOp::Eq,
                            *v,
                        );
                        SeccompRule::new(vec![c.unwrap()]).unwrap()
                    })
                    .collect(),
            };
            by_errno.entry(r.errno).or_default().insert(r.nr, chain);
        }
        let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
        let guard = vec![
            (LD_W_ABS, 0, 0, NR),
            (JGE_K, 0, 1, 0x4000_0000),
            (RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32),
            (RET_K, 0, 0, RET_ALLOW),
        ];
        let mut out = vec![guard];
        for (errno, rules) in by_errno {
            let f = SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno.raw()),
                arch,
            )
            .unwrap();
            let prog: seccompiler::BpfProgram = f.try_into().unwrap();
            out.push(prog.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect());
        }
        out
    }

    /// Argument values worth trying for a rule: each listed value alone, all of them, each
    /// with other bits and with high bits set, zero and all ones.
    fn interesting(r: &Rule) -> Vec<u64> {
        let mut v = vec![0, u64::MAX, 1, 0x11, 0xffff_ffff, 0x1_0000_0000];
        match &r.condition {
            Condition::Always => {}
            Condition::AnyBit { bits, .. } | Condition::Equals { values: bits, .. } => {
                let all = bits.iter().fold(0, |a, b| a | b);
                v.push(all);
                v.push(!all);
                for &b in bits {
                    v.extend([
                        b,
                        b | 0x11,
                        b | 0xdead_0000_0000_0000,
                        b ^ 1,
                        b.wrapping_sub(1),
                    ]);
                }
            }
        }
        v
    }

    #[test]
    fn the_shipped_policy_matches_seccompiler_everywhere() {
        let policy = SeccompPolicy::shipped().unwrap();
        let program = compile(&policy.rules).unwrap();
        assert!(program.len() < 200, "{} instructions", program.len());
        let mine = vec![ours(&program)];
        let theirs = oracle(&policy);
        let mut checked = 0;
        let mut denied = 0;
        for r in &policy.rules {
            for arg in 0..6u8 {
                for value in interesting(r) {
                    let mut args = [0u64; 6];
                    args[usize::from(arg)] = value;
                    let d = data(AUDIT_ARCH, r.nr as u32, args);
                    let (a, b) = (strictest(&mine, &d), strictest(&theirs, &d));
                    assert_eq!(a, b, "{} arg{arg}={value:#x}", r.syscall);
                    checked += 1;
                    denied += usize::from(a != RET_ALLOW);
                }
            }
        }
        // Every other number up to well past the last syscall, the x32 range, a foreign arch.
        for nr in (0..1024).chain([0x4000_0000, 0x4000_0065, u32::MAX]) {
            let d = data(AUDIT_ARCH, nr, [u64::MAX; 6]);
            assert_eq!(strictest(&mine, &d), strictest(&theirs, &d), "nr {nr}");
            let foreign = data(0x4000_0003, nr, [0; 6]);
            assert_eq!(strictest(&mine, &foreign), RET_KILL_PROCESS, "nr {nr}");
            assert_eq!(strictest(&theirs, &foreign), RET_KILL_PROCESS, "nr {nr}");
            checked += 1;
        }
        assert!(
            checked > 2000 && denied > 300,
            "{checked} checked, {denied} denied"
        );
    }

    #[test]
    fn decisions_are_the_ones_the_rules_say() {
        let policy = SeccompPolicy::shipped().unwrap();
        let p = vec![ours(&compile(&policy.rules).unwrap())];
        let call = |nr: i64, args: [u64; 6]| strictest(&p, &data(AUDIT_ARCH, nr as u32, args));
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let enosys = RET_ERRNO | libc::ENOSYS as u32;
        assert_eq!(call(libc::SYS_ptrace, [0; 6]), eperm);
        assert_eq!(call(libc::SYS_clone3, [0; 6]), enosys);
        assert_eq!(call(libc::SYS_read, [0; 6]), RET_ALLOW);
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(call(libc::SYS_unshare, [newuser, 0, 0, 0, 0, 0]), eperm);
        // unshare is refused whatever its flags; clone only with a namespace flag.
        assert_eq!(
            call(libc::SYS_unshare, [libc::CLONE_FILES as u64, 0, 0, 0, 0, 0]),
            eperm
        );
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(call(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            call(libc::SYS_clone, [thread | newuser, 0, 0, 0, 0, 0]),
            eperm
        );
        // TIOCSTI with junk in the high half still is TIOCSTI to the kernel.
        let sti = libc::TIOCSTI | 0xffff_ffff_0000_0000;
        assert_eq!(call(libc::SYS_ioctl, [0, sti, 0, 0, 0, 0]), eperm);
        assert_eq!(
            call(libc::SYS_ioctl, [0, libc::TIOCGWINSZ, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(call(0x4000_0000 + libc::SYS_ptrace, [0; 6]), enosys);
    }

    #[test]
    fn jumps_stay_inside_the_program() {
        let policy = SeccompPolicy::shipped().unwrap();
        let p = compile(&policy.rules).unwrap();
        assert_jumps_inside(&p);
        assert_eq!(p.last().map(|i| i.k), Some(RET_ALLOW));
    }

    fn assert_jumps_inside(p: &Program) {
        for (i, insn) in p.iter().enumerate() {
            let far = match insn.code {
                JA => i + 1 + insn.k as usize,
                c if c & 0x07 == 0x05 => i + 1 + usize::from(insn.jt.max(insn.jf)),
                _ => continue,
            };
            assert!(far < p.len(), "instruction {i} jumps out: {insn:?}");
        }
    }

    /// What the kernel does with the program when it is installed: run it for each number
    /// (up to a load of an argument, which it cannot know). A search takes a dozen steps
    /// where a chain of every rule took about seventy.
    #[test]
    fn every_number_is_decided_in_a_few_instructions() {
        let policy = SeccompPolicy::shipped().unwrap();
        let p = ours(&compile(&policy.rules).unwrap());
        let conditional = |nr: u32| {
            policy
                .rules
                .iter()
                .any(|r| r.nr == i64::from(nr) && !matches!(r.condition, Condition::Always))
        };
        let most = (0..1024)
            .filter(|&nr| !conditional(nr))
            .map(|nr| run_counted(&p, &data(AUDIT_ARCH, nr, [0; 6])).1)
            .max()
            .unwrap();
        assert!(most <= 16, "{most} instructions for one number");
    }

    /// A policy past 255 instructions: the search's jumps over a lower half too long for
    /// a conditional jump go through an unconditional one, and every number still gets
    /// its rule's answer.
    #[test]
    fn a_large_policy_is_searched_through_long_jumps() {
        let rules: Vec<Rule> = (0..300)
            .map(|i| Rule {
                syscall: format!("call{i}"),
                nr: 2 * i + 1,
                errno: if i % 2 == 0 {
                    Errno::Eperm
                } else {
                    Errno::Enosys
                },
                condition: Condition::Always,
            })
            .collect();
        let program = compile(&rules).unwrap();
        assert!(program.iter().any(|i| i.code == JA), "no long jump");
        assert_jumps_inside(&program);
        let p = ours(&program);
        for nr in 0..700u32 {
            let want = match rules.iter().find(|r| r.nr == i64::from(nr)) {
                Some(r) => RET_ERRNO | r.errno.raw(),
                None => RET_ALLOW,
            };
            let (got, steps) = run_counted(&p, &data(AUDIT_ARCH, nr, [0; 6]));
            assert_eq!(got, want, "nr {nr}");
            assert!(steps <= 30, "{steps} instructions for nr {nr}");
        }
    }

    #[test]
    fn a_rule_too_large_for_a_jump_is_refused() {
        let rule = Rule {
            syscall: "ioctl".into(),
            nr: libc::SYS_ioctl,
            errno: Errno::Eperm,
            condition: Condition::Equals {
                arg: 1,
                values: (0..300).collect(),
            },
        };
        let err = compile(&[rule]).unwrap_err();
        assert!(err.to_string().contains("ioctl"), "{err}");
    }
}
