//! The lifecycle of one auth request, as pure transitions over a small `Copy` value.
//!
//! ```text
//! Pending ──approve──▶ Approved ──consume──▶ Consumed
//!    │ └───deny────▶ Denied
//!    └──expire_if_due (now ≥ expires_at)──▶ Expired
//! ```
//!
//! Times are whole seconds since the Unix epoch, passed in as `now` so that every rule is
//! testable without a clock. A request is live while `now < expires_at`; from `expires_at`
//! on, approving or denying it fails with [`StateError::Expired`] whether or not
//! [`Lifecycle::expire_if_due`] has recorded the expiry yet. Each transition returns the
//! new value and leaves the old one alone; the caller stores the result.
//!
//! Only a decision needs to be in time: an approved request stays consumable after
//! `expires_at` (an approval at the last second must not be lost to the child's round
//! trip). Removing rows that stay approved and unconsumed is the garbage collector's job,
//! as is removing terminal ones.

use std::time::Duration;

use super::details::RequestType;

/// How long Pair and Recover requests wait for a decision: a person is at both terminals.
pub const SHORT_TTL: Duration = Duration::from_secs(60);
/// How long the other requests wait: the owner may need to be fetched.
pub const LONG_TTL: Duration = Duration::from_secs(300);

/// How long a request of this type waits for a decision.
pub fn ttl(request_type: RequestType) -> Duration {
    match request_type {
        RequestType::Pair | RequestType::Recover => SHORT_TTL,
        RequestType::ScopeChange | RequestType::HighValueRelease | RequestType::KeyRotate => {
            LONG_TTL
        }
    }
}

/// Where a request is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Waiting for the owner.
    Pending,
    /// The owner said yes; the child has not collected the decision yet.
    Approved,
    /// The owner said no.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// The child collected the approval; it cannot be used again.
    Consumed,
}

impl State {
    /// Lowercase name, for storage and the bus: `"pending"`, `"approved"`, …
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Consumed => "consumed",
        }
    }

    /// Whether no transition leads out of this state.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Denied | State::Expired | State::Consumed)
    }
}

/// Why a transition is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The request's time ran out before a decision.
    #[error("the auth request expired before it was decided")]
    Expired,
    /// The request was already approved or denied. (At the bus this maps to
    /// `dev.agentkeys.Error.AlreadyConsumed`: the public error set has no finer name.)
    #[error("the auth request was already {}", .0.as_str())]
    AlreadyDecided(State),
    /// The approval was already collected.
    #[error("the auth request's approval was already used")]
    AlreadyConsumed,
    /// Consuming a request that is not approved.
    #[error("the auth request is {}, not approved", .0.as_str())]
    NotApproved(State),
}

/// One request's state and times (seconds since the Unix epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    state: State,
    created_at: u64,
    expires_at: u64,
    decided_at: Option<u64>,
    consumed_at: Option<u64>,
}

impl Lifecycle {
    /// A new pending request of `request_type` opened at `created_at`, with the type's
    /// [`ttl`].
    pub fn open(request_type: RequestType, created_at: u64) -> Lifecycle {
        Lifecycle::open_with_ttl(created_at, ttl(request_type).as_secs())
    }

    /// A new pending request opened at `created_at` that waits `ttl_secs` for a decision
    /// instead of its type's [`ttl`] (the daemon's knob for short TTLs in tests). A TTL of
    /// 0 gives a request that is already due.
    pub fn open_with_ttl(created_at: u64, ttl_secs: u64) -> Lifecycle {
        Lifecycle {
            state: State::Pending,
            created_at,
            expires_at: created_at.saturating_add(ttl_secs),
            decided_at: None,
            consumed_at: None,
        }
    }

    /// A lifecycle loaded from storage, as it was saved.
    pub fn restore(
        state: State,
        created_at: u64,
        expires_at: u64,
        decided_at: Option<u64>,
        consumed_at: Option<u64>,
    ) -> Lifecycle {
        Lifecycle {
            state,
            created_at,
            expires_at,
            decided_at,
            consumed_at,
        }
    }

    /// The current state as recorded (see [`Lifecycle::expire_if_due`]).
    pub fn state(&self) -> State {
        self.state
    }

    /// When the request was opened.
    pub fn created_at(&self) -> u64 {
        self.created_at
    }

    /// The first second at which the request can no longer be decided.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// When it was approved, denied or found expired.
    pub fn decided_at(&self) -> Option<u64> {
        self.decided_at
    }

    /// When the approval was collected.
    pub fn consumed_at(&self) -> Option<u64> {
        self.consumed_at
    }

    /// Whether a pending request's time is up at `now`.
    pub fn is_due(&self, now: u64) -> bool {
        now >= self.expires_at
    }

    /// Pending → Approved, if still in time.
    pub fn approve(&self, now: u64) -> Result<Lifecycle, StateError> {
        self.decide(now, State::Approved)
    }

    /// Pending → Denied, if still in time (a late denial changes nothing: the request is
    /// expired, which is as final).
    pub fn deny(&self, now: u64) -> Result<Lifecycle, StateError> {
        self.decide(now, State::Denied)
    }

    /// Pending → Expired when its time is up; otherwise unchanged.
    pub fn expire_if_due(&self, now: u64) -> Lifecycle {
        if self.state == State::Pending && self.is_due(now) {
            Lifecycle {
                state: State::Expired,
                decided_at: Some(now),
                ..*self
            }
        } else {
            *self
        }
    }

    /// Approved → Consumed: the child collects the signed decision, once.
    pub fn consume(&self, now: u64) -> Result<Lifecycle, StateError> {
        match self.state {
            State::Approved => Ok(Lifecycle {
                state: State::Consumed,
                consumed_at: Some(now),
                ..*self
            }),
            State::Consumed => Err(StateError::AlreadyConsumed),
            State::Expired => Err(StateError::Expired),
            State::Pending if self.is_due(now) => Err(StateError::Expired),
            State::Pending | State::Denied => Err(StateError::NotApproved(self.state)),
        }
    }

    fn decide(&self, now: u64, to: State) -> Result<Lifecycle, StateError> {
        match self.state {
            State::Pending if self.is_due(now) => Err(StateError::Expired),
            State::Pending => Ok(Lifecycle {
                state: to,
                decided_at: Some(now),
                ..*self
            }),
            State::Approved | State::Denied => Err(StateError::AlreadyDecided(self.state)),
            State::Expired => Err(StateError::Expired),
            State::Consumed => Err(StateError::AlreadyConsumed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn pair() -> Lifecycle {
        Lifecycle::open(RequestType::Pair, T0)
    }

    #[test]
    fn ttls_are_sixty_seconds_for_pair_and_recover_and_five_minutes_otherwise() {
        assert_eq!(ttl(RequestType::Pair), Duration::from_secs(60));
        assert_eq!(ttl(RequestType::Recover), Duration::from_secs(60));
        assert_eq!(ttl(RequestType::ScopeChange), Duration::from_secs(300));
        assert_eq!(ttl(RequestType::HighValueRelease), Duration::from_secs(300));
        assert_eq!(ttl(RequestType::KeyRotate), Duration::from_secs(300));
        assert_eq!(pair().expires_at(), T0 + 60);
        assert_eq!(
            Lifecycle::open(RequestType::KeyRotate, T0).expires_at(),
            T0 + 300
        );
        assert_eq!(
            Lifecycle::open(RequestType::Pair, u64::MAX).expires_at(),
            u64::MAX
        );
    }

    #[test]
    fn a_ttl_override_replaces_the_types_ttl() {
        let short = Lifecycle::open_with_ttl(T0, 2);
        assert_eq!(short.state(), State::Pending);
        assert_eq!(short.created_at(), T0);
        assert_eq!(short.expires_at(), T0 + 2);
        assert!(short.approve(T0 + 1).is_ok());
        assert_eq!(short.approve(T0 + 2), Err(StateError::Expired));
        assert_eq!(Lifecycle::open_with_ttl(T0, 60), pair());
        assert!(Lifecycle::open_with_ttl(T0, 0).is_due(T0));
        assert_eq!(
            Lifecycle::open_with_ttl(T0, u64::MAX).expires_at(),
            u64::MAX
        );
    }

    #[test]
    fn approve_then_consume_once() {
        let approved = pair().approve(T0 + 10).unwrap();
        assert_eq!(approved.state(), State::Approved);
        assert_eq!(approved.decided_at(), Some(T0 + 10));
        let consumed = approved.consume(T0 + 11).unwrap();
        assert_eq!(consumed.state(), State::Consumed);
        assert_eq!(consumed.consumed_at(), Some(T0 + 11));
        assert_eq!(consumed.consume(T0 + 12), Err(StateError::AlreadyConsumed));
        assert_eq!(consumed.approve(T0 + 12), Err(StateError::AlreadyConsumed));
        assert_eq!(consumed.deny(T0 + 12), Err(StateError::AlreadyConsumed));
    }

    #[test]
    fn approve_at_the_last_live_second_works_and_at_expiry_fails() {
        assert!(pair().approve(T0 + 59).is_ok());
        assert_eq!(pair().approve(T0 + 60), Err(StateError::Expired));
        assert_eq!(pair().approve(T0 + 3600), Err(StateError::Expired));
        assert_eq!(pair().deny(T0 + 60), Err(StateError::Expired));
    }

    #[test]
    fn approve_after_recorded_expiry_fails_expired() {
        let expired = pair().expire_if_due(T0 + 61);
        assert_eq!(expired.state(), State::Expired);
        assert_eq!(expired.decided_at(), Some(T0 + 61));
        assert_eq!(expired.approve(T0 + 62), Err(StateError::Expired));
        assert_eq!(expired.deny(T0 + 62), Err(StateError::Expired));
        assert_eq!(expired.consume(T0 + 62), Err(StateError::Expired));
        assert_eq!(
            expired.expire_if_due(T0 + 99),
            expired,
            "expiry is recorded once"
        );
    }

    #[test]
    fn expire_if_due_leaves_live_and_decided_requests_alone() {
        assert_eq!(pair().expire_if_due(T0 + 59), pair());
        let approved = pair().approve(T0 + 1).unwrap();
        assert_eq!(approved.expire_if_due(T0 + 1000), approved);
        let denied = pair().deny(T0 + 1).unwrap();
        assert_eq!(denied.expire_if_due(T0 + 1000), denied);
    }

    #[test]
    fn deciding_twice_fails_already_decided() {
        let approved = pair().approve(T0 + 1).unwrap();
        assert_eq!(
            approved.approve(T0 + 2),
            Err(StateError::AlreadyDecided(State::Approved))
        );
        assert_eq!(
            approved.deny(T0 + 2),
            Err(StateError::AlreadyDecided(State::Approved))
        );
        let denied = pair().deny(T0 + 1).unwrap();
        assert_eq!(denied.state(), State::Denied);
        assert_eq!(
            denied.approve(T0 + 2),
            Err(StateError::AlreadyDecided(State::Denied))
        );
    }

    #[test]
    fn only_approved_requests_can_be_consumed() {
        let denied = pair().deny(T0 + 1).unwrap();
        assert_eq!(
            denied.consume(T0 + 2),
            Err(StateError::NotApproved(State::Denied))
        );
        assert_eq!(
            pair().consume(T0 + 2),
            Err(StateError::NotApproved(State::Pending))
        );
        assert_eq!(pair().consume(T0 + 60), Err(StateError::Expired));
    }

    #[test]
    fn an_approval_survives_the_ttl_until_it_is_consumed() {
        let approved = pair().approve(T0 + 59).unwrap();
        assert!(approved.consume(T0 + 61).is_ok());
    }

    #[test]
    fn transitions_do_not_change_the_original() {
        let p = pair();
        let _ = p.approve(T0 + 1);
        assert_eq!(p.state(), State::Pending);
        let restored = Lifecycle::restore(State::Approved, T0, T0 + 60, Some(T0 + 5), None);
        assert_eq!(restored, pair().approve(T0 + 5).unwrap());
    }

    #[test]
    fn state_names_and_terminality() {
        let all = [
            State::Pending,
            State::Approved,
            State::Denied,
            State::Expired,
            State::Consumed,
        ];
        let names: Vec<_> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            ["pending", "approved", "denied", "expired", "consumed"]
        );
        let terminal: Vec<_> = all.iter().map(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [false, false, true, true, true]);
        assert_eq!(
            StateError::NotApproved(State::Denied).to_string(),
            "the auth request is denied, not approved"
        );
    }
}
