//! `kill -9` during 1,000 concurrent stores from 8 clients loses nothing that was
//! acknowledged, and leaves a database and an audit chain that check out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use agentkeys_tests::Daemon;
use agentkeysd::api::proxies::CredentialsProxy;
use agentkeysd::vault::{read_memfd_to_vec, sealed_memfd_from_bytes};
use std::os::fd::AsFd;

const CLIENTS: usize = 8;
const STORES: usize = 1000;
/// Kill once this many stores were acknowledged: well inside the run.
const KILL_AFTER: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_concurrent_stores_loses_no_acknowledged_store() {
    let mut d = Daemon::start();
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let conn = d.connect().await;
        let acked = acked.clone();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let proxy = CredentialsProxy::new(&conn).await.unwrap();
            for i in (c..STORES).step_by(CLIENTS) {
                let name = format!("crash-{i:04}");
                let value = format!("value-{i:04}-{}", "x".repeat(i % 50));
                let fd = sealed_memfd_from_bytes(value.as_bytes()).unwrap();
                match proxy
                    .store(&name, fd.as_fd().into(), Default::default())
                    .await
                {
                    Ok(()) => {
                        acked.lock().unwrap().insert(name, value);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    // The daemon died under us: everything from here on is unacknowledged.
                    Err(_) => return,
                }
            }
        }));
    }
    // Wait (by polling the counter the clients bump) until enough stores landed, then kill.
    let t0 = std::time::Instant::now();
    while count.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            t0.elapsed() < agentkeys_tests::EVENT_TIMEOUT,
            "stores too slow"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    d.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    eprintln!("{} stores acknowledged before kill -9", acked.len());
    assert!(
        acked.len() >= KILL_AFTER && acked.len() < STORES,
        "kill landed outside the run: {}",
        acked.len()
    );

    d.spawn_ready().unwrap();
    // Every acknowledged store reads back, byte for byte.
    let conn = d.connect().await;
    let proxy = CredentialsProxy::new(&conn).await.unwrap();
    for (name, value) in &acked {
        let fd = proxy
            .read(name)
            .await
            .unwrap_or_else(|e| panic!("acknowledged {name} lost: {e}"));
        let got = read_memfd_to_vec(fd.as_fd()).unwrap();
        assert_eq!(&got[..], value.as_bytes(), "{name}");
    }
    // The audit chain verifies, including the rows of the reads just made.
    let out = d.ctl(&["--json", "audit", "verify"]);
    let report = out.json();
    assert_eq!(report["ok"], true, "{report}");
    // The daemon holds the database exclusively while it runs; check it once stopped.
    assert!(d.stop().success());
    let db = rusqlite::Connection::open_with_flags(
        d.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}
