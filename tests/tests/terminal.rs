//! `agentkeysctl store` at a real terminal: the secret is prompted for on the controlling
//! terminal, twice, without echo, and never appears in what the terminal shows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentkeys_tests::{Daemon, EVENT_TIMEOUT, bin, unique_secret, wait_timeout};

/// The terminal's side of a pseudo-terminal: what the user sees and types.
struct Terminal {
    master: std::fs::File,
    seen: Vec<u8>,
}

impl Terminal {
    /// Reads until `needle` has been shown (an event: the prompt), or fails after a while.
    fn wait_for(&mut self, needle: &str) {
        let t0 = Instant::now();
        while !String::from_utf8_lossy(&self.seen).contains(needle) {
            assert!(
                t0.elapsed() < EVENT_TIMEOUT,
                "never saw {needle:?}; saw {:?}",
                String::from_utf8_lossy(&self.seen)
            );
            let mut fds = [nix::poll::PollFd::new(
                self.master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            if nix::poll::poll(&mut fds, 100u16).unwrap() > 0 {
                let mut buf = [0u8; 1024];
                match self.master.read(&mut buf) {
                    Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                    // EIO: the child closed the terminal.
                    Err(_) => break,
                }
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        self.master.write_all(line.as_bytes()).unwrap();
        self.master.write_all(b"\r").unwrap();
    }

    /// Everything shown until the other side closes.
    fn drain(&mut self) {
        let mut buf = [0u8; 1024];
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            match self.master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
            }
        }
    }
}

fn store_at_terminal(d: &Daemon, name: &str) -> (Terminal, std::process::Child) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave: OwnedFd = pty.slave;
    // setsid --ctty: a new session whose controlling terminal is this pty, as at a login.
    let child = Command::new("setsid")
        .args(["--ctty", "--wait"])
        .arg(bin("agentkeysctl"))
        .args(["store", name])
        .env("AGENTKEYS_BUS", &d.bus.address)
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let term = Terminal {
        master: std::fs::File::from(pty.master),
        seen: Vec::new(),
    };
    (term, child)
}

#[test]
fn the_secret_is_typed_at_a_no_echo_prompt_twice_and_never_shown() {
    let d = Daemon::start();
    let secret = unique_secret("tty");
    let (mut term, mut child) = store_at_terminal(&d, "openai");
    term.wait_for("Secret for openai");
    term.type_line(&secret);
    term.wait_for("Repeat secret for openai");
    term.type_line(&secret);
    let status = wait_timeout(&mut child, EVENT_TIMEOUT).expect("store did not finish");
    term.drain();
    let shown = String::from_utf8_lossy(&term.seen).into_owned();
    assert!(status.success(), "store failed; terminal showed:\n{shown}");
    assert!(!shown.contains(&secret), "the secret was echoed:\n{shown}");
    assert!(
        !shown.contains(&secret[secret.len() - 6..]),
        "part of the secret was echoed:\n{shown}"
    );
    assert!(shown.contains("stored 'openai'"), "{shown}");
    assert_eq!(d.ctl(&["read", "openai"]).ok(), secret);
}

#[test]
fn two_different_entries_store_nothing() {
    let d = Daemon::start();
    let (mut term, mut child) = store_at_terminal(&d, "openai");
    term.wait_for("Secret for openai");
    term.type_line("sk-first-entry-aaaaaaaa");
    term.wait_for("Repeat secret for openai");
    term.type_line("sk-second-entry-bbbbbbb");
    let status = wait_timeout(&mut child, EVENT_TIMEOUT).expect("store did not finish");
    term.drain();
    assert_eq!(
        status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&term.seen)
    );
    d.ctl(&["read", "openai"]).fails_with(4);
}
