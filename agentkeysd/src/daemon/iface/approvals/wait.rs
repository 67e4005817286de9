//! `Await`: the child waits (bounded) for the decision on its request.

use super::*;

impl Approvals {
    pub(super) async fn do_await(
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
                if lc.state() == State::Pending
                    && lc.is_due(now)
                    && !self.shared.pairing.is_approving(&id)
                {
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
}
