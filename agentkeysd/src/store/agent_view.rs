//! What an agent may see of its own grants: the credentials it may read now, as metadata
//! (MCP `list_credentials`). The same session checks as a read, in the same order.

use super::agents::{AgentRecord, AgentState, revoked_error};
use super::error::StoreError;
use super::grants::GrantMode;
use super::sessions::AgentSession;
use super::{Store, now_s};

/// A credential an agent may read: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCredential {
    pub name: String,
    pub env_var: String,
    pub mode: GrantMode,
    /// The earlier of the grant's and the credential's expiry (Unix seconds).
    pub expires_at: Option<i64>,
}

impl Store {
    /// The agent behind session `session` and the credentials it may read: in its scope,
    /// granted, neither expired. Refused like a read when the agent is revoked or the
    /// session ended or expired (not audited: no secret is involved).
    pub fn agent_credentials(
        &self,
        session: &str,
    ) -> Result<(AgentRecord, Vec<AgentCredential>), StoreError> {
        let AgentSession { session, agent } = self.session(session)?;
        if agent.state == AgentState::Revoked {
            return Err(revoked_error(&agent));
        }
        if let Some(why) = &session.ended_why {
            return Err(StoreError::SessionEnded {
                agent: agent.name.clone(),
                why: why.clone(),
            });
        }
        let now = now_s();
        if session.expires_at <= now {
            return Err(StoreError::SessionExpired {
                agent: agent.name.clone(),
                at: session.expires_at,
            });
        }
        let metas = self.list_credentials(agent.owner_uid)?;
        let mut out = Vec::new();
        for grant in self.grants_of(agent.owner_uid, &agent.id)? {
            if !agent.scope.contains(&grant.credential)
                || grant.expires_at.is_some_and(|t| t <= now)
            {
                continue;
            }
            let Some(meta) = metas.iter().find(|m| m.name == grant.credential) else {
                continue;
            };
            if meta.expires_at.is_some_and(|t| t <= now) {
                continue;
            }
            let expires_at = match (grant.expires_at, meta.expires_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            out.push(AgentCredential {
                name: grant.credential,
                env_var: meta.env_var.clone(),
                mode: grant.mode,
                expires_at,
            });
        }
        Ok((agent, out))
    }
}
