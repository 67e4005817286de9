//! Revoke → every process of a running agent gone (issue 4's target: p99 ≤ 50 ms; a bench,
//! never a timed test, STYLE §14).
//!
//! One real daemon on a private bus, the real runner. Per sample, untimed: a fresh agent
//! with a grant, and `agentkeysctl --agent A run -- sh -c 'sleep … & sleep … & wait'` (three
//! processes in the sandbox) until the daemon reports it `running`. Timed: the owner's
//! `Agents1.Revoke` call, which returns once the run's cgroup is empty; then, untimed, the
//! host is checked for any process left with the agent's uid (a leftover fails the bench).
//! Printed: p50/p90/p99/max over the samples.
//!
//! `AGENTKEYS_BENCH_RUN_REVOCATIONS=N` sets the count (default 200; 3 under
//! `cargo test --benches`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use agentkeys_tests::runs::{next_running, pids_of_uid, store};
use agentkeys_tests::{Daemon, DaemonOpts};
use agentkeysd::api::dict;
use agentkeysd::api::proxies::{AgentsProxy, JobsProxy};

const TARGET_P99_MS: f64 = 50.0;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("AGENTKEYS_BENCH_RUN_REVOCATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 200 } else { 3 });
    let d = Daemon::start_with(DaemonOpts {
        config: "[approvals]\nauthenticate = \"none\"\n".into(),
        ..Default::default()
    });
    store(&d, "github", "ghp_bench_revoke_run");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut samples: Vec<Duration> = rt.block_on(async {
        let conn = d.connect().await;
        let jobs = JobsProxy::new(&conn).await.unwrap();
        let agents = AgentsProxy::new(&conn).await.unwrap();
        let mut changes = jobs.receive_job_state_changed().await.unwrap();
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("bench-{i}");
            d.ctl(&["agent", "create", &name, "--scope", "github"]).ok();
            d.ctl(&["grant", &name, "github"]).ok();
            let mut cmd = d.ctl_command(
                None,
                &[
                    "--agent",
                    &name,
                    "run",
                    "--",
                    "sh",
                    "-c",
                    "sleep 1000 & sleep 1000 & wait",
                ],
            );
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = cmd.spawn().unwrap();
            let job = next_running(&mut changes).await;
            let info = jobs.get(&job).await.unwrap();
            let uid = dict::get_u32(&info, "runner_uid").unwrap().unwrap();
            let t0 = Instant::now();
            agents.revoke(&name).await.unwrap();
            let took = t0.elapsed();
            let left = pids_of_uid(uid);
            assert!(left.is_empty(), "processes left after revoke: {left:?}");
            let _ = child.wait();
            samples.push(took);
        }
        samples
    });
    samples.sort();
    let pct = |p: f64| {
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    let (p50, p90, p99) = (pct(0.50), pct(0.90), pct(0.99));
    let max = samples.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    println!(
        "revoke → every process of the run gone, {} runs: p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms (target p99 ≤ {TARGET_P99_MS} ms: {})",
        samples.len(),
        if p99 <= TARGET_P99_MS {
            "met"
        } else {
            "MISSED"
        }
    );
}
