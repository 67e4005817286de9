//! AES-256-GCM sealing with every plaintext byte in secret memory. Public so that benches
//! and tools can exercise the exact primitive the store uses; the store is its only caller
//! in the daemon.
//!
//! Encrypt: copy the plaintext into a fresh [`SecretBuf`], encrypt it in place there, copy the
//! ciphertext out. Decrypt: copy the ciphertext into a fresh `SecretBuf`, decrypt in place
//! there. The cipher (and so its round keys) is built per operation from the key `SecretBuf`
//! and wiped on drop (the `zeroize` features of `aes`, `ghash` and `polyval`); the copies
//! that moves leave in stack frames are overwritten by [`crate::vault::scrubbed`]. Nonces are 96 random bits per seal.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::{Aes256Gcm, KeyInit};

use super::error::{StoreError, random_fill};
use crate::vault::{MAX_SECRET_LEN, SecretBuf, Vault};

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
pub const KEY_LEN: usize = 32;

/// A sealed value as stored: the nonce, and ciphertext ‖ tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: [u8; NONCE_LEN],
    pub sealed: Vec<u8>,
}

/// Why a sealed value did not open. Carries no bytes of anything.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenFailure {
    /// Nonce or ciphertext has a length we never write.
    Malformed,
    /// The tag did not verify: wrong key, wrong AAD, or altered bytes.
    Unauthentic,
}

fn cipher(key: &SecretBuf) -> Result<Aes256Gcm, StoreError> {
    Aes256Gcm::new_from_slice(key.expose_secret()).map_err(|_| StoreError::Crypto {
        step: "building AES-256-GCM from a key of the wrong length",
    })
}

/// A secret-memory copy of `bytes` (which may be secret).
pub(crate) fn secret_copy(vault: &Vault, bytes: &[u8]) -> Result<SecretBuf, StoreError> {
    let mut buf = vault.alloc(bytes.len())?;
    match buf.expose_secret_mut().get_mut(..bytes.len()) {
        Some(dst) => dst.copy_from_slice(bytes),
        None => {
            return Err(StoreError::Crypto {
                step: "copying into secret memory (slot shorter than asked)",
            });
        }
    }
    buf.truncate(bytes.len());
    Ok(buf)
}

/// Seal `plaintext` (secret: it is only ever copied into secret memory) under `key`.
pub fn seal(
    vault: &Vault,
    key: &SecretBuf,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Sealed, StoreError> {
    // The cipher's stack copies of the key go with the scrubbed frame.
    crate::vault::scrubbed(|| seal_inner(vault, key, plaintext, aad))
}

fn seal_inner(
    vault: &Vault,
    key: &SecretBuf,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Sealed, StoreError> {
    if plaintext.is_empty() || plaintext.len() > MAX_SECRET_LEN {
        return Err(StoreError::InvalidArgument {
            what: "secret",
            reason: format!("length {} is not in 1..={MAX_SECRET_LEN}", plaintext.len()),
        });
    }
    let mut nonce = [0u8; NONCE_LEN];
    random_fill(&mut nonce, "an AES-GCM nonce")?;
    let mut work = secret_copy(vault, plaintext)?;
    let tag = cipher(key)?
        .encrypt_in_place_detached(&GenericArray::from(nonce), aad, work.expose_secret_mut())
        .map_err(|_| StoreError::Crypto {
            step: "AES-256-GCM encryption",
        })?;
    let mut sealed = Vec::with_capacity(work.len() + TAG_LEN);
    sealed.extend_from_slice(work.expose_secret());
    sealed.extend_from_slice(&tag);
    Ok(Sealed { nonce, sealed })
}

/// Open a sealed value into secret memory. `Ok(Err(_))` is an authentication failure (the
/// caller decides what it means); `Err(_)` is a failure to run at all.
pub fn open(
    vault: &Vault,
    key: &SecretBuf,
    nonce: &[u8],
    sealed: &[u8],
    aad: &[u8],
) -> Result<Result<SecretBuf, OpenFailure>, StoreError> {
    crate::vault::scrubbed(|| open_inner(vault, key, nonce, sealed, aad))
}

fn open_inner(
    vault: &Vault,
    key: &SecretBuf,
    nonce: &[u8],
    sealed: &[u8],
    aad: &[u8],
) -> Result<Result<SecretBuf, OpenFailure>, StoreError> {
    let Ok(nonce) = <[u8; NONCE_LEN]>::try_from(nonce) else {
        return Ok(Err(OpenFailure::Malformed));
    };
    let Some(ct_len) = sealed.len().checked_sub(TAG_LEN) else {
        return Ok(Err(OpenFailure::Malformed));
    };
    if ct_len == 0 || ct_len > MAX_SECRET_LEN {
        return Ok(Err(OpenFailure::Malformed));
    }
    let (ct, tag) = sealed.split_at(ct_len);
    let Ok(tag) = <[u8; TAG_LEN]>::try_from(tag) else {
        return Ok(Err(OpenFailure::Malformed));
    };
    let mut work = secret_copy(vault, ct)?;
    match cipher(key)?.decrypt_in_place_detached(
        &GenericArray::from(nonce),
        aad,
        work.expose_secret_mut(),
        &GenericArray::from(tag),
    ) {
        Ok(()) => Ok(Ok(work)),
        // `work` is dropped (and zeroized) here; it never held plaintext: GCM checks the tag
        // before it decrypts.
        Err(_) => Ok(Err(OpenFailure::Unauthentic)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::SecretMemoryPolicy;

    fn key(vault: &Vault, byte: u8) -> SecretBuf {
        let mut k = vault.alloc(KEY_LEN).unwrap();
        k.expose_secret_mut().fill(byte);
        k
    }

    fn vault() -> Vault {
        Vault::new(SecretMemoryPolicy::Prefer).unwrap()
    }

    #[test]
    fn sealed_value_opens_with_same_key_and_aad() {
        let v = vault();
        let k = key(&v, 7);
        let s = seal(&v, &k, b"sk-test-1234", b"aad").unwrap();
        assert_eq!(s.sealed.len(), 12 + TAG_LEN);
        assert_ne!(&s.sealed[..12], b"sk-test-1234");
        let pt = open(&v, &k, &s.nonce, &s.sealed, b"aad").unwrap().unwrap();
        assert_eq!(pt.expose_secret(), b"sk-test-1234");
    }

    #[test]
    fn sealing_twice_uses_fresh_nonces() {
        let v = vault();
        let k = key(&v, 7);
        let a = seal(&v, &k, b"same", b"").unwrap();
        let b = seal(&v, &k, b"same", b"").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.sealed, b.sealed);
    }

    #[test]
    fn wrong_key_aad_or_bytes_do_not_open() {
        let v = vault();
        let k = key(&v, 7);
        let s = seal(&v, &k, b"secret", b"aad").unwrap();
        let other = key(&v, 8);
        let fail = |r: Result<Result<SecretBuf, OpenFailure>, StoreError>| r.unwrap().unwrap_err();
        assert_eq!(
            fail(open(&v, &other, &s.nonce, &s.sealed, b"aad")),
            OpenFailure::Unauthentic
        );
        assert_eq!(
            fail(open(&v, &k, &s.nonce, &s.sealed, b"aaD")),
            OpenFailure::Unauthentic
        );
        let mut flipped = s.sealed.clone();
        flipped[0] ^= 1;
        assert_eq!(
            fail(open(&v, &k, &s.nonce, &flipped, b"aad")),
            OpenFailure::Unauthentic
        );
        assert_eq!(
            fail(open(&v, &k, &s.nonce[..11], &s.sealed, b"aad")),
            OpenFailure::Malformed
        );
        assert_eq!(
            fail(open(&v, &k, &s.nonce, &s.sealed[..TAG_LEN], b"aad")),
            OpenFailure::Malformed
        );
    }

    #[test]
    fn empty_plaintext_is_refused() {
        let v = vault();
        let k = key(&v, 7);
        assert!(matches!(
            seal(&v, &k, b"", b""),
            Err(StoreError::InvalidArgument { .. })
        ));
    }
}
