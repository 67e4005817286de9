//! A token bucket per uid, pure: time is an argument (`now_ms`, Unix milliseconds).
//!
//! Each uid has a bucket of `capacity` tokens that refills continuously at
//! `refill_per_minute` tokens a minute; [`RateLimiter::check`] takes a token or says how
//! long until one is there. A uid never seen, or whose bucket has refilled to the top,
//! needs no entry: a full bucket is what a new one would be, so full buckets are dropped
//! and memory stays bounded by `max_keys`.
//!
//! The limiter is generic: what costs a token is the caller's choice. For "only failures
//! cost" (wrong pair codes, wrong passwords), the daemon takes a token with
//! [`RateLimiter::check`] before trying and gives it back with [`RateLimiter::refund`]
//! when the attempt succeeded; so concurrent attempts can never together try more than
//! the bucket holds.
//!
//! Arithmetic is exact: tokens are counted in 1/60,000ths, so a refill of `r` tokens a
//! minute adds exactly `r` units a millisecond, with no rounding drift. A clock that steps
//! back refills nothing (and never panics).

use std::collections::HashMap;
use std::fmt;

/// Opening requests: a burst of this many per uid…
pub const OPEN_CAPACITY: u32 = 10;
/// …then this many a minute.
pub const OPEN_REFILL_PER_MINUTE: u32 = 20;
/// Wrong pair codes: a burst of this many per uid…
pub const WRONG_CODE_CAPACITY: u32 = 5;
/// …then this many a minute.
pub const WRONG_CODE_REFILL_PER_MINUTE: u32 = 10;
/// Uids each limiter tracks at once.
pub const RATE_LIMIT_MAX_UIDS: usize = 4096;

/// One token, in the units buckets count in.
const UNIT: u64 = 60_000;

/// How long until a token is available, in milliseconds ([`RetryAfter::NEVER`] if the
/// limiter never refills or holds no whole token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RetryAfter {
    /// Milliseconds to wait.
    pub millis: u64,
}

impl RetryAfter {
    /// No wait will help.
    pub const NEVER: RetryAfter = RetryAfter { millis: u64::MAX };

    /// The wait in whole seconds, rounded up (for messages and a D-Bus error).
    pub fn secs(self) -> u64 {
        self.millis.div_ceil(1000)
    }
}

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == RetryAfter::NEVER {
            f.write_str("rate limit reached; it does not refill")
        } else {
            write!(f, "rate limit reached; try again in {} s", self.secs())
        }
    }
}

impl std::error::Error for RetryAfter {}

/// Per-uid token buckets (see the module documentation).
#[derive(Debug)]
pub struct RateLimiter {
    /// Capacity in units.
    capacity: u64,
    /// Units added per millisecond (= tokens per minute).
    refill: u64,
    max_keys: usize,
    buckets: HashMap<u32, Bucket>,
}

/// A bucket that is not full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bucket {
    units: u64,
    /// When `units` was last brought up to date.
    at_ms: u64,
}

impl RateLimiter {
    /// Buckets of `capacity` tokens refilling at `refill_per_minute`, for at most `max_keys`
    /// uids at once.
    pub fn new(capacity: u32, refill_per_minute: u32, max_keys: usize) -> RateLimiter {
        RateLimiter {
            capacity: u64::from(capacity) * UNIT,
            refill: u64::from(refill_per_minute),
            max_keys,
            buckets: HashMap::new(),
        }
    }

    /// Takes one of `uid`'s tokens, or says how long until there is one. When `max_keys`
    /// uids have buckets that are not full, a new uid is refused until the first of them
    /// refills (fail closed: forgetting one would hand it fresh tokens).
    pub fn check(&mut self, uid: u32, now_ms: u64) -> Result<(), RetryAfter> {
        let bucket = match self.buckets.get(&uid) {
            Some(bucket) => self.refilled(*bucket, now_ms),
            None => {
                self.make_room(now_ms)?;
                self.full(now_ms)
            }
        };
        let result = self.take(bucket);
        let after = match result {
            Ok(taken) => taken,
            Err(_) => bucket,
        };
        if after.units >= self.capacity {
            self.buckets.remove(&uid);
        } else {
            self.buckets.insert(uid, after);
        }
        result.map(|_| ())
    }

    /// Gives back one token to `uid` (the attempt a [`RateLimiter::check`] paid for turned
    /// out to cost nothing). Never fills a bucket past its capacity.
    pub fn refund(&mut self, uid: u32, now_ms: u64) {
        let Some(bucket) = self.buckets.get(&uid).copied() else {
            return; // full already
        };
        let bucket = self.refilled(bucket, now_ms);
        let units = bucket.units.saturating_add(UNIT).min(self.capacity);
        if units >= self.capacity {
            self.buckets.remove(&uid);
        } else {
            self.buckets.insert(uid, Bucket { units, ..bucket });
        }
    }

    /// Drops the buckets that have refilled to the top (they hold nothing a new one would
    /// not). `check` does this itself when it needs room.
    fn prune(&mut self, now_ms: u64) {
        let (capacity, refill) = (self.capacity, self.refill);
        self.buckets
            .retain(|_, b| refill_units(*b, now_ms, capacity, refill).units < capacity);
    }

    /// Uids with a bucket that is not full.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether every uid's bucket is full.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn full(&self, now_ms: u64) -> Bucket {
        Bucket {
            units: self.capacity,
            at_ms: now_ms,
        }
    }

    fn refilled(&self, bucket: Bucket, now_ms: u64) -> Bucket {
        refill_units(bucket, now_ms, self.capacity, self.refill)
    }

    /// The bucket with one token fewer, or the wait until it has one.
    fn take(&self, bucket: Bucket) -> Result<Bucket, RetryAfter> {
        if bucket.units >= UNIT {
            return Ok(Bucket {
                units: bucket.units - UNIT,
                ..bucket
            });
        }
        if self.refill == 0 || self.capacity < UNIT {
            return Err(RetryAfter::NEVER);
        }
        Err(RetryAfter {
            millis: (UNIT - bucket.units).div_ceil(self.refill),
        })
    }

    fn make_room(&mut self, now_ms: u64) -> Result<(), RetryAfter> {
        if self.buckets.len() < self.max_keys {
            return Ok(());
        }
        self.prune(now_ms);
        if self.buckets.len() < self.max_keys {
            Ok(())
        } else {
            Err(self.soonest_full(now_ms))
        }
    }

    /// How long until some tracked bucket is full again, and so can be dropped.
    fn soonest_full(&self, now_ms: u64) -> RetryAfter {
        if self.refill == 0 {
            return RetryAfter::NEVER;
        }
        self.buckets
            .values()
            .map(|b| {
                let missing = self.capacity - self.refilled(*b, now_ms).units.min(self.capacity);
                RetryAfter {
                    millis: missing.div_ceil(self.refill),
                }
            })
            .min()
            .unwrap_or(RetryAfter::NEVER)
    }
}

/// `bucket` brought up to `now_ms`: refilled for the time since, up to `capacity`. A
/// clock that went back refills nothing and does not move the bucket's time back.
fn refill_units(bucket: Bucket, now_ms: u64, capacity: u64, refill: u64) -> Bucket {
    let elapsed = now_ms.saturating_sub(bucket.at_ms);
    Bucket {
        units: bucket
            .units
            .saturating_add(elapsed.saturating_mul(refill))
            .min(capacity),
        at_ms: bucket.at_ms.max(now_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;
    const UID: u32 = 1000;

    /// Takes tokens until refused; returns how many were taken and the wait.
    fn drain(limiter: &mut RateLimiter, uid: u32, now_ms: u64) -> (u32, RetryAfter) {
        let mut taken = 0;
        loop {
            match limiter.check(uid, now_ms) {
                Ok(()) => taken += 1,
                Err(wait) => return (taken, wait),
            }
        }
    }

    #[test]
    fn a_new_uid_gets_a_full_burst_then_waits_for_the_refill() {
        let mut limiter = RateLimiter::new(OPEN_CAPACITY, OPEN_REFILL_PER_MINUTE, 16);
        // 20 a minute is one every 3 s.
        assert_eq!(
            drain(&mut limiter, UID, T0),
            (10, RetryAfter { millis: 3_000 })
        );
        assert_eq!(
            limiter.check(UID, T0 + 2_999),
            Err(RetryAfter { millis: 1 })
        );
        assert_eq!(limiter.check(UID, T0 + 3_000), Ok(()));
        assert_eq!(
            limiter.check(UID, T0 + 3_000),
            Err(RetryAfter { millis: 3_000 })
        );
        // Partial refills add up exactly: 1 ms at a time for 3 s is one token.
        for ms in 1..3_000 {
            assert!(limiter.check(UID, T0 + 3_000 + ms).is_err(), "{ms}");
        }
        assert_eq!(limiter.check(UID, T0 + 6_000), Ok(()));
    }

    #[test]
    fn wrong_codes_allow_fifteen_in_the_first_minute_then_ten_a_minute() {
        let mut limiter = RateLimiter::new(WRONG_CODE_CAPACITY, WRONG_CODE_REFILL_PER_MINUTE, 16);
        // One attempt a second for a minute: the burst of 5, then one per 6 s.
        let allowed = (0..60u64)
            .filter(|s| limiter.check(UID, T0 + s * 1_000).is_ok())
            .count();
        assert_eq!(allowed, 5 + 9, "the 10th refill lands at exactly 60 s");
        assert_eq!(limiter.check(UID, T0 + 60_000), Ok(()));
        // Then steadily 10 a minute.
        let next_minute = (61..121u64)
            .filter(|s| limiter.check(UID, T0 + s * 1_000).is_ok())
            .count();
        assert_eq!(next_minute, 10);
    }

    #[test]
    fn the_bucket_never_holds_more_than_its_capacity() {
        let mut limiter = RateLimiter::new(3, 60, 16);
        limiter.check(UID, T0).unwrap();
        // A day later: full, not 86,400 tokens.
        assert_eq!(drain(&mut limiter, UID, T0 + 86_400_000).0, 3);
        assert_eq!(drain(&mut limiter, UID, u64::MAX).0, 3, "no overflow");
    }

    #[test]
    fn uids_have_their_own_buckets() {
        let mut limiter = RateLimiter::new(2, 1, 16);
        assert_eq!(drain(&mut limiter, UID, T0).0, 2);
        assert_eq!(drain(&mut limiter, UID + 1, T0).0, 2);
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn a_refund_gives_back_exactly_one_token() {
        let mut limiter = RateLimiter::new(2, 1, 16);
        limiter.check(UID, T0).unwrap();
        limiter.refund(UID, T0);
        assert!(limiter.is_empty(), "a refunded bucket is full again");
        limiter.refund(UID, T0);
        limiter.check(UID, T0).unwrap();
        limiter.check(UID, T0).unwrap();
        assert_eq!(
            limiter.check(UID, T0),
            Err(RetryAfter { millis: 60_000 }),
            "refunding a full bucket added nothing"
        );
        limiter.refund(UID, T0);
        assert_eq!(limiter.check(UID, T0), Ok(()));
        assert!(limiter.check(UID, T0).is_err());
    }

    #[test]
    fn a_clock_stepping_back_refills_nothing() {
        let mut limiter = RateLimiter::new(1, 60, 16);
        limiter.check(UID, T0).unwrap();
        assert_eq!(
            limiter.check(UID, T0 - 10_000),
            Err(RetryAfter { millis: 1_000 })
        );
        assert_eq!(limiter.check(UID, 0), Err(RetryAfter { millis: 1_000 }));
        // The bucket's time did not move back, so the refill counts from T0.
        assert_eq!(limiter.check(UID, T0 + 1_000), Ok(()));
    }

    #[test]
    fn full_buckets_are_dropped() {
        let mut limiter = RateLimiter::new(2, 60, 16);
        limiter.check(UID, T0).unwrap();
        assert_eq!(limiter.len(), 1);
        limiter.prune(T0 + 999);
        assert_eq!(limiter.len(), 1);
        limiter.prune(T0 + 1_000);
        assert!(limiter.is_empty());
        // A full bucket after a refused check is not kept either.
        let mut never = RateLimiter::new(0, 60, 16);
        assert_eq!(never.check(UID, T0), Err(RetryAfter::NEVER));
        assert!(never.is_empty());
    }

    #[test]
    fn when_every_slot_is_taken_a_full_bucket_makes_room() {
        let mut limiter = RateLimiter::new(2, 60, 2);
        limiter.check(1, T0).unwrap();
        limiter.check(2, T0 + 500).unwrap();
        // Uid 1's bucket is full again at T0 + 1 s, so uid 3 takes its slot.
        assert_eq!(limiter.check(3, T0 + 1_000), Ok(()));
        assert_eq!(limiter.len(), 2);
        assert_eq!(
            limiter.check(1, T0 + 1_000),
            Err(RetryAfter { millis: 500 })
        );
    }

    #[test]
    fn when_no_slot_can_be_freed_a_new_uid_waits_for_the_first_refill() {
        let mut limiter = RateLimiter::new(2, 60, 2);
        limiter.check(1, T0).unwrap();
        limiter.check(2, T0 + 500).unwrap();
        // Fail closed: forgetting a bucket that is not full would hand out tokens.
        assert_eq!(limiter.check(3, T0 + 100), Err(RetryAfter { millis: 900 }));
        assert_eq!(limiter.check(3, T0 + 100), Err(RetryAfter { millis: 900 }));
        // Tracked uids are unaffected.
        assert_eq!(limiter.check(1, T0 + 100), Ok(()));
        let mut none = RateLimiter::new(2, 60, 0);
        assert_eq!(none.check(UID, T0), Err(RetryAfter::NEVER));
    }

    #[test]
    fn a_limiter_that_never_refills_says_so() {
        let mut limiter = RateLimiter::new(1, 0, 16);
        assert_eq!(limiter.check(UID, T0), Ok(()));
        assert_eq!(limiter.check(UID, T0 + 86_400_000), Err(RetryAfter::NEVER));
        assert_eq!(
            RetryAfter::NEVER.to_string(),
            "rate limit reached; it does not refill"
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(RetryAfter { millis: 0 }.secs(), 0);
        assert_eq!(RetryAfter { millis: 1 }.secs(), 1);
        assert_eq!(RetryAfter { millis: 3_000 }.secs(), 3);
        assert_eq!(RetryAfter { millis: 3_001 }.secs(), 4);
        assert_eq!(RetryAfter::NEVER.secs(), u64::MAX / 1000 + 1);
        assert_eq!(
            RetryAfter { millis: 2_500 }.to_string(),
            "rate limit reached; try again in 3 s"
        );
    }
}
