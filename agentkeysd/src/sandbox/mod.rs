//! The sandbox agents run in (DESIGN §6): spec → ordered plan → runner steps (user
//! namespace, mounts, cgroup, capabilities, landlock, seccomp), performed by
//! `agentkeys-runner`, never by the daemon on itself.
//!
//! Today this module holds what the plan must know before it is built: [`probe`] asks the
//! kernel, for real, which of those features it offers and why one is missing, and
//! [`cgroups`] finds where the runner's cgroup controllers are mounted (v2 first, v1 on
//! hybrid hosts). `agentkeysctl doctor` and the daemon's `Features` property report them.
//!
//! Invariants: probes change nothing about the calling process (the user-namespace probe
//! runs in a forked child that only makes raw syscalls); `unsafe` lives only in `sys.rs`.
//! Nothing here knows D-Bus.

pub mod cgroups;
pub mod probe;
pub mod spec;
mod sys;
