//! `dev.agentkeys.Approvals1`: auth requests (DESIGN §4). A child opens one, the owner
//! fetches it by its pair code, checks the OTP, and approves (re-authenticating through
//! PAM) or denies; the child awaits the signed decision.
//!
//! Who may do what, always from the bus's view of the caller:
//! - `Open`: anyone for `Pair` and `Recover` (the owner asked is `owner` in the details, or
//!   the caller); `ScopeChange`, `KeyRotate` and `HighValueRelease` only on a connection
//!   authenticated as that agent.
//! - `Pending`, `Fetch`, `Approve`, `Deny`: the owner the request asks (root sees every
//!   pending request but approves only its own: approving needs the human who owns it).
//!   Connections authenticated as an agent may not (an agent never approves).
//! - `Await`: the uid that opened the request. Anyone else gets `NotFound`.
//!
//! A pair code that is unknown, expired, decided or another owner's answers one and the
//! same `NotFound`, and every `Fetch` costs a token of a per-uid bucket (see
//! [`crate::approvals`] for the numbers), so the code space cannot be searched.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use crate::api::Error;
use crate::api::dict::{self, Dict, DictBuilder};
use crate::approvals::{
    DecisionFields, Details, NewRequest, PUBLIC_KEY_LEN, PairCode, Request, RequestId, RequestType,
    Requester, State, StateError, TransitionError, decode, fingerprint, sign,
};
use crate::store::{AuditEntry, Issue, Outcome};
use crate::vault;

use super::super::authz::Caller;
use super::super::config::Authenticate;
use super::super::errors::{DaemonError, to_public};
use super::super::state::{Shared, blocking};
use super::{actor, now, user_name};
use crate::daemon::pairing::{Approved, LoginSession};

mod confirm;
mod effects;
mod reauth;
mod records;
mod scope_request;
mod wait;

pub use confirm::confirm_release;
use effects::Snapshot;
use records::{approved_dict, notice, open_reply};
pub use records::{pair_name, record};
pub use scope_request::{OpenedRequest, open_scope_request};

#[derive(Debug)]
pub struct Approvals {
    pub shared: Arc<Shared>,
}

/// Longest `Await` wait one call may ask for.
const MAX_AWAIT_S: u32 = 300;
const APPROVE_AUTH_KEYS: &[&str] = &["password"];
const NOT_FOUND_CODE: &str = "no pending request has this pair code (codes expire after a minute or so; ask the agent's terminal for the current one)";
const NOT_FOUND_ID: &str = "no such auth request";

#[interface(name = "dev.agentkeys.Approvals1")]
impl Approvals {
    /// Opens an auth request; returns `id`, `pair_code`, `otp`, `created`, `expires`,
    /// `owner`, `host_key`.
    async fn open(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        request_type: &str,
        details_cbor: Vec<u8>,
        child_pubkey: Vec<u8>,
    ) -> Result<Dict, Error> {
        let (reply, opened) = self
            .do_open(&hdr, request_type, details_cbor, child_pubkey)
            .await
            .map_err(|e| to_public("Open", e))?;
        if let Err(e) = Approvals::request_opened(&emitter, opened).await {
            tracing::warn!(error = %e, "could not emit RequestOpened");
        }
        Ok(reply)
    }

    /// The caller's pending requests (root: everyone's).
    async fn pending(&self, #[zbus(header)] hdr: Header<'_>) -> Result<Vec<Dict>, Error> {
        self.do_pending(&hdr)
            .await
            .map_err(|e| to_public("Pending", e))
    }

    /// The caller's pending request shown under `pair_code`.
    async fn fetch(&self, #[zbus(header)] hdr: Header<'_>, pair_code: &str) -> Result<Dict, Error> {
        self.do_fetch(&hdr, pair_code)
            .await
            .map_err(|e| to_public("Fetch", e))
    }

    /// Approves a pending request of the caller's (`auth`: `password`, a sealed memfd).
    async fn approve(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        request_id: &str,
        auth: Dict,
    ) -> Result<(), Error> {
        let id = self
            .do_approve(&hdr, request_id, auth)
            .await
            .map_err(|e| to_public("Approve", e))?;
        emit_decided(&emitter, &id, true).await;
        Ok(())
    }

    /// Denies a pending request of the caller's.
    async fn deny(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        request_id: &str,
    ) -> Result<(), Error> {
        let id = self
            .do_deny(&hdr, request_id)
            .await
            .map_err(|e| to_public("Deny", e))?;
        emit_decided(&emitter, &id, false).await;
        Ok(())
    }

    /// Waits (bounded) for the decision on a request the caller opened.
    #[zbus(name = "Await")]
    async fn await_decision(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        request_id: &str,
        timeout_s: u32,
    ) -> Result<Dict, Error> {
        self.do_await(&hdr, request_id, timeout_s)
            .await
            .map_err(|e| to_public("Await", e))
    }

    /// A request was opened (the same record `Fetch` returns).
    #[zbus(signal)]
    pub async fn request_opened(emitter: &SignalEmitter<'_>, request: Dict) -> zbus::Result<()>;

    /// A request was approved, denied (`approved` false) or expired (false).
    #[zbus(signal)]
    pub async fn request_decided(
        emitter: &SignalEmitter<'_>,
        request_id: &str,
        approved: bool,
    ) -> zbus::Result<()>;
}

pub async fn emit_decided(emitter: &SignalEmitter<'_>, id: &RequestId, approved: bool) {
    if let Err(e) = Approvals::request_decided(emitter, &id.to_string(), approved).await {
        tracing::warn!(error = %e, "could not emit RequestDecided");
    }
}

fn now_u64() -> u64 {
    u64::try_from(now()).unwrap_or(0)
}

fn parse_id(s: &str) -> Result<RequestId, DaemonError> {
    s.parse().map_err(|_| {
        DaemonError::Invalid(format!(
            "'{}' is not a request id (32 hex digits)",
            s.chars().take(64).collect::<String>()
        ))
    })
}

/// The executable of `pid`, as the kernel names it.
///
/// The daemon keeps few capabilities, so the kernel refuses it `/proc/PID/exe` of a process
/// holding more (any other root process); then the process's own name (`comm`) is shown,
/// marked as self-reported.
fn exe_of(pid: u32) -> Option<String> {
    if let Ok(p) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        return Some(p.to_string_lossy().into_owned());
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let comm: String = comm
        .trim_end()
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    Some(format!("{comm} (name reported by the process)"))
}

/// Who opens a request, as the approver will see them.
fn requester(caller: &Caller, connection: String) -> Requester {
    Requester {
        uid: caller.uid,
        pid: caller.pid,
        exe: caller.pid.and_then(exe_of),
        connection,
    }
}

impl Approvals {
    async fn do_open(
        &self,
        hdr: &Header<'_>,
        request_type: &str,
        details_cbor: Vec<u8>,
        child_pubkey: Vec<u8>,
    ) -> Result<(Dict, Dict), DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.caller(hdr).await?;
        let sender = sender(hdr)?;
        let request_type: RequestType =
            request_type
                .parse()
                .map_err(|e: crate::approvals::UnknownRequestType| {
                    DaemonError::Invalid(e.to_string())
                })?;
        let details = decode(&details_cbor).map_err(|e| DaemonError::Invalid(e.to_string()))?;
        if details.request_type() != request_type {
            return Err(DaemonError::Invalid(format!(
                "the details are of type {}, not {}",
                details.request_type().as_str(),
                request_type.as_str()
            )));
        }
        let child_pubkey: [u8; PUBLIC_KEY_LEN] = child_pubkey
            .as_slice()
            .try_into()
            .ok()
            .filter(crate::approvals::valid_public_key)
            .ok_or_else(|| {
                DaemonError::Invalid(
                    "child_pubkey must be a valid 32-byte Ed25519 public key".into(),
                )
            })?;
        let owner = self
            .owner_of_new(&caller, &sender, &details, &child_pubkey)
            .await?;
        let now_s = now_u64();
        open_allowed(&self.shared, caller.uid)?;
        let new = NewRequest {
            details,
            child_pubkey,
            owner,
            requester: requester(&caller, sender),
            ttl_secs: self.shared.config.approvals.ttl_s(request_type),
        };
        let (id, mut reply, record) = {
            let mut reg = self.shared.pairing.registry();
            let req = reg.open(new, now_s).map_err(open_error)?;
            (req.id, open_reply(req), notice(req))
        };
        reply.insert("host_key".into(), bytes_value(&self.shared.host_public));
        self.audit(
            &caller,
            Some(owner),
            "approval.open",
            &id.to_string(),
            Outcome::Ok,
            &format!("type={}", request_type.as_str()),
        )
        .await;
        tracing::info!(
            uid = caller.uid,
            owner,
            kind = request_type.as_str(),
            "auth request opened"
        );
        Ok((reply, record))
    }

    /// Which owner a new request asks, checking that the caller may open it.
    async fn owner_of_new(
        &self,
        caller: &Caller,
        sender: &str,
        details: &Details,
        child_pubkey: &[u8; PUBLIC_KEY_LEN],
    ) -> Result<u32, DaemonError> {
        let bound = self.shared.pairing.binding(sender);
        let agent_only = |agent_id: &str| -> Result<u32, DaemonError> {
            match &bound {
                Some(b) if b.agent_id == agent_id => Ok(b.owner),
                _ => Err(DaemonError::Denied(
                    "only the agent itself may open this request: authenticate the connection as that agent first".into(),
                )),
            }
        };
        match details {
            Details::Pair(p) => {
                let owner = p.owner.unwrap_or(caller.uid);
                if let Some(name) = &p.name
                    && owner == caller.uid
                {
                    let (name, o) = (name.clone(), owner);
                    let taken = self
                        .shared
                        .with_store(move |s| Ok(s.resolve_agent(o, &name).is_ok()))
                        .await?;
                    if taken {
                        return Err(DaemonError::Invalid(format!(
                            "an agent named '{}' already exists: pick another --name, or recover it with --recover {}",
                            p.name.as_deref().unwrap_or_default(),
                            p.name.as_deref().unwrap_or_default()
                        )));
                    }
                }
                Ok(owner)
            }
            Details::Recover(r) => {
                if &r.new_pubkey != child_pubkey {
                    return Err(DaemonError::Invalid(
                        "new_pubkey must be the child's public key".into(),
                    ));
                }
                let owner = r.owner.unwrap_or(caller.uid);
                let ident = r.agent_identity.clone();
                self.shared
                    .with_store(move |s| Ok(s.resolve_agent(owner, &ident)))
                    .await?
                    .map_err(|_| DaemonError::NotFound(format!(
                        "no agent is known as '{}': use its id (agt_…), its name, or an alias or e-mail linked with agentkeysctl agent link",
                        r.agent_identity
                    )))?;
                Ok(owner)
            }
            Details::ScopeChange(d) => agent_only(&d.agent_id),
            Details::HighValueRelease(d) => agent_only(&d.agent_id),
            Details::KeyRotate(d) => {
                if &d.new_pubkey != child_pubkey {
                    return Err(DaemonError::Invalid(
                        "new_pubkey must be the child's public key".into(),
                    ));
                }
                agent_only(&d.agent_id)
            }
        }
    }

    fn record(&self, req: &Request) -> impl std::future::Future<Output = Dict> + Send + use<> {
        record(&self.shared, req)
    }

    async fn do_pending(&self, hdr: &Header<'_>) -> Result<Vec<Dict>, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let futures: Vec<_> = {
            let reg = self.shared.pairing.registry();
            let owner = if caller.is_root() {
                None
            } else {
                Some(caller.uid)
            };
            reg.pending_for(owner, now_u64())
                .into_iter()
                .map(|r| self.record(r))
                .collect()
        };
        let mut out = Vec::with_capacity(futures.len());
        for f in futures {
            out.push(f.await);
        }
        Ok(out)
    }

    async fn do_fetch(&self, hdr: &Header<'_>, pair_code: &str) -> Result<Dict, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        // A uid out of tokens gets no answer at all, right or wrong: the code space cannot
        // be searched. Every lookup takes a token and a hit gives it back, so only misses
        // cost, and concurrent lookups cannot overdraw (see `crate::approvals`).
        let limited = self.shared.pairing.code_limit().check(caller.uid, now_ms());
        if let Err(wait) = limited {
            self.audit(
                &caller,
                Some(caller.uid),
                "approval.fetch",
                "",
                Outcome::Denied,
                "rate limited",
            )
            .await;
            return Err(DaemonError::Busy(format!(
                "too many wrong pair codes from uid {}; try again in {} s",
                caller.uid,
                wait.secs()
            )));
        }
        let record = pair_code.parse::<PairCode>().ok().and_then(|code| {
            let reg = self.shared.pairing.registry();
            reg.by_code(&code, caller.uid, now_u64())
                .map(|r| self.record(r))
        });
        match record {
            Some(r) => {
                self.shared
                    .pairing
                    .code_limit()
                    .refund(caller.uid, now_ms());
                Ok(r.await)
            }
            None => {
                self.audit(
                    &caller,
                    Some(caller.uid),
                    "approval.fetch",
                    "",
                    Outcome::Denied,
                    "unknown pair code",
                )
                .await;
                Err(DaemonError::NotFound(NOT_FOUND_CODE.into()))
            }
        }
    }

    /// The request `id` for its owner `caller`, pending and in time; the errors say why not.
    fn decidable(&self, caller: &Caller, id: &RequestId) -> Result<Snapshot, DaemonError> {
        let reg = self.shared.pairing.registry();
        let req = reg
            .get(id)
            .ok_or_else(|| DaemonError::NotFound(NOT_FOUND_ID.into()))?;
        if req.owner != caller.uid {
            return Err(DaemonError::Denied(format!(
                "this request asks uid {} (only that owner can decide it)",
                req.owner
            )));
        }
        let now = now_u64();
        match req.lifecycle.state() {
            State::Pending if req.lifecycle.is_due(now) => Err(DaemonError::Expired(
                "the auth request expired before it was decided".into(),
            )),
            State::Pending => Ok(Snapshot::of(req, now)),
            State::Expired => Err(DaemonError::Expired(
                "the auth request expired before it was decided".into(),
            )),
            other => Err(DaemonError::Consumed(format!(
                "the auth request was already {}",
                other.as_str()
            ))),
        }
    }

    async fn do_approve(
        &self,
        hdr: &Header<'_>,
        request_id: &str,
        auth: Dict,
    ) -> Result<RequestId, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let id = parse_id(request_id)?;
        dict::check_keys(&auth, APPROVE_AUTH_KEYS)?;
        // Checked before asking for the password (nobody types it for a dead request) and
        // again after (PAM can take seconds), under the claim that keeps the sweeper off.
        if let Err(e) = self.decidable(&caller, &id) {
            let why = e.to_string();
            self.audit(
                &caller,
                Some(caller.uid),
                "approval.approve",
                request_id,
                Outcome::Denied,
                &why,
            )
            .await;
            return Err(e);
        }
        self.authenticate_owner(&caller, &auth).await?;
        if !self.shared.pairing.begin_approving(id) {
            return Err(DaemonError::Consumed(
                "the auth request is being decided by another call".into(),
            ));
        }
        let req = match self.decidable(&caller, &id) {
            Ok(r) => r,
            Err(e) => {
                self.shared.pairing.end_approving(&id);
                return Err(e);
            }
        };
        let result = self.apply_and_sign(&caller, &req).await;
        let outcome = match result {
            Ok(approved) => {
                // As of the moment the decision was found in time (nothing expires a request
                // while it is being approved: see `Pairing::sweep`).
                let state = self
                    .shared
                    .pairing
                    .registry()
                    .approve(&id, caller.uid, req.decided_at)
                    .map(|_| ());
                match state {
                    Ok(()) => {
                        self.shared.pairing.store_approved(id, approved);
                        Ok(())
                    }
                    Err(e) => Err(state_error(e)),
                }
            }
            Err(e) => Err(e),
        };
        self.shared.pairing.end_approving(&id);
        outcome?;
        self.shared.pairing.notify_decided();
        self.audit(
            &caller,
            Some(caller.uid),
            "approval.approve",
            request_id,
            Outcome::Ok,
            &format!("type={}", req.details.request_type().as_str()),
        )
        .await;
        tracing::info!(
            uid = caller.uid,
            kind = req.details.request_type().as_str(),
            "auth request approved"
        );
        Ok(id)
    }

    async fn do_deny(&self, hdr: &Header<'_>, request_id: &str) -> Result<RequestId, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let id = parse_id(request_id)?;
        if let Err(e) = self.decidable(&caller, &id) {
            let why = e.to_string();
            self.audit(
                &caller,
                Some(caller.uid),
                "approval.deny",
                request_id,
                Outcome::Denied,
                &why,
            )
            .await;
            return Err(e);
        }
        if !self.shared.pairing.begin_approving(id) {
            return Err(DaemonError::Consumed(
                "the auth request is being decided by another call".into(),
            ));
        }
        let denied = self
            .shared
            .pairing
            .registry()
            .deny(&id, now_u64())
            .map(|_| ());
        self.shared.pairing.end_approving(&id);
        denied.map_err(state_error)?;
        self.shared.pairing.notify_decided();
        self.audit(
            &caller,
            Some(caller.uid),
            "approval.deny",
            request_id,
            Outcome::Ok,
            "",
        )
        .await;
        Ok(id)
    }

    async fn audit(
        &self,
        caller: &Caller,
        owner: Option<u32>,
        action: &'static str,
        subject: &str,
        outcome: Outcome,
        detail: &str,
    ) {
        let (actor, subject, detail) = (actor(caller), subject.to_owned(), detail.to_owned());
        let r = self
            .shared
            .with_store(move |s| {
                let entry = AuditEntry {
                    actor: &actor,
                    owner_uid: owner,
                    action,
                    subject: &subject,
                    outcome,
                    detail: &detail,
                };
                Ok(s.audit_event(entry)?)
            })
            .await;
        if let Err(e) = r {
            tracing::error!(action, error = %super::super::errors::chain(&e), "could not write an audit row");
        }
    }
}

fn state_error(e: TransitionError) -> DaemonError {
    match e {
        TransitionError::NotFound => DaemonError::NotFound(NOT_FOUND_ID.into()),
        TransitionError::State(e) => lifecycle_error(e),
    }
}

fn lifecycle_error(e: StateError) -> DaemonError {
    match e {
        StateError::Expired => DaemonError::Expired(e.to_string()),
        StateError::AlreadyDecided(_)
        | StateError::AlreadyConsumed
        | StateError::NotApproved(_) => DaemonError::Consumed(e.to_string()),
    }
}

fn sender(hdr: &Header<'_>) -> Result<String, DaemonError> {
    hdr.sender()
        .map(|s| s.to_string())
        .ok_or_else(|| DaemonError::CallerUnknown("message has no sender".into()))
}

/// Milliseconds since the Unix epoch, as the rate limiters count them.
fn now_ms() -> u64 {
    u64::try_from(crate::store::now_ms()).unwrap_or(0)
}

fn bytes_value(b: &[u8]) -> zbus::OwnedVariant {
    // Only a variant holding a file descriptor can fail to convert.
    dict::bytes_variant(b).unwrap_or_else(|| zbus::OwnedVariant::from(0u8))
}

/// A request that could not be opened: too many waiting is the caller's to wait out;
/// anything else (random numbers, a details bug) is the daemon's.
fn open_error(e: crate::approvals::RegistryError) -> DaemonError {
    match e {
        crate::approvals::RegistryError::TooMany { .. } => DaemonError::Busy(e.to_string()),
        other => DaemonError::Approval(other.to_string()),
    }
}

/// The per-uid limit on opening auth requests (from the bus or over MCP).
pub(crate) fn open_allowed(shared: &Shared, uid: u32) -> Result<(), DaemonError> {
    shared
        .pairing
        .open_limit()
        .check(uid, now_ms())
        .map_err(|wait| {
            DaemonError::Busy(format!(
                "too many auth requests from uid {uid}; try again in {} s",
                wait.secs()
            ))
        })
}
