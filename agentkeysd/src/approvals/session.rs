//! Session proofs: how a paired agent shows, on one bus connection, that it holds the key
//! its session was issued to.
//!
//! Proof input = SHA-256 over, each as a u32 big-endian length and then its bytes: the
//! domain `AgentKeys-v1-Session`, the session id, the connection's unique bus name. The
//! agent signs it with its Ed25519 key; the daemon verifies against the key the session
//! was issued to. The unique name is assigned by the bus and never reused while the bus
//! runs, so a proof seen on one connection is worthless on any other: the session id alone
//! authorizes nothing, and no bearer secret ever crosses the bus.

use ed25519_dalek::{Signature, Signer, SigningKey};
use sha2::{Digest, Sha256};

use super::decision::SIGNATURE_LEN;
use super::details::PUBLIC_KEY_LEN;

/// Domain separation for session proofs.
pub const SESSION_DOMAIN: &str = "AgentKeys-v1-Session";

/// The 32 bytes an agent signs to bind `session` to the connection `unique_name`.
pub fn session_proof_input(session: &str, unique_name: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [
        SESSION_DOMAIN.as_bytes(),
        session.as_bytes(),
        unique_name.as_bytes(),
    ] {
        // Session ids and bus names are short (bus names are at most 255 bytes).
        hash.update((part.len() as u32).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

/// The agent's side: signs the proof with its 32-byte Ed25519 seed.
pub fn sign_session_proof(
    seed: &[u8; 32],
    session: &str,
    unique_name: &str,
) -> [u8; SIGNATURE_LEN] {
    SigningKey::from_bytes(seed)
        .sign(&session_proof_input(session, unique_name))
        .to_bytes()
}

/// The daemon's side: does `signature` prove `pubkey`'s holder bound `session` to
/// `unique_name`? Strict verification; a weak key never verifies.
pub fn verify_session_proof(
    pubkey: &[u8; PUBLIC_KEY_LEN],
    session: &str,
    unique_name: &str,
    signature: &[u8],
) -> bool {
    let Ok(sig) = <[u8; SIGNATURE_LEN]>::try_from(signature) else {
        return false;
    };
    let Some(key) = super::details::usable_key(pubkey) else {
        return false;
    };
    key.verify_strict(
        &session_proof_input(session, unique_name),
        &Signature::from_bytes(&sig),
    )
    .is_ok()
}

/// The public key of a 32-byte Ed25519 seed.
pub fn public_key_of(seed: &[u8; 32]) -> [u8; PUBLIC_KEY_LEN] {
    SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

/// `SHA256:` and the first 16 bytes of SHA-256 of the key, in lowercase hex, grouped by
/// two bytes: what a human compares between the two terminals.
pub fn fingerprint(pubkey: &[u8; PUBLIC_KEY_LEN]) -> String {
    let digest = Sha256::digest(pubkey);
    let hex = data_encoding::HEXLOWER.encode(&digest[..16]);
    let groups: Vec<&str> = (0..hex.len()).step_by(4).map(|i| &hex[i..i + 4]).collect();
    format!("SHA256:{}", groups.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: [u8; 32] = [7; 32];

    #[test]
    fn a_proof_verifies_only_for_its_session_connection_and_key() {
        let pk = public_key_of(&SEED);
        let sig = sign_session_proof(&SEED, "ses_a", ":1.5");
        assert!(verify_session_proof(&pk, "ses_a", ":1.5", &sig));
        assert!(!verify_session_proof(&pk, "ses_b", ":1.5", &sig));
        assert!(!verify_session_proof(&pk, "ses_a", ":1.6", &sig));
        let other = public_key_of(&[8; 32]);
        assert!(!verify_session_proof(&other, "ses_a", ":1.5", &sig));
        assert!(!verify_session_proof(&pk, "ses_a", ":1.5", &sig[..63]));
        let mut bad = sig;
        bad[0] ^= 1;
        assert!(!verify_session_proof(&pk, "ses_a", ":1.5", &bad));
    }

    #[test]
    fn length_prefixes_keep_fields_apart() {
        assert_ne!(
            session_proof_input("ab", "c"),
            session_proof_input("a", "bc")
        );
    }

    #[test]
    fn fingerprint_is_grouped_hex_of_the_hash() {
        let f = fingerprint(&[0; 32]);
        assert!(f.starts_with("SHA256:"));
        assert_eq!(f.len(), "SHA256:".len() + 32 + 7);
    }
}
