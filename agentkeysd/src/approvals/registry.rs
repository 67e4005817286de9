//! Live auth requests, in memory: the daemon's table of requests from `Open` until the
//! child collects the decision.
//!
//! Requests live in memory only. A restart drops the pending ones and the child opens
//! again; nothing here is worth keeping across one, and nothing here touches the disk.
//!
//! Pure like the rest of the module: every method takes `now` (Unix seconds), nothing reads
//! a clock, does I/O or panics. The only effect is [`Registry::open`] drawing the id and the
//! nonce from the OS CSPRNG.
//!
//! # Rules
//!
//! - **Lifecycle**: transitions are [`Lifecycle`]'s (state.rs); the registry stores the
//!   result and keeps its counts. A request is *live* while it is pending or approved.
//! - **Limits** ([`Limits`]): at most `max_live_per_requester` live requests per requester
//!   uid and `max_live_total` in all; [`Registry::open`] refuses beyond them
//!   ([`RegistryError::TooMany`]). A pending request whose time is up stays live until
//!   [`Registry::expire_due`] records the expiry, so the daemon runs that on a timer.
//! - **Pair codes** are unique among all requests held, terminal ones included until
//!   [`Registry::gc`] drops them: a code never names two requests, and a code read off a
//!   dead request's terminal does not name a newer one while the old one is remembered. On
//!   a clash, `open` draws a fresh nonce (at most [`MAX_DRAWS`] times). Equal nonces give
//!   equal codes, so nonces are unique among held requests too.
//! - **Looking up by code** ([`Registry::by_code`]) finds only a pending request, still in
//!   time, asking for the given owner's approval; everything else is `None`, so an
//!   expired, decided, unknown or someone else's code all look the same (no oracle).
//! - **Keeping and forgetting** ([`Registry::gc`]): a denied, expired or consumed request
//!   is kept `keep_terminal_secs` after it ended, so a late caller hears "expired" or
//!   "already used" rather than "not found"; an approval the child never collects is
//!   dropped `keep_terminal_secs` after the request's expiry.
//! - **Memory**: the registry never holds more than 2 × `max_live_total` requests. When an
//!   open would pass that, the terminal request that ended first is forgotten early (they
//!   are kept only as a courtesy).
//!
//! Who may approve (the owner, or root) is the daemon's check; [`Registry::approve`] is
//! only the state change. A decision is signed over [`Request::decision_fields`].

use std::collections::HashMap;
use std::fmt;

use super::decision::DecisionFields;
use super::details::{self, Details, DetailsError, PUBLIC_KEY_LEN, RequestType};
use super::nonce::{Nonce, RandomError};
use super::otp::{Otp, otp};
use super::pair_code::PairCode;
use super::request_id::RequestId;
use super::state::{Lifecycle, State, StateError};

/// Live requests one requester uid may have at once.
pub const MAX_LIVE_PER_REQUESTER: usize = 16;
/// Live requests the daemon holds at once.
pub const MAX_LIVE_TOTAL: usize = 4096;
/// How long a denied, expired or consumed request is remembered after it ended (and an
/// uncollected approval after its expiry).
pub const KEEP_TERMINAL_SECS: u64 = 300;
/// Random draws [`Registry::open`] makes for a fresh id or a free pair code before giving
/// up. With at most 2 × 4096 codes held of 2⁴⁰, one draw clashes with probability under
/// 10⁻⁸, so eight in a row never happen.
pub const MAX_DRAWS: usize = 8;

/// The registry's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Live (pending or approved) requests per requester uid.
    pub max_live_per_requester: usize,
    /// Live requests in all.
    pub max_live_total: usize,
    /// Seconds a terminal request is kept after it ended, and an uncollected approval after
    /// its expiry.
    pub keep_terminal_secs: u64,
}

impl Default for Limits {
    /// [`MAX_LIVE_PER_REQUESTER`], [`MAX_LIVE_TOTAL`], [`KEEP_TERMINAL_SECS`].
    fn default() -> Limits {
        Limits {
            max_live_per_requester: MAX_LIVE_PER_REQUESTER,
            max_live_total: MAX_LIVE_TOTAL,
            keep_terminal_secs: KEEP_TERMINAL_SECS,
        }
    }
}

/// Who opened a request, as the bus told the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requester {
    /// The caller's uid (what the per-requester limit counts by).
    pub uid: u32,
    /// The caller's pid, if the bus knew it.
    pub pid: Option<u32>,
    /// The caller's executable, if known, for the approver to see.
    pub exe: Option<String>,
    /// The caller's unique bus name (`:1.42`).
    pub connection: String,
}

/// What the daemon knows when a child opens a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRequest {
    /// The details, as [`details::decode`] gave them. The canonical bytes are re-derived
    /// from them, so the two can never disagree.
    pub details: Details,
    /// The child's Ed25519 public key.
    pub child_pubkey: [u8; PUBLIC_KEY_LEN],
    /// The uid whose approval is asked: the details' `owner` if they name one (it must
    /// then be this), else the opener's uid.
    pub owner: u32,
    /// Who opened it.
    pub requester: Requester,
    /// How long it waits for a decision: [`super::ttl`] of its type, or the daemon's
    /// override.
    pub ttl_secs: u64,
}

/// One request the registry holds.
#[derive(Debug)]
pub struct Request {
    /// Its id (random, 128 bits).
    pub id: RequestId,
    /// Its details.
    pub details: Details,
    /// The canonical CBOR of `details`: what the OTP is derived from and the decision signs.
    pub details_cbor: Vec<u8>,
    /// The child's Ed25519 public key.
    pub child_pubkey: [u8; PUBLIC_KEY_LEN],
    /// Its nonce (random, 256 bits).
    pub nonce: Nonce,
    /// Derived from the nonce; unique among the requests held.
    pub pair_code: PairCode,
    /// Derived from the nonce and the details.
    pub otp: Otp,
    /// The uid whose approval is asked.
    pub owner: u32,
    /// Who opened it.
    pub requester: Requester,
    /// Its state and times.
    pub lifecycle: Lifecycle,
    /// The uid that approved it, once approved.
    pub approver: Option<u32>,
}

impl Request {
    /// The request's type.
    pub fn request_type(&self) -> RequestType {
        self.details.request_type()
    }

    /// What the host key signs for this request's approval; `None` until it is approved.
    pub fn decision_fields(&self) -> Option<DecisionFields<'_>> {
        Some(DecisionFields {
            id: self.id,
            request_type: self.request_type(),
            details_cbor: &self.details_cbor,
            child_pubkey: &self.child_pubkey,
            approver_uid: self.approver?,
            created_at: self.lifecycle.created_at(),
            nonce: &self.nonce,
        })
    }

    fn is_live(&self) -> bool {
        !self.lifecycle.state().is_terminal()
    }

    /// Pending and still in time: the only requests an approver can find or decide.
    fn is_decidable(&self, now: u64) -> bool {
        self.lifecycle.state() == State::Pending && !self.lifecycle.is_due(now)
    }

    /// When a terminal request ended; `None` while it is live.
    fn ended_at(&self) -> Option<u64> {
        let l = &self.lifecycle;
        match l.state() {
            State::Pending | State::Approved => None,
            State::Denied | State::Expired => Some(l.decided_at().unwrap_or(l.expires_at())),
            State::Consumed => Some(l.consumed_at().unwrap_or(l.expires_at())),
        }
    }

    /// Whether [`Registry::gc`] drops it at `now`.
    fn is_collectable(&self, now: u64, keep: u64) -> bool {
        let since = match self.lifecycle.state() {
            State::Pending => return false,
            State::Approved => self.lifecycle.expires_at(),
            State::Denied | State::Expired | State::Consumed => {
                self.ended_at().unwrap_or(self.lifecycle.expires_at())
            }
        };
        now >= since.saturating_add(keep)
    }
}

/// Which live-request limit an open ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveLimit {
    /// The requester uid's own limit.
    Requester(u32),
    /// The daemon-wide limit.
    Total,
}

impl fmt::Display for LiveLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LiveLimit::Requester(uid) => write!(f, "from uid {uid}"),
            LiveLimit::Total => f.write_str("in all"),
        }
    }
}

/// Why a request could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The details are not valid (the daemon decodes them first, so this is a bug there).
    #[error("refusing to open an auth request: its details are invalid")]
    InvalidDetails(#[source] DetailsError),
    /// The child's key could never verify anything.
    #[error("refusing to open an auth request: the child key is not a valid Ed25519 public key")]
    BadChildKey,
    /// The details name one owner and the request was to be filed under another.
    #[error("refusing to open an auth request for owner uid {given}: its details name uid {named}")]
    OwnerMismatch {
        /// The owner in the details.
        named: u32,
        /// The owner given.
        given: u32,
    },
    /// A live-request limit is reached.
    #[error(
        "too many auth requests waiting {which} (the limit is {limit}); \
         wait until one is decided or expires"
    )]
    TooMany {
        /// Which limit.
        which: LiveLimit,
        /// Its value.
        limit: usize,
    },
    /// Every draw clashed with a request already held (which never happens in practice).
    #[error("could not find a free {what} in {attempts} random draws")]
    Exhausted {
        /// `"request id"` or `"pair code"`.
        what: &'static str,
        /// Draws made.
        attempts: usize,
    },
    /// The OS random source failed.
    #[error("could not open an auth request")]
    Random(#[source] RandomError),
}

/// Why a decision or a collection did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// No request with this id is held (never opened, or forgotten by [`Registry::gc`]).
    #[error("no such auth request")]
    NotFound,
    /// The request is held but not in a state that allows this.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The live requests (see the module documentation).
#[derive(Debug)]
pub struct Registry {
    limits: Limits,
    requests: HashMap<RequestId, Request>,
    /// The pair code of every request held.
    codes: HashMap<PairCode, RequestId>,
    live: LiveCounts,
}

impl Registry {
    /// An empty registry with these bounds.
    pub fn new(limits: Limits) -> Registry {
        Registry {
            limits,
            requests: HashMap::new(),
            codes: HashMap::new(),
            live: LiveCounts::default(),
        }
    }

    /// Files a new pending request, with a fresh id and nonce from the OS CSPRNG and a pair
    /// code no held request has.
    pub fn open(&mut self, new: NewRequest, now: u64) -> Result<&Request, RegistryError> {
        self.open_with(new, now, &mut Nonce::generate)
    }

    /// [`Registry::open`] with the nonces drawn from `draw_nonce` (tests inject clashes).
    fn open_with(
        &mut self,
        new: NewRequest,
        now: u64,
        draw_nonce: &mut dyn FnMut() -> Result<Nonce, RandomError>,
    ) -> Result<&Request, RegistryError> {
        // Refuse what could never be signed, and over-limit opens, before spending
        // randomness or memory on them.
        let details_cbor = check_new(&new)?;
        self.check_limits(new.requester.uid)?;
        // Room first, so the new request is never the one forgotten.
        self.make_room();
        let id = self.fresh_id()?;
        let (nonce, pair_code) = self.free_nonce(draw_nonce)?;
        let request = Request {
            id,
            otp: otp(&nonce, &details_cbor),
            details: new.details,
            details_cbor,
            child_pubkey: new.child_pubkey,
            nonce,
            pair_code,
            owner: new.owner,
            requester: new.requester,
            lifecycle: Lifecycle::open_with_ttl(now, new.ttl_secs),
            approver: None,
        };
        self.live.add(request.requester.uid);
        self.codes.insert(pair_code, id);
        Ok(self.requests.entry(id).or_insert(request))
    }

    /// The request with this id, in whatever state.
    pub fn get(&self, id: &RequestId) -> Option<&Request> {
        self.requests.get(id)
    }

    /// The pending, still-in-time request with this code that asks for `owner`'s approval.
    /// `None` for anything else, whatever the reason (no oracle). Root deciding another
    /// owner's request names it by id.
    pub fn by_code(&self, code: &PairCode, owner: u32, now: u64) -> Option<&Request> {
        let request = self.requests.get(self.codes.get(code)?)?;
        (request.is_decidable(now) && request.owner == owner).then_some(request)
    }

    /// Pending → Approved by `approver`, if still in time. Whether `approver` may approve
    /// is the caller's check.
    pub fn approve(
        &mut self,
        id: &RequestId,
        approver: u32,
        now: u64,
    ) -> Result<&Request, TransitionError> {
        self.transition(id, Some(approver), |l| l.approve(now))
    }

    /// Pending → Denied, if still in time.
    pub fn deny(&mut self, id: &RequestId, now: u64) -> Result<&Request, TransitionError> {
        self.transition(id, None, |l| l.deny(now))
    }

    /// Approved → Consumed: the child collects the approval, once.
    pub fn consume(&mut self, id: &RequestId, now: u64) -> Result<&Request, TransitionError> {
        self.transition(id, None, |l| l.consume(now))
    }

    /// Records the expiry of every pending request whose time is up; returns their ids,
    /// oldest first (the daemon announces each as denied).
    pub fn expire_due(&mut self, now: u64) -> Vec<RequestId> {
        let mut expired = Vec::new();
        for request in self.requests.values_mut() {
            let next = request.lifecycle.expire_if_due(now);
            if next != request.lifecycle {
                request.lifecycle = next;
                self.live.release(request.requester.uid);
                expired.push((next.created_at(), request.id));
            }
        }
        expired.sort_unstable();
        expired.into_iter().map(|(_, id)| id).collect()
    }

    /// Forgets terminal requests `keep_terminal_secs` after they ended and uncollected
    /// approvals `keep_terminal_secs` after their expiry, freeing their pair codes. Returns
    /// how many it forgot.
    pub fn gc(&mut self, now: u64) -> usize {
        let keep = self.limits.keep_terminal_secs;
        let done: Vec<RequestId> = self
            .requests
            .values()
            .filter(|r| r.is_collectable(now, keep))
            .map(|r| r.id)
            .collect();
        for id in &done {
            self.remove(id);
        }
        done.len()
    }

    /// Pending, still-in-time requests asking for `owner`'s approval (`None`: everyone's,
    /// for root), oldest first.
    pub fn pending_for(&self, owner: Option<u32>, now: u64) -> Vec<&Request> {
        let mut pending: Vec<&Request> = self
            .requests
            .values()
            .filter(|r| r.is_decidable(now) && owner.is_none_or(|o| o == r.owner))
            .collect();
        pending.sort_unstable_by_key(|r| (r.lifecycle.created_at(), r.id));
        pending
    }

    /// Requests held, in any state.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether no request is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    fn check_limits(&self, uid: u32) -> Result<(), RegistryError> {
        let per_requester = self.limits.max_live_per_requester;
        if self.live.of(uid) >= per_requester {
            return Err(RegistryError::TooMany {
                which: LiveLimit::Requester(uid),
                limit: per_requester,
            });
        }
        if self.live.total >= self.limits.max_live_total {
            return Err(RegistryError::TooMany {
                which: LiveLimit::Total,
                limit: self.limits.max_live_total,
            });
        }
        Ok(())
    }

    /// Forgets the terminal requests that ended first until one more fits under
    /// 2 × `max_live_total`. After `check_limits` passed, fewer than `max_live_total` are
    /// live, so at the cap there is always a terminal one to forget.
    fn make_room(&mut self) {
        let cap = self.limits.max_live_total.saturating_mul(2);
        while self.requests.len() >= cap {
            let oldest = self
                .requests
                .values()
                .filter_map(|r| Some((r.ended_at()?, r.id)))
                .min();
            let Some((_, id)) = oldest else { return };
            self.remove(&id);
        }
    }

    fn fresh_id(&self) -> Result<RequestId, RegistryError> {
        for _ in 0..MAX_DRAWS {
            let id = RequestId::generate().map_err(RegistryError::Random)?;
            if !self.requests.contains_key(&id) {
                return Ok(id);
            }
        }
        Err(RegistryError::Exhausted {
            what: "request id",
            attempts: MAX_DRAWS,
        })
    }

    /// A nonce whose pair code no held request has.
    fn free_nonce(
        &self,
        draw_nonce: &mut dyn FnMut() -> Result<Nonce, RandomError>,
    ) -> Result<(Nonce, PairCode), RegistryError> {
        for _ in 0..MAX_DRAWS {
            let nonce = draw_nonce().map_err(RegistryError::Random)?;
            let code = PairCode::from_nonce(&nonce);
            if !self.codes.contains_key(&code) {
                return Ok((nonce, code));
            }
        }
        Err(RegistryError::Exhausted {
            what: "pair code",
            attempts: MAX_DRAWS,
        })
    }

    fn transition(
        &mut self,
        id: &RequestId,
        approver: Option<u32>,
        step: impl FnOnce(&Lifecycle) -> Result<Lifecycle, StateError>,
    ) -> Result<&Request, TransitionError> {
        let request = self.requests.get_mut(id).ok_or(TransitionError::NotFound)?;
        let next = step(&request.lifecycle)?;
        if request.is_live() && next.state().is_terminal() {
            self.live.release(request.requester.uid);
        }
        request.lifecycle = next;
        if approver.is_some() {
            request.approver = approver;
        }
        Ok(request)
    }

    fn remove(&mut self, id: &RequestId) {
        let Some(request) = self.requests.remove(id) else {
            return;
        };
        if self.codes.get(&request.pair_code) == Some(id) {
            self.codes.remove(&request.pair_code);
        }
        if request.is_live() {
            self.live.release(request.requester.uid);
        }
    }
}

/// What `open` refuses before anything else; the canonical bytes otherwise.
fn check_new(new: &NewRequest) -> Result<Vec<u8>, RegistryError> {
    new.details
        .validate()
        .map_err(RegistryError::InvalidDetails)?;
    if !details::valid_public_key(&new.child_pubkey) {
        return Err(RegistryError::BadChildKey);
    }
    match new.details.owner() {
        Some(named) if named != new.owner => Err(RegistryError::OwnerMismatch {
            named,
            given: new.owner,
        }),
        _ => Ok(details::encode(&new.details)),
    }
}

/// Live requests, in all and per requester uid (uids with none are not kept).
#[derive(Debug, Default)]
struct LiveCounts {
    total: usize,
    by_requester: HashMap<u32, usize>,
}

impl LiveCounts {
    fn of(&self, uid: u32) -> usize {
        self.by_requester.get(&uid).copied().unwrap_or(0)
    }

    fn add(&mut self, uid: u32) {
        self.total = self.total.saturating_add(1);
        let n = self.by_requester.entry(uid).or_insert(0);
        *n = n.saturating_add(1);
    }

    fn release(&mut self, uid: u32) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.by_requester.get_mut(&uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_requester.remove(&uid);
            }
        }
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
