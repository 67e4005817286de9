//! The daemon's live approval state: the request registry, the results `Await` hands out,
//! the wake-up for waiters, rate limits, the re-authentication cache, and the connections
//! bound to agent sessions.
//!
//! All of it is memory only. A restart drops pending requests (the child's `pair` loop
//! opens a new one), cached authentications (the owner types the password again) and
//! connection bindings (the agent authenticates again); nothing that grants access
//! outlives the process except what the store recorded.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::approvals::{
    Limits, MAX_LIVE_PER_REQUESTER, MAX_LIVE_TOTAL, RateLimiter, Registry, RequestId,
    WRONG_CODE_CAPACITY, WRONG_CODE_REFILL_PER_MINUTE,
};

/// What `Await` returns for an approved request beyond what the request itself holds
/// (approver, creation time, nonce): the signature and what the approval created.
#[derive(Debug, Clone)]
pub struct Approved {
    pub signature: [u8; 64],
    pub agent_id: Option<String>,
    pub name: Option<String>,
    pub session: Option<String>,
    pub session_expires: Option<i64>,
    pub scope: Option<Vec<String>>,
}

/// A connection that proved it holds an agent session's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub session: String,
    pub agent_id: String,
    pub agent_name: String,
    pub owner: u32,
}

/// A login session, as sudo's timestamp keys it: the uid, the process's session id, and
/// the start time of that session's leader (so a recycled session id is a new session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoginSession {
    pub uid: u32,
    pub sid: i32,
    pub leader_start: u64,
}

impl LoginSession {
    /// The login session of process `pid`, from `/proc`. `None` when it cannot be told
    /// (then nothing is cached for it).
    pub fn of(uid: u32, pid: u32) -> Option<LoginSession> {
        let sid = stat_field(pid, 6)?.parse::<i32>().ok()?;
        if sid <= 0 {
            return None;
        }
        let leader_start = stat_field(u32::try_from(sid).ok()?, 22)?.parse().ok()?;
        Some(LoginSession {
            uid,
            sid,
            leader_start,
        })
    }
}

/// Field `n` (1-based, as in proc(5)) of `/proc/PID/stat`. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace()
        .nth(n.checked_sub(3)?)
        .map(str::to_owned)
}

#[derive(Debug)]
pub struct Pairing {
    registry: Mutex<Registry>,
    approved: Mutex<HashMap<RequestId, Approved>>,
    /// Requests an `Approve` is working on (between the checks and the decision), so two
    /// concurrent approvals cannot both apply their effect.
    approving: Mutex<Vec<RequestId>>,
    decided: tokio::sync::watch::Sender<u64>,
    open_limit: Mutex<RateLimiter>,
    code_limit: Mutex<RateLimiter>,
    auth_failures: Mutex<RateLimiter>,
    auth_cache: Mutex<HashMap<LoginSession, Instant>>,
    bindings: Mutex<HashMap<String, Binding>>,
    /// One-shot releases approved through an agent's own `HighValueRelease` request:
    /// (agent id, credential) → count.
    releases: Mutex<HashMap<(String, String), u32>>,
    /// `HighValueRelease` requests the daemon opened for a read under a `confirm` grant:
    /// their approval serves the waiting read and must not leave a release behind.
    internal: Mutex<Vec<RequestId>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Most bound connections remembered; past it the oldest binding is not kept (the agent
/// authenticates again).
const MAX_BINDINGS: usize = 4096;
/// How long a result stays after the request ended, for a late `Await`.
pub const KEEP_TERMINAL: Duration = Duration::from_secs(600);
/// PAM failures allowed per uid: a burst of 5, then 5 per minute.
const AUTH_FAILURE_CAPACITY: u32 = 5;
const AUTH_FAILURE_REFILL_PER_MINUTE: u32 = 5;

impl Pairing {
    /// `open_burst` and `open_rate_per_minute`: the per-uid limit on `Open`
    /// (configuration; the defaults are [`crate::approvals::OPEN_CAPACITY`] and
    /// [`crate::approvals::OPEN_REFILL_PER_MINUTE`]).
    pub fn new(open_burst: u32, open_rate_per_minute: u32) -> Pairing {
        Pairing {
            registry: Mutex::new(Registry::new(Limits {
                max_live_per_requester: MAX_LIVE_PER_REQUESTER,
                max_live_total: MAX_LIVE_TOTAL,
                keep_terminal_secs: KEEP_TERMINAL.as_secs(),
            })),
            approved: Mutex::new(HashMap::new()),
            approving: Mutex::new(Vec::new()),
            decided: tokio::sync::watch::Sender::new(0),
            open_limit: Mutex::new(RateLimiter::new(open_burst, open_rate_per_minute, 4096)),
            code_limit: Mutex::new(RateLimiter::new(
                WRONG_CODE_CAPACITY,
                WRONG_CODE_REFILL_PER_MINUTE,
                4096,
            )),
            auth_failures: Mutex::new(RateLimiter::new(
                AUTH_FAILURE_CAPACITY,
                AUTH_FAILURE_REFILL_PER_MINUTE,
                4096,
            )),
            auth_cache: Mutex::new(HashMap::new()),
            bindings: Mutex::new(HashMap::new()),
            releases: Mutex::new(HashMap::new()),
            internal: Mutex::new(Vec::new()),
        }
    }

    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    pub fn open_limit(&self) -> MutexGuard<'_, RateLimiter> {
        lock(&self.open_limit)
    }

    pub fn code_limit(&self) -> MutexGuard<'_, RateLimiter> {
        lock(&self.code_limit)
    }

    pub fn auth_failures(&self) -> MutexGuard<'_, RateLimiter> {
        lock(&self.auth_failures)
    }

    /// Claims `id` for one `Approve`; false if another is already at it.
    pub fn begin_approving(&self, id: RequestId) -> bool {
        let mut a = lock(&self.approving);
        if a.contains(&id) {
            return false;
        }
        a.push(id);
        true
    }

    pub fn is_approving(&self, id: &RequestId) -> bool {
        lock(&self.approving).contains(id)
    }

    pub fn end_approving(&self, id: &RequestId) {
        lock(&self.approving).retain(|x| x != id);
    }

    pub fn store_approved(&self, id: RequestId, result: Approved) {
        lock(&self.approved).insert(id, result);
    }

    pub fn approved(&self, id: &RequestId) -> Option<Approved> {
        lock(&self.approved).get(id).cloned()
    }

    /// Wakes every `Await` (they re-check their request).
    pub fn notify_decided(&self) {
        self.decided.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.decided.subscribe()
    }

    /// Expires what is due and drops what is old; returns the ids that just expired. While
    /// an `Approve` is applying its effect, nothing is expired (that approval was found in
    /// time and is recorded as of then; the next tick expires the rest).
    pub fn sweep(&self, now: u64) -> Vec<RequestId> {
        let mut reg = self.registry();
        let expired = if lock(&self.approving).is_empty() {
            reg.expire_due(now)
        } else {
            Vec::new()
        };
        reg.gc(now);
        let mut approved = lock(&self.approved);
        approved.retain(|id, _| reg.get(id).is_some());
        lock(&self.internal).retain(|id| reg.get(id).is_some());
        drop((approved, reg));
        if !expired.is_empty() {
            self.notify_decided();
        }
        expired
    }

    /// Whether `session` re-authenticated within `ttl`.
    pub fn auth_cached(&self, session: &LoginSession, ttl: Duration) -> bool {
        let mut cache = lock(&self.auth_cache);
        cache.retain(|_, at| at.elapsed() < ttl);
        cache.contains_key(session)
    }

    pub fn remember_auth(&self, session: LoginSession) {
        let mut cache = lock(&self.auth_cache);
        if cache.len() >= MAX_BINDINGS {
            cache.clear();
        }
        cache.insert(session, Instant::now());
    }

    /// Binds `connection` to an agent session. False when the table is full: the caller
    /// must then refuse (an unbound connection would act as the owner).
    #[must_use]
    pub fn bind(&self, connection: &str, binding: Binding) -> bool {
        let mut b = lock(&self.bindings);
        if b.len() >= MAX_BINDINGS && !b.contains_key(connection) {
            return false;
        }
        // A connection stays bound to the first agent it proved; switching would let one
        // connection carry two identities.
        if let Some(existing) = b.get(connection) {
            return existing.session == binding.session;
        }
        b.insert(connection.to_owned(), binding);
        true
    }

    pub fn binding(&self, connection: &str) -> Option<Binding> {
        lock(&self.bindings).get(connection).cloned()
    }

    /// Forgets a connection that left the bus.
    pub fn forget(&self, connection: &str) {
        lock(&self.bindings).remove(connection);
    }

    /// Marks `id` as opened by the daemon for a waiting read.
    pub fn mark_internal(&self, id: RequestId) {
        lock(&self.internal).push(id);
    }

    pub fn is_internal(&self, id: &RequestId) -> bool {
        lock(&self.internal).contains(id)
    }

    pub fn add_release(&self, agent_id: &str, credential: &str) {
        *lock(&self.releases)
            .entry((agent_id.to_owned(), credential.to_owned()))
            .or_insert(0) += 1;
    }

    /// Takes one approved release of (`agent_id`, `credential`), if there is one.
    pub fn take_release(&self, agent_id: &str, credential: &str) -> bool {
        let mut r = lock(&self.releases);
        let key = (agent_id.to_owned(), credential.to_owned());
        match r.get_mut(&key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                r.remove(&key);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approvals::{OPEN_CAPACITY, OPEN_REFILL_PER_MINUTE};

    /// A process that leads a session of its own (`setsid`, as a login shell does): its
    /// session is found, names that process, and reads the same twice. This does not use
    /// the test's own session: under a PID namespace whose session leader lies outside
    /// it (as in CI), `getsid` answers 0 and nothing may be cached for such a caller.
    #[test]
    fn login_session_of_a_session_leader_is_found_and_stable() {
        let mut child = std::process::Command::new("setsid")
            .args(["sleep", "30"])
            .spawn()
            .expect("setsid (util-linux) runs");
        let pid = child.id();
        // `setsid` calls setsid(2) and then execs sleep, keeping the pid; wait for the exec.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !comm_is(pid, "sleep") {
            assert!(Instant::now() < deadline, "setsid sleep never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        let a = LoginSession::of(1, pid).expect("a session leader has a session");
        assert_eq!(LoginSession::of(1, pid), Some(a));
        assert_eq!(a.uid, 1);
        assert_eq!(a.sid, i32::try_from(pid).unwrap());
        assert_eq!(Some(a.leader_start.to_string()), stat_field(pid, 22));
        // Another uid in the same session is another cache entry.
        assert_ne!(LoginSession::of(2, pid), Some(a));
        child.kill().unwrap();
        child.wait().unwrap();
        // A process that does not exist has no session to remember.
        assert_eq!(LoginSession::of(1, pid), None);
        assert_eq!(LoginSession::of(1, u32::MAX), None);
    }

    fn comm_is(pid: u32, name: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
    }

    #[test]
    fn releases_are_counted_and_taken_once_each() {
        let p = Pairing::new(OPEN_CAPACITY, OPEN_REFILL_PER_MINUTE);
        assert!(!p.take_release("agt_a", "github"));
        p.add_release("agt_a", "github");
        p.add_release("agt_a", "github");
        assert!(p.take_release("agt_a", "github"));
        assert!(p.take_release("agt_a", "github"));
        assert!(!p.take_release("agt_a", "github"));
    }

    #[test]
    fn only_one_approval_at_a_time_per_request() {
        let p = Pairing::new(OPEN_CAPACITY, OPEN_REFILL_PER_MINUTE);
        let id = RequestId::from_bytes([1; 16]);
        assert!(p.begin_approving(id));
        assert!(!p.begin_approving(id));
        p.end_approving(&id);
        assert!(p.begin_approving(id));
    }
}
