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

fn main() {
    if std::env::args_os().len() > 1 {
        eprintln!(
            "usage: agentkeys-runner 3<SPEC 4>REPORT [5<SECRET…]\n\
             (started by agentkeysd; the spec format is agentkeys_sandbox::spec)"
        );
        std::process::exit(2);
    }
    std::process::exit(agentkeys_sandbox::runner_main());
}
