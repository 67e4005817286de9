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
    Requester, State, StateError, TransitionError, decode, fingerprint, host_public_key, sign,
};
use crate::store::{AuditEntry, Issue, Outcome};
use crate::vault;

use super::super::authz::Caller;
use super::super::config::Authenticate;
use super::super::errors::{DaemonError, to_public};
use super::super::pairing::{Approved, LoginSession};
use super::super::state::{Shared, blocking};
use super::{actor, now};

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
fn exe_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The agent name a `Pair` request will create: the one asked for, or one derived from
/// the pair code (shown at `Fetch`, so the approver sees it before saying yes).
pub fn pair_name(details: &Details, code: &PairCode) -> String {
    match details {
        Details::Pair(p) => p
            .name
            .clone()
            .unwrap_or_else(|| format!("agent-{}", code.as_str().to_ascii_lowercase())),
        _ => String::new(),
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
        let limited = self.shared.pairing.open_limit().check(caller.uid, now_ms());
        if let Err(wait) = limited {
            return Err(DaemonError::Busy(format!(
                "too many auth requests from uid {}; try again in {} s",
                caller.uid,
                wait.secs()
            )));
        }
        let ttl = match request_type {
            RequestType::Pair | RequestType::Recover => self.shared.config.approvals.short_ttl_s,
            _ => self.shared.config.approvals.long_ttl_s,
        };
        drop(details_cbor);
        let new = NewRequest {
            details,
            child_pubkey,
            owner,
            requester: Requester {
                uid: caller.uid,
                pid: caller.pid,
                exe: caller.pid.and_then(exe_of),
                connection: sender,
            },
            ttl_secs: u64::from(ttl),
        };
        let (reply, record) = {
            let mut reg = self.shared.pairing.registry();
            let req = reg.open(new, now_s).map_err(|e| match e {
                crate::approvals::RegistryError::TooMany { .. } => DaemonError::Busy(e.to_string()),
                other => DaemonError::Approval(other.to_string()),
            })?;
            (open_reply(req), notice(req))
        };
        let host = self
            .shared
            .with_store(|s| {
                host_public_key(s.host_key()).map_err(|e| DaemonError::Approval(e.to_string()))
            })
            .await?;
        let mut reply = reply;
        reply.insert("host_key".into(), bytes_value(&host));
        self.audit(
            &caller,
            Some(owner),
            "approval.open",
            &reply_id(&reply),
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
        // be searched. Only a miss costs a token (see `crate::approvals` for the numbers).
        let limited = self.shared.pairing.code_limit().peek(caller.uid, now_ms());
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
            Some(r) => Ok(r.await),
            None => {
                let _ = self.shared.pairing.code_limit().check(caller.uid, now_ms());
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
            State::Pending => Ok(Snapshot::of(req)),
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
        let req = match self.decidable(&caller, &id) {
            Ok(r) => r,
            Err(e) => {
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
        };
        self.authenticate_owner(&caller, &auth).await?;
        if !self.shared.pairing.begin_approving(id) {
            return Err(DaemonError::Consumed(
                "the auth request is being decided by another call".into(),
            ));
        }
        let result = self.apply_and_sign(&caller, &req).await;
        let outcome = match result {
            Ok(approved) => {
                let now = now_u64();
                let state = self
                    .shared
                    .pairing
                    .registry()
                    .approve(&id, caller.uid, now)
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

    /// The human behind `caller`: PAM (or the cache of a recent success in the same login
    /// session), unless configuration says `none`.
    async fn authenticate_owner(&self, caller: &Caller, auth: &Dict) -> Result<(), DaemonError> {
        let cfg = &self.shared.config.approvals;
        if cfg.authenticate == Authenticate::None {
            return Ok(());
        }
        let session = caller.pid.and_then(|pid| LoginSession::of(caller.uid, pid));
        let ttl = Duration::from_secs(u64::from(cfg.auth_cache_s));
        if let Some(s) = &session
            && cfg.auth_cache_s > 0
            && self.shared.pairing.auth_cached(s, ttl)
        {
            return Ok(());
        }
        let fd = match auth.get("password") {
            None => {
                return Err(DaemonError::Locked(
                    "approving needs your login password (re-authentication through PAM); agentkeysctl approve asks for it".into(),
                ));
            }
            Some(v) => match &**v {
                zbus::Variant::Fd(fd) => fd.as_fd().try_clone_to_owned().map_err(|e| {
                    DaemonError::Invalid(format!("the password fd is unusable: {e}"))
                })?,
                _ => {
                    return Err(DaemonError::Invalid(
                        "auth option 'password' must be a file descriptor (h)".into(),
                    ));
                }
            },
        };
        let limited = self
            .shared
            .pairing
            .auth_failures()
            .peek(caller.uid, now_ms());
        if let Err(wait) = limited {
            return Err(DaemonError::Busy(format!(
                "too many failed authentications for uid {}; try again in {} s",
                caller.uid,
                wait.secs()
            )));
        }
        let password = vault::read_sealed_memfd(&self.shared.vault, fd.as_fd())?;
        drop(fd);
        let user = user_name(caller.uid).ok_or_else(|| {
            DaemonError::Denied(format!(
                "uid {} has no user name to authenticate",
                caller.uid
            ))
        })?;
        let service = cfg.pam_service.clone();
        let result = tokio::task::spawn_blocking(move || {
            super::super::pam::authenticate(&service, &user, &password)
        })
        .await?;
        match result {
            Ok(()) => {
                if let Some(s) = session {
                    self.shared.pairing.remember_auth(s);
                }
                Ok(())
            }
            Err(e) if e.is_wrong_credentials() => {
                let _ = self
                    .shared
                    .pairing
                    .auth_failures()
                    .check(caller.uid, now_ms());
                self.audit(
                    caller,
                    Some(caller.uid),
                    "approval.authenticate",
                    "",
                    Outcome::Denied,
                    "wrong password",
                )
                .await;
                Err(DaemonError::Denied(
                    "authentication failed: wrong password".into(),
                ))
            }
            Err(e) => {
                tracing::error!(error = %e, "PAM failed");
                Err(DaemonError::Busy(
                    "authentication is unavailable (PAM failed); see the daemon's log".into(),
                ))
            }
        }
    }

    /// Applies what the approval means (new agent and session, new key, new scope, a
    /// release) and signs the decision. Nothing is marked approved if this fails.
    async fn apply_and_sign(
        &self,
        caller: &Caller,
        req: &Snapshot,
    ) -> Result<Approved, DaemonError> {
        let cfg = &self.shared.config.approvals;
        let actor = actor(caller);
        let owner = req.owner;
        let request = req.id.to_string();
        let pubkey = req.child_pubkey;
        let uid = req.requester_uid;
        let ttl_s = i64::from(cfg.session_ttl_s);
        let details = req.details.clone();
        let name = pair_name(&req.details, &req.pair_code);
        let fields_owned = (
            req.id,
            req.details.request_type(),
            req.details_cbor.clone(),
            req.child_pubkey,
            req.created_at,
            req.nonce,
        );
        let (agent_id, agent_name, session, session_expires, scope, signature) =
            blocking(&self.shared, move |s| {
                let issue = Issue {
                    pubkey: &pubkey,
                    uid,
                    ttl_s,
                    request: &request,
                };
                let with_session = |a: crate::store::AgentSession| {
                    (
                        Some(a.agent.id),
                        Some(a.agent.name),
                        Some(a.session.id),
                        Some(a.session.expires_at),
                        Some(a.agent.scope),
                    )
                };
                let (agent_id, agent_name, session, expires, scope) = match &details {
                    Details::Pair(p) => with_session(s.pair_agent(
                        &actor,
                        owner,
                        &name,
                        &p.requested_scope,
                        &issue,
                    )?),
                    Details::Recover(r) => {
                        let id = s.resolve_agent(owner, &r.agent_identity)?;
                        with_session(s.rebind_agent(&actor, owner, &id, true, &issue)?)
                    }
                    Details::KeyRotate(k) => {
                        with_session(s.rebind_agent(&actor, owner, &k.agent_id, false, &issue)?)
                    }
                    Details::ScopeChange(c) => {
                        let a =
                            s.change_scope(&actor, owner, &c.agent_id, &c.new_scope, &request)?;
                        (Some(a.id), Some(a.name), None, None, Some(a.scope))
                    }
                    Details::HighValueRelease(h) => {
                        (Some(h.agent_id.clone()), None, None, None, None)
                    }
                };
                let (id, ty, cbor, child, created, nonce) = &fields_owned;
                let nonce = crate::approvals::Nonce::from_bytes(*nonce);
                let fields = DecisionFields {
                    id: *id,
                    request_type: *ty,
                    details_cbor: cbor,
                    child_pubkey: child,
                    approver_uid: actor.uid,
                    created_at: *created,
                    nonce: &nonce,
                };
                let signature = sign(s.host_key(), &fields)
                    .map_err(|e| DaemonError::Approval(e.to_string()))?;
                Ok((agent_id, agent_name, session, expires, scope, signature))
            })
            .await?;
        // An agent's own release request, once approved, lets one later read through; the
        // ones the daemon opened for a waiting read serve that read and nothing more.
        if let Details::HighValueRelease(h) = &req.details
            && !self.shared.pairing.is_internal(&req.id)
        {
            self.shared.pairing.add_release(&h.agent_id, &h.credential);
        }
        Ok(Approved {
            signature,
            approver: caller.uid,
            created: req.created_at,
            nonce: req.nonce,
            name: agent_name,
            agent_id,
            session,
            session_expires,
            scope,
        })
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

    async fn do_await(
        &self,
        hdr: &Header<'_>,
        request_id: &str,
        timeout_s: u32,
    ) -> Result<Dict, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.caller(hdr).await?;
        let id = parse_id(request_id)?;
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(u64::from(timeout_s.min(MAX_AWAIT_S)));
        let mut wake = self.shared.pairing.subscribe();
        loop {
            wake.borrow_and_update();
            let (state, expires_at) = {
                let mut reg = self.shared.pairing.registry();
                let req = reg
                    .get(&id)
                    .filter(|r| r.requester.uid == caller.uid)
                    .ok_or_else(|| DaemonError::NotFound(NOT_FOUND_ID.into()))?;
                let lc = req.lifecycle;
                let now = now_u64();
                if lc.state() == State::Pending && lc.is_due(now) {
                    // Recorded here as well as by the sweeper, so the answer never waits on it.
                    reg.expire_due(now);
                }
                let req = reg
                    .get(&id)
                    .ok_or_else(|| DaemonError::NotFound(NOT_FOUND_ID.into()))?;
                if req.lifecycle.state() == State::Approved {
                    reg.consume(&id, now).map_err(state_error)?;
                    let approved = self.shared.pairing.approved(&id).ok_or_else(|| {
                        DaemonError::Approval("approved request has no stored decision".into())
                    })?;
                    return Ok(approved_dict(&approved));
                }
                (req.lifecycle.state(), req.lifecycle.expires_at())
            };
            if state != State::Pending {
                return Ok(DictBuilder::new().str("state", state.as_str()).build());
            }
            // Wake at a decision, at the request's expiry, or at the caller's deadline.
            let until_expiry = expires_at.saturating_sub(now_u64());
            let expiry = tokio::time::Instant::now()
                + Duration::from_secs(until_expiry)
                + Duration::from_millis(50);
            let wait_until = deadline.min(expiry);
            if tokio::time::Instant::now() >= deadline {
                return Ok(DictBuilder::new().str("state", "pending").build());
            }
            let _ = tokio::time::timeout_at(wait_until, wake.changed()).await;
            if tokio::time::Instant::now() >= deadline && state == State::Pending {
                // One last look before answering "pending".
                let reg = self.shared.pairing.registry();
                if reg.get(&id).is_some_and(|r| {
                    r.lifecycle.state() == State::Pending && !r.lifecycle.is_due(now_u64())
                }) {
                    return Ok(DictBuilder::new().str("state", "pending").build());
                }
            }
        }
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

/// The public record of a request (what `Fetch`, `Pending` and `RequestOpened` carry).
pub fn record(
    shared: &Arc<Shared>,
    req: &Request,
) -> impl std::future::Future<Output = Dict> + Send + use<> {
    let mut b = DictBuilder::new()
        .str("id", req.id.to_string())
        .str("type", req.details.request_type().as_str())
        .str("pair_code", req.pair_code.to_string())
        .str("otp", req.otp.to_string())
        .u64("created", req.lifecycle.created_at())
        .u64("expires", req.lifecycle.expires_at())
        .str("state", req.lifecycle.state().as_str())
        .u32("owner", req.owner)
        .u32("requester_uid", req.requester.uid)
        .opt_u32("requester_pid", req.requester.pid)
        .str("fingerprint", fingerprint(&req.child_pubkey));
    if let Some(exe) = &req.requester.exe {
        b = b.str("requester_exe", exe.clone());
    }
    let mut agent_id = None;
    match &req.details {
        Details::Pair(p) => {
            b = b
                .str("name", pair_name(&req.details, &req.pair_code))
                .strs("scope", &p.requested_scope);
        }
        Details::Recover(r) => {
            b = b.str("agent_identity", r.agent_identity.clone());
        }
        Details::ScopeChange(d) => {
            b = b.strs("scope", &d.new_scope);
            agent_id = Some(d.agent_id.clone());
        }
        Details::HighValueRelease(d) => {
            b = b
                .str("credential", d.credential.clone())
                .str("reason", d.reason.clone());
            agent_id = Some(d.agent_id.clone());
        }
        Details::KeyRotate(d) => {
            agent_id = Some(d.agent_id.clone());
        }
    }
    let recover_ident = match &req.details {
        Details::Recover(r) => Some(r.agent_identity.clone()),
        _ => None,
    };
    let owner = req.owner;
    let shared = shared.clone();
    async move {
        // The agent's current name, for the approver (best effort: a lookup failure
        // only leaves the name out).
        let found = shared
            .with_store(move |s| {
                let id = match (agent_id, recover_ident) {
                    (Some(id), _) => Some(id),
                    (None, Some(ident)) => s.resolve_agent(owner, &ident).ok(),
                    _ => None,
                };
                Ok(id.and_then(|id| s.get_agent(owner, &id).ok()))
            })
            .await
            .ok()
            .flatten();
        if let Some(agent) = found {
            b = b.str("agent_id", agent.id).str("name", agent.name);
        }
        b.build()
    }
}

/// What `Approve` needs of a request, copied out from under the registry's lock.
struct Snapshot {
    id: RequestId,
    details: Details,
    details_cbor: Vec<u8>,
    child_pubkey: [u8; PUBLIC_KEY_LEN],
    nonce: [u8; 32],
    created_at: u64,
    pair_code: PairCode,
    owner: u32,
    requester_uid: u32,
}

impl Snapshot {
    fn of(req: &Request) -> Snapshot {
        Snapshot {
            id: req.id,
            details: req.details.clone(),
            details_cbor: req.details_cbor.clone(),
            child_pubkey: req.child_pubkey,
            nonce: *req.nonce.expose_secret(),
            created_at: req.lifecycle.created_at(),
            pair_code: req.pair_code,
            owner: req.owner,
            requester_uid: req.requester.uid,
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn bytes_value(b: &[u8]) -> zbus::OwnedVariant {
    // Only a variant holding a file descriptor can fail to convert.
    dict::bytes_variant(b).unwrap_or_else(|| zbus::OwnedVariant::from(0u8))
}

fn reply_id(d: &Dict) -> String {
    dict::get_str(d, "id").ok().flatten().unwrap_or_default()
}

/// What `RequestOpened` tells every listener: that a request for `owner` exists, not its
/// pair code, OTP, agent or scope (signals reach every connection on the bus; the owner's
/// tool asks `Pending` for the rest, which only the owner may).
fn notice(req: &Request) -> Dict {
    DictBuilder::new()
        .str("id", req.id.to_string())
        .str("type", req.details.request_type().as_str())
        .u32("owner", req.owner)
        .u64("created", req.lifecycle.created_at())
        .u64("expires", req.lifecycle.expires_at())
        .build()
}

fn open_reply(req: &Request) -> Dict {
    DictBuilder::new()
        .str("id", req.id.to_string())
        .str("pair_code", req.pair_code.to_string())
        .str("otp", req.otp.to_string())
        .u64("created", req.lifecycle.created_at())
        .u64("expires", req.lifecycle.expires_at())
        .u32("owner", req.owner)
        .build()
}

fn approved_dict(a: &Approved) -> Dict {
    let mut d = DictBuilder::new()
        .str("state", "approved")
        .u32("approver", a.approver)
        .u64("created", a.created)
        .opt_i64("session_expires", a.session_expires);
    if let Some(id) = &a.agent_id {
        d = d.str("agent_id", id.clone());
    }
    if let Some(name) = &a.name {
        d = d.str("name", name.clone());
    }
    if let Some(s) = &a.session {
        d = d.str("session", s.clone());
    }
    if let Some(scope) = &a.scope {
        d = d.strs("scope", scope);
    }
    let mut d = d.build();
    d.insert("signature".into(), bytes_value(&a.signature));
    d.insert("nonce".into(), bytes_value(&a.nonce));
    d
}

/// A read under a `confirm` grant: opens a `HighValueRelease` request for the owner and
/// waits (at most `approvals.confirm_timeout_s`) for the decision. Returns `Ok(())` when
/// the owner approved (the request is consumed), the public refusal otherwise.
pub async fn confirm_release(
    shared: &Arc<Shared>,
    emitter: &SignalEmitter<'_>,
    caller: &Caller,
    connection: String,
    binding: &super::super::pairing::Binding,
    credential: &str,
) -> Result<(), DaemonError> {
    let session = binding.session.clone();
    let pubkey = shared
        .with_store(move |s| Ok(s.session(&session)?.session.pubkey))
        .await?;
    let details = Details::HighValueRelease(crate::approvals::HighValueRelease {
        agent_id: binding.agent_id.clone(),
        credential: credential.to_owned(),
        reason: "read under a confirm grant".into(),
    });
    let cfg = &shared.config.approvals;
    let new = NewRequest {
        details,
        child_pubkey: pubkey,
        owner: binding.owner,
        requester: Requester {
            uid: caller.uid,
            pid: caller.pid,
            exe: caller.pid.and_then(exe_of),
            connection,
        },
        ttl_secs: u64::from(cfg.long_ttl_s),
    };
    let mut wake = shared.pairing.subscribe();
    let (id, opened) = {
        let mut reg = shared.pairing.registry();
        let req = reg.open(new, now_u64()).map_err(|e| match e {
            crate::approvals::RegistryError::TooMany { .. } => DaemonError::Busy(e.to_string()),
            other => DaemonError::Approval(other.to_string()),
        })?;
        (req.id, notice(req))
    };
    shared.pairing.mark_internal(id);
    tracing::info!(uid = caller.uid, owner = binding.owner, agent = %binding.agent_id, credential, "confirm grant: release requested");
    if let Err(e) = Approvals::request_opened(emitter, opened).await {
        tracing::warn!(error = %e, "could not emit RequestOpened");
    }
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(u64::from(cfg.confirm_timeout_s));
    loop {
        wake.borrow_and_update();
        let state = {
            let mut reg = shared.pairing.registry();
            let now = now_u64();
            reg.expire_due(now);
            let state = reg.get(&id).map(|r| r.lifecycle.state());
            if state == Some(State::Approved) {
                reg.consume(&id, now).map_err(state_error)?;
                return Ok(());
            }
            state
        };
        match state {
            Some(State::Pending) => {}
            Some(State::Denied) => {
                return Err(DaemonError::Denied(format!(
                    "the owner denied this read of '{credential}' (its grant needs confirmation each time)"
                )));
            }
            _ => {
                return Err(DaemonError::Expired(format!(
                    "nobody confirmed this read of '{credential}' in time (its grant needs the owner's confirmation: agentkeysctl pending, then approve)"
                )));
            }
        }
        if tokio::time::timeout_at(deadline, wake.changed())
            .await
            .is_err()
        {
            // The read stops waiting; the request stays for the owner to see until it expires.
            return Err(DaemonError::Expired(format!(
                "nobody confirmed this read of '{credential}' within {} s (agentkeysctl pending, then approve)",
                cfg.confirm_timeout_s
            )));
        }
    }
}
