//! The run's end, from the daemon straight to this command.
//!
//! `Run` takes the write end of a pipe (`status`); once the run has ended and its end is
//! recorded, the daemon writes one JSON line to it, `{"state":"exited","exit_code":0}`, and
//! closes it. Waiting on that pipe costs no bus traffic at all: no match rule for
//! `JobStateChanged` before `Run`, no signal to filter, and no `Get` afterwards when the
//! command simply exited. The pipe closing without a line means the daemon dropped the run
//! (it stopped or died); `Get` then says what is known.

use std::os::fd::OwnedFd;

use tokio::net::unix::pipe;

use crate::errors::{CliError, Exit};

/// Longest line accepted; the daemon's are far shorter.
const MAX_LINE: usize = 4096;

/// How the run ended, as far as the status pipe says.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The command exited with this status (128+N for signal N).
    Exited(i32),
    /// Killed, failed, or a line this version does not know: `Get` has the details.
    Other,
    /// The pipe closed without a line.
    Lost,
}

/// The read side of the status pipe.
pub struct EndPipe {
    rx: pipe::Receiver,
    line: Vec<u8>,
}

/// A new status pipe: ours to wait on, and the write end for `Run`'s `status`.
pub fn pipe() -> Result<(EndPipe, OwnedFd), CliError> {
    let err = |e: std::io::Error| {
        CliError::new(Exit::Error, "cannot make a pipe for the run's end").cause(e.to_string())
    };
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| err(std::io::Error::from(e)))?;
    let rx = pipe::Receiver::from_owned_fd(rd).map_err(err)?;
    Ok((
        EndPipe {
            rx,
            line: Vec::new(),
        },
        wr,
    ))
}

impl EndPipe {
    /// Waits for the run's end. Cancel-safe: what was read stays here for the next call.
    /// Call once the write end passed to `Run` is closed here, or it never reads `Lost`.
    pub async fn ended(&mut self) -> Ended {
        let mut buf = [0u8; 512];
        loop {
            if let Some(end) = self.line.iter().position(|&b| b == b'\n') {
                return parse(&self.line[..end]);
            }
            if self.rx.readable().await.is_err() {
                return Ended::Lost;
            }
            match self.rx.try_read(&mut buf) {
                Ok(0) => return Ended::Lost,
                Ok(n) => {
                    self.line.extend_from_slice(&buf[..n]);
                    if self.line.len() > MAX_LINE {
                        return Ended::Other;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Ended::Lost,
            }
        }
    }
}

fn parse(line: &[u8]) -> Ended {
    #[derive(serde::Deserialize)]
    struct Line {
        state: String,
        exit_code: Option<i32>,
    }
    match serde_json::from_slice::<Line>(line) {
        Ok(Line {
            state,
            exit_code: Some(code),
        }) if state == "exited" => Ended::Exited(code),
        _ => Ended::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_exit_with_its_code_spares_the_get() {
        assert_eq!(
            parse(br#"{"state":"exited","exit_code":0}"#),
            Ended::Exited(0)
        );
        assert_eq!(
            parse(br#"{"exit_code":130,"state":"exited"}"#),
            Ended::Exited(130)
        );
        for other in [
            &br#"{"state":"killed","exit_code":137}"#[..],
            br#"{"state":"failed","exit_code":127}"#,
            br#"{"state":"exited"}"#,
            br#"{"state":"exited","exit_code":"0"}"#,
            b"exited 0",
            b"",
        ] {
            assert_eq!(
                parse(other),
                Ended::Other,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[tokio::test]
    async fn a_line_in_pieces_is_read_whole_and_a_closed_pipe_is_lost() {
        let (mut end, wr) = pipe().expect("pipe");
        nix::unistd::write(&wr, br#"{"state":"exi"#).expect("write");
        let read = tokio::time::timeout(std::time::Duration::from_millis(50), end.ended()).await;
        assert!(read.is_err(), "half a line is not an end");
        nix::unistd::write(&wr, b"ted\",\"exit_code\":3}\n").expect("write");
        assert_eq!(end.ended().await, Ended::Exited(3));

        let (mut end, wr) = pipe().expect("pipe");
        drop(wr);
        assert_eq!(end.ended().await, Ended::Lost);
    }
}
