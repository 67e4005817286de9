//! The public contract of `agentkeysd` on D-Bus: names, error names, wire helpers and
//! proxies. `agentkeysctl` and desktop tools use only this module.
//!
//! Invariants: every name here is part of a published, versioned interface (`…1`); a
//! change that breaks a client gets a new interface version, not an edit. Secret bytes are
//! never a message argument: they travel as a sealed memfd (`h`).

pub mod agent;
pub mod bus;
pub mod dict;
pub mod error;
pub mod names;
pub mod proxies;

pub use error::{Error, ErrorKind};
