//! Every kind of bad input gets a clear error, changes nothing, and the daemon keeps
//! serving afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use agentkeys_tests::Daemon;
use agentkeysd::api::Error;
use agentkeysd::api::names::{BUS_NAME, MAX_SECRET_LEN, OBJECT_PATH};
use agentkeysd::api::proxies::{AgentsProxy, AuditProxy, CredentialsProxy};
use agentkeysd::vault::sealed_memfd_from_bytes;
use zbus::Variant;

/// A memfd built by hand (the client helper refuses to build bad ones), sealed or not.
fn memfd(bytes: &[u8], seal: bool) -> OwnedFd {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create(c"test", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes).unwrap();
    if seal {
        let seals = SealFlag::F_SEAL_WRITE
            | SealFlag::F_SEAL_SHRINK
            | SealFlag::F_SEAL_GROW
            | SealFlag::F_SEAL_SEAL;
        fcntl(&f, FcntlArg::F_ADD_SEALS(seals)).unwrap();
    }
    f.into()
}

fn invalid(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

async fn assert_nothing_stored_and_still_serving(d: &Daemon, creds: &CredentialsProxy<'_>) {
    assert!(
        creds.list().await.unwrap().is_empty(),
        "bad input changed the store"
    );
    let fd = sealed_memfd_from_bytes(b"still-serving-value").unwrap();
    creds
        .store("after", fd.as_fd().into(), HashMap::new())
        .await
        .unwrap();
    creds.delete("after").await.unwrap();
    let _ = d;
}

#[tokio::test]
async fn malformed_names_are_rejected() {
    let d = Daemon::start();
    let conn = d.connect().await;
    let creds = CredentialsProxy::new(&conn).await.unwrap();
    let long = "a".repeat(65);
    for name in [
        "",
        "Upper",
        "-dash",
        ".dot",
        "a/b",
        "../etc",
        "a b",
        "é",
        "bob:x",
        long.as_str(),
        // Not NUL: a NUL inside a string is invalid D-Bus and the broker itself drops
        // such a client before the daemon sees anything.
        "a\u{1}",
    ] {
        let fd = sealed_memfd_from_bytes(b"value").unwrap();
        let m = invalid(creds.store(name, fd.as_fd().into(), HashMap::new()).await);
        assert!(m.contains("not a valid name"), "{name:?}: {m}");
        invalid(creds.read(name).await);
    }
    assert_nothing_stored_and_still_serving(&d, &creds).await;
}

#[tokio::test]
async fn secrets_that_are_too_large_empty_unsealed_or_not_memfds_are_rejected() {
    let d = Daemon::start();
    let conn = d.connect().await;
    let creds = CredentialsProxy::new(&conn).await.unwrap();
    let too_big = vec![b'x'; MAX_SECRET_LEN + 1];
    let m = invalid(
        creds
            .store("big", memfd(&too_big, true).as_fd().into(), HashMap::new())
            .await,
    );
    assert!(m.contains("limit is 65536"), "{m}");
    let m = invalid(
        creds
            .store("empty", memfd(b"", true).as_fd().into(), HashMap::new())
            .await,
    );
    assert!(m.to_lowercase().contains("empty"), "{m}");
    let m = invalid(
        creds
            .store(
                "unsealed",
                memfd(b"abc", false).as_fd().into(),
                HashMap::new(),
            )
            .await,
    );
    assert!(m.to_lowercase().contains("seal"), "{m}");
    // A regular file is not a memfd.
    let file = tempfile::tempfile().unwrap();
    let m = invalid(
        creds
            .store("file", file.as_fd().into(), HashMap::new())
            .await,
    );
    assert!(m.to_lowercase().contains("memfd"), "{m}");
    // A pipe that never sends must not hang the daemon: it is refused at once.
    let (rd, _wr) = nix::unistd::pipe().unwrap();
    let m = invalid(creds.store("pipe", rd.as_fd().into(), HashMap::new()).await);
    assert!(m.to_lowercase().contains("memfd"), "{m}");
    // Exactly the maximum is fine.
    let max = vec![b'y'; MAX_SECRET_LEN];
    creds
        .store("max", memfd(&max, true).as_fd().into(), HashMap::new())
        .await
        .unwrap();
    creds.delete("max").await.unwrap();
    assert_nothing_stored_and_still_serving(&d, &creds).await;
}

#[tokio::test]
async fn unknown_wrongly_typed_and_oversized_options_are_rejected() {
    let d = Daemon::start();
    let conn = d.connect().await;
    let creds = CredentialsProxy::new(&conn).await.unwrap();
    let agents = AgentsProxy::new(&conn).await.unwrap();
    let audit = AuditProxy::new(&conn).await.unwrap();
    let fd = || sealed_memfd_from_bytes(b"value-1234").unwrap();

    let mut o = HashMap::new();
    o.insert("colour", Variant::from("blue"));
    let m = invalid(creds.store("x", fd().as_fd().into(), o).await);
    assert!(m.contains("unknown option 'colour'"), "{m}");

    let mut o = HashMap::new();
    o.insert("replace", Variant::from("yes"));
    let m = invalid(creds.store("x", fd().as_fd().into(), o).await);
    assert!(m.contains("'replace'") && m.contains("type"), "{m}");

    let mut o = HashMap::new();
    o.insert("env", Variant::from("lower-case"));
    invalid(creds.store("x", fd().as_fd().into(), o).await);

    let mut o = HashMap::new();
    o.insert("expires", Variant::from(1_i64));
    let m = invalid(creds.store("x", fd().as_fd().into(), o).await);
    assert!(m.contains("past"), "{m}");

    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let mut o = HashMap::new();
    for k in &keys {
        o.insert(k.as_str(), Variant::from(1u32));
    }
    let m = invalid(creds.store("x", fd().as_fd().into(), o).await);
    assert!(m.contains("too many options"), "{m}");

    let scope: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
    let mut o = HashMap::new();
    o.insert("scope", Variant::from(scope));
    let m = invalid(agents.create("bot", o).await);
    assert!(m.contains("too long"), "{m}");

    let mut o = HashMap::new();
    o.insert("scope", Variant::from(vec!["Not A Name".to_owned()]));
    invalid(agents.create("bot", o).await);

    let mut o = HashMap::new();
    o.insert("limit", Variant::from(1_000_000u32));
    invalid(audit.list(o).await);

    assert!(agents.list().await.unwrap().is_empty());
    assert_nothing_stored_and_still_serving(&d, &creds).await;
}

#[tokio::test]
async fn wrong_argument_types_get_invalid_args_from_the_bus_layer() {
    let d = Daemon::start();
    let conn = d.connect().await;
    // Read(s) called with an integer.
    let r = conn
        .call_method(
            Some(BUS_NAME),
            OBJECT_PATH,
            Some("dev.agentkeys.Credentials1"),
            "Read",
            &(42u32,),
        )
        .await;
    let e = r.unwrap_err().to_string();
    assert!(e.contains("InvalidArgs") || e.contains("signature"), "{e}");
    // A method that does not exist.
    let r = conn
        .call_method(
            Some(BUS_NAME),
            OBJECT_PATH,
            Some("dev.agentkeys.Credentials1"),
            "Steal",
            &(),
        )
        .await;
    assert!(r.unwrap_err().to_string().contains("UnknownMethod"));
    let creds = CredentialsProxy::new(&conn).await.unwrap();
    assert_nothing_stored_and_still_serving(&d, &creds).await;
}

#[tokio::test]
async fn a_client_that_vanishes_mid_call_does_not_disturb_the_daemon() {
    let d = Daemon::start();
    for _ in 0..20 {
        let conn = d.connect().await;
        let creds = CredentialsProxy::new(&conn).await.unwrap();
        let fd = sealed_memfd_from_bytes(b"value-abcdefgh").unwrap();
        // Fire the call and drop the connection without waiting for the reply.
        let call = creds.store("vanish", fd.as_fd().into(), HashMap::new());
        let _ = tokio::time::timeout(std::time::Duration::from_micros(1), call).await;
        drop(conn);
    }
    let conn = d.connect().await;
    let creds = CredentialsProxy::new(&conn).await.unwrap();
    let _ = creds.delete("vanish").await;
    assert_nothing_stored_and_still_serving(&d, &creds).await;
}
