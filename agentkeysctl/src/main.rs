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
//!
//! `no_main`: the C runtime calls [`main`] directly, without Rust's start-up for `fn main`
//! (which reads `/proc/self/maps` for the main thread's stack guard, sets up an alternate
//! signal stack and polls fds 0–2), a part of every command's start and so of every
//! `agentkeysctl run` (issue 4 times that against bwrap). `main` does what of it the client
//! needs: fds 0–2 open (a closed one is /dev/null, so that no file the command opens takes
//! its number and gets what is meant for stdout, such as `read`'s secret), SIGPIPE ignored
//! (a closed stdout is an error to handle, not a death), a panic caught (exit 101, as
//! Rust's start-up does), stdout flushed at the end.
#![cfg_attr(not(test), no_main)]
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

use std::ffi::{c_char, c_int};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd};

/// Exit code of a panic, as Rust's own start-up reports one.
const PANICKED: c_int = 101;

/// The process's entry point, called by the C runtime with the usual arguments (clap reads
/// them through `std::env`, which has them either way).
// The attribute names a C symbol; there is no unsafe block here. (A test build has the
// harness's `main` instead.)
#[allow(unsafe_code)]
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    if !open_stdio() {
        return errors::Exit::Error.code().into();
    }
    agentkeysd::sandbox::ignore_sigpipe();
    // A panic must not unwind into the C runtime.
    let code = std::panic::catch_unwind(|| match cli::parse() {
        Ok(cli) => errors::finish(commands::run(cli)),
        Err(e) => errors::clap_exit(&e),
    })
    .map_or(PANICKED, c_int::from);
    // Rust's start-up would flush it at exit; the C runtime does not know it. A closed
    // stdout is not an error here (STYLE §10).
    let _ = std::io::stdout().flush();
    code
}

/// fds 0–2 open, as Rust's start-up leaves them: each closed one becomes /dev/null. False
/// when one is closed and /dev/null cannot be opened (Rust's start-up aborts then).
fn open_stdio() -> bool {
    let closed = |fd: BorrowedFd<'_>| {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD) == Err(nix::errno::Errno::EBADF)
    };
    let (i, o, e) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    if ![i.as_fd(), o.as_fd(), e.as_fd()].into_iter().any(closed) {
        return true;
    }
    // `open` returns the lowest free number: the closed ones among 0–2 are filled in order.
    loop {
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null");
        match null {
            Ok(f) if f.as_raw_fd() > 2 => return true,
            Ok(f) => {
                // Kept open for the process's life.
                let _ = f.into_raw_fd();
            }
            Err(_) => return false,
        }
    }
}
