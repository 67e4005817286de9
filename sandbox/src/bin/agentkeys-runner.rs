//! `agentkeys-runner`: builds one agent's sandbox and runs its command in it (DESIGN §6).
//!
//! Started by `agentkeysd` as a fresh, single-threaded root process with fds 0–2 the
//! agent's stdio, 3 the spec (JSON, to EOF), 4 the report pipe (JSON lines) and 5… one
//! sealed memfd per secret. It can also be started from a shell for benchmarks:
//! `agentkeys-runner 3<spec.json 4>/dev/null`. No async runtime, no threads: the plan forks
//! and changes its own credentials, which is only sound in a single-threaded process.
//!
//! Exit code: the command's; 128+N if it died of signal N; 125 if the sandbox could not be
//! built (the reason is on fd 4 and stderr).
//!
//! `no_main`: the C runtime calls [`main`] directly, without Rust's start-up for `fn main`
//! (which reads `/proc/self/maps` to find the main thread's stack, sets up an alternate
//! signal stack and polls fds 0–2): 0.15–0.2 ms of every run's start, measured.
//! `agentkeys_sandbox::runner_entry` does what of it the runner needs.
#![no_main]
// The one attribute below names a C symbol; the crate has no other unsafe.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int};

/// The process's entry point, called by the C runtime with the usual arguments.
#[unsafe(no_mangle)]
pub extern "C" fn main(argc: c_int, _argv: *const *const c_char) -> c_int {
    if argc > 1 {
        eprintln!(
            "usage: agentkeys-runner 3<SPEC 4>REPORT [5<SECRET…]\n\
             (started by agentkeysd; the spec format is agentkeys_sandbox::spec)"
        );
        return 2;
    }
    agentkeys_sandbox::runner_entry()
}
