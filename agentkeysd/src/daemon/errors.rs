//! The one place where internal errors become public D-Bus errors (STYLE §11).
//!
//! The full error chain goes to the daemon's log; the caller gets one of the small set of
//! `dev.agentkeys.Error.*` names with a message that says only what it may know.

use crate::api::Error as Public;
use crate::api::dict::DictError;
use crate::store::{ErrorKind as StoreKind, StoreError};
use crate::vault::{MemfdError, VaultError};

use super::authz::AuthzError;

/// Everything a method can fail with, before it is made public.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Authz(#[from] AuthzError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Memfd(#[from] MemfdError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Options(#[from] DictError),
    #[error("{0}")]
    Invalid(String),
    #[error("the bus did not report who is calling: {0}")]
    CallerUnknown(String),
    #[error("agentkeysd is shutting down")]
    ShuttingDown,
    #[error("the audit trail cannot be written")]
    AuditUnavailable,
    #[error("a worker task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// Refusals decided in the daemon itself (approvals, sessions); the text is public.
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Expired(String),
    #[error("{0}")]
    Consumed(String),
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Busy(String),
    /// Something the host lacks or refuses (the text is public).
    #[error("{0}")]
    Unavailable(String),
    /// Approval machinery that failed inside (random numbers, signing): logged, not sent.
    #[error("{0}")]
    Approval(String),
}

/// Logs `err` with its full chain and returns the public error for the caller.
pub fn to_public(method: &str, err: DaemonError) -> Public {
    let chain = chain(&err);
    match err {
        DaemonError::Authz(e @ AuthzError::BadName(_)) => {
            tracing::debug!(method, error = %chain, "rejected");
            Public::InvalidArgument(e.to_string())
        }
        DaemonError::Authz(e @ (AuthzError::NotRoot { .. } | AuthzError::RootOnly { .. })) => {
            tracing::info!(method, error = %chain, "denied");
            Public::Denied(e.to_string())
        }
        DaemonError::Options(e) => Public::InvalidArgument(e.to_string()),
        DaemonError::Invalid(m) => Public::InvalidArgument(m),
        DaemonError::Memfd(e) => {
            tracing::debug!(method, error = %chain, "bad secret fd");
            Public::InvalidArgument(e.to_string())
        }
        DaemonError::Store(e) => match e.kind() {
            StoreKind::NotFound => Public::NotFound(e.to_string()),
            StoreKind::AlreadyExists => Public::InvalidArgument(e.to_string()),
            StoreKind::Expired => Public::Expired(e.to_string()),
            StoreKind::Revoked => Public::Denied(e.to_string()),
            StoreKind::Locked => {
                tracing::info!(method, error = %chain, "locked");
                Public::Locked(e.to_string())
            }
            StoreKind::Tampered => {
                tracing::error!(method, error = %chain, "integrity check failed");
                Public::Internal(e.to_string())
            }
            _ => {
                tracing::error!(method, error = %chain, "store failure");
                Public::Internal(
                    "internal error in the credential store; see the daemon's log".into(),
                )
            }
        },
        DaemonError::AuditUnavailable => Public::Unavailable(
            "reads are refused while the audit trail cannot be written; see the daemon's log"
                .into(),
        ),
        DaemonError::ShuttingDown => {
            Public::Unavailable("agentkeysd is shutting down; retry once it is back".into())
        }
        DaemonError::Denied(m) => {
            tracing::info!(method, error = %m, "denied");
            Public::Denied(m)
        }
        DaemonError::NotFound(m) => Public::NotFound(m),
        DaemonError::Expired(m) => Public::Expired(m),
        DaemonError::Consumed(m) => Public::AlreadyConsumed(m),
        DaemonError::Locked(m) => Public::Locked(m),
        DaemonError::Busy(m) => Public::Unavailable(m),
        DaemonError::Unavailable(m) => {
            tracing::warn!(method, error = %m, "unavailable");
            Public::Unavailable(m)
        }
        DaemonError::Vault(_)
        | DaemonError::CallerUnknown(_)
        | DaemonError::Join(_)
        | DaemonError::Approval(_) => {
            tracing::error!(method, error = %chain, "internal failure");
            Public::Internal("internal error; see the daemon's log".into())
        }
    }
}

/// `err: cause: cause…`, for the log.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_failures_map_to_the_public_set() {
        assert!(matches!(
            to_public("t", AuthzError::NotRoot { owner: 7 }.into()),
            Public::Denied(_)
        ));
        assert!(matches!(
            to_public("t", AuthzError::BadName("X".into()).into()),
            Public::InvalidArgument(_)
        ));
        assert!(matches!(
            to_public("t", DaemonError::ShuttingDown),
            Public::Unavailable(_)
        ));
        let internal = to_public("t", DaemonError::CallerUnknown("detail-xyz".into()));
        assert!(matches!(&internal, Public::Internal(m) if !m.contains("detail-xyz")));
    }
}
