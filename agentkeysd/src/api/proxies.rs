//! Client proxies for the daemon's interfaces. Signatures mirror DESIGN §3.1; the
//! committed introspection XML (`agentkeysd/dbus/dev.agentkeys.Daemon1.xml`) is tested
//! against what the daemon serves.

use std::collections::HashMap;

use zbus::{OwnedFd, Variant, proxy};

use super::dict::Dict;
use super::error::Error;

/// The daemon object: properties and caller introspection.
#[proxy(
    interface = "dev.agentkeys.Daemon1",
    default_service = "dev.agentkeys.Daemon1",
    default_path = "/dev/agentkeys/Daemon1"
)]
pub trait Daemon {
    /// What the daemon sees of the caller: `uid`, `pid`, `user`, `owner_of` (u).
    fn who_am_i(&self) -> Result<Dict, Error>;

    /// Daemon version (`CARGO_PKG_VERSION`).
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    /// `memfd_secret` or `mlock`: where decrypted secrets live.
    #[zbus(property)]
    fn secret_memory(&self) -> zbus::Result<String>;

    /// Feature flags and facts (`secret_memory_policy`, `store`, `interfaces`, …).
    #[zbus(property)]
    fn features(&self) -> zbus::Result<Dict>;
}

/// Credentials: store, read (as a sealed memfd), list, delete.
#[proxy(
    interface = "dev.agentkeys.Credentials1",
    default_service = "dev.agentkeys.Daemon1",
    default_path = "/dev/agentkeys/Daemon1"
)]
pub trait Credentials {
    /// Store `secret_fd` (a memfd sealed against write/shrink/grow, 1 B–64 KiB) as `name`.
    /// Options: `env` (s), `expires` (x, unix seconds), `replace` (b).
    fn store(
        &self,
        name: &str,
        secret_fd: zbus::Fd<'_>,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<(), Error>;

    /// A sealed memfd holding the secret.
    fn read(&self, name: &str) -> Result<OwnedFd, Error>;

    /// Metadata of the caller's credentials (never a secret).
    fn list(&self) -> Result<Vec<Dict>, Error>;

    /// Root only (or one's own uid): metadata of `owner`'s credentials.
    fn list_for(&self, owner: u32) -> Result<Vec<Dict>, Error>;

    fn delete(&self, name: &str) -> Result<(), Error>;
}

/// Agents: identities owned by an owner.
#[proxy(
    interface = "dev.agentkeys.Agents1",
    default_service = "dev.agentkeys.Daemon1",
    default_path = "/dev/agentkeys/Daemon1"
)]
pub trait Agents {
    /// Options: `scope` (as, credential names), `read_only` (b). Returns the agent id.
    fn create(&self, name: &str, options: HashMap<&str, Variant<'_>>) -> Result<String, Error>;
    fn list(&self) -> Result<Vec<Dict>, Error>;
    fn list_for(&self, owner: u32) -> Result<Vec<Dict>, Error>;
    fn get(&self, agent: &str) -> Result<Dict, Error>;
    /// `kind` is `alias` or `email`.
    fn link(&self, agent: &str, kind: &str, value: &str) -> Result<(), Error>;
    fn resolve(&self, identity: &str) -> Result<String, Error>;
    fn revoke(&self, agent: &str) -> Result<(), Error>;
    fn teardown(&self, agent: &str) -> Result<(), Error>;

    #[zbus(signal)]
    fn agent_revoked(&self, agent_id: String) -> zbus::Result<()>;
}

/// The audit trail: a hash chain of every store, read, delete, denial and agent change.
#[proxy(
    interface = "dev.agentkeys.Audit1",
    default_service = "dev.agentkeys.Daemon1",
    default_path = "/dev/agentkeys/Daemon1"
)]
pub trait Audit {
    /// Options: `after` (x, sequence number), `limit` (u, ≤ 1000), `owner` (u, root: another
    /// owner's rows; absent for root: all rows).
    fn list(&self, options: HashMap<&str, Variant<'_>>) -> Result<Vec<Dict>, Error>;
    /// `ok` (b), `rows` (t), and when not ok: `seq` (x), `problem` (s), `message` (s).
    fn verify(&self) -> Result<Dict, Error>;
}
