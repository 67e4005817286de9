//! The real work of each plan step (DESIGN §6), one file per step; [`super::real`] calls
//! them through the [`super::plan::Syscalls`] trait. Raw syscalls come from `super::sys`.

pub mod caps;
pub mod cgroup;
pub mod etc_cache;
pub mod filesystem;
pub mod identity;
pub mod init;
pub mod landlock;
pub mod mounts;
pub mod namespaces;
pub mod rlimits;
pub mod seccomp;
