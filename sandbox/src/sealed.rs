//! Reading a secret out of a sealed memfd: the checks both ends of a secret's trip share.
//! The daemon's vault (`agentkeysd::vault`) reads what clients send with them, and the
//! runner reads what the daemon hands it the same way, so a number that is not a sealed
//! memfd of bounded size is refused before a byte is read, and no read can ever block.

use std::io;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use zeroize::Zeroizing;

/// Largest secret a client may store.
pub const MAX_SECRET_LEN: usize = 64 * 1024;

/// Seals an incoming memfd must carry: its contents and size are then fixed for good.
pub const REQUIRED_SEALS: SealFlag = SealFlag::F_SEAL_WRITE
    .union(SealFlag::F_SEAL_SHRINK)
    .union(SealFlag::F_SEAL_GROW);

/// Why a memfd's secret could not be read; each variant names the check or the step.
#[derive(Debug, thiserror::Error)]
pub enum SealedError {
    /// The fd is not a memfd (`F_GET_SEALS` gives `EINVAL`: a pipe, socket, regular file…).
    #[error("the file descriptor is not a memfd; secrets must be passed as a sealed memfd")]
    NotAMemfd,
    /// `F_GET_SEALS` failed for another reason.
    #[error("could not read the seals of the memfd")]
    GetSeals(#[source] io::Error),
    /// The memfd lacks seals that make its contents immutable.
    #[error(
        "the memfd is not sealed (missing {}); seal it with \
         F_SEAL_WRITE|F_SEAL_SHRINK|F_SEAL_GROW before sending",
        seal_names(*missing)
    )]
    NotSealed {
        /// The required seals that are absent.
        missing: SealFlag,
    },
    /// The secret is larger than [`MAX_SECRET_LEN`].
    #[error("the secret is {len} bytes; the limit is {max} bytes")]
    TooLarge {
        /// Size of the secret.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// `fstat` failed.
    #[error("could not stat the memfd")]
    Stat(#[source] io::Error),
    /// `pread` failed.
    #[error("could not read the memfd")]
    Read(#[source] io::Error),
    /// The memfd ended before its `fstat` size.
    #[error("the memfd ended after {got} of {expected} bytes")]
    ShortRead {
        /// Size from `fstat`.
        expected: usize,
        /// Bytes read before end of file.
        got: usize,
    },
}

/// `F_SEAL_WRITE, F_SEAL_GROW` for error texts.
fn seal_names(seals: SealFlag) -> String {
    seals
        .iter_names()
        .map(|(name, _)| name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks `fd` is a sealed memfd of at most [`MAX_SECRET_LEN`] bytes and reads all of it.
pub fn read_to_vec(fd: BorrowedFd<'_>) -> Result<Zeroizing<Vec<u8>>, SealedError> {
    let len = sealed_len(fd)?;
    let mut out = Zeroizing::new(vec![0u8; len]);
    read_exact_at_start(fd, out.as_mut_slice())?;
    Ok(out)
}

/// Size of `fd` after checking it is a memfd carrying [`REQUIRED_SEALS`] and is at most
/// [`MAX_SECRET_LEN`] bytes.
pub fn sealed_len(fd: BorrowedFd<'_>) -> Result<usize, SealedError> {
    // First, before anything that could block: EINVAL here means "not a memfd".
    let seals = match fcntl(fd, FcntlArg::F_GET_SEALS) {
        Ok(bits) => SealFlag::from_bits_truncate(bits),
        Err(Errno::EINVAL) => return Err(SealedError::NotAMemfd),
        Err(e) => return Err(SealedError::GetSeals(e.into())),
    };
    let missing = REQUIRED_SEALS.difference(seals);
    if !missing.is_empty() {
        return Err(SealedError::NotSealed { missing });
    }
    let stat = nix::sys::stat::fstat(fd).map_err(|e| SealedError::Stat(e.into()))?;
    // Sealed against shrink and grow, so this size can no longer change.
    let size = u64::try_from(stat.st_size).map_err(|_| SealedError::Stat(invalid_size()))?;
    match usize::try_from(size) {
        Ok(len) if len <= MAX_SECRET_LEN => Ok(len),
        _ => Err(SealedError::TooLarge {
            len: size,
            max: MAX_SECRET_LEN,
        }),
    }
}

fn invalid_size() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "negative file size")
}

/// Fills `buf` from offset 0 of `fd` with `pread` (no file-position side effects).
pub fn read_exact_at_start(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(), SealedError> {
    let expected = buf.len();
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        let offset = libc::off_t::try_from(done).map_err(|_| SealedError::Read(invalid_size()))?;
        match nix::sys::uio::pread(fd, rest, offset) {
            Ok(0) => {
                return Err(SealedError::ShortRead {
                    expected,
                    got: done,
                });
            }
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(SealedError::Read(e.into())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_sealed_error_names_the_missing_seals() {
        let e = SealedError::NotSealed {
            missing: SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW,
        };
        let text = e.to_string();
        assert!(
            text.contains("missing F_SEAL_GROW, F_SEAL_WRITE)"),
            "{text}"
        );
    }
}
