//! Re-authenticating the owner before an approval: PAM through a sealed-memfd password,
//! remembered per login session like sudo, or nothing under `authenticate = "none"`.

use super::*;

impl Approvals {
    /// The human behind `caller`: PAM (or the cache of a recent success in the same login
    /// session), unless configuration says `none`.
    pub(super) async fn authenticate_owner(
        &self,
        caller: &Caller,
        auth: &Dict,
    ) -> Result<(), DaemonError> {
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
        let Some(v) = auth.get("password") else {
            return Err(DaemonError::Locked(
                "approving needs your login password (re-authentication through PAM); agentkeysctl approve asks for it".into(),
            ));
        };
        let zbus::Variant::Fd(fd) = &**v else {
            return Err(DaemonError::Invalid(
                "auth option 'password' must be a file descriptor (h)".into(),
            ));
        };
        let password = vault::read_sealed_memfd(&self.shared.vault, fd.as_fd())?;
        let user = user_name(caller.uid).ok_or_else(|| {
            DaemonError::Denied(format!(
                "uid {} has no user name to authenticate",
                caller.uid
            ))
        })?;
        // Every attempt takes a token before PAM runs and only a wrong password keeps it:
        // concurrent attempts cannot together try more passwords than the bucket holds.
        let limited = self
            .shared
            .pairing
            .auth_failures()
            .check(caller.uid, now_ms());
        if let Err(wait) = limited {
            return Err(DaemonError::Busy(format!(
                "too many failed authentications for uid {}; try again in {} s",
                caller.uid,
                wait.secs()
            )));
        }
        let service = cfg.pam_service.clone();
        let result = tokio::task::spawn_blocking(move || {
            crate::daemon::pam::authenticate(&service, &user, &password)
        })
        .await?;
        if !result.as_ref().is_err_and(|e| e.is_wrong_credentials()) {
            self.shared
                .pairing
                .auth_failures()
                .refund(caller.uid, now_ms());
        }
        match result {
            Ok(()) => {
                if let Some(s) = session {
                    self.shared.pairing.remember_auth(s);
                }
                Ok(())
            }
            Err(e) if e.is_wrong_credentials() => {
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
}
