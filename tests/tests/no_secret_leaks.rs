//! After 1,000 reads, the secret's bytes appear nowhere an attacker with root could look:
//! not in any readable mapping of the daemon, not in the database or its WAL, not in the
//! daemon's log output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentkeys_tests::proc_mem::scan;
use agentkeys_tests::{Daemon, count_in_file, unique_secret};

#[test]
fn secret_is_found_zero_times_in_daemon_memory_db_wal_and_log_after_1000_reads() {
    let d = Daemon::start();
    let secret = unique_secret("leak");
    d.ctl_in(&["store", "leakcheck-anthropic"], Some(secret.as_bytes()))
        .ok();
    for i in 0..1000 {
        let out = d.ctl(&["read", "leakcheck-anthropic"]);
        assert_eq!(out.code, 0, "read {i} failed: {}", out.stderr);
        assert_eq!(
            out.stdout,
            secret.as_bytes(),
            "read {i} returned other bytes"
        );
    }
    let pid = d.pid();
    let found = scan(pid, secret.as_bytes());
    eprintln!(
        "scanned {} bytes of daemon {pid}; unreadable mappings: {:?}",
        found.bytes, found.unreadable
    );
    assert_eq!(
        found.hits, 0,
        "secret found in the daemon's readable memory"
    );
    // The scanner works: it does find a non-secret string the daemon holds (the name,
    // in SQLite's page cache and in freed request buffers).
    assert!(
        scan(pid, b"leakcheck-anthropic").hits > 0,
        "scanner found nothing at all"
    );
    // The only mappings a root reader cannot read are the secret-memory ones, and they
    // fail the way secretmem does (EIO), not because the scan is broken.
    assert!(!found.unreadable.is_empty(), "no secretmem mapping seen");
    for (m, errno) in &found.unreadable {
        assert!(
            m.path.contains("secretmem"),
            "unexpected unreadable mapping {m:?}"
        );
        assert_eq!(*errno, libc::EIO, "{m:?}");
    }
    let needle = secret.as_bytes();
    let db = d.db_path();
    let wal = db.with_extension("db-wal");
    let shm = db.with_extension("db-shm");
    assert!(wal.exists(), "expected a WAL file at {}", wal.display());
    assert_eq!(count_in_file(&db, needle), 0, "secret in the database");
    assert_eq!(count_in_file(&wal, needle), 0, "secret in the WAL");
    assert_eq!(count_in_file(&shm, needle), 0, "secret in the shm file");
    assert_eq!(
        count_in_file(&d.log_path(), needle),
        0,
        "secret in the daemon's log"
    );
    // Not even the tail of it (last4 is shown only for long secrets, and never more).
    assert!(!d.log().contains(&secret[secret.len() - 8..]));
}

/// HMAC-SHA256(master, label): how the store derives its subkeys.
fn derive(master: &[u8], label: &str) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(master).unwrap();
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

#[test]
fn master_and_derived_keys_are_found_zero_times_in_daemon_memory_after_1000_reads() {
    let d = Daemon::start_with(agentkeys_tests::DaemonOpts {
        config: "[approvals]\nauthenticate = \"none\"\n".into(),
        ..Default::default()
    });
    let secret = unique_secret("keys");
    d.ctl_in(&["store", "keycheck"], Some(secret.as_bytes()))
        .ok();
    for i in 0..1000 {
        let out = d.ctl(&["read", "keycheck"]);
        assert_eq!(out.code, 0, "read {i} failed: {}", out.stderr);
    }
    // A store too, so encryption has run as well as decryption.
    d.ctl_in(&["store", "keycheck", "--replace"], Some(secret.as_bytes()))
        .ok();
    // A signed decision too, so the host key has been used.
    approve_a_pairing(&d);
    let master = std::fs::read(d.state_dir().join("master.key")).unwrap();
    assert_eq!(master.len(), 32);
    let keys = [
        ("master key", master.clone()),
        (
            "credential key",
            derive(&master, "AgentKeys-v1 credential key"),
        ),
        ("audit key", derive(&master, "AgentKeys-v1 audit key")),
        (
            "host signing key",
            derive(&master, "AgentKeys-v1 host signing key"),
        ),
    ];
    let pid = d.pid();
    for (what, key) in &keys {
        // Whole, and by halves: AES-256's first two round keys are the key's two halves.
        for (part, needle) in [
            ("whole", &key[..]),
            ("first half", &key[..16]),
            ("second half", &key[16..]),
        ] {
            let found = scan(pid, needle);
            assert_eq!(
                found.hits, 0,
                "{what} ({part}) found in the daemon's readable memory: {:?}",
                found.hit_in
            );
        }
    }
}

/// Opens a Pair request, approves it and collects the signed decision.
fn approve_a_pairing(d: &Daemon) {
    use agentkeysd::api::dict;
    use agentkeysd::api::proxies::ApprovalsProxy;
    use agentkeysd::approvals::{Details, Pair, encode, public_key_of};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = d.connect().await;
        let appr = ApprovalsProxy::new(&conn).await.unwrap();
        let details = Details::Pair(Pair {
            requested_scope: vec!["keycheck".into()],
            name: Some("leak-check".into()),
            owner: None,
        });
        let key = public_key_of(&[9; 32]);
        let opened = appr.open("Pair", &encode(&details), &key).await.unwrap();
        let id = dict::get_str(&opened, "id").unwrap().unwrap();
        appr.approve(&id, Default::default()).await.unwrap();
        let done = appr.await_decision(&id, 10).await.unwrap();
        assert_eq!(dict::get_str(&done, "state").unwrap().unwrap(), "approved");
    });
}
