//! Tests of [`super`] (durable.rs): durable reads through the real batcher, on a real store
//! in a temp dir with real secret memory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::*;
use crate::daemon::config::Config;
use crate::daemon::services::ServiceTable;
use crate::store::{Issue, PutOptions};
use crate::vault::{SecretMemoryPolicy, Vault};

const OWNER: u32 = 1000;
const AGENT_UID: u32 = 2000;
const KEY: &str = "sk-ant-durable-0123456789";

struct Fx {
    _tmp: tempfile::TempDir,
    shared: Arc<Shared>,
    session: String,
}

fn root() -> Actor {
    Actor { uid: 0, pid: None }
}

/// A store holding `anthropic` of [`OWNER`], an agent paired with an `auto` grant of it,
/// and the audit writers running (on the current runtime).
fn fixture() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let vault = Vault::new(SecretMemoryPolicy::Prefer).unwrap();
    let mut store = Store::open(&tmp.path().join("state"), None, &vault).unwrap();
    let mut secret = vault.alloc(KEY.len()).unwrap();
    secret.expose_secret_mut().copy_from_slice(KEY.as_bytes());
    let opts = PutOptions {
        env_var: "ANTHROPIC_API_KEY".into(),
        expires_at: None,
        replace: false,
        class: None,
    };
    store
        .put_credential(&root(), OWNER, "anthropic", &secret, &opts)
        .unwrap();
    let issue = Issue {
        pubkey: &[7u8; 32],
        uid: AGENT_UID,
        ttl_s: 3600,
        request: "test",
    };
    let paired = store
        .pair_agent(&root(), OWNER, "bot", &["anthropic".into()], &issue)
        .unwrap();
    let host_public = crate::approvals::host_public_key(store.host_key()).unwrap();
    let services = ServiceTable::builtin().unwrap();
    let shared = Arc::new(Shared::new(
        store,
        vault,
        Config::default(),
        services,
        host_public,
    ));
    shared.spawn_audit_flusher();
    Fx {
        _tmp: tmp,
        shared,
        session: paired.session.id,
    }
}

fn read_of(fx: &Fx) -> DurableRead {
    DurableRead {
        actor: Actor {
            uid: AGENT_UID,
            pid: Some(4242),
        },
        session: fx.session.clone(),
        credential: "anthropic".into(),
        confirmed: false,
    }
}

/// The served value, or the error.
async fn read(fx: &Fx) -> Result<Vec<u8>, DaemonError> {
    match fx.shared.durable_read(read_of(fx)).await? {
        AgentRead::Served(_, secret) => Ok(secret.expose_secret().to_vec()),
        AgentRead::NeedsConfirmation { .. } => panic!("an auto grant asked for confirmation"),
    }
}

fn ok_reads(fx: &Fx) -> usize {
    let mut store = fx.shared.lock_store();
    store
        .audit_list(Some(OWNER), 0, u32::MAX)
        .unwrap()
        .iter()
        .filter(|r| r.action == "credential.read" && r.outcome == "ok")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_read_has_its_row_committed_and_fsynced_before_it_returns() {
    let fx = fixture();
    for n in 1..=3u64 {
        assert_eq!(read(&fx).await.unwrap(), KEY.as_bytes());
        // Nothing of it is left queued, and the fsync that carried it has been made.
        assert_eq!(fx.shared.lock_store().pending_audit(), 0);
        assert_eq!(fx.shared.audit_fsyncs(), n);
    }
    assert_eq!(ok_reads(&fx), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_share_commits_and_fsyncs_and_each_has_its_row() {
    let fx = Arc::new(fixture());
    let (readers, each) = (32, 20);
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let fx = fx.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..each {
                assert_eq!(read(&fx).await.unwrap(), KEY.as_bytes());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let reads = readers * each;
    assert_eq!(ok_reads(&fx), reads);
    let fsyncs = fx.shared.audit_fsyncs();
    assert!(
        fsyncs >= 1 && fsyncs < reads as u64,
        "{fsyncs} fsyncs for {reads} reads: no batching"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_refused_while_the_audit_trail_cannot_take_rows_and_resume_after() {
    let fx = fixture();
    fx.shared
        .lock_store()
        .conn_for_tests()
        .execute_batch(
            "CREATE TEMP TRIGGER no_audit BEFORE INSERT ON main.audit
             BEGIN SELECT RAISE(ABORT, 'the disk is full'); END;",
        )
        .unwrap();
    let refused = read(&fx).await;
    assert!(
        matches!(refused, Err(DaemonError::AuditUnavailable)),
        "{refused:?}"
    );
    assert!(fx.shared.audit_failed());
    assert_eq!(fx.shared.audit_fsyncs(), 0);
    // Still failing: refused before the store is asked.
    assert!(matches!(
        fx.shared.require_audit().await,
        Err(DaemonError::AuditUnavailable)
    ));

    fx.shared
        .lock_store()
        .conn_for_tests()
        .execute_batch("DROP TRIGGER temp.no_audit;")
        .unwrap();
    fx.shared.require_audit().await.unwrap();
    assert!(!fx.shared.audit_failed());
    assert_eq!(read(&fx).await.unwrap(), KEY.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_is_refused_on_its_next_read() {
    let fx = fixture();
    assert_eq!(read(&fx).await.unwrap(), KEY.as_bytes());
    fx.shared
        .lock_store()
        .revoke_agent(&root(), OWNER, "bot")
        .unwrap();
    let refused = read(&fx).await;
    assert!(
        matches!(
            refused,
            Err(DaemonError::Store(crate::store::StoreError::Revoked { .. }))
        ),
        "{refused:?}"
    );
}
