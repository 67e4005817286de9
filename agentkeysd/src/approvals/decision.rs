//! Signed decisions: the daemon's Ed25519 host key signs an approval so the child can check
//! that this daemon approved exactly the request it opened.
//!
//! Signing input = SHA-256 over, in order, each part as a u32 big-endian length and then its
//! bytes:
//!
//! | part | bytes |
//! |---|---|
//! | domain | `AgentKeys-v1-AuthRequest` (24) |
//! | id | the 16 raw bytes |
//! | type | the [`RequestType`] name, e.g. `Pair` |
//! | details | the canonical CBOR |
//! | child pubkey | 32 |
//! | approver uid | u32 big-endian (4) |
//! | created_at | u64 big-endian Unix seconds (8) |
//! | nonce | 32 |
//!
//! Length prefixes make the encoding injective: no two different field tuples hash the same
//! bytes. The nonce and id make a decision specific to one request, so equal OTPs (one in a
//! million for any two requests) never let a decision for one request pass for another.
//! Only approvals are signed; a denial carries no signature, and a child treats anything
//! without a valid signature as "not approved".

use ed25519_dalek::{Signature, Signer, SigningKey};
use sha2::{Digest, Sha256};

use super::details::{self, DetailsError, MAX_DETAILS_LEN, PUBLIC_KEY_LEN, RequestType};
use super::nonce::{Nonce, RandomError, random_fill};
use super::request_id::RequestId;
use crate::vault::{self, SecretBuf, Vault, VaultError};

/// Domain separation for the signing input.
pub const DOMAIN: &str = "AgentKeys-v1-AuthRequest";
/// Length of the host key's seed.
pub const HOST_SEED_LEN: usize = 32;
/// Length of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// What a decision signature covers.
#[derive(Clone, Copy, Debug)]
pub struct DecisionFields<'a> {
    /// The request.
    pub id: RequestId,
    /// Its type.
    pub request_type: RequestType,
    /// Its canonical details.
    pub details_cbor: &'a [u8],
    /// The child's Ed25519 public key, as sent with the request.
    pub child_pubkey: &'a [u8; PUBLIC_KEY_LEN],
    /// The uid of the owner who approved.
    pub approver_uid: u32,
    /// When the request was opened (Unix seconds).
    pub created_at: u64,
    /// The request's nonce.
    pub nonce: &'a Nonce,
}

/// Why the host key could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// No secret memory for the seed.
    #[error("no secret memory for the host signing key")]
    Vault(#[source] VaultError),
    /// No random bytes for the seed.
    #[error("could not generate the host signing key")]
    Random(#[source] RandomError),
    /// The buffer given as the key is not a 32-byte seed.
    #[error("the host signing key is {len} bytes; an Ed25519 seed is 32")]
    WrongLength {
        /// Its length.
        len: usize,
    },
}

/// Why a decision could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The details are not canonical, valid details (or are over [`MAX_DETAILS_LEN`]).
    #[error("refusing to sign: the auth request details are invalid")]
    Details(#[source] DetailsError),
    /// The details are of another type than the request.
    #[error("refusing to sign: a {request_type} request carries {details_type} details")]
    TypeMismatch {
        /// The request's type.
        request_type: RequestType,
        /// The type the details name.
        details_type: RequestType,
    },
    /// The host key is unusable.
    #[error("could not sign the decision")]
    HostKey(#[source] HostKeyError),
}

/// Why a decision does not verify. Deliberately coarse: a child needs "trust it or not".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The details are over [`MAX_DETAILS_LEN`], so no decision covers them.
    #[error("auth request details are {len} bytes; the limit is {max}")]
    DetailsTooLarge {
        /// Their size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The host public key is not a usable Ed25519 key.
    #[error("the daemon's host public key is not a valid Ed25519 key")]
    BadHostKey,
    /// The signature does not match these fields under this key.
    #[error(
        "the decision's signature does not match the request (a different request, changed \
         details, or another daemon's key)"
    )]
    BadSignature,
}

/// SHA-256 of the length-prefixed fields (see the module documentation).
/// Fails only for details over [`MAX_DETAILS_LEN`], which no decision covers.
pub fn signing_input(fields: &DecisionFields<'_>) -> Result<[u8; 32], DetailsError> {
    let len = fields.details_cbor.len();
    if len > MAX_DETAILS_LEN {
        return Err(DetailsError::TooLarge {
            len,
            max: MAX_DETAILS_LEN,
        });
    }
    let mut hash = Sha256::new();
    let mut part = |bytes: &[u8]| {
        // Every part is at most MAX_DETAILS_LEN bytes (checked above), far below u32::MAX.
        hash.update((bytes.len() as u32).to_be_bytes());
        hash.update(bytes);
    };
    part(DOMAIN.as_bytes());
    part(fields.id.as_bytes());
    part(fields.request_type.as_str().as_bytes());
    part(fields.details_cbor);
    part(fields.child_pubkey);
    part(&fields.approver_uid.to_be_bytes());
    part(&fields.created_at.to_be_bytes());
    part(fields.nonce.expose_secret());
    Ok(hash.finalize().into())
}

/// Signs an approval with the host key (a 32-byte Ed25519 seed in secret memory).
///
/// Refuses details that are not canonical, valid details of `fields.request_type`: the
/// daemon must never sign something the child did not ask for.
pub fn sign(
    host_key: &SecretBuf,
    fields: &DecisionFields<'_>,
) -> Result<[u8; SIGNATURE_LEN], SignError> {
    let digest = signing_input(fields).map_err(SignError::Details)?;
    let details = details::decode(fields.details_cbor).map_err(SignError::Details)?;
    if details.request_type() != fields.request_type {
        return Err(SignError::TypeMismatch {
            request_type: fields.request_type,
            details_type: details.request_type(),
        });
    }
    let seed = seed(host_key).map_err(SignError::HostKey)?;
    // `SigningKey` copies the seed and expands it on the stack; it zeroizes itself on drop,
    // and `scrubbed` overwrites the dead frames the copies leave behind.
    Ok(vault::scrubbed(|| {
        SigningKey::from_bytes(seed).sign(&digest).to_bytes()
    }))
}

/// The child's check: does `signature` approve exactly these fields under `host_pubkey`?
/// Uses strict verification (no small-order keys, no malleable signatures).
pub fn verify(
    host_pubkey: &[u8; PUBLIC_KEY_LEN],
    fields: &DecisionFields<'_>,
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), VerifyError> {
    let digest = signing_input(fields).map_err(|_| VerifyError::DetailsTooLarge {
        len: fields.details_cbor.len(),
        max: MAX_DETAILS_LEN,
    })?;
    let key = details::usable_key(host_pubkey).ok_or(VerifyError::BadHostKey)?;
    key.verify_strict(&digest, &Signature::from_bytes(signature))
        .map_err(|_| VerifyError::BadSignature)
}

/// A new host signing key: 32 random bytes, written straight into secret memory.
pub fn generate_host_key(vault: &Vault) -> Result<SecretBuf, HostKeyError> {
    let mut key = vault.alloc(HOST_SEED_LEN).map_err(HostKeyError::Vault)?;
    random_fill(key.expose_secret_mut(), "the host signing key").map_err(HostKeyError::Random)?;
    Ok(key)
}

/// The public half of the host key, for children to verify against.
pub fn host_public_key(host_key: &SecretBuf) -> Result<[u8; PUBLIC_KEY_LEN], HostKeyError> {
    let seed = seed(host_key)?;
    Ok(vault::scrubbed(|| super::session::public_key_of(seed)))
}

/// The seed in place, without copying it out of secret memory.
fn seed(host_key: &SecretBuf) -> Result<&[u8; HOST_SEED_LEN], HostKeyError> {
    host_key
        .expose_secret()
        .try_into()
        .map_err(|_| HostKeyError::WrongLength {
            len: host_key.len(),
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::details::{Details, Pair, ScopeChange, encode};
    use super::super::nonce::NONCE_LEN;
    use super::super::otp::otp;
    use super::*;
    use crate::vault::SecretMemoryPolicy;

    fn vault() -> Vault {
        Vault::new(SecretMemoryPolicy::Prefer).unwrap()
    }

    fn host_key(vault: &Vault, seed: u8) -> SecretBuf {
        let mut key = vault.alloc(HOST_SEED_LEN).unwrap();
        key.expose_secret_mut().fill(seed);
        key
    }

    fn child_pubkey(seed: u8) -> [u8; 32] {
        SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes()
    }

    fn pair_details(names: &[&str]) -> Vec<u8> {
        encode(&Details::Pair(Pair {
            requested_scope: names.iter().map(|s| (*s).to_owned()).collect(),
            name: None,
            owner: None,
        }))
    }

    /// The parts of one request, owned, so tests can change one at a time.
    struct Request {
        id: RequestId,
        request_type: RequestType,
        details: Vec<u8>,
        child: [u8; 32],
        uid: u32,
        created_at: u64,
        nonce: Nonce,
    }

    impl Request {
        fn sample() -> Request {
            Request {
                id: RequestId::from_bytes([0x11; 16]),
                request_type: RequestType::Pair,
                details: pair_details(&["anthropic", "github"]),
                child: child_pubkey(3),
                uid: 1000,
                created_at: 1_800_000_000,
                nonce: Nonce::from_bytes([0x22; NONCE_LEN]),
            }
        }

        fn fields(&self) -> DecisionFields<'_> {
            DecisionFields {
                id: self.id,
                request_type: self.request_type,
                details_cbor: &self.details,
                child_pubkey: &self.child,
                approver_uid: self.uid,
                created_at: self.created_at,
                nonce: &self.nonce,
            }
        }
    }

    #[test]
    fn a_signed_approval_verifies_under_the_host_public_key() {
        let vault = vault();
        let key = host_key(&vault, 5);
        let public = host_public_key(&key).unwrap();
        let request = Request::sample();
        let signature = sign(&key, &request.fields()).unwrap();
        assert_eq!(verify(&public, &request.fields(), &signature), Ok(()));
        // Ed25519 is deterministic: the same fields give the same signature.
        assert_eq!(sign(&key, &request.fields()).unwrap(), signature);
    }

    #[test]
    fn changing_any_signed_field_breaks_verification() {
        let vault = vault();
        let key = host_key(&vault, 5);
        let public = host_public_key(&key).unwrap();
        let signature = sign(&key, &Request::sample().fields()).unwrap();
        type Change = fn(&mut Request);
        let changes: [(&str, Change); 9] = [
            ("id", |r| r.id = RequestId::from_bytes([0x12; 16])),
            ("type", |r| r.request_type = RequestType::Recover),
            ("details byte", |r| {
                let last = r.details.len() - 1;
                r.details[last] ^= 1;
            }),
            ("details scope", |r| {
                r.details = pair_details(&["anthropic", "github", "openai"])
            }),
            ("child key", |r| r.child = child_pubkey(4)),
            ("approver uid", |r| r.uid = 1001),
            ("created_at", |r| r.created_at += 1),
            ("nonce", |r| {
                let mut raw = *r.nonce.expose_secret();
                raw[31] ^= 1;
                r.nonce = Nonce::from_bytes(raw);
            }),
            ("all of the nonce", |r| r.nonce = Nonce::from_bytes([0; 32])),
        ];
        for (what, change) in changes {
            let mut request = Request::sample();
            change(&mut request);
            assert_eq!(
                verify(&public, &request.fields(), &signature),
                Err(VerifyError::BadSignature),
                "changed {what}"
            );
        }
        // Another daemon's key, and a tampered signature.
        let other = host_public_key(&host_key(&vault, 6)).unwrap();
        let fields = Request::sample();
        assert_eq!(
            verify(&other, &fields.fields(), &signature),
            Err(VerifyError::BadSignature)
        );
        let mut tampered = signature;
        tampered[0] ^= 1;
        assert_eq!(
            verify(&public, &fields.fields(), &tampered),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(&public, &fields.fields(), &[0; SIGNATURE_LEN]),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn a_decision_for_one_request_does_not_approve_another_with_the_same_otp() {
        // Force an OTP collision between two requests of different types, details, ids and
        // nonces. A: Pair, nonces [i, 0xAA…]; B: ScopeChange, nonces [j, 0xBB…]. Tabulate
        // the OTPs of 2,000 A-nonces, then walk B-nonces until one lands in the table:
        // each B hits with probability 2,000/10⁶, so about 500 steps; the search is
        // deterministic and bounded.
        let a_details = pair_details(&["github"]);
        let b_details = encode(&Details::ScopeChange(ScopeChange {
            agent_id: "agt_b".into(),
            new_scope: vec!["github".into()],
        }));
        let nonce = |i: u32, fill: u8| {
            let mut raw = [fill; NONCE_LEN];
            raw[..4].copy_from_slice(&i.to_be_bytes());
            Nonce::from_bytes(raw)
        };
        let table: HashMap<u32, u32> = (0..2_000)
            .map(|i| (otp(&nonce(i, 0xaa), &a_details).value(), i))
            .collect();
        let (i, j) = (0..200_000u32)
            .find_map(|j| {
                let code = otp(&nonce(j, 0xbb), &b_details).value();
                table.get(&code).map(|&i| (i, j))
            })
            .expect("a collision within the bound");
        let a = Request {
            id: RequestId::from_bytes([0xa0; 16]),
            request_type: RequestType::Pair,
            details: a_details,
            nonce: nonce(i, 0xaa),
            ..Request::sample()
        };
        let b = Request {
            id: RequestId::from_bytes([0xb0; 16]),
            request_type: RequestType::ScopeChange,
            details: b_details,
            nonce: nonce(j, 0xbb),
            ..Request::sample()
        };
        assert_eq!(otp(&a.nonce, &a.details), otp(&b.nonce, &b.details));

        let vault = vault();
        let key = host_key(&vault, 5);
        let public = host_public_key(&key).unwrap();
        let for_a = sign(&key, &a.fields()).unwrap();
        let for_b = sign(&key, &b.fields()).unwrap();
        assert_eq!(verify(&public, &a.fields(), &for_a), Ok(()));
        assert_eq!(verify(&public, &b.fields(), &for_b), Ok(()));
        assert_eq!(
            verify(&public, &b.fields(), &for_a),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(&public, &a.fields(), &for_b),
            Err(VerifyError::BadSignature)
        );

        // Same details, same OTP-relevant inputs except the id: still distinct decisions.
        let a2 = Request {
            id: RequestId::from_bytes([0xa1; 16]),
            request_type: RequestType::Pair,
            details: a.details.clone(),
            nonce: nonce(i, 0xaa),
            ..Request::sample()
        };
        assert_eq!(otp(&a.nonce, &a.details), otp(&a2.nonce, &a2.details));
        assert_eq!(
            verify(&public, &a2.fields(), &for_a),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn a_decision_does_not_approve_a_request_with_the_same_details_and_otp() {
        // Two requests with the same details, child key, approver and creation time whose
        // OTPs collide, found by the birthday bound: draw nonces [i, 0xCC…] until an OTP
        // repeats (10⁶ values: expected after about 1,250 draws; the search is
        // deterministic and bounded).
        let details = pair_details(&["github"]);
        let nonce = |i: u32| {
            let mut raw = [0xcc; NONCE_LEN];
            raw[..4].copy_from_slice(&i.to_be_bytes());
            Nonce::from_bytes(raw)
        };
        let mut seen: HashMap<u32, u32> = HashMap::new();
        let (i, j) = (0..50_000u32)
            .find_map(|j| {
                let code = otp(&nonce(j), &details).value();
                seen.insert(code, j).map(|i| (i, j))
            })
            .expect("a collision within the bound");
        let a = Request {
            id: RequestId::from_bytes([0xa0; 16]),
            details: details.clone(),
            nonce: nonce(i),
            ..Request::sample()
        };
        let b = Request {
            id: RequestId::from_bytes([0xb0; 16]),
            details,
            nonce: nonce(j),
            ..Request::sample()
        };
        assert_ne!(a.nonce.expose_secret(), b.nonce.expose_secret());
        assert_eq!(otp(&a.nonce, &a.details), otp(&b.nonce, &b.details));

        let vault = vault();
        let key = host_key(&vault, 5);
        let public = host_public_key(&key).unwrap();
        let for_a = sign(&key, &a.fields()).unwrap();
        assert_eq!(verify(&public, &a.fields(), &for_a), Ok(()));
        assert_eq!(
            verify(&public, &b.fields(), &for_a),
            Err(VerifyError::BadSignature)
        );
        // Even under A's id, B's nonce alone makes it another request.
        let b_as_a = Request {
            id: a.id,
            details: b.details.clone(),
            nonce: nonce(j),
            ..Request::sample()
        };
        assert_eq!(
            verify(&public, &b_as_a.fields(), &for_a),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn signing_refuses_details_that_are_invalid_or_of_another_type() {
        let vault = vault();
        let key = host_key(&vault, 5);
        let mut request = Request::sample();
        request.request_type = RequestType::ScopeChange;
        assert!(matches!(
            sign(&key, &request.fields()),
            Err(SignError::TypeMismatch {
                request_type: RequestType::ScopeChange,
                details_type: RequestType::Pair
            })
        ));
        let mut request = Request::sample();
        request.details.push(0);
        assert!(matches!(
            sign(&key, &request.fields()),
            Err(SignError::Details(DetailsError::Cbor(_)))
        ));
        request.details = vec![0; MAX_DETAILS_LEN + 1];
        assert!(matches!(
            sign(&key, &request.fields()),
            Err(SignError::Details(DetailsError::TooLarge { .. }))
        ));
        assert!(matches!(
            verify(&[0; 32], &request.fields(), &[0; 64]),
            Err(VerifyError::DetailsTooLarge { .. })
        ));
    }

    #[test]
    fn a_host_key_of_the_wrong_length_is_refused() {
        let vault = vault();
        for len in [16, 31, 33, 64] {
            let key = vault.alloc(len).unwrap();
            assert!(matches!(
                sign(&key, &Request::sample().fields()),
                Err(SignError::HostKey(HostKeyError::WrongLength { len: l })) if l == len
            ));
            assert!(matches!(
                host_public_key(&key),
                Err(HostKeyError::WrongLength { .. })
            ));
        }
    }

    #[test]
    fn verification_refuses_unusable_host_keys() {
        let request = Request::sample();
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        for key in [identity, not_a_point] {
            assert_eq!(
                verify(&key, &request.fields(), &[0; SIGNATURE_LEN]),
                Err(VerifyError::BadHostKey)
            );
        }
    }

    #[test]
    fn generated_host_keys_are_fresh_32_byte_seeds_in_the_vault() {
        let vault = vault();
        let a = generate_host_key(&vault).unwrap();
        let b = generate_host_key(&vault).unwrap();
        assert_eq!(a.len(), HOST_SEED_LEN);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(vault.stats().slots_in_use, 2);
        let public = host_public_key(&a).unwrap();
        assert!(super::super::details::valid_public_key(&public));
        let request = Request::sample();
        let signature = sign(&a, &request.fields()).unwrap();
        assert_eq!(verify(&public, &request.fields(), &signature), Ok(()));
    }

    #[test]
    fn the_signing_input_is_the_documented_length_prefixed_hash() {
        let request = Request::sample();
        let mut bytes = Vec::new();
        for part in [
            DOMAIN.as_bytes(),
            request.id.as_bytes(),
            b"Pair",
            &request.details,
            &request.child,
            &1000u32.to_be_bytes(),
            &1_800_000_000u64.to_be_bytes(),
            request.nonce.expose_secret(),
        ] {
            bytes.extend_from_slice(&u32::try_from(part.len()).unwrap().to_be_bytes());
            bytes.extend_from_slice(part);
        }
        assert_eq!(&bytes[..4], &[0, 0, 0, 24]);
        let want: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(signing_input(&request.fields()).unwrap(), want);
    }

    #[test]
    fn debug_and_errors_show_no_nonce_or_seed_bytes() {
        let vault = vault();
        let mut key = vault.alloc(31).unwrap();
        key.expose_secret_mut().fill(0x5a);
        let request = Request::sample();
        let debug = format!("{:?}", request.fields());
        assert!(debug.contains("Nonce(<secret>)"), "{debug}");
        assert!(
            !debug.contains("34, 34") && !debug.contains("0x22"),
            "{debug}"
        );
        let err = sign(&key, &request.fields()).unwrap_err();
        let text = format!("{err} {err:?} {}", host_public_key(&key).unwrap_err());
        assert!(!text.contains("90") && !text.contains("5a"), "{text}");
    }
}
