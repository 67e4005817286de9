//! What an approval does (agents, keys, sessions, scopes, releases) and the signed
//! decision the child verifies.

use super::*;

impl Approvals {
    /// Applies what the approval means (new agent and session, new key, new scope, a
    /// release) and signs the decision. Nothing is marked approved if this fails.
    pub(super) async fn apply_and_sign(
        &self,
        caller: &Caller,
        req: &Snapshot,
    ) -> Result<Approved, DaemonError> {
        let actor = actor(caller);
        let ttl_s = i64::from(self.shared.config.approvals.session_ttl_s);
        let snap = req.clone();
        let approved = blocking(&self.shared, move |s| {
            let req = &snap;
            let (owner, request) = (req.owner, req.id.to_string());
            let issue = Issue {
                pubkey: &req.child_pubkey,
                uid: req.requester_uid,
                ttl_s,
                request: &request,
            };
            let mut approved = match &req.details {
                Details::Pair(p) => {
                    let name = pair_name(&req.details, &req.pair_code);
                    let paired = s.pair_agent(&actor, owner, &name, &p.requested_scope, &issue)?;
                    Approved::issued(paired)
                }
                Details::Recover(r) => {
                    let id = s.resolve_agent(owner, &r.agent_identity)?;
                    Approved::issued(s.rebind_agent(&actor, owner, &id, true, &issue)?)
                }
                Details::KeyRotate(k) => {
                    Approved::issued(s.rebind_agent(&actor, owner, &k.agent_id, false, &issue)?)
                }
                Details::ScopeChange(c) => {
                    let agent =
                        s.change_scope(&actor, owner, &c.agent_id, &c.new_scope, &request)?;
                    Approved::rescoped(agent)
                }
                Details::HighValueRelease(h) => Approved::released(&h.agent_id),
            };
            let nonce = crate::approvals::Nonce::from_bytes(req.nonce);
            let fields = DecisionFields {
                id: req.id,
                request_type: req.details.request_type(),
                details_cbor: &req.details_cbor,
                child_pubkey: &req.child_pubkey,
                approver_uid: actor.uid,
                created_at: req.created_at,
                nonce: &nonce,
            };
            approved.signature =
                sign(s.host_key(), &fields).map_err(|e| DaemonError::Approval(e.to_string()))?;
            Ok(approved)
        })
        .await?;
        // An agent's own release request, once approved, lets one later read through; the
        // ones the daemon opened for a waiting read serve that read and nothing more.
        if let Details::HighValueRelease(h) = &req.details
            && !self.shared.pairing.is_internal(&req.id)
        {
            self.shared.pairing.add_release(&h.agent_id, &h.credential);
        }
        Ok(approved)
    }
}

/// What each kind of approval hands the child (the signature is filled in last).
impl Approved {
    /// A session was issued (Pair, Recover, KeyRotate).
    fn issued(a: crate::store::AgentSession) -> Approved {
        Approved {
            session: Some(a.session.id),
            session_expires: Some(a.session.expires_at),
            ..Approved::rescoped(a.agent)
        }
    }

    /// The agent's scope changed (ScopeChange).
    fn rescoped(agent: crate::store::AgentRecord) -> Approved {
        Approved {
            name: Some(agent.name),
            scope: Some(agent.scope),
            ..Approved::released(&agent.id)
        }
    }

    /// One read is let through (HighValueRelease).
    fn released(agent_id: &str) -> Approved {
        Approved {
            signature: [0; 64],
            agent_id: Some(agent_id.to_owned()),
            name: None,
            session: None,
            session_expires: None,
            scope: None,
        }
    }
}

/// What `Approve` needs of a request, copied out from under the registry's lock.
#[derive(Clone)]
pub(super) struct Snapshot {
    /// When the owner's decision was checked to be in time: the decision is recorded as of
    /// then, so a request cannot expire between its effect and its approval.
    pub(super) decided_at: u64,
    pub(super) id: RequestId,
    pub(super) details: Details,
    pub(super) details_cbor: Vec<u8>,
    pub(super) child_pubkey: [u8; PUBLIC_KEY_LEN],
    pub(super) nonce: [u8; 32],
    pub(super) created_at: u64,
    pub(super) pair_code: PairCode,
    pub(super) owner: u32,
    pub(super) requester_uid: u32,
}

impl Snapshot {
    pub(super) fn of(req: &Request, decided_at: u64) -> Snapshot {
        Snapshot {
            decided_at,
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
