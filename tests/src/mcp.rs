//! An in-process daemon state for MCP tests and benches: a real store in a temp dir, real
//! secret memory, agents paired the way an approved `Pair` pairs them, each served by
//! `agentkeysd::mcp::serve` on its own unix socket. No bus: MCP needs none.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use agentkeysd::daemon::config::Config;
use agentkeysd::daemon::services::ServiceTable;
use agentkeysd::daemon::state::Shared;
use agentkeysd::mcp::{McpAgent, McpHandle, serve};
use agentkeysd::store::{Actor, Issue, PutOptions, Store};
use agentkeysd::vault::{SecretMemoryPolicy, Vault};
use tempfile::TempDir;

/// The owner every fixture credential and agent belongs to.
pub const OWNER: u32 = 1000;

/// The daemon's state, for tests: store, vault, config, flusher running.
#[derive(Debug)]
pub struct McpFixture {
    pub tmp: TempDir,
    pub shared: Arc<Shared>,
}

/// One served agent: its socket and handle.
#[derive(Debug)]
pub struct ServedAgent {
    pub agent: McpAgent,
    pub socket: PathBuf,
    pub handle: McpHandle,
}

fn root() -> Actor {
    Actor { uid: 0, pid: None }
}

impl McpFixture {
    /// A fresh store holding `credentials` (name, value) of [`OWNER`]. Call inside a tokio
    /// runtime (the audit flusher is spawned on it).
    pub fn new(credentials: &[(&str, &str)]) -> McpFixture {
        let tmp = tempfile::tempdir().unwrap();
        let vault = Vault::new(SecretMemoryPolicy::Prefer).unwrap();
        let mut store = Store::open(&tmp.path().join("state"), None, &vault).unwrap();
        let services = ServiceTable::builtin().unwrap();
        for (name, value) in credentials {
            let mut secret = vault.alloc(value.len()).unwrap();
            secret.expose_secret_mut().copy_from_slice(value.as_bytes());
            let opts = PutOptions {
                env_var: services.default_env(name),
                expires_at: None,
                replace: false,
                class: None,
            };
            store
                .put_credential(&root(), OWNER, name, &secret, &opts)
                .unwrap();
        }
        let host_public = agentkeysd::approvals::host_public_key(store.host_key()).unwrap();
        let shared = Arc::new(Shared::new(
            store,
            vault,
            Config::default(),
            services,
            host_public,
        ));
        shared.spawn_audit_flusher();
        McpFixture { tmp, shared }
    }

    /// Pairs agent `name` with `scope` (each existing credential in it gets an `auto`
    /// grant) for a process running as `uid`.
    pub async fn pair(&self, name: &str, scope: &[&str], uid: u32) -> McpAgent {
        let (name, scope): (String, Vec<String>) = (
            name.to_owned(),
            scope.iter().map(|s| (*s).to_owned()).collect(),
        );
        let paired = self
            .shared
            .with_store(move |s| {
                let key = agentkeysd::approvals::public_key_of(&[7u8; 32]);
                let issue = Issue {
                    pubkey: &key,
                    uid,
                    ttl_s: 4 * 3600,
                    request: "fixture",
                };
                Ok(s.pair_agent(&root(), OWNER, &name, &scope, &issue)?)
            })
            .await
            .unwrap();
        McpAgent {
            job_id: format!("job-{}", paired.agent.name),
            agent_id: paired.agent.id,
            agent_name: paired.agent.name,
            owner: OWNER,
            session: paired.session.id,
            uid,
        }
    }

    /// Serves `agent` on a new socket in the fixture's directory.
    pub fn serve(&self, agent: McpAgent) -> ServedAgent {
        let socket = self.tmp.path().join(format!("{}.sock", agent.agent_name));
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let handle = serve(self.shared.clone(), agent.clone(), listener);
        ServedAgent {
            agent,
            socket,
            handle,
        }
    }

    /// Revokes agent `name` as its owner would.
    pub async fn revoke(&self, name: &str) {
        let name = name.to_owned();
        self.shared
            .with_store(move |s| Ok(s.revoke_agent(&root(), OWNER, &name).map(drop)?))
            .await
            .unwrap();
    }
}

/// The effective uid of this process.
pub fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}
