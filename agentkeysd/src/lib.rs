//! `agentkeysd`: the AgentKeys system daemon, as a library.
//!
//! The binary `agentkeysd` is a thin wrapper over this crate; `agentkeysctl` uses [`api`]
//! and, for `doctor`, the sandbox's probes. The sandbox and its runner (`agentkeys-runner`)
//! are the crate `agentkeys-sandbox`, re-exported here as [`sandbox`].
//!
//! Invariants:
//! - Secret bytes live in [`vault`] memory (`memfd_secret` pages, or mlocked pages when the
//!   configured policy allows the fallback) and leave the process only as a sealed memfd.
//! - [`vault`] and [`store`] know nothing of D-Bus; [`daemon`] wires them to the bus and
//!   authorizes every call from the bus's view of the caller, never from arguments.
//! - `unsafe` lives only in `sys` modules (`sys.rs`, or `sys/` in the sandbox), each block
//!   with a `// SAFETY:` comment.
//!
//! Non-goals: defending against root that loads kernel code; talking to anything but the
//! local system (there is no network server here).
#![deny(unsafe_code)]

pub mod api;
pub mod approvals;
pub mod daemon;
pub mod jobs;
pub mod mcp;
pub use agentkeys_sandbox as sandbox;
pub mod store;
pub mod vault;
