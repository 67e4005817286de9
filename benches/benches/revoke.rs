//! Revoke → next read denied (issue 3's target: p99 ≤ 10 ms over 1,000 revocations; a
//! bench, never a timed test, STYLE §14).
//!
//! One real daemon on a private bus. Setup, not timed: the owner stores a credential and
//! pairs 1,000 agents the way `agentkeysctl pair` does (`Open` → `Approve` → `Await`, each
//! asking for that credential, so each gets an `auto` grant). Then, per agent: a fresh
//! connection authenticates as it and reads once (warm), and the timed part is the owner's
//! `Revoke(name)` returning followed by the agent's next `Read` coming back `Denied`. The
//! revoke call and the denied read are also recorded on their own. Printed: p50/p90/p99/max
//! of each over the 1,000, and the same line lands in `<criterion dir>/revoke/percentiles.txt`
//! for `scripts/bench` to repeat at the end of a whole run. A criterion group then measures
//! the same revoke + denied read with `iter_custom` (pairing a fresh agent, untimed, for each
//! iteration), for its change detection between runs.
//!
//! Pairing 1,000 agents as one uid needs the per-uid `Open` limit raised: the daemon's
//! configuration here sets `approvals.open_burst` and `approvals.open_rate_per_minute`
//! (development/test knobs; the defaults are 10 and 20 a minute).
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs a handful of revocations, as
//! a smoke test. `AGENTKEYS_BENCH_REVOCATIONS=N` changes the count of the full run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use agentkeys_tests::{Daemon, DaemonOpts, bin};
use agentkeysd::api::dict::{self, Dict};
use agentkeysd::api::proxies::{AgentsProxy, ApprovalsProxy, CredentialsProxy};
use agentkeysd::api::{ErrorKind, agent};
use agentkeysd::approvals::{Details, Pair, encode, public_key_of};
use agentkeysd::vault::sealed_memfd_from_bytes;
use criterion::{Criterion, SamplingMode};

/// Revocations in the percentile run.
const REVOCATIONS: usize = 1000;
/// Revocations when run as a test (`cargo test --benches`).
const SMOKE_REVOCATIONS: usize = 5;
/// The target for p99, milliseconds.
const TARGET_P99_MS: f64 = 10.0;
const CREDENTIAL: &str = "anthropic";

/// No PAM (nobody types a password 1,000 times), and an `Open` limit that pairing 1,000
/// agents as one uid does not reach.
const CONFIG: &str = "[approvals]\n\
                      authenticate = \"none\"\n\
                      open_burst = 100000\n\
                      open_rate_per_minute = 100000\n";

/// A paired agent, authenticated on its own connection, that has read once.
struct BoundAgent {
    name: String,
    conn: zbus::Connection,
}

/// One revocation's figures.
#[derive(Clone, Copy)]
struct Sample {
    /// `Revoke` sent → the agent's next `Read` answered `Denied`.
    total: Duration,
    /// The `Revoke` call alone.
    revoke: Duration,
    /// The denied `Read` alone.
    denied_read: Duration,
}

struct Bench {
    rt: tokio::runtime::Runtime,
    daemon: Daemon,
    owner: zbus::Connection,
    next: usize,
}

impl Bench {
    fn start() -> Bench {
        check_config_is_known();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let daemon = Daemon::start_with(DaemonOpts {
            config: CONFIG.into(),
            ..Default::default()
        });
        let owner = rt.block_on(async {
            let owner = daemon.connect().await;
            let fd =
                sealed_memfd_from_bytes(b"sk-ant-api03-bench-revoke-0123456789abcdef").unwrap();
            CredentialsProxy::new(&owner)
                .await
                .unwrap()
                .store(CREDENTIAL, zbus::Fd::from(&fd), HashMap::new())
                .await
                .unwrap();
            owner
        });
        Bench {
            rt,
            daemon,
            owner,
            next: 0,
        }
    }

    /// Pairs a new agent asking for [`CREDENTIAL`] (approved by the owner, as
    /// `agentkeysctl approve` does); returns its name, key seed and session.
    fn pair(&mut self) -> (String, [u8; 32], String) {
        self.next += 1;
        let name = format!("bench-bot-{:05}", self.next);
        let seed = random_seed();
        let details = Details::Pair(Pair {
            requested_scope: vec![CREDENTIAL.to_owned()],
            name: Some(name.clone()),
            owner: None,
        });
        let session = self.rt.block_on(async {
            let appr = ApprovalsProxy::new(&self.owner).await.unwrap();
            let opened = appr
                .open("Pair", &encode(&details), &public_key_of(&seed))
                .await
                .unwrap_or_else(|e| panic!("Open {name}: {e:?}"));
            let id = s(&opened, "id");
            appr.approve(&id, HashMap::new()).await.unwrap();
            let done = appr.await_decision(&id, 10).await.unwrap();
            assert_eq!(s(&done, "state"), "approved");
            s(&done, "session")
        });
        (name, seed, session)
    }

    /// A fresh connection authenticated as the agent, which reads once (warm).
    fn bind(&self, name: String, seed: &[u8; 32], session: &str) -> BoundAgent {
        self.rt.block_on(async {
            let conn = self.daemon.connect().await;
            agent::authenticate(&conn, session, seed).await.unwrap();
            let creds = CredentialsProxy::new(&conn).await.unwrap();
            creds
                .read(CREDENTIAL)
                .await
                .unwrap_or_else(|e| panic!("{name}'s warm read: {e:?}"));
            BoundAgent { name, conn }
        })
    }

    fn fresh_agent(&mut self) -> BoundAgent {
        let (name, seed, session) = self.pair();
        self.bind(name, &seed, &session)
    }

    /// The timed part: the owner revokes, the agent's next read is denied.
    fn revoke_then_read(&self, a: BoundAgent) -> Sample {
        self.rt.block_on(async {
            let agents = AgentsProxy::new(&self.owner).await.unwrap();
            let creds = CredentialsProxy::new(&a.conn).await.unwrap();
            let t0 = Instant::now();
            agents.revoke(&a.name).await.unwrap();
            let t1 = Instant::now();
            let denied = creds.read(CREDENTIAL).await;
            let t2 = Instant::now();
            match denied {
                Err(e) if e.kind() == ErrorKind::Denied => {}
                other => panic!("{}'s read after Revoke: {other:?}", a.name),
            }
            Sample {
                total: t2 - t0,
                revoke: t1 - t0,
                denied_read: t2 - t1,
            }
        })
    }
}

/// Fails early, with the reason, when the daemon does not know the `Open` limit knobs.
fn check_config_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentkeysd.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let out = Command::new(bin("agentkeysd"))
        .arg("--check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "agentkeysd refuses the bench's configuration:\n{CONFIG}\n{}\n\
         the bench pairs its agents as one uid and needs approvals.open_burst and \
         approvals.open_rate_per_minute to lift the per-uid Open limit",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn random_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut seed)
        .unwrap();
    seed
}

fn s(d: &Dict, k: &str) -> String {
    dict::get_str(d, k)
        .unwrap()
        .unwrap_or_else(|| panic!("no {k} in {d:?}"))
}

/// Nearest-rank percentile of sorted `v` (`q` in 0..=1).
fn percentile(v: &[Duration], q: f64) -> Duration {
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(what: &str, mut v: Vec<Duration>) -> (String, Duration) {
    v.sort_unstable();
    let p99 = percentile(&v, 0.99);
    let line = format!(
        "{what} over {} revocations: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        v.len(),
        ms(percentile(&v, 0.50)),
        ms(percentile(&v, 0.90)),
        ms(p99),
        ms(v[v.len() - 1]),
    );
    (line, p99)
}

/// Where criterion writes (the same rule it uses), so the percentile line sits beside its
/// reports.
fn criterion_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d).join("criterion");
    }
    // target/<profile>/deps/<bench binary> → target
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("criterion")
}

/// The figure that matters: percentiles over `n` revocations, each of a fresh agent.
/// `full`: a real run (`cargo bench`), whose line is the figure and is written for
/// `scripts/bench`; otherwise a smoke run under `cargo test`, which claims nothing.
fn percentiles(bench: &mut Bench, n: usize, full: bool) {
    eprintln!("pairing {n} agents (setup, not timed)…");
    let t = Instant::now();
    let paired: Vec<_> = (0..n).map(|_| bench.pair()).collect();
    eprintln!(
        "paired {n} agents in {:.1} s; revoking each after its warm read…",
        t.elapsed().as_secs_f64()
    );
    let samples: Vec<Sample> = paired
        .into_iter()
        .map(|(name, seed, session)| {
            let a = bench.bind(name, &seed, &session);
            bench.revoke_then_read(a)
        })
        .collect();
    let (total, p99) = summary("revoke→denied", samples.iter().map(|x| x.total).collect());
    let total = if !full {
        format!("{total} (smoke run under cargo test, not a measurement)")
    } else if ms(p99) <= TARGET_P99_MS {
        format!("{total} (target p99 <= {TARGET_P99_MS} ms: met)")
    } else {
        format!("{total} (target p99 <= {TARGET_P99_MS} ms: NOT met)")
    };
    let (revoke, _) = summary(
        "  Revoke call alone",
        samples.iter().map(|x| x.revoke).collect(),
    );
    let (read, _) = summary(
        "  denied Read alone",
        samples.iter().map(|x| x.denied_read).collect(),
    );
    let report = format!("{total}\n{revoke}\n{read}\n");
    println!("\n{report}");
    if full {
        let dir = criterion_dir().join("revoke");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("percentiles.txt"), &report).unwrap();
    }
}

fn criterion_group(c: &mut Criterion, bench: &mut Bench) {
    let mut g = c.benchmark_group("revoke");
    // Each iteration pairs an agent (untimed, a few ms): keep the count modest.
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    g.bench_function("Revoke then the next Read denied", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let a = bench.fresh_agent();
                total += bench.revoke_then_read(a).total;
            }
            total
        })
    });
    g.finish();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--list") {
        println!("revoke/Revoke then the next Read denied: benchmark");
        return;
    }
    // As criterion decides: `cargo bench` passes --bench; `cargo test --benches` does not.
    let full = has("--bench") && !has("--test");
    let n = if full {
        std::env::var("AGENTKEYS_BENCH_REVOCATIONS")
            .ok()
            .map(|v| v.parse().expect("AGENTKEYS_BENCH_REVOCATIONS: a number"))
            .unwrap_or(REVOCATIONS)
    } else {
        SMOKE_REVOCATIONS
    };
    let mut bench = Bench::start();
    percentiles(&mut bench, n, full);
    let mut c = Criterion::default().configure_from_args();
    criterion_group(&mut c, &mut bench);
    c.final_summary();
}
