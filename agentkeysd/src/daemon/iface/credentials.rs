//! `dev.agentkeys.Credentials1`: store, read, list and delete an owner's credentials.

use std::os::fd::AsFd;
use std::sync::Arc;

use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use crate::api::Error;
use crate::api::dict::{self, Dict, DictBuilder};
use crate::api::names::{valid_env_var, valid_name};
use crate::store::{AgentRead, CredentialClass, CredentialMeta, GrantMode, GrantTerms, PutOptions};
use crate::vault;

use super::super::authz::AuthzError;
use super::super::errors::{DaemonError, to_public};
use super::super::pairing::Binding;
use super::super::state::{Shared, blocking};
use super::{actor, now, owner_for, target};

#[derive(Debug)]
pub struct Credentials {
    pub shared: Arc<Shared>,
}

const STORE_OPTIONS: &[&str] = &["env", "expires", "replace", "class"];
const GRANT_OPTIONS: &[&str] = &["mode", "expires", "until_logout"];

#[interface(name = "dev.agentkeys.Credentials1")]
impl Credentials {
    /// Stores the secret in `secret_fd` (a sealed memfd) under `name`.
    async fn store(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        name: &str,
        secret_fd: zbus::OwnedFd,
        options: Dict,
    ) -> Result<(), Error> {
        self.do_store(&hdr, name, secret_fd, options)
            .await
            .map_err(|e| to_public("Store", e))
    }

    /// Returns a sealed memfd holding the secret stored under `name`. On a connection
    /// authenticated as an agent, this is the agent's read: its grants decide.
    async fn read(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        name: &str,
    ) -> Result<zbus::OwnedFd, Error> {
        match self.shared.binding(&hdr) {
            Some(binding) => self.do_agent_read(&hdr, &emitter, binding, name).await,
            None => self.do_read(&hdr, name).await,
        }
        .map_err(|e| to_public("Read", e))
    }

    /// Lets an agent read a credential (options `mode`: auto | confirm | once, `expires`).
    async fn grant(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        agent: &str,
        credential: &str,
        options: Dict,
    ) -> Result<(), Error> {
        self.do_grant(&hdr, agent, credential, options)
            .await
            .map_err(|e| to_public("Grant", e))
    }

    /// Removes an agent's grant of a credential.
    async fn ungrant(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        agent: &str,
        credential: &str,
    ) -> Result<(), Error> {
        self.do_ungrant(&hdr, agent, credential)
            .await
            .map_err(|e| to_public("Ungrant", e))
    }

    /// Metadata of the caller's own credentials.
    async fn list(&self, #[zbus(header)] hdr: Header<'_>) -> Result<Vec<Dict>, Error> {
        self.do_list(&hdr, None)
            .await
            .map_err(|e| to_public("List", e))
    }

    /// Metadata of `owner`'s credentials (root, or the owner itself).
    async fn list_for(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        owner: u32,
    ) -> Result<Vec<Dict>, Error> {
        self.do_list(&hdr, Some(owner))
            .await
            .map_err(|e| to_public("ListFor", e))
    }

    /// Deletes the credential `name` (and every grant of it).
    async fn delete(&self, #[zbus(header)] hdr: Header<'_>, name: &str) -> Result<(), Error> {
        self.do_delete(&hdr, name)
            .await
            .map_err(|e| to_public("Delete", e))
    }
}

impl Credentials {
    async fn do_store(
        &self,
        hdr: &Header<'_>,
        name: &str,
        secret_fd: zbus::OwnedFd,
        options: Dict,
    ) -> Result<(), DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let (owner, name) = target(&self.shared, &caller, "credential.store", name).await?;
        dict::check_keys(&options, STORE_OPTIONS)?;
        let env_var = match dict::get_str(&options, "env")? {
            Some(v) if valid_env_var(&v) => v,
            Some(v) => {
                return Err(DaemonError::Invalid(format!(
                    "'{v}' is not a valid environment variable name: use A-Z, 0-9 and _, not starting with a digit"
                )));
            }
            None => self.shared.services.default_env(name),
        };
        let expires_at = dict::get_i64(&options, "expires")?;
        if expires_at.is_some_and(|t| t <= now()) {
            return Err(DaemonError::Invalid(
                "the expiry time is in the past".into(),
            ));
        }
        let replace = dict::get_bool(&options, "replace")?.unwrap_or(false);
        let class = match dict::get_str(&options, "class")? {
            None => None,
            Some(c) => Some(CredentialClass::parse(&c).ok_or_else(|| {
                DaemonError::Invalid(format!("unknown protection class '{c}': use host or login"))
            })?),
        };
        // Read straight into secret memory; the fd must be a sealed memfd, so this never blocks.
        let secret = vault::read_sealed_memfd(&self.shared.vault, secret_fd.as_fd())?;
        drop(secret_fd);
        let opts = PutOptions {
            env_var,
            expires_at,
            replace,
            class,
        };
        let actor = actor(&caller);
        let name = name.to_owned();
        let outcome = blocking(&self.shared, move |store| {
            Ok(store.put_credential(&actor, owner, &name, &secret, &opts)?)
        })
        .await?;
        tracing::info!(uid = caller.uid, owner, outcome = ?outcome_label(&outcome), "credential stored");
        Ok(())
    }

    async fn do_read(&self, hdr: &Header<'_>, name: &str) -> Result<zbus::OwnedFd, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.caller(hdr).await?;
        let (owner, name) = target(&self.shared, &caller, "credential.read", name).await?;
        // A read attempt is the moment to find out whether the trail is writable again.
        self.shared.require_audit().await?;
        // Inline when the store is free: the read queues its audit row (the flusher writes
        // it right after), and a hop to another thread would cost more than the work.
        let (actor, name) = (actor(&caller), name.to_owned());
        let (_meta, secret) = self
            .shared
            .with_store(move |store| Ok(store.read_credential(&actor, owner, &name)?))
            .await?;
        self.shared.audit_queued();
        let fd = vault::sealed_memfd_from_secret(&secret)?;
        drop(secret);
        Ok(zbus::OwnedFd::from(fd))
    }

    /// An agent's read: the store checks session, revocation, scope and grant on every
    /// call (so a revocation takes effect on the very next read); a `confirm` grant asks
    /// the owner first.
    async fn do_agent_read(
        &self,
        hdr: &Header<'_>,
        emitter: &SignalEmitter<'_>,
        binding: Binding,
        name: &str,
    ) -> Result<zbus::OwnedFd, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.caller(hdr).await?;
        if !valid_name(name) {
            return Err(AuthzError::BadName(name.to_owned()).into());
        }
        self.shared.require_audit().await?;
        let mut confirmed = false;
        loop {
            let (who, session, cred) = (actor(&caller), binding.session.clone(), name.to_owned());
            let read = self
                .shared
                .with_store(move |s| Ok(s.agent_read(&who, &session, &cred, confirmed)?))
                .await?;
            match read {
                AgentRead::Served(_meta, secret) => {
                    self.shared.audit_queued();
                    let fd = vault::sealed_memfd_from_secret(&secret)?;
                    drop(secret);
                    return Ok(zbus::OwnedFd::from(fd));
                }
                AgentRead::NeedsConfirmation { .. } if confirmed => {
                    return Err(DaemonError::Approval(
                        "a confirmed read asked for confirmation again".into(),
                    ));
                }
                AgentRead::NeedsConfirmation { agent_id, .. } => {
                    if !self.shared.pairing.take_release(&agent_id, name) {
                        let sender = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
                        super::approvals::confirm_release(
                            &self.shared,
                            Some(emitter),
                            &caller,
                            sender,
                            &binding,
                            name,
                        )
                        .await?;
                    }
                    confirmed = true;
                }
            }
        }
    }

    async fn do_grant(
        &self,
        hdr: &Header<'_>,
        agent: &str,
        credential: &str,
        options: Dict,
    ) -> Result<(), DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let (owner, agent) = target(&self.shared, &caller, "grant.add", agent).await?;
        if !valid_name(credential) {
            return Err(AuthzError::BadName(credential.to_owned()).into());
        }
        dict::check_keys(&options, GRANT_OPTIONS)?;
        let mode = match dict::get_str(&options, "mode")? {
            None => GrantMode::Auto,
            Some(m) => GrantMode::parse(&m).ok_or_else(|| {
                DaemonError::Invalid(format!(
                    "unknown grant mode '{m}': use auto, confirm or once"
                ))
            })?,
        };
        let expires_at = dict::get_i64(&options, "expires")?;
        if expires_at.is_some_and(|t| t <= now()) {
            return Err(DaemonError::Invalid(
                "the expiry time is in the past".into(),
            ));
        }
        let until_logout = dict::get_bool(&options, "until_logout")?.unwrap_or(false);
        // Held across the store call: the owner's last logout cannot slip in between the
        // check and the insert (it would miss this grant, which would then outlive it).
        let _turn = if until_logout {
            let turn = self.shared.logins.turn(owner).await;
            if self.shared.logins.count(&turn) == 0 {
                return Err(DaemonError::Invalid(format!(
                    "cannot make a session-bound grant: uid {owner} has no login session \
                     (a session-bound grant ends at the last logout, so it needs one); \
                     log in first (through a PAM login with pam_agentkeys), or grant \
                     without --until-logout"
                )));
            }
            Some(turn)
        } else {
            None
        };
        let actor = actor(&caller);
        let (agent, credential) = (agent.to_owned(), credential.to_owned());
        blocking(&self.shared, move |store| {
            let terms = GrantTerms {
                mode,
                expires_at,
                until_logout,
            };
            Ok(store.grant_with(&actor, owner, &agent, &credential, terms)?)
        })
        .await?;
        Ok(())
    }

    async fn do_ungrant(
        &self,
        hdr: &Header<'_>,
        agent: &str,
        credential: &str,
    ) -> Result<(), DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let (owner, agent) = target(&self.shared, &caller, "grant.remove", agent).await?;
        if !valid_name(credential) {
            return Err(AuthzError::BadName(credential.to_owned()).into());
        }
        let actor = actor(&caller);
        let (agent, credential) = (agent.to_owned(), credential.to_owned());
        let agent_id = blocking(&self.shared, move |store| {
            store.ungrant(&actor, owner, &agent, &credential)?;
            Ok(store.resolve_agent(owner, &agent)?)
        })
        .await?;
        // A run may hold the key in its memory already and cannot be un-keyed in part:
        // withdrawing a grant ends the agent's runs like a revocation does.
        let killed = self
            .shared
            .runs
            .kill_agent(&agent_id, "a grant of the agent was withdrawn")
            .await;
        if killed > 0 {
            tracing::info!(agent = %agent_id, runs_killed = killed, "grant withdrawn: runs ended");
        }
        Ok(())
    }

    async fn do_list(
        &self,
        hdr: &Header<'_>,
        owner: Option<u32>,
    ) -> Result<Vec<Dict>, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let owner = owner_for(&self.shared, &caller, "credential.list", "", owner).await?;
        let list = self
            .shared
            .with_store(move |store| Ok(store.list_credentials(owner)?))
            .await?;
        Ok(list.iter().map(meta_dict).collect())
    }

    async fn do_delete(&self, hdr: &Header<'_>, name: &str) -> Result<(), DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let (owner, name) = target(&self.shared, &caller, "credential.delete", name).await?;
        let actor = actor(&caller);
        let name = name.to_owned();
        blocking(&self.shared, move |store| {
            Ok(store.delete_credential(&actor, owner, &name)?)
        })
        .await?;
        Ok(())
    }
}

fn outcome_label(o: &crate::store::PutOutcome) -> &'static str {
    match o {
        crate::store::PutOutcome::Created(_) => "created",
        crate::store::PutOutcome::Replaced(_) => "replaced",
    }
}

/// The public record of a credential: metadata only.
pub fn meta_dict(m: &CredentialMeta) -> Dict {
    DictBuilder::new()
        .str("name", &m.name)
        .u32("owner", m.owner_uid)
        .str("env", &m.env_var)
        .str("last4", &m.last4)
        .u32("version", m.version)
        .i64("created", m.created_at)
        .i64("updated", m.updated_at)
        .opt_i64("expires", m.expires_at)
        .bool("single_use", m.single_use)
        .str("class", &m.class)
        .build()
}
