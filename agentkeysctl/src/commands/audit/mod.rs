//! `agentkeysctl audit …`: the audit hash chain kept by the daemon.

pub mod list;
pub mod verify;
