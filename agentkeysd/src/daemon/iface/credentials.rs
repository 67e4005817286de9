//! `dev.agentkeys.Credentials1`: store, read, list and delete an owner's credentials.

use std::os::fd::AsFd;
use std::sync::Arc;

use zbus::interface;
use zbus::message::Header;

use crate::api::Error;
use crate::api::dict::{self, Dict, DictBuilder};
use crate::api::names::valid_env_var;
use crate::store::{CredentialMeta, PutOptions};
use crate::vault;

use super::super::authz::{self, Caller};
use super::super::errors::{DaemonError, to_public};
use super::super::state::{Shared, blocking};
use super::{actor, audited, now, owner_for};

#[derive(Debug)]
pub struct Credentials {
    pub shared: Arc<Shared>,
}

const STORE_OPTIONS: &[&str] = &["env", "expires", "replace"];

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

    /// Returns a sealed memfd holding the secret stored under `name`.
    async fn read(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        name: &str,
    ) -> Result<zbus::OwnedFd, Error> {
        self.do_read(&hdr, name)
            .await
            .map_err(|e| to_public("Read", e))
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
    async fn target<'a>(
        &self,
        caller: &Caller,
        action: &'static str,
        arg: &'a str,
    ) -> Result<(u32, &'a str), DaemonError> {
        audited(
            &self.shared,
            caller,
            action,
            arg,
            authz::target(caller, arg),
        )
        .await
    }

    async fn do_store(
        &self,
        hdr: &Header<'_>,
        name: &str,
        secret_fd: zbus::OwnedFd,
        options: Dict,
    ) -> Result<(), DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.caller(hdr).await?;
        let (owner, name) = self.target(&caller, "credential.store", name).await?;
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
        // Read straight into secret memory; the fd must be a sealed memfd, so this never blocks.
        let secret = vault::read_sealed_memfd(&self.shared.vault, secret_fd.as_fd())?;
        drop(secret_fd);
        let opts = PutOptions {
            env_var,
            expires_at,
            replace,
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
        let (owner, name) = self.target(&caller, "credential.read", name).await?;
        if self.shared.audit_failed() {
            // A read attempt is the moment to find out whether the trail is writable again.
            self.shared.flush_audit_now().await;
            if self.shared.audit_failed() {
                return Err(DaemonError::AuditUnavailable);
            }
        }
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

    async fn do_list(
        &self,
        hdr: &Header<'_>,
        owner: Option<u32>,
    ) -> Result<Vec<Dict>, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.caller(hdr).await?;
        let owner = owner_for(&self.shared, &caller, "credential.list", "", owner).await?;
        let list = self
            .shared
            .with_store(move |store| Ok(store.list_credentials(owner)?))
            .await?;
        Ok(list.iter().map(meta_dict).collect())
    }

    async fn do_delete(&self, hdr: &Header<'_>, name: &str) -> Result<(), DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.caller(hdr).await?;
        let (owner, name) = self.target(&caller, "credential.delete", name).await?;
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
