//! The shapes requests take on the bus: the owner's record, the signal's notice, the
//! replies of `Open` and of an approved `Await`.

use super::*;

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

/// What `RequestOpened` tells every listener: that a request for `owner` exists, not its
/// pair code, OTP, agent or scope (signals reach every connection on the bus; the owner's
/// tool asks `Pending` for the rest, which only the owner may).
pub(super) fn notice(req: &Request) -> Dict {
    DictBuilder::new()
        .str("id", req.id.to_string())
        .str("type", req.details.request_type().as_str())
        .u32("owner", req.owner)
        .u64("created", req.lifecycle.created_at())
        .u64("expires", req.lifecycle.expires_at())
        .build()
}

pub(super) fn open_reply(req: &Request) -> Dict {
    DictBuilder::new()
        .str("id", req.id.to_string())
        .str("pair_code", req.pair_code.to_string())
        .str("otp", req.otp.to_string())
        .u64("created", req.lifecycle.created_at())
        .u64("expires", req.lifecycle.expires_at())
        .u32("owner", req.owner)
        .build()
}

/// The reply of the `Await` that collects approved request `req`: every field the child
/// needs to check the signature, and what the approval created.
pub(super) fn approved_dict(req: &Request, a: &Approved) -> Dict {
    let mut d = DictBuilder::new()
        .str("state", "approved")
        .opt_u32("approver", req.approver)
        .u64("created", req.lifecycle.created_at())
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
    d.insert("nonce".into(), bytes_value(req.nonce.expose_secret()));
    d
}
