//! The terminal side of `run`: for an interactive agent, a new pty whose slave becomes the
//! agent's stdin/stdout/stderr and controlling terminal, while this process copies bytes
//! between the user's terminal (in raw mode, so Ctrl-C reaches the agent as a keystroke)
//! and the pty's master, and keeps the pty the size of the user's terminal.
//!
//! Why a new pty rather than handing the agent the user's own terminal: a process with a
//! terminal fd can push keystrokes into it (`TIOCSTI`) or change its modes for the shell
//! that gets it back; a pty of its own confines all that to the run.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;

use nix::sys::termios::{self, SetArg, Termios};

use crate::errors::{CliError, Exit};

/// A pty made for one run.
#[derive(Debug)]
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Is this an interactive run: stdin and stdout both terminals?
pub fn interactive() -> bool {
    nix::unistd::isatty(std::io::stdin()).unwrap_or(false)
        && nix::unistd::isatty(std::io::stdout()).unwrap_or(false)
}

/// A pty the size of the user's terminal, with the user's terminal modes.
pub fn open_pty() -> Result<Pty, CliError> {
    let stdin = std::io::stdin();
    let size = crate::sys::window_size(stdin.as_fd()).ok();
    let modes = termios::tcgetattr(&stdin).ok();
    let pty = nix::pty::openpty(size.as_ref(), modes.as_ref()).map_err(|e| {
        CliError::new(Exit::Error, "cannot open a terminal for the agent")
            .cause(format!("openpty: {e}"))
            .fix("check that /dev/pts is mounted and /dev/ptmx is accessible")
    })?;
    Ok(Pty {
        master: pty.master,
        slave: pty.slave,
    })
}

/// The user's terminal in raw mode until dropped.
#[derive(Debug)]
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub fn enter() -> Result<RawMode, CliError> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).map_err(|e| {
            CliError::new(Exit::Error, "cannot read the terminal's modes").cause(e.to_string())
        })?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).map_err(|e| {
            CliError::new(Exit::Error, "cannot put the terminal in raw mode").cause(e.to_string())
        })?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // TCSAFLUSH would drop typed-ahead input the shell should get; TCSADRAIN keeps it.
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Copies the user's keystrokes into the pty (a detached thread: a blocked `read` on the
/// terminal cannot be interrupted, and the process exits when the run is over).
pub fn copy_input(master: &OwnedFd) -> Result<(), CliError> {
    let mut to_agent = std::fs::File::from(master.try_clone().map_err(pty_error)?);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to_agent.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        })
        .map(drop)
        .map_err(|e| {
            CliError::new(Exit::Error, "cannot start the input thread").cause(e.to_string())
        })
}

/// Copies the agent's output to stdout until the pty closes (every holder of its slave is
/// gone: the master then reads EIO). Join it to have all output written.
pub fn copy_output(master: OwnedFd) -> JoinHandle<()> {
    let mut from_agent = std::fs::File::from(master);
    std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        let mut buf = [0u8; 16384];
        loop {
            match from_agent.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stdout
                        .write_all(&buf[..n])
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    })
}

/// Gives the pty the user's terminal's current size (on SIGWINCH).
pub fn sync_size(master: &OwnedFd) {
    if let Ok(ws) = crate::sys::window_size(std::io::stdin().as_fd()) {
        let _ = crate::sys::set_window_size(master.as_fd(), &ws);
    }
}

fn pty_error(e: std::io::Error) -> CliError {
    CliError::new(Exit::Error, "cannot use the agent's terminal").cause(e.to_string())
}
