//! The MCP boundary's one error mapping (STYLE §11): a refused tool call becomes an MCP
//! tool error whose text is the public message — problem, then the fix — with the full
//! chain logged here; internals never reach the agent.

use rmcp::model::{CallToolResult, ContentBlock};

use crate::api::Error as Public;
use crate::daemon::errors::{DaemonError, to_public};
use crate::store::StoreError;

/// The tool error for `err` in `tool`, for the agent `agent` asking about `service`.
pub fn tool_error(tool: &str, agent: &str, service: &str, err: DaemonError) -> CallToolResult {
    let fix = fix_for(&err, agent, service);
    let public = to_public(tool, err);
    let (kind, message) = match &public {
        Public::Denied(m) => ("access denied", m.as_str()),
        Public::NotFound(m) => ("not found", m.as_str()),
        Public::Expired(m) => ("expired", m.as_str()),
        Public::AlreadyConsumed(m) => ("already used", m.as_str()),
        Public::InvalidArgument(m) => ("invalid argument", m.as_str()),
        Public::Locked(m) => ("locked", m.as_str()),
        Public::Unavailable(m) => ("unavailable", m.as_str()),
        Public::Internal(m) => ("internal error", m.as_str()),
        Public::ZBus(_) => ("internal error", "internal error; see the daemon's log"),
    };
    let text = match fix {
        Some(fix) => format!("error: {kind} — {message}\n  fix: {fix}"),
        None => format!("error: {kind} — {message}"),
    };
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// What the agent (or the human behind it) can do about `err`, where there is something.
fn fix_for(err: &DaemonError, agent: &str, service: &str) -> Option<String> {
    Some(match err {
        DaemonError::Store(StoreError::NotGranted { .. }) => format!(
            "call request_credential with service '{service}' and a reason, then ask the owner to approve it; \
             or the owner runs: agentkeysctl grant {agent} {service}"
        ),
        DaemonError::Store(StoreError::GrantExpired { .. }) => {
            format!("the owner grants it again: agentkeysctl grant {agent} {service}")
        }
        DaemonError::Store(StoreError::Revoked { .. }) => format!(
            "this agent can no longer read anything; the owner can pair it again: \
             agentkeysctl pair --recover {agent}, then agentkeysctl approve <code>"
        ),
        DaemonError::Store(StoreError::SessionEnded { .. } | StoreError::SessionExpired { .. }) => {
            "start the agent again (its session ended): agentkeysctl run …".to_owned()
        }
        DaemonError::Store(StoreError::NotFound { .. }) => format!(
            "call list_credentials for the names this agent may read; the owner stores a new one with agentkeysctl store {service}"
        ),
        DaemonError::Store(StoreError::Locked { .. }) => {
            "the owner logs in (its login key unlocks this credential), then retry".to_owned()
        }
        DaemonError::Denied(_) | DaemonError::Expired(_) => {
            "retry, and ask the owner to approve: agentkeysctl pending, then agentkeysctl approve <code>"
                .to_owned()
        }
        DaemonError::AuditUnavailable | DaemonError::ShuttingDown | DaemonError::Busy(_) => {
            "retry in a moment".to_owned()
        }
        _ => return None,
    })
}
