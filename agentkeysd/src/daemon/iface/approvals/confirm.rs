//! Reads under a `confirm` grant: the daemon asks the owner and the read waits.

use super::*;

/// A read under a `confirm` grant: opens a `HighValueRelease` request for the owner and
/// waits (at most `approvals.confirm_timeout_s`) for the decision. Returns `Ok(())` when
/// the owner approved (the request is consumed), the public refusal otherwise, after
/// recording it as a denied read of the agent (audit row and usage count).
///
/// `emitter` announces the request on the bus (`RequestOpened`); a read that did not
/// arrive over D-Bus (MCP) passes [`Shared::signal_emitter`], which is `None` off the bus:
/// the request is then found by `agentkeysctl pending` all the same.
pub async fn confirm_release(
    shared: &Arc<Shared>,
    emitter: Option<&SignalEmitter<'_>>,
    caller: &Caller,
    connection: String,
    binding: &crate::daemon::pairing::Binding,
    credential: &str,
) -> Result<(), DaemonError> {
    let asked = ask_release(shared, emitter, caller, connection, binding, credential).await;
    if let Err(e) = asked {
        let why = if matches!(e, DaemonError::Denied(_)) {
            "confirmation denied"
        } else {
            "confirmation not given in time"
        };
        let (who, session, cred) = (
            actor(caller),
            binding.session.clone(),
            credential.to_owned(),
        );
        shared
            .with_store(move |s| Ok(s.agent_read_refused(&who, &session, &cred, why)?))
            .await?;
        return Err(e);
    }
    Ok(())
}

async fn ask_release(
    shared: &Arc<Shared>,
    emitter: Option<&SignalEmitter<'_>>,
    caller: &Caller,
    connection: String,
    binding: &crate::daemon::pairing::Binding,
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
        requester: requester(caller, connection),
        ttl_secs: cfg.ttl_s(RequestType::HighValueRelease),
    };
    let mut wake = shared.pairing.subscribe();
    let (id, opened) = {
        let mut reg = shared.pairing.registry();
        let req = reg.open(new, now_u64()).map_err(open_error)?;
        // Marked before the registry is unlocked: no approval can see it unmarked.
        shared.pairing.mark_internal(req.id);
        (req.id, notice(req))
    };
    tracing::info!(uid = caller.uid, owner = binding.owner, agent = %binding.agent_id, credential, "confirm grant: release requested");
    if let Some(emitter) = emitter
        && let Err(e) = Approvals::request_opened(emitter, opened).await
    {
        tracing::warn!(error = %e, "could not emit RequestOpened");
    }
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(u64::from(cfg.confirm_timeout_s));
    loop {
        wake.borrow_and_update();
        let state = {
            // Expiry is the sweeper's (which keeps off requests being approved).
            let mut reg = shared.pairing.registry();
            let state = reg.get(&id).map(|r| r.lifecycle.state());
            if state == Some(State::Approved) {
                reg.consume(&id, now_u64()).map_err(state_error)?;
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
