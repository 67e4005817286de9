//! One request to the daemon's PAM listener under one overall deadline: connect (never
//! blocks: a full backlog fails at once), send the frame, read the reply. Every step that
//! could wait is bounded by what is left of the deadline, so a hung or slow daemon costs a
//! login at most [`TIMEOUT`].
//!
//! The password goes only to a listener root created: after connecting, the listener's
//! `SO_PEERCRED` uid must be 0, else nothing is sent (a user who could make `socket=` point
//! at their own listener, or bind the path while the daemon is down, gets nothing).

use std::fmt;
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::secret::Secret;
use crate::sys;
use crate::wire::{self, HEADER_LEN, Reply, Request, WireError};

/// The longest a login waits for the daemon, all steps together (module argument
/// `timeout=` changes it within 1–10 s).
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Why a request got no usable reply. Carries no secret.
#[derive(Debug)]
pub enum ClientError {
    /// The request could not be framed (a field too long): not sent.
    Encode(WireError),
    /// No daemon listening there (or it refused the connection).
    Connect(io::Error),
    /// The listener there is not root's: nothing was sent.
    NotRoot(u32),
    Send(io::Error),
    Receive(io::Error),
    /// The deadline passed.
    Timeout(&'static str),
    /// The reply was not a valid frame.
    BadReply(WireError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Encode(e) => write!(f, "request not sent: {e}"),
            ClientError::Connect(e) => write!(f, "cannot connect: {e}"),
            ClientError::NotRoot(uid) => write!(
                f,
                "the listener belongs to uid {uid}, not root; nothing sent (is socket= the \
                 daemon's socket?)"
            ),
            ClientError::Send(e) => write!(f, "sending the request failed: {e}"),
            ClientError::Receive(e) => write!(f, "reading the reply failed: {e}"),
            ClientError::Timeout(step) => write!(f, "no answer within the timeout while {step}"),
            ClientError::BadReply(e) => write!(f, "bad reply: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Sends `req` to the listener at `socket` and returns its reply, within `timeout`.
pub fn call(socket: &Path, req: &Request<'_>, timeout: Duration) -> Result<Reply, ClientError> {
    call_peer(socket, req, timeout, 0)
}

/// [`call`], to a listener owned by `peer_uid` (tests name a uid root's listener is not).
fn call_peer(
    socket: &Path,
    req: &Request<'_>,
    timeout: Duration,
    peer_uid: u32,
) -> Result<Reply, ClientError> {
    let deadline = Instant::now() + timeout;
    // The frame may hold passwords: build it in a wiped buffer sized up front.
    let mut frame = Secret::with_capacity(wire::encoded_len(req));
    wire::encode_request(req, frame.buffer()).map_err(ClientError::Encode)?;
    let stream = sys::connect_unix(socket).map_err(ClientError::Connect)?;
    let uid = sys::peer_uid(&stream).map_err(ClientError::Connect)?;
    if uid != peer_uid {
        return Err(ClientError::NotRoot(uid));
    }
    let sent = send_all(&stream, frame.expose(), deadline);
    drop(frame);
    if let Err(e) = sent {
        // The daemon may have answered before reading everything (a refusal), then
        // closed: its reply says more than the broken pipe does.
        return read_reply(&stream, deadline).map_err(|_| e);
    }
    read_reply(&stream, deadline)
}

fn read_reply(stream: &UnixStream, deadline: Instant) -> Result<Reply, ClientError> {
    let mut head = [0u8; HEADER_LEN];
    read_full(stream, &mut head, deadline)?;
    let (status, len) = wire::parse_reply_header(&head).map_err(ClientError::BadReply)?;
    let mut body = vec![0u8; len];
    read_full(stream, &mut body, deadline)?;
    wire::parse_reply_body(status, &body).map_err(ClientError::BadReply)
}

fn remaining(deadline: Instant, step: &'static str) -> Result<Duration, ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ClientError::Timeout(step));
    }
    Ok(left)
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn send_all(stream: &UnixStream, mut buf: &[u8], deadline: Instant) -> Result<(), ClientError> {
    while !buf.is_empty() {
        let left = remaining(deadline, "sending")?;
        stream
            .set_write_timeout(Some(left))
            .map_err(ClientError::Send)?;
        match sys::send_nosignal(stream, buf) {
            Ok(0) => return Err(ClientError::Send(io::ErrorKind::WriteZero.into())),
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => return Err(ClientError::Timeout("sending")),
            Err(e) => return Err(ClientError::Send(e)),
        }
    }
    Ok(())
}

fn read_full(
    mut stream: &UnixStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<(), ClientError> {
    let mut filled = 0;
    while filled < buf.len() {
        let left = remaining(deadline, "waiting for the reply")?;
        stream
            .set_read_timeout(Some(left))
            .map_err(ClientError::Receive)?;
        match stream.read(buf.get_mut(filled..).unwrap_or_default()) {
            Ok(0) => {
                return Err(ClientError::Receive(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => return Err(ClientError::Timeout("waiting for the reply")),
            Err(e) => return Err(ClientError::Receive(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::wire::Status;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    fn listener() -> (tempfile_dir::Dir, UnixListener, std::path::PathBuf) {
        let dir = tempfile_dir::Dir::new();
        let path = dir.0.join("pam.sock");
        let l = UnixListener::bind(&path).unwrap();
        (dir, l, path)
    }

    /// A private directory under the system temp dir, removed on drop (no dependency).
    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let mut b = [0u8; 8];
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
                    .unwrap();
                let name: String = b.iter().map(|x| format!("{x:02x}")).collect();
                let p = std::env::temp_dir().join(format!("pam-agentkeys-{name}"));
                std::fs::create_dir(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const REQ: Request<'static> = Request::OpenSession {
        user: "alice",
        password: b"pw",
    };

    #[test]
    fn a_reply_comes_back() {
        let (_d, l, path) = listener();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = vec![0u8; wire::encoded_len(&REQ)];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(wire::parse_request(&buf).unwrap(), REQ);
            s.write_all(&wire::encode_reply(Status::Unlocked, "unlocked"))
                .unwrap();
        });
        let reply = call_me(&path, &REQ, TIMEOUT).unwrap();
        assert_eq!(reply.status, Status::Unlocked);
        server.join().unwrap();
    }

    /// The listener's owner is checked before anything is sent: expecting another uid
    /// than the (root) test listener's, the call is refused and the listener reads nothing.
    #[test]
    fn a_listener_of_another_uid_gets_nothing() {
        let (_d, l, path) = listener();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        let me = nix_free_euid();
        let err = call_peer(&path, &REQ, TIMEOUT, me.wrapping_add(1)).unwrap_err();
        // SO_PEERCRED named the listener's creator: this process.
        assert!(matches!(err, ClientError::NotRoot(u) if u == me), "{err}");
        assert!(
            server.join().unwrap().is_empty(),
            "bytes reached the listener"
        );
    }

    /// [`call`] to a listener of this test's own uid (root's when run as root).
    fn call_me(p: &Path, req: &Request<'_>, timeout: Duration) -> Result<Reply, ClientError> {
        call_peer(p, req, timeout, nix_free_euid())
    }

    /// This process's effective uid, read from /proc (no extra dependency).
    fn nix_free_euid() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    #[test]
    fn no_listener_is_a_connect_error() {
        let d = tempfile_dir::Dir::new();
        let err = call_me(&d.0.join("absent.sock"), &REQ, TIMEOUT).unwrap_err();
        assert!(matches!(err, ClientError::Connect(_)), "{err}");
    }

    #[test]
    fn a_silent_daemon_ends_in_a_timeout() {
        let (_d, l, path) = listener();
        let err = call_me(&path, &REQ, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, ClientError::Timeout(_)), "{err}");
        drop(l);
    }

    #[test]
    fn a_garbage_reply_is_refused() {
        let (_d, l, path) = listener();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(100));
        });
        let err = call_me(&path, &REQ, TIMEOUT).unwrap_err();
        assert!(matches!(err, ClientError::BadReply(_)), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn a_daemon_that_hangs_up_does_not_kill_us_with_sigpipe() {
        let (_d, l, path) = listener();
        let big = vec![b'p'; 400];
        let req = Request::ChangePassword {
            user: "alice",
            old: &big,
            new: &big,
        };
        let server = std::thread::spawn(move || drop(l.accept().unwrap()));
        let err = call_me(&path, &req, TIMEOUT).unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(err, ClientError::Send(_) | ClientError::Receive(_)),
            "{err}"
        );
    }
}
