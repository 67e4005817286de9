//! The client side of acting as a paired agent: prove, on one connection, that this process
//! holds the key its session was issued to. After [`authenticate`] every call on that
//! connection is the agent's (reads go through its grants).

use super::dict::Dict;
use super::error::Error;
use super::proxies::AgentsProxy;
use crate::approvals::sign_session_proof;

/// Authenticates `conn` as the agent whose session is `session`, signing with the agent's
/// 32-byte Ed25519 `seed`. Returns what `Agents1.Authenticate` returns (`agent_id`, `name`,
/// `owner`, `scope`, `session_expires`).
pub async fn authenticate(
    conn: &zbus::Connection,
    session: &str,
    seed: &[u8; 32],
) -> Result<Dict, Error> {
    let unique = conn
        .unique_name()
        .ok_or_else(|| {
            Error::ZBus(zbus::Error::Failure(
                "the connection has no unique name".into(),
            ))
        })?
        .to_string();
    let signature = sign_session_proof(seed, session, &unique);
    AgentsProxy::new(conn)
        .await?
        .authenticate(session, &signature)
        .await
}
