//! `pam_agentkeys`: the PAM module that hands a user's login password to `agentkeysd`, so
//! that the daemon can unlock the user's `login`-class credentials for as long as the user
//! has a session (DESIGN §5), and the wire format both sides speak.
//!
//! As a `cdylib` this is `pam_agentkeys.so`, loaded by libpam into login processes (login,
//! sshd, gdm, sudo…). As an `rlib` it gives the daemon the one definition of the frame
//! format ([`wire`]).
//!
//! # Invariants
//! - **Never fails, never blocks a login.** Every entry point runs under `catch_unwind` and
//!   returns `PAM_IGNORE` whatever happens; talking to the daemon is bounded by
//!   [`client::TIMEOUT`] overall, and a connect never waits (a full backlog fails at once).
//! - **Never prompts.** It uses the password an earlier module collected (`PAM_AUTHTOK`).
//! - **Passwords only in wiped buffers** ([`secret::Secret`]), kept from `auth` to
//!   `open_session` with `pam_set_data` and wiped there or at `pam_end`. No password in a
//!   log line, an error, a reply or a panic message.
//! - std + libc only: no async runtime, no D-Bus, nothing that starts threads inside a
//!   login process.
//!
//! # Non-goals
//! - Authenticating anyone: the module's answer never decides a login.
//! - Trusting the daemon's reply for anything but a log line.
#![deny(unsafe_code)]

pub mod args;
pub mod client;
mod module;
pub mod secret;
mod sys;
pub mod wire;

pub use args::DEFAULT_SOCKET;
