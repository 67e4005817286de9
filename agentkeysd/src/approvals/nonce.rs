//! The request nonce: 256 bits from the OS CSPRNG, from which the OTP and the pair code are
//! derived and which the signed decision covers.
//!
//! Secret-ish rather than secret: the child learns it (it needs it to verify the decision),
//! but anyone else who learned it could compute the request's pair code and OTP. So the
//! type follows the secret discipline: not `Clone`, `Debug` prints `<secret>`, no `Display`,
//! zeroized on drop, bytes only through [`Nonce::expose_secret`]. It lives on the ordinary
//! heap, not in the vault, because it travels to the child in a message anyway.

use std::fmt;
use std::io;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a nonce in bytes.
pub const NONCE_LEN: usize = 32;

/// A request nonce.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Nonce([u8; NONCE_LEN]);

impl Nonce {
    /// A fresh nonce from the OS CSPRNG (`getrandom(2)`).
    pub fn generate() -> Result<Nonce, RandomError> {
        let mut nonce = Nonce([0; NONCE_LEN]);
        random_fill(&mut nonce.0, "a request nonce")?;
        Ok(nonce)
    }

    /// A nonce received from the daemon (the child side) or loaded from storage.
    pub fn from_bytes(bytes: [u8; NONCE_LEN]) -> Nonce {
        Nonce(bytes)
    }

    /// The nonce's bytes.
    pub fn expose_secret(&self) -> &[u8; NONCE_LEN] {
        &self.0
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Nonce(<secret>)")
    }
}

/// The OS random source failed.
#[derive(Debug, thiserror::Error)]
#[error("could not read {what} from the OS random source (getrandom)")]
pub struct RandomError {
    /// What the random bytes were for.
    pub what: &'static str,
    /// The error `getrandom` reported.
    #[source]
    pub source: io::Error,
}

/// Fills `buf` from the OS CSPRNG.
pub(crate) fn random_fill(buf: &mut [u8], what: &'static str) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(|e| RandomError {
        what,
        source: match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::other(e.to_string()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_nonces_differ_and_are_not_zero() {
        let a = Nonce::generate().unwrap();
        let b = Nonce::generate().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.expose_secret(), &[0; NONCE_LEN]);
    }

    #[test]
    fn debug_does_not_print_the_bytes() {
        let n = Nonce::from_bytes([0xab; NONCE_LEN]);
        let text = format!("{n:?} {n:#?}");
        assert_eq!(format!("{n:?}"), "Nonce(<secret>)");
        assert!(!text.contains("ab") && !text.contains("171"), "{text}");
    }

    #[test]
    fn zeroize_clears_the_bytes() {
        let mut n = Nonce::from_bytes([0xab; NONCE_LEN]);
        n.zeroize();
        assert_eq!(n.expose_secret(), &[0; NONCE_LEN]);
    }
}
