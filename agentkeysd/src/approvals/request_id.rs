//! Request ids: 128 random bits, written as 32 lowercase hex digits.

use std::fmt;
use std::str::FromStr;

use data_encoding::{HEXLOWER, HEXLOWER_PERMISSIVE};

use super::nonce::{RandomError, random_fill};

/// Length of a request id in bytes.
pub const REQUEST_ID_LEN: usize = 16;

/// The id of one auth request. Not secret: it names the request on the bus and in the
/// audit log; what authorizes is the caller's uid and the owner's password.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId([u8; REQUEST_ID_LEN]);

impl RequestId {
    /// A fresh random id from the OS CSPRNG.
    pub fn generate() -> Result<RequestId, RandomError> {
        let mut raw = [0; REQUEST_ID_LEN];
        random_fill(&mut raw, "a request id")?;
        Ok(RequestId(raw))
    }

    /// The id with these bytes.
    pub fn from_bytes(bytes: [u8; REQUEST_ID_LEN]) -> RequestId {
        RequestId(bytes)
    }

    /// The id's bytes (what the signing input covers).
    pub fn as_bytes(&self) -> &[u8; REQUEST_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({self})")
    }
}

/// A string that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a request id is 32 hexadecimal digits")]
pub struct BadRequestId;

impl FromStr for RequestId {
    type Err = BadRequestId;

    /// Parses 32 hex digits (either case).
    fn from_str(s: &str) -> Result<RequestId, BadRequestId> {
        if s.len() != 2 * REQUEST_ID_LEN {
            return Err(BadRequestId);
        }
        let raw = HEXLOWER_PERMISSIVE
            .decode(s.as_bytes())
            .map_err(|_| BadRequestId)?;
        <[u8; REQUEST_ID_LEN]>::try_from(raw.as_slice())
            .map(RequestId)
            .map_err(|_| BadRequestId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_32_lowercase_hex_digits_and_parses_back() {
        let id = RequestId::from_bytes([
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]);
        assert_eq!(id.to_string(), "00112233445566778899aabbccddeeff");
        assert_eq!(
            format!("{id:?}"),
            "RequestId(00112233445566778899aabbccddeeff)"
        );
        assert_eq!("00112233445566778899aabbccddeeff".parse(), Ok(id));
        assert_eq!("00112233445566778899AABBCCDDEEFF".parse(), Ok(id));
        let fresh = RequestId::generate().unwrap();
        assert_eq!(fresh.to_string().parse(), Ok(fresh));
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "00112233445566778899aabbccddeef",
            "00112233445566778899aabbccddeeff0",
            "00112233445566778899aabbccddeefg",
            "0011223344556677-899aabbccddeeff",
            "ÿ0112233445566778899aabbccddeef",
        ] {
            assert_eq!(bad.parse::<RequestId>(), Err(BadRequestId), "{bad}");
        }
    }
}
