//! Auth requests: the one approval primitive (DESIGN §4), as a pure core.
//!
//! No agent gets a key, a new scope, a recovered identity or a confirmed read unless the
//! owner said yes. This module holds everything about a request that is a pure function of
//! its inputs: the canonical details, the nonce and what derives from it (OTP, pair code),
//! the request's lifecycle, and the signed decision the child verifies. The daemon stores
//! requests, talks D-Bus, rate-limits and asks PAM; the child (`agentkeysctl pair`) builds
//! details and verifies decisions with the same functions.
//!
//! # Formats
//!
//! - **Request id** ([`RequestId`]): 128 random bits, written as 32 lowercase hex digits.
//! - **Type** ([`RequestType`]): `Pair`, `Recover`, `ScopeChange`, `HighValueRelease`,
//!   `KeyRotate`.
//! - **Details** ([`Details`], [`encode`], [`decode`]): deterministic CBOR (RFC 8949
//!   §4.2.1: shortest-form integers and lengths, definite lengths, map keys sorted bytewise
//!   by their encoded form, which puts shorter keys first). Each type is a map with
//!   `"type"` (`pair`, `recover`, `scope_change`, `high_value_release`, `key_rotate`) and
//!   its fields as snake_case keys: `requested_scope`/`new_scope` arrays of names,
//!   `agent_identity`/`agent_id`/`credential`/`reason` text, `new_pubkey` a 32-byte byte
//!   string. Limits: a blob of at most 16 KiB, scopes of at most 256 names (each a valid
//!   name, no repeats), text of at most 1 KiB without control or bidi-override characters,
//!   public keys that are usable Ed25519 keys. `decode` refuses everything but the one
//!   canonical encoding of valid details, and never panics.
//! - **Nonce** ([`Nonce`]): 32 bytes from the OS CSPRNG.
//! - **OTP** ([`otp()`]): HMAC-SHA256(key = nonce, msg = canonical details), first 4 bytes as
//!   a big-endian u32, mod 10⁶, shown as 6 zero-padded digits (`012345`).
//! - **Pair code** ([`PairCode`]): SHA-256(`"AgentKeys-v1 pair code"` ‖ nonce), first 40
//!   bits, 8 symbols of Crockford base32 (`0123456789ABCDEFGHJKMNPQRSTVWXYZ`), shown
//!   `ABCD-EFGH`; parsing takes either case, `-`/spaces anywhere, `O`→`0`, `I`/`L`→`1`.
//! - **TTL** ([`ttl`]): 60 s for Pair and Recover, 300 s for the others.
//! - **Lifecycle** ([`Lifecycle`]): pending → approved | denied | expired; approved →
//!   consumed. Pure transitions taking `now` in Unix seconds.
//! - **Decision** ([`sign`], [`verify`]): Ed25519 by the host key over SHA-256 of the
//!   length-prefixed (u32 BE) parts: domain `AgentKeys-v1-AuthRequest`, id (16 bytes), type
//!   name, details CBOR, child public key (32), approver uid (u32 BE), created_at (u64 BE),
//!   nonce (32). Only approvals are signed.
//!
//! The committed test vectors (`vectors.json`, one per type) fix all of these bytes.
//!
//! # Why 40 bits of pair code are enough
//!
//! A pair code names a pending request; it is not what authorizes (approving also needs
//! the owner's uid and password). Guessing one is throttled by the daemon (issue 3
//! item 2), which should allow about 10 wrong codes per uid per minute. There are 2⁴⁰ ≈
//! 1.1 × 10¹² codes, so with one request pending each guess hits with probability
//! 9.1 × 10⁻¹³: 10 guesses in a request's 60 s life hit with probability 9.1 × 10⁻¹²,
//! and a uid guessing at the limit for a whole year (5.3 × 10⁶ guesses) against a request
//! that is always pending has a 4.8 × 10⁻⁶ chance; with 100 requests always pending,
//! 4.8 × 10⁻⁴. The expected time to a first hit is 2³⁹ guesses ≈ 10⁵ years.
//!
//! Uniqueness is not free at 40 bits: k live codes collide with probability about
//! k²/2⁴¹ (4.5 × 10⁻⁷ for 1,000 live requests, 0.45 % for 100,000). The daemon must
//! therefore check a new code against the live ones and draw a fresh nonce if it is taken.
//! Nonces (256 bits) and ids (128 bits) never collide in practice.
//!
//! # Invariants
//!
//! - The bytes that are shown, hashed and signed are the canonical details; there is no
//!   second spelling of a request that would derive another OTP or verify differently.
//! - A signed decision covers the request id and nonce, so it approves exactly one request
//!   even when two requests show the same OTP.
//! - The host key's seed stays in [`crate::vault`] memory; each signature builds the
//!   signing key inside [`crate::vault::scrubbed`] and drops it (zeroized).
//! - Nonces and seeds never appear in `Debug`, `Display` or error text.
//! - Nothing here panics on any input; time is an argument, never read from a clock.
//!
//! At the bus, [`StateError::AlreadyDecided`] maps to `dev.agentkeys.Error.AlreadyConsumed`
//! (the public error set has no finer name), and an unknown or expired pair code must give
//! the same `NotFound`.
//!
//! Non-goals: D-Bus (`Approvals1`), storage of requests and their garbage collection, rate
//! limits, PAM re-authentication, the CLI. Those wire this module in; none of them is here.

mod cbor;
mod decision;
mod details;
mod nonce;
mod otp;
mod pair_code;
mod request_id;
mod state;

#[cfg(test)]
mod vectors_tests;

pub use cbor::CborError;
pub use decision::{
    DOMAIN, DecisionFields, HOST_SEED_LEN, HostKeyError, SIGNATURE_LEN, SignError, VerifyError,
    generate_host_key, host_public_key, sign, signing_input, verify,
};
pub use details::{
    Details, DetailsError, HighValueRelease, KeyRotate, MAX_DETAILS_LEN, MAX_SCOPE_NAMES,
    MAX_TEXT_LEN, PUBLIC_KEY_LEN, Pair, Recover, RequestType, ScopeChange, UnknownRequestType,
    decode, encode, valid_public_key,
};
pub use nonce::{NONCE_LEN, Nonce, RandomError};
pub use otp::{Otp, otp};
pub use pair_code::{CROCKFORD_ALPHABET, PAIR_CODE_LEN, PairCode, PairCodeError};
pub use request_id::{BadRequestId, REQUEST_ID_LEN, RequestId};
pub use state::{LONG_TTL, Lifecycle, SHORT_TTL, State, StateError, ttl};
