//! Frames on a unix stream socket with fds attached — the warm start's wire (see `spec`)
//! and the runner's mounts for the init (`steps::mounts`) — and putting received fds at
//! the numbers the runner's contract gives them.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

/// Whether `fd` is a socket (the runner's warm start) rather than a pipe or a file.
pub(crate) fn is_socket(fd: BorrowedFd<'_>) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK)
}

/// Sends one warm-start frame (see `spec`): kind, length, body, with `fds` attached.
pub(crate) fn send_frame(
    sock: BorrowedFd<'_>,
    kind: u8,
    body: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&len.to_le_bytes());
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let iov = [std::io::IoSlice::new(&head)];
    let sent = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    if sent != head.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short frame header",
        ));
    }
    std::io::Write::write_all(&mut std::fs::File::from(sock.try_clone_to_owned()?), body)
}

/// One received frame: its kind, body and attached fds. `Ok(None)` at EOF before a frame.
pub(crate) type Frame = (u8, Vec<u8>, Vec<OwnedFd>);

/// Receives one warm-start frame of at most `max_body` bytes and
/// `crate::spec::MAX_FRAME_FDS` fds (close-on-exec).
pub(crate) fn recv_frame(sock: BorrowedFd<'_>, max_body: usize) -> io::Result<Option<Frame>> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut head = [0u8; 5];
    let mut cmsg = nix::cmsg_space!([RawFd; crate::spec::MAX_FRAME_FDS]);
    let (n, fds, truncated) = {
        let mut iov = [std::io::IoSliceMut::new(&mut head)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_WAITALL,
        )?;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel installed these fds in our table for this message;
                    // nothing else owns them.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        (msg.bytes, fds, msg.flags.contains(MsgFlags::MSG_CTRUNC))
    };
    if n == 0 {
        return Ok(None);
    }
    if n != head.len() || truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a malformed frame (short header or too many fds)",
        ));
    }
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > max_body {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (at most {max_body})"),
        ));
    }
    let mut body = vec![0u8; len];
    std::io::Read::read_exact(
        &mut std::fs::File::from(sock.try_clone_to_owned()?),
        &mut body,
    )?;
    Ok(Some((head[0], body, fds)))
}

/// A close-on-exec duplicate of `fd` numbered `floor` or higher.
pub(crate) fn dup_above(fd: BorrowedFd<'_>, floor: RawFd) -> io::Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(floor))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `dup2(fd, target)` then closes `fd` (unless it already is `target`): puts a received fd
/// at the number the runner's contract gives it (stdio, secrets).
pub(crate) fn install_fd(fd: OwnedFd, target: RawFd) -> io::Result<()> {
    if fd.as_raw_fd() == target {
        std::mem::forget(fd);
        return Ok(());
    }
    // SAFETY: dup2 takes two integers; `fd` is open (owned here) and `target` is a number
    // the runner's contract reserves for this fd, so whatever it held is replaced on purpose.
    cvt(libc::c_long::from(unsafe {
        libc::dup2(fd.as_raw_fd(), target)
    }))?;
    Ok(())
}
