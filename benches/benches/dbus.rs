//! D-Bus `Credentials1.Read` next to a bare no-op (`org.freedesktop.DBus.Peer.Ping`, which
//! zbus answers without touching our code) on the same private bus, in the same run. The
//! target (issue 2): Read's median ≤ 1.5× the no-op's.
//!
//! Needs the workspace binaries: `scripts/bench` builds them in release mode first.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::os::fd::AsFd;

use agentkeys_tests::Daemon;
use agentkeysd::api::names::{BUS_NAME, OBJECT_PATH};
use agentkeysd::api::proxies::CredentialsProxy;
use agentkeysd::vault::sealed_memfd_from_bytes;
use criterion::{Criterion, criterion_group, criterion_main};

fn dbus(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let d = Daemon::start();
    let conn = rt.block_on(d.connect());
    let creds = rt.block_on(CredentialsProxy::new(&conn)).unwrap();
    let peer = rt
        .block_on(
            zbus::fdo::PeerProxy::builder(&conn)
                .destination(BUS_NAME)
                .path(OBJECT_PATH)
                .build(),
        )
        .unwrap();
    let fd = sealed_memfd_from_bytes(b"sk-ant-api03-bench-0123456789abcdefghijklmnop").unwrap();
    rt.block_on(creds.store("anthropic", fd.as_fd().into(), HashMap::new()))
        .unwrap();
    let mut g = c.benchmark_group("dbus");
    g.bench_function("Peer.Ping (bare no-op)", |b| {
        b.iter(|| rt.block_on(peer.ping()).unwrap())
    });
    g.bench_function("Credentials1.Read", |b| {
        b.iter(|| black_box(rt.block_on(creds.read("anthropic")).unwrap()))
    });
    g.finish();
    drop(d);
}

criterion_group!(benches, dbus);
criterion_main!(benches);
