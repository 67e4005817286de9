//! Step 4: resource limits, the secret variables read from their memfds, and every other
//! inherited fd closed — so nothing the runner was handed reaches the agent by accident.

use std::os::fd::RawFd;

use nix::sys::resource::{Resource, setrlimit};
use zeroize::Zeroizing;

use crate::plan::StepError;
use crate::spec::{SECRET_FD_BASE, SecretRef, Spec};
use crate::sys;

/// `NAME=value` of one secret variable, wiped when dropped.
pub type SecretVar = Zeroizing<Vec<u8>>;

/// No core dumps: a dump of the agent would hold its keys.
pub fn set_rlimits() -> Result<(), StepError> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| StepError::new("setrlimit(RLIMIT_CORE, 0)", e))
}

/// Reads the memfd of `secret` (sealed, bounded: [`crate::sealed`]).
pub fn read_secret(secret: &SecretRef) -> Result<Zeroizing<Vec<u8>>, StepError> {
    let raw = secret_fd(secret);
    // Open since the runner started (the daemon put it at this number); `close_except`
    // runs only after every read. A number that is not a sealed memfd is refused.
    let fd = sys::borrow_inherited_fd(raw);
    crate::sealed::read_to_vec(fd).map_err(|e| {
        StepError::new(
            format!("read the secret {:?} from fd {raw}", secret.name),
            std::io::Error::other(e.to_string()),
        )
    })
}

/// The secret variables as `NAME=value` bytes.
pub fn secret_env(spec: &Spec) -> Result<Vec<SecretVar>, StepError> {
    spec.secret_env
        .iter()
        .map(|s| {
            let value = read_secret(s)?;
            let mut var = Zeroizing::new(Vec::with_capacity(s.name.len() + 1 + value.len()));
            var.extend_from_slice(s.name.as_bytes());
            var.push(b'=');
            var.extend_from_slice(&value);
            Ok(var)
        })
        .collect()
}

/// Closes every fd from 3 on except those in `keep`.
pub fn close_except(keep: &[RawFd]) -> Result<(), StepError> {
    let fail = |e| StepError::new("close inherited file descriptors", e);
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|fd| *fd >= 3).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 3;
    for fd in keep {
        if fd > first {
            sys::close_range(first, fd - 1).map_err(fail)?;
        }
        first = fd + 1;
    }
    sys::close_range(first, RawFd::MAX).map_err(fail)
}

fn secret_fd(secret: &SecretRef) -> RawFd {
    SECRET_FD_BASE.saturating_add(i32::try_from(secret.fd).unwrap_or(i32::MAX))
}
