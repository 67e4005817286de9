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
    /// Options: `env` (s), `expires` (x, unix seconds), `replace` (b), `class` (s: `host` |
    /// `login`; default `host`, a replace keeps the class). A `login`-class credential can
    /// be stored and read only while its owner has a session that `pam_agentkeys` unlocked
    /// (`Locked` otherwise).
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

    /// Lets `agent` (id, name, alias or e-mail; `UID:NAME` for root) read `credential`, and
    /// adds the credential to the agent's scope. Options: `mode` (s: `auto` | `confirm` |
    /// `once`, default `auto`), `expires` (x, unix seconds), `until_logout` (b: the grant
    /// ends at the owner's last logout or a daemon restart; `InvalidArgument` while the
    /// owner has no login session). Replaces an existing grant.
    fn grant(
        &self,
        agent: &str,
        credential: &str,
        options: HashMap<&str, Variant<'_>>,
    ) -> Result<(), Error>;

    /// Removes the agent's grant of `credential` (the scope keeps the name; reads are
    /// denied until it is granted again).
    fn ungrant(&self, agent: &str, credential: &str) -> Result<(), Error>;
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

    /// Makes this connection act as a paired agent: `session` is the id `Await` returned,
    /// `signature` the agent key's Ed25519 signature over
    /// [`crate::approvals::session_proof_input`] (session id and this connection's unique
    /// name). From then on, reads on this connection are the agent's reads (grants apply)
    /// and `WhoAmI` describes the agent. Returns `agent_id`, `name`, `owner` (u), `scope`
    /// (as), `session_expires` (x).
    fn authenticate(&self, session: &str, signature: &[u8]) -> Result<Dict, Error>;

    /// Per agent and credential: `agent_id`, `agent` (name), `credential`, `reads` (t),
    /// `denials` (t), `last_use` (x, unix seconds; absent if never). `agent` empty: every
    /// agent of the caller (root with `UID:` prefix: of that owner).
    fn usage(&self, agent: &str) -> Result<Vec<Dict>, Error>;

    #[zbus(signal)]
    fn agent_revoked(&self, agent_id: String) -> zbus::Result<()>;
}

/// Auth requests (DESIGN §4): a child opens one, the owner approves or denies it.
#[proxy(
    interface = "dev.agentkeys.Approvals1",
    default_service = "dev.agentkeys.Daemon1",
    default_path = "/dev/agentkeys/Daemon1"
)]
pub trait Approvals {
    /// Opens a request. `type` is `Pair`, `Recover`, `ScopeChange`, `HighValueRelease` or
    /// `KeyRotate`; `details_cbor` the canonical details
    /// ([`crate::approvals::encode`]); `child_pubkey` the child's Ed25519 key (32 bytes).
    /// Returns `id` (s, 32 hex), `pair_code` (s, `ABCD-EFGH`), `otp` (s, 6 digits),
    /// `created` (t), `expires` (t), `owner` (u), `host_key` (ay, the daemon's Ed25519 key
    /// that signs decisions).
    fn open(
        &self,
        request_type: &str,
        details_cbor: &[u8],
        child_pubkey: &[u8],
    ) -> Result<Dict, Error>;

    /// The caller's pending requests (root: everyone's), as [`Fetch`] describes them.
    fn pending(&self) -> Result<Vec<Dict>, Error>;

    /// The caller's pending request shown under `pair_code`: `id`, `type`, `pair_code`,
    /// `otp`, `created` (t), `expires` (t), `owner` (u), `requester_uid` (u),
    /// `requester_pid` (u, if known), `requester_exe` (s, if known), `fingerprint` (s,
    /// SHA256:… of the child key), and per type `name`, `scope` (as), `agent_id`,
    /// `agent_identity`, `credential`, `reason`. Unknown, expired and other owners'
    /// codes all answer the same `NotFound`.
    fn fetch(&self, pair_code: &str) -> Result<Dict, Error>;

    /// Approves a pending request of the caller's. `auth`: `password` (h, a sealed memfd
    /// holding the caller's login password) when the daemon asks for it (`Locked`).
    fn approve(&self, request_id: &str, auth: HashMap<&str, Variant<'_>>) -> Result<(), Error>;

    /// Denies a pending request of the caller's.
    fn deny(&self, request_id: &str) -> Result<(), Error>;

    /// Waits up to `timeout_s` (at most 300) for the decision on a request the caller
    /// opened. `state` (s): `pending` (timed out), `approved` (this call collected the
    /// approval: `signature` (ay), `approver` (u), `created` (t), `nonce` (ay), and per
    /// type `agent_id`, `name`, `session`, `session_expires` (x), `scope` (as)), `denied`,
    /// `expired`, or `consumed` (an earlier call collected it).
    #[zbus(name = "Await")]
    fn await_decision(&self, request_id: &str, timeout_s: u32) -> Result<Dict, Error>;

    /// A request for `owner` was opened: `id`, `type`, `owner` (u), `created`, `expires`
    /// (t). Deliberately no pair code, OTP, agent or scope (every connection on the bus
    /// sees signals): the owner's tool asks `Pending` for those.
    #[zbus(signal)]
    fn request_opened(&self, request: Dict) -> zbus::Result<()>;

    #[zbus(signal)]
    fn request_decided(&self, request_id: String, approved: bool) -> zbus::Result<()>;
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

/// Sandboxed runs (jobs): start a command in the hardened runner, watch it, stop it.
#[proxy(
    interface = "dev.agentkeys.Jobs1",
    default_service = "dev.agentkeys.Daemon1",
    default_path = "/dev/agentkeys/Daemon1"
)]
pub trait Jobs {
    /// Starts `argv` in the hardened runner; returns the run's id once the command runs.
    /// Options: `argv` (as), `agent` (s), `workspace` (s), `environment` (as NAME=value),
    /// `env` (as NAME=credential), `files` (as), `net` (s), `memory`/`pids`/`cpu_millis`/
    /// `timeout` (t), `stdin`/`stdout`/`stderr` (h), `tty` (b).
    fn run(&self, spec: HashMap<&str, Variant<'_>>) -> Result<String, Error>;

    /// The caller's runs (root: everyone's), live and recently ended.
    fn list(&self) -> Result<Vec<Dict>, Error>;

    /// One run: `state` (running | exited | killed | failed), `exit_code`, `signal`,
    /// `reason`, `step`/`error`, `pid`, `agent`, `net`, limits, times.
    fn get(&self, job: &str) -> Result<Dict, Error>;

    /// Kills every process of the run; returns once none is left.
    fn cancel(&self, job: &str) -> Result<(), Error>;

    /// Forwards a signal (INT, TERM, HUP, QUIT, USR1, USR2, WINCH, CONT, TSTP).
    fn signal(&self, job: &str, signal: i32) -> Result<(), Error>;

    #[zbus(signal)]
    fn job_state_changed(&self, job: &str, state: &str) -> zbus::Result<()>;
}
