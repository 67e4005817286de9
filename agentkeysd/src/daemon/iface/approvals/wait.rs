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
            let expires_at = {
                let mut reg = self.shared.pairing.registry();
                let now = now_u64();
                let lc = reg
                    .get(&id)
                    .filter(|r| r.requester.uid == caller.uid)
                    .ok_or_else(|| DaemonError::NotFound(NOT_FOUND_ID.into()))?
                    .lifecycle;
                if lc.state() == State::Pending
                    && lc.is_due(now)
                    && !self.shared.pairing.is_approving(&id)
                {
                    // Recorded here as well as by the sweeper, so the answer never waits on it.
                    reg.expire_due(now);
                }
                match reg.get(&id).map(|r| r.lifecycle.state()) {
                    Some(State::Pending) => lc.expires_at(),
                    Some(State::Approved) => {
                        let req = reg.consume(&id, now).map_err(state_error)?;
                        let approved = self.shared.pairing.approved(&id).ok_or_else(|| {
                            DaemonError::Approval("approved request has no stored decision".into())
                        })?;
                        return Ok(approved_dict(req, &approved));
                    }
                    Some(other) => {
                        return Ok(DictBuilder::new().str("state", other.as_str()).build());
                    }
                    None => return Err(DaemonError::NotFound(NOT_FOUND_ID.into())),
                }
            };
            // Still pending: wait for a decision, the request's expiry or the deadline,
            // whichever comes first, and look again (once more after the deadline).
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(DictBuilder::new().str("state", "pending").build());
            }
            let until_expiry = Duration::from_secs(expires_at.saturating_sub(now_u64()));
            let wait_until = deadline.min(now + until_expiry + Duration::from_millis(50));
            let _ = tokio::time::timeout_at(wait_until, wake.changed()).await;
        }
    }
}
