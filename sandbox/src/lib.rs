//! The sandbox agents run in (DESIGN §6): spec → ordered plan → runner steps (cgroup,
//! namespaces, file system, rlimits and fds, identity, capabilities, landlock, seccomp,
//! exec), performed by `agentkeys-runner`, never by the daemon on itself.
//!
//! A crate of its own (the daemon re-exports it as `agentkeysd::sandbox`), so that the
//! runner links only what it uses — no libpam, SQLite, D-Bus or async runtime — and can be
//! linked statically (`scripts/build-runner`): a static runner starts and forks its init
//! without the dynamic loader's work, which issue 4 measures against bwrap.
//!
//! - [`spec`]: the runner's contract (spec on fd 3, report on fd 4, secrets on fd 5…).
//! - [`plan`]: the steps in order, one error variant each, behind the [`plan::Syscalls`]
//!   trait (a recording fake pins the order in unit tests); `steps/` does each for real.
//! - [`policy`]: the reviewed data files `sandbox/data/{seccomp,landlock,sandbox-fs}.toml`,
//!   compiled in and validated at start.
//! - [`launch`] (daemon side): spawn the runner, learn `Started`, wait for the outcome;
//!   [`run_cgroups`]: parent groups, per-run plan, kill, remove. Secrets reach the runner
//!   as sealed memfds (`agentkeysd::vault::sealed_memfd_from_bytes`), read here by [`sealed`].
//! - [`probe`] and [`cgroups`]: what the kernel offers (`agentkeysctl doctor`).
//!
//! Decisions where the issue was silent:
//! - **A workspace on a file system that cannot idmap** (e.g. NFS, FUSE without idmap
//!   support, overlayfs on older kernels) **fails the run** at the `filesystem` step with the
//!   file system's name and the fix (move the workspace to ext4/xfs/btrfs/tmpfs). There is no
//!   fallback: a plain bind would either show the agent files it cannot write (owner's uid ≠
//!   agent uid) or, if chowned, leave agent-owned files in the owner's tree — fail closed.
//! - **`/etc` in the sandbox** holds only what `sandbox-fs.toml` lists: the dynamic linker's
//!   cache and config, alternatives, time zone, name-service and resolver config (hosts,
//!   nsswitch, resolv.conf, gai.conf, services, protocols), the TLS trust stores (ssl,
//!   ca-certificates, pki, crypto-policies), mime.types, os-release, shell and readline
//!   defaults, terminfo and gitconfig — what interpreters, TLS clients and git need to work.
//!   `passwd` and `group` are generated (the agent as `agent` with home `/workspace`, and
//!   `nobody`), so host account names stay hidden; `shadow`, `sudoers`, ssh keys, machine-id
//!   and everything else are absent.
//! - The runner (outside) stays in the run's cgroups too, so a cgroup kill ends it with the
//!   sandbox; [`launch::Running::wait`] reports that as `Signaled(9)`.
//! - Landlock does not restrict TCP under `--net none` (see `landlock.toml`): loopback must
//!   work for local test servers, and the empty network namespace already is the boundary.
//!
//! Invariants: probes change nothing about the calling process; `unsafe` lives only in
//! `sys/`. Nothing here knows D-Bus.

#![deny(unsafe_code)]

pub mod cgroups;
pub mod launch;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod real;
pub mod run_cgroups;
mod runner;
pub mod sealed;
pub mod spec;
mod steps;
mod sys;

pub use runner::{SETUP_FAILED, runner_entry};
pub use sys::ignore_sigpipe;
