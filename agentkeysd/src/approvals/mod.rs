//! Auth requests: the one approval primitive (DESIGN §4), as a pure core.
//!
//! No agent gets a key, a new scope, a recovered identity or a confirmed read unless the
//! owner said yes. This module holds everything about a request that is a pure function of
//! its inputs: the canonical details, the nonce and what derives from it (OTP, pair code),
//! the request's lifecycle, the signed decision the child verifies, the in-memory table of
//! live requests ([`Registry`]) and the per-uid rate limiter ([`RateLimiter`]). The daemon
//! talks D-Bus, reads the clock, asks PAM and decides who may approve; the child
//! (`agentkeysctl pair`) builds details and verifies decisions with the same functions.
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
//!   string. Optional fields, left out of the map when absent (never `null`): `Pair` has
//!   `name` (text, a valid name: the agent's name) and `owner` (an unsigned integer below
//!   2³²: the uid whose approval is asked; absent means the opener's own uid), `Recover`
//!   has `owner`. They are there because the bus's `Open` carries nothing else the child
//!   chose, and what the human approves must be in the signed bytes. `"name"` sorts before
//!   `"type"` (both 4 bytes long, `n` < `t`). Limits: a blob of at most 16 KiB, scopes of
//!   at most 256 names (each a valid name, no repeats), text of at most 1 KiB without
//!   control or bidi-override characters, public keys that are usable Ed25519 keys.
//!   `decode` refuses everything but the one canonical encoding of valid details, and
//!   never panics.
//! - **Nonce** ([`Nonce`]): 32 bytes from the OS CSPRNG.
//! - **OTP** ([`otp()`]): HMAC-SHA256(key = nonce, msg = canonical details), first 4 bytes as
//!   a big-endian u32, mod 10⁶, shown as 6 zero-padded digits (`012345`).
//! - **Pair code** ([`PairCode`]): SHA-256(`"AgentKeys-v1 pair code"` ‖ nonce), first 40
//!   bits, 8 symbols of Crockford base32 (`0123456789ABCDEFGHJKMNPQRSTVWXYZ`), shown
//!   `ABCD-EFGH`; parsing takes either case, `-`/spaces anywhere, `O`→`0`, `I`/`L`→`1`.
//! - **TTL** ([`ttl`]): 60 s for Pair and Recover, 300 s for the others
//!   ([`Lifecycle::open_with_ttl`] takes an override, for the daemon's test knob).
//! - **Lifecycle** ([`Lifecycle`]): pending → approved | denied | expired; approved →
//!   consumed. Pure transitions taking `now` in Unix seconds.
//! - **Decision** ([`sign`], [`verify`]): Ed25519 by the host key over SHA-256 of the
//!   length-prefixed (u32 BE) parts: domain `AgentKeys-v1-AuthRequest`, id (16 bytes), type
//!   name, details CBOR, child public key (32), approver uid (u32 BE), created_at (u64 BE),
//!   nonce (32). Only approvals are signed.
//!
//! The committed test vectors (`vectors.json`: one per type, then Pair and Recover with
//! their optional fields) fix all of these bytes.
//!
//! # Live requests and limits
//!
//! - **Registry** ([`Registry`], registry.rs): the daemon's requests, in memory only (a
//!   restart drops the pending ones; the child opens again). It draws ids and nonces,
//!   keeps pair codes unique among the requests it holds (re-drawing the nonce on a
//!   clash), applies the [`Lifecycle`] rules, finds a request by code only when it is
//!   pending, in time and asks for the caller's approval, records expiries for the daemon
//!   to announce, and forgets terminal requests [`KEEP_TERMINAL_SECS`] (300 s) after they
//!   end. At most [`MAX_LIVE_PER_REQUESTER`] (16) live (pending or approved) requests per
//!   requester uid and [`MAX_LIVE_TOTAL`] (4,096) in all; it never holds more than twice
//!   that many requests, forgetting the oldest terminal ones early if it must.
//! - **Rate limits** ([`RateLimiter`], ratelimit.rs): a token bucket per uid, time passed
//!   in. Opening: bursts of [`OPEN_CAPACITY`] (10), refilling [`OPEN_REFILL_PER_MINUTE`]
//!   (20 a minute, one every 3 s). Wrong pair codes: bursts of [`WRONG_CODE_CAPACITY`] (5),
//!   refilling [`WRONG_CODE_REFILL_PER_MINUTE`] (10 a minute, one every 6 s), kept only
//!   for a wrong code ([`RateLimiter::check`] before trying, [`RateLimiter::refund`] after
//!   a hit). Each limiter tracks at most [`RATE_LIMIT_MAX_UIDS`] (4,096) uids.
//!
//! # Why 40 bits of pair code are enough
//!
//! A pair code names a pending request; it is not what authorizes (approving also needs
//! the owner's uid and password, and a code only finds requests that ask for the caller's
//! own approval). Wrong codes are throttled per uid to a burst of 5 and then 10 a minute:
//! at most 15 in any 60 s, 10 a minute sustained. There are 2⁴⁰ ≈ 1.1 × 10¹²
//! codes, so with one request pending each guess hits with probability 9.1 × 10⁻¹³: the
//! at most 15 guesses in a request's 60 s life hit with probability 1.4 × 10⁻¹¹, and a uid
//! guessing at the limit for a whole year (5.3 × 10⁶ guesses) against a request that is
//! always pending has a 4.8 × 10⁻⁶ chance; with 100 requests always pending, 4.8 × 10⁻⁴.
//! The expected time to a first hit is 2³⁹ guesses ≈ 10⁵ years.
//!
//! Uniqueness is not free at 40 bits: k live codes collide with probability about
//! k²/2⁴¹ (4.5 × 10⁻⁷ for 1,000 live requests, 0.45 % for 100,000). The registry
//! therefore checks a new code against the ones it holds and draws a fresh nonce if it is
//! taken. Nonces (256 bits) and ids (128 bits) never collide in practice.
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
//! Non-goals: D-Bus (`Approvals1`), reading the clock, persistent storage of requests
//! (they are in memory only, by design), who may approve, PAM re-authentication, the CLI.
//! Those wire this module in; none of them is here.

mod cbor;
mod decision;
mod details;
mod nonce;
mod otp;
mod pair_code;
mod ratelimit;
mod registry;
mod request_id;
mod session;
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
pub use ratelimit::{
    OPEN_CAPACITY, OPEN_REFILL_PER_MINUTE, RATE_LIMIT_MAX_UIDS, RateLimiter, RetryAfter,
    WRONG_CODE_CAPACITY, WRONG_CODE_REFILL_PER_MINUTE,
};
pub use registry::{
    KEEP_TERMINAL_SECS, Limits, LiveLimit, MAX_DRAWS, MAX_LIVE_PER_REQUESTER, MAX_LIVE_TOTAL,
    NewRequest, Registry, RegistryError, Request, Requester, TransitionError,
};
pub use request_id::{BadRequestId, REQUEST_ID_LEN, RequestId};
pub use session::{
    SESSION_DOMAIN, fingerprint, public_key_of, session_proof_input, sign_session_proof,
    verify_session_proof,
};
pub use state::{LONG_TTL, Lifecycle, SHORT_TTL, State, StateError, ttl};
