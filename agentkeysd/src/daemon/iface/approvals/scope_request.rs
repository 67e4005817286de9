//! An agent asks for a credential outside its scope from inside its sandbox (MCP
//! `request_credential`): a `ScopeChange` request the owner approves with
//! `agentkeysctl approve`, opened by the daemon for the agent it knows from the socket.

use super::*;

/// What the agent is told about the request it opened.
#[derive(Debug, Clone)]
pub struct OpenedRequest {
    pub id: String,
    pub pair_code: String,
    pub otp: String,
    pub expires: u64,
}

/// Opens a `ScopeChange` adding `credential` to the scope of the agent behind `binding`.
/// `connection` names where the request came from (shown to the approver); `reason` goes
/// into the audit row (the request's canonical details have no field for it).
pub async fn open_scope_request(
    shared: &Arc<Shared>,
    emitter: Option<&SignalEmitter<'_>>,
    caller: &Caller,
    connection: String,
    binding: &crate::daemon::pairing::Binding,
    credential: &str,
    reason: &str,
) -> Result<OpenedRequest, DaemonError> {
    let session = binding.session.clone();
    let agent = shared.with_store(move |s| Ok(s.session(&session)?)).await?;
    if agent.agent.state == crate::store::AgentState::Revoked {
        return Err(DaemonError::Denied(format!(
            "agent '{}' was revoked; it cannot ask for credentials",
            agent.agent.name
        )));
    }
    if agent.agent.scope.iter().any(|s| s == credential) {
        return Err(DaemonError::Invalid(format!(
            "'{credential}' is already in the scope of agent '{}'; if reading it is refused, \
             the owner has not granted it: ask them to run agentkeysctl grant {} {credential}",
            agent.agent.name, agent.agent.name
        )));
    }
    let mut new_scope = agent.agent.scope.clone();
    new_scope.push(credential.to_owned());
    let details = Details::ScopeChange(crate::approvals::ScopeChange {
        agent_id: binding.agent_id.clone(),
        new_scope,
    });
    open_allowed(shared, caller.uid)?;
    let new = NewRequest {
        details,
        child_pubkey: agent.session.pubkey,
        owner: binding.owner,
        requester: requester(caller, connection),
        ttl_secs: shared.config.approvals.ttl_s(RequestType::ScopeChange),
    };
    let (opened, announce) = {
        let mut reg = shared.pairing.registry();
        let req = reg.open(new, now_u64()).map_err(open_error)?;
        let opened = OpenedRequest {
            id: req.id.to_string(),
            pair_code: req.pair_code.to_string(),
            otp: req.otp.to_string(),
            expires: req.lifecycle.expires_at(),
        };
        (opened, notice(req))
    };
    let reason: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let (actor, subject, owner) = (actor(caller), opened.id.clone(), binding.owner);
    let detail = format!("type=ScopeChange credential={credential} reason={reason}");
    let audited = shared
        .with_store(move |s| {
            Ok(s.audit_event(AuditEntry {
                actor: &actor,
                owner_uid: Some(owner),
                action: "approval.open",
                subject: &subject,
                outcome: Outcome::Ok,
                detail: &detail,
            })?)
        })
        .await;
    if let Err(e) = audited {
        tracing::error!(error = %crate::daemon::errors::chain(&e), "could not write an audit row");
    }
    tracing::info!(uid = caller.uid, owner, agent = %binding.agent_id, credential, "scope change requested over MCP");
    if let Some(emitter) = emitter
        && let Err(e) = Approvals::request_opened(emitter, announce).await
    {
        tracing::warn!(error = %e, "could not emit RequestOpened");
    }
    Ok(opened)
}
