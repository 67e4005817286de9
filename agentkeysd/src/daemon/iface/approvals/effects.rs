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
            name: agent_name,
            agent_id,
            session,
            session_expires,
            scope,
        })
    }
}

/// What `Approve` needs of a request, copied out from under the registry's lock.
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
