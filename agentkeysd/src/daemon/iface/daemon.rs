//! `dev.agentkeys.Daemon1`: the daemon's own properties and what it sees of its caller.

use std::sync::{Arc, OnceLock};

use zbus::interface;
use zbus::message::Header;

use crate::api::Error;
use crate::api::dict::{Dict, DictBuilder};
use crate::api::names::{
    IFACE_AGENTS, IFACE_APPROVALS, IFACE_AUDIT, IFACE_CREDENTIALS, IFACE_DAEMON, MAX_SECRET_LEN,
};
use crate::sandbox::probe;
use crate::vault::SecretMemoryPolicy;

use super::super::errors::{DaemonError, to_public};
use super::super::state::Shared;

#[derive(Debug)]
pub struct Daemon {
    pub shared: Arc<Shared>,
}

#[interface(name = "dev.agentkeys.Daemon1")]
impl Daemon {
    /// What the daemon sees of the caller, from the bus: `uid`, `pid`, `user`.
    async fn who_am_i(&self, #[zbus(header)] hdr: Header<'_>) -> Result<Dict, Error> {
        self.do_who_am_i(&hdr)
            .await
            .map_err(|e| to_public("WhoAmI", e))
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn secret_memory(&self) -> String {
        self.shared.vault.kind().as_str().to_owned()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn features(&self) -> Dict {
        let policy = match self.shared.config.vault.secret_memory {
            SecretMemoryPolicy::Prefer => "prefer",
            SecretMemoryPolicy::Require => "require",
            SecretMemoryPolicy::Mlock => "mlock",
        };
        let ifaces: Vec<String> = [
            IFACE_DAEMON,
            IFACE_CREDENTIALS,
            IFACE_AGENTS,
            IFACE_AUDIT,
            IFACE_APPROVALS,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        DictBuilder::new()
            .str("secret_memory_policy", policy)
            .str("store", "sqlite")
            .strs("interfaces", &ifaces)
            .u32("max_secret_bytes", MAX_SECRET_LEN as u32)
            .bool("allow_tracer", self.shared.config.daemon.allow_tracer)
            .str(
                "approvals_authenticate",
                self.shared.config.approvals.authenticate.as_str(),
            )
            .u32("session_ttl_s", self.shared.config.approvals.session_ttl_s)
            .u32("landlock_abi", kernel().landlock_abi)
            .bool("seccomp_filter", kernel().seccomp_filter)
            .build()
    }
}

/// What the kernel offers the runner, as the daemon sees it: under a unit's own
/// `SystemCallFilter=` that can differ from what a shell sees, and the runner inherits
/// the daemon's view. Probed once (two cheap questions to the kernel, no fork).
#[derive(Debug, Clone, Copy)]
struct KernelFacts {
    /// Highest Landlock ABI, 0 when Landlock cannot be used.
    landlock_abi: u32,
    /// Seccomp filter mode with the actions the runner uses.
    seccomp_filter: bool,
}

fn kernel() -> KernelFacts {
    static FACTS: OnceLock<KernelFacts> = OnceLock::new();
    *FACTS.get_or_init(|| KernelFacts {
        landlock_abi: probe::landlock().abi().unwrap_or(0),
        seccomp_filter: probe::seccomp().filter.is_ok(),
    })
}

impl Daemon {
    async fn do_who_am_i(&self, hdr: &Header<'_>) -> Result<Dict, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.caller(hdr).await?;
        let user = super::user_name(caller.uid).unwrap_or_default();
        let mut out = DictBuilder::new()
            .u32("uid", caller.uid)
            .opt_u32("pid", caller.pid)
            .str("user", user);
        // On a connection authenticated as an agent: who the agent is (never its session id).
        if let Some(b) = self.shared.binding(hdr) {
            let session = b.session.clone();
            let found = self
                .shared
                .with_store(move |s| Ok(s.session(&session)?))
                .await?;
            out = out
                .str("agent_id", &found.agent.id)
                .str("agent_name", &found.agent.name)
                .u32("agent_owner", found.agent.owner_uid)
                .strs("scope", &found.agent.scope)
                .str("agent_state", found.agent.state.as_str())
                .i64("session_expires", found.session.expires_at);
        }
        Ok(out.build())
    }
}
