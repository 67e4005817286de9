//! `dev.agentkeys.Agents1`: agent identities of an owner — create, list, show, link
//! aliases and e-mail addresses, resolve an identity, revoke, tear down.

use std::sync::Arc;

use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use crate::api::Error;
use crate::api::dict::{self, Dict, DictBuilder};
use crate::api::names::{MAX_TEXT, split_owner, valid_name};
use crate::approvals::verify_session_proof;
use crate::store::{
    AgentOptions, AgentRecord, AgentSession, AgentState, AuditEntry, LinkKind, Outcome,
    is_session_id,
};

use super::super::authz::{AuthzError, Caller};
use super::super::errors::{DaemonError, to_public};
use super::super::pairing::Binding;
use super::super::state::{Shared, blocking};
use super::{actor, owner_for, target};

#[derive(Debug)]
pub struct Agents {
    pub shared: Arc<Shared>,
}

const CREATE_OPTIONS: &[&str] = &["scope", "read_only"];

#[interface(name = "dev.agentkeys.Agents1")]
impl Agents {
    /// Creates an agent identity called `name`; returns its id (`agt_…`).
    async fn create(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        name: &str,
        options: Dict,
    ) -> Result<String, Error> {
        self.do_create(&hdr, name, options)
            .await
            .map_err(|e| to_public("Create", e))
    }

    async fn list(&self, #[zbus(header)] hdr: Header<'_>) -> Result<Vec<Dict>, Error> {
        self.do_list(&hdr, None)
            .await
            .map_err(|e| to_public("List", e))
    }

    async fn list_for(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        owner: u32,
    ) -> Result<Vec<Dict>, Error> {
        self.do_list(&hdr, Some(owner))
            .await
            .map_err(|e| to_public("ListFor", e))
    }

    /// One agent by id or name.
    async fn get(&self, #[zbus(header)] hdr: Header<'_>, agent: &str) -> Result<Dict, Error> {
        self.do_get(&hdr, agent)
            .await
            .map_err(|e| to_public("Get", e))
    }

    /// Links an alias (a name) or an e-mail address to the agent, for `Resolve`.
    async fn link(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        agent: &str,
        kind: &str,
        value: &str,
    ) -> Result<(), Error> {
        self.do_link(&hdr, agent, kind, value)
            .await
            .map_err(|e| to_public("Link", e))
    }

    /// The id of the caller's agent known by `identity`: an id, name, alias or e-mail.
    async fn resolve(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        identity: &str,
    ) -> Result<String, Error> {
        self.do_resolve(&hdr, identity)
            .await
            .map_err(|e| to_public("Resolve", e))
    }

    /// Revokes the agent: from now on it gets nothing.
    async fn revoke(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        agent: &str,
    ) -> Result<(), Error> {
        let id = self
            .do_revoke(&hdr, agent, false)
            .await
            .map_err(|e| to_public("Revoke", e))?;
        emit_revoked(&emitter, &id).await;
        Ok(())
    }

    /// Revokes the agent and deletes its grants and links; the record stays, revoked.
    async fn teardown(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        agent: &str,
    ) -> Result<(), Error> {
        let id = self
            .do_revoke(&hdr, agent, true)
            .await
            .map_err(|e| to_public("Teardown", e))?;
        emit_revoked(&emitter, &id).await;
        Ok(())
    }

    /// Binds this connection to a paired agent's session (`signature`: the agent key's
    /// proof over the session id and this connection's unique name).
    async fn authenticate(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        session: &str,
        signature: Vec<u8>,
    ) -> Result<Dict, Error> {
        self.do_authenticate(&hdr, session, &signature)
            .await
            .map_err(|e| to_public("Authenticate", e))
    }

    /// Reads and denials per agent and credential.
    async fn usage(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        agent: &str,
    ) -> Result<Vec<Dict>, Error> {
        self.do_usage(&hdr, agent)
            .await
            .map_err(|e| to_public("Usage", e))
    }

    /// Emitted when an agent is revoked or torn down.
    #[zbus(signal)]
    async fn agent_revoked(emitter: &SignalEmitter<'_>, agent_id: &str) -> zbus::Result<()>;
}

async fn emit_revoked(emitter: &SignalEmitter<'_>, id: &str) {
    if let Err(e) = Agents::agent_revoked(emitter, id).await {
        tracing::warn!(agent = id, error = %e, "could not emit AgentRevoked");
    }
}

impl Agents {
    async fn do_authenticate(
        &self,
        hdr: &Header<'_>,
        session: &str,
        signature: &[u8],
    ) -> Result<Dict, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.caller(hdr).await?;
        let sender = hdr
            .sender()
            .map(|s| s.to_string())
            .ok_or_else(|| DaemonError::CallerUnknown("message has no sender".into()))?;
        let refused = || {
            DaemonError::Denied("session authentication failed: unknown session, or a signature that does not match it".into())
        };
        if !is_session_id(session) {
            return Err(DaemonError::Invalid(format!(
                "'{}' is not a session id (ses_…)",
                session.chars().take(64).collect::<String>()
            )));
        }
        let id = session.to_owned();
        let found = self
            .shared
            .with_store(move |s| Ok(s.session(&id).ok()))
            .await?;
        let Some(AgentSession {
            session: rec,
            agent,
        }) = found
        else {
            return Err(refused());
        };
        if rec.uid != caller.uid || !verify_session_proof(&rec.pubkey, &rec.id, &sender, signature)
        {
            self.deny_session(&caller, &agent, "bad session proof or wrong uid")
                .await;
            return Err(refused());
        }
        if agent.state == AgentState::Revoked {
            self.deny_session(&caller, &agent, "agent revoked").await;
            return Err(DaemonError::Store(crate::store::StoreError::Revoked {
                agent: agent.name.clone(),
                at: agent.revoked_at,
                by: agent.revoked_by,
            }));
        }
        if let Some(why) = &rec.ended_why {
            self.deny_session(&caller, &agent, "session ended").await;
            return Err(DaemonError::Denied(format!(
                "the session of agent '{}' has ended ({why}); pair again",
                agent.name
            )));
        }
        if rec.expires_at <= super::now() {
            self.deny_session(&caller, &agent, "session expired").await;
            return Err(DaemonError::Expired(format!(
                "the session of agent '{}' expired at {}; pair again (agentkeysctl pair --recover {})",
                agent.name,
                crate::store::utc(rec.expires_at),
                agent.name
            )));
        }
        if !self.shared.pairing.bind(
            &sender,
            Binding {
                session: rec.id.clone(),
                agent_id: agent.id.clone(),
                agent_name: agent.name.clone(),
                owner: agent.owner_uid,
            },
        ) {
            return Err(DaemonError::Busy(
                "this connection is already bound to another agent session, or too many connections are; use a new connection".into(),
            ));
        }
        Ok(DictBuilder::new()
            .str("agent_id", &agent.id)
            .str("name", &agent.name)
            .u32("owner", agent.owner_uid)
            .strs("scope", &agent.scope)
            .i64("session_expires", rec.expires_at)
            .build())
    }

    /// Records a refused `Authenticate` (a revoked agent trying again shows in the trail).
    async fn deny_session(&self, caller: &Caller, agent: &AgentRecord, why: &'static str) {
        let (actor, subject, owner) = (actor(caller), agent.id.clone(), agent.owner_uid);
        let recorded = self
            .shared
            .with_store(move |s| {
                Ok(s.audit_denial(AuditEntry {
                    actor: &actor,
                    owner_uid: Some(owner),
                    action: "agent.authenticate",
                    subject: &subject,
                    outcome: Outcome::Denied,
                    detail: why,
                })?)
            })
            .await;
        if let Err(e) = recorded {
            tracing::error!(error = %super::super::errors::chain(&e), "could not audit a refused authentication");
        }
    }

    async fn do_usage(&self, hdr: &Header<'_>, agent: &str) -> Result<Vec<Dict>, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let (owner, only) = if agent.is_empty() {
            (caller.uid, None)
        } else if let Some(o) = agent.strip_suffix(':').and_then(|o| o.parse::<u32>().ok()) {
            (
                owner_for(&self.shared, &caller, "agent.usage", agent, Some(o)).await?,
                None,
            )
        } else {
            let (o, a) = target(&self.shared, &caller, "agent.usage", agent).await?;
            (o, Some(a.to_owned()))
        };
        let rows = self
            .shared
            .with_store(move |s| Ok(s.usage(owner, only.as_deref())?))
            .await?;
        Ok(rows
            .iter()
            .map(|u| {
                DictBuilder::new()
                    .str("agent_id", &u.agent_id)
                    .str("agent", &u.agent_name)
                    .str("credential", &u.credential)
                    .u64("reads", u.reads)
                    .u64("denials", u.denials)
                    .opt_i64("last_use", u.last_use)
                    .build()
            })
            .collect())
    }

    async fn do_create(
        &self,
        hdr: &Header<'_>,
        name: &str,
        options: Dict,
    ) -> Result<String, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let (owner, name) = target(&self.shared, &caller, "agent.create", name).await?;
        dict::check_keys(&options, CREATE_OPTIONS)?;
        let scope = dict::get_strs(&options, "scope")?.unwrap_or_default();
        if let Some(bad) = scope.iter().find(|s| !valid_name(s)) {
            return Err(AuthzError::BadName(bad.clone()).into());
        }
        let opts = AgentOptions {
            scope,
            read_only: dict::get_bool(&options, "read_only")?.unwrap_or(false),
        };
        let actor = actor(&caller);
        let name = name.to_owned();
        let rec = blocking(&self.shared, move |store| {
            Ok(store.create_agent(&actor, owner, &name, &opts)?)
        })
        .await?;
        tracing::info!(uid = caller.uid, owner, agent = %rec.id, "agent created");
        Ok(rec.id)
    }

    async fn do_list(
        &self,
        hdr: &Header<'_>,
        owner: Option<u32>,
    ) -> Result<Vec<Dict>, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let owner = owner_for(&self.shared, &caller, "agent.list", "", owner).await?;
        let list = self
            .shared
            .with_store(move |store| Ok(store.list_agents(owner)?))
            .await?;
        Ok(list.iter().map(agent_dict).collect())
    }

    async fn do_get(&self, hdr: &Header<'_>, agent: &str) -> Result<Dict, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let (owner, agent) = target(&self.shared, &caller, "agent.get", agent).await?;
        let agent = agent.to_owned();
        let rec = self
            .shared
            .with_store(move |store| Ok(store.get_agent(owner, &agent)?))
            .await?;
        Ok(agent_dict(&rec))
    }

    async fn do_link(
        &self,
        hdr: &Header<'_>,
        agent: &str,
        kind: &str,
        value: &str,
    ) -> Result<(), DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let (owner, agent) = target(&self.shared, &caller, "agent.link", agent).await?;
        let kind = match kind {
            "alias" if valid_name(value) => LinkKind::Alias,
            "alias" => return Err(AuthzError::BadName(value.to_owned()).into()),
            "email" if valid_email(value) => LinkKind::Email,
            "email" => {
                return Err(DaemonError::Invalid(format!(
                    "'{value}' is not an e-mail address (one '@', no spaces, at most {MAX_TEXT} characters)"
                )));
            }
            other => {
                return Err(DaemonError::Invalid(format!(
                    "unknown link kind '{other}': use 'alias' or 'email'"
                )));
            }
        };
        let actor = actor(&caller);
        let (agent, value) = (agent.to_owned(), value.to_owned());
        blocking(&self.shared, move |store| {
            Ok(store.link_agent(&actor, owner, &agent, kind, &value)?)
        })
        .await?;
        Ok(())
    }

    async fn do_resolve(&self, hdr: &Header<'_>, identity: &str) -> Result<String, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let (owner, ident) = split_owner(identity)
            .filter(|(_, i)| valid_name(i) || valid_email(i))
            .ok_or_else(|| AuthzError::BadName(identity.to_owned()))?;
        let owner = owner_for(&self.shared, &caller, "agent.resolve", identity, owner).await?;
        let ident = ident.to_owned();
        self.shared
            .with_store(move |store| Ok(store.resolve_agent(owner, &ident)?))
            .await
    }

    async fn do_revoke(
        &self,
        hdr: &Header<'_>,
        agent: &str,
        teardown: bool,
    ) -> Result<String, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let action = if teardown {
            "agent.teardown"
        } else {
            "agent.revoke"
        };
        let (owner, agent) = target(&self.shared, &caller, action, agent).await?;
        let actor = actor(&caller);
        let agent = agent.to_owned();
        let rec = blocking(&self.shared, move |store| {
            Ok(if teardown {
                store.teardown_agent(&actor, owner, &agent)?
            } else {
                store.revoke_agent(&actor, owner, &agent)?
            })
        })
        .await?;
        // The revocation reaches running agents: every process of their runs is gone
        // before the call returns.
        let killed = self.shared.runs.kill_agent(&rec.id, "agent revoked").await;
        tracing::info!(uid = caller.uid, owner, agent = %rec.id, teardown, runs_killed = killed, "agent revoked");
        Ok(rec.id)
    }
}

/// A deliberately small check: one '@' with something on both sides, no whitespace or
/// control characters, bounded length. Deliverability is not our business.
pub fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= MAX_TEXT
        && !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':')
}

/// The public record of an agent.
pub fn agent_dict(a: &AgentRecord) -> Dict {
    DictBuilder::new()
        .str("id", &a.id)
        .str("name", &a.name)
        .u32("owner", a.owner_uid)
        .str(
            "state",
            match a.state {
                AgentState::Active => "active",
                AgentState::Revoked => "revoked",
            },
        )
        .strs("scope", &a.scope)
        .bool("read_only", a.read_only)
        .i64("created", a.created_at)
        .opt_i64("revoked_at", a.revoked_at)
        .opt_u32("revoked_by", a.revoked_by)
        .str(
            "fingerprint",
            a.pubkey
                .as_ref()
                .map(crate::approvals::fingerprint)
                .unwrap_or_default(),
        )
        .strs("aliases", &a.aliases)
        .strs("emails", &a.emails)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_check_is_small_and_strict_about_shape() {
        assert!(valid_email("bot@example.org"));
        assert!(valid_email("a+b@x"));
        for bad in ["", "@x", "x@", "a@b@c", "a b@x", "a@x\n", "1000:a@x"] {
            assert!(!valid_email(bad), "{bad:?}");
        }
        assert!(!valid_email(&format!("{}@x", "a".repeat(300))));
    }
}
