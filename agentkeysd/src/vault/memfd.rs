//! Secrets as sealed memfds: how they enter the daemon (Store), leave it (Read), and the
//! client ends of both.
//!
//! An incoming fd is trusted for nothing: `F_GET_SEALS` first, which fails with `EINVAL` on
//! anything that is not a memfd (pipe, socket, regular file), so no read can ever block;
//! the seals must make it immutable (write/shrink/grow), and its size is bounded before a
//! byte is read.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use zeroize::Zeroizing;

use super::bounce::BounceBuffer;
use agentkeys_sandbox::sealed::{
    self, REQUIRED_SEALS, SealedError, read_exact_at_start, sealed_len,
};

use super::{MAX_SECRET_LEN, MemfdError, SecretBuf, Vault, sys};

/// Seals we put on outgoing memfds: the required ones, and no more seals can change.
const OUTGOING_SEALS: SealFlag = REQUIRED_SEALS.union(SealFlag::F_SEAL_SEAL);

/// Name shown in `/proc/PID/fd` (as `/memfd:agentkeys-secret`).
const MEMFD_NAME: &std::ffi::CStr = c"agentkeys-secret";

/// Daemon side of Store: checks `fd` is a memfd sealed against change with 1..=
/// [`MAX_SECRET_LEN`] bytes, and reads it with `pread` straight into a vault slot. Never
/// blocks.
pub fn read_sealed_memfd(vault: &Vault, fd: BorrowedFd<'_>) -> Result<SecretBuf, MemfdError> {
    let len = sealed_len(fd)?;
    if len == 0 {
        return Err(MemfdError::Empty);
    }
    let mut secret = vault.alloc(len).map_err(MemfdError::Vault)?;
    read_exact_at_start(fd, secret.expose_secret_mut())?;
    Ok(secret)
}

/// Daemon side of Read: a new sealed memfd holding `secret`, positioned at offset 0. The
/// bytes pass through a [`BounceBuffer`] that lives only for this call.
pub fn sealed_memfd_from_secret(secret: &SecretBuf) -> Result<OwnedFd, MemfdError> {
    check_outgoing_len(secret.len())?;
    let mut bounce = BounceBuffer::new(secret.len()).map_err(MemfdError::Bounce)?;
    let staged = bounce.as_mut_slice();
    // Both are exactly secret.len() bytes, so copy_from_slice cannot panic.
    staged.copy_from_slice(secret.expose_secret());
    write_sealed_memfd(staged)
}

/// Client side of Store: a new sealed memfd holding `bytes` (1..=[`MAX_SECRET_LEN`]),
/// positioned at offset 0.
pub fn sealed_memfd_from_bytes(bytes: &[u8]) -> Result<OwnedFd, MemfdError> {
    check_outgoing_len(bytes.len())?;
    write_sealed_memfd(bytes)
}

/// Client side of Read: checks `fd` is a sealed memfd of at most [`MAX_SECRET_LEN`] bytes
/// and reads all of it.
pub fn read_memfd_to_vec(fd: BorrowedFd<'_>) -> Result<Zeroizing<Vec<u8>>, MemfdError> {
    Ok(sealed::read_to_vec(fd)?)
}

/// Does this kernel have `memfd_secret(2)`? (Creates one and closes it.)
pub fn memfd_secret_available() -> bool {
    probe_memfd_secret().is_ok()
}

/// [`memfd_secret_available`] with the kernel's reason when it is not (`ENOSYS`, `EPERM`…).
pub fn probe_memfd_secret() -> std::io::Result<()> {
    sys::memfd_secret().map(drop)
}

/// Outcome of asking for `memfd_secret(2)` (`agentkeysctl doctor`).
#[derive(Debug)]
pub enum MemfdSecret {
    /// A secretmem fd was created (and closed).
    Available,
    /// The call failed: `ENOSYS` (not built in, or before 6.5 not enabled with
    /// `secretmem.enable=1`), `EPERM` (a seccomp filter), …
    Unavailable(io::Error),
}

/// Asks the kernel for a `memfd_secret` fd and closes it.
pub fn memfd_secret() -> MemfdSecret {
    match probe_memfd_secret() {
        Ok(()) => MemfdSecret::Available,
        Err(e) => MemfdSecret::Unavailable(e),
    }
}

fn check_outgoing_len(len: usize) -> Result<(), MemfdError> {
    if len == 0 {
        return Err(MemfdError::Empty);
    }
    if len > MAX_SECRET_LEN {
        return Err(MemfdError::Sealed(SealedError::TooLarge {
            len: len as u64,
            max: MAX_SECRET_LEN,
        }));
    }
    Ok(())
}

/// New memfd, write `bytes`, seal with [`OUTGOING_SEALS`], rewind.
fn write_sealed_memfd(bytes: &[u8]) -> Result<OwnedFd, MemfdError> {
    let fd = create_memfd()?;
    // pwrite leaves the file offset at 0, so a receiver using read(2) starts at the start.
    write_all(fd.as_fd(), bytes)?;
    fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(OUTGOING_SEALS))
        .map_err(|e| MemfdError::Seal(e.into()))?;
    Ok(fd)
}

/// `memfd_create("agentkeys-secret", MFD_CLOEXEC|MFD_ALLOW_SEALING|MFD_NOEXEC_SEAL)`;
/// kernels before 6.3 reject `MFD_NOEXEC_SEAL` with `EINVAL`, so retry without it.
fn create_memfd() -> Result<OwnedFd, MemfdError> {
    let base = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    let noexec = MFdFlags::from_bits_retain(libc::MFD_NOEXEC_SEAL);
    match memfd_create(MEMFD_NAME, base | noexec) {
        Ok(fd) => Ok(fd),
        Err(Errno::EINVAL) => memfd_create(MEMFD_NAME, base),
        Err(e) => Err(e),
    }
    .map_err(|e| MemfdError::Create(e.into()))
}

fn write_all(fd: BorrowedFd<'_>, bytes: &[u8]) -> Result<(), MemfdError> {
    let mut done = 0;
    while let Some(rest) = bytes.get(done..).filter(|r| !r.is_empty()) {
        let offset = libc::off_t::try_from(done)
            .map_err(|_| MemfdError::Write(io::ErrorKind::InvalidInput.into()))?;
        match nix::sys::uio::pwrite(fd, rest, offset) {
            Ok(0) => return Err(MemfdError::Write(io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(MemfdError::Write(e.into())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::SecretMemoryPolicy;
    use super::*;

    fn vault() -> Vault {
        Vault::new(SecretMemoryPolicy::Prefer).unwrap()
    }

    /// A memfd holding `bytes` (or `size` zero bytes), with `seals` added.
    fn memfd_with(bytes: &[u8], size: Option<usize>, seals: SealFlag) -> OwnedFd {
        let fd =
            memfd_create(c"test", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
        write_all(fd.as_fd(), bytes).unwrap();
        if let Some(size) = size {
            nix::unistd::ftruncate(fd.as_fd(), size as i64).unwrap();
        }
        if !seals.is_empty() {
            fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(seals)).unwrap();
        }
        fd
    }

    fn seals_of(fd: BorrowedFd<'_>) -> SealFlag {
        SealFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GET_SEALS).unwrap())
    }

    #[test]
    fn sealed_memfd_is_read_into_the_vault() {
        let fd = memfd_with(b"sk-test-123", None, REQUIRED_SEALS);
        let secret = read_sealed_memfd(&vault(), fd.as_fd()).unwrap();
        assert_eq!(secret.expose_secret(), b"sk-test-123");
    }

    #[test]
    fn a_pipe_is_refused_as_not_a_memfd_without_blocking() {
        // Nothing is ever written: a read would block forever.
        let (rx, _tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let err = read_sealed_memfd(&vault(), rx.as_fd()).unwrap_err();
        assert!(
            matches!(err, MemfdError::Sealed(SealedError::NotAMemfd)),
            "{err:?}"
        );
        assert!(err.to_string().contains("not a memfd"), "{err}");
    }

    #[test]
    fn a_regular_file_is_refused() {
        // On disk: not a memfd. On tmpfs: shmem reports only F_SEAL_SEAL, so "not sealed".
        let file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut &file, b"data").unwrap();
        let err = read_sealed_memfd(&vault(), file.as_fd()).unwrap_err();
        assert!(
            matches!(
                err,
                MemfdError::Sealed(SealedError::NotAMemfd | SealedError::NotSealed { .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn an_unsealed_or_partly_sealed_memfd_is_refused() {
        let fd = memfd_with(b"x", None, SealFlag::empty());
        let err = read_sealed_memfd(&vault(), fd.as_fd()).unwrap_err();
        assert!(
            matches!(err, MemfdError::Sealed(SealedError::NotSealed { missing }) if missing == REQUIRED_SEALS),
            "{err:?}"
        );
        let fd = memfd_with(b"x", None, SealFlag::F_SEAL_WRITE);
        let err = read_sealed_memfd(&vault(), fd.as_fd()).unwrap_err();
        assert!(
            matches!(err, MemfdError::Sealed(SealedError::NotSealed { missing })
                if missing == SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("F_SEAL_SHRINK, F_SEAL_GROW"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_sealed_memfd_is_refused() {
        let fd = memfd_with(b"", None, REQUIRED_SEALS);
        let err = read_sealed_memfd(&vault(), fd.as_fd()).unwrap_err();
        assert!(matches!(err, MemfdError::Empty), "{err:?}");
    }

    #[test]
    fn one_byte_over_the_limit_is_refused_and_the_limit_is_accepted() {
        let fd = memfd_with(b"", Some(MAX_SECRET_LEN + 1), REQUIRED_SEALS);
        let err = read_sealed_memfd(&vault(), fd.as_fd()).unwrap_err();
        assert!(
            matches!(err, MemfdError::Sealed(SealedError::TooLarge { len, max })
                if len == MAX_SECRET_LEN as u64 + 1 && max == MAX_SECRET_LEN),
            "{err:?}"
        );

        let bytes: Vec<u8> = (0..MAX_SECRET_LEN).map(|i| (i % 253) as u8).collect();
        let fd = memfd_with(&bytes, None, REQUIRED_SEALS);
        let secret = read_sealed_memfd(&vault(), fd.as_fd()).unwrap();
        assert_eq!(secret.expose_secret(), bytes.as_slice());
    }

    #[test]
    fn outgoing_memfd_is_fully_sealed_rewound_and_reads_back() {
        let vault = vault();
        let mut secret = vault.alloc(5).unwrap();
        secret.expose_secret_mut().copy_from_slice(b"hello");
        let fd = sealed_memfd_from_secret(&secret).unwrap();
        assert_eq!(
            seals_of(fd.as_fd()).intersection(OUTGOING_SEALS),
            OUTGOING_SEALS
        );
        let pos = nix::unistd::lseek(fd.as_fd(), 0, nix::unistd::Whence::SeekCur).unwrap();
        assert_eq!(pos, 0);
        assert_eq!(read_memfd_to_vec(fd.as_fd()).unwrap().as_slice(), b"hello");
        // And the daemon would accept it back.
        let back = read_sealed_memfd(&vault, fd.as_fd()).unwrap();
        assert_eq!(back.expose_secret(), b"hello");
    }

    #[test]
    fn client_memfd_from_bytes_round_trips_and_checks_length() {
        let fd = sealed_memfd_from_bytes(b"token").unwrap();
        assert_eq!(
            seals_of(fd.as_fd()).intersection(OUTGOING_SEALS),
            OUTGOING_SEALS
        );
        assert_eq!(read_memfd_to_vec(fd.as_fd()).unwrap().as_slice(), b"token");
        assert!(matches!(
            sealed_memfd_from_bytes(b""),
            Err(MemfdError::Empty)
        ));
        let big = vec![0u8; MAX_SECRET_LEN + 1];
        assert!(matches!(
            sealed_memfd_from_bytes(&big),
            Err(MemfdError::Sealed(SealedError::TooLarge { .. }))
        ));
    }

    #[test]
    fn client_read_refuses_unsealed_and_oversized() {
        let fd = memfd_with(b"abc", None, SealFlag::F_SEAL_GROW);
        assert!(matches!(
            read_memfd_to_vec(fd.as_fd()),
            Err(MemfdError::Sealed(SealedError::NotSealed { .. }))
        ));
        let fd = memfd_with(b"", Some(MAX_SECRET_LEN + 1), REQUIRED_SEALS);
        assert!(matches!(
            read_memfd_to_vec(fd.as_fd()),
            Err(MemfdError::Sealed(SealedError::TooLarge { .. }))
        ));
    }

    #[test]
    fn memfd_secret_is_available_here() {
        assert!(memfd_secret_available());
    }
}
