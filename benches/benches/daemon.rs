//! Whole-daemon figures: start to `READY=1` on an existing state directory (criterion,
//! each iteration a real spawn → READY=1 → SIGTERM → exit), and idle RSS with 1,000
//! stored credentials (printed; a reading, not a timing).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::os::fd::AsFd;
use std::time::Duration;

use agentkeys_tests::Daemon;
use agentkeysd::api::proxies::CredentialsProxy;
use agentkeysd::vault::sealed_memfd_from_bytes;
use criterion::{Criterion, criterion_group, criterion_main};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn daemon(c: &mut Criterion) {
    let mut d = Daemon::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = d.connect().await;
        let creds = CredentialsProxy::new(&conn).await.unwrap();
        for i in 0..1000 {
            let fd = sealed_memfd_from_bytes(format!("sk-test-{i:04}-0123456789abcdef").as_bytes())
                .unwrap();
            creds
                .store(
                    &format!("cred-{i:04}"),
                    fd.as_fd().into(),
                    Default::default(),
                )
                .await
                .unwrap();
        }
    });
    // A fresh start on the now-populated state dir, then idle.
    d.restart();
    std::thread::sleep(Duration::from_millis(500));
    eprintln!("idle RSS with 1000 credentials: {} KiB", rss_kib(d.pid()));
    d.ctl(&["list"]).ok();
    eprintln!(
        "RSS after listing 1000 credentials: {} KiB",
        rss_kib(d.pid())
    );

    let mut g = c.benchmark_group("daemon");
    g.sample_size(20);
    g.bench_function("start to READY=1 (existing state, 1000 credentials)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                assert!(d.stop().success());
                d.spawn_ready().unwrap();
                total += d.last_ready;
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, daemon);
criterion_main!(benches);
