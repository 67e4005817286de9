//! The one-time code the child shows and the approver sees: both sides compute it from the
//! request's nonce and canonical details, so a human comparing the two numbers knows the
//! request they approve is the one the child opened.
//!
//! OTP = HMAC-SHA256(key = nonce, msg = canonical details), first 4 bytes as a big-endian
//! u32, mod 10⁶, shown as 6 zero-padded digits. (The modulo bias, 2³² mod 10⁶ = 967,296
//! values of 4,294,967,296 landing one extra time on the lowest residues, is under 0.03 %.)

use std::fmt;

use hmac::digest::KeyInit;
use hmac::digest::generic_array::GenericArray;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

use super::nonce::{NONCE_LEN, Nonce};

/// SHA-256's block size: HMAC zero-pads shorter keys to it.
const HMAC_BLOCK: usize = 64;
/// Number of OTP values (6 decimal digits).
const OTP_MODULUS: u32 = 1_000_000;

/// A 6-digit one-time code. Displays zero-padded: `012345`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Otp(u32);

impl Otp {
    /// The code as a number, `0..1_000_000`.
    pub fn value(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Otp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

/// The OTP of a request with this nonce and these canonical details bytes.
pub fn otp(nonce: &Nonce, details_cbor: &[u8]) -> Otp {
    // HMAC zero-pads a key shorter than the block (RFC 2104 §2), so keying with the nonce
    // padded to 64 bytes is HMAC keyed with the nonce itself, through the infallible
    // constructor (`new_from_slice` returns a Result that can never be an error). No stack
    // scrub: the nonce is not vault-secret (the child receives it in a message).
    let mut key = [0u8; HMAC_BLOCK];
    key[..NONCE_LEN].copy_from_slice(nonce.expose_secret());
    let mut mac = <Hmac<Sha256> as KeyInit>::new(GenericArray::from_slice(&key));
    key.zeroize();
    mac.update(details_cbor);
    let tag = mac.finalize().into_bytes();
    let tag: [u8; 32] = tag.into();
    let [a, b, c, d, ..] = tag;
    Otp(u32::from_be_bytes([a, b, c, d]) % OTP_MODULUS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonce(byte: u8) -> Nonce {
        Nonce::from_bytes([byte; NONCE_LEN])
    }

    #[test]
    fn matches_hmac_keyed_with_the_unpadded_nonce() {
        for (n, msg) in [(0u8, &b""[..]), (1, b"details"), (0xff, &[0xa2; 300][..])] {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[n; NONCE_LEN]).unwrap();
            mac.update(msg);
            let tag = mac.finalize().into_bytes();
            let want = u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]]) % 1_000_000;
            assert_eq!(otp(&nonce(n), msg).value(), want);
        }
    }

    #[test]
    fn known_value_for_a_fixed_nonce_and_details() {
        // HMAC-SHA256(key = 32 × 0x00, msg = "") starts b613679a, and
        // 0xb613679a = 3,054,725,018 ≡ 725,018 (mod 10⁶). The tag itself is the well-known
        // HMAC of an empty message under an all-zero key; python:
        // hmac.new(bytes(32), b"", "sha256").hexdigest()[:8] == "b613679a".
        assert_eq!(otp(&nonce(0), b"").to_string(), "725018");
    }

    #[test]
    fn always_six_digits_zero_padded() {
        assert_eq!(Otp(0).to_string(), "000000");
        assert_eq!(Otp(42).to_string(), "000042");
        assert_eq!(Otp(999_999).to_string(), "999999");
        for i in 0..2_000u32 {
            let code = otp(&nonce((i % 256) as u8), &i.to_be_bytes());
            assert!(code.value() < 1_000_000);
            let text = code.to_string();
            assert_eq!(text.len(), 6);
            assert!(text.bytes().all(|b| b.is_ascii_digit()), "{text}");
        }
    }

    #[test]
    fn changing_one_details_byte_changes_the_code() {
        let details = b"\xa2\x64type\x64pair\x6frequested_scope\x81\x66github".to_vec();
        let n = nonce(9);
        let base = otp(&n, &details);
        for at in [0, 1, 5, 10, details.len() - 1] {
            let mut changed = details.clone();
            changed[at] ^= 0x01;
            assert_ne!(otp(&n, &changed), base, "byte {at}");
        }
        assert_ne!(otp(&nonce(10), &details), base, "a different nonce");
    }
}
