//! `agentkeysctl`: the command-line client of `agentkeysd`. It stores, reads, lists and
//! deletes credentials (API keys), manages agents and their grants, pairs agents (`pair` on
//! the agent's side; `pending`, `approve`, `deny` on the owner's) and reads the audit
//! trail, over D-Bus through `agentkeysd::api` only.
//!
//! Invariants:
//! - A secret never appears in argv, a log line or an error message: `store` reads it from
//!   the terminal without echo or from stdin, and it crosses the bus only as a sealed memfd.
//!   Buffers holding it are zeroized; `read` writes it straight to fd 1, unbuffered. The
//!   login password `approve` asks for is handled the same way. A paired agent's private
//!   key never crosses the bus at all: it lives in its 0600 identity file (`identity.rs`)
//!   and only signs session proofs.
//! - A pairing is trusted only when the daemon's signature over exactly the request opened
//!   verifies; otherwise nothing is stored.
//! - Human output goes to stdout, diagnostics to stderr as problem → cause → fix; `--json`
//!   makes read commands print JSON. A closed stdout (broken pipe) is a clean exit 0.
//! - No panics on user or daemon input: every failure is a `CliError` with an exit code.
//!
//! Exit codes: 0 ok, 1 error (for `doctor`: a check failed), 2 usage (also bad input and the daemon's InvalidArgument),
//! 3 denied, 4 not found, 5 expired, 6 daemon unreachable, 7 locked, 130 interrupted
//! (Ctrl-C while `pair` waits).
#![deny(unsafe_code)]

mod cli;
mod client;
mod commands;
mod errors;
mod identity;
mod output;
mod requests;
mod secret_input;
mod sys;
mod time;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::parse() {
        Ok(cli) => errors::finish(commands::run(cli)),
        Err(e) => errors::clap_exit(&e),
    }
}
